//! Half-precision storage <-> f32 with integer operations (scalar), the same algorithms as
//! the LLVM backend's `convert.rs`: round to nearest even, NaN stays NaN, subnormals exact.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

/// `h` holds the 16 half bits zero-extended in an I32.
pub fn f16_to_f32(b: &mut FunctionBuilder, h: Value) -> Value {
    let sign = b.ins().band_imm_s(h, 0x8000);
    let sign = b.ins().ishl_imm_s(sign, 16);
    let em = b.ins().band_imm_s(h, 0x7fff);
    let shifted = b.ins().ishl_imm_s(em, 13);
    // Rebias by multiplying: right for normals and subnormals alike.
    let as_f = b.ins().bitcast(types::F32, MemFlagsData::new(), shifted);
    let scale = b.ins().f32const(2f32.powi(112));
    let mag = b.ins().fmul(as_f, scale);
    let mag_bits = b.ins().bitcast(types::I32, MemFlagsData::new(), mag);
    let inf_nan = b.ins().bor_imm_s(shifted, 0x7f80_0000);
    let special = b
        .ins()
        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, em, 0x7c00);
    let bits = b.ins().select(special, inf_nan, mag_bits);
    let signed = b.ins().bor(bits, sign);
    b.ins().bitcast(types::F32, MemFlagsData::new(), signed)
}

/// The f16 bits of `x` in the low half of an I32.
pub fn f32_to_f16(b: &mut FunctionBuilder, x: Value) -> Value {
    let bits = b.ins().bitcast(types::I32, MemFlagsData::new(), x);
    let sign = b.ins().band_imm_s(bits, 0x8000_0000_u32 as i64);
    let a = b.ins().bxor(bits, sign);
    // Too large, infinite or NaN.
    let nan = b
        .ins()
        .icmp_imm_s(IntCC::UnsignedGreaterThan, a, 0x7f80_0000);
    let (qnan, inf) = (
        b.ins().iconst(types::I32, 0x7e00),
        b.ins().iconst(types::I32, 0x7c00),
    );
    let big = b.ins().select(nan, qnan, inf);
    // Subnormal results: let the FPU round by adding a magic 0.5.
    let af = b.ins().bitcast(types::F32, MemFlagsData::new(), a);
    let magic = b.ins().f32const(0.5);
    let sum = b.ins().fadd(af, magic);
    let sum = b.ins().bitcast(types::I32, MemFlagsData::new(), sum);
    let den = b.ins().iadd_imm_s(sum, -0x3f00_0000);
    // Normal results: rebias, round to nearest even, shift into place.
    let odd = b.ins().ushr_imm_s(a, 13);
    let odd = b.ins().band_imm_s(odd, 1);
    let t = b.ins().iadd_imm_s(a, 0xc800_0fff_u32 as i32 as i64);
    let t = b.ins().iadd(t, odd);
    let norm = b.ins().ushr_imm_s(t, 13);
    let is_big = b
        .ins()
        .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, a, 0x4780_0000);
    let is_den = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, a, 0x3880_0000);
    let small = b.ins().select(is_den, den, norm);
    let o = b.ins().select(is_big, big, small);
    let s16 = b.ins().ushr_imm_s(sign, 16);
    b.ins().bor(o, s16)
}

/// The bf16 bits of `x` in the low half of an I32.
pub fn f32_to_bf16(b: &mut FunctionBuilder, x: Value) -> Value {
    let bits = b.ins().bitcast(types::I32, MemFlagsData::new(), x);
    let lsb = b.ins().ushr_imm_s(bits, 16);
    let lsb = b.ins().band_imm_s(lsb, 1);
    let biased = b.ins().iadd_imm_s(bits, 0x7fff);
    let rounded = b.ins().iadd(biased, lsb);
    let rounded = b.ins().ushr_imm_s(rounded, 16);
    let quiet = b.ins().ushr_imm_s(bits, 16);
    let quiet = b.ins().bor_imm_s(quiet, 0x40);
    let is_nan = b.ins().fcmp(FloatCC::Unordered, x, x);
    b.ins().select(is_nan, quiet, rounded)
}
