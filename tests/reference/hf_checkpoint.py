#!/usr/bin/env python3
"""Writes a tiny llama or qwen2 GGUF file's weights as a Hugging Face checkpoint folder
(config.json, safetensors written here byte by byte), for kiln's checkpoint-reader tests.

usage: hf_checkpoint.py MODEL.gguf OUT_DIR [F32|F16] [SHARDS]

llama GGUF files hold Q and K rows permuted for interleaved rope pairs; Hugging Face keeps
them in rotate_half order, so they are permuted back. SHARDS > 1 splits the tensors over
that many files and writes model.safetensors.index.json. A qwen2 file's byte-level BPE
vocabulary becomes a tokenizer.json (qwen2's split regex, byte-level, its merges, the
special tokens as added tokens).
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def tokenizer_json(tokens, types, merges):
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            byte_level,
        ]},
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in merges]},
    }


def hf_name(name):
    if name in NAMES:
        return NAMES[name]
    _, layer, rest = name.split(".", 2)
    return f"model.layers.{layer}.{NAMES[rest]}"


def unpermute(w, heads):
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        data = a.tobytes()
        dtype = {np.float32: "F32", np.float16: "F16"}[a.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main() -> None:
    src, out = sys.argv[1], Path(sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "F32"
    shards = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    r = GGUFReader(src)
    field = lambda k: r.get_field(k).contents()
    arch = field("general.architecture")
    k = lambda n: field(f"{arch}.{n}")
    heads, kv_heads = int(k("attention.head_count")), int(k("attention.head_count_kv"))
    tensors = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        a = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if arch == "llama" and t.name.endswith("attn_q.weight"):
            a = unpermute(a, heads)
        if arch == "llama" and t.name.endswith("attn_k.weight"):
            a = unpermute(a, kv_heads)
        if kind == "F16" and a.ndim == 2:
            a = a.astype(np.float16)
        tensors[hf_name(t.name)] = np.ascontiguousarray(a)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": arch,
        "hidden_size": int(k("embedding_length")),
        "num_hidden_layers": int(k("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": int(k("feed_forward_length")),
        "rms_norm_eps": float(k("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(k("rope.freq_base")),
        "vocab_size": tensors["model.embed_tokens.weight"].shape[0],
        "max_position_embeddings": int(k("context_length")),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
    }
    if r.get_field("tokenizer.ggml.merges") is not None:
        tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
        merges = field("tokenizer.ggml.merges")
        config["eos_token_id"] = int(field("tokenizer.ggml.eos_token_id"))
        (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(tokens, types, merges)))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if shards == 1:
        write_safetensors(out / "model.safetensors", tensors)
        return
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        write_safetensors(out / file, part)
        weight_map.update({n: file for n in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


if __name__ == "__main__":
    main()
