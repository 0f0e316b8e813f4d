#!/usr/bin/env python3
"""Writes small, valid GGUF files for the fuzzer to start from: micro llama, qwen2 and gpt2 models
(a vocabulary, every tensor the builder reads) and one file holding a tensor of each type.

usage: make_seeds.py OUT_DIR   (run with the reference tests' Python: target/pyref)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

import tiny_models

MICRO = dict(vocab=len(tiny_models.TOKENS), embd=8, heads=2, kv_heads=1, layers=1, ff=16,
             context=16, name="micro")
MICRO_32 = dict(MICRO, embd=32, ff=32)


def every_type(path: Path) -> None:
    rng = np.random.default_rng(3)
    w = gguf.GGUFWriter(str(path), arch="llama")
    for qtype in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K,
                  T.Q5_K, T.Q6_K]:
        n = 256 if qtype in tiny_models.kquants.ENCODERS else 32
        data = rng.standard_normal((1, n)).astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(qtype.name, data)
        elif qtype == T.F16:
            w.add_tensor(qtype.name, data.astype(np.float16))
        else:
            w.add_tensor(qtype.name, tiny_models.encode(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tiny_models.write(out / "micro-llama-F16.gguf", "llama", T.F16, seed=1, c=MICRO)
    tiny_models.write(out / "micro-llama-F32.gguf", "llama", T.F32, seed=1, c=MICRO)
    tiny_models.write(out / "micro-llama-Q8_0.gguf", "llama", T.Q8_0, seed=1, c=MICRO_32)
    tiny_models.write(out / "micro-qwen2-F32.gguf", "qwen2", T.F32, seed=2, c=MICRO)
    tiny_models.write(out / "micro-gpt2-F32.gguf", "gpt2", T.F32, seed=4, c=dict(MICRO, kv_heads=2))
    every_type(out / "every-type.gguf")


if __name__ == "__main__":
    main()
