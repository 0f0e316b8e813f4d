//! Byte dot products (`Expr::DotBytes`): x86's VNNI dot product or its multiply-adds where
//! the target has them, widened multiplies elsewhere (GPUs, AArch64 and baseline x86 for
//! now).

use super::expr::{Emitter, Fail, V};
use inkwell::values::BasicValueEnum;
use kiln_compiler::kernel::Expr;

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// `w` (i32 lanes within i16) as i16 pairs, each lane's value twice: the second operand
    /// of `pmaddwd` that multiplies both byte-pair sums of a lane by that lane's weight.
    /// Weights picked lane by lane from one vector (the runs' multipliers, two or four runs
    /// to a dot product) are picked from that whole vector in one word shuffle, however
    /// many dot products pick from it; built lane by lane they cost a permute, a narrowing
    /// and a second permute each (Q6_K decode 0.95 -> 0.56 ms for 4096 x 4096 on one core
    /// of an AVX-512 Xeon), and narrowed before the pick LLVM still moved the narrowing
    /// after a widened pick (three shuffles; picking words of the unnarrowed vector took
    /// prefill q4_k 130 -> 138 GFLOP/s a core).
    fn pair_weights(&mut self, w: &Expr, pairs: u32) -> Result<V<'ctx>, Fail> {
        let picked = match w {
            Expr::Lanes(xs) => xs
                .iter()
                .map(|x| match x {
                    Expr::Extract { vector, lane } => Some((&**vector, *lane)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>(),
            _ => None,
        }
        .filter(|p| p.iter().all(|(v, _)| *v == p[0].0));
        let (source, lanes): (V<'ctx>, Vec<u32>) = match picked {
            Some(p) => (
                self.expr(p[0].0)?,
                p.iter().map(|&(_, l)| l as u32).collect(),
            ),
            None => {
                let v = self.expr(w)?;
                let n = match v {
                    BasicValueEnum::VectorValue(v) => v.get_type().get_size(),
                    _ => return Err(Fail::msg("dot_bytes weights of a scalar")),
                };
                (v, (0..n).collect())
            }
        };
        let BasicValueEnum::VectorValue(sv) = source else {
            return Err(Fail::msg("dot_bytes weights picked from a scalar"));
        };
        if 2 * lanes.len() as u32 != pairs {
            return Err(Fail(format!(
                "dot_bytes weights of {} lanes for {pairs} byte pairs",
                lanes.len()
            )));
        }
        // The i32 lanes seen as i16 pairs, each lane's low half (its value, within i16) at
        // the even index: the pick is then one word permute, with no narrowing (which LLVM
        // moved past the pick, widening it: three shuffles per weight vector).
        let i16v = self.ctx.i16_type().vec_type(2 * sv.get_type().get_size());
        let narrow = self.b.build_bit_cast(sv, i16v, "w16")?.into_vector_value();
        let i32t = self.ctx.i32_type();
        let mask: Vec<_> = (0..pairs)
            .map(|k| i32t.const_int(2 * lanes[(k / 2) as usize] as u64, false))
            .collect();
        let mask = inkwell::types::VectorType::const_vector(&mask);
        Ok(self
            .b
            .build_shuffle_vector(narrow, narrow, mask, "w2")?
            .into())
    }

    /// `v` (i32 lanes holding bytes) as bytes. Selects, adds and subtracts are rebuilt at
    /// byte width (exact: truncation commutes with them) and zero- or sign-extended bytes
    /// are taken as they were, so arithmetic on bytes that the kernel IR spells in 32-bit
    /// lanes (the sign trick's `0 - x`) costs one byte instruction instead of widening,
    /// computing and packing back, which LLVM does not undo on its own.
    fn narrow_to_bytes(
        &mut self,
        v: inkwell::values::VectorValue<'ctx>,
        i8v: inkwell::types::VectorType<'ctx>,
    ) -> Result<inkwell::values::VectorValue<'ctx>, Fail> {
        use inkwell::values::InstructionOpcode as Op;
        let Some(inst) = v.as_instruction() else {
            return Ok(self.b.build_int_truncate(v, i8v, "b8")?);
        };
        let operand = |k: u32| {
            inst.get_operand(k).and_then(|o| match o {
                inkwell::values::Operand::Value(BasicValueEnum::VectorValue(v)) => Some(v),
                _ => None,
            })
        };
        match (inst.get_opcode(), operand(0), operand(1), operand(2)) {
            (Op::ZExt | Op::SExt, Some(x), _, _) if x.get_type() == i8v => Ok(x),
            (Op::Select, Some(c), Some(x), Some(y)) => {
                let (x, y) = (self.narrow_to_bytes(x, i8v)?, self.narrow_to_bytes(y, i8v)?);
                Ok(self.b.build_select(c, x, y, "sel8")?.into_vector_value())
            }
            (Op::Sub, Some(x), Some(y), _) => {
                let (x, y) = (self.narrow_to_bytes(x, i8v)?, self.narrow_to_bytes(y, i8v)?);
                Ok(self.b.build_int_sub(x, y, "sub8")?)
            }
            (Op::Add, Some(x), Some(y), _) => {
                let (x, y) = (self.narrow_to_bytes(x, i8v)?, self.narrow_to_bytes(y, i8v)?);
                Ok(self.b.build_int_add(x, y, "add8")?)
            }
            _ => Ok(self.b.build_int_truncate(v, i8v, "b8")?),
        }
    }

    /// `acc + sums of four adjacent byte products`, each times `w`'s lane where given (see
    /// `Expr::DotBytes` for the contract on `a` and `b`).
    pub(super) fn dot_bytes(
        &mut self,
        acc: V<'ctx>,
        a: V<'ctx>,
        b: V<'ctx>,
        w: Option<&Expr>,
    ) -> Result<V<'ctx>, Fail> {
        let (BasicValueEnum::VectorValue(av), BasicValueEnum::VectorValue(bv)) = (a, b) else {
            return Err(Fail::msg("dot_bytes of scalars"));
        };
        let bytes = av.get_type().get_size();
        let out_lanes = match acc {
            BasicValueEnum::VectorValue(v) => v.get_type().get_size(),
            _ => 1,
        };
        if bv.get_type().get_size() != bytes || bytes != 4 * out_lanes {
            return Err(Fail(format!(
                "dot_bytes of {bytes} and {} lanes into {out_lanes}",
                bv.get_type().get_size()
            )));
        }
        let pmadd = match bytes * 8 {
            128 => Some(("llvm.x86.ssse3.pmadd.ub.sw.128", "llvm.x86.sse2.pmadd.wd")),
            256 => Some(("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")),
            512 => Some((
                "llvm.x86.avx512.pmaddubs.w.512",
                "llvm.x86.avx512.pmaddw.d.512",
            )),
            _ => None,
        };
        let vnni = match bytes * 8 {
            128 => Some("llvm.x86.avx512.vpdpbusd.128"),
            256 => Some("llvm.x86.avx512.vpdpbusd.256"),
            512 => Some("llvm.x86.avx512.vpdpbusd.512"),
            _ => None,
        };
        if let (Some(name), BasicValueEnum::VectorValue(_), None) = (vnni, acc, w) {
            if bytes * 8 <= self.vnni_bits {
                // One instruction for the products, their sums of four and the add (and no
                // i16 saturation in between); the bytes travel as i32 lanes of four.
                let i8v = self.ctx.i8_type().vec_type(bytes);
                let i32v = self.ctx.i32_type().vec_type(out_lanes);
                let a8 = self.narrow_to_bytes(av, i8v)?;
                let b8 = self.narrow_to_bytes(bv, i8v)?;
                let a32 = self.b.build_bit_cast(a8, i32v, "a32")?;
                let b32 = self.b.build_bit_cast(b8, i32v, "b32")?;
                return self.intrinsic(name, &[], &[acc, a32, b32]);
            }
        }
        let sums = match pmadd {
            Some((ub_sw, wd)) if bytes * 8 <= self.byte_dot_bits => {
                // Bytes times bytes into i16 pair sums, then i16 pairs into i32: two
                // instructions per vector, where widening would take a dozen.
                let i8v = self.ctx.i8_type().vec_type(bytes);
                let a8 = self.narrow_to_bytes(av, i8v)?;
                let b8 = self.narrow_to_bytes(bv, i8v)?;
                let pairs = self.intrinsic(ub_sw, &[], &[a8.into(), b8.into()])?;
                let weights = match w {
                    Some(w) => self.pair_weights(w, bytes / 2)?,
                    None => {
                        let one = self.ctx.i16_type().const_int(1, false).into();
                        self.splat(one, bytes / 2)?
                    }
                };
                if let (Some(_), BasicValueEnum::VectorValue(_)) = (w, acc) {
                    if bytes * 8 <= self.vnni_bits {
                        // The pairs' weighted sums and the add in one instruction.
                        let i32v = self.ctx.i32_type().vec_type(out_lanes);
                        let p = self.b.build_bit_cast(pairs, i32v, "p32")?;
                        let q = self.b.build_bit_cast(weights, i32v, "w32")?;
                        let name = format!("llvm.x86.avx512.vpdpwssd.{}", bytes * 8);
                        return self.intrinsic(&name, &[], &[acc, p, q]);
                    }
                }
                self.intrinsic(wd, &[], &[pairs, weights])?
            }
            _ => self.widened_dot(av, bv, out_lanes)?,
        };
        let sums = match (w, pmadd) {
            // Where the products were widened, the weights multiply the sums.
            (Some(w), p) if !(p.is_some() && bytes * 8 <= self.byte_dot_bits) => {
                match (sums, self.expr(w)?) {
                    (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => {
                        self.b.build_int_mul(x, y, "ws")?.into()
                    }
                    (BasicValueEnum::IntValue(x), BasicValueEnum::IntValue(y)) => {
                        self.b.build_int_mul(x, y, "ws")?.into()
                    }
                    (x, y) => {
                        return Err(Fail(format!(
                            "dot_bytes sums {} weighted by {}",
                            x.get_type(),
                            y.get_type()
                        )))
                    }
                }
            }
            _ => sums,
        };
        self.add_sums(acc, sums)
    }

    /// `Expr::DotSignedBytes` where the target has no byte dot product for it (NVPTX's
    /// `dp4a` is `gpu/dp4a.rs`): widened products.
    pub(super) fn dot_signed_bytes(
        &mut self,
        acc: V<'ctx>,
        a: V<'ctx>,
        b: V<'ctx>,
    ) -> Result<V<'ctx>, Fail> {
        let (BasicValueEnum::VectorValue(av), BasicValueEnum::VectorValue(bv)) = (a, b) else {
            return Err(Fail::msg("dot_signed_bytes of scalars"));
        };
        let out_lanes = match acc {
            BasicValueEnum::VectorValue(v) => v.get_type().get_size(),
            _ => 1,
        };
        let sums = self.widened_dot(av, bv, out_lanes)?;
        self.add_sums(acc, sums)
    }

    /// Sums of four adjacent products of `a` and `b` (i32 lanes), `out_lanes` of them.
    fn widened_dot(
        &mut self,
        av: inkwell::values::VectorValue<'ctx>,
        bv: inkwell::values::VectorValue<'ctx>,
        out_lanes: u32,
    ) -> Result<V<'ctx>, Fail> {
        let prod = self.b.build_int_mul(av, bv, "p")?;
        if out_lanes == 1 {
            return self.intrinsic(
                "llvm.vector.reduce.add",
                &[prod.get_type().into()],
                &[prod.into()],
            );
        }
        let i32t = self.ctx.i32_type();
        let mut sum = None;
        for j in 0..4 {
            let mask: Vec<_> = (0..out_lanes)
                .map(|l| i32t.const_int((4 * l + j) as u64, false))
                .collect();
            let mask = inkwell::types::VectorType::const_vector(&mask);
            let part =
                self.b
                    .build_shuffle_vector(prod, prod.get_type().get_poison(), mask, "q")?;
            sum = Some(match sum {
                None => part,
                Some(s) => self.b.build_int_add(s, part, "s")?,
            });
        }
        Ok(sum.expect("four parts").into())
    }

    /// `acc + sums`, vectors or scalars alike.
    fn add_sums(&mut self, acc: V<'ctx>, sums: V<'ctx>) -> Result<V<'ctx>, Fail> {
        Ok(match (acc, sums) {
            (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => {
                self.b.build_int_add(x, y, "dot")?.into()
            }
            (BasicValueEnum::IntValue(x), BasicValueEnum::IntValue(y)) => {
                self.b.build_int_add(x, y, "dot")?.into()
            }
            (x, y) => {
                return Err(Fail(format!(
                    "dot_bytes accumulator {} and sums {}",
                    x.get_type(),
                    y.get_type()
                )))
            }
        })
    }
}
