//! Host tensors with concrete shapes: constants inside graphs, interpreter values, and the
//! test oracle's inputs and outputs. Values are held as f64 already rounded to `dtype`,
//! which keeps the interpreter one code path for every dtype.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    /// Rounds every value to `dtype`; panics if `data` does not fill `shape` (a programming
    /// error, never reachable from user input: parsers check lengths first).
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not fill its shape"
        );
        let data = data.into_iter().map(|v| dtype.round(v)).collect();
        Tensor { dtype, shape, data }
    }

    pub fn scalar(dtype: DType, v: f64) -> Tensor {
        Tensor::new(dtype, Vec::new(), vec![v])
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            dtype,
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.numel() * self.dtype.size_bytes());
        for &v in &self.data {
            self.dtype.encode(v, &mut out);
        }
        out
    }

    /// Errors name the expected byte count when `bytes` does not match the shape.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        let want = n * dtype.size_bytes();
        if bytes.len() != want {
            return Err(format!(
                "expected {want} bytes for {dtype}{shape:?}, got {}",
                bytes.len()
            ));
        }
        let data = bytes
            .chunks_exact(dtype.size_bytes())
            .map(|c| dtype.decode(c))
            .collect();
        Ok(Tensor { dtype, shape, data })
    }

    /// Deterministic pseudo-random values in `[-scale, scale)` (splitmix64), so tests and
    /// built-in models need no random-number crate and give the same weights everywhere.
    pub fn seeded(dtype: DType, shape: Vec<usize>, seed: u64, scale: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = seed;
        let data = (0..n)
            .map(|_| {
                let u = (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
                let v = (2.0 * u - 1.0) * scale;
                if dtype.is_int() {
                    v.round()
                } else {
                    v
                }
            })
            .collect();
        Tensor::new(dtype, shape, data)
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_length_check() {
        let t = Tensor::seeded(DType::BF16, vec![3, 5], 7, 2.0);
        let b = t.to_bytes();
        assert_eq!(Tensor::from_bytes(DType::BF16, vec![3, 5], &b).unwrap(), t);
        let err = Tensor::from_bytes(DType::BF16, vec![3, 6], &b).unwrap_err();
        assert!(err.contains("expected 36 bytes"), "{err}");
    }

    #[test]
    fn seeded_is_deterministic_and_bounded() {
        let a = Tensor::seeded(DType::F32, vec![100], 1, 0.5);
        assert_eq!(a, Tensor::seeded(DType::F32, vec![100], 1, 0.5));
        assert_ne!(a, Tensor::seeded(DType::F32, vec![100], 2, 0.5));
        assert!(a.data.iter().all(|v| v.abs() <= 0.5));
    }
}
