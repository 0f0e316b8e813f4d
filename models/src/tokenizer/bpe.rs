//! Byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`: gpt2, qwen2, llama 3), run
//! by the `tokenizers` crate: the text is split by the model family's pre-tokenizer regex
//! (`tokenizer.ggml.pre`), each piece's UTF-8 bytes are spelled as printable characters
//! (GPT-2's byte-to-character table), and `tokenizer.ggml.merges` are applied in rank order.
//! Control and user-defined tokens (`<|im_start|>`, `<|endoftext|>`) are matched whole in
//! the text first, as llama.cpp does for prompts.

use super::{Vocab, TYPE_CONTROL, TYPE_USER_DEFINED};
use std::collections::HashMap;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// GPT-2's split: contractions, letters, digits, other symbols, each with one leading space.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's: case-insensitive contractions, digits in threes, newlines kept apart.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: as llama 3's with single digits.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer regex and whether whole pieces found in the vocabulary skip the merges
/// (llama 3's tokenizer does), for a `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: Option<&str>) -> Result<(&'static str, bool), String> {
    match pre {
        None | Some("default" | "gpt2") => Ok((GPT2, false)),
        Some("llama-bpe" | "llama3" | "llama-v3") => Ok((LLAMA3, true)),
        Some("qwen2") => Ok((QWEN2, false)),
        Some(other) => Err(format!(
            "byte-level BPE pre-tokenizer `{other}` is not supported (kiln knows gpt2, \
             llama-bpe and qwen2); its splits differ, so the tokens would be wrong"
        )),
    }
}

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the
/// others for the characters from U+0100 on, in byte order.
pub(super) fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below U+0200")
        };
    }
    table
}

/// The byte table read backwards: a byte-level token's characters to its bytes.
pub(super) struct ByteTable(HashMap<char, u8>);

impl ByteTable {
    pub(super) fn new() -> ByteTable {
        ByteTable(
            byte_chars()
                .iter()
                .enumerate()
                .map(|(b, &c)| (c, b as u8))
                .collect(),
        )
    }

    /// The bytes `token` spells (characters outside the table stand for themselves).
    pub(super) fn bytes(&self, token: &str) -> Vec<u8> {
        token
            .chars()
            .flat_map(|c| match self.0.get(&c) {
                Some(&b) => vec![b],
                None => c.to_string().into_bytes(),
            })
            .collect()
    }
}

pub(super) struct ByteBpe {
    tok: tokenizers::Tokenizer,
    bytes: ByteTable,
}

impl ByteBpe {
    pub(super) fn new(vocab: &Vocab) -> Result<ByteBpe, String> {
        let (pattern, ignore_merges) = pre_tokenizer(vocab.pre.as_deref())?;
        let ids: tokenizers::models::bpe::Vocab = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = vocab
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| format!("tokenizer.ggml.merges: `{m}` is not two tokens"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(ids, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| format!("byte-level BPE vocabulary: {e}"))?;
        let split = Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| format!("pre-tokenizer regex: {e}"))?;
        let mut tok = tokenizers::Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ]))));
        let specials: Vec<AddedToken> = vocab
            .tokens
            .iter()
            .zip(&vocab.types)
            .filter(|(_, &ty)| ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED)
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        tok.add_special_tokens(specials)
            .map_err(|e| format!("special tokens: {e}"))?;
        Ok(ByteBpe {
            tok,
            bytes: ByteTable::new(),
        })
    }

    /// Appends the token ids of `text` (not empty) to `out`.
    pub(super) fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), String> {
        super::encode_with(&self.tok, text, false, "byte-level BPE", out)
    }

    /// The bytes token `id` stands for: its characters read back through the byte table;
    /// user-defined tokens stand for their text, control tokens for nothing.
    pub(super) fn piece(&self, vocab: &Vocab, id: u32) -> Vec<u8> {
        match super::shown(vocab, id) {
            None => Vec::new(),
            Some((t, TYPE_USER_DEFINED)) => t.as_bytes().to_vec(),
            Some((t, _)) => self.bytes.bytes(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_is_a_bijection_onto_printable_characters() {
        let t = byte_chars();
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(t[b' ' as usize], '\u{120}');
        assert_eq!(t[b'\n' as usize], '\u{10A}');
        assert_eq!(t[b'a' as usize], 'a');
        assert!(t.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }
}
