import EdgespikeCore
import SwiftUI

/// One bar per LIF population for the token just read: what no other LM demo can show.
struct SpikeView: View {
    let activity: SpikeActivity?

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Text(title).font(.caption.bold())
            if let activity {
                ForEach(activity.populations.indices, id: \.self) { index in
                    let (name, value) = (activity.populations[index], activity.values[index])
                    HStack(spacing: 6) {
                        Text(name).font(.caption2.monospaced()).frame(width: 130, alignment: .leading).lineLimit(1)
                        GeometryReader { proxy in
                            Capsule().fill(.orange.gradient)
                                .frame(width: max(2, proxy.size.width * value))
                        }
                        .frame(height: 8)
                        Text(value, format: .percent.precision(.fractionLength(0))).font(.caption2.monospacedDigit()).frame(width: 36)
                    }
                }
                Text(caption).font(.caption2).foregroundStyle(.secondary)
            } else {
                Text("Activity appears as the model reads tokens.").font(.caption2).foregroundStyle(.secondary)
            }
        }
    }

    private var title: String {
        activity?.kind == .membraneNearThreshold ? "Membrane activity (current token)" : "Spike rate (current token)"
    }

    private var caption: String {
        switch activity?.kind {
        case .spikeRate?: "Spikes per neuron per timestep, read from the model's spike_rates output."
        default: "This export has no spike output: bars show the share of neurons whose membrane potential is at least half the threshold after the token — a proxy, not spike counts."
        }
    }
}
