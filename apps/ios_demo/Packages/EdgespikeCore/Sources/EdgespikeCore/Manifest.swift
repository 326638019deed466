import Foundation

/// The manifest.json `edgespike export --target coreml` writes beside model.mlpackage (format 1):
/// what the app needs to drive the model without its source — I/O and state names and shapes,
/// vocabulary size, LIF timesteps and threshold. Keys mirror the exporter's (checked on Linux by
/// tests/test_ios_app.py against a real export).
public struct Manifest: Codable, Sendable, Equatable {
    public let formatVersion: Int
    public let edgespikeVersion: String
    public let family: String
    public let target: String
    public let modelFile: String
    public let precision: String
    public let timesteps: Int
    public let vocabSize: Int
    public let config: Config
    public let inputs: [Tensor]
    public let outputs: [Tensor]
    public let states: [StateSpec]
    /// Positional models (RoPE) only: the step's `position` input stops being valid here.
    public let maxSeqLen: Int?
    /// The package's second function, the step over `tokens` prompt tokens; nil: none (or an older export).
    public let prefill: Prefill?

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", edgespikeVersion = "edgespike_version", family, target
        case modelFile = "model_file", precision, timesteps, vocabSize = "vocab_size", config, inputs, outputs, states
        case maxSeqLen = "max_seq_len", prefill
    }

    public struct Prefill: Codable, Sendable, Equatable {
        public let tokens: Int
        /// The Core ML function's name (`MLModelConfiguration.functionName`).
        public let function: String?

        enum CodingKeys: String, CodingKey {
            case tokens, function
        }
    }

    public struct Config: Codable, Sendable, Equatable {
        public let nLayers: Int
        public let dModel: Int
        public let spike: Spike

        enum CodingKeys: String, CodingKey {
            case nLayers = "n_layers", dModel = "d_model", spike
        }
    }

    /// The LIF neuron: v ← beta·v + input; a spike when v ≥ threshold; `reset` after it.
    public struct Spike: Codable, Sendable, Equatable {
        public let timesteps: Int
        public let beta: Double
        public let threshold: Double
        public let reset: String

        enum CodingKeys: String, CodingKey {
            case timesteps, beta, threshold, reset
        }
    }

    public struct Tensor: Codable, Sendable, Equatable {
        public let name: String
        public let dtype: String
        public let shape: [Int]
        /// `spike_rates` only: the LIF population (module path) of each rate.
        public let populations: [String]?

        enum CodingKeys: String, CodingKey {
            case name, dtype, shape, populations
        }
    }

    /// `name` is the model's dotted name ("layers.0.v_mlp"); Core ML names the state `buffer`.
    /// An fp16x2 state (`state_precision`) is two fp16 Core ML states, `buffer` (hi) and
    /// `loBuffer` (lo): its value is hi + lo.
    public struct StateSpec: Codable, Sendable, Equatable {
        public let name: String
        public let buffer: String
        public let shape: [Int]
        public let loBuffer: String?

        enum CodingKeys: String, CodingKey {
            case name, buffer, shape
            case loBuffer = "lo_buffer"
        }

        /// Every Core ML state holding this one.
        public var buffers: [String] { [buffer] + (loBuffer.map { [$0] } ?? []) }
    }
}

public extension Manifest {
    static let fileName = "manifest.json"
    static let supportedFormat = 1
    /// The optional per-LIF-population spike-rate output, [1, populations] in [0, 1].
    static let spikeRatesOutput = "spike_rates"

    /// Reads and checks `manifest.json` in an export folder.
    static func load(from folder: URL) throws -> Manifest {
        let url = folder.appending(path: fileName)
        guard FileManager.default.fileExists(atPath: url.path) else { throw EdgespikeError.manifestMissing(folder: folder.lastPathComponent) }
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: url))
        } catch let DecodingError.keyNotFound(key, context) {
            throw EdgespikeError.manifestUnreadable(detail: "no \"\((context.codingPath + [key]).map(\.stringValue).joined(separator: "."))\"")
        } catch {
            throw EdgespikeError.manifestUnreadable(detail: error.localizedDescription)
        }
        try manifest.validate()
        for file in [manifest.modelFile, "tokenizer.json", "tokenizer_config.json"]
        where !FileManager.default.fileExists(atPath: folder.appending(path: file).path) {
            throw EdgespikeError.fileMissing(file)
        }
        return manifest
    }

    /// The decode step's optional second input: the token's absolute position, [1] int32.
    static let positionInput = "position"

    /// A manifest this app can drive: format 1, a Core ML export, one token in (and its position,
    /// for positional models), logits out, states.
    func validate() throws {
        guard formatVersion == Self.supportedFormat else { throw EdgespikeError.manifestFormat(found: formatVersion, supported: Self.supportedFormat) }
        guard target == "coreml" else { throw EdgespikeError.manifestMismatch("target is \"\(target)\", not \"coreml\"") }
        let extra = inputs.dropFirst()
        guard let token = inputs.first, token.shape == [1, 1],
              extra.allSatisfy({ $0.name == Self.positionInput && $0.shape == [1] }) && extra.count <= 1 else {
            throw EdgespikeError.manifestMismatch("expected a token input of shape [1, 1] (and a position [1]), got \(inputs.map { "\($0.name) \($0.shape)" })")
        }
        guard position == nil || (maxSeqLen ?? 0) > 0 else {
            throw EdgespikeError.manifestMismatch("a position input needs a positive max_seq_len")
        }
        guard let logits = logitsOutput, logits.shape.last == vocabSize else {
            throw EdgespikeError.manifestMismatch("no logits output of width vocab_size \(vocabSize)")
        }
        guard !states.isEmpty, states.allSatisfy({ !$0.shape.isEmpty && $0.shape.allSatisfy { $0 > 0 } }) else {
            throw EdgespikeError.manifestMismatch("a spiking decode step carries states; the manifest lists none or an empty shape")
        }
    }

    /// The model's own description must name exactly the manifest's input, outputs and states.
    func validate(against model: ModelSignature) throws {
        for input in inputs where model.inputs[input.name] == nil {
            throw EdgespikeError.manifestMismatch("the model has no input \"\(input.name)\"")
        }
        for output in outputs where model.outputs[output.name] == nil {
            throw EdgespikeError.manifestMismatch("the model has no output \"\(output.name)\"")
        }
        let declared = Set(states.flatMap(\.buffers)), actual = Set(model.states.keys)
        guard declared == actual else {
            throw EdgespikeError.statesMismatch(missing: declared.subtracting(actual).sorted(), unexpected: actual.subtracting(declared).sorted())
        }
        for state in states {
            for buffer in state.buffers where model.states[buffer] != state.shape {
                throw EdgespikeError.stateShape(name: state.name, manifest: state.shape, model: model.states[buffer] ?? [])
            }
        }
    }

    var logitsOutput: Tensor? { outputs.first { $0.name != Self.spikeRatesOutput } }
    var position: Tensor? { inputs.first { $0.name == Self.positionInput } }
    var spikeRates: Tensor? { outputs.first { $0.name == Self.spikeRatesOutput } }

    /// LIF membrane states ("….v", "….v_hidden"), not the attention caches ("….kv.v").
    var membraneStates: [StateSpec] {
        states.filter { state in
            let parts = state.name.split(separator: ".")
            guard let last = parts.last, !parts.contains("kv") else { return false }
            return last == "v" || last.hasPrefix("v_")
        }
    }
}

/// Input, output and state names with their shapes, as the loaded model describes itself.
public struct ModelSignature: Sendable, Equatable {
    public var inputs: [String: [Int]]
    public var outputs: [String: [Int]]
    public var states: [String: [Int]]

    public init(inputs: [String: [Int]], outputs: [String: [Int]], states: [String: [Int]]) {
        self.inputs = inputs
        self.outputs = outputs
        self.states = states
    }
}
