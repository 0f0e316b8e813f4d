//! Dequantization of ggml blocks to f32, following ggml's reference definitions: the same
//! element order and the same f32 operations (no fused multiply-add), so results match
//! ggml's reference code bit for bit. Kernels that compute on quantized data directly are
//! tested against these.

use super::ggml_type::{GgmlType, QK_K};
use half::{bf16, f16};
use kiln_ir::QuantFormat;

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
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| QuantFormat::Q4_0.decode_block(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| QuantFormat::Q8_0.decode_block(b, y)),
        GgmlType::Q4K => blocks.for_each(|(b, y)| q4_k(b, y)),
        GgmlType::Q5K => blocks.for_each(|(b, y)| q5_k(b, y)),
        GgmlType::Q6K => blocks.for_each(|(b, y)| q6_k(b, y)),
    }
    Ok(())
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("block has its fixed size")
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes(arr(b, at))).to_f32()
}

/// d, m: f16, qs: 16 bytes; x = q * d + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0xF) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
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

/// The j-th (0..8) 6-bit scale and min of a Q4_K/Q5_K block, packed in 12 bytes: the
/// first four pairs are the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); the last
/// four take their low nibbles from bytes 8..12 and their top two bits from the spare
/// top bits of bytes 0..8.
fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        let sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        (sc, m)
    }
}

/// Multiplier and offset of the two 32-element sub-blocks of 64-element group `i`.
fn group_scales(i: usize, scales: &[u8], d: f32, dmin: f32) -> [(f32, f32); 2] {
    [2 * i, 2 * i + 1].map(|j| {
        let (sc, m) = scale_min(j, scales);
        (d * sc as f32, dmin * m as f32)
    })
}

/// d, dmin: f16, scales: 12 bytes, qs: 128 bytes. Each 64 elements use 32 bytes of qs:
/// the low nibbles (first 32 elements, sub-block 2i) then the high ones (sub-block 2i+1).
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for i in 0..QK_K / 64 {
        let q = &qs[32 * i..32 * i + 32];
        let [(d1, m1), (d2, m2)] = group_scales(i, scales, d, dmin);
        let y = &mut y[64 * i..64 * i + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// As Q4_K plus qh: 32 bytes whose bit 2i (low nibbles) and 2i+1 (high nibbles) of byte
/// l give the fifth bit of element l of the i-th 64-element group's two halves.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for i in 0..QK_K / 64 {
        let q = &qs[32 * i..32 * i + 32];
        let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
        let [(d1, m1), (d2, m2)] = group_scales(i, scales, d, dmin);
        let y = &mut y[64 * i..64 * i + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q[l] & 0xF) + h1) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// ql: 128 bytes (low 4 bits), qh: 64 bytes (high 2 bits), scales: 16 signed bytes, d:
/// f16 last. Each half of 128 elements uses 64 bytes of ql and 32 of qh: element l, l+32,
/// l+64, l+96 take ql[l] low, ql[l+32] low, ql[l] high, ql[l+32] high, and bits 0-1, 2-3,
/// 4-5, 6-7 of qh[l]; scales go by 16 elements.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
