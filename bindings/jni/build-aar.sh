#!/usr/bin/env bash
# Build the Android AAR of the suanpan Kotlin API: cross-compile libsuanpan_jni.so for each
# ABI with the Android NDK, place it in android/src/main/jniLibs/<abi>/, then either run
# Gradle (if `gradle` is installed and an Android SDK is configured) or pack the AAR by
# hand (classes.jar compiled with kotlinc + jni/<abi>/*.so + manifest + proguard rules).
#
#   ANDROID_NDK_HOME=/path/to/ndk bindings/jni/build-aar.sh [OUT.aar]
#   ANDROID_NDK_HOME=/path/to/ndk bindings/jni/build-aar.sh --jnilibs-only
#
# --jnilibs-only stops after placing the libraries, for a Gradle build that includes
# android/ as a module (apps/android does).
#
# Needs: rustup targets aarch64-linux-android x86_64-linux-android, the NDK (r25+), and
# for the hand-packed path kotlinc + kotlinx-coroutines-core-jvm.jar (the npm package
# kotlin-compiler carries both; scripts/test installs it) and `zip`.
# Not run in this repository's CI: there is no NDK there.
set -euo pipefail
jnilibs_only=false
if [ "${1:-}" = "--jnilibs-only" ]; then jnilibs_only=true; shift; fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(realpath -m "${1:-$here/suanpan-release.aar}")"
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to the Android NDK}"
api="${ANDROID_API:-24}"
host="$(uname -s | tr '[:upper:]' '[:lower:]')-x86_64"
bin="$ANDROID_NDK_HOME/toolchains/llvm/prebuilt/$host/bin"
[ -d "$bin" ] || { echo "no NDK toolchain at $bin" >&2; exit 1; }

declare -A abi_of=([aarch64-linux-android]=arm64-v8a [x86_64-linux-android]=x86_64)
for target in "${!abi_of[@]}"; do
  abi="${abi_of[$target]}"
  upper="$(echo "$target" | tr '[:lower:]-' '[:upper:]_')"
  export "CARGO_TARGET_${upper}_LINKER=$bin/${target}${api}-clang"
  export "CC_${target//-/_}=$bin/${target}${api}-clang"
  export "AR_${target//-/_}=$bin/llvm-ar"
  (cd "$root" && cargo build --release -p suanpan-jni --target "$target")
  mkdir -p "$here/android/src/main/jniLibs/$abi"
  cp "$root/target/$target/release/libsuanpan_jni.so" "$here/android/src/main/jniLibs/$abi/"
  "$bin/llvm-strip" --strip-debug "$here/android/src/main/jniLibs/$abi/libsuanpan_jni.so"
done
if $jnilibs_only; then
  echo "placed libsuanpan_jni.so in $here/android/src/main/jniLibs/<abi>/ (${abi_of[*]})"
  exit 0
fi

if command -v gradle >/dev/null && [ -n "${ANDROID_HOME:-}${ANDROID_SDK_ROOT:-}" ]; then
  (cd "$here/android" && gradle -q assembleRelease)
  cp "$here/android/build/outputs/aar/"*release*.aar "$out"
else
  kdir="${KOTLIN_HOME:-${SUANPAN_CACHE:-$HOME/.cache/suanpan}/kotlin-compiler/node_modules/kotlin-compiler}"
  work="$(mktemp -d)"
  "$kdir/bin/kotlinc" -classpath "$kdir/lib/kotlinx-coroutines-core-jvm.jar" -jvm-target 17 \
    -d "$work/classes" "$here/android/src/main/kotlin"
  (cd "$work/classes" && zip -qr "$work/classes.jar" .)
  mkdir -p "$work/aar/jni"
  cp "$here/android/src/main/AndroidManifest.xml" "$work/aar/"
  cp "$work/classes.jar" "$work/aar/"
  cp "$here/android/consumer-rules.pro" "$work/aar/proguard.txt"
  : > "$work/aar/R.txt"
  for abi in "${abi_of[@]}"; do
    mkdir -p "$work/aar/jni/$abi"
    cp "$here/android/src/main/jniLibs/$abi/libsuanpan_jni.so" "$work/aar/jni/$abi/"
  done
  (cd "$work/aar" && zip -qr "$out" .)
  rm -rf "$work"
  echo "note: the hand-packed AAR does not declare its kotlinx-coroutines dependency; add" >&2
  echo "      org.jetbrains.kotlinx:kotlinx-coroutines-core to the app." >&2
fi
echo "wrote $out"
