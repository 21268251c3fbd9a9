#!/usr/bin/env bash
# Build SuanpanFFI.xcframework for the Swift package: the static C ABI library
# (crate suanpan-c) for iOS devices, the iOS simulator (arm64 + x86_64) and macOS
# (arm64 + x86_64), with bindings/c/include/suanpan.h and the module map.
# Run on macOS with Xcode and rustup:   bindings/swift/build-xcframework.sh
# Not run in this repository's CI (Linux, no Xcode).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do
  (cd "$root" && cargo build --release -p suanpan-c --target "$t")
done
work="$(mktemp -d)"
mkdir -p "$work/headers" "$work/sim" "$work/mac"
cp "$root/bindings/c/include/suanpan.h" "$here/ffi/module.modulemap" "$work/headers/"
lib=libsuanpan_c.a
lipo -create "$root/target/aarch64-apple-ios-sim/release/$lib" "$root/target/x86_64-apple-ios/release/$lib" -output "$work/sim/$lib"
lipo -create "$root/target/aarch64-apple-darwin/release/$lib" "$root/target/x86_64-apple-darwin/release/$lib" -output "$work/mac/$lib"
rm -rf "$here/SuanpanFFI.xcframework"
xcodebuild -create-xcframework \
  -library "$root/target/aarch64-apple-ios/release/$lib" -headers "$work/headers" \
  -library "$work/sim/$lib" -headers "$work/headers" \
  -library "$work/mac/$lib" -headers "$work/headers" \
  -output "$here/SuanpanFFI.xcframework"
rm -rf "$work"
echo "wrote $here/SuanpanFFI.xcframework"
