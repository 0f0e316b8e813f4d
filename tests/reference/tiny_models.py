#!/usr/bin/env python3
"""Writes tiny llama-family GGUF files with deterministic weights, for kiln's tests.

usage: tiny_models.py OUT_DIR

Files: tiny-llama-{F32,F16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1}.gguf (grouped-query attention, untied
output, a SentencePiece vocabulary), tiny-llama-{Q4_K_M,Q5_K_M}.gguf (the same, 256 wide so
rows are whole K-quant blocks, with llama.cpp's mixes of types per tensor) and
tiny-qwen2-F32.gguf (q/k/v biases, neox rope, tied embeddings, a byte-level BPE
vocabulary), tiny-gpt2-{F32,Q8_0}.gguf (learned positions, layer norms, fused QKV, GELU,
biases, tied embeddings, a gpt2 BPE vocabulary), tiny-bert-{F32,Q8_0}.gguf (a BERT
encoder with a WordPiece vocabulary, mean pooling). Weights
come from numpy's PCG64 with a fixed seed, so every run writes the same bytes.
"""
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

import kquants

# A SentencePiece-style vocabulary as llama GGUF files carry it: <unk>, <s>, </s>, the
# 256 byte-fallback tokens, then pieces, better merges scoring higher.
PIECES = [
    "\u2581", "e", "t", "a", "o", "i", "n", "s", "h", "r", "\u2581t", "he", "\u2581the", "in",
    "\u2581a", "er", "on", "\u2581o", "re", "at", "en", "nd", "\u2581s", "\u2581w", "ou", "ll",
    "\u2581i", "es", "ing", "\u2581c", "is", "it", "\u2581b", "or", "\u2581f", "\u2581m", "an",
    "ed", "\u2581p", "ar", "\u2581d",
]
TOKENS = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + PIECES
TOKEN_TYPES = [2, 3, 3] + [6] * 256 + [1] * len(PIECES)
TOKEN_SCORES = [0.0] * 259 + [-float(i) for i in range(len(PIECES))]

CONFIG = dict(vocab=len(TOKENS), embd=64, heads=4, kv_heads=2, layers=2, ff=128, context=128)
# gpt2 has one key/value head per query head.
GPT2_CONFIG = dict(CONFIG, kv_heads=CONFIG["heads"])
# K-quant blocks hold 256 elements, so every row of the K-quant models is a multiple of it.
CONFIG_K = dict(CONFIG, embd=256, ff=512)

# llama.cpp's K-quant mixes: (base type, type of output.weight and of the attn_v and
# ffn_down tensors of the layers that get more bits).
MIXES = {"Q4_K_M": (T.Q4_K, T.Q6_K), "Q5_K_M": (T.Q5_K, T.Q6_K)}


def more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's choice of layers whose attn_v and ffn_down get the larger type."""
    eighth = layers // 8
    return layer < eighth or layer >= 7 * layers // 8 or (layer - eighth) % 3 == 2


def tensor_type(name: str, mix: str, layers: int) -> T:
    base, more = MIXES[mix]
    if name == "output.weight":
        return more
    if name.endswith(("attn_v.weight", "ffn_down.weight")):
        layer = int(name.split(".")[1])
        return more if more_bits(layer, layers) else base
    return base


def encode(data: np.ndarray, qtype: T) -> np.ndarray:
    if qtype in kquants.ENCODERS:
        return kquants.quantize(data, qtype)
    return quantize(data, qtype)


def vocabulary(n: int) -> tuple:
    """The tokens, types and scores above, padded with filler pieces to `n` tokens."""
    extra = [f"\u2581w{i}" for i in range(n - len(TOKENS))]
    scores = TOKEN_SCORES + [-float(len(PIECES) + i) for i in range(len(extra))]
    return TOKENS + extra, TOKEN_TYPES + [1] * len(extra), scores


# A byte-level BPE vocabulary (qwen2's scheme): the 256 byte characters, merges learned
# from a fixed text, then qwen2's special tokens; as many tokens as the SentencePiece one.
BPE_TEXT = (
    "the cat sat on the mat. the dog and the cat are friends; they eat at noon. "
    "kiln compiles models into kernels, and kernels run on the machine it is given. "
    "Numbers: 12 345 6789. It's the end of the story, isn't it?"
)
BPE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_chars() -> list:
    """GPT-2's byte-to-character table."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, extra = [], 256
    for b in range(256):
        table.append(chr(b) if b in printable else chr(extra))
        extra += b not in printable
    return table


def bpe_vocabulary(n: int) -> tuple:
    """Tokens, types and merges: greedy pair merges over BPE_TEXT's words until `n` tokens."""
    table = byte_chars()
    words = [[table[b] for b in w.encode()] for w in BPE_TEXT.replace(" ", "\0 ").split("\0")]
    tokens, merges = list(table), []
    while len(tokens) + len(BPE_SPECIALS) < n:
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        pair = max(sorted(counts), key=lambda p: counts[p])
        merges.append(f"{pair[0]} {pair[1]}")
        tokens.append(pair[0] + pair[1])
        for k, w in enumerate(words):
            merged, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    merged.append(w[i] + w[i + 1])
                    i += 2
                else:
                    merged.append(w[i])
                    i += 1
            words[k] = merged
    tokens += BPE_SPECIALS
    types = [1] * (len(tokens) - len(BPE_SPECIALS)) + [3, 3, 3]
    return tokens, types, merges


def tensors(arch: str, rng: np.random.Generator, c: dict = CONFIG) -> dict:
    d, hd = c["embd"], c["embd"] // c["heads"]
    w = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    norm = lambda: (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    t = {"token_embd.weight": w(c["vocab"], d)}
    if arch == "gpt2":
        return gpt2_tensors(t, w, norm, rng, c)
    for l in range(c["layers"]):
        p = f"blk.{l}."
        t[p + "attn_norm.weight"] = norm()
        t[p + "attn_q.weight"] = w(c["heads"] * hd, d)
        t[p + "attn_k.weight"] = w(c["kv_heads"] * hd, d)
        t[p + "attn_v.weight"] = w(c["kv_heads"] * hd, d)
        if arch == "qwen2":
            t[p + "attn_q.bias"] = (0.1 * rng.standard_normal(c["heads"] * hd)).astype(np.float32)
            t[p + "attn_k.bias"] = (0.1 * rng.standard_normal(c["kv_heads"] * hd)).astype(np.float32)
            t[p + "attn_v.bias"] = (0.1 * rng.standard_normal(c["kv_heads"] * hd)).astype(np.float32)
        t[p + "attn_output.weight"] = w(d, c["heads"] * hd)
        t[p + "ffn_norm.weight"] = norm()
        t[p + "ffn_gate.weight"] = w(c["ff"], d)
        t[p + "ffn_up.weight"] = w(c["ff"], d)
        t[p + "ffn_down.weight"] = w(d, c["ff"])
    t["output_norm.weight"] = norm()
    if arch == "llama":
        t["output.weight"] = w(c["vocab"], d)
    return t


def gpt2_tensors(t: dict, w, norm, rng: np.random.Generator, c: dict) -> dict:
    """gpt2's: learned positions, layer norms and projections with biases, a fused QKV
    projection (rows Q, K, V), a GELU MLP, tied output."""
    d = c["embd"]
    bias = lambda n: (0.1 * rng.standard_normal(n)).astype(np.float32)
    t["position_embd.weight"] = (0.1 * rng.standard_normal((c["context"], d))).astype(np.float32)
    for l in range(c["layers"]):
        p = f"blk.{l}."
        t[p + "attn_norm.weight"], t[p + "attn_norm.bias"] = norm(), bias(d)
        t[p + "attn_qkv.weight"], t[p + "attn_qkv.bias"] = w(3 * d, d), bias(3 * d)
        t[p + "attn_output.weight"], t[p + "attn_output.bias"] = w(d, d), bias(d)
        t[p + "ffn_norm.weight"], t[p + "ffn_norm.bias"] = norm(), bias(d)
        t[p + "ffn_up.weight"], t[p + "ffn_up.bias"] = w(c["ff"], d), bias(c["ff"])
        t[p + "ffn_down.weight"], t[p + "ffn_down.bias"] = w(d, c["ff"]), bias(d)
    t["output_norm.weight"], t["output_norm.bias"] = norm(), bias(d)
    return t


def write(path: Path, arch: str, qtype, seed: int, c: dict = CONFIG) -> None:
    """`qtype` is a GGML type or the name of a K-quant mix (`MIXES`)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_name(c.get("name", f"tiny-{arch}"))
    w.add_context_length(c["context"])
    w.add_embedding_length(c["embd"])
    w.add_block_count(c["layers"])
    w.add_feed_forward_length(c["ff"])
    w.add_head_count(c["heads"])
    if arch == "gpt2":
        w.add_layer_norm_eps(1e-5)
    else:
        w.add_head_count_kv(c["kv_heads"])
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(c["embd"] // c["heads"])
    if arch == "llama":
        tokens, types, scores = vocabulary(c["vocab"])
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    else:
        tokens, types, merges = bpe_vocabulary(c["vocab"])
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt2" if arch == "gpt2" else "qwen2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_eos_token_id(tokens.index("<|endoftext|>"))
    for name, data in tensors(arch, rng, c).items():
        # Norms and biases stay f32, as llama.cpp's converter keeps them.
        if data.ndim == 1 or qtype == T.F32:
            w.add_tensor(name, data)
        elif qtype == T.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            t = tensor_type(name, qtype, c["layers"]) if qtype in MIXES else qtype
            w.add_tensor(name, encode(data, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


BERT_WORDS = ["the", "cat", "sat", "on", "mat", "dog", "and", "kiln", "compiles", "model"]
BERT_PIECES = ["at", "ing", "s", "ed", "er"]
BERT_CONFIG = dict(embd=64, heads=4, layers=2, ff=128, context=64)


def bert_vocabulary() -> tuple:
    """llama.cpp's GGUF spelling of a WordPiece vocabulary: specials, then `▁`-prefixed
    word starts (single characters and whole words), then bare continuations."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = specials + ["\u2581" + c for c in chars] + ["\u2581" + w for w in BERT_WORDS]
    tokens += chars + BERT_PIECES
    types = [3, 2, 3, 3, 3] + [1] * (len(tokens) - len(specials))
    return tokens, types


def write_bert(path: Path, qtype, seed: int) -> None:
    """A tiny BERT encoder (llama.cpp's `bert` tensors and keys), mean pooling."""
    rng = np.random.default_rng(seed)
    c = BERT_CONFIG
    d, ff = c["embd"], c["ff"]
    tokens, types = bert_vocabulary()
    w = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    vec = lambda n, scale=0.1, base=0.0: (base + scale * rng.standard_normal(n)).astype(np.float32)
    t = {
        "token_embd.weight": w(len(tokens), d),
        "position_embd.weight": vec((c["context"], d)),
        "token_types.weight": vec((2, d)),
        "token_embd_norm.weight": vec(d, base=1.0),
        "token_embd_norm.bias": vec(d),
    }
    for l in range(c["layers"]):
        p = f"blk.{l}."
        for n in ["attn_q", "attn_k", "attn_v", "attn_output"]:
            t[p + n + ".weight"], t[p + n + ".bias"] = w(d, d), vec(d)
        t[p + "attn_output_norm.weight"], t[p + "attn_output_norm.bias"] = vec(d, base=1.0), vec(d)
        t[p + "ffn_up.weight"], t[p + "ffn_up.bias"] = w(ff, d), vec(ff)
        t[p + "ffn_down.weight"], t[p + "ffn_down.bias"] = w(d, ff), vec(d)
        t[p + "layer_output_norm.weight"], t[p + "layer_output_norm.bias"] = vec(d, base=1.0), vec(d)
    g = gguf.GGUFWriter(str(path), arch="bert")
    g.add_name("tiny-bert")
    g.add_context_length(c["context"])
    g.add_embedding_length(d)
    g.add_block_count(c["layers"])
    g.add_feed_forward_length(ff)
    g.add_head_count(c["heads"])
    g.add_layer_norm_eps(1e-12)
    g.add_causal_attention(False)
    g.add_pooling_type(gguf.PoolingType.MEAN)
    g.add_tokenizer_model("bert")
    g.add_token_list(tokens)
    g.add_token_types(types)
    g.add_bos_token_id(tokens.index("[CLS]"))
    g.add_sep_token_id(tokens.index("[SEP]"))
    g.add_unk_token_id(tokens.index("[UNK]"))
    g.add_pad_token_id(tokens.index("[PAD]"))
    for name, data in t.items():
        if data.ndim == 1 or qtype == T.F32:
            g.add_tensor(name, data)
        else:
            g.add_tensor(name, encode(data, qtype), raw_dtype=qtype)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for qtype in [T.F32, T.F16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]:
        write(out / f"tiny-llama-{qtype.name}.gguf", "llama", qtype, seed=1)
    for mix in MIXES:
        write(out / f"tiny-llama-{mix}.gguf", "llama", mix, seed=1, c=CONFIG_K)
    write(out / "tiny-qwen2-F32.gguf", "qwen2", T.F32, seed=2)
    for qtype in [T.F32, T.Q8_0]:
        write(out / f"tiny-gpt2-{qtype.name}.gguf", "gpt2", qtype, seed=4, c=GPT2_CONFIG)
        write_bert(out / f"tiny-bert-{qtype.name}.gguf", qtype, seed=5)


if __name__ == "__main__":
    main()
