import EdgespikeCore
import Foundation
import Observation

/// The app's state: loading the bundled export, the conversation, settings and live metrics.
@MainActor @Observable
final class ChatModel {
    enum Phase: Equatable {
        case loading, ready, generating
        case failed(String)
    }

    struct Turn: Identifiable {
        enum Role { case user, model }
        let id = UUID()
        let role: Role
        var text: String
    }

    /// The export bundled as the folder resource "Model" (see project.yml and README).
    static let bundledFolder = Bundle.main.url(forResource: "Model", withExtension: nil)

    private(set) var phase = Phase.loading
    private(set) var transcript: [Turn] = []
    private(set) var loadTime: Duration?
    private(set) var compiledNow = false
    private(set) var metrics: GenerationMetrics?
    private(set) var activity: SpikeActivity?
    private(set) var manifest: Manifest?
    var draft = ""
    var options = SamplingOptions()
    var computeUnits = ComputeUnits.cpuAndGPU

    private var generator: Generator?
    private var generation: Task<Void, Never>?

    func load() async {
        phase = .loading
        generator = nil
        do {
            guard let folder = Self.bundledFolder else { throw EdgespikeError.manifestMissing(folder: "the app bundle (no Model folder)") }
            let manifest = try Manifest.load(from: folder)
            let tokenizer = try await HFTokenizer.load(folder: folder)
            #if canImport(CoreML)
            let model = try await CoreMLStepModel.load(folder: folder, manifest: manifest, computeUnits: computeUnits)
            (loadTime, compiledNow) = (model.loadTime, model.compiledNow)
            generator = Generator(model: model, tokenizer: tokenizer)
            #else
            throw EdgespikeError.coreMLUnavailable
            #endif
            self.manifest = manifest
            transcript = []
            phase = .ready
        } catch {
            phase = .failed(error.localizedDescription)
        }
    }

    func send() {
        let prompt = draft
        guard let generator, phase == .ready, !prompt.isEmpty else { return }
        draft = ""
        transcript += [Turn(role: .user, text: prompt), Turn(role: .model, text: "")]
        phase = .generating
        generation = Task {
            do {
                for try await event in generator.generate(prompt: prompt, options: options) {
                    switch event {
                    case let .token(_, text, activity):
                        transcript[transcript.count - 1].text += text
                        if let activity { self.activity = activity }
                    case let .finished(metrics, trailingText):
                        transcript[transcript.count - 1].text += trailingText
                        self.metrics = metrics
                    }
                }
                phase = .ready
            } catch {
                phase = .failed(error.localizedDescription)
            }
        }
    }

    /// Ends the stream after the step in flight; the model keeps what it has read.
    func stop() {
        generation?.cancel()
    }

    /// A new conversation: a fresh state.
    func reset() async {
        stop()
        await generation?.value
        do {
            try await generator?.model.reset()
            transcript = []
            activity = nil
            metrics = nil
            phase = generator == nil ? phase : .ready
        } catch {
            phase = .failed(error.localizedDescription)
        }
    }
}
