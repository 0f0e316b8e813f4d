//! Token generation with a compiled decoder: prefill the prompt, then one token per step,
//! keeping the KV cache on the host and appending the rows each step returns.
//!
//! Any artifact with the decoder interface `kiln_models::llama` builds qualifies (inputs
//! `tokens`, `pos`, `past_pos`, `k_cache.L`, `v_cache.L`; outputs `logits`, `k_new.L`,
//! `v_new.L`); it is recognised from the manifest.

use crate::sampling::Sampler;
use anyhow::{bail, Context, Result};
use kiln_ir::DType;
use kiln_runtime::session::{HostBuffer, Session};
use std::time::{Duration, Instant};

pub struct Generator {
    session: Session,
    layers: usize,
    /// Elements of one cache row (kv_heads * head_dim) and its shape.
    row_shape: [usize; 2],
    vocab: usize,
    /// Per layer, keys and values of every position so far (f32 bytes).
    k: Vec<Vec<u8>>,
    v: Vec<Vec<u8>>,
    tokens: Vec<u32>,
    /// Where each named input and output sits in the manifest's order.
    slots: Slots,
}

struct Slots {
    tokens: usize,
    pos: usize,
    past_pos: usize,
    caches: Vec<(usize, usize)>,
    logits: usize,
    news: Vec<(usize, usize)>,
}

/// Timings of a generation, for tokens-per-second figures.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prefill: Duration,
    pub generated: usize,
    pub decode: Duration,
}

fn ints(values: impl Iterator<Item = usize>) -> HostBuffer {
    let v: Vec<i32> = values.map(|x| x as i32).collect();
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    HostBuffer::new(DType::I32, vec![v.len()], bytes)
}

impl Generator {
    pub fn new(session: Session) -> Result<Generator> {
        let m = session.manifest();
        let input = |name: &str| m.inputs.iter().position(|i| i.name == name);
        let output = |name: &str| m.outputs.iter().position(|o| o.name == name);
        let (Some(tokens), Some(pos), Some(past_pos), Some(logits)) = (
            input("tokens"),
            input("pos"),
            input("past_pos"),
            output("logits"),
        ) else {
            bail!("{} is not a decoder: it lacks the tokens/pos/past_pos inputs and logits output that text generation needs", m.model);
        };
        let mut caches = Vec::new();
        let mut news = Vec::new();
        for l in 0.. {
            match (
                input(&format!("k_cache.{l}")),
                input(&format!("v_cache.{l}")),
            ) {
                (Some(k), Some(v)) => caches.push((k, v)),
                _ => break,
            }
            let (Some(k), Some(v)) = (output(&format!("k_new.{l}")), output(&format!("v_new.{l}")))
            else {
                bail!(
                    "{}: layer {l} has cache inputs but no k_new/v_new outputs",
                    m.model
                );
            };
            news.push((k, v));
        }
        let spec = &m.inputs[caches
            .first()
            .context("the decoder has no KV cache inputs")?
            .0];
        let known = |i: usize| {
            spec.shape
                .get(i)
                .and_then(|d| d.as_known())
                .map(|n| n as usize)
        };
        let (Some(heads), Some(dim)) = (known(1), known(2)) else {
            bail!(
                "cache input {} has shape {:?}; expected [past, heads, dim]",
                spec.name,
                spec.shape
            );
        };
        let vocab = m.outputs[logits]
            .shape
            .last()
            .and_then(|d| d.as_known())
            .context("logits have no known vocabulary size")? as usize;
        let layers = caches.len();
        Ok(Generator {
            session,
            layers,
            row_shape: [heads, dim],
            vocab,
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
            tokens: Vec::new(),
            slots: Slots {
                tokens,
                pos,
                past_pos,
                caches,
                logits,
                news,
            },
        })
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The tokenizer of the artifact's vocabulary, if it carries one.
    pub fn tokenizer(&self) -> Result<Option<kiln_models::tokenizer::Tokenizer>> {
        let Some(bytes) = self.session.artifact().vocab()? else {
            return Ok(None);
        };
        let vocab: kiln_models::tokenizer::Vocab =
            serde_json::from_slice(bytes).context("the artifact's vocabulary section")?;
        Ok(Some(
            kiln_models::tokenizer::Tokenizer::new(vocab).map_err(anyhow::Error::msg)?,
        ))
    }

    /// Every token fed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Runs `tokens` after those fed before; returns the logits of the last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            bail!("no tokens to run");
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            bail!(
                "token id {bad} is outside the vocabulary (0..{})",
                self.vocab
            );
        }
        let past = self.tokens.len();
        let n_inputs = self.session.manifest().inputs.len();
        let mut inputs: Vec<Option<HostBuffer>> = vec![None; n_inputs];
        inputs[self.slots.tokens] = Some(ints(tokens.iter().map(|&t| t as usize)));
        inputs[self.slots.pos] = Some(ints(past..past + tokens.len()));
        inputs[self.slots.past_pos] = Some(ints(0..past));
        let shape = vec![past, self.row_shape[0], self.row_shape[1]];
        // The caches move into the inputs and back, rather than being copied each step.
        for (l, &(k, v)) in self.slots.caches.iter().enumerate() {
            let (kb, vb) = (
                std::mem::take(&mut self.k[l]),
                std::mem::take(&mut self.v[l]),
            );
            inputs[k] = Some(HostBuffer::new(DType::F32, shape.clone(), kb));
            inputs[v] = Some(HostBuffer::new(DType::F32, shape.clone(), vb));
        }
        let mut inputs: Vec<HostBuffer> = inputs
            .into_iter()
            .collect::<Option<_>>()
            .context("the decoder has inputs generation does not know how to fill")?;
        let ran = self.session.run(&inputs);
        for (l, &(k, v)) in self.slots.caches.iter().enumerate() {
            self.k[l] = std::mem::take(&mut inputs[k].bytes);
            self.v[l] = std::mem::take(&mut inputs[v].bytes);
        }
        let mut outs = ran?;
        for (l, &(k, v)) in self.slots.news.iter().enumerate() {
            self.k[l].extend_from_slice(&outs[k].bytes);
            self.v[l].extend_from_slice(&outs[v].bytes);
        }
        self.tokens.extend_from_slice(tokens);
        let logits = outs.swap_remove(self.slots.logits);
        let all = logits.to_f32().context("logits are not f32")?;
        Ok(all[all.len() - self.vocab..].to_vec())
    }

    /// Feeds `prompt`, then samples up to `n` tokens, calling `on_token` with each as it
    /// is produced (return false to stop early, e.g. at end of sequence).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        n: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Timings> {
        let mut t = Timings {
            prompt_tokens: prompt.len(),
            ..Default::default()
        };
        let start = Instant::now();
        let mut logits = self.feed(prompt)?;
        t.prefill = start.elapsed();
        let start = Instant::now();
        for _ in 0..n {
            let next = sampler.sample(&logits, &self.tokens);
            t.generated += 1;
            if !on_token(next) {
                break;
            }
            if t.generated == n {
                break;
            }
            logits = self.feed(&[next])?;
        }
        t.decode = start.elapsed();
        Ok(t)
    }

    /// Forgets every token fed so far.
    pub fn reset(&mut self) {
        self.tokens.clear();
        for l in 0..self.layers {
            self.k[l].clear();
            self.v[l].clear();
        }
    }
}
