import XCTest

@testable import EdgespikeCore

/// Logits that make `next = (token + 1) % 256` the argmax; counts steps and resets.
actor CountingModel: StepModel {
    private(set) var steps: [Int] = []
    private(set) var resets = 0
    private let delay: Duration

    init(delay: Duration = .zero) { self.delay = delay }

    func step(token: Int) async throws -> StepOutput {
        if delay > .zero { try await Task.sleep(for: delay) }
        steps.append(token)
        var logits = [Float](repeating: 0, count: 256)
        logits[(token + 1) % 256] = 10
        return StepOutput(logits: logits, activity: SpikeActivity(kind: .spikeRate, populations: ["lif"], values: [Double(token % 2)]))
    }

    func reset() { resets += 1 }
}

/// A model with a prefill entry: records the prompts it was given in one call.
actor PrefillingModel: StepModel {
    private(set) var prefills: [[Int]] = []
    private let counting = CountingModel()

    func step(token: Int) async throws -> StepOutput { try await counting.step(token: token) }

    func prefill(tokens: [Int]) async throws -> StepOutput {
        prefills.append(tokens)
        return try await counting.step(token: tokens[tokens.count - 1])
    }

    func reset() {}
}

final class GeneratorTests: XCTestCase {
    private func greedy(_ maxNewTokens: Int) -> SamplingOptions {
        var options = SamplingOptions()
        (options.temperature, options.maxNewTokens, options.stopAtEOS) = (0, maxNewTokens, true)
        return options
    }

    func testThePromptGoesThroughPrefillInOneCall() async throws {
        let model = PrefillingModel()
        var ids: [Int] = []
        for try await event in Generator(model: model, tokenizer: ByteTokenizer()).generate(prompt: "abc", options: greedy(2)) {
            if case let .token(id, _, _) = event { ids.append(id) }
        }
        let prefills = await model.prefills
        XCTAssertEqual(prefills, [[97, 98, 99]])
        XCTAssertEqual(ids, [100, 101])
    }

    func testStreamsTokensTextActivityAndMetrics() async throws {
        let model = CountingModel()
        let generator = Generator(model: model, tokenizer: ByteTokenizer())
        var text = "", ids: [Int] = [], metrics: GenerationMetrics?
        for try await event in generator.generate(prompt: "ab", options: greedy(3)) {
            switch event {
            case let .token(id, piece, activity):
                (text, ids) = (text + piece, ids + [id])
                XCTAssertEqual(activity?.values, [Double(id % 2)])  // the activity of reading this token
            case let .finished(totals, trailing):
                (text, metrics) = (text + trailing, totals)
            }
        }
        XCTAssertEqual(ids, [99, 100, 101])
        XCTAssertEqual(text, "cde")
        let steps = await model.steps
        XCTAssertEqual(steps, [97, 98, 99, 100, 101])  // prompt, then every sampled token
        XCTAssertEqual(metrics?.promptTokens, 2)
        XCTAssertEqual(metrics?.generatedTokens, 3)
        XCTAssertEqual(metrics?.stop, .maxTokens)
    }

    func testStopsAtEndOfText() async throws {
        let generator = Generator(model: CountingModel(), tokenizer: ByteTokenizer())
        var last: GenerationMetrics?
        for try await case let .finished(metrics, _) in generator.generate(prompt: "\u{FF}", options: greedy(100)) {
            last = metrics
        }
        XCTAssertEqual(last?.generatedTokens, 64)  // "ÿ" ends in byte 0xBF: 0xC0 … 0xFF, then 0x00 is end of text
        XCTAssertEqual(last?.stop, .endOfText)
    }

    func testEmptyPromptIsAnError() async {
        let generator = Generator(model: CountingModel(), tokenizer: ByteTokenizer())
        do {
            for try await _ in generator.generate(prompt: "", options: greedy(1)) {}
            XCTFail("an empty prompt generated")
        } catch {
            XCTAssertEqual(error as? EdgespikeError, .emptyPrompt)
        }
    }

    func testCancellingTheConsumerStopsTheModel() async throws {
        let model = CountingModel(delay: .milliseconds(1))
        let generator = Generator(model: model, tokenizer: ByteTokenizer())
        let consumer = Task {
            for try await case .token in generator.generate(prompt: "a", options: greedy(100_000)) {
                withUnsafeCurrentTask { $0?.cancel() }
            }
        }
        try await consumer.value
        try await Task.sleep(for: .milliseconds(100))
        let stopped = await model.steps.count
        try await Task.sleep(for: .milliseconds(100))
        let later = await model.steps.count
        XCTAssertEqual(stopped, later)  // nothing runs after Stop
        XCTAssertLessThan(stopped, 1000)
    }
}
