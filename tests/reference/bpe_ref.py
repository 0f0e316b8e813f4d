#!/usr/bin/env python3
"""An independent byte-level BPE encoder for kiln's tokenizer tests: reads the vocabulary
from a GGUF file (tokens, merges, pre-tokenizer name, token types) and prints the token ids
of each text argument, one line per text.

usage: bpe_ref.py MODEL.gguf TEXT...

Control and user-defined tokens are matched whole first; the rest is split by the family's
pre-tokenizer regex, each piece's UTF-8 bytes spelled through GPT-2's byte-to-character
table, and the lowest-ranked adjacent pair merged (every occurrence) until no pair has a
rank.
"""
import sys

import regex
from gguf import GGUFReader

PATTERNS = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def byte_chars() -> list:
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, extra = [], 256
    for b in range(256):
        if b in printable:
            table.append(chr(b))
        else:
            table.append(chr(extra))
            extra += 1
    return table


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.data) == 1 and f.types[0] != 9:  # a scalar
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0] == 8 else v[0]
    return [bytes(f.parts[i]).decode() if f.types[-1] == 8 else f.parts[i][0] for i in f.data]


def encoder(path):
    r = GGUFReader(path)
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    pre = field(r, "tokenizer.ggml.pre") or "gpt2"
    ids = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(merges)}
    specials = [t for t, ty in zip(tokens, types) if ty in (3, 4)]
    split = regex.compile("(" + "|".join(regex.escape(s) for s in specials) + ")") if specials else None
    pattern = regex.compile(PATTERNS[pre])
    table = byte_chars()

    def bpe(word):
        while len(word) > 1:
            best = min(range(len(word) - 1), key=lambda i: ranks.get((word[i], word[i + 1]), 1 << 60))
            pair = (word[best], word[best + 1])
            if pair not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(text):
        out = []
        for part in (split.split(text) if split else [text]):
            if part in ids and part in specials:
                out.append(ids[part])
                continue
            for piece in pattern.findall(part):
                out.extend(ids[w] for w in bpe([table[b] for b in piece.encode("utf-8")]))
        return out

    return encode


def main() -> None:
    encode = encoder(sys.argv[1])
    for text in sys.argv[2:]:
        print(" ".join(str(i) for i in encode(text)))


if __name__ == "__main__":
    main()
