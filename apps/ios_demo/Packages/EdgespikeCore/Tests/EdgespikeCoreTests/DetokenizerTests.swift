import XCTest

@testable import EdgespikeCore

/// A byte tokenizer: id = one UTF-8 byte, so characters split across tokens.
struct ByteTokenizer: TextTokenizer {
    func encode(_ text: String) -> [Int] { text.utf8.map(Int.init) }
    func decode(_ ids: [Int]) -> String { String(decoding: ids.map { UInt8($0) }, as: UTF8.self) }
    var eosTokenID: Int? { 0 }
}

final class DetokenizerTests: XCTestCase {
    func testPartialCharactersAreHeldBack() {
        var detokenizer = Detokenizer(tokenizer: ByteTokenizer())
        let pieces = ByteTokenizer().encode("aé🙂").map { detokenizer.append($0) }
        XCTAssertEqual(pieces, ["a", "", "é", "", "", "", "🙂"])
        XCTAssertEqual(detokenizer.flush(), "")
    }

    func testStreamEqualsWholeDecode() {
        let text = "naïve café — 日本語 🙂\nend"
        var detokenizer = Detokenizer(tokenizer: ByteTokenizer())
        let ids = ByteTokenizer().encode(text)
        XCTAssertEqual(ids.map { detokenizer.append($0) }.joined() + detokenizer.flush(), text)
    }

    func testDanglingPartialCharacterIsFlushed() {
        var detokenizer = Detokenizer(tokenizer: ByteTokenizer())
        XCTAssertEqual(detokenizer.append(0x61), "a")
        XCTAssertEqual(detokenizer.append(0xE6), "")
        XCTAssertEqual(detokenizer.flush(), "\u{FFFD}")
    }
}
