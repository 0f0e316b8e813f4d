//! Token generation with a compiled decoder: prefill the prompt, then one token per step.
//! The session carries the KV cache (`Session::carry`): it stays where the kernels run and
//! each step's new rows are written after the held ones, never copied through the host.
//!
//! Any artifact with the decoder interface `kiln_models::llama` builds qualifies (inputs
//! `tokens`, `pos`, `past_pos`, `k_cache.L`, `v_cache.L` and, where the artifact has it,
//! `logit_rows`; outputs `logits`, `k_new.L`, `v_new.L`); it is recognised from the
//! manifest. Only the last row's logits are asked for.

use crate::sampling::Sampler;
use anyhow::{bail, Context, Result};
use kiln_ir::DType;
use kiln_runtime::session::{HostBuffer, Session};
use std::time::{Duration, Instant};

pub struct Generator {
    session: Session,
    vocab: usize,
    tokens: Vec<u32>,
    /// The last run's logits output, handed back to the session at the next run so that it
    /// fills the same storage (a fresh vocabulary-sized buffer a token cost more than the
    /// argmax over it).
    output: Option<HostBuffer>,
    /// The last row of `output` as f32, where it cannot be read in place (misaligned, or
    /// a big-endian host).
    converted: Vec<f32>,
    /// Where each named input and output sits in the manifest's order.
    slots: Slots,
}

struct Slots {
    tokens: usize,
    pos: usize,
    past_pos: usize,
    /// Artifacts built before the decoder took it compute every row's logits.
    logit_rows: Option<usize>,
    logits: usize,
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
    pub fn new(mut session: Session) -> Result<Generator> {
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
        let mut pairs = Vec::new();
        for l in 0.. {
            let (k, v) = (format!("k_cache.{l}"), format!("v_cache.{l}"));
            if input(&k).is_none() || input(&v).is_none() {
                break;
            }
            let (kn, vn) = (format!("k_new.{l}"), format!("v_new.{l}"));
            if output(&kn).is_none() || output(&vn).is_none() {
                bail!(
                    "{}: layer {l} has cache inputs but no k_new/v_new outputs",
                    m.model
                );
            }
            pairs.extend([(k, kn), (v, vn)]);
        }
        if pairs.is_empty() {
            bail!("{}: the decoder has no KV cache inputs", m.model);
        }
        let logit_rows = input("logit_rows");
        let vocab = m.outputs[logits]
            .shape
            .last()
            .and_then(|d| d.as_known())
            .context("logits have no known vocabulary size")? as usize;
        let model = m.model.clone();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(i, o)| (i.as_str(), o.as_str()))
            .collect();
        session
            .carry(&pairs)
            .with_context(|| format!("{model}: the KV cache"))?;
        Ok(Generator {
            session,
            vocab,
            tokens: Vec::new(),
            output: None,
            converted: Vec::new(),
            slots: Slots {
                tokens,
                pos,
                past_pos,
                logit_rows,
                logits,
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
    pub fn feed(&mut self, tokens: &[u32]) -> Result<&[f32]> {
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
        if let Some(slot) = self.slots.logit_rows {
            inputs[slot] = Some(ints(tokens.len() - 1..tokens.len()));
        }
        self.session.recycle(self.output.take());
        let (mut outs, _) = self.session.run_carrying(&inputs, false)?;
        self.tokens.extend_from_slice(tokens);
        let logits = outs[self.slots.logits]
            .take()
            .context("the session carries the logits")?;
        if logits.dtype != DType::F32 {
            bail!("logits are {}, not f32", logits.dtype);
        }
        if logits.bytes.len() < 4 * self.vocab {
            bail!("the logits hold less than one row of {} values", self.vocab);
        }
        self.output = Some(logits);
        Ok(last_row(&self.output, self.vocab, &mut self.converted))
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
        self.feed(prompt)?;
        t.prefill = start.elapsed();
        let start = Instant::now();
        for _ in 0..n {
            let logits = last_row(&self.output, self.vocab, &mut self.converted);
            let next = sampler.sample(logits, &self.tokens);
            t.generated += 1;
            if !on_token(next) {
                break;
            }
            if t.generated == n {
                break;
            }
            self.feed(&[next])?;
        }
        t.decode = start.elapsed();
        Ok(t)
    }

    /// Forgets every token fed so far.
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.session.reset_carried();
    }
}

/// The last row of `vocab` values of the logits `output` (empty before the first run), read
/// in place where the host's byte order and the buffer's alignment allow, else converted
/// into `converted`.
fn last_row<'a>(
    output: &'a Option<HostBuffer>,
    vocab: usize,
    converted: &'a mut Vec<f32>,
) -> &'a [f32] {
    let Some(out) = output else {
        return &[];
    };
    let row = &out.bytes[out.bytes.len() - 4 * vocab..];
    if cfg!(target_endian = "little") {
        if let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(row) {
            return values;
        }
    }
    converted.clear();
    converted.extend(
        row.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
    );
    converted
}
