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
        .target(name: "Suanpan", dependencies: ["SuanpanFFI"]),
    ]
)
