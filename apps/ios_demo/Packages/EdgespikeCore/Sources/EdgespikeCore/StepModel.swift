import Foundation

/// One decode step: a token in, next-token logits out; the model carries its own state.
public protocol StepModel: Sendable {
    /// Runs one token through the model, updating its carried state.
    func step(token: Int) async throws -> StepOutput
    /// Forgets the conversation: a fresh, zeroed state.
    func reset() async throws
    /// Runs the prompt `tokens` (at least one) in as few calls as the model can, updating its carried state:
    /// the output after the last.
    func prefill(tokens: [Int]) async throws -> StepOutput
}

extension StepModel {
    /// A model without a prefill entry: the prompt token by token.
    public func prefill(tokens: [Int]) async throws -> StepOutput {
        var output = StepOutput(logits: [])
        for token in tokens {
            try Task.checkCancellation()
            output = try await step(token: token)
        }
        return output
    }
}

/// The text side of the model.
public protocol TextTokenizer: Sendable {
    func encode(_ text: String) -> [Int]
    /// Special tokens skipped; a partial UTF-8 sequence at the end decodes to U+FFFD.
    func decode(_ ids: [Int]) -> String
    var eosTokenID: Int? { get }
}

public struct StepOutput: Sendable {
    public var logits: [Float]
    public var activity: SpikeActivity?

    public init(logits: [Float], activity: SpikeActivity? = nil) {
        self.logits = logits
        self.activity = activity
    }
}

/// Per-population activity for the token just processed, each value in [0, 1].
public struct SpikeActivity: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Spikes / (neurons × timesteps), from the model's `spike_rates` output.
        case spikeRate
        /// A stand-in read from the membrane states when the model exports no spike rates:
        /// the fraction of neurons whose membrane potential sits at or above half the threshold
        /// after the token. It is not a spike count.
        case membraneNearThreshold
    }

    public var kind: Kind
    public var populations: [String]
    public var values: [Double]

    public init(kind: Kind, populations: [String], values: [Double]) {
        self.kind = kind
        self.populations = populations
        self.values = values
    }

    /// The membrane stand-in over named state buffers (values in any float type).
    public static func membrane(_ states: [(name: String, values: [Float])], threshold: Double) -> SpikeActivity {
        let cut = Float(threshold / 2)
        return SpikeActivity(
            kind: .membraneNearThreshold,
            populations: states.map(\.name),
            values: states.map { state in
                state.values.isEmpty ? 0 : Double(state.values.lazy.filter { $0 >= cut }.count) / Double(state.values.count)
            }
        )
    }
}

/// Where Core ML may run the model; mirrors MLComputeUnits without importing Core ML.
public enum ComputeUnits: String, CaseIterable, Identifiable, Sendable, Codable {
    case cpuAndGPU, cpuOnly, cpuAndNeuralEngine, all

    public var id: String { rawValue }

    public var label: String {
        switch self {
        case .cpuAndGPU: "CPU & GPU"
        case .cpuOnly: "CPU only"
        case .cpuAndNeuralEngine: "CPU & Neural Engine"
        case .all: "All (incl. Neural Engine)"
        }
    }

    public var usesNeuralEngine: Bool { self == .cpuAndNeuralEngine || self == .all }
}
