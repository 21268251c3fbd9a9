#!/usr/bin/env python3
"""List llama.cpp's ggml-vocab-*.gguf test files with their tokenizer type.

Usage: python3 tests/golden/vocab_manifest.py [VOCAB_DIR] [-o OUT.json]
VOCAB_DIR defaults to ${SUANPAN_CACHE:-~/.cache/suanpan}/llama-vocab
(filled by tests/golden/fetch_vocab.sh). Pure python, no dependencies:
it reads only the GGUF key/value header.
"""
import argparse, glob, hashlib, json, os, struct, sys

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
          F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def read_kv(path):
    """Return the GGUF metadata dict; large arrays are summarised by length."""
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def rstr():
            return f.read(rd("<Q")).decode("utf-8", "replace")

        def rval(t):
            if t == STR:
                return rstr()
            if t == ARR:
                et, n = rd("<I"), rd("<Q")
                if n > 64:  # tokens / scores / merges: skip, keep the length
                    for _ in range(n):
                        rval(et)
                    return {"array_len": n}
                return [rval(et) for _ in range(n)]
            return rd(SCALAR[t])

        assert f.read(4) == b"GGUF", path
        version = rd("<I")
        _n_tensors, n_kv = rd("<Q"), rd("<Q")
        kv = {"gguf.version": version}
        for _ in range(n_kv):
            k = rstr()
            kv[k] = rval(rd("<I"))
        return kv


def count_tests(inp, out):
    if not (os.path.exists(inp) and os.path.exists(out)):
        return None
    with open(out, "rb") as f:
        return len(f.read().split(b"\n")) - 1  # one line per test, '\n'-terminated


def main():
    ap = argparse.ArgumentParser()
    default = os.path.join(os.environ.get("SUANPAN_CACHE", os.path.expanduser("~/.cache/suanpan")), "llama-vocab")
    ap.add_argument("vocab_dir", nargs="?", default=default)
    ap.add_argument("-o", "--out")
    a = ap.parse_args()
    rows = []
    for p in sorted(glob.glob(os.path.join(a.vocab_dir, "ggml-vocab-*.gguf"))):
        kv = read_kv(p)
        tok = kv.get("tokenizer.ggml.tokens", {})
        n_vocab = tok.get("array_len") if isinstance(tok, dict) else len(tok)
        merges = kv.get("tokenizer.ggml.merges")
        rows.append({
            "file": os.path.basename(p),
            "size": os.path.getsize(p),
            "sha256": hashlib.sha256(open(p, "rb").read()).hexdigest(),
            "model": kv.get("tokenizer.ggml.model"),
            "pre": kv.get("tokenizer.ggml.pre"),
            "n_vocab": n_vocab,
            "n_merges": (merges.get("array_len") if isinstance(merges, dict) else (len(merges) if merges else 0)),
            "add_bos": kv.get("tokenizer.ggml.add_bos_token"),
            "add_eos": kv.get("tokenizer.ggml.add_eos_token"),
            "add_space_prefix": kv.get("tokenizer.ggml.add_space_prefix"),
            "bos": kv.get("tokenizer.ggml.bos_token_id"),
            "eos": kv.get("tokenizer.ggml.eos_token_id"),
            "n_tests": count_tests(p + ".inp", p + ".out"),
        })
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"source": "llama-cpp-python sdist vendor/llama.cpp/models", "vocabs": rows}, f, indent=1)
            f.write("\n")
    for r in rows:
        print(f"{r['file']:34s} model={r['model']!s:6s} pre={r['pre']!s:16s} n_vocab={r['n_vocab']!s:7s} "
              f"add_bos={r['add_bos']!s:5s} tests={r['n_tests']}")


if __name__ == "__main__":
    sys.exit(main())
