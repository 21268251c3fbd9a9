#!/usr/bin/env python3
"""Quantize a GGUF with llama.cpp's own quantizer (llama_model_quantize, through
llama-cpp-python), so suanpan's LUT models can be compared with llama.cpp's
formats made from the same source weights.

Usage: python3 bench/llamacpp_quantize.py SRC.gguf OUT.gguf TYPE   (TYPE: Q4_0, Q3_K_M, Q2_K, ...)

The source may already be quantized (the default SmolLM2 file is Q4_1): requantizing
is allowed, exactly like `llama-quantize --allow-requantize`. Prints one JSON line
with the type, size and llama.cpp's log of fallbacks (K-quants need rows that are
multiples of 256; llama.cpp falls back to other types where they are not).
"""
import ctypes
import json
import os
import sys

import llama_cpp

FTYPES = {
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "Q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
    "Q2_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K_S,
    "Q3_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_S,
    "Q3_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "Q5_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1,
    "IQ4_NL": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    "IQ4_XS": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_XS,
    "TQ2_0": llama_cpp.LLAMA_FTYPE_MOSTLY_TQ2_0,
    "IQ2_XXS": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ2_XXS,
}


def main():
    src, out, ty = sys.argv[1], sys.argv[2], sys.argv[3]
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FTYPES[ty]
    p.allow_requantize = True
    p.nthread = int(os.environ.get("THREADS", "2"))
    rc = llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed with {rc}")
    print(json.dumps({"type": ty, "out": out, "bytes": os.path.getsize(out)}))


if __name__ == "__main__":
    main()
