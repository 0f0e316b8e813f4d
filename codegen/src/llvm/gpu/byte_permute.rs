//! Bytes placed under constant upper bytes in one instruction a lane (NVPTX `prmt`), with
//! the byte arithmetic before it done four bytes a word.
//!
//! The exponent form of small integers (`kiln_compiler::kernel::small_ints`) ors each
//! weight byte or nibble into the bits of 2^23 before a float subtraction. LLVM lowers each
//! lane of `or(zext(byte), 0x4b000000)` as a field extract and an or, and a nibble's shift
//! and mask lane by lane too: two to four integer instructions a weight in the decode
//! matvecs' innermost loop. Here the lanes' bytes stay packed as they were loaded, the
//! masks, flips and shifts act on whole words (a shift masked so no bit crosses into the
//! byte below), and one permute a lane takes its byte and the constant's other three.

use super::super::expr::{Emitter, Fail, V};
use inkwell::values::{BasicValueEnum, IntValue, VectorValue};
use kiln_compiler::kernel::{BOp, Expr, Lit};
use kiln_ir::DType;

/// Four bytes a word, each lane's byte in place.
const BYTES: u32 = 0x0101_0101;

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// `e` as one permute a lane when the target has byte permutes and `e` is
    /// `or(x, splat(c))` with `c`'s low byte clear and `x` a vector of bytes computed by
    /// [`Emitter::packed`]'s forms; else `None`.
    pub(in crate::llvm) fn permuted_bytes(&mut self, e: &Expr) -> Result<Option<V<'ctx>>, Fail> {
        let Expr::Binary(BOp::Or, x, c) = e else {
            return Ok(None);
        };
        if !self.byte_permute {
            return Ok(None);
        }
        let Some(c) = splat_i32(c).filter(|c| c & 0xff == 0) else {
            return Ok(None);
        };
        let Some(lanes) = self.byte_lanes(x) else {
            return Ok(None);
        };
        let words = self.packed(x)?;
        let i32t = self.ctx.i32_type();
        let constant = i32t.const_int(c as u32 as u64, false);
        let mut out = i32t.vec_type(lanes as u32).get_poison();
        for lane in 0..lanes as u64 {
            let word = self
                .b
                .build_extract_element(words, i32t.const_int(lane / 4, false), "w")?;
            // Result bytes, low first: the word's byte `lane % 4`, then the constant's
            // bytes 1..3 (selectors 5..7: the second operand's bytes are 4..7).
            let selector = (lane % 4) | (5 << 4) | (6 << 8) | (7 << 12);
            let p = self.intrinsic(
                "llvm.nvvm.prmt",
                &[],
                &[
                    word,
                    constant.into(),
                    i32t.const_int(selector, false).into(),
                ],
            )?;
            out = self
                .b
                .build_insert_element(out, p, i32t.const_int(lane, false), "lane")?;
        }
        Ok(Some(out.into()))
    }

    /// The lanes of `e` where it is a vector (of a multiple of four lanes) of bytes that
    /// [`Emitter::packed`] computes a word at a time: a byte buffer's loads, and bitwise
    /// ops and right shifts of those with byte constants and uniform amounts.
    pub(super) fn byte_lanes(&self, e: &Expr) -> Option<u8> {
        match e {
            Expr::Load { buf, lanes, .. } => {
                (*lanes % 4 == 0 && self.base(*buf).1 == DType::U8).then_some(*lanes)
            }
            Expr::Binary(BOp::And | BOp::Or | BOp::Xor, a, b) => {
                let lanes = self.byte_lanes(a)?;
                let with = splat_i32(b).is_some_and(|c| (0..256).contains(&c))
                    || self.byte_lanes(b) == Some(lanes);
                with.then_some(lanes)
            }
            Expr::Binary(BOp::Shr, a, s) => match &**s {
                Expr::Splat { .. } => self.byte_lanes(a),
                _ => None,
            },
            _ => None,
        }
    }

    /// `e` (of [`Emitter::byte_lanes`]'s forms) as words of four lanes' bytes each.
    pub(super) fn packed(&mut self, e: &Expr) -> Result<VectorValue<'ctx>, Fail> {
        let i32t = self.ctx.i32_type();
        match e {
            Expr::Binary(op @ (BOp::And | BOp::Or | BOp::Xor), a, b) => {
                let x = self.packed(a)?;
                let n = x.get_type().get_size();
                let y = match splat_i32(b) {
                    Some(c) => self.words(i32t.const_int((c as u32 * BYTES) as u64, false), n)?,
                    None => self.packed(b)?,
                };
                Ok(match op {
                    BOp::And => self.b.build_and(x, y, "and4")?,
                    BOp::Or => self.b.build_or(x, y, "or4")?,
                    _ => self.b.build_xor(x, y, "xor4")?,
                })
            }
            Expr::Binary(BOp::Shr, a, s) => {
                let Expr::Splat { value, .. } = &**s else {
                    return Err(Fail::msg("a packed shift by a vector"));
                };
                let x = self.packed(a)?;
                let n = x.get_type().get_size();
                let s = self.expr(value)?.into_int_value();
                let amounts = self.words(s, n)?;
                let shifted = self.b.build_right_shift(x, amounts, false, "shr4")?;
                // Each byte keeps only its own bits: `0xff >> s` in every byte.
                let keep =
                    self.b
                        .build_right_shift(i32t.const_int(0xff, false), s, false, "keep")?;
                let keep =
                    self.b
                        .build_int_mul(keep, i32t.const_int(BYTES as u64, false), "keep4")?;
                let keep = self.words(keep, n)?;
                Ok(self.b.build_and(shifted, keep, "own4")?)
            }
            _ => self.bytes_as_words(e),
        }
    }

    /// `e`, a vector of i32 lanes each holding a byte (four to a word), evaluated as it is
    /// and narrowed into words: where `e` is loaded bytes, LLVM folds the widening away.
    pub(super) fn bytes_as_words(&mut self, e: &Expr) -> Result<VectorValue<'ctx>, Fail> {
        let BasicValueEnum::VectorValue(v) = self.expr(e)? else {
            return Err(Fail::msg("bytes as words of a scalar"));
        };
        let lanes = v.get_type().get_size();
        let bytes = self
            .b
            .build_int_truncate(v, self.ctx.i8_type().vec_type(lanes), "bytes")?;
        Ok(self
            .b
            .build_bit_cast(bytes, self.ctx.i32_type().vec_type(lanes / 4), "words")?
            .into_vector_value())
    }

    /// `w` in each of `n` lanes.
    fn words(&mut self, w: IntValue<'ctx>, n: u32) -> Result<VectorValue<'ctx>, Fail> {
        Ok(self.splat(w.into(), n)?.into_vector_value())
    }
}

/// `e`'s value where it is an i32 constant splat across lanes.
fn splat_i32(e: &Expr) -> Option<i32> {
    match e {
        Expr::Splat { value, .. } => match **value {
            Expr::Lit(Lit::I32(c)) => Some(c),
            _ => None,
        },
        _ => None,
    }
}
