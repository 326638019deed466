import Foundation

/// Streams text token by token without re-decoding the whole output: it decodes only the
/// tokens since the last emitted boundary, and holds text back while it ends in U+FFFD (a
/// UTF-8 character split across tokens), emitting it once the character is complete.
public struct Detokenizer: Sendable {
    private let tokenizer: any TextTokenizer
    private var ids: [Int] = []
    private var prefixStart = 0  // first id of the context window re-decoded each time
    private var readStart = 0  // ids before this are emitted

    public init(tokenizer: any TextTokenizer) { self.tokenizer = tokenizer }

    /// The new text this token completes ("" while a character is still partial).
    public mutating func append(_ token: Int) -> String {
        ids.append(token)
        let prefix = tokenizer.decode(Array(ids[prefixStart..<readStart]))
        let text = tokenizer.decode(Array(ids[prefixStart...]))
        guard text.unicodeScalars.count > prefix.unicodeScalars.count, text.unicodeScalars.last != "\u{FFFD}" else { return "" }
        prefixStart = readStart
        readStart = ids.count
        return String(String.UnicodeScalarView(text.unicodeScalars.dropFirst(prefix.unicodeScalars.count)))
    }

    /// Text still held back at the end of generation (a dangling partial character shows as U+FFFD).
    public func flush() -> String {
        let prefix = tokenizer.decode(Array(ids[prefixStart..<readStart]))
        let text = tokenizer.decode(Array(ids[prefixStart...]))
        return String(String.UnicodeScalarView(text.unicodeScalars.dropFirst(prefix.unicodeScalars.count)))
    }
}
