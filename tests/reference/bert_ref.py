#!/usr/bin/env python3
"""An independent NumPy BERT encoder and WordPiece tokenizer for kiln's `kiln embed` tests:
reads a `bert` GGUF file through the `gguf` package and prints, per text argument, one JSON
line {"ids": [...], "embedding": [...]} (the mean of the last hidden states, float64, not
normalised).

usage: bert_ref.py MODEL.gguf TEXT...

Tokens: lower-case, accents stripped (NFD without combining marks), split at whitespace and
punctuation, then each word spelled greedily by the longest vocabulary pieces (llama.cpp's
GGUF spelling: `▁word` starts a word, bare pieces continue it), `[UNK]` for a word with no
spelling; `[CLS]` first and `[SEP]` last.
"""
import json
import sys
import unicodedata

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(r, key):
    f = r.get_field(key)
    return None if f is None else f.contents()


def words(text):
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out, cur = [], ""
    for c in text:
        punct = unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum() and not c.isspace())
        if c.isspace() or punct:
            if cur:
                out.append(cur)
            cur = ""
            if punct:
                out.append(c)
        else:
            cur += c
    if cur:
        out.append(cur)
    return out


def tokenize(text, tokens):
    ids = {t: i for i, t in enumerate(tokens)}
    out = [ids["[CLS]"]]
    for w in words(text):
        pieces, start = [], 0
        while start < len(w):
            end = len(w)
            while end > start:
                sub = w[start:end]
                key = "\u2581" + sub if start == 0 else sub
                if key in ids:
                    pieces.append(ids[key])
                    break
                end -= 1
            if end == start:
                pieces = [ids["[UNK]"]]
                break
            start = end
        out.extend(pieces)
    out.append(ids["[SEP]"])
    return out


def load(path):
    r = GGUFReader(path)
    cfg = dict(
        heads=int(field(r, "bert.attention.head_count")),
        layers=int(field(r, "bert.block_count")),
        eps=float(field(r, "bert.attention.layer_norm_epsilon")),
    )
    w = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        w[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
    return cfg, w, field(r, "tokenizer.ggml.tokens")


def layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))


def encode(cfg, w, ids):
    seq = len(ids)
    ln = lambda x, n: layer_norm(x, w[n + ".weight"], w[n + ".bias"], cfg["eps"])
    lin = lambda x, n: x @ w[n + ".weight"].T + w[n + ".bias"]
    x = w["token_embd.weight"][ids] + w["position_embd.weight"][:seq] + w["token_types.weight"][0]
    x = ln(x, "token_embd_norm")
    d = x.shape[1]
    nh = cfg["heads"]
    hd = d // nh
    for l in range(cfg["layers"]):
        p = f"blk.{l}."
        q, k, v = (lin(x, p + f"attn_{n}").reshape(seq, nh, hd) for n in "qkv")
        out = np.empty((seq, nh, hd))
        for h in range(nh):
            s = q[:, h] @ k[:, h].T / np.sqrt(hd)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, h] = s @ v[:, h]
        x = ln(x + lin(out.reshape(seq, d), p + "attn_output"), p + "attn_output_norm")
        x = ln(x + lin(gelu(lin(x, p + "ffn_up")), p + "ffn_down"), p + "layer_output_norm")
    return x.mean(axis=0)


def main() -> None:
    cfg, w, tokens = load(sys.argv[1])
    for text in sys.argv[2:]:
        ids = tokenize(text, tokens)
        print(json.dumps({"ids": ids, "embedding": encode(cfg, w, ids).tolist()}))


if __name__ == "__main__":
    main()
