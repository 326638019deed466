#if canImport(CoreML)
import CoreML
import Foundation

/// The exported decode step on Core ML. The .mlpackage is compiled once and the .mlmodelc kept
/// in Application Support; a conversation is one `MLState`; the actor runs one prediction at a
/// time, as Core ML requires for predictions sharing a state.
public actor CoreMLStepModel: StepModel {
    public nonisolated let manifest: Manifest
    public nonisolated let computeUnits: ComputeUnits
    /// Compile (first launch only) + load + one warm-up step.
    public nonisolated let loadTime: Duration
    public nonisolated let compiledNow: Bool
    private let model: MLModel
    /// The package's prefill function (the manifest's `prefill`), over the same `state`.
    private let prefillModel: MLModel?
    private var state: MLState
    /// The next token's absolute position, fed to positional models.
    private var position = 0

    private init(model: MLModel, prefillModel: MLModel?, manifest: Manifest, computeUnits: ComputeUnits, loadTime: Duration,
                 compiledNow: Bool) {
        self.model = model
        self.prefillModel = prefillModel
        self.manifest = manifest
        self.computeUnits = computeUnits
        self.loadTime = loadTime
        self.compiledNow = compiledNow
        state = model.makeState()
    }

    /// Loads the export in `folder` (already checked by `Manifest.load`) and runs one step, so a
    /// compute unit that refuses the model (the Neural Engine, with some stateful models) fails here.
    public static func load(folder: URL, manifest: Manifest, computeUnits: ComputeUnits) async throws -> CoreMLStepModel {
        let clock = ContinuousClock()
        let start = clock.now
        let model: MLModel
        var prefillModel: MLModel? = nil
        let compiledNow: Bool
        do {
            let (compiled, fresh) = try await compiledModel(at: folder.appending(path: manifest.modelFile))
            compiledNow = fresh
            let configuration = MLModelConfiguration()
            configuration.computeUnits = computeUnits.mlComputeUnits
            model = try await MLModel.load(contentsOf: compiled, configuration: configuration)
            if let function = manifest.prefill?.function {  // the same compiled package, its second function
                let prefillConfiguration = MLModelConfiguration()
                prefillConfiguration.computeUnits = computeUnits.mlComputeUnits
                prefillConfiguration.functionName = function
                prefillModel = try await MLModel.load(contentsOf: compiled, configuration: prefillConfiguration)
            }
        } catch {
            throw EdgespikeError.modelLoad(computeUnits: computeUnits, detail: error.localizedDescription)
        }
        try manifest.validate(against: ModelSignature(model.modelDescription))
        let stepModel = CoreMLStepModel(model: model, prefillModel: prefillModel, manifest: manifest, computeUnits: computeUnits,
                                        loadTime: clock.now - start, compiledNow: compiledNow)
        _ = try await stepModel.step(token: 0)
        try await stepModel.reset()
        return stepModel
    }

    public func reset() {
        state = model.makeState()
        position = 0
    }

    public func step(token: Int) throws -> StepOutput {
        try run(model, tokens: [token])
    }

    /// Whole chunks of `manifest.prefill.tokens` through the prefill function, the rest step by step.
    public func prefill(tokens: [Int]) throws -> StepOutput {
        var output = StepOutput(logits: [])
        var done = 0
        if let prefillModel, let chunk = manifest.prefill?.tokens, chunk > 0 {
            while tokens.count - done >= chunk {
                try Task.checkCancellation()
                output = try run(prefillModel, tokens: Array(tokens[done..<done + chunk]))
                done += chunk
            }
        }
        for token in tokens[done...] {
            try Task.checkCancellation()
            output = try step(token: token)
        }
        return output
    }

    /// `tokens` [1, n] through `function` (the decode step, or the prefill function) at `position`, over `state`.
    private func run(_ function: MLModel, tokens: [Int]) throws -> StepOutput {
        guard let input = manifest.inputs.first, let logitsName = manifest.logitsOutput?.name else {
            throw EdgespikeError.manifestMismatch("no token input or logits output")
        }
        let ids = MLShapedArray<Int32>(scalars: tokens.map { Int32($0) }, shape: [1, tokens.count])
        var inputs = [input.name: MLFeatureValue(multiArray: MLMultiArray(ids))]
        if let positionInput = manifest.position {
            let limit = manifest.maxSeqLen ?? 0
            guard position + tokens.count <= limit else { throw EdgespikeError.contextFull(maxSeqLen: limit) }
            inputs[positionInput.name] = MLFeatureValue(multiArray: MLMultiArray(MLShapedArray<Int32>(scalars: [Int32(position)], shape: positionInput.shape)))
        }
        let result: any MLFeatureProvider
        do {
            let features = try MLDictionaryFeatureProvider(dictionary: inputs)
            result = try function.prediction(from: features, using: state, options: MLPredictionOptions())
        } catch {
            throw EdgespikeError.prediction(computeUnits: computeUnits, detail: error.localizedDescription)
        }
        position += tokens.count
        guard let logits = result.featureValue(for: logitsName)?.multiArrayValue else {
            throw EdgespikeError.manifestMismatch("the model returned no \"\(logitsName)\"")
        }
        return StepOutput(logits: MLShapedArray<Float>(converting: logits).scalars, activity: activity(result))
    }

    /// The model's spike rates when it exports them, else the membrane stand-in from the states.
    private func activity(_ result: any MLFeatureProvider) -> SpikeActivity? {
        let membranes = manifest.membraneStates
        if let rates = manifest.spikeRates, let array = result.featureValue(for: rates.name)?.multiArrayValue {
            let values = MLShapedArray<Float>(converting: array).scalars.map(Double.init)
            let names = rates.populations ?? values.indices.map { "LIF \($0)" }
            return SpikeActivity(kind: .spikeRate, populations: names, values: values)
        }
        guard !membranes.isEmpty else { return nil }
        let read = membranes.map { spec in  // hi + lo for an fp16x2 state
            (name: spec.name, values: spec.buffers.map { buffer in
                state.withMultiArray(for: buffer) { MLShapedArray<Float>(converting: $0).scalars }
            }.reduce(into: [Float]()) { sum, half in sum = sum.isEmpty ? half : zip(sum, half).map(+) })
        }
        return .membrane(read, threshold: manifest.config.spike.threshold)
    }

    /// The compiled model for a package, compiled on first use and cached by its size and date.
    private static func compiledModel(at package: URL) async throws -> (URL, Bool) {
        let spec = package.appending(path: "Data/com.apple.CoreML/model.mlmodel")
        let values = try spec.resourceValues(forKeys: [.fileSizeKey, .contentModificationDateKey])
        let stamp = "\(values.fileSize ?? 0)-\(Int(values.contentModificationDate?.timeIntervalSince1970 ?? 0))"
        let cache = try FileManager.default.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appending(path: "EdgespikeCompiled/\(package.deletingPathExtension().lastPathComponent)-\(stamp).mlmodelc")
        if FileManager.default.fileExists(atPath: cache.path) { return (cache, false) }
        let compiled = try await MLModel.compileModel(at: package)
        try FileManager.default.createDirectory(at: cache.deletingLastPathComponent(), withIntermediateDirectories: true)
        _ = try? FileManager.default.removeItem(at: cache)
        try FileManager.default.moveItem(at: compiled, to: cache)
        return (cache, true)
    }
}

extension ModelSignature {
    init(_ description: MLModelDescription) {
        func shapes(_ features: [String: MLFeatureDescription]) -> [String: [Int]] {
            features.mapValues { $0.multiArrayConstraint?.shape.map(\.intValue) ?? [] }
        }
        self.init(inputs: shapes(description.inputDescriptionsByName), outputs: shapes(description.outputDescriptionsByName),
                  states: description.stateDescriptionsByName.mapValues { $0.stateConstraint?.bufferShape ?? [] })
    }
}

extension ComputeUnits {
    var mlComputeUnits: MLComputeUnits {
        switch self {
        case .cpuAndGPU: .cpuAndGPU
        case .cpuOnly: .cpuOnly
        case .cpuAndNeuralEngine: .cpuAndNeuralEngine
        case .all: .all
        }
    }
}
#endif
