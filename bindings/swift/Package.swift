// swift-tools-version:5.9
// SwiftPM package over suanpan's C ABI. `build-xcframework.sh` (macOS) builds
// SuanpanFFI.xcframework (static libsuanpan_c for iOS, the iOS simulator and macOS, with
// suanpan.h and a module map); this package wraps it in an async Swift API.
// NOT COMPILED in the suanpan repository's CI: there is no Swift toolchain there.
import PackageDescription

let package = Package(
    name: "Suanpan",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [.library(name: "Suanpan", targets: ["Suanpan"])],
    targets: [
        .binaryTarget(name: "SuanpanFFI", path: "SuanpanFFI.xcframework"),
        .target(
            name: "Suanpan",
            dependencies: ["SuanpanFFI"],
            // libsuanpan_c.a is a static library, so the system frameworks its Rust code
            // links (wgpu's Metal backend through the objc2 crates) must be named here for
            // the app's link step.
            linkerSettings: [
                .linkedFramework("Metal"),
                .linkedFramework("QuartzCore"),
                .linkedFramework("CoreGraphics"),
                .linkedFramework("IOSurface"),
                .linkedFramework("CoreFoundation"),
                .linkedFramework("Foundation"),
                .linkedLibrary("objc"),
            ]
        ),
    ]
)
