//! Half-precision bit patterns as kernel-IR expressions, for code that decodes halves
//! itself (the f16 scales inside quantized blocks; the SPIR-V backend's f16 buffers).

use super::e::*;
use super::{BOp, Cmp, Elem, Expr, VarId};

/// IEEE half bits (an i32 in 0..=0xffff) to f32, exactly, with no f32 subnormal on the
/// way: normals are rebiased by an integer add to the exponent field, subnormals converted
/// as integers times 2^-24. (Rebiasing by a multiplication would pass through f32
/// subnormals, which GPUs running without denormal support flush to zero: Vulkan on NVIDIA
/// did, zeroing Q8_0 blocks with tiny scales.) Infinities and NaNs are rebuilt; the sign is
/// or-ed back in. `fresh` names the `Let`s it needs.
pub fn f16_bits_to_f32(h: Expr, fresh: &mut impl FnMut() -> VarId) -> Expr {
    let (hv, mag_v, shifted_v) = (fresh(), fresh(), fresh());
    let sign = bin(BOp::Shl, bin(BOp::And, var(hv), i32(0x8000)), i32(16));
    let magnitude = bin(BOp::And, var(hv), i32(0x7fff));
    let shifted = bin(BOp::Shl, var(mag_v), i32(13));
    let normal = bitcast(Elem::F32, bin(BOp::Add, var(shifted_v), i32(0x3800_0000)));
    let subnormal = bin(BOp::Mul, cast(Elem::F32, var(mag_v)), f(2f32.powi(-24)));
    let scaled = select(cmp(Cmp::Lt, var(mag_v), i32(0x400)), subnormal, normal);
    let inf_nan = bitcast(Elem::F32, bin(BOp::Or, var(shifted_v), i32(0x7f80_0000)));
    let value = select(cmp(Cmp::Ge, var(mag_v), i32(0x7c00)), inf_nan, scaled);
    let signed = bitcast(Elem::F32, bin(BOp::Or, bitcast(Elem::I32, value), sign));
    let_in(
        hv,
        h,
        let_in(mag_v, magnitude, let_in(shifted_v, shifted, signed)),
    )
}

/// The f16 at or above `d` nearest it, as bits in an i32, for finite `d >= 0` (at most the
/// largest f16): `kiln_ir::quant::f16_bits_up`, which the interpreter runs, step for step.
/// Toward zero first (normals by dropping mantissa bits, subnormals by shifting the
/// implicit-one mantissa right), then one up when that lost anything.
pub fn f32_to_f16_bits_up(d: Expr, fresh: &mut impl FnMut() -> VarId) -> Expr {
    let (dv, bits, e, tz) = (fresh(), fresh(), fresh(), fresh());
    let mantissa = bin(BOp::And, var(bits), i32(0x7f_ffff));
    let normal = bin(
        BOp::Or,
        bin(BOp::Shl, bin(BOp::Sub, var(e), i32(112)), i32(10)),
        bin(BOp::Shr, mantissa.clone(), i32(13)),
    );
    let shift = max(min(bin(BOp::Sub, i32(126), var(e)), i32(31)), i32(0));
    let subnormal = bin(BOp::Shr, bin(BOp::Or, mantissa, i32(0x80_0000)), shift);
    let toward_zero = select(
        cmp(Cmp::Ge, var(e), i32(143)),
        i32(0x7bff),
        select(cmp(Cmp::Ge, var(e), i32(113)), normal, subnormal),
    );
    let below = cmp(Cmp::Lt, f16_bits_to_f32(var(tz), fresh), var(dv));
    let up = select(
        below,
        select(
            cmp(Cmp::Lt, var(tz), i32(0x7bff)),
            bin(BOp::Add, var(tz), i32(1)),
            var(tz),
        ),
        var(tz),
    );
    let_in(
        dv,
        d,
        let_in(
            bits,
            bitcast(Elem::I32, var(dv)),
            let_in(
                e,
                bin(BOp::Shr, var(bits), i32(23)),
                let_in(tz, toward_zero, up),
            ),
        ),
    )
}
