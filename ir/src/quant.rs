//! Block-quantized weight formats (ggml's), which graphs carry as raw bytes (`u8` tensors
//! whose last axis holds whole blocks) and decode with the `dequant` op. The compiler
//! inlines `dequant` into its consumers, so a matmul reads the blocks directly and no f32
//! copy of the weights exists.
//!
//! The decoders here are the reference: ggml's element order and f32 operations, bit for
//! bit (the GGUF tests compare them with the `gguf` package's).

use half::f16;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuantFormat {
    /// 32 elements: f16 scale `d`, 32 signed bytes `q`; `x = q * d`.
    Q8_0,
    /// 32 elements: f16 scale `d`, 16 bytes of nibbles (element j is the low nibble of
    /// byte j, element j + 16 the high nibble); `x = (q - 8) * d`.
    Q4_0,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 2] = [QuantFormat::Q8_0, QuantFormat::Q4_0];

    pub fn block_elems(self) -> usize {
        32
    }

    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4_0 => 18,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
        }
    }

    pub fn from_name(s: &str) -> Option<QuantFormat> {
        QuantFormat::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Decodes one block (`block_bytes()` bytes) into `block_elems()` values.
    pub fn decode_block(self, b: &[u8], y: &mut [f32]) {
        let d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        match self {
            QuantFormat::Q8_0 => {
                for j in 0..32 {
                    y[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
            QuantFormat::Q4_0 => {
                let qs = &b[2..18];
                for j in 0..16 {
                    y[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
                    y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
    }

    /// Elements held by `bytes` bytes of whole blocks, or why they are not whole blocks.
    pub fn elems_in(self, bytes: i64) -> Result<i64, String> {
        let bb = self.block_bytes() as i64;
        if bytes % bb != 0 {
            return Err(format!(
                "{self}: {bytes} bytes are not whole blocks of {bb} bytes"
            ));
        }
        Ok(bytes / bb * self.block_elems() as i64)
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
