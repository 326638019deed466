import Foundation

/// SplitMix64 (Steele, Lea & Flood, OOPSLA 2014): tiny, seedable, and easy to reproduce in
/// Python (apps/ios_demo/scripts/make_golden.py), so seeded draws are golden-tested.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits.
    public mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1p-53 }
}

public struct SamplingOptions: Sendable, Equatable, Codable {
    public var temperature: Double = 0.8  // 0 = greedy
    public var topK: Int = 40  // 0 = off
    public var topP: Double = 1.0  // 1 = off
    public var repetitionPenalty: Double = 1.0  // 1 = off
    public var penaltyWindow: Int = 64  // recent tokens the penalty looks at
    public var maxNewTokens: Int = 128
    public var seed: UInt64 = 0
    public var stopAtEOS: Bool = true

    public init() {}
}

/// Picks the next token: repetition penalty (CTRL: positive logits divided, negative multiplied),
/// then greedy, or logits/T sorted (ties: lower id), top-k, softmax, top-p, and one seeded draw.
/// Every step is in Double, in the order of the Python reference, so seeded draws match it.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    private var rng: SplitMix64

    public init(options: SamplingOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
    }

    public mutating func sample(_ logits: [Float], recent: [Int] = []) -> Int {
        var x = logits.map(Double.init)
        if options.repetitionPenalty != 1 {
            for token in Set(recent) where x.indices.contains(token) {
                x[token] = x[token] > 0 ? x[token] / options.repetitionPenalty : x[token] * options.repetitionPenalty
            }
        }
        if options.temperature == 0 {
            return x.indices.max { x[$0] < x[$1] || (x[$0] == x[$1] && $0 > $1) } ?? 0
        }
        let scaled = x.map { $0 / options.temperature }
        var order = scaled.indices.sorted { scaled[$0] > scaled[$1] || (scaled[$0] == scaled[$1] && $0 < $1) }
        if options.topK > 0 { order = Array(order.prefix(options.topK)) }
        var weights = order.map { exp(scaled[$0] - scaled[order[0]]) }
        if options.topP < 1 {
            let total = weights.reduce(0, +)
            var cumulative = 0.0, keep = 0
            for weight in weights {
                cumulative += weight
                keep += 1
                if cumulative >= options.topP * total { break }
            }
            order = Array(order.prefix(keep))
            weights = Array(weights.prefix(keep))
        }
        let threshold = rng.nextDouble() * weights.reduce(0, +)
        var cumulative = 0.0
        for (token, weight) in zip(order, weights) {
            cumulative += weight
            if threshold < cumulative { return token }
        }
        return order[order.count - 1]
    }
}
