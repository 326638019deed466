import EdgespikeCore
import XCTest

@testable import EdgespikeDemo

/// The demo tokenizer through swift-transformers must give HF tokenizers' ids (golden fixtures
/// from apps/ios_demo/scripts/make_golden.py).
final class TokenizerAdapterTests: XCTestCase {
    struct Golden: Decodable {
        struct Case: Decodable { let text: String; let ids: [Int]; let decoded: String }
        let eos_id: Int
        let strings: [Case]
    }

    private var fixtures: URL {
        get throws {
            try XCTUnwrap(Bundle(for: Self.self).url(forResource: "Fixtures", withExtension: nil))
        }
    }

    func testDemoTokenizerMatchesHFTokenizers() async throws {
        let tokenizer = try await HFTokenizer.load(folder: try fixtures.appending(path: "tokenizer"))
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: try fixtures.appending(path: "tokenizer_ids.json")))
        XCTAssertEqual(tokenizer.eosTokenID, golden.eos_id)
        for sample in golden.strings {
            XCTAssertEqual(tokenizer.encode(sample.text), sample.ids, sample.text)
            XCTAssertEqual(tokenizer.decode(sample.ids), sample.decoded, sample.text)
        }
    }

    func testStreamingDecodeEqualsWholeDecode() async throws {
        let tokenizer = try await HFTokenizer.load(folder: try fixtures.appending(path: "tokenizer"))
        let ids = tokenizer.encode("naïve café — 日本語 🙂 and more text")
        var detokenizer = Detokenizer(tokenizer: tokenizer)
        let streamed = ids.map { detokenizer.append($0) }.joined() + detokenizer.flush()
        XCTAssertEqual(streamed, tokenizer.decode(ids))
    }

    func testFolderWithoutTokenizerConfigIsAnError() async throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: UUID().uuidString)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: try fixtures.appending(path: "tokenizer/tokenizer.json"), to: folder.appending(path: "tokenizer.json"))
        do {
            _ = try await HFTokenizer.load(folder: folder)
            XCTFail("a folder without tokenizer_config.json loaded")
        } catch let error as EdgespikeError {
            guard case .tokenizer = error else { return XCTFail("unexpected \(error)") }
        }
    }
}
