import EdgespikeCore
import Foundation
import Tokenizers

/// swift-transformers' tokenizer behind EdgespikeCore's `TextTokenizer`; the only file that
/// imports Tokenizers (an ast-grep rule checks it).
struct HFTokenizer: TextTokenizer {
    let base: any Tokenizer

    /// Reads tokenizer.json + tokenizer_config.json from an export folder.
    static func load(folder: URL) async throws -> HFTokenizer {
        do {
            return HFTokenizer(base: try await AutoTokenizer.from(modelFolder: folder))
        } catch {
            throw EdgespikeError.tokenizer(error.localizedDescription)
        }
    }

    func encode(_ text: String) -> [Int] { base.encode(text: text, addSpecialTokens: false) }
    func decode(_ ids: [Int]) -> String { base.decode(tokens: ids, skipSpecialTokens: true) }
    var eosTokenID: Int? { base.eosTokenId }
}
