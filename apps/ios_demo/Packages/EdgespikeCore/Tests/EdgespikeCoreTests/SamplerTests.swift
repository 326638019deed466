import XCTest

@testable import EdgespikeCore

/// Seeded draws must equal the Python reference (apps/ios_demo/scripts/make_golden.py).
final class SamplerTests: XCTestCase {
    struct Golden: Decodable {
        struct Case: Decodable {
            let name: String, seed: UInt64, temperature: Double, top_k: Int, top_p: Double, repetition_penalty: Double
            let recent: [Int], draws: [Int]
        }
        let splitmix64_seed0_hex: [String]
        let logits: [Double]
        let cases: [Case]
    }

    func testSplitMix64MatchesReference() throws {
        let golden = try Fixtures.decode(Golden.self, "sampler.json")
        var rng = SplitMix64(seed: 0)
        XCTAssertEqual(golden.splitmix64_seed0_hex.compactMap { UInt64($0, radix: 16) }, golden.splitmix64_seed0_hex.map { _ in rng.next() })
    }

    func testSeededDrawsMatchPython() throws {
        let golden = try Fixtures.decode(Golden.self, "sampler.json")
        let logits = golden.logits.map(Float.init)
        for item in golden.cases {
            var options = SamplingOptions()
            (options.seed, options.temperature, options.topK) = (item.seed, item.temperature, item.top_k)
            (options.topP, options.repetitionPenalty) = (item.top_p, item.repetition_penalty)
            var sampler = Sampler(options: options)
            XCTAssertEqual(item.draws.map { _ in sampler.sample(logits, recent: item.recent) }, item.draws, item.name)
        }
    }

    func testTopKOneIsGreedyAndPenaltyDemotesRepeats() {
        var options = SamplingOptions()
        options.topK = 1
        var sampler = Sampler(options: options)
        XCTAssertEqual(sampler.sample([0.1, 3, 2.9]), 1)
        options = SamplingOptions()
        (options.temperature, options.repetitionPenalty) = (0, 2)
        sampler = Sampler(options: options)
        XCTAssertEqual(sampler.sample([0.1, 3, 2.9], recent: [1]), 2)
    }
}
