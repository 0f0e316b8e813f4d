//! Kernel-IR expressions -> Cranelift values. Scalars are F32/I32/I64 and I8 booleans;
//! vectors are 128-bit (F32X4, I32X4) and boolean vectors are lane masks (I32X4, all ones
//! for true), which is what Cranelift's vector comparisons produce.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, StackSlot, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_compiler::kernel::{BOp, Buf, Cmp, Elem, Expr, Kernel, Lit, RedOp, UOp, VarId};
use kiln_ir::DType;
use std::collections::HashMap;

pub struct Emitter<'f, 'k> {
    pub b: FunctionBuilder<'f>,
    pub k: &'k Kernel,
    pub bufs: Vec<Value>,
    pub locals: Vec<StackSlot>,
    pub dims: Vec<Value>,
    pub grid: Vec<Value>,
    pub lets: HashMap<VarId, Value>,
    pub vars: HashMap<VarId, Variable>,
    pub has_fma: bool,
    pub ptr: Type,
}

type R = Result<Value, String>;

fn vec_type(elem: Type, lanes: u8) -> Result<Type, String> {
    match (elem, lanes) {
        (t, 1) => Ok(t),
        (types::F32, 4) => Ok(types::F32X4),
        (types::I32, 4) | (types::I8, 4) => Ok(types::I32X4),
        (t, n) => Err(format!(
            "{n} lanes of {t}: Cranelift vectors here are 128 bits (compile with 4 f32 lanes)"
        )),
    }
}

fn vflags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

impl Emitter<'_, '_> {
    fn ty(&self, v: Value) -> Type {
        self.b.func.dfg.value_type(v)
    }

    pub fn declare(&mut self, var: VarId, init: Value) {
        let ty = self.ty(init);
        let v = *self
            .vars
            .entry(var)
            .or_insert_with(|| self.b.declare_var(ty));
        self.b.def_var(v, init);
    }

    pub fn assign(&mut self, var: VarId, value: Value) -> Result<(), String> {
        let v = *self
            .vars
            .get(&var)
            .ok_or_else(|| format!("assignment to undeclared v{var}"))?;
        self.b.def_var(v, value);
        Ok(())
    }

    pub fn read(&mut self, var: VarId) -> R {
        if let Some(v) = self.vars.get(&var) {
            return Ok(self.b.use_var(*v));
        }
        self.lets
            .get(&var)
            .copied()
            .ok_or_else(|| format!("v{var} is read before it is defined"))
    }

    fn address(&mut self, buf: Buf, index: Value) -> (Value, DType) {
        let (base, dtype) = match buf {
            Buf::Arg(i) => (self.bufs[i as usize], self.k.args[i as usize].dtype),
            Buf::Local(i) => {
                let slot = self.locals[i as usize];
                (
                    self.b.ins().stack_addr(self.ptr, slot, 0),
                    self.k.locals[i as usize].dtype,
                )
            }
        };
        let offset = self.b.ins().imul_imm_s(index, dtype.size_bytes() as i64);
        (self.b.ins().iadd(base, offset), dtype)
    }

    pub fn load(&mut self, buf: Buf, index: Value, lanes: u8) -> R {
        let (addr, dtype) = self.address(buf, index);
        let flags = MemFlagsData::new().with_notrap();
        let scalar = |em: &mut Self, at: Value, off: i32| -> Value {
            match dtype {
                DType::F32 => em.b.ins().load(types::F32, flags, at, off),
                DType::I32 => em.b.ins().load(types::I32, flags, at, off),
                DType::I64 => em.b.ins().load(types::I64, flags, at, off),
                DType::U8 => em.b.ins().uload8(types::I32, flags, at, off),
                DType::F16 => {
                    let h = em.b.ins().uload16(types::I32, flags, at, off);
                    super::half::f16_to_f32(&mut em.b, h)
                }
                DType::BF16 => {
                    let h = em.b.ins().uload16(types::I32, flags, at, off);
                    let bits = em.b.ins().ishl_imm_s(h, 16);
                    em.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
                }
            }
        };
        if lanes == 1 {
            return Ok(scalar(self, addr, 0));
        }
        match dtype {
            DType::F32 | DType::I32 => {
                let ty = vec_type(
                    if dtype == DType::F32 {
                        types::F32
                    } else {
                        types::I32
                    },
                    lanes,
                )?;
                Ok(self.b.ins().load(ty, flags, addr, 0))
            }
            _ => {
                let lane_values: Vec<Value> = (0..lanes)
                    .map(|l| scalar(self, addr, l as i32 * dtype.size_bytes() as i32))
                    .collect();
                self.build_vector(&lane_values)
            }
        }
    }

    pub fn store(&mut self, buf: Buf, index: Value, v: Value) -> Result<(), String> {
        let (addr, dtype) = self.address(buf, index);
        let flags = MemFlagsData::new().with_notrap();
        let ty = self.ty(v);
        let lanes = ty.lane_count();
        let scalar = |em: &mut Self, x: Value, off: i32| match dtype {
            DType::F16 => {
                let h = super::half::f32_to_f16(&mut em.b, x);
                em.b.ins().istore16(flags, h, addr, off);
            }
            DType::BF16 => {
                let h = super::half::f32_to_bf16(&mut em.b, x);
                em.b.ins().istore16(flags, h, addr, off);
            }
            DType::U8 => {
                em.b.ins().istore8(flags, x, addr, off);
            }
            _ => {
                em.b.ins().store(flags, x, addr, off);
            }
        };
        if lanes == 1 || matches!(dtype, DType::F32 | DType::I32 | DType::I64) {
            if lanes == 1 {
                scalar(self, v, 0);
            } else {
                self.b.ins().store(flags, v, addr, 0);
            }
            return Ok(());
        }
        for l in 0..lanes {
            let x = self.b.ins().extractlane(v, l as u8);
            scalar(self, x, l as i32 * dtype.size_bytes() as i32);
        }
        Ok(())
    }

    /// A vector from scalars; booleans become lane masks.
    fn build_vector(&mut self, lanes: &[Value]) -> R {
        let elem = self.ty(lanes[0]);
        let lanes: Vec<Value> = if elem == types::I8 {
            lanes.iter().map(|&b| self.bool_to_mask_lane(b)).collect()
        } else {
            lanes.to_vec()
        };
        let ty = vec_type(self.ty(lanes[0]), lanes.len() as u8)?;
        let mut v = self.b.ins().splat(ty, lanes[0]);
        for (l, &x) in lanes.iter().enumerate().skip(1) {
            v = self.b.ins().insertlane(v, x, l as u8);
        }
        Ok(v)
    }

    /// An I8 boolean as an i32 mask lane: 0 or -1.
    fn bool_to_mask_lane(&mut self, b: Value) -> Value {
        let wide = self.b.ins().uextend(types::I32, b);
        self.b.ins().ineg(wide)
    }

    fn splat_of(&mut self, like: Value, x: Value) -> Value {
        let ty = self.ty(like);
        if ty.is_vector() {
            self.b.ins().splat(ty, x)
        } else {
            x
        }
    }

    pub fn expr(&mut self, e: &Expr) -> R {
        Ok(match e {
            Expr::Lit(Lit::F32(v)) => self.b.ins().f32const(*v),
            Expr::Lit(Lit::I32(v)) => self.b.ins().iconst(types::I32, *v as i64),
            Expr::Lit(Lit::I64(v)) => self.b.ins().iconst(types::I64, *v),
            Expr::Lit(Lit::Bool(v)) => self.b.ins().iconst(types::I8, *v as i64),
            Expr::Var(v) => self.read(*v)?,
            Expr::Dim(d) => *self
                .dims
                .get(*d as usize)
                .ok_or_else(|| format!("dim{d} not loaded"))?,
            Expr::GridIdx(g) => *self
                .grid
                .get(*g as usize)
                .ok_or_else(|| format!("grid axis {g} out of range"))?,
            Expr::Load { buf, index, lanes } => {
                let i = self.expr(index)?;
                self.load(*buf, i, *lanes)?
            }
            Expr::Splat { value, lanes } => {
                let v = self.expr(value)?;
                let elem = self.ty(v);
                if elem == types::I8 {
                    let m = self.bool_to_mask_lane(v);
                    self.b.ins().splat(types::I32X4, m)
                } else {
                    let ty = vec_type(elem, *lanes)?;
                    self.b.ins().splat(ty, v)
                }
            }
            Expr::Lanes(xs) => {
                let vals = xs
                    .iter()
                    .map(|x| self.expr(x))
                    .collect::<Result<Vec<_>, _>>()?;
                self.build_vector(&vals)?
            }
            Expr::Extract { vector, lane } => {
                let v = self.expr(vector)?;
                self.b.ins().extractlane(v, *lane)
            }
            Expr::Unary(op, a) => {
                let x = self.expr(a)?;
                self.unary(*op, x)?
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                let per_lane_shift = matches!(op, BOp::Shl | BOp::Shr)
                    && self.ty(y).is_vector()
                    && !matches!(**b, Expr::Splat { .. });
                if per_lane_shift {
                    // Cranelift's vector shifts take one amount for every lane.
                    let ty = self.ty(x);
                    self.lane_by_lane(ty, x, y, |em, a, b| match op {
                        BOp::Shl => em.b.ins().ishl(a, b),
                        _ => em.b.ins().ushr(a, b),
                    })?
                } else {
                    self.binary(*op, x, y)?
                }
            }
            Expr::Fma(a, b, c) => {
                let (x, y, z) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                if self.has_fma {
                    self.b.ins().fma(x, y, z)
                } else {
                    // Without FMA hardware Cranelift would call `fmaf`; kernels link no libm.
                    let p = self.b.ins().fmul(x, y);
                    self.b.ins().fadd(p, z)
                }
            }
            Expr::Mma(..) | Expr::LoadMatrix { .. } | Expr::Lane | Expr::Thread => {
                return Err("matrix instructions are GPU code (CUDA and HIP targets)".to_string())
            }
            Expr::DotBytes(..) | Expr::DotSignedBytes(..) | Expr::LaneSums(..) => {
                return Err(
                    "byte dot products and their lane sums are compiled by the LLVM backend \
                     only (kiln emits them for LLVM CPU targets)"
                        .to_string(),
                )
            }
            Expr::Cmp(c, a, b) => {
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                self.compare(*c, x, y)
            }
            Expr::Select(c, a, b) => {
                let (cv, x, y) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                self.select(cv, x, y)?
            }
            Expr::Cast(to, a) => {
                let x = self.expr(a)?;
                self.cast(*to, x)?
            }
            Expr::Bitcast(to, a) => {
                let x = self.expr(a)?;
                let ty = self.ty(x);
                let target = match (to, ty.is_vector()) {
                    (Elem::F32, false) => types::F32,
                    (Elem::I32, false) => types::I32,
                    (Elem::F32, true) => types::F32X4,
                    (Elem::I32, true) => types::I32X4,
                    (other, _) => return Err(format!("bitcast to {other:?}")),
                };
                let flags = if ty.is_vector() {
                    vflags()
                } else {
                    MemFlagsData::new()
                };
                self.b.ins().bitcast(target, flags, x)
            }
            Expr::ReduceLanes(op, a) => {
                let v = self.expr(a)?;
                let n = self.ty(v).lane_count();
                let float = self.ty(v).lane_type().is_float();
                let mut acc = self.b.ins().extractlane(v, 0);
                for l in 1..n {
                    let x = self.b.ins().extractlane(v, l as u8);
                    acc = match (op, float) {
                        (RedOp::Sum, true) => self.b.ins().fadd(acc, x),
                        (RedOp::Max, true) => self.b.ins().fmax(acc, x),
                        (RedOp::Sum, false) => self.b.ins().iadd(acc, x),
                        (RedOp::Max, false) => self.b.ins().smax(acc, x),
                    };
                }
                acc
            }
            Expr::Let { var, value, body } => {
                let v = self.expr(value)?;
                self.lets.insert(*var, v);
                self.expr(body)?
            }
        })
    }

    fn unary(&mut self, op: UOp, x: Value) -> R {
        let float = self.ty(x).lane_type() == types::F32;
        Ok(match (op, float) {
            (UOp::Neg, true) => self.b.ins().fneg(x),
            (UOp::Neg, false) => self.b.ins().ineg(x),
            (UOp::Abs, true) => self.b.ins().fabs(x),
            (UOp::Abs, false) => self.b.ins().iabs(x),
            (UOp::Sqrt, _) => self.b.ins().sqrt(x),
            (other, _) => {
                return Err(format!(
                    "{other:?} must be expanded by kernel::math before codegen"
                ))
            }
        })
    }

    fn binary(&mut self, op: BOp, x: Value, y: Value) -> R {
        let ty = self.ty(x);
        if ty.lane_type() == types::F32 {
            return Ok(match op {
                BOp::Add => self.b.ins().fadd(x, y),
                BOp::Sub => self.b.ins().fsub(x, y),
                BOp::Mul => self.b.ins().fmul(x, y),
                BOp::Div => self.b.ins().fdiv(x, y),
                BOp::Max => self.b.ins().fmax(x, y),
                BOp::Min => self.b.ins().fmin(x, y),
                other => return Err(format!("{other:?} on float operands")),
            });
        }
        if ty.is_vector() && matches!(op, BOp::Div | BOp::Rem) {
            return self.lane_by_lane(ty, x, y, |em, a, b| match op {
                BOp::Div => em.b.ins().sdiv(a, b),
                _ => em.b.ins().srem(a, b),
            });
        }
        // Vector shifts take a scalar amount; amounts that differ per lane are shifted lane
        // by lane before this (see `Expr::Binary`).
        let amount = |em: &mut Self, y: Value| {
            if em.ty(y).is_vector() {
                em.b.ins().extractlane(y, 0)
            } else {
                y
            }
        };
        Ok(match op {
            BOp::Add => self.b.ins().iadd(x, y),
            BOp::Sub => self.b.ins().isub(x, y),
            BOp::Mul => self.b.ins().imul(x, y),
            BOp::Div => self.b.ins().sdiv(x, y),
            BOp::Rem => self.b.ins().srem(x, y),
            BOp::Shl => {
                let a = amount(self, y);
                self.b.ins().ishl(x, a)
            }
            BOp::Shr => {
                let a = amount(self, y);
                self.b.ins().ushr(x, a)
            }
            BOp::And => self.b.ins().band(x, y),
            BOp::Or => self.b.ins().bor(x, y),
            BOp::Xor => self.b.ins().bxor(x, y),
            BOp::Max => self.b.ins().smax(x, y),
            BOp::Min => self.b.ins().smin(x, y),
        })
    }

    /// Cranelift has no vector integer division (nor has x86); divide lane by lane.
    fn lane_by_lane(
        &mut self,
        ty: Type,
        x: Value,
        y: Value,
        op: impl Fn(&mut Self, Value, Value) -> Value,
    ) -> R {
        let lanes: Vec<Value> = (0..ty.lane_count() as u8)
            .map(|l| {
                let a = self.b.ins().extractlane(x, l);
                let b = self.b.ins().extractlane(y, l);
                op(self, a, b)
            })
            .collect();
        self.build_vector(&lanes)
    }

    fn compare(&mut self, c: Cmp, x: Value, y: Value) -> Value {
        if self.ty(x).lane_type() == types::F32 {
            let cc = match c {
                Cmp::Eq => FloatCC::Equal,
                Cmp::Ne => FloatCC::NotEqual,
                Cmp::Lt => FloatCC::LessThan,
                Cmp::Le => FloatCC::LessThanOrEqual,
                Cmp::Gt => FloatCC::GreaterThan,
                Cmp::Ge => FloatCC::GreaterThanOrEqual,
            };
            let r = self.b.ins().fcmp(cc, x, y);
            if self.ty(r).is_vector() && self.ty(r) != types::I32X4 {
                return self.b.ins().bitcast(types::I32X4, vflags(), r);
            }
            return r;
        }
        let cc = match c {
            Cmp::Eq => IntCC::Equal,
            Cmp::Ne => IntCC::NotEqual,
            Cmp::Lt => IntCC::SignedLessThan,
            Cmp::Le => IntCC::SignedLessThanOrEqual,
            Cmp::Gt => IntCC::SignedGreaterThan,
            Cmp::Ge => IntCC::SignedGreaterThanOrEqual,
        };
        self.b.ins().icmp(cc, x, y)
    }

    fn select(&mut self, c: Value, x: Value, y: Value) -> R {
        let vt = self.ty(x);
        if !vt.is_vector() {
            return Ok(self.b.ins().select(c, x, y));
        }
        let mask = if self.ty(c).is_vector() {
            c
        } else {
            let m = self.bool_to_mask_lane(c);
            self.b.ins().splat(types::I32X4, m)
        };
        let mask = if vt == types::I32X4 {
            mask
        } else {
            self.b.ins().bitcast(vt, vflags(), mask)
        };
        Ok(self.b.ins().bitselect(mask, x, y))
    }

    fn cast(&mut self, to: Elem, x: Value) -> R {
        let ty = self.ty(x);
        let lanes = ty.lane_count() as u8;
        let from = ty.lane_type();
        Ok(match (to, from) {
            (Elem::Bool, types::F32) => {
                let z = self.b.ins().f32const(0.0);
                let z = self.splat_of(x, z);
                self.compare(Cmp::Ne, x, z)
            }
            (Elem::Bool, _) => {
                let z = self.b.ins().iconst(from, 0);
                let z = self.splat_of(x, z);
                self.compare(Cmp::Ne, x, z)
            }
            (Elem::F32, types::F32) | (Elem::I32, types::I32) | (Elem::I64, types::I64) => x,
            (Elem::F32, types::I8) => {
                let w = self.b.ins().uextend(types::I32, x);
                self.b.ins().fcvt_from_sint(types::F32, w)
            }
            (Elem::F32, _) => self.b.ins().fcvt_from_sint(vec_type(types::F32, lanes)?, x),
            (Elem::I32, types::F32) => self
                .b
                .ins()
                .fcvt_to_sint_sat(vec_type(types::I32, lanes)?, x),
            (Elem::I64, types::F32) if lanes == 1 => self.b.ins().fcvt_to_sint_sat(types::I64, x),
            (Elem::I32 | Elem::I64, types::I8) => {
                let t = if to == Elem::I32 {
                    types::I32
                } else {
                    types::I64
                };
                self.b.ins().uextend(t, x)
            }
            (Elem::I64, types::I32) if lanes == 1 => self.b.ins().sextend(types::I64, x),
            (Elem::I32, types::I64) if lanes == 1 => self.b.ins().ireduce(types::I32, x),
            (to, from) => return Err(format!("cast of {lanes} x {from} to {to:?}")),
        })
    }
}
