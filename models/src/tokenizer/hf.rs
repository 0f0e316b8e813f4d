//! Hugging Face `tokenizer.json` files (checkpoint folders), run as they are by the
//! `tokenizers` crate: its normalizer, pre-tokenizer, model and post-processor (which adds
//! BOS where the model wants it). A token's bytes for streaming come from its vocabulary
//! string: through GPT-2's byte table where the file decodes byte-level, else with `▁` as a
//! space and `<0xXX>` as a byte (SentencePiece-style files).

use super::{Vocab, TYPE_CONTROL};
use std::str::FromStr;

pub(super) struct HfTokenizer {
    tok: tokenizers::Tokenizer,
    /// Byte-level files: the table that reads their tokens back as bytes.
    bytes: Option<super::bpe::ByteTable>,
}

/// Whether the file's decoder (or one in its sequence) is byte-level.
fn decodes_byte_level(json: &serde_json::Value) -> bool {
    let d = &json["decoder"];
    let is = |v: &serde_json::Value| v["type"] == "ByteLevel";
    is(d) || d["decoders"].as_array().is_some_and(|ds| ds.iter().any(is))
}

/// The vocabulary kiln stores for a `tokenizer.json` (its text travels in `hf_json`):
/// tokens by id, added special tokens as control tokens.
pub fn vocab_from_json(text: &str, bos: Option<u32>, eos: Option<u32>) -> Result<Vocab, String> {
    let tok = tokenizers::Tokenizer::from_str(text).map_err(|e| format!("tokenizer.json: {e}"))?;
    let ids = tok.get_vocab(true);
    let n = ids.values().map(|&i| i as usize + 1).max().unwrap_or(0);
    let mut tokens = vec![String::new(); n];
    for (t, i) in ids {
        tokens[i as usize] = t;
    }
    let mut types = vec![1; n];
    for (id, t) in tok.get_added_tokens_decoder() {
        if t.special {
            types[id as usize] = TYPE_CONTROL;
        }
    }
    Ok(Vocab {
        model: "hf".into(),
        scores: vec![0.0; n],
        types,
        bos,
        eos,
        add_bos: false,
        add_eos: false,
        add_space_prefix: false,
        merges: Vec::new(),
        pre: None,
        hf_json: Some(text.to_string()),
        tokens,
    })
}

impl HfTokenizer {
    pub(super) fn new(vocab: &Vocab) -> Result<HfTokenizer, String> {
        let text = vocab
            .hf_json
            .as_deref()
            .ok_or("no tokenizer.json in the vocabulary")?;
        let tok =
            tokenizers::Tokenizer::from_str(text).map_err(|e| format!("tokenizer.json: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("tokenizer.json: {e}"))?;
        let bytes = decodes_byte_level(&json).then(super::bpe::ByteTable::new);
        Ok(HfTokenizer { tok, bytes })
    }

    /// Appends the token ids of `text` (not empty) to `out`, special tokens included as the
    /// file's post-processor places them.
    pub(super) fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), String> {
        super::encode_with(&self.tok, text, true, "tokenizer.json", out)
    }

    pub(super) fn piece(&self, vocab: &Vocab, id: u32, first: bool) -> Vec<u8> {
        let Some((t, _)) = super::shown(vocab, id) else {
            return Vec::new();
        };
        match (&self.bytes, super::byte_token(t)) {
            (Some(table), _) => table.bytes(t),
            (None, Some(b)) => vec![b],
            (None, None) => super::spaced(t, first),
        }
    }
}
