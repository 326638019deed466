import Foundation

/// What a generation streams: each new token with its text ("" while a character is partial)
/// and the activity while the model read it; then the totals and any text still held back.
public enum GenerationEvent: Sendable {
    case token(id: Int, text: String, activity: SpikeActivity?)
    case finished(GenerationMetrics, trailingText: String)
}

public struct GenerationMetrics: Sendable, Equatable {
    public enum Stop: Sendable, Equatable { case maxTokens, endOfText, cancelled }

    public var promptTokens = 0
    public var generatedTokens = 0
    public var timeToFirstToken: Duration = .zero  // prompt prefill + first step
    public var decodeTime: Duration = .zero  // after the first token
    public var stop = Stop.maxTokens

    /// Tokens per second after the first one (nil before the second token).
    public var decodeTokensPerSecond: Double? {
        let seconds = Double(decodeTime.components.seconds) + Double(decodeTime.components.attoseconds) * 1e-18
        return generatedTokens > 1 && seconds > 0 ? Double(generatedTokens - 1) / seconds : nil
    }
}

/// Drives a `StepModel` with a `TextTokenizer`: prefill the prompt (through the model's prefill
/// entry where it has one; the model carries its state, so a conversation only ever feeds the new
/// text), then sample.
public struct Generator: Sendable {
    public let model: any StepModel
    public let tokenizer: any TextTokenizer

    public init(model: any StepModel, tokenizer: any TextTokenizer) {
        self.model = model
        self.tokenizer = tokenizer
    }

    /// Cancelling the consuming task (Stop) ends the stream after the step in flight.
    public func generate(prompt: String, options: SamplingOptions) -> AsyncThrowingStream<GenerationEvent, Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await run(prompt: prompt, options: options, continuation: continuation)
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private func run(prompt: String, options: SamplingOptions,
                     continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation) async throws {
        let promptIDs = tokenizer.encode(prompt)
        guard !promptIDs.isEmpty else { throw EdgespikeError.emptyPrompt }
        let clock = ContinuousClock()
        let start = clock.now
        var metrics = GenerationMetrics(promptTokens: promptIDs.count)
        var sampler = Sampler(options: options)
        var detokenizer = Detokenizer(tokenizer: tokenizer)
        var history = promptIDs
        var output = try await model.prefill(tokens: promptIDs)
        var firstTokenAt = start
        while metrics.generatedTokens < options.maxNewTokens {
            if Task.isCancelled {
                metrics.stop = .cancelled
                break
            }
            let token = sampler.sample(output.logits, recent: Array(history.suffix(options.penaltyWindow)))
            if options.stopAtEOS, token == tokenizer.eosTokenID {
                metrics.stop = .endOfText
                break
            }
            history.append(token)
            output = try await model.step(token: token)  // the state now holds it: a next prompt continues from here
            metrics.generatedTokens += 1
            if metrics.generatedTokens == 1 {
                firstTokenAt = clock.now
                metrics.timeToFirstToken = firstTokenAt - start
            }
            continuation.yield(.token(id: token, text: detokenizer.append(token), activity: output.activity))
        }
        if metrics.generatedTokens > 1 { metrics.decodeTime = clock.now - firstTokenAt }
        continuation.yield(.finished(metrics, trailingText: detokenizer.flush()))
    }
}
