#!/usr/bin/env python3
"""Writes a llama GGUF of benchmark size with random weights (never committed: made at
bench time, in seconds to a minute).

usage: make_llama.py OUT.gguf {125m,1b} {F32,F16,Q8_0,Q4_0,Q4_K_M,Q5_K_M,...}

The last argument is a GGML type (every tensor but norms) or one of llama.cpp's K-quant
mixes (Q6_K for output.weight and some layers' attn_v and ffn_down).

125m: 12 layers of width 768 (12 heads), ffn 2048, vocabulary 32000 (about 134M
parameters). 1b: TinyLlama-1.1B's shape: 22 layers of width 2048, 32 query and 4 key/value
heads, ffn 5632, vocabulary 32000. Weights come from a fixed seed, so every run writes the
same file.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))
import tiny_models  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402

SIZES = {
    "125m": dict(vocab=32000, embd=768, heads=12, kv_heads=12, layers=12, ff=2048, context=2048),
    "1b": dict(vocab=32000, embd=2048, heads=32, kv_heads=4, layers=22, ff=5632, context=2048),
}


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[2] not in SIZES:
        sys.exit(__doc__)
    out, size, kind = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    qtype = kind if kind in tiny_models.MIXES else T[kind]
    config = dict(SIZES[size], name=f"llama-{size}")
    tiny_models.write(out, "llama", qtype, seed=3, c=config)


if __name__ == "__main__":
    main()
