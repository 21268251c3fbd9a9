#!/usr/bin/env bash
# Decode speed of each KV cache mode at long contexts, side by side in one run:
#   bench/kv_speed.sh [CTX...]        default: 2048 8192; threads: $THREADS (2)
# For every context, each mode fills the cache to CTX − (reps+1)·32 tokens, then times
# reps+1 decode runs of 32 tokens ending at CTX (`suanpan bench --ctx`, first run is
# warm-up). Modes run one after the other per context so they share the machine's state;
# read the ratios to f16, not the absolute figures, on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-2}"
ctxs=("$@")
[ ${#ctxs[@]} -eq 0 ] && ctxs=(2048 8192)
cargo build --release -q -p suanpan-cli
bin=./target/release/suanpan
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for ctx in "${ctxs[@]}"; do
  for kv in f16 q8 q4 q2; do
    "$bin" bench --ctx "$ctx" --kv "$kv" --gen-tokens 32 --reps 3 -t "$threads" --json 2> /dev/null
  done
done > "$out"
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
base = {r["ctx"]: r["decode_tps"] for r in rows if r["kv"] == "f16"}
print("%6s %4s %12s %7s %7s" % ("ctx", "kv", "decode tok/s", "vs f16", "KV MB"))
for r in rows:
    print("%6d %4s %12.2f %6.2fx %7.1f" % (r["ctx"], r["kv"], r["decode_tps"],
          r["decode_tps"] / base[r["ctx"]], r["kv_bytes"] / 1e6))
PY
