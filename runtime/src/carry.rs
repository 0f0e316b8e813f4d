//! Tensors a session keeps between runs: an input that each run extends, along its first
//! axis, with one of its outputs. A decoder's KV cache is the case: `k_cache.L` holds every
//! position so far and `k_new.L` the positions of this run.
//!
//! Carried storage lives where the executor computes (device memory on a GPU), so the
//! cache never crosses to the host. An executor binds the carried input to the rows held
//! so far and the output to the space right after them, so the kernel that computes the
//! new rows writes them in place and there is nothing to copy afterwards.

use crate::error::RuntimeError;
use crate::manifest::Manifest;

/// Offsets inside carried storage must keep the alignment kernels rely on for buffer
/// parameters (GPU kernels declare theirs 16-byte aligned).
pub const ROW_ALIGN: usize = 16;

/// One carried pair, as the session registered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carry {
    pub input: usize,
    pub output: usize,
    /// Bytes of one row (the product of the trailing dims times the element size).
    pub row_bytes: usize,
    /// Rows held so far.
    pub rows: usize,
}

/// A carried pair as one run sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarriedRun {
    pub input: usize,
    pub output: usize,
    /// Bytes held before the run: the input's contents.
    pub held: usize,
    /// Bytes the run appends: the output's size.
    pub appended: usize,
}

impl CarriedRun {
    pub fn needed(&self) -> usize {
        self.held + self.appended
    }
}

/// The capacity to allocate when `needed` bytes outgrow `capacity`: at least double, so a
/// generation of n tokens reallocates about log2(n) times, not n times.
pub fn grown(capacity: usize, needed: usize) -> usize {
    needed.max(capacity.saturating_mul(2)).max(64 << 10)
}

impl Carry {
    /// Checks that `output` can extend `input`: same dtype and rank, the same trailing dims,
    /// known, and rows whose size keeps [`ROW_ALIGN`].
    pub fn new(m: &Manifest, input: &str, output: &str) -> Result<Carry, RuntimeError> {
        let bad = |why: String| RuntimeError::Carry {
            input: input.into(),
            output: output.into(),
            why,
        };
        let i = m
            .inputs
            .iter()
            .position(|s| s.name == input)
            .ok_or_else(|| bad("the model has no such input".into()))?;
        let o = m
            .outputs
            .iter()
            .position(|s| s.name == output)
            .ok_or_else(|| bad("the model has no such output".into()))?;
        let (si, so) = (&m.inputs[i], &m.outputs[o]);
        if si.dtype != so.dtype {
            return Err(bad(format!(
                "dtypes differ ({} and {})",
                si.dtype, so.dtype
            )));
        }
        if si.shape.is_empty() || si.shape.len() != so.shape.len() || si.shape[1..] != so.shape[1..]
        {
            return Err(bad(
                "shapes must be the same after the first axis, which the runs extend".into(),
            ));
        }
        let row_elems = si.shape[1..].iter().try_fold(1usize, |acc, d| {
            d.as_known()
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| acc.checked_mul(n))
        });
        let row_bytes = row_elems
            .and_then(|n| n.checked_mul(si.dtype.size_bytes()))
            .ok_or_else(|| bad("the dims after the first must be known numbers".into()))?;
        if row_bytes == 0 || !row_bytes.is_multiple_of(ROW_ALIGN) {
            return Err(bad(format!(
                "a row is {row_bytes} bytes; carried rows must be a non-zero multiple of {ROW_ALIGN}"
            )));
        }
        Ok(Carry {
            input: i,
            output: o,
            row_bytes,
            rows: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_at_least_doubles() {
        assert_eq!(grown(0, 10), 64 << 10);
        assert_eq!(grown(1 << 20, (1 << 20) + 1), 2 << 20);
        assert_eq!(grown(1 << 20, 5 << 20), 5 << 20);
    }
}
