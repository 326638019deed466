import Foundation
import XCTest

@testable import EdgespikeCore

final class ManifestTests: XCTestCase {
    private func demo() throws -> Manifest { try Fixtures.decode(Manifest.self, "manifest.json") }

    /// The manifest with one key replaced (nil removes it), as JSON.
    private func edited(_ key: String, _ value: Any?) throws -> Data {
        var object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("manifest.json"))) as? [String: Any])
        object[key] = value
        return try JSONSerialization.data(withJSONObject: object)
    }

    private func signature(of manifest: Manifest) -> ModelSignature {
        ModelSignature(
            inputs: Dictionary(uniqueKeysWithValues: manifest.inputs.map { ($0.name, $0.shape) }),
            outputs: Dictionary(uniqueKeysWithValues: manifest.outputs.map { ($0.name, $0.shape) }),
            states: Dictionary(uniqueKeysWithValues: manifest.states.flatMap { spec in spec.buffers.map { ($0, spec.shape) } })
        )
    }

    func testDemoManifestDecodesAndValidates() throws {
        let manifest = try demo()
        XCTAssertNoThrow(try manifest.validate())
        XCTAssertEqual(manifest.logitsOutput?.shape.last, manifest.vocabSize)
        XCTAssertEqual(manifest.spikeRates?.populations?.count, manifest.spikeRates?.shape.last)  // one rate per LIF call
        XCTAssertEqual(manifest.membraneStates.count, 3 * manifest.config.nLayers)  // v_attn, v_mlp, v_hidden per layer
        XCTAssertFalse(manifest.membraneStates.contains { $0.name.contains(".kv.") })
        XCTAssertNoThrow(try manifest.validate(against: signature(of: manifest)))
        XCTAssertTrue(manifest.states.allSatisfy { $0.loBuffer == $0.buffer + "__lo" })  // fp16x2: hi + lo states
    }

    func testModelWithOtherStatesIsRejected() throws {
        let manifest = try demo()
        var model = signature(of: manifest)
        let dropped = manifest.states[0].buffer
        model.states[dropped] = nil
        model.states["state_extra"] = [1, 4]
        XCTAssertThrowsError(try manifest.validate(against: model)) { error in
            XCTAssertEqual(error as? EdgespikeError, .statesMismatch(missing: [dropped], unexpected: ["state_extra"]))
        }
        model = signature(of: manifest)
        model.states[dropped] = [1, 7]
        XCTAssertThrowsError(try manifest.validate(against: model)) { error in
            XCTAssertEqual(error as? EdgespikeError, .stateShape(name: manifest.states[0].name, manifest: manifest.states[0].shape, model: [1, 7]))
        }
        model = signature(of: manifest)
        model.outputs = ["logits": [1, manifest.vocabSize]]
        XCTAssertThrowsError(try manifest.validate(against: model))
    }

    func testManifestsThisAppCannotDriveAreRejected() throws {
        for (key, value) in [("format_version", 2), ("target", "onnx"), ("vocab_size", 7)] as [(String, Any)] {
            let manifest = try JSONDecoder().decode(Manifest.self, from: edited(key, value))
            XCTAssertThrowsError(try manifest.validate(), key)
        }
        let noStates = try JSONDecoder().decode(Manifest.self, from: edited("states", [Any]()))
        XCTAssertThrowsError(try noStates.validate())
    }

    func testPositionalManifestNeedsItsPositionInputAndMaxSeqLen() throws {
        let tokens: [String: Any] = ["name": "tokens", "dtype": "int32", "shape": [1, 1]]
        let position: [String: Any] = ["name": "position", "dtype": "int32", "shape": [1]]
        var object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("manifest.json"))) as? [String: Any])
        object["inputs"] = [tokens, position]
        object["max_seq_len"] = 1024
        let positional = try JSONDecoder().decode(Manifest.self, from: JSONSerialization.data(withJSONObject: object))
        XCTAssertNoThrow(try positional.validate())
        XCTAssertEqual(positional.position?.shape, [1])
        XCTAssertEqual(positional.maxSeqLen, 1024)
        var model = signature(of: positional)
        XCTAssertNoThrow(try positional.validate(against: model))
        model.inputs["position"] = nil
        XCTAssertThrowsError(try positional.validate(against: model))

        object["max_seq_len"] = nil
        XCTAssertThrowsError(try JSONDecoder().decode(Manifest.self, from: JSONSerialization.data(withJSONObject: object)).validate())
        object["max_seq_len"] = 1024
        object["inputs"] = [tokens, ["name": "segment", "dtype": "int32", "shape": [1]]]
        XCTAssertThrowsError(try JSONDecoder().decode(Manifest.self, from: JSONSerialization.data(withJSONObject: object)).validate())
        XCTAssertNil(try demo().position)  // ALiBi families take the token only
        XCTAssertFalse(EdgespikeError.contextFull(maxSeqLen: 1024).localizedDescription.isEmpty)
    }

    func testFolderProblemsAreTypedErrors() throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: UUID().uuidString)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        XCTAssertThrowsError(try Manifest.load(from: folder)) { XCTAssertEqual($0 as? EdgespikeError, .manifestMissing(folder: folder.lastPathComponent)) }

        try edited("states", nil).write(to: folder.appending(path: Manifest.fileName))
        XCTAssertThrowsError(try Manifest.load(from: folder)) { XCTAssertEqual($0 as? EdgespikeError, .manifestUnreadable(detail: "no \"states\"")) }

        let modelFile = try demo().modelFile
        try Data(contentsOf: Fixtures.url("manifest.json")).write(to: folder.appending(path: Manifest.fileName))
        XCTAssertThrowsError(try Manifest.load(from: folder)) { XCTAssertEqual($0 as? EdgespikeError, .fileMissing(modelFile)) }
        for error in [EdgespikeError.manifestMissing(folder: "x"), .statesMismatch(missing: ["a"], unexpected: []), .modelLoad(computeUnits: .all, detail: "E5RT")] {
            XCTAssertFalse(error.localizedDescription.isEmpty)
        }
    }
}
