import EdgespikeCore
import SwiftUI

/// Sampling, seed and compute units; changing the compute units reloads the model.
struct SettingsView: View {
    @Bindable var chat: ChatModel
    @Environment(\.dismiss) private var dismiss

    var body: some View {
        NavigationStack {
            Form {
                Section {
                    Picker("Compute units", selection: $chat.computeUnits) {
                        ForEach(ComputeUnits.allCases) { Text($0.label).tag($0) }
                    }
                    .onChange(of: chat.computeUnits) { Task { await chat.load() } }
                } footer: {
                    Text("CPU & GPU is the default: stateful models have known Neural Engine failures, shown here as an error, not a crash.")
                }
                Section("Sampling") {
                    LabeledContent("Temperature \(chat.options.temperature, format: .number.precision(.fractionLength(2)))") {
                        Slider(value: $chat.options.temperature, in: 0...2, step: 0.05)
                    }
                    Stepper("Top-k \(chat.options.topK == 0 ? "off" : "\(chat.options.topK)")", value: $chat.options.topK, in: 0...200, step: 5)
                    LabeledContent("Top-p \(chat.options.topP, format: .number.precision(.fractionLength(2)))") {
                        Slider(value: $chat.options.topP, in: 0.05...1, step: 0.05)
                    }
                    LabeledContent("Repetition penalty \(chat.options.repetitionPenalty, format: .number.precision(.fractionLength(2)))") {
                        Slider(value: $chat.options.repetitionPenalty, in: 1...2, step: 0.05)
                    }
                    Stepper("Max new tokens \(chat.options.maxNewTokens)", value: $chat.options.maxNewTokens, in: 8...512, step: 8)
                    TextField("Seed", value: Binding(get: { Int(truncatingIfNeeded: chat.options.seed) },
                                                set: { chat.options.seed = UInt64(max(0, $0)) }), format: .number)
                        .keyboardType(.numberPad)
                    Toggle("Stop at end of text", isOn: $chat.options.stopAtEOS)
                }
                if let manifest = chat.manifest {
                    Section("Model") {
                        LabeledContent("Family", value: manifest.family)
                        LabeledContent("Timesteps per token", value: "\(manifest.timesteps)")
                        LabeledContent("Vocabulary", value: "\(manifest.vocabSize)")
                        LabeledContent("States", value: "\(manifest.states.count) (\(manifest.precision))")
                    }
                }
            }
            .navigationTitle("Settings")
            .toolbar { Button("Done") { dismiss() } }
        }
    }
}
