//! Tokenizers from a GGUF vocabulary: SentencePiece-style (`tokenizer.ggml.model =
//! "llama"`, `spm.rs`), byte-level BPE (`"gpt2"`: gpt2, qwen2, llama 3; `bpe.rs`) and
//! WordPiece (`"bert"`; `wpm.rs`).
//!
//! The vocabulary travels inside the artifact (a JSON section), so `kiln run -p` needs
//! nothing but the `.kiln` file.

mod bpe;
pub mod hf;
mod spm;
mod wpm;

use crate::gguf::{GgufFile, Value};
use serde::{Deserialize, Serialize};

const SPACE: &str = "\u{2581}";

/// llama.cpp's token types.
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
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
    /// Appends EOS after the text (BERT's `[SEP]`).
    #[serde(default)]
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// Byte-level BPE: the merges in rank order (`"a b"`), and the pre-tokenizer's name.
    #[serde(default)]
    pub merges: Vec<String>,
    #[serde(default)]
    pub pre: Option<String>,
    /// A Hugging Face checkpoint's `tokenizer.json`, run as it is (`model = "hf"`).
    #[serde(default)]
    pub hf_json: Option<String>,
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
        let merges: Vec<String> = match f.get("tokenizer.ggml.merges") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
                .ok_or("tokenizer.ggml.merges is not an array of strings")?,
        };
        // llama.cpp's defaults: SentencePiece vocabularies start with BOS and a space,
        // byte-level ones with neither unless the file says so.
        let spm = model == "llama";
        // BERT's text goes between [CLS] (its BOS) and [SEP] (llama.cpp's key is spelled
        // `seperator`).
        let bert = model == "bert";
        let eos_key = if bert {
            "tokenizer.ggml.seperator_token_id"
        } else {
            "tokenizer.ggml.eos_token_id"
        };
        Ok(Some(Vocab {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id(eos_key)?,
            add_bos: flag("tokenizer.ggml.add_bos_token", spm || bert),
            add_eos: flag("tokenizer.ggml.add_eos_token", bert),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", spm),
            hf_json: None,
            pre: f
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .map(str::to_string),
            merges,
            model,
            tokens,
            scores,
            types,
        }))
    }
}

/// Text to token ids and back, by the vocabulary's scheme.
pub struct Tokenizer {
    vocab: Vocab,
    scheme: Scheme,
}

enum Scheme {
    SentencePiece(Box<spm::SentencePiece>),
    ByteBpe(Box<bpe::ByteBpe>),
    WordPiece(Box<wpm::WordPieces>),
    HuggingFace(Box<hf::HfTokenizer>),
}

impl Tokenizer {
    pub fn new(vocab: Vocab) -> Result<Tokenizer, String> {
        if vocab.types.len() != vocab.tokens.len() || vocab.scores.len() != vocab.tokens.len() {
            return Err("the vocabulary's tokens, types and scores differ in length".into());
        }
        let scheme = match vocab.model.as_str() {
            "llama" => Scheme::SentencePiece(Box::new(spm::SentencePiece::new(&vocab))),
            "gpt2" => Scheme::ByteBpe(Box::new(bpe::ByteBpe::new(&vocab)?)),
            "bert" => Scheme::WordPiece(Box::new(wpm::WordPieces::new(&vocab)?)),
            "hf" => Scheme::HuggingFace(Box::new(hf::HfTokenizer::new(&vocab)?)),
            other => {
                return Err(format!(
                    "tokenizer model `{other}` is not supported (kiln reads SentencePiece \
                     `llama`, byte-level BPE `gpt2` and WordPiece `bert` vocabularies)"
                ))
            }
        };
        Ok(Tokenizer { vocab, scheme })
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// Token ids of `text`, after BOS and before EOS when the vocabulary asks for them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        if self.vocab.add_bos {
            out.extend(self.vocab.bos);
        }
        if !text.is_empty() {
            match &self.scheme {
                Scheme::SentencePiece(s) => s.encode(&self.vocab, text, &mut out)?,
                Scheme::ByteBpe(b) => b.encode(text, &mut out)?,
                Scheme::WordPiece(w) => w.encode(text, &mut out)?,
                Scheme::HuggingFace(h) => h.encode(text, &mut out)?,
            }
        }
        if self.vocab.add_eos {
            out.extend(self.vocab.eos);
        }
        Ok(out)
    }

    /// The bytes token `id` stands for (control tokens stand for none). `first` says the
    /// token starts the text, whose added space prefix (SentencePiece) is then dropped.
    pub fn piece(&self, id: u32, first: bool) -> Vec<u8> {
        match &self.scheme {
            Scheme::SentencePiece(s) => s.piece(&self.vocab, id, first),
            Scheme::ByteBpe(b) => b.piece(&self.vocab, id),
            Scheme::WordPiece(_) => wpm::WordPieces::piece(&self.vocab, id, first),
            Scheme::HuggingFace(h) => h.piece(&self.vocab, id, first),
        }
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

/// Token `id`'s text and type; `None` for ids outside the vocabulary and for control
/// tokens, which stand for no text.
fn shown(vocab: &Vocab, id: u32) -> Option<(&str, i32)> {
    let i = id as usize;
    match (vocab.tokens.get(i), vocab.types.get(i)) {
        (Some(t), Some(&ty)) if ty != TYPE_CONTROL => Some((t.as_str(), ty)),
        _ => None,
    }
}

/// The byte a byte-fallback token (`<0xXX>`) stands for.
fn byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// A SentencePiece-style piece's bytes: `▁` as a space, and one leading space dropped when
/// `strip_first` (the token starts the text and the space was added, not written).
fn spaced(t: &str, strip_first: bool) -> Vec<u8> {
    let text = t.replace(SPACE, " ");
    match text.strip_prefix(' ') {
        Some(rest) if strip_first => rest.as_bytes().to_vec(),
        _ => text.into_bytes(),
    }
}

/// Appends the ids a `tokenizers` pipeline gives `text` to `out`; `special` lets its
/// post-processor add special tokens; `what` names the scheme in errors.
fn encode_with(
    tok: &tokenizers::Tokenizer,
    text: &str,
    special: bool,
    what: &str,
    out: &mut Vec<u32>,
) -> Result<(), String> {
    let e = tok
        .encode(text, special)
        .map_err(|e| format!("{what}: {e}"))?;
    out.extend_from_slice(e.get_ids());
    Ok(())
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
