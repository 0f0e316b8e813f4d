#!/usr/bin/env python3
"""Writes a GGUF file with one tensor per ggml type kiln reads, filled with random blocks,
and, for each, the gguf package's own dequantization as .npy: the independent reference
that kiln's dequantization must match bit for bit.

usage: gguf_blocks.py OUT_DIR
"""
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# (type, byte offsets of f16 scale fields in a block)
TYPES = [
    (T.Q4_0, [0]),
    (T.Q4_1, [0, 2]),
    (T.Q5_0, [0]),
    (T.Q5_1, [0, 2]),
    (T.Q8_0, [0]),
    (T.Q4_K, [0, 2]),
    (T.Q5_K, [0, 2]),
    (T.Q6_K, [208]),
]
ROWS = 3


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261123)
    w = gguf.GGUFWriter(str(out / "blocks.gguf"), arch="blocks")
    for qtype, scale_offsets in TYPES:
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        blocks_per_row = 2
        raw = rng.integers(0, 256, size=(ROWS, blocks_per_row, block_bytes), dtype=np.uint8)
        # Scales: finite f16 values of either sign, so no block decodes to inf or NaN.
        scales = rng.uniform(-2.0, 2.0, size=(ROWS, blocks_per_row, len(scale_offsets)))
        bits = scales.astype(np.float16).view(np.uint8).reshape(ROWS, blocks_per_row, -1)
        for i, off in enumerate(scale_offsets):
            raw[:, :, off : off + 2] = bits[:, :, 2 * i : 2 * i + 2]
        data = raw.reshape(ROWS, blocks_per_row * block_bytes)
        w.add_tensor(qtype.name, data, raw_dtype=qtype)
        np.save(out / f"{qtype.name}.npy", dequantize(data, qtype).astype(np.float32))
    # Plain floats too: F32, F16 and BF16 rows of random finite values.
    values = rng.standard_normal((ROWS, 64)).astype(np.float32)
    w.add_tensor("F32", values)
    np.save(out / "F32.npy", values)
    halves = values.astype(np.float16)
    w.add_tensor("F16", halves)
    np.save(out / "F16.npy", halves.astype(np.float32))
    bf16_bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("BF16", bf16_bits.view(np.uint8).reshape(ROWS, -1), raw_dtype=T.BF16)
    np.save(out / "BF16.npy", (bf16_bits.astype(np.uint32) << 16).view(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
