//! Sentence embeddings from an encoder artifact (a BERT GGUF compiled by kiln): text to
//! token ids with the artifact's vocabulary, one run over the whole sequence, the pooled
//! output, L2-normalised by default (as llama.cpp's embedding tool does).

use anyhow::{bail, Context, Result};
use kiln_ir::{DType, Tensor};
use kiln_models::tokenizer::Tokenizer;
use kiln_runtime::session::Session;
use std::collections::BTreeMap;

pub struct Embedder {
    session: Session,
    tokenizer: Tokenizer,
}

impl Embedder {
    pub fn new(session: Session) -> Result<Embedder> {
        let m = session.manifest();
        let has = |name: &str| m.inputs.iter().any(|i| i.name == name);
        let encoder =
            has("tokens") && has("token_types") && m.outputs.iter().any(|o| o.name == "embedding");
        if !encoder {
            bail!(
                "{} is not an encoder (kiln embed needs a BERT model compiled from GGUF: inputs \
                 tokens and token_types, output embedding)",
                m.model
            );
        }
        let Some(bytes) = session.artifact().vocab()? else {
            bail!("{} carries no vocabulary", m.model);
        };
        let vocab = serde_json::from_slice(bytes).context("the artifact's vocabulary section")?;
        let tokenizer = Tokenizer::new(vocab).map_err(anyhow::Error::msg)?;
        Ok(Embedder { session, tokenizer })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The embedding of `text`; unit length when `normalize`.
    pub fn embed(&mut self, text: &str, normalize: bool) -> Result<Vec<f32>> {
        let ids = self.tokenizer.encode(text).map_err(anyhow::Error::msg)?;
        self.embed_ids(&ids, normalize)
    }

    /// The embedding of a token sequence (`[CLS] ... [SEP]` included).
    pub fn embed_ids(&mut self, ids: &[u32], normalize: bool) -> Result<Vec<f32>> {
        if ids.is_empty() {
            bail!("nothing to embed: the text has no tokens");
        }
        let n = ids.len();
        let ints = |v: Vec<f64>| Tensor::new(DType::I32, vec![n], v);
        let inputs = BTreeMap::from([
            (
                "tokens".to_string(),
                ints(ids.iter().map(|&t| t as f64).collect()),
            ),
            ("pos".to_string(), ints((0..n).map(|p| p as f64).collect())),
            ("token_types".to_string(), ints(vec![0.0; n])),
        ]);
        let ins = crate::session::ordered_inputs(&self.session, &inputs)?;
        let outs = self.session.run(&ins)?;
        let at = self
            .session
            .manifest()
            .outputs
            .iter()
            .position(|o| o.name == "embedding")
            .expect("checked when the embedder was made");
        let mut v = outs[at]
            .to_f32()
            .context("the embedding output is not f32")?;
        if normalize {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(v)
    }
}
