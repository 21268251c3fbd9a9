#!/usr/bin/env bash
# Quality of suanpan's KV cache modes against its f16 cache, on real text, recorded in
# tests/golden/smollm2_kv_quality.json (key "suanpan"; key "short" for the CI test's text).
#
#   bench/kv_quality.sh [FILE] [CTX] [THREADS]      default: GPL-3, 2048, 2
#   EXTRA=1 bench/kv_quality.sh ...                 also --kv-rotate and a 256-token window
#   LLAMA=1 bench/kv_quality.sh ...                 also run llama.cpp's q8_0/q4_0 KV
#                                                   (tests/golden/make_kv_quality.py; needs
#                                                   llama-cpp-python, see tests/golden/README.md)
#
# Each mode runs `suanpan perplexity -f FILE -c CTX --kv MODE --json --save-top1 ...`
# (llama-perplexity's protocol: non-overlapping chunks, second half scored); the script then
# computes the PPL change and the top-1 agreement with the f16 run. The "short" entry is one
# chunk of 1024 tokens of the same file, what runtime/tests/kv_quality.rs re-measures in CI.
# Takes a while: at -c 2048 every run is a 2048-token prefill per chunk (~2-8 min each on
# this shared 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:-/usr/share/common-licenses/GPL-3}"
ctx="${2:-2048}"
threads="${3:-2}"
out=tests/golden/smollm2_kv_quality.json
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cargo build --release -q -p suanpan-cli
bin=./target/release/suanpan

run() { # label ctx chunks args...
  local label="$1" c="$2" chunks="$3"
  shift 3
  local extra=()
  if [ "$chunks" != all ]; then extra=(--chunks "$chunks"); fi
  echo "== $label (-c $c, chunks $chunks): $*" >&2
  "$bin" perplexity -f "$file" -c "$c" -t "$threads" "${extra[@]}" --json \
    --save-top1 "$tmp/$label.top1" "$@" | tail -1 > "$tmp/$label.json"
  cat "$tmp/$label.json" >&2
}

configs=(
  "f16|--kv f16"
  "q8|--kv q8"
  "q4|--kv q4"
  "q2|--kv q2"
)
# EXTRA=1: also the rotation and a wider window (each is another full run).
if [ "${EXTRA:-0}" = 1 ]; then
  configs+=("q4_rot|--kv q4 --kv-rotate" "q2_rot|--kv q2 --kv-rotate" "q2_w256|--kv q2 --kv-window 256")
fi
for c in "${configs[@]}"; do
  label="${c%%|*}"; args="${c#*|}"
  # shellcheck disable=SC2086
  run "long_$label" "$ctx" all $args
done
for c in "${configs[@]:0:4}"; do
  label="${c%%|*}"; args="${c#*|}"
  # shellcheck disable=SC2086
  run "short_$label" 1024 1 $args
done

python3 - "$tmp" "$out" "$file" "$ctx" <<'EOF'
import json, os, subprocess, sys, datetime
tmp, out, path, ctx = sys.argv[1:5]
doc = json.load(open(out)) if os.path.exists(out) else {}

def section(prefix):
    base = open(f"{tmp}/{prefix}_f16.top1").read().split()
    f16 = json.load(open(f"{tmp}/{prefix}_f16.json"))
    runs = []
    for name in sorted(os.listdir(tmp)):
        if not (name.startswith(prefix + "_") and name.endswith(".json")):
            continue
        label = name[len(prefix) + 1:-5]
        r = json.load(open(f"{tmp}/{name}"))
        top = open(f"{tmp}/{prefix}_{label}.top1").read().split()
        r["label"] = label
        r["ppl_change_vs_f16_pct"] = round((r["ppl"] / f16["ppl"] - 1) * 100, 4)
        r["top1_agreement_vs_f16"] = round(sum(a == b for a, b in zip(top, base)) / len(base), 6)
        r.pop("f16_ppl", None)
        r.pop("top1_agreement_vs_f16_cli", None)
        runs.append(r)
    order = ["f16", "q8", "q4", "q2", "q4_rot", "q2_rot", "q2_w256"]
    runs.sort(key=lambda r: order.index(r["label"]) if r["label"] in order else 99)
    return runs

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
doc["description"] = ("Quality of KV cache modes on SmolLM2-135M-Instruct Q4_1: perplexity "
                      "(llama-perplexity protocol) and top-1 agreement with the f16 cache on the "
                      "same text. 'suanpan' made by bench/kv_quality.sh, 'llama_cpp' by "
                      "tests/golden/make_kv_quality.py, 'short' is what runtime/tests/kv_quality.rs "
                      "re-measures; 'goals_pct' are the allowed PPL increases over f16.")
doc["goals_pct"] = {"q8": 0.3, "q4": 1.0, "q2": 5.0}
doc["suanpan"] = {"file": path, "n_ctx": int(ctx), "commit": commit,
                  "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "runs": section("long")}
doc["short"] = {"file": path, "n_ctx": 1024, "chunks": 1, "commit": commit, "runs": section("short")}
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
for key in ("suanpan", "short"):
    for r in doc[key]["runs"]:
        print(f'{key:8} {r["label"]:8} PPL {r["ppl"]:.4f} {r["ppl_change_vs_f16_pct"]:+.3f}% '
              f'top-1 {r["top1_agreement_vs_f16"] * 100:.2f}% {r["kv_bytes_per_token"]:.0f} B/token')
EOF

if [ "${LLAMA:-0}" = 1 ]; then
  python3 tests/golden/make_kv_quality.py --n-ctx "$ctx" --threads "$threads" "$file"
fi
