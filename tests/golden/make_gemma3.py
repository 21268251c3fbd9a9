#!/usr/bin/env python3
"""llama.cpp reference data for Gemma 3 270M Q4_K_M (the `gemma3` architecture, K-quants),
via llama-cpp-python 0.3.36: greedy decoding with per-step margins and the first step's
top-10 logits, made exactly as make_golden.py makes SmolLM2's (one batch for the prompt,
then one token at a time, argmax over raw logits, F16 KV cache, n_ctx 2048).

Usage (the model as ../../shared/MODELS.md assembles it; scripts/test puts it in
$SUANPAN_CACHE/gemma3/gemma-3-270m-q4_k_m.gguf):
    python3 tests/golden/make_gemma3.py [--model PATH] [--out tests/golden/gemma3_270m_greedy.json]
Perplexity: make_ppl.py --model PATH --label gpl3 --out tests/golden/gemma3_270m_ppl.json
/usr/share/common-licenses/GPL-3
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import Ref, greedy_record, versions  # noqa: E402

DEFAULT_MODEL = os.path.join(
    os.environ.get("SUANPAN_CACHE", os.path.expanduser("~/.cache/suanpan")),
    "gemma3/gemma-3-270m-q4_k_m.gguf",
)

PROMPTS = [
    ("short", "The capital of France is"),
    ("english", "Once upon a time, in a small village at the edge of the forest, there lived"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("german_utf8", "Der Bär läuft über die Straße —"),
    ("numbers", "1, 2, 3, 5, 8, 13, 21,"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "gemma3_270m_greedy.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=16)
    a = ap.parse_args()
    ref = Ref(a.model, a.threads)
    records = []
    for name, prompt in PROMPTS:
        rec, _ = greedy_record(ref, name, prompt, a.n_gen)
        records.append(rec)
        print(f"{name}: {rec['generated_text']!r}", file=sys.stderr)
    out = {"versions": versions(a.model), "n_ctx": 2048, "kv": "f16", "records": records}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
