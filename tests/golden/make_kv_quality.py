#!/usr/bin/env python3
"""llama.cpp's quantized KV caches on the perplexity protocol of make_ppl.py, for the
side-by-side with suanpan's KV modes (tests/golden/smollm2_kv_quality.json, key "llama_cpp").

Usage:
    python3 tests/golden/make_kv_quality.py [--n-ctx 2048] [--threads 2] FILE...

For each KV type in --types (default f16 q8_0 q4_0), llama.cpp (llama-cpp-python) evaluates
each non-overlapping n_ctx chunk of the text as one batch and scores the second half, exactly
as make_ppl.py (= llama-perplexity) does, with flash attention ON for every type (llama.cpp
needs it for a quantized V cache; the f16 row is its baseline under the same kernel).
Recorded per type: PPL, the change vs llama.cpp's own f16, top-1 agreement with its own f16
(argmax of the logits at every scored position), and the cache's bytes per token
(type_k/type_v block sizes: f16 2 bytes, q8_0 34/32, q4_0 18/32 bytes per element).
Results are merged into the JSON under "llama_cpp" (other keys are kept).
"""
import argparse
import datetime
import hashlib
import json
import os
import sys
import time

import numpy as np

import llama_cpp
from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ppl import DEFAULT_MODEL, LLAMA_CPP_COMMIT, log_softmax_nll  # noqa: E402

TYPES = {
    "f16": (llama_cpp.GGML_TYPE_F16, 2.0),
    "q8_0": (llama_cpp.GGML_TYPE_Q8_0, 34 / 32),
    "q4_0": (llama_cpp.GGML_TYPE_Q4_0, 18 / 32),
}


def run(model, tokens, n_ctx, threads, kv_type):
    ggml_type, _ = TYPES[kv_type]
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                n_threads=threads, n_threads_batch=threads, seed=1234, logits_all=True,
                flash_attn=True, type_k=ggml_type, type_v=ggml_type, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    bos = llama_cpp.llama_vocab_bos(vocab)
    n_chunk = len(tokens) // n_ctx
    first = n_ctx // 2
    nll, count, top1 = 0.0, 0, []
    t0 = time.time()
    for i in range(n_chunk):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if add_bos:
            chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        scores = llm.scores[:n_ctx]
        for j in range(first, n_ctx - 1):
            nll += log_softmax_nll(scores[j], tokens[i * n_ctx + j + 1])
            top1.append(int(np.argmax(scores[j])))
        count += n_ctx - 1 - first
        print(f"[{kv_type} {i + 1}/{n_chunk}]{np.exp(nll / count):.4f}", file=sys.stderr, flush=True)
    return float(np.exp(nll / count)), count, n_chunk, top1, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", nargs="+", default=["f16", "q8_0", "q4_0"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "smollm2_kv_quality.json"))
    a = ap.parse_args()

    raw = b"".join(open(p, "rb").read() for p in a.files)
    text = raw.decode("utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    tok = Llama(model_path=a.model, n_ctx=64, vocab_only=True, verbose=False)
    tokens = tok.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    meta = tok.metadata
    n_layer = int(meta["llama.block_count"])
    n_kv = int(meta.get("llama.attention.head_count_kv", meta["llama.attention.head_count"]))
    head_dim = int(meta["llama.embedding_length"]) // int(meta["llama.attention.head_count"])
    del tok

    results = {}
    for t in a.types:
        ppl, count, n_chunk, top1, secs = run(a.model, tokens, a.n_ctx, a.threads, t)
        results[t] = {"ppl": round(ppl, 6), "n_scored": count, "n_chunks": n_chunk, "top1": top1,
                      "seconds": round(secs, 1),
                      "kv_bytes_per_token": n_layer * n_kv * head_dim * 2 * TYPES[t][1]}
    base = results.get("f16")
    runs = []
    for t, r in results.items():
        row = {k: v for k, v in r.items() if k != "top1"}
        row["kv_type"] = t
        if base:
            row["ppl_change_vs_f16_pct"] = round((r["ppl"] / base["ppl"] - 1) * 100, 4)
            agree = sum(x == y for x, y in zip(r["top1"], base["top1"])) / len(base["top1"])
            row["top1_agreement_vs_f16"] = round(agree, 6)
        runs.append(row)
        print(f"llama.cpp {t}: PPL {r['ppl']:.4f} {row.get('ppl_change_vs_f16_pct', 0):+.3f}% "
              f"top-1 {row.get('top1_agreement_vs_f16', 1) * 100:.2f}%", file=sys.stderr)

    doc = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            doc = json.load(f)
    doc["llama_cpp"] = {
        "made_by": "tests/golden/make_kv_quality.py",
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "model_file": os.path.basename(a.model),
        "model_sha256": hashlib.sha256(open(a.model, "rb").read()).hexdigest(),
        "files": [os.path.abspath(p) for p in a.files],
        "n_tokens": len(tokens),
        "n_ctx": a.n_ctx,
        "threads": a.threads,
        "flash_attn": True,
        "method": "llama-perplexity protocol (make_ppl.py): chunks of n_ctx as one batch, "
                  "second half scored; top-1 = argmax of the logits at each scored position",
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": runs,
    }
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
