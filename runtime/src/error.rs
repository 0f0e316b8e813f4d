//! The runtime's error type. Every message names what it is about: the artifact file,
//! the target, the kernel or the input, so `kiln run` can print it as it is.

use crate::artifact::ArtifactError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// No variant can run on this host; the message lists each one and why not.
    #[error("no variant of model `{model}` runs on this host: {reasons}")]
    NoVariant { model: String, reasons: String },
    /// `KILN_TARGET` names a variant that is absent or cannot run here.
    #[error("KILN_TARGET={requested}: {why}")]
    Override { requested: String, why: String },
    #[error("cannot load the code for {target}: {msg}")]
    CodeLoad { target: String, msg: String },
    #[error("the code for {target} has no kernel `{kernel}` (symbol kiln_{kernel}): {msg}")]
    MissingKernel {
        target: String,
        kernel: String,
        msg: String,
    },
    #[error("the model takes {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    /// An input does not match the manifest's spec.
    #[error("input {index} `{name}`: expected {expected}, got {got}")]
    Input {
        index: usize,
        name: String,
        expected: String,
        got: String,
    },
    /// A carried pair (see `carry`) that the model's specs do not allow.
    #[error("cannot carry input `{input}` with output `{output}`: {why}")]
    Carry {
        input: String,
        output: String,
        why: String,
    },
    /// The plan cannot be evaluated for these inputs (an unbound symbol, an overflow).
    #[error("plan for {target}: {msg}")]
    Plan { target: String, msg: String },
    #[error("cannot allocate {bytes} bytes for {what}")]
    Alloc { bytes: u64, what: String },
    #[error("cannot start a pool of {threads} threads: {msg}")]
    Threads { threads: usize, msg: String },
    /// The GPU driver failed (no device, out of memory, a failed launch).
    #[error("{target}: {msg}")]
    Device { target: String, msg: String },
    #[error("{target} runs on a device this kiln has no executor for")]
    NoExecutor { target: String },
}
