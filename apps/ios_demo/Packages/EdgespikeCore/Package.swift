// swift-tools-version: 6.0
// EdgespikeCore: the platform-neutral part of the demo (manifest, sampling, detokenizing, the
// generation loop) plus the Core ML step model behind `#if canImport(CoreML)`. No dependencies.
import PackageDescription

let package = Package(
    name: "EdgespikeCore",
    platforms: [.iOS(.v18), .macOS(.v15)],
    products: [.library(name: "EdgespikeCore", targets: ["EdgespikeCore"])],
    targets: [
        .target(name: "EdgespikeCore"),
        .testTarget(
            name: "EdgespikeCoreTests",
            dependencies: ["EdgespikeCore"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
