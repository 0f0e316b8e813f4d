"""Encoders for ggml's K-quant blocks (Q4_K, Q5_K, Q6_K), which the `gguf` package can
decode but not write. They pick scales from each sub-block's range (not ggml's iterative
search), which is all a test or benchmark model needs: the files are valid blocks, and
every consumer decodes them with the same definition. Vectorised over blocks.

`quantize(x, qtype)` takes float32 rows whose length is a multiple of 256 and returns the
raw bytes, shaped [rows, row_bytes] as `gguf.GGUFWriter.add_tensor(..., raw_dtype=)` wants.
"""
import numpy as np
from gguf import GGMLQuantizationType as T

QK = 256


def _f16(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16)


def _half_bytes(v: np.ndarray) -> np.ndarray:
    """[n] float16 -> [n, 2] little-endian bytes."""
    return v.astype("<f2").view(np.uint8).reshape(-1, 2)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def _scales_mins(sub: np.ndarray, levels: int):
    """Per 32-element sub-block (sub: [n, 8, 32]): d, dmin (f16 [n]) and the 6-bit scale
    and min codes ([n, 8]) such that x ~ d * sc * q - dmin * m with q in 0..levels."""
    lo = np.minimum(sub.min(axis=-1), 0.0)
    hi = sub.max(axis=-1)
    scale = (hi - lo) / levels
    mins = -lo
    d = _f16(scale.max(axis=-1) / 63)
    dmin = _f16(mins.max(axis=-1) / 63)
    df, dminf = d.astype(np.float32), dmin.astype(np.float32)
    sc = np.clip(np.rint(_divide(scale, df[:, None])), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(_divide(mins, dminf[:, None])), 0, 63).astype(np.uint8)
    return d, dmin, sc, m


def _pack_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """[n, 8] 6-bit scales and mins -> [n, 12] bytes, ggml's packing."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def _codes(sub, d, dmin, sc, m, levels):
    eff = d.astype(np.float32)[:, None] * sc
    off = dmin.astype(np.float32)[:, None] * m
    q = np.rint(_divide(sub + off[..., None], np.broadcast_to(eff[..., None], sub.shape)))
    return np.clip(q, 0, levels).astype(np.uint8)  # [n, 8, 32]


def _nibbles(q: np.ndarray) -> np.ndarray:
    """[n, 8, 32] 4-bit codes -> [n, 128] bytes: sub-blocks 2g and 2g+1 share bytes 32g.."""
    return (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(q.shape[0], 128)


def q4_k(x: np.ndarray) -> np.ndarray:
    sub = x.reshape(-1, 8, 32)
    d, dmin, sc, m = _scales_mins(sub, 15)
    q = _codes(sub, d, dmin, sc, m, 15)
    return np.concatenate(
        [_half_bytes(d), _half_bytes(dmin), _pack_scales(sc, m), _nibbles(q & 0xF)], axis=1
    )


def q5_k(x: np.ndarray) -> np.ndarray:
    sub = x.reshape(-1, 8, 32)
    d, dmin, sc, m = _scales_mins(sub, 31)
    q = _codes(sub, d, dmin, sc, m, 31)
    # Bit r of qh byte l is the fifth bit of element l of sub-block r.
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for r in range(8):
        qh |= ((q[:, r, :] >> 4) & 1) << r
    return np.concatenate(
        [_half_bytes(d), _half_bytes(dmin), _pack_scales(sc, m), qh, _nibbles(q & 0xF)], axis=1
    )


def q6_k(x: np.ndarray) -> np.ndarray:
    n = x.reshape(-1, QK).shape[0]
    sub = x.reshape(n, 16, 16)
    scale = np.abs(sub).max(axis=-1) / 31
    d = _f16(scale.max(axis=-1) / 127)
    sc = np.clip(np.rint(_divide(scale, d.astype(np.float32)[:, None])), -128, 127).astype(np.int8)
    eff = d.astype(np.float32)[:, None] * sc
    q = np.rint(_divide(sub, np.broadcast_to(eff[..., None], sub.shape)))
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(n, 2, 4, 32)  # half, quarter, l
    ql = np.zeros((n, 2, 64), dtype=np.uint8)
    ql[:, :, 0:32] = (q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4)
    ql[:, :, 32:64] = (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)
    qh = np.zeros((n, 2, 32), dtype=np.uint8)
    for quarter in range(4):
        qh |= (q[:, :, quarter] >> 4) << (2 * quarter)
    return np.concatenate(
        [ql.reshape(n, 128), qh.reshape(n, 64), sc.view(np.uint8), _half_bytes(d)], axis=1
    )


ENCODERS = {T.Q4_K: q4_k, T.Q5_K: q5_k, T.Q6_K: q6_k}


def quantize(x: np.ndarray, qtype: T) -> np.ndarray:
    rows = x.reshape(-1, x.shape[-1]).astype(np.float32)
    if rows.shape[1] % QK:
        raise ValueError(f"{qtype.name} needs rows of a multiple of {QK} elements")
    blocks = ENCODERS[qtype](rows.reshape(-1, QK))
    return blocks.reshape(rows.shape[0], -1)
