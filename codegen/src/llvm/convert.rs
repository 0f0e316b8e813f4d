//! Half-precision storage <-> f32 values, with integer operations only, except f16 -> f32
//! on targets that convert in hardware.
//!
//! Doing this in integer IR (rather than LLVM's `half`/`bfloat` types) means no target
//! needs F16C or a compiler-rt conversion routine, which a self-contained kernel object
//! cannot call. f32 -> f16 and f32 -> bf16 round to nearest even and keep NaN a NaN.
//! Widening f16 is exact either way, so where the target has the instruction (F16C,
//! AArch64, GPUs: `Emitter::native_half`) LLVM's `fpext` does it: half weights are read on
//! every decode step, and one instruction per vector beats a dozen integer operations.
//! GPUs narrow f16 in hardware too.

use super::expr::{Emitter, Fail, V};
use inkwell::types::BasicTypeEnum;
use inkwell::values::{BasicValue, BasicValueEnum};
use kiln_compiler::kernel::{BOp, Cmp};
use kiln_ir::DType;

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    pub(super) fn retype(
        &mut self,
        v: V<'ctx>,
        elem: BasicTypeEnum<'ctx>,
        how: &str,
    ) -> Result<V<'ctx>, Fail> {
        let ty = match v.get_type() {
            BasicTypeEnum::VectorType(t) => super::expr::vec_of(elem, t.get_size()),
            _ => elem,
        };
        Ok(match (how, v) {
            ("zext", BasicValueEnum::IntValue(i)) => self
                .b
                .build_int_z_extend(i, ty.into_int_type(), "")?
                .as_basic_value_enum(),
            ("zext", BasicValueEnum::VectorValue(x)) => self
                .b
                .build_int_z_extend(x, ty.into_vector_type(), "")?
                .as_basic_value_enum(),
            ("trunc", BasicValueEnum::IntValue(i)) => self
                .b
                .build_int_truncate(i, ty.into_int_type(), "")?
                .as_basic_value_enum(),
            ("trunc", BasicValueEnum::VectorValue(x)) => self
                .b
                .build_int_truncate(x, ty.into_vector_type(), "")?
                .as_basic_value_enum(),
            _ => self.b.build_bit_cast(v, ty, "")?,
        })
    }

    fn ib(&mut self, op: BOp, x: V<'ctx>, c: u32) -> Result<V<'ctx>, Fail> {
        let k = self.int_like(x, c as u64)?;
        self.binary_pub(op, x, k)
    }

    fn icmp(&mut self, c: Cmp, x: V<'ctx>, k: u32) -> Result<V<'ctx>, Fail> {
        // Unsigned magnitudes below 2^31 compare the same signed.
        let kv = self.int_like(x, k as u64)?;
        self.compare_pub(c, x, kv)
    }

    fn pick(&mut self, c: V<'ctx>, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>, Fail> {
        Ok(match c {
            BasicValueEnum::IntValue(ci) => self.b.build_select(ci, a, b, "")?,
            BasicValueEnum::VectorValue(cv) => self.b.build_select(cv, a, b, "")?,
            _ => return Err(Fail::msg("select condition")),
        })
    }

    pub fn widen_from_storage(&mut self, raw: V<'ctx>, d: DType) -> Result<V<'ctx>, Fail> {
        let (i32t, f32t) = (self.ctx.i32_type().into(), self.ctx.f32_type().into());
        match d {
            DType::BF16 => {
                let w = self.retype(raw, i32t, "zext")?;
                let s = self.ib(BOp::Shl, w, 16)?;
                self.retype(s, f32t, "bitcast")
            }
            DType::F16 if self.native_half => {
                let halves = self.retype(raw, self.ctx.f16_type().into(), "bitcast")?;
                Ok(match halves {
                    BasicValueEnum::VectorValue(x) => {
                        let ty = super::expr::vec_of(f32t, x.get_type().get_size());
                        self.b
                            .build_float_ext(x, ty.into_vector_type(), "")?
                            .as_basic_value_enum()
                    }
                    h => self
                        .b
                        .build_float_ext(h.into_float_value(), self.ctx.f32_type(), "")?
                        .as_basic_value_enum(),
                })
            }
            DType::F16 => {
                let h = self.retype(raw, i32t, "zext")?;
                let sign = self.ib(BOp::And, h, 0x8000)?;
                let sign = self.ib(BOp::Shl, sign, 16)?;
                let em = self.ib(BOp::And, h, 0x7fff)?;
                let shifted = self.ib(BOp::Shl, em, 13)?;
                // Rebias by multiplying: correct for normals and subnormals alike.
                let as_f = self.retype(shifted, f32t, "bitcast")?;
                let scale = self.float_like(as_f, 2f64.powi(112))?;
                let mag = self.binary_pub(BOp::Mul, as_f, scale)?;
                let special = self.icmp(Cmp::Ge, em, 0x7c00)?;
                let inf_nan = self.ib(BOp::Or, shifted, 0x7f80_0000)?;
                let inf_nan = self.retype(inf_nan, f32t, "bitcast")?;
                let r = self.pick(special, inf_nan, mag)?;
                let rb = self.retype(r, i32t, "bitcast")?;
                let signed = self.binary_pub(BOp::Or, rb, sign)?;
                self.retype(signed, f32t, "bitcast")
            }
            DType::U8 => self.retype(raw, i32t, "zext"),
            _ => Ok(raw),
        }
    }

    pub fn narrow_to_storage(&mut self, v: V<'ctx>, d: DType) -> Result<V<'ctx>, Fail> {
        let (i32t, i16t, f32t) = (
            self.ctx.i32_type().into(),
            self.ctx.i16_type().into(),
            self.ctx.f32_type().into(),
        );
        match d {
            DType::BF16 => {
                let bits = self.retype(v, i32t, "bitcast")?;
                let lsb = self.ib(BOp::Shr, bits, 16)?;
                let lsb = self.ib(BOp::And, lsb, 1)?;
                let biased = self.ib(BOp::Add, bits, 0x7fff)?;
                let rounded = self.binary_pub(BOp::Add, biased, lsb)?;
                let rounded = self.ib(BOp::Shr, rounded, 16)?;
                let quiet = self.ib(BOp::Shr, bits, 16)?;
                let quiet = self.ib(BOp::Or, quiet, 0x40)?;
                let is_nan = self.compare_pub(Cmp::Ne, v, v)?;
                let r = self.pick(is_nan, quiet, rounded)?;
                self.retype(r, i16t, "trunc")
            }
            // GPUs round to nearest even in one instruction (`cvt.rn.f16.f32`,
            // `v_cvt_f16_f32`), where the integer form below takes about twenty: every
            // output of a half matmul is narrowed so (NaN's payload may differ).
            DType::F16 if self.native_half && self.gpu.is_some() => {
                let f16t = self.ctx.f16_type();
                let h = match v {
                    BasicValueEnum::VectorValue(x) => {
                        let ty = super::expr::vec_of(f16t.into(), x.get_type().get_size());
                        self.b
                            .build_float_trunc(x, ty.into_vector_type(), "")?
                            .as_basic_value_enum()
                    }
                    f => self
                        .b
                        .build_float_trunc(f.into_float_value(), f16t, "")?
                        .as_basic_value_enum(),
                };
                self.retype(h, i16t, "bitcast")
            }
            DType::F16 => {
                let bits = self.retype(v, i32t, "bitcast")?;
                let sign = self.ib(BOp::And, bits, 0x8000_0000)?;
                let a = self.binary_pub(BOp::Xor, bits, sign)?;
                // Too large, infinite or NaN.
                let nan = self.icmp(Cmp::Gt, a, 0x7f80_0000)?;
                let (qnan, inf) = (self.int_like(a, 0x7e00)?, self.int_like(a, 0x7c00)?);
                let big = self.pick(nan, qnan, inf)?;
                // Subnormal results: let the FPU round by adding a magic 0.5.
                let af = self.retype(a, f32t, "bitcast")?;
                let magic = self.float_like(af, 0.5)?;
                let sum = self.binary_pub(BOp::Add, af, magic)?;
                let sum = self.retype(sum, i32t, "bitcast")?;
                let den = self.ib(BOp::Sub, sum, 0x3f00_0000)?;
                // Normal results: rebias, round to nearest even, shift into place.
                let odd = self.ib(BOp::Shr, a, 13)?;
                let odd = self.ib(BOp::And, odd, 1)?;
                let t = self.ib(BOp::Add, a, 0xc800_0fff)?;
                let t = self.binary_pub(BOp::Add, t, odd)?;
                let norm = self.ib(BOp::Shr, t, 13)?;
                let is_big = self.icmp(Cmp::Ge, a, 0x4780_0000)?;
                let is_den = self.icmp(Cmp::Lt, a, 0x3880_0000)?;
                let small = self.pick(is_den, den, norm)?;
                let o = self.pick(is_big, big, small)?;
                let s16 = self.ib(BOp::Shr, sign, 16)?;
                let o = self.binary_pub(BOp::Or, o, s16)?;
                self.retype(o, i16t, "trunc")
            }
            DType::U8 => self.retype(v, self.ctx.i8_type().into(), "trunc"),
            _ => Ok(v),
        }
    }
}
