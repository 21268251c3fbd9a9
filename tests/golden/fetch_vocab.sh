#!/usr/bin/env bash
# Fetch llama.cpp's tokenizer test vectors (ggml-vocab-*.gguf + .inp/.out)
# from the llama-cpp-python source distribution on PyPI.
#
# Usage: tests/golden/fetch_vocab.sh [DEST_DIR]
#   DEST_DIR defaults to ${SUANPAN_CACHE:-$HOME/.cache/suanpan}/llama-vocab
#   LLAMA_CPP_PYTHON_VERSION overrides the pinned sdist version.
#
# Needs only python3 + pip + GNU tar; compiles nothing. `pip download` of an
# sdist runs the package's metadata hook in an isolated env (scikit-build-core,
# and cmake/ninja as prebuilt wheels); it does not build llama.cpp.
# Only files named ggml-vocab-* are kept; the 76 MB sdist is deleted afterwards.
# Idempotent: exits early when DEST_DIR already holds this version's files.
set -euo pipefail

VER="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
DEST="${1:-${SUANPAN_CACHE:-$HOME/.cache/suanpan}/llama-vocab}"
STAMP="$DEST/.llama-cpp-python-$VER"

if [[ -f "$STAMP" ]] && ls "$DEST"/ggml-vocab-*.gguf >/dev/null 2>&1; then
    echo "fetch_vocab: $DEST already has llama-cpp-python $VER vocab files" >&2
    exit 0
fi

PY="${PYTHON:-python3}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --no-binary for this package only: its build deps may still come as wheels
# (with --no-binary :all: pip would compile cmake from source).
"$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    -d "$TMP" "llama-cpp-python==$VER" >&2

SDIST="$(ls "$TMP"/llama_cpp_python-"$VER".tar.gz)"
mkdir -p "$DEST"
# sdist layout: llama_cpp_python-VER/vendor/llama.cpp/models/ggml-vocab-*
tar -xzf "$SDIST" -C "$DEST" --strip-components=4 --wildcards --no-anchored \
    "llama_cpp_python-$VER/vendor/llama.cpp/models/ggml-vocab-*"

n=$(ls "$DEST"/ggml-vocab-*.gguf | wc -l)
if [[ "$n" -eq 0 ]]; then
    echo "fetch_vocab: no ggml-vocab-*.gguf found in $SDIST" >&2
    exit 1
fi
touch "$STAMP"
echo "fetch_vocab: extracted $n vocab GGUFs (+ .inp/.out) to $DEST" >&2
