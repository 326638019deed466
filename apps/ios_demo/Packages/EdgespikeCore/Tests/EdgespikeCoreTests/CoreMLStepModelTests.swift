#if canImport(CoreML)
import CoreML
import Foundation
import XCTest

@testable import EdgespikeCore

/// Runs a real export on this Mac (macOS 15+): set EDGESPIKE_COREML_EXPORT to the folder of
/// `edgespike export demo --target coreml`. Greedy tokens must equal eager PyTorch's up to the
/// first step whose top-1 margin is under 1.0 (fp16 Core ML may pick differently there).
final class CoreMLStepModelTests: XCTestCase {
    struct Greedy: Decodable { let prompt_ids: [Int]; let tokens: [Int]; let top1_margins: [Double] }

    func testGreedyTokensMatchEagerPyTorch() async throws {
        guard let path = ProcessInfo.processInfo.environment["EDGESPIKE_COREML_EXPORT"] else {
            throw XCTSkip("set EDGESPIKE_COREML_EXPORT to a CoreML export of the demo model")
        }
        let folder = URL(fileURLWithPath: path)
        let golden = try Fixtures.decode(Greedy.self, "greedy.json")
        let manifest = try Manifest.load(from: folder)
        let model = try await CoreMLStepModel.load(folder: folder, manifest: manifest, computeUnits: .cpuAndGPU)
        var output = StepOutput(logits: [])
        for token in golden.prompt_ids { output = try await model.step(token: token) }
        var sampler = Sampler(options: { var o = SamplingOptions(); o.temperature = 0; return o }())
        let sure = golden.top1_margins.firstIndex { $0 < 1.0 } ?? golden.tokens.count
        for (index, expected) in golden.tokens.enumerated() {
            let token = sampler.sample(output.logits)
            if index < sure { XCTAssertEqual(token, expected, "step \(index)") }
            output = try await model.step(token: expected)  // teacher-forced: later steps stay comparable
        }
        XCTAssertEqual(output.activity?.populations.count, manifest.membraneStates.count)
    }
}
#endif
