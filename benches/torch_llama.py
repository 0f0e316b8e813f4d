"""PyTorch eager next to `kiln bench`: a llama GGUF's weights in transformers'
LlamaForCausalLM, f16 on the GPU, timed as llama-bench and `kiln bench` count: ppN (one
forward pass over N prompt tokens) and tgN (N single-token steps with the KV cache, greedy).

    python3 benches/torch_llama.py model.gguf [--prompt 512] [--generate 128] [--reps 3]

Quantized files are dequantized to f16 (PyTorch has no Q8_0 matmul): the PyTorch user's
alternative. Q and K rows are un-permuted from llama.cpp's interleaved-rope order into
Hugging Face's, so both compute the same function. Run by scripts/gpu-check.sh on the GPU
machine (torch, transformers and the gguf package there).
"""
import argparse
import statistics
import time

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from transformers import LlamaConfig, LlamaForCausalLM


def meta(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.parts[f.data[0]].tolist()[0]


def tensor(t):
    data = np.asarray(t.data)
    if data.dtype not in (np.float16, np.float32):
        data = dequantize(data, t.tensor_type)
    shape = [int(x) for x in reversed(t.shape.tolist())]
    return torch.from_numpy(np.array(data.reshape(shape))).to(torch.float16)


def unpermute(w, heads):
    # llama.cpp's converter stores each head's rows as (pairs, 2); Hugging Face as (2, pairs).
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def load(path):
    r = GGUFReader(path)
    heads = meta(r, "llama.attention.head_count")
    kv = meta(r, "llama.attention.head_count_kv", heads)
    t = {x.name: x for x in r.tensors}
    cfg = LlamaConfig(
        vocab_size=int(t["token_embd.weight"].shape[1]),
        hidden_size=meta(r, "llama.embedding_length"),
        intermediate_size=meta(r, "llama.feed_forward_length"),
        num_hidden_layers=meta(r, "llama.block_count"),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=meta(r, "llama.context_length", 2048),
        rms_norm_eps=meta(r, "llama.attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=meta(r, "llama.rope.freq_base", 10000.0),
        tie_word_embeddings="output.weight" not in t,
    )
    state = {"model.embed_tokens.weight": tensor(t["token_embd.weight"]),
             "model.norm.weight": tensor(t["output_norm.weight"])}
    if "output.weight" in t:
        state["lm_head.weight"] = tensor(t["output.weight"])
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
             "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    for i in range(cfg.num_hidden_layers):
        for g, h in names.items():
            w = tensor(t[f"blk.{i}.{g}.weight"])
            if g == "attn_q":
                w = unpermute(w, heads)
            elif g == "attn_k":
                w = unpermute(w, kv)
            state[f"model.layers.{i}.{h}.weight"] = w
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.float16)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model.eval(), cfg


@torch.no_grad()
def prefill(model, ids):
    model(ids, use_cache=False)


@torch.no_grad()
def generate(model, first, steps):
    ids, past = first, None
    for _ in range(steps):
        out = model(ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        ids = out.logits[:, -1:].argmax(-1)


def rate(fn, tokens, reps):
    fn()  # warm-up: kernels chosen, memory pooled
    torch.cuda.synchronize()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        rates.append(tokens / (time.perf_counter() - t0))
    return statistics.mean(rates), statistics.pstdev(rates)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--generate", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    model, cfg = load(a.gguf)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (1, a.prompt), generator=g).cuda()
    name = a.gguf.rsplit("/", 1)[-1]
    attn = getattr(model.config, "_attn_implementation", "?")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, attention {attn}, f16")
    mean, sd = rate(lambda: prefill(model, ids), a.prompt, a.reps)
    print(f"| {name} (PyTorch eager, f16) | pp{a.prompt} | {mean:.2f} ± {sd:.2f} |")
    mean, sd = rate(lambda: generate(model, ids[:, :1], a.generate), a.generate, a.reps)
    print(f"| {name} (PyTorch eager, f16) | tg{a.generate} | {mean:.2f} ± {sd:.2f} |")


if __name__ == "__main__":
    main()
