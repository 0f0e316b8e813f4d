//! The artifact manifest: what a `.kiln` file holds and how to run it.
//!
//! It is the JSON document at the head of the artifact: the model's inputs and outputs
//! (with symbolic dims), one [`Variant`] per compiled target with its launch plan, and
//! which sections hold code and weights. [`Manifest::check`] is the runtime's guard that
//! a plan only refers to things that exist, so a damaged or hand-edited manifest becomes
//! an error before any kernel runs.

use crate::plan::{BufferRef, Plan};
use kiln_ir::{DType, Shape};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub model: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub variants: Vec<Variant>,
    /// Index into the section table of the weights section, if the model has weights.
    #[serde(default)]
    pub weights_section: Option<usize>,
    /// Index into the section table of the vocabulary section, if the model has one.
    #[serde(default)]
    pub vocab_section: Option<usize>,
    /// Free-form report of the compile (passes, fusion, timings) for `kiln inspect`.
    #[serde(default)]
    pub compile_report: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Shape,
}

/// The code and plan for one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// `<family>:<arch>`, e.g. `cpu:x86-64-v3`.
    pub target: String,
    /// Index into the section table of this variant's code.
    pub code_section: usize,
    pub plan: Plan,
    /// Every kernel the code exports (as `kiln_<name>`); resolved when the code loads.
    pub kernels: Vec<String>,
    /// CPU features the code needs beyond what its target name implies, in LLVM spelling
    /// (`avx2`, `avx512f`). Required for `cpu:native`, which names no level by itself.
    #[serde(default)]
    pub required_features: Vec<String>,
    /// The code's kernels let later grids launch and then wait for the grids they depend
    /// on before touching memory (CUDA's `griddepcontrol`, sm_90 and newer). Only then may
    /// the runtime launch a kernel before its predecessors finish; artifacts without the
    /// field never are.
    #[serde(default)]
    pub waits_for_prior_grids: bool,
    /// The code's GPU kernels count their grid points from the symbols and ignore the count
    /// passed to them, so the runtime may launch more blocks than the points need (they
    /// find none and return) and keep a launch's arguments the same while a decode's
    /// position grows: a replayed CUDA graph then needs no node updated on most steps.
    /// Artifacts without the field pass the exact count and as many blocks as it needs.
    #[serde(default)]
    pub counts_own_points: bool,
    /// The code's GPU kernels take, as their last argument, the address of one `i64` for
    /// each argument the launch lists in `Launch::offsets`, which they add to its address
    /// (where older ones took a point count). A
    /// decode's carried output is then passed as its storage, with the rows held so far as
    /// its offset, and its launches' arguments stay the same from step to step; only the
    /// offsets, uploaded with the symbols, change. Artifacts without the field take the
    /// point count and each carried output's own address.
    #[serde(default)]
    pub buffer_offsets: bool,
}

/// Kinds of the sections in the artifact, as stored in the section table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Code,
    Weights,
    /// The model's vocabulary (JSON), for models that read and write text.
    Vocab,
}

impl SectionKind {
    pub fn code(self) -> u32 {
        match self {
            SectionKind::Code => 0,
            SectionKind::Weights => 1,
            // 2 is the manifest's own table entry.
            SectionKind::Vocab => 3,
        }
    }

    pub fn from_code(code: u32) -> Option<SectionKind> {
        match code {
            0 => Some(SectionKind::Code),
            1 => Some(SectionKind::Weights),
            3 => Some(SectionKind::Vocab),
            _ => None,
        }
    }
}

impl Manifest {
    /// Checks that every reference resolves, given each section's kind and byte length:
    /// code and weights sections exist and have the right kind, launches name declared
    /// kernels and existing slots, inputs, outputs and weight ranges.
    pub fn check(&self, sections: &[(SectionKind, u64)]) -> Result<(), String> {
        let weights_len = match self.weights_section {
            None => None,
            Some(i) => match sections.get(i) {
                Some((SectionKind::Weights, len)) => Some(*len),
                Some(_) => return Err(format!("weights_section {i} is not a weights section")),
                None => {
                    return Err(format!(
                        "weights_section {i} does not exist ({} sections)",
                        sections.len()
                    ))
                }
            },
        };
        if let Some(i) = self.vocab_section {
            match sections.get(i) {
                Some((SectionKind::Vocab, _)) => {}
                Some(_) => return Err(format!("vocab_section {i} is not a vocabulary section")),
                None => {
                    return Err(format!(
                        "vocab_section {i} does not exist ({} sections)",
                        sections.len()
                    ))
                }
            }
        }
        for v in &self.variants {
            let at = |m: String| format!("variant {}: {m}", v.target);
            match sections.get(v.code_section) {
                Some((SectionKind::Code, _)) => {}
                Some(_) => {
                    return Err(at(format!(
                        "section {} is not a code section",
                        v.code_section
                    )))
                }
                None => {
                    return Err(at(format!(
                        "code section {} does not exist",
                        v.code_section
                    )))
                }
            }
            for k in &v.kernels {
                let ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    return Err(at(format!("kernel name `{k}` is not a C identifier")));
                }
            }
            for (li, l) in v.plan.launches.iter().enumerate() {
                let at = |m: String| at(format!("launch {li} ({}): {m}", l.kernel));
                if !v.kernels.contains(&l.kernel) {
                    return Err(at("kernel is not in the variant's kernel list".into()));
                }
                for a in &l.args {
                    self.check_arg(a, &v.plan, weights_len).map_err(at)?;
                }
            }
        }
        Ok(())
    }

    fn check_arg(
        &self,
        arg: &BufferRef,
        plan: &Plan,
        weights_len: Option<u64>,
    ) -> Result<(), String> {
        let count = |what: &str, i: usize, n: usize| {
            if i < n {
                Ok(())
            } else {
                Err(format!("{what} {i} does not exist ({n} {what}s)"))
            }
        };
        match *arg {
            BufferRef::Slot(i) => count("slot", i, plan.slots.len()),
            BufferRef::Input(i) => count("input", i, self.inputs.len()),
            BufferRef::Output(i) => count("output", i, self.outputs.len()),
            BufferRef::Weight { offset, len } => {
                let Some(wlen) = weights_len else {
                    return Err("refers to weights but the artifact has none".into());
                };
                match offset.checked_add(len) {
                    Some(end) if end <= wlen => Ok(()),
                    _ => Err(format!(
                        "weight range {offset}+{len} is outside the {wlen}-byte weights section"
                    )),
                }
            }
        }
    }
}
