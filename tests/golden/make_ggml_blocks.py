#!/usr/bin/env python3
"""Reference dequantization of ggml block types, made by the `gguf` Python package
(gguf-py, llama.cpp's own numpy port of its reference dequantizers), so that suanpan's
scalar dequantizers are checked against code we did not write.

Usage:
    pip install --target /tmp/gguf-py gguf==0.19.0     # pulls numpy
    PYTHONPATH=/tmp/gguf-py python3 tests/golden/make_ggml_blocks.py [OUT_DIR]

Writes one file per type, OUT_DIR/<TYPE>.bin (default tests/golden/ggml_blocks):
    [ n_blocks * block_bytes : the blocks, as they sit in a GGUF tensor ]
    [ n_blocks * block_len * 4 : gguf-py's dequantized values, f32 little-endian ]
Blocks are random bytes (seeded) with their f16 scale fields overwritten by finite values
(random bytes would make NaN/Inf scales). For the types gguf-py can also quantize, a
second half of the blocks comes from quantizing random normal weights, so realistic
codes are covered as well as arbitrary ones.
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

# type -> byte offsets of its f16 scale fields within a block
F16_FIELDS = {
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
    T.TQ1_0: [52],
    T.TQ2_0: [64],
}
QUANTIZABLE = {T.Q5_0, T.Q5_1, T.TQ1_0, T.TQ2_0}


def make(ty, rng):
    block_len, block_bytes = GGML_QUANT_SIZES[ty]
    n_blocks = 8 if block_len == 256 else 64
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in F16_FIELDS[ty]:
        vals = (rng.standard_normal(n_blocks) * 0.02).astype(np.float16)
        blocks[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
    if ty in QUANTIZABLE:
        half = n_blocks // 2
        w = (rng.standard_normal((half, block_len)) * 0.05).astype(np.float32)
        blocks[half:] = quantize(w, ty).reshape(half, block_bytes)
    values = dequantize(blocks, ty).astype(np.float32).reshape(-1)
    return blocks.tobytes() + values.astype("<f4").tobytes()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "ggml_blocks")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261206)
    for ty in F16_FIELDS:
        data = make(ty, rng)
        with open(os.path.join(out, f"{ty.name}.bin"), "wb") as f:
            f.write(data)
        print(f"{ty.name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
