import Foundation

/// Everything the demo expects to go wrong, each with a message naming the problem and the fix.
public enum EdgespikeError: LocalizedError, Equatable, Sendable {
    case manifestMissing(folder: String)
    case manifestUnreadable(detail: String)
    case manifestFormat(found: Int, supported: Int)
    case manifestMismatch(String)
    case fileMissing(String)
    case statesMismatch(missing: [String], unexpected: [String])
    case stateShape(name: String, manifest: [Int], model: [Int])
    case tokenizer(String)
    case modelLoad(computeUnits: ComputeUnits, detail: String)
    case prediction(computeUnits: ComputeUnits, detail: String)
    case emptyPrompt
    case contextFull(maxSeqLen: Int)
    case coreMLUnavailable

    public var errorDescription: String? {
        switch self {
        case let .manifestMissing(folder):
            "\(folder) has no manifest.json: export the model with `edgespike export --target coreml`."
        case let .manifestUnreadable(detail):
            "manifest.json is not an edgespike manifest (\(detail)); re-export the model."
        case let .manifestFormat(found, supported):
            "manifest.json has format_version \(found); this app reads version \(supported): re-export or update the app."
        case let .manifestMismatch(detail):
            "The manifest does not match the model: \(detail). Re-export the model."
        case let .fileMissing(file):
            "The export folder has no \(file); re-export it with a current edgespike."
        case let .statesMismatch(missing, unexpected):
            "The model's states do not match the manifest (missing: \(missing.joined(separator: ", ")); unexpected: \(unexpected.joined(separator: ", "))). Re-export the model."
        case let .stateShape(name, manifest, model):
            "State \(name) is \(model) in the model but \(manifest) in the manifest. Re-export the model."
        case let .tokenizer(detail):
            "The tokenizer did not load (\(detail)); check tokenizer.json and tokenizer_config.json in the export."
        case let .modelLoad(units, detail):
            "Core ML could not load the model on \(units.label) (\(detail)). " + (units.usesNeuralEngine ? "Stateful models often fail on the Neural Engine: choose CPU & GPU." : "Re-export the model.")
        case let .prediction(units, detail):
            "The model failed while running on \(units.label) (\(detail)). " + (units.usesNeuralEngine ? "Choose CPU & GPU and reload." : "Reset and try again.")
        case .emptyPrompt:
            "The prompt encodes to no tokens; type something."
        case let .contextFull(maxSeqLen):
            "The conversation has reached the model's \(maxSeqLen)-token limit; start a new chat."
        case .coreMLUnavailable:
            "Core ML is not available on this platform."
        }
    }
}
