import EdgespikeCore
import SwiftUI

struct ChatView: View {
    @Bindable var chat: ChatModel
    @State private var showSettings = false

    var body: some View {
        NavigationStack {
            VStack(spacing: 0) {
                content
                Divider()
                MetricsBar(chat: chat).padding(.horizontal).padding(.top, 6)
                SpikeView(activity: chat.activity).padding(.horizontal).padding(.vertical, 6)
                composer.padding()
            }
            .navigationTitle("edgespike")
            .navigationBarTitleDisplayMode(.inline)
            .toolbar {
                ToolbarItem(placement: .topBarLeading) {
                    Button("New chat", systemImage: "square.and.pencil") { Task { await chat.reset() } }
                        .disabled(chat.phase == .loading)
                }
                ToolbarItem(placement: .topBarTrailing) {
                    Button("Settings", systemImage: "slider.horizontal.3") { showSettings = true }
                }
            }
            .sheet(isPresented: $showSettings) { SettingsView(chat: chat) }
        }
    }

    @ViewBuilder private var content: some View {
        switch chat.phase {
        case .loading:
            ProgressView("Loading the model (the first launch compiles it)…").frame(maxHeight: .infinity)
        case let .failed(message):
            ContentUnavailableView {
                Label("The model could not run", systemImage: "exclamationmark.triangle")
            } description: {
                Text(message)
            } actions: {
                Button("Try again") { Task { await chat.load() } }
            }
        case .ready, .generating:
            ScrollViewReader { proxy in
                ScrollView {
                    LazyVStack(alignment: .leading, spacing: 12) {
                        ForEach(chat.transcript) { turn in
                            Text(turn.text.isEmpty ? "…" : turn.text)
                                .padding(10)
                                .background(turn.role == .user ? Color.accentColor.opacity(0.15) : Color.secondary.opacity(0.1),
                                            in: .rect(cornerRadius: 12))
                                .frame(maxWidth: .infinity, alignment: turn.role == .user ? .trailing : .leading)
                                .id(turn.id)
                        }
                    }
                    .padding()
                }
                .onChange(of: chat.transcript.last?.text) {
                    if let last = chat.transcript.last { proxy.scrollTo(last.id, anchor: .bottom) }
                }
            }
        }
    }

    private var composer: some View {
        HStack {
            TextField("Say something", text: $chat.draft, axis: .vertical)
                .textFieldStyle(.roundedBorder)
                .onSubmit { chat.send() }
            if chat.phase == .generating {
                Button("Stop", systemImage: "stop.circle.fill") { chat.stop() }.labelStyle(.iconOnly).font(.title2)
            } else {
                Button("Send", systemImage: "arrow.up.circle.fill") { chat.send() }.labelStyle(.iconOnly).font(.title2)
                    .disabled(chat.phase != .ready || chat.draft.isEmpty)
            }
        }
    }
}

/// Load/compile time, time to first token, decode tokens/s: measured on this device.
private struct MetricsBar: View {
    let chat: ChatModel

    var body: some View {
        HStack {
            metric(chat.compiledNow ? "compile+load" : "load", chat.loadTime.map(Self.format))
            metric("first token", chat.metrics.map { Self.format($0.timeToFirstToken) })
            metric("decode", chat.metrics?.decodeTokensPerSecond.map { String(format: "%.1f tok/s", $0) })
        }
        .font(.caption.monospacedDigit())
    }

    private func metric(_ name: String, _ value: String?) -> some View {
        VStack { Text(value ?? "–").bold(); Text(name).foregroundStyle(.secondary) }.frame(maxWidth: .infinity)
    }

    private static func format(_ duration: Duration) -> String {
        duration.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow))
    }
}
