//! Tokenizers from a GGUF vocabulary. `tokenizer.ggml.model = "llama"` files use the
//! SentencePiece scheme as llama.cpp runs it: spaces become `▁` (and one is put in front),
//! the text starts as single characters, and the adjacent pair whose concatenation is the
//! best-scoring vocabulary entry is merged until none is; characters with no entry fall
//! back to their UTF-8 bytes as `<0xXX>` tokens. Byte-level BPE (gpt2, qwen2, llama 3) is
//! not read yet and is reported as such.
//!
//! The vocabulary travels inside the artifact (a JSON section), so `kiln run -p` needs
//! nothing but the `.kiln` file.

use crate::gguf::{GgufFile, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BinaryHeap, HashMap};

const SPACE: &str = "\u{2581}";

/// llama.cpp's token types.
const TYPE_CONTROL: i32 = 3;
const TYPE_BYTE: i32 = 6;

/// What the artifact stores: enough to rebuild the tokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    pub model: String,
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_space_prefix: bool,
}

impl Vocab {
    /// The vocabulary of `f`, or None when the file has none (`tokenizer.ggml.tokens`).
    pub fn from_gguf(f: &GgufFile) -> Result<Option<Vocab>, String> {
        let Some(tokens) = f.get("tokenizer.ggml.tokens") else {
            return Ok(None);
        };
        let model = f
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .unwrap_or("llama")
            .to_string();
        let tokens: Vec<String> = tokens
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
            .ok_or("tokenizer.ggml.tokens is not an array of strings")?;
        let n = tokens.len();
        let floats = |key: &str| -> Result<Vec<f32>, String> {
            match f.get(key) {
                None => Ok(vec![0.0; n]),
                Some(v) => v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_f64().map(|x| x as f32))
                            .collect::<Option<Vec<_>>>()
                    })
                    .filter(|v| v.len() == n)
                    .ok_or(format!("{key} is not {n} numbers")),
            }
        };
        let scores = floats("tokenizer.ggml.scores")?;
        let types: Vec<i32> = match f.get("tokenizer.ggml.token_type") {
            None => vec![1; n],
            Some(v) => v
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|x| match x {
                            Value::I32(t) => Some(*t),
                            other => other.as_u64().map(|t| t as i32),
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .filter(|v| v.len() == n)
                .ok_or(format!("tokenizer.ggml.token_type is not {n} integers"))?,
        };
        let id = |key: &str| -> Result<Option<u32>, String> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(i) if (i as usize) < n => Ok(Some(i as u32)),
                    _ => Err(format!("{key} is {v}, not a token id below {n}")),
                },
            }
        };
        let flag = |key: &str, default: bool| match f.get(key) {
            Some(Value::Bool(b)) => *b,
            _ => default,
        };
        Ok(Some(Vocab {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token", true),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
            model,
            tokens,
            scores,
            types,
        }))
    }
}

pub struct Tokenizer {
    vocab: Vocab,
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
}

/// A candidate merge of two adjacent symbols; the heap pops the best score, then the
/// leftmost pair, as llama.cpp does.
#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// A run of the text: `start..start+len` bytes, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Tokenizer {
    pub fn new(vocab: Vocab) -> Result<Tokenizer, String> {
        if vocab.model != "llama" {
            return Err(format!(
                "tokenizer model `{}` is not supported yet (kiln reads SentencePiece `llama` vocabularies)",
                vocab.model
            ));
        }
        let ids = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut byte_ids = [None; 256];
        for (i, t) in vocab.tokens.iter().enumerate() {
            if vocab.types[i] == TYPE_BYTE {
                if let Some(b) = t
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    byte_ids[b as usize] = Some(i as u32);
                }
            }
        }
        Ok(Tokenizer {
            vocab,
            ids,
            byte_ids,
        })
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// Token ids of `text`, after BOS when the vocabulary asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        if self.vocab.add_bos {
            out.extend(self.vocab.bos);
        }
        if text.is_empty() {
            return Ok(out);
        }
        let mut s = String::new();
        if self.vocab.add_space_prefix {
            s.push_str(SPACE);
        }
        s.push_str(&text.replace(' ', SPACE));
        let n = s.chars().count();
        let mut syms: Vec<Symbol> = s
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            })
            .collect();
        let mut heap = BinaryHeap::new();
        let try_pair = |syms: &[Symbol], heap: &mut BinaryHeap<Bigram>, l: usize| {
            let Some(r) = syms[l].next else { return };
            let (a, b) = (syms[l], syms[r]);
            let piece = &s[a.start..b.start + b.len];
            if let Some(&id) = self.ids.get(piece) {
                heap.push(Bigram {
                    score: self.vocab.scores[id as usize],
                    left: l,
                    len: piece.len(),
                });
            }
        };
        for l in 0..n {
            try_pair(&syms, &mut heap, l);
        }
        while let Some(best) = heap.pop() {
            let l = best.left;
            let Some(r) = syms[l].next else { continue };
            // Stale: one side was merged into something else since this was pushed.
            if syms[l].len == 0 || syms[l].len + syms[r].len != best.len {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(nn) = syms[r].next {
                syms[nn].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                try_pair(&syms, &mut heap, p);
            }
            try_pair(&syms, &mut heap, l);
        }
        let mut i = Some(0);
        while let Some(k) = i {
            let sym = syms[k];
            let piece = &s[sym.start..sym.start + sym.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        let id = self.byte_ids[b as usize].ok_or_else(|| {
                            format!("`{piece}` is not in the vocabulary, which has no byte token <0x{b:02X}> to spell it")
                        })?;
                        out.push(id);
                    }
                }
            }
            i = sym.next;
        }
        Ok(out)
    }

    /// The bytes token `id` stands for (control tokens stand for none). `first` says the
    /// token starts the text, whose added space prefix is then dropped.
    pub fn piece(&self, id: u32, first: bool) -> Vec<u8> {
        let i = id as usize;
        let (Some(t), Some(&ty)) = (self.vocab.tokens.get(i), self.vocab.types.get(i)) else {
            return Vec::new();
        };
        if ty == TYPE_CONTROL {
            return Vec::new();
        }
        if ty == TYPE_BYTE {
            if let Some(b) = self.byte_ids.iter().position(|&x| x == Some(id)) {
                return vec![b as u8];
            }
        }
        let text = t.replace(SPACE, " ");
        let text = if first && self.vocab.add_space_prefix {
            text.strip_prefix(' ').unwrap_or(&text).to_string()
        } else {
            text
        };
        text.into_bytes()
    }

    /// The text of `ids` (invalid UTF-8 from partial byte sequences becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let mut first = true;
        for &id in ids {
            let p = self.piece(id, first);
            if !p.is_empty() {
                first = false;
            }
            bytes.extend(p);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns a stream of token pieces into text, holding back bytes until they complete a
/// UTF-8 character (byte-fallback tokens spell one character over several tokens).
#[derive(Default)]
pub struct TextStream {
    pending: Vec<u8>,
}

impl TextStream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => e.valid_up_to() + e.error_len().unwrap_or(0),
        };
        let out: Vec<u8> = self.pending.drain(..valid).collect();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// What is still held back, at the end of the stream (an incomplete character shows as
    /// U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests;
