//! Element types. Every stage (interpreter, kernel IR, backends, artifact) names element
//! types with this one enum, so adding a type (the quantized block types of the LLM work)
//! is one change here plus each stage's capability table.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    I64,
    /// Raw bytes: block-quantized weights (decoded by `dequant`), never arithmetic.
    U8,
}

impl DType {
    pub const ALL: [DType; 6] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
    ];

    pub fn size_bytes(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn is_int(self) -> bool {
        !self.is_float()
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Rounds an f64 to the nearest value representable in this type, the way a store of
    /// that value into a buffer of this type would. The interpreter calls this on every
    /// op output so that it sees the same storage rounding the backends do.
    pub fn round(self, v: f64) -> f64 {
        match self {
            DType::F32 => v as f32 as f64,
            DType::F16 => half::f16::from_f64(v).to_f64(),
            DType::BF16 => half::bf16::from_f64(v).to_f64(),
            DType::I32 => saturate_int(v, i32::MIN as f64, i32::MAX as f64),
            DType::I64 => saturate_int(v, i64::MIN as f64, i64::MAX as f64),
            DType::U8 => saturate_int(v, 0.0, 255.0),
        }
    }

    /// Little-endian bytes of `v` stored as this type.
    pub fn encode(self, v: f64, out: &mut Vec<u8>) {
        match self {
            DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            DType::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(self.round(v) as i32).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&(self.round(v) as i64).to_le_bytes()),
            DType::U8 => out.push(self.round(v) as u8),
        }
    }

    /// Reads one element from little-endian bytes (`bytes.len() == size_bytes()`).
    pub fn decode(self, bytes: &[u8]) -> f64 {
        match self {
            DType::F32 => f32::from_le_bytes(bytes.try_into().expect("4 bytes")) as f64,
            DType::F16 => half::f16::from_le_bytes(bytes.try_into().expect("2 bytes")).to_f64(),
            DType::BF16 => half::bf16::from_le_bytes(bytes.try_into().expect("2 bytes")).to_f64(),
            DType::I32 => i32::from_le_bytes(bytes.try_into().expect("4 bytes")) as f64,
            DType::I64 => i64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f64,
            DType::U8 => bytes[0] as f64,
        }
    }
}

fn saturate_int(v: f64, lo: f64, hi: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.trunc().clamp(lo, hi)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::from_name("f8"), None);
    }

    #[test]
    fn encode_decode_round_trip() {
        for d in DType::ALL {
            let v = if d == DType::U8 { 200.0 } else { -3.0 };
            let mut buf = Vec::new();
            d.encode(v, &mut buf);
            assert_eq!(buf.len(), d.size_bytes());
            assert_eq!(d.decode(&buf), v, "{d}");
        }
    }

    #[test]
    fn rounding_matches_storage() {
        assert_eq!(DType::BF16.round(1.0 + 1.0 / 512.0), 1.0);
        assert_eq!(DType::F16.round(65520.0), f64::INFINITY);
        assert_eq!(DType::I32.round(2.7), 2.0);
        assert_eq!(DType::I32.round(f64::NAN), 0.0);
    }
}
