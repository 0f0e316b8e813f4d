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
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
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

/// Fifth bits of a Q5 block: bit j of the little-endian u32 `qh` belongs to element j.
fn fifth_bits(qh: u32, j: usize) -> (u8, u8) {
    let lo = (((qh >> j) << 4) & 0x10) as u8;
    let hi = ((qh >> (j + 12)) & 0x10) as u8;
    (lo, hi)
}

/// d: f16, qh: u32, qs: 16 bytes; values are 5-bit, centred by 16.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes(arr(b, 2));
    let qs = &b[6..22];
    for j in 0..16 {
        let (lo, hi) = fifth_bits(qh, j);
        y[j] = (((qs[j] & 0xF) | lo) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | hi) as i32 - 16) as f32 * d;
    }
}

/// d, m: f16, qh: u32, qs: 16 bytes; x = q * d + m with 5-bit q.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qh = u32::from_le_bytes(arr(b, 4));
    let qs = &b[8..24];
    for j in 0..16 {
        let (lo, hi) = fifth_bits(qh, j);
        y[j] = ((qs[j] & 0xF) | lo) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | hi) as f32 * d + m;
    }
}
