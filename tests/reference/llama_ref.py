#!/usr/bin/env python3
"""An independent NumPy implementation of decoder-only transformers (llama, qwen2, gpt2) reading
GGUF files through the `gguf` package, in float64: the reference kiln's logits are
checked against.

usage: llama_ref.py [--q8-activations | --q8-0-activations] MODEL.gguf OUT.npy TOKEN [TOKEN ...]
       llama_ref.py [--q8-activations | --q8-0-activations] MODEL.gguf --greedy N TOKEN [TOKEN ...]

The first form writes the logits for every position of the token sequence, shape
[seq, vocab], f32. The second prints the N tokens greedy decoding appends to the prompt
(each step recomputes the whole sequence: no cache, nothing shared with kiln's method).

--q8-activations rounds the input rows of every matmul over block-quantized weights as
kiln's --quantize-activations does: through q8_0 (32 values per block, scale max|x| / 127
rounded up to an f16, values rounded half away from zero), or for the K-quants through
q8_k (256 values per block, scale max|x| / 127 in f32, the same rounding).
--q8-0-activations rounds them through q8_0 for every format, as kiln does on CUDA
(compiler/src/lower/gpu_byte_dot.rs).
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(r: GGUFReader, key: str, default=None):
    f = r.get_field(key)
    if f is None:
        if default is None:
            raise KeyError(key)
        return default
    v = f.contents()
    return v


# The GGML types kiln keeps as blocks (and multiplies with quantized activations).
BLOCK_TYPES = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"}
K_QUANTS = {"Q4_K", "Q5_K", "Q6_K"}
Q8_ACTIVATIONS = False


def q8_0_round_trip(x):
    """`x`'s rows as q8_0 blocks and back, in f32 steps (see the usage)."""
    x32 = x.astype(np.float32).reshape(-1, 32)
    d = (np.abs(x32).max(axis=1) / np.float32(127)).astype(np.float32)
    nearest = d.astype(np.float16)
    up = np.where(nearest.astype(np.float32) < d, np.nextafter(nearest, np.float16(np.inf)), nearest)
    scale = up.astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(scale > 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
    v = np.clip(x32 * inv[:, None], np.float32(-127), np.float32(127)).astype(np.float32)
    q = np.trunc(v + np.where(v < 0, np.float32(-0.5), np.float32(0.5)).astype(np.float32))
    return (q.astype(np.float64) * scale[:, None]).reshape(x.shape)


def q8_k_round_trip(x):
    """`x`'s rows as q8_k blocks and back, in f32 steps (see the usage)."""
    x32 = x.astype(np.float32).reshape(-1, 256)
    scale = (np.abs(x32).max(axis=1) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(scale > 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
    v = np.clip(x32 * inv[:, None], np.float32(-127), np.float32(127)).astype(np.float32)
    q = np.trunc(v + np.where(v < 0, np.float32(-0.5), np.float32(0.5)).astype(np.float32))
    return (q.astype(np.float64) * scale[:, None]).reshape(x.shape)


def mm(x, w, name):
    """`x @ w[name].T`, with `x` quantized first where kiln's option would."""
    if Q8_ACTIVATIONS and name in w["blocks"]:
        k_quant = (
            Q8_ACTIVATIONS != "q8_0" and w["blocks"][name] in K_QUANTS and x.shape[-1] % 256 == 0
        )
        x = q8_k_round_trip(x) if k_quant else q8_0_round_trip(x)
    return x @ w[name].T


def load(path: str):
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    k = lambda name, default=None: field(r, f"{arch}.{name}", default)
    heads = int(k("attention.head_count"))
    cfg = dict(
        arch=arch,
        embd=int(k("embedding_length")),
        layers=int(k("block_count")),
        heads=heads,
        kv_heads=int(k("attention.head_count_kv", heads)),
        theta=float(k("rope.freq_base", 10000.0)),
        eps=float(k("attention.layer_norm_epsilon" if arch == "gpt2" else "attention.layer_norm_rms_epsilon")),
    )
    cfg["head_dim"] = cfg["embd"] // heads
    cfg["rot"] = int(k("rope.dimension_count", cfg["head_dim"]))
    w = {"blocks": {}}
    for t in r.tensors:
        if t.tensor_type.name in BLOCK_TYPES:
            w["blocks"][t.name] = t.tensor_type.name
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        w[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
    return cfg, w


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def rope(x, pos, theta, rot, neox):
    # x: [seq, heads, head_dim]
    half = rot // 2
    freq = theta ** (-2.0 * np.arange(half) / rot)
    ang = pos[:, None] * freq[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = x.copy()
    if neox:
        a, b = x[..., :half], x[..., half:rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:rot] = a * sin + b * cos
    else:
        a, b = x[..., 0:rot:2], x[..., 1:rot:2]
        out[..., 0:rot:2] = a * cos - b * sin
        out[..., 1:rot:2] = a * sin + b * cos
    return out


def forward(cfg, w, tokens):
    seq = len(tokens)
    pos = np.arange(seq, dtype=np.float64)
    nh, nkv, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    neox = cfg["arch"] == "qwen2"
    gpt2 = cfg["arch"] == "gpt2"
    x = w["token_embd.weight"][tokens]
    if gpt2:
        x = x + w["position_embd.weight"][:seq]

    def norm(x, name):
        if gpt2:
            return layer_norm(x, w[name + ".weight"], w[name + ".bias"], cfg["eps"])
        return rms_norm(x, w[name + ".weight"], cfg["eps"])

    def linear(x, name, bias):
        y = mm(x, w, name + ".weight")
        return y + w[name + ".bias"] if bias else y

    mask = np.triu(np.full((seq, seq), -np.inf), k=1)
    for l in range(cfg["layers"]):
        p = f"blk.{l}."
        h = norm(x, p + "attn_norm")
        if gpt2:
            qkv = linear(h, p + "attn_qkv", True)
            q, k, v = qkv[:, : nh * hd], qkv[:, nh * hd : (nh + nkv) * hd], qkv[:, (nh + nkv) * hd :]
        else:
            q, k, v = (linear(h, p + f"attn_{n}", neox) for n in "qkv")
        q, k, v = q.reshape(seq, nh, hd), k.reshape(seq, nkv, hd), v.reshape(seq, nkv, hd)
        if not gpt2:
            q = rope(q, pos, cfg["theta"], cfg["rot"], neox)
            k = rope(k, pos, cfg["theta"], cfg["rot"], neox)
        out = np.empty((seq, nh, hd))
        for head in range(nh):
            kv = head // (nh // nkv)
            s = q[:, head, :] @ k[:, kv, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, head, :] = s @ v[:, kv, :]
        x = x + linear(out.reshape(seq, nh * hd), p + "attn_output", gpt2)
        h = norm(x, p + "ffn_norm")
        if gpt2:
            act = gelu_tanh(linear(h, p + "ffn_up", True))
        else:
            g = mm(h, w, p + "ffn_gate.weight")
            act = (g / (1.0 + np.exp(-g))) * mm(h, w, p + "ffn_up.weight")
        x = x + linear(act, p + "ffn_down", gpt2)
    x = norm(x, "output_norm")
    return mm(x, w, "output.weight" if "output.weight" in w else "token_embd.weight")


def main() -> None:
    global Q8_ACTIVATIONS
    if sys.argv[1] in ("--q8-activations", "--q8-0-activations"):
        Q8_ACTIVATIONS = "q8_0" if sys.argv[1] == "--q8-0-activations" else "cpu"
        del sys.argv[1]
    path = sys.argv[1]
    cfg, w = load(path)
    if sys.argv[2] == "--greedy":
        n = int(sys.argv[3])
        tokens = [int(t) for t in sys.argv[4:]]
        out = []
        for _ in range(n):
            # kiln computes in f32: ties and near-ties are judged on f32 logits too.
            logits = forward(cfg, w, np.array(tokens))[-1].astype(np.float32)
            nxt = int(np.argmax(logits))
            out.append(nxt)
            tokens.append(nxt)
        print(" ".join(str(t) for t in out))
        return
    out = sys.argv[2]
    tokens = np.array([int(t) for t in sys.argv[3:]])
    np.save(out, forward(cfg, w, tokens).astype(np.float32))


if __name__ == "__main__":
    main()
