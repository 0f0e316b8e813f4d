//! Byte dot products on NVPTX: `dp4a` multiplies four pairs of bytes and adds their sum to
//! an i32 in one instruction (sm_61 and newer: every capability kiln emits), exactly, with
//! either operand signed. LLVM 19 has no intrinsic for it, so it is inline PTX, marked free
//! of side effects so LLVM may share and move it like any arithmetic.

use super::super::expr::{Emitter, Fail, V};
use inkwell::values::{BasicValueEnum, VectorValue};
use kiln_compiler::kernel::Expr;

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// `acc` plus, per lane, the sum of four adjacent products of `a` and `b` (i32 vectors
    /// of bytes, four times `acc`'s lanes): `a`'s bytes signed where `signed_a`, else
    /// unsigned; `b`'s signed. Operands that are bytes loaded and masked or shifted
    /// (a nibble's quants) are computed a word at a time (`byte_permute.rs`), as `dp4a`
    /// wants them packed.
    pub(in crate::llvm) fn dp4a(
        &mut self,
        acc: &Expr,
        a: &Expr,
        b: &Expr,
        signed_a: bool,
    ) -> Result<V<'ctx>, Fail> {
        let pairs = self.word_pairs(a, b)?;
        let acc = self.expr(acc)?;
        let i32t = self.ctx.i32_type();
        let mut sums = Vec::with_capacity(pairs.len());
        for (w, (x, y)) in pairs.into_iter().enumerate() {
            let at = i32t.const_int(w as u64, false);
            let c = match acc {
                BasicValueEnum::VectorValue(v) => self.b.build_extract_element(v, at, "c")?,
                scalar if w == 0 => scalar,
                other => {
                    return Err(Fail(format!(
                        "dp4a of several words into {}",
                        other.get_type()
                    )))
                }
            };
            sums.push(self.dp4a_word(x, y, c, signed_a)?);
        }
        if let BasicValueEnum::VectorValue(v) = acc {
            let mut out = v.get_type().get_poison();
            for (w, s) in sums.into_iter().enumerate() {
                let at = i32t.const_int(w as u64, false);
                out = self.b.build_insert_element(out, s, at, "d")?;
            }
            return Ok(out.into());
        }
        match sums.as_slice() {
            [one] => Ok(*one),
            _ => Err(Fail::msg("dp4a of several words into a scalar")),
        }
    }

    /// The sum of all lanes of `dp4a(0, a, b)`: one chain of `dp4a`s through a single
    /// accumulator, where the lanes' sums would take an add each after them.
    pub(in crate::llvm) fn dp4a_sum(
        &mut self,
        a: &Expr,
        b: &Expr,
        signed_a: bool,
    ) -> Result<V<'ctx>, Fail> {
        let mut sum: V<'ctx> = self.ctx.i32_type().const_zero().into();
        for (x, y) in self.word_pairs(a, b)? {
            sum = self.dp4a_word(x, y, sum, signed_a)?;
        }
        Ok(sum)
    }

    /// `a`'s and `b`'s words, pair by pair.
    fn word_pairs(&mut self, a: &Expr, b: &Expr) -> Result<Vec<(V<'ctx>, V<'ctx>)>, Fail> {
        let (wa, wb) = (self.words_of(a)?, self.words_of(b)?);
        let words = wa.get_type().get_size();
        if wb.get_type().get_size() != words {
            return Err(Fail(format!(
                "dp4a of {words} and {} words",
                wb.get_type().get_size()
            )));
        }
        let i32t = self.ctx.i32_type();
        (0..words)
            .map(|w| {
                let at = i32t.const_int(w as u64, false);
                Ok((
                    self.b.build_extract_element(wa, at, "x")?,
                    self.b.build_extract_element(wb, at, "y")?,
                ))
            })
            .collect()
    }

    /// One `dp4a`: `c` plus the four products of `x`'s and `y`'s bytes.
    fn dp4a_word(
        &mut self,
        x: V<'ctx>,
        y: V<'ctx>,
        c: V<'ctx>,
        signed_a: bool,
    ) -> Result<V<'ctx>, Fail> {
        let i32t = self.ctx.i32_type();
        let ty = i32t.fn_type(&[i32t.into(); 3], false);
        let kind = if signed_a { "s32" } else { "u32" };
        let asm = self.ctx.create_inline_asm(
            ty,
            format!("dp4a.{kind}.s32 $0, $1, $2, $3;"),
            "=r,r,r,r".into(),
            false,
            false,
            None,
            false,
        );
        let call = self
            .b
            .build_indirect_call(ty, asm, &[x.into(), y.into(), c.into()], "dp4a")?;
        match call.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(v) => Ok(v),
            _ => Err(Fail::msg("dp4a returned nothing")),
        }
    }

    /// The i32 vector of bytes `e` as words of four bytes each.
    fn words_of(&mut self, e: &Expr) -> Result<VectorValue<'ctx>, Fail> {
        if self.byte_lanes(e).is_some() {
            self.packed(e)
        } else {
            self.bytes_as_words(e)
        }
    }
}
