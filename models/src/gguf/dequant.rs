//! Dequantization of ggml blocks to f32, following ggml's reference definitions: the same
//! element order and the same f32 operations (no fused multiply-add), so results match
//! ggml's reference code bit for bit. Kernels that compute on quantized data directly are
//! tested against these.

use super::ggml_type::GgmlType;
use half::{bf16, f16};

/// Converts `bytes` (whole blocks of `ty`) into `out`, one f32 per element.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let (be, bb) = (ty.block_elems(), ty.block_bytes());
    if !out.len().is_multiple_of(be) || bytes.len() != out.len() / be * bb {
        return Err(format!(
            "{ty}: {} bytes do not hold {} elements ({bb} bytes per {be})",
            bytes.len(),
            out.len()
        ));
    }
    let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes(arr(b, 0))),
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = half_at(b, 0)),
        GgmlType::BF16 => {
            blocks.for_each(|(b, y)| y[0] = bf16::from_bits(u16::from_le_bytes(arr(b, 0))).to_f32())
        }
        _ => {
            let format = ty
                .quant_format()
                .expect("every other block type is a QuantFormat");
            blocks.for_each(|(b, y)| format.decode_block(b, y))
        }
    }
    Ok(())
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("block has its fixed size")
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes(arr(b, at))).to_f32()
}
