//! WordPiece vocabularies (`tokenizer.ggml.model = "bert"`), run by the `tokenizers` crate
//! as BERT's uncased tokenizer does: text cleaned, lower-cased and stripped of accents,
//! split at whitespace and punctuation (CJK characters alone), and each word spelled by the
//! longest vocabulary entries from its start (a word with no spelling is `[UNK]`).
//!
//! llama.cpp's GGUF files mark word-initial pieces with `▁` and keep continuations bare,
//! where BERT's vocabularies write continuations with `##`: the vocabulary is translated
//! back for the `tokenizers` model.

use super::{Vocab, SPACE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;

pub(super) struct WordPieces {
    tok: tokenizers::Tokenizer,
}

/// BERT's spelling of a GGUF piece: `[CLS]`-style specials as they are, `▁word` as `word`,
/// a bare continuation as `##piece`.
fn bert_piece(t: &str) -> String {
    if t.starts_with('[') && t.ends_with(']') {
        t.to_string()
    } else if let Some(word) = t.strip_prefix(SPACE) {
        word.to_string()
    } else {
        format!("##{t}")
    }
}

impl WordPieces {
    pub(super) fn new(vocab: &Vocab) -> Result<WordPieces, String> {
        let unk = vocab
            .tokens
            .iter()
            .find(|t| *t == "[UNK]")
            .ok_or("the WordPiece vocabulary has no [UNK] token")?;
        // The BPE model's map type is the one the WordPiece builder takes (its own is private).
        let ids: tokenizers::models::bpe::Vocab = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (bert_piece(t), i as u32))
            .collect();
        let model = WordPiece::builder()
            .vocab(ids)
            .unk_token(unk.clone())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(|e| format!("WordPiece vocabulary: {e}"))?;
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
            .map_err(|e| format!("WordPiece normalizer: {e}"))?;
        tok.with_pre_tokenizer(Some(BertPreTokenizer));
        Ok(WordPieces { tok })
    }

    /// Appends the token ids of `text` (not empty) to `out`.
    pub(super) fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), String> {
        super::encode_with(&self.tok, text, false, "WordPiece", out)
    }

    /// Word-initial pieces stand for a space and the word (no space first in the text),
    /// continuations for themselves, control tokens for nothing.
    pub(super) fn piece(vocab: &Vocab, id: u32, first: bool) -> Vec<u8> {
        let Some((t, _)) = super::shown(vocab, id) else {
            return Vec::new();
        };
        match t.strip_prefix(SPACE) {
            Some(word) if first => word.as_bytes().to_vec(),
            Some(word) => format!(" {word}").into_bytes(),
            None => t.as_bytes().to_vec(),
        }
    }
}
