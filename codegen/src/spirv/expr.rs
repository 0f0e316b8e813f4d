//! Kernel-IR expressions -> SPIR-V instructions, with the same semantics as the LLVM
//! backend: `minnum`/`maxnum` for float min/max, truncating signed integer division,
//! saturating float -> int casts with NaN -> 0, bools widening to 0/1.

use super::builder::{glsl, V};
use super::emitter::Emitter;
use super::Fail;
use kiln_compiler::kernel::{gpu, BOp, Buf, Cmp, Elem, Expr, Lit, RedOp, UOp, VType};
use rspirv::spirv::{Op, Word};
use std::cell::Cell;

impl Emitter<'_, '_> {
    pub fn expr(&mut self, e: &Expr) -> Result<V, Fail> {
        Ok(match e {
            Expr::Lit(l) => match *l {
                Lit::F32(v) => self.f32_lit(v)?,
                Lit::I32(v) => self.s.i32(v),
                Lit::I64(v) => self.s.i64(v),
                Lit::Bool(v) => self.s.lit(VType::BOOL, v as u64),
            },
            Expr::Var(v) => self.read_var(*v)?,
            Expr::Dim(d) => *self
                .dims
                .get(*d as usize)
                .ok_or_else(|| Fail(format!("symbol {d} was not loaded")))?,
            Expr::GridIdx(g) => *self
                .grid
                .get(*g as usize)
                .ok_or_else(|| Fail(format!("grid axis {g} out of range")))?,
            Expr::Load { buf, index, lanes } => {
                if *lanes == 1 {
                    if let Some(x) = self.wide_element(*buf, index)? {
                        return Ok(x);
                    }
                }
                let i = self.index(*buf, index)?;
                if let Some(run) = self.load_run(*buf, index, i, *lanes)? {
                    return Ok(run);
                }
                if let Some(run) = self.load_bytes(*buf, index, i, *lanes)? {
                    return Ok(run);
                }
                let mut vals = Vec::with_capacity(*lanes as usize);
                for l in 0..*lanes as i64 {
                    let at = if l == 0 {
                        i
                    } else {
                        let off = self.s.lit(i.t, l as u64);
                        self.s.op_v(Op::IAdd, i.t, &[i, off])?
                    };
                    vals.push(self.load(*buf, at)?);
                }
                self.compose(&vals)?
            }
            Expr::Splat { value, lanes } => {
                let v = self.expr(value)?;
                self.splat(v, *lanes)?
            }
            Expr::Lanes(xs) => {
                let vals = xs
                    .iter()
                    .map(|x| self.expr(x))
                    .collect::<Result<Vec<_>, _>>()?;
                self.compose(&vals)?
            }
            Expr::Extract { vector, lane } => {
                let v = self.expr(vector)?;
                self.extract(v, *lane)?
            }
            Expr::Unary(op, a) => {
                let x = self.expr(a)?;
                self.unary(*op, x)?
            }
            Expr::Binary(op, a, b) => {
                if *op == BOp::Or {
                    if let Some(w) = self.load_word_le(e)? {
                        return Ok(w);
                    }
                }
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                self.int_binary(*op, a, b, x, y)?
            }
            Expr::Fma(a, b, c) => {
                let (x, y, z) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                self.s.glsl(glsl::FMA, x.t, &[x, y, z])?
            }
            Expr::Thread => self.thread.ok_or_else(|| {
                Fail::msg("the thread index outside a kernel of explicit threads")
            })?,
            Expr::Mma(..) | Expr::LoadMatrix { .. } | Expr::Lane => {
                return Err(Fail::msg(
                    "matrix instructions are not lowered to SPIR-V (kiln emits them for CUDA \
                     and HIP targets with a matrix unit)",
                ))
            }
            Expr::DotBytes(..) | Expr::DotSignedBytes(..) | Expr::LaneSums(..) => {
                return Err(Fail::msg(
                    "byte dot products and their lane sums are not lowered to SPIR-V yet \
                     (kiln emits them for CPU and CUDA targets only)",
                ))
            }
            Expr::Cmp(c, a, b) => {
                let (x, y) = match self.fits_i32(a) && self.fits_i32(b) {
                    true => (self.index32(a)?, self.index32(b)?),
                    false => (self.expr(a)?, self.expr(b)?),
                };
                self.compare(*c, x, y)?
            }
            Expr::Select(c, a, b) if gpu::two_sources(a, b) => self.select_by_branch(c, a, b)?,
            Expr::Select(c, a, b) => {
                let (cv, x, y) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                self.select(cv, x, y)?
            }
            Expr::Cast(Elem::I32, a) if self.fits_i32(a) => self.index32(a)?,
            Expr::Cast(to, a) => {
                let x = self.expr(a)?;
                self.cast(*to, x)?
            }
            Expr::Bitcast(to, a) => {
                let x = self.expr(a)?;
                if !matches!(to, Elem::F32 | Elem::I32) {
                    return Err(Fail(format!("bitcast to {to:?}")));
                }
                self.s.op_v(Op::Bitcast, VType { elem: *to, ..x.t }, &[x])?
            }
            Expr::ReduceLanes(op, a) => {
                let x = self.expr(a)?;
                if x.t.elem != Elem::F32 {
                    return Err(Fail::msg(
                        "integer lane reductions are not lowered to SPIR-V (the GPU schedule \
                         is scalar)",
                    ));
                }
                let mut acc = self.extract(x, 0)?;
                for l in 1..x.t.lanes {
                    let y = self.extract(x, l)?;
                    acc = self.reduce_step(*op, acc, y)?;
                }
                acc
            }
            Expr::Let { var, value, body } => {
                let v = self.expr(value)?;
                self.bind_let(*var, v, value);
                self.expr(body)?
            }
        })
    }

    /// `c ? a : b` where the arms read different bindings (`gpu::two_sources`), as a branch
    /// that stores the chosen arm's value in a function variable: `OpSelect` computes both
    /// arms, so decode attention loaded a cached row and the step's new one for every
    /// element. The condition holds for long runs of positions (every cached one, then the
    /// new ones), so the branch rarely diverges.
    fn select_by_branch(&mut self, c: &Expr, a: &Expr, b: &Expr) -> Result<V, Fail> {
        let cv = self.expr(c)?;
        if cv.t.lanes > 1 {
            let (x, y) = (self.expr(a)?, self.expr(b)?);
            return self.select(cv, x, y);
        }
        let slot = Cell::new(None);
        self.if_else(
            cv,
            &mut |em| {
                let v = em.expr(a)?;
                em.keep_in(&slot, v)
            },
            &mut |em| {
                let v = em.expr(b)?;
                em.keep_in(&slot, v)
            },
        )?;
        let (ptr, t) = slot
            .get()
            .ok_or_else(|| Fail::msg("a select produced no value"))?;
        self.load_ptr(ptr, t)
    }

    /// Stores `v` in the function variable `slot` holds, made on the first store: the arms
    /// of `select_by_branch` each store their value there.
    fn keep_in(&mut self, slot: &Cell<Option<(Word, VType)>>, v: V) -> Result<(), Fail> {
        let ptr = match slot.get() {
            Some((p, t)) if t == v.t => p,
            Some((_, t)) => {
                return Err(Fail(format!(
                    "a select's arms differ in type ({t:?} and {:?})",
                    v.t
                )))
            }
            None => {
                let ty = self.s.ty(v.t);
                let p = self.function_var(ty);
                slot.set(Some((p, v.t)));
                p
            }
        };
        self.store_ptr(ptr, v.id)
    }

    /// The value of index `e` into `buf`, as the access chain will use it: an i32 where
    /// `ranges` shows every part of it to lie within i32 (then 32- and 64-bit arithmetic
    /// agree), else its low 32 bits where those are all a use can take, else the i64 it
    /// is. 64-bit integer arithmetic is several instructions a step on GPUs, and the index
    /// arithmetic of a quantized block's scales and quants is much of what a dot product's
    /// step computes.
    ///
    /// Every binding holds at most `maxStorageBufferRange` bytes, a 32-bit limit, so an
    /// element of two bytes or more, and of any local array, has an index below 2^31: its
    /// low 32 bits are the index, and sums and products give their low 32 bits from their
    /// operands' (an activation row `g0 * 768 + k` over a symbolic `seq`). A byte's index may
    /// reach 2^32, and its word is the index shifted, which needs the bits above, so byte
    /// indices of unknown range keep 64 bits.
    pub fn index(&mut self, buf: Buf, e: &Expr) -> Result<V, Fail> {
        let below_2_31 = match buf {
            Buf::Local(_) => true,
            Buf::Arg(_) => self.k.buf_dtype(buf).size_bytes() >= 2,
        };
        match below_2_31 {
            true => self.low32(e),
            false if self.fits_i32(e) => self.index32(e),
            false => self.expr(e),
        }
    }

    /// The low 32 bits of i64 expression `e` (all of it, as an i32, where it fits).
    fn low32(&mut self, e: &Expr) -> Result<V, Fail> {
        if self.fits_i32(e) {
            return self.index32(e);
        }
        match e {
            Expr::Binary(op @ (BOp::Add | BOp::Sub | BOp::Mul), a, b) => {
                let (x, y) = (self.low32(a)?, self.low32(b)?);
                self.binary(*op, x, y)
            }
            _ => {
                let v = self.expr(e)?;
                self.narrow_i32(v)
            }
        }
    }

    /// Whether `e` and each of its parts is an i64 within i32.
    pub(super) fn fits_i32(&self, e: &Expr) -> bool {
        let parts = match e {
            // A 32-bit shift takes amounts below 32 (a range of one value, 0, allows more).
            Expr::Binary(BOp::Shl | BOp::Shr, _, b)
                if !matches!(**b, Expr::Lit(Lit::I64(0..=31))) =>
            {
                false
            }
            Expr::Binary(_, a, b) | Expr::Select(_, a, b) => {
                [a, b].iter().all(|x| self.fits_i32(x))
            }
            _ => true,
        };
        parts && self.ranges.of(e).is_some_and(|r| r.within_i32())
    }

    /// `e`, of which `fits_i32` holds, in 32-bit arithmetic.
    pub(super) fn index32(&mut self, e: &Expr) -> Result<V, Fail> {
        match e {
            Expr::Lit(Lit::I64(v)) => Ok(self.s.i32(*v as i32)),
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.index32(a)?, self.index32(b)?);
                self.int_binary(*op, a, b, x, y)
            }
            Expr::Select(c, a, b) => {
                let c = self.expr(c)?;
                let (x, y) = (self.index32(a)?, self.index32(b)?);
                self.select(c, x, y)
            }
            _ => {
                let v = self.expr(e)?;
                self.narrow_i32(v)
            }
        }
    }

    /// `x op y` for the values of integer expressions `a` and `b`: a division or remainder
    /// of a non-negative value by a positive power of two is a shift or a mask, and by
    /// another positive value unsigned (cheaper than signed on every GPU, and the same
    /// when both are non-negative).
    fn int_binary(&mut self, op: BOp, a: &Expr, b: &Expr, x: V, y: V) -> Result<V, Fail> {
        let nonneg = self.ranges.of(a).is_some_and(|r| r.lo >= 0);
        self.int_op(op, nonneg, b, x, y)
    }

    /// [`Emitter::int_binary`] for an `x` known (`x_nonneg`) or not to be non-negative.
    pub(super) fn int_op(
        &mut self,
        op: BOp,
        x_nonneg: bool,
        b: &Expr,
        x: V,
        y: V,
    ) -> Result<V, Fail> {
        if !matches!(op, BOp::Div | BOp::Rem) || !x_nonneg || x.t.elem == Elem::F32 {
            return self.binary(op, x, y);
        }
        match (op, b) {
            (_, Expr::Lit(Lit::I64(c))) if *c > 0 && (*c as u64).is_power_of_two() => {
                let (o, k) = match op {
                    BOp::Div => (Op::ShiftRightLogical, c.trailing_zeros() as u64),
                    _ => (Op::BitwiseAnd, *c as u64 - 1),
                };
                let k = self.s.lit(x.t, k);
                self.s.op_v(o, x.t, &[x, k])
            }
            _ if self.ranges.of(b).is_some_and(|r| r.lo > 0) => {
                let o = match op {
                    BOp::Div => Op::UDiv,
                    _ => Op::UMod,
                };
                let (ty, uty) = (self.s.ty(x.t), self.s.unsigned(x.t));
                let xu = self.s.op(Op::Bitcast, uty, &[x.id])?;
                let yu = self.s.op(Op::Bitcast, uty, &[y.id])?;
                let r = self.s.op(o, uty, &[xu, yu])?;
                let id = self.s.op(Op::Bitcast, ty, &[r])?;
                Ok(V { id, t: x.t })
            }
            _ => self.binary(op, x, y),
        }
    }

    /// An f32 literal. Infinities and NaNs are made from their bits at the point of use:
    /// naga (like WGSL) refuses non-finite float constants.
    pub fn f32_lit(&mut self, v: f32) -> Result<V, Fail> {
        if v.is_finite() {
            return Ok(self.s.f32(v));
        }
        let bits = self.s.i32(v.to_bits() as i32);
        self.s.op_v(Op::Bitcast, VType::F32, &[bits])
    }

    pub fn reduce_step(&mut self, op: RedOp, a: V, x: V) -> Result<V, Fail> {
        match op {
            RedOp::Sum => self.s.op_v(Op::FAdd, a.t, &[a, x]),
            RedOp::Max => self.s.glsl(glsl::N_MAX, a.t, &[a, x]),
        }
    }

    pub(super) fn compose(&mut self, vals: &[V]) -> Result<V, Fail> {
        match vals {
            [] => Err(Fail::msg("a vector of no lanes")),
            [one] => Ok(*one),
            _ if vals.len() > 4 => Err(Fail(format!(
                "{}-lane vectors: SPIR-V shaders have at most 4 (the GPU schedule is scalar)",
                vals.len()
            ))),
            _ => {
                let t = vals[0].t.with_lanes(vals.len() as u8);
                self.s.op_v(Op::CompositeConstruct, t, vals)
            }
        }
    }

    pub fn splat(&mut self, v: V, lanes: u8) -> Result<V, Fail> {
        let vals = vec![v; lanes as usize];
        self.compose(&vals)
    }

    pub fn extract(&mut self, v: V, lane: u8) -> Result<V, Fail> {
        if v.t.lanes == 1 {
            return Ok(v);
        }
        let t = v.t.with_lanes(1);
        let ty = self.s.ty(t);
        let id = self.s.extract(ty, v.id, lane as u32)?;
        Ok(V { id, t })
    }

    fn unary(&mut self, op: UOp, x: V) -> Result<V, Fail> {
        let float = x.t.elem == Elem::F32;
        match (op, float) {
            (UOp::Neg, true) => self.s.op_v(Op::FNegate, x.t, &[x]),
            (UOp::Neg, false) => self.s.op_v(Op::SNegate, x.t, &[x]),
            (UOp::Abs, true) => self.s.glsl(glsl::F_ABS, x.t, &[x]),
            (UOp::Abs, false) => self.s.glsl(glsl::S_ABS, x.t, &[x]),
            (UOp::Sqrt, _) => self.s.glsl(glsl::SQRT, x.t, &[x]),
            // The f16 in each word's low 16 bits, converted by the device: the first lane
            // of `UnpackHalf2x16`, which takes an unsigned word (as the f16 loads do) and
            // has no vector form, so a vector converts lane by lane.
            (UOp::HalfBits, false) => {
                let mut lanes = Vec::with_capacity(x.t.lanes as usize);
                for l in 0..x.t.lanes {
                    let w = self.extract(x, l)?;
                    let u32t = self.s.u32_ty();
                    let id = self.s.op(Op::Bitcast, u32t, &[w.id])?;
                    let pair = self.s.glsl(
                        glsl::UNPACK_HALF_2X16,
                        VType::F32.with_lanes(2),
                        &[V { id, ..w }],
                    )?;
                    lanes.push(self.extract(pair, 0)?);
                }
                self.compose(&lanes)
            }
            (other, _) => Err(Fail(format!(
                "{other:?} must be expanded by kernel::math before codegen"
            ))),
        }
    }

    pub fn binary(&mut self, op: BOp, x: V, y: V) -> Result<V, Fail> {
        let t = x.t;
        let o = match (t.elem, op) {
            (Elem::F32, BOp::Add) => Op::FAdd,
            (Elem::F32, BOp::Sub) => Op::FSub,
            (Elem::F32, BOp::Mul) => Op::FMul,
            (Elem::F32, BOp::Div) => Op::FDiv,
            (Elem::F32, BOp::Max) => return self.s.glsl(glsl::N_MAX, t, &[x, y]),
            (Elem::F32, BOp::Min) => return self.s.glsl(glsl::N_MIN, t, &[x, y]),
            (Elem::F32, other) => return Err(Fail(format!("{other:?} on float operands"))),
            (Elem::Bool, BOp::And | BOp::Mul | BOp::Min) => Op::LogicalAnd,
            (Elem::Bool, BOp::Or | BOp::Max) => Op::LogicalOr,
            (Elem::Bool, BOp::Xor) => Op::LogicalNotEqual,
            (Elem::Bool, other) => return Err(Fail(format!("{other:?} on bool operands"))),
            (_, BOp::Add) => Op::IAdd,
            (_, BOp::Sub) => Op::ISub,
            (_, BOp::Mul) => Op::IMul,
            (_, BOp::Div) => Op::SDiv,
            (_, BOp::Rem) => Op::SRem,
            (_, BOp::Shl) => Op::ShiftLeftLogical,
            (_, BOp::Shr) => Op::ShiftRightLogical,
            (_, BOp::And) => Op::BitwiseAnd,
            (_, BOp::Or) => Op::BitwiseOr,
            (_, BOp::Xor) => Op::BitwiseXor,
            (_, BOp::Max) => return self.s.glsl(glsl::S_MAX, t, &[x, y]),
            (_, BOp::Min) => return self.s.glsl(glsl::S_MIN, t, &[x, y]),
        };
        self.s.op_v(o, t, &[x, y])
    }

    pub fn compare(&mut self, c: Cmp, x: V, y: V) -> Result<V, Fail> {
        let o = match (x.t.elem, c) {
            (Elem::F32, Cmp::Eq) => Op::FOrdEqual,
            (Elem::F32, Cmp::Ne) => Op::FUnordNotEqual,
            (Elem::F32, Cmp::Lt) => Op::FOrdLessThan,
            (Elem::F32, Cmp::Le) => Op::FOrdLessThanEqual,
            (Elem::F32, Cmp::Gt) => Op::FOrdGreaterThan,
            (Elem::F32, Cmp::Ge) => Op::FOrdGreaterThanEqual,
            (Elem::Bool, Cmp::Eq) => Op::LogicalEqual,
            (Elem::Bool, Cmp::Ne) => Op::LogicalNotEqual,
            (Elem::Bool, other) => return Err(Fail(format!("{other:?} on bools"))),
            (_, Cmp::Eq) => Op::IEqual,
            (_, Cmp::Ne) => Op::INotEqual,
            (_, Cmp::Lt) => Op::SLessThan,
            (_, Cmp::Le) => Op::SLessThanEqual,
            (_, Cmp::Gt) => Op::SGreaterThan,
            (_, Cmp::Ge) => Op::SGreaterThanEqual,
        };
        let t = VType::BOOL.with_lanes(x.t.lanes);
        let ty = self.s.ty(t);
        Ok(V {
            id: self.s.op(o, ty, &[x.id, y.id])?,
            t,
        })
    }

    pub fn select(&mut self, c: V, a: V, b: V) -> Result<V, Fail> {
        // Before SPIR-V 1.4 the condition needs as many lanes as the values.
        let c = if c.t.lanes != a.t.lanes {
            self.splat(c, a.t.lanes)?
        } else {
            c
        };
        let ty = self.s.ty(a.t);
        Ok(V {
            id: self.s.op(Op::Select, ty, &[c.id, a.id, b.id])?,
            t: a.t,
        })
    }

    pub fn cast(&mut self, to: Elem, x: V) -> Result<V, Fail> {
        let t = VType { elem: to, ..x.t };
        if x.t == t {
            return Ok(x);
        }
        match (x.t.elem, to) {
            (_, Elem::Bool) => {
                let zero = self.s.lit(x.t, 0);
                self.compare(Cmp::Ne, x, zero)
            }
            (Elem::Bool, _) => {
                let one = match to {
                    Elem::F32 => 1f32.to_bits() as u64,
                    _ => 1,
                };
                let (one, zero) = (self.s.lit(t, one), self.s.lit(t, 0));
                self.select(x, one, zero)
            }
            (Elem::I32 | Elem::I64, Elem::F32) => self.s.op_v(Op::ConvertSToF, t, &[x]),
            (Elem::F32, _) => {
                // Saturating, NaN -> 0, as the interpreter and the CPU backends.
                let (lo, hi) = if to == Elem::I64 {
                    (-9.223_372e18f32, 9.223_371_5e18f32)
                } else {
                    (-2_147_483_648.0, 2_147_483_520.0)
                };
                let (lo, hi) = (
                    self.s.lit(x.t, lo.to_bits() as u64),
                    self.s.lit(x.t, hi.to_bits() as u64),
                );
                let c = self.s.glsl(glsl::N_MAX, x.t, &[x, lo])?;
                let c = self.s.glsl(glsl::N_MIN, x.t, &[c, hi])?;
                let int = self.s.op_v(Op::ConvertFToS, t, &[c])?;
                let nan = self.compare(Cmp::Ne, x, x)?;
                let zero = self.s.lit(t, 0);
                self.select(nan, zero, int)
            }
            // Widening sign-extends, narrowing keeps the low bits.
            _ => self.s.op_v(Op::SConvert, t, &[x]),
        }
    }

    /// `x op c` for an i32 value and constant.
    pub fn ib(&mut self, op: BOp, x: V, c: u32) -> Result<V, Fail> {
        let k = self.s.lit(x.t, c as u64);
        self.binary(op, x, k)
    }

    pub fn narrow_i32(&mut self, x: V) -> Result<V, Fail> {
        if let Some(&twin) = self.narrowed.get(&x.id) {
            return Ok(twin);
        }
        match self.s.value_of(x.id) {
            Some(bits) if x.t == VType::I64 => Ok(self.s.i32(bits as i32)),
            _ => self.cast(Elem::I32, x),
        }
    }
}
