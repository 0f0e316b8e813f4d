//! Kernel-IR expressions -> LLVM values. Scalars and vectors go through the same code:
//! inkwell's float/int "math value" traits cover both, so each operation is written once.

use inkwell::basic_block::BasicBlock;
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::BasicTypeEnum;
use inkwell::values::{BasicValue, BasicValueEnum, FunctionValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use kiln_compiler::kernel::align::Alignment;
use kiln_compiler::kernel::gpu::two_sources as gpu_two_sources;
use kiln_compiler::kernel::{BOp, Buf, Cmp, Elem, Expr, Kernel, Lit, RedOp, UOp, VarId};
use kiln_ir::DType;
use std::collections::HashMap;

/// A failed emission; the backend wraps it with the kernel and target.
#[derive(Debug)]
pub struct Fail(pub String);

impl Fail {
    pub fn msg(m: impl ToString) -> Fail {
        Fail(m.to_string())
    }
}

impl From<BuilderError> for Fail {
    fn from(e: BuilderError) -> Fail {
        Fail(format!("LLVM builder: {e}"))
    }
}

pub type V<'ctx> = BasicValueEnum<'ctx>;

pub struct Emitter<'a, 'ctx> {
    pub ctx: &'ctx Context,
    pub module: &'a Module<'ctx>,
    pub b: Builder<'ctx>,
    pub func: FunctionValue<'ctx>,
    pub k: &'a Kernel,
    pub bufs: Vec<PointerValue<'ctx>>,
    pub locals: Vec<PointerValue<'ctx>>,
    pub dims: Vec<IntValue<'ctx>>,
    pub grid: Vec<IntValue<'ctx>>,
    pub lets: HashMap<VarId, V<'ctx>>,
    pub vars: HashMap<VarId, (PointerValue<'ctx>, BasicTypeEnum<'ctx>)>,
    /// The target converts f16 to f32 in hardware (see `convert.rs`).
    pub native_half: bool,
    /// Widest x86 byte multiply-adds, in bits (0: none); see `dot.rs`.
    pub byte_dot_bits: u32,
    /// Widest x86 VNNI byte dot products (`vpdpbusd`), in bits (0: none); see `dot.rs`.
    pub vnni_bits: u32,
    /// This thread's lane in its warp, in GPU kernels with explicit threads.
    pub lane: Option<IntValue<'ctx>>,
    /// This thread's index in its block, in GPU kernels with explicit threads.
    pub thread: Option<IntValue<'ctx>>,
    /// The GPU the kernel is for (`None` on CPUs): block barriers and background copies
    /// (`gpu/copies.rs`) are spelled per instruction set.
    pub gpu: Option<&'a super::gpu::GpuDesc>,
    /// What the kernel's indices are provably multiples of (`kernel::align`).
    pub alignment: Alignment<'a>,
    /// The target places a byte under constant bytes in one instruction (NVPTX `prmt`;
    /// see `gpu/byte_permute.rs`).
    pub byte_permute: bool,
    /// Byte dot products are NVPTX's `dp4a` (see `gpu/dp4a.rs`).
    pub dp4a: bool,
    /// Runs of 16 bytes or more load no wider than their proven alignment (see
    /// `gpu/word_runs.rs`).
    pub split_byte_runs: bool,
}

/// The in-memory element type of a buffer: half types are 16-bit integers in memory and
/// converted explicitly (see `convert.rs`), so no target needs native half support.
pub fn storage_type(ctx: &Context, d: DType) -> BasicTypeEnum<'_> {
    match d {
        DType::F32 => ctx.f32_type().into(),
        DType::F16 | DType::BF16 => ctx.i16_type().into(),
        DType::I32 => ctx.i32_type().into(),
        DType::I64 => ctx.i64_type().into(),
        DType::U8 => ctx.i8_type().into(),
    }
}

pub fn is_float(v: V) -> bool {
    match v {
        BasicValueEnum::FloatValue(_) => true,
        BasicValueEnum::VectorValue(x) => x.get_type().get_element_type().is_float_type(),
        _ => false,
    }
}

fn lanes_of(v: V) -> u32 {
    match v {
        BasicValueEnum::VectorValue(x) => x.get_type().get_size(),
        _ => 1,
    }
}

macro_rules! float_op {
    ($em:expr, $a:expr, $b:expr, $m:ident) => {
        match ($a, $b) {
            (BasicValueEnum::FloatValue(x), BasicValueEnum::FloatValue(y)) => {
                $em.b.$m(x, y, "")?.as_basic_value_enum()
            }
            (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => {
                $em.b.$m(x, y, "")?.as_basic_value_enum()
            }
            (x, y) => {
                return Err(Fail(format!(
                    "operand types differ: {} vs {}",
                    x.get_type(),
                    y.get_type()
                )))
            }
        }
    };
}

macro_rules! int_op {
    ($em:expr, $a:expr, $b:expr, $m:ident $(, $extra:expr)?) => {
        match ($a, $b) {
            (BasicValueEnum::IntValue(x), BasicValueEnum::IntValue(y)) => $em.b.$m(x, y, $($extra,)? "")?.as_basic_value_enum(),
            (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => $em.b.$m(x, y, $($extra,)? "")?.as_basic_value_enum(),
            (x, y) => return Err(Fail(format!("operand types differ: {} vs {}", x.get_type(), y.get_type()))),
        }
    };
}

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    pub fn block(&self, name: &str) -> BasicBlock<'ctx> {
        self.ctx.append_basic_block(self.func, name)
    }

    /// `c ? a : b` on a GPU where the arms read different bindings
    /// (`kernel::gpu::two_sources`), as a branch and a phi, so that only the chosen arm's
    /// loads run (`select` loads both). LLVM may turn it back into straight-line code, but
    /// as one load from a selected address (decode attention's PTX: `selp.b64` of the two
    /// addresses, then one `ld.global.nc.f32`).
    fn select_by_branch(&mut self, c: &Expr, a: &Expr, b: &Expr) -> Result<V<'ctx>, Fail> {
        let BasicValueEnum::IntValue(cond) = self.expr(c)? else {
            return Err(Fail::msg(
                "a select between two bindings on a vector condition",
            ));
        };
        let (pick_a, pick_b, join) = (
            self.block("pick_a"),
            self.block("pick_b"),
            self.block("picked"),
        );
        self.b.build_conditional_branch(cond, pick_a, pick_b)?;
        let mut arms = Vec::with_capacity(2);
        for (block, e) in [(pick_a, a), (pick_b, b)] {
            self.b.position_at_end(block);
            let v = self.expr(e)?;
            let end = self
                .b
                .get_insert_block()
                .ok_or_else(|| Fail::msg("no block after a select's arm"))?;
            self.b.build_unconditional_branch(join)?;
            arms.push((v, end));
        }
        self.b.position_at_end(join);
        let (x, y) = (arms[0], arms[1]);
        if x.0.get_type() != y.0.get_type() {
            return Err(Fail(format!(
                "a select's arms differ in type ({} and {})",
                x.0.get_type(),
                y.0.get_type()
            )));
        }
        let phi = self.b.build_phi(x.0.get_type(), "picked")?;
        phi.add_incoming(&[(&x.0, x.1), (&y.0, y.1)]);
        Ok(phi.as_basic_value())
    }

    /// `for it in 0..n { body(it) }` with a phi induction variable.
    pub fn counted_loop(
        &mut self,
        n: IntValue<'ctx>,
        body: &mut dyn FnMut(&mut Self, IntValue<'ctx>) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        let i64t = self.ctx.i64_type();
        self.strided_loop(i64t.const_zero(), n, i64t.const_int(1, false), body)?;
        Ok(())
    }

    /// `for (it = start; it < end; it += step) body(it)`: GPU threads share a loop's
    /// iterations this way (start = thread index, step = thread count). Returns `it` as the
    /// loop leaves it (the first value not below `end`, or `start`), where a second loop
    /// can go on.
    pub fn strided_loop(
        &mut self,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: IntValue<'ctx>,
        body: &mut dyn FnMut(&mut Self, IntValue<'ctx>) -> Result<(), Fail>,
    ) -> Result<IntValue<'ctx>, Fail> {
        let i64t = self.ctx.i64_type();
        let pre = self
            .b
            .get_insert_block()
            .ok_or_else(|| Fail::msg("no insert block"))?;
        let (head, bodyb, exit) = (self.block("loop"), self.block("body"), self.block("exit"));
        self.b.build_unconditional_branch(head)?;
        self.b.position_at_end(head);
        let phi = self.b.build_phi(i64t, "i")?;
        phi.add_incoming(&[(&start, pre)]);
        let i = phi.as_basic_value().into_int_value();
        let go = self
            .b
            .build_int_compare(IntPredicate::SLT, i, end, "more")?;
        self.b.build_conditional_branch(go, bodyb, exit)?;
        self.b.position_at_end(bodyb);
        body(self, i)?;
        let next = self.b.build_int_add(i, step, "next")?;
        let latch = self
            .b
            .get_insert_block()
            .ok_or_else(|| Fail::msg("no insert block"))?;
        self.b.build_unconditional_branch(head)?;
        phi.add_incoming(&[(&next, latch)]);
        self.b.position_at_end(exit);
        Ok(i)
    }

    /// Mutable variables live in entry-block allocas; mem2reg makes them registers.
    pub fn declare(&mut self, var: VarId, init: V<'ctx>) -> Result<(), Fail> {
        let ty = init.get_type();
        let slot = match self.vars.get(&var) {
            Some((p, _)) => *p,
            None => {
                let here = self
                    .b
                    .get_insert_block()
                    .ok_or_else(|| Fail::msg("no insert block"))?;
                let entry = self
                    .func
                    .get_first_basic_block()
                    .ok_or_else(|| Fail::msg("no entry"))?;
                match entry.get_first_instruction() {
                    Some(first) => self.b.position_before(&first),
                    None => self.b.position_at_end(entry),
                }
                let p = self.b.build_alloca(ty, "var")?;
                self.b.position_at_end(here);
                self.vars.insert(var, (p, ty));
                p
            }
        };
        self.b.build_store(slot, init)?;
        Ok(())
    }

    pub fn assign(&mut self, var: VarId, v: V<'ctx>) -> Result<(), Fail> {
        let (p, _) = *self
            .vars
            .get(&var)
            .ok_or_else(|| Fail(format!("assignment to undeclared v{var}")))?;
        self.b.build_store(p, v)?;
        Ok(())
    }

    pub fn read_var(&mut self, var: VarId) -> Result<V<'ctx>, Fail> {
        if let Some((p, ty)) = self.vars.get(&var) {
            return Ok(self.b.build_load(*ty, *p, "v")?);
        }
        self.lets
            .get(&var)
            .copied()
            .ok_or_else(|| Fail(format!("v{var} is read before it is defined")))
    }

    pub(super) fn base(&self, buf: Buf) -> (PointerValue<'ctx>, DType) {
        match buf {
            Buf::Arg(i) => (self.bufs[i as usize], self.k.args[i as usize].dtype),
            Buf::Local(i) => (self.locals[i as usize], self.k.locals[i as usize].dtype),
        }
    }

    pub(super) fn element_ptr(
        &self,
        buf: Buf,
        index: IntValue<'ctx>,
    ) -> Result<(PointerValue<'ctx>, DType), Fail> {
        let (base, dtype) = self.base(buf);
        let ty = storage_type(self.ctx, dtype);
        // SAFETY of the generated code: indices come from the kernel's own bounds.
        let p = unsafe { self.b.build_in_bounds_gep(ty, base, &[index], "ep")? };
        Ok((p, dtype))
    }

    /// The alignment in bytes of a read of `lanes` elements of `buf` from `index`: the
    /// element's size, or, on GPUs, what `kernel::align` proves of the index (buffers and
    /// shared locals start at multiples of 16 bytes), up to the read's size. LLVM cannot
    /// always see it through swizzled indices, and a read it believes misaligned is split.
    fn proven_alignment(&self, buf: Buf, index: &Expr, lanes: u8) -> u32 {
        let size = self.base(buf).1.size_bytes() as u64;
        let starts_aligned = match buf {
            Buf::Arg(_) => self.gpu.is_some(),
            Buf::Local(l) => self.k.locals[l as usize].shared,
        };
        if lanes < 2 || !starts_aligned {
            return size as u32;
        }
        let most = (size * lanes as u64).min(16);
        let mut bytes = size;
        while bytes * 2 <= most && self.alignment.multiple_of(index, bytes * 2 / size) {
            bytes *= 2;
        }
        bytes as u32
    }

    pub fn load(
        &mut self,
        buf: Buf,
        index: IntValue<'ctx>,
        lanes: u8,
        align: u32,
    ) -> Result<V<'ctx>, Fail> {
        let (p, dtype) = self.element_ptr(buf, index)?;
        let elem = storage_type(self.ctx, dtype);
        let ty: BasicTypeEnum = if lanes > 1 {
            vec_of(elem, lanes as u32)
        } else {
            elem
        };
        let raw = self.b.build_load(ty, p, "ld")?;
        if let Some(inst) = raw.as_instruction_value() {
            inst.set_alignment(align).map_err(Fail::msg)?;
        }
        self.widen_from_storage(raw, dtype)
    }

    /// `e`'s `(buf, index, count)` where it is `e::word_le` of a whole i16 or i32 over a
    /// byte buffer, which `word_le` loads at once.
    fn loads_word<'e>(&self, e: &'e Expr) -> Option<(Buf, &'e Expr, u8)> {
        e.word_le()
            .filter(|&(buf, _, count)| matches!(count, 2 | 4) && self.base(buf).1 == DType::U8)
    }

    /// `e::word_le`: `count` bytes from byte `index` of a byte buffer read as one
    /// little-endian integer (zero-extended to i32), in one misaligned load.
    fn word_le(&mut self, buf: Buf, index: IntValue<'ctx>, count: u8) -> Result<V<'ctx>, Fail> {
        let (p, _) = self.element_ptr(buf, index)?;
        let ty = match count {
            2 => self.ctx.i16_type(),
            4 => self.ctx.i32_type(),
            _ => return Err(Fail(format!("a {count}-byte word"))),
        };
        let raw = self.b.build_load(ty, p, "word")?;
        if let Some(inst) = raw.as_instruction_value() {
            inst.set_alignment(1).map_err(Fail::msg)?;
        }
        let w = raw.into_int_value();
        Ok(if count == 4 {
            w.into()
        } else {
            self.b
                .build_int_z_extend(w, self.ctx.i32_type(), "wordz")?
                .into()
        })
    }

    pub fn store(&mut self, buf: Buf, index: IntValue<'ctx>, v: V<'ctx>) -> Result<(), Fail> {
        let (p, dtype) = self.element_ptr(buf, index)?;
        let raw = self.narrow_to_storage(v, dtype)?;
        let st = self.b.build_store(p, raw)?;
        st.set_alignment(dtype.size_bytes() as u32)
            .map_err(Fail::msg)?;
        Ok(())
    }

    /// Fetches the cache line of element `index` of `buf` for a read soon (`Stmt::Prefetch`).
    /// The address is computed without `inbounds`: it may lie past the buffer, which a
    /// prefetch, unlike a load, may touch.
    pub fn prefetch(&mut self, buf: Buf, index: IntValue<'ctx>) -> Result<(), Fail> {
        let (base, dtype) = self.base(buf);
        let ty = storage_type(self.ctx, dtype);
        // SAFETY of the generated code: the pointer is only prefetched, never dereferenced.
        let p = unsafe { self.b.build_gep(ty, base, &[index], "pf")? };
        let f = Intrinsic::find("llvm.prefetch")
            .and_then(|i| i.get_declaration(self.module, &[p.get_type().into()]))
            .ok_or_else(|| Fail::msg("LLVM has no llvm.prefetch"))?;
        let i32t = self.ctx.i32_type();
        // A read (0), kept in every cache level (locality 3), of data (1).
        let (read, keep, data) = (
            i32t.const_zero(),
            i32t.const_int(3, false),
            i32t.const_int(1, false),
        );
        self.b
            .build_call(f, &[p.into(), read.into(), keep.into(), data.into()], "")?;
        Ok(())
    }

    pub fn intrinsic(
        &self,
        name: &str,
        types: &[BasicTypeEnum<'ctx>],
        args: &[V<'ctx>],
    ) -> Result<V<'ctx>, Fail> {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, types))
            .ok_or_else(|| Fail(format!("LLVM has no intrinsic {name}")))?;
        let args: Vec<_> = args.iter().map(|&a| a.into()).collect();
        match self.b.build_call(f, &args, "")?.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(v) => Ok(v),
            _ => Err(Fail(format!("{name} returned nothing"))),
        }
    }

    pub fn splat(&mut self, v: V<'ctx>, lanes: u32) -> Result<V<'ctx>, Fail> {
        let vt = vec_of(v.get_type(), lanes).into_vector_type();
        let i32t = self.ctx.i32_type();
        let one = self
            .b
            .build_insert_element(vt.get_poison(), v, i32t.const_zero(), "s")?;
        let mask =
            inkwell::types::VectorType::const_vector(&vec![i32t.const_zero(); lanes as usize]);
        Ok(self
            .b
            .build_shuffle_vector(one, vt.get_poison(), mask, "splat")?
            .into())
    }

    /// An integer constant of `v`'s type (scalar or splatted vector).
    pub fn int_like(&mut self, v: V<'ctx>, c: u64) -> Result<V<'ctx>, Fail> {
        let elem = match v.get_type() {
            BasicTypeEnum::VectorType(t) => t.get_element_type().into_int_type(),
            t => t.into_int_type(),
        };
        let s = elem.const_int(c, false).into();
        match lanes_of(v) {
            1 => Ok(s),
            n => self.splat(s, n),
        }
    }

    pub fn float_like(&mut self, v: V<'ctx>, c: f64) -> Result<V<'ctx>, Fail> {
        let s = self.ctx.f32_type().const_float(c).into();
        match lanes_of(v) {
            1 => Ok(s),
            n => self.splat(s, n),
        }
    }

    pub fn reduce_step(&mut self, op: RedOp, a: V<'ctx>, x: V<'ctx>) -> Result<V<'ctx>, Fail> {
        match op {
            RedOp::Sum => Ok(float_op!(self, a, x, build_float_add)),
            RedOp::Max => self.intrinsic("llvm.maxnum", &[a.get_type()], &[a, x]),
        }
    }

    pub fn expr(&mut self, e: &Expr) -> Result<V<'ctx>, Fail> {
        Ok(match e {
            Expr::Lit(Lit::F32(v)) => self.ctx.f32_type().const_float(*v as f64).into(),
            Expr::Lit(Lit::I32(v)) => self
                .ctx
                .i32_type()
                .const_int(*v as u32 as u64, false)
                .into(),
            Expr::Lit(Lit::I64(v)) => self.ctx.i64_type().const_int(*v as u64, true).into(),
            Expr::Lit(Lit::Bool(v)) => self.ctx.bool_type().const_int(*v as u64, false).into(),
            Expr::Var(v) => self.read_var(*v)?,
            Expr::Dim(d) => (*self
                .dims
                .get(*d as usize)
                .ok_or_else(|| Fail(format!("dim{d} not loaded")))?)
            .into(),
            Expr::GridIdx(g) => (*self
                .grid
                .get(*g as usize)
                .ok_or_else(|| Fail(format!("grid axis {g} out of range")))?)
            .into(),
            Expr::Load { buf, index, lanes } => match self.byte_run(*buf, index, *lanes)? {
                Some(v) => v,
                None => {
                    let i = self.expr(index)?.into_int_value();
                    let align = self.proven_alignment(*buf, index, *lanes);
                    self.load(*buf, i, *lanes, align)?
                }
            },
            Expr::Splat { value, lanes } => {
                let v = self.expr(value)?;
                self.splat(v, *lanes as u32)?
            }
            Expr::Lanes(xs) => {
                let vals = xs
                    .iter()
                    .map(|x| self.expr(x))
                    .collect::<Result<Vec<_>, _>>()?;
                let vt = vec_of(vals[0].get_type(), vals.len() as u32).into_vector_type();
                let mut acc = vt.get_poison();
                for (l, v) in vals.into_iter().enumerate() {
                    acc = self.b.build_insert_element(
                        acc,
                        v,
                        self.ctx.i32_type().const_int(l as u64, false),
                        "lane",
                    )?;
                }
                acc.into()
            }
            Expr::Extract { vector, lane } => {
                let v = self.expr(vector)?.into_vector_value();
                self.b.build_extract_element(
                    v,
                    self.ctx.i32_type().const_int(*lane as u64, false),
                    "x",
                )?
            }
            Expr::Unary(op, a) => {
                let x = self.expr(a)?;
                self.unary(*op, x)?
            }
            Expr::Binary(op, a, b) => match self.loads_word(e) {
                // A byte under constant bytes is one permute where the target has them.
                None => match self.permuted_bytes(e)? {
                    Some(v) => v,
                    None => {
                        let (x, y) = (self.expr(a)?, self.expr(b)?);
                        self.binary(*op, x, y)?
                    }
                },
                Some((buf, index, count)) => {
                    let i = self.expr(index)?.into_int_value();
                    self.word_le(buf, i, count)?
                }
            },
            Expr::Fma(a, b, c) => {
                let (x, y, z) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                // fmuladd fuses only where the target has FMA, so no target needs `fmaf`.
                self.intrinsic("llvm.fmuladd", &[x.get_type()], &[x, y, z])?
            }
            Expr::DotBytes(acc, a, b, None) if self.dp4a => self.dp4a(acc, a, b, false)?,
            Expr::DotSignedBytes(acc, a, b) if self.dp4a => self.dp4a(acc, a, b, true)?,
            Expr::DotBytes(acc, a, b, w) => {
                let (s, x, y) = (self.expr(acc)?, self.expr(a)?, self.expr(b)?);
                self.dot_bytes(s, x, y, w.as_deref())?
            }
            Expr::DotSignedBytes(acc, a, b) => {
                let (s, x, y) = (self.expr(acc)?, self.expr(a)?, self.expr(b)?);
                self.dot_signed_bytes(s, x, y)?
            }
            Expr::Mma(op, a, b, c) => {
                let (x, y, z) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                super::gpu::matrix::multiply_accumulate(self, *op, x, y, z)?
            }
            Expr::LoadMatrix { buf, index, count } => {
                let i = self.expr(index)?.into_int_value();
                super::gpu::matrix::load_matrix(self, *buf, i, *count)?
            }
            Expr::Lane => self
                .lane
                .ok_or_else(|| Fail::msg("a lane index outside a GPU kernel of explicit threads"))?
                .into(),
            Expr::Thread => self
                .thread
                .ok_or_else(|| {
                    Fail::msg("a thread index outside a GPU kernel of explicit threads")
                })?
                .into(),
            Expr::Cmp(c, a, b) => {
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                self.compare(*c, x, y)?
            }
            Expr::Select(c, a, b) if self.gpu.is_some() && gpu_two_sources(a, b) => {
                self.select_by_branch(c, a, b)?
            }
            Expr::Select(c, a, b) => {
                let (cv, x, y) = (self.expr(c)?, self.expr(b)?, self.expr(a)?);
                match cv {
                    BasicValueEnum::IntValue(ci) => self.b.build_select(ci, y, x, "sel")?,
                    BasicValueEnum::VectorValue(cv) => self.b.build_select(cv, y, x, "sel")?,
                    other => {
                        return Err(Fail(format!(
                            "select condition of type {}",
                            other.get_type()
                        )))
                    }
                }
            }
            Expr::Cast(to, a) => {
                let x = self.expr(a)?;
                self.cast(*to, x)?
            }
            Expr::Bitcast(to, a) => {
                let x = self.expr(a)?;
                let elem: BasicTypeEnum = match to {
                    Elem::F32 => self.ctx.f32_type().into(),
                    Elem::I32 => self.ctx.i32_type().into(),
                    other => return Err(Fail(format!("bitcast to {other:?}"))),
                };
                let ty = match lanes_of(x) {
                    1 => elem,
                    n => vec_of(elem, n),
                };
                self.b.build_bit_cast(x, ty, "bc")?
            }
            Expr::ReduceLanes(RedOp::Sum, inner)
                if self.dp4a && dp4a_from_zero(inner).is_some() =>
            {
                let (a, b, signed) = dp4a_from_zero(inner).expect("checked");
                self.dp4a_sum(a, b, signed)?
            }
            Expr::ReduceLanes(op, a) => {
                let x = self.expr(a)?;
                self.reduce_lanes(*op, x)?
            }
            Expr::LaneSums(xs, groups) => {
                let vals = xs
                    .iter()
                    .map(|x| self.expr(x))
                    .collect::<Result<Vec<_>, _>>()?;
                self.lane_sums(&vals, *groups as u32)?
            }
            Expr::Let { var, value, body } => {
                let v = self.expr(value)?;
                self.lets.insert(*var, v);
                self.expr(body)?
            }
        })
    }

    fn reduce_lanes(&mut self, op: RedOp, x: V<'ctx>) -> Result<V<'ctx>, Fail> {
        match op {
            // Integer sums are exact in any order: a tree, not a chain.
            RedOp::Sum if !is_float(x) => {
                self.intrinsic("llvm.vector.reduce.add", &[x.get_type()], &[x])
            }
            RedOp::Max if !is_float(x) => {
                self.intrinsic("llvm.vector.reduce.smax", &[x.get_type()], &[x])
            }
            RedOp::Sum => {
                let start = self.ctx.f32_type().const_float(-0.0).into();
                self.intrinsic("llvm.vector.reduce.fadd", &[x.get_type()], &[start, x])
            }
            RedOp::Max => self.intrinsic("llvm.vector.reduce.fmax", &[x.get_type()], &[x]),
        }
    }

    fn unary(&mut self, op: UOp, x: V<'ctx>) -> Result<V<'ctx>, Fail> {
        Ok(match (op, is_float(x)) {
            (UOp::Neg, true) => match x {
                BasicValueEnum::FloatValue(f) => self.b.build_float_neg(f, "neg")?.into(),
                BasicValueEnum::VectorValue(v) => self.b.build_float_neg(v, "neg")?.into(),
                _ => unreachable!("is_float"),
            },
            (UOp::Neg, false) => {
                let z = self.int_like(x, 0)?;
                int_op!(self, z, x, build_int_sub)
            }
            (UOp::Abs, true) => self.intrinsic("llvm.fabs", &[x.get_type()], &[x])?,
            (UOp::Abs, false) => {
                let f = self.ctx.bool_type().const_zero().into();
                self.intrinsic("llvm.abs", &[x.get_type()], &[x, f])?
            }
            (UOp::Sqrt, _) => self.intrinsic("llvm.sqrt", &[x.get_type()], &[x])?,
            (UOp::HalfBits, false) => {
                let i16t = self.ctx.i16_type().into();
                let bits = self.retype(x, i16t, "trunc")?;
                self.widen_from_storage(bits, DType::F16)?
            }
            (other, _) => {
                return Err(Fail(format!(
                    "{other:?} must be expanded by kernel::math before codegen"
                )))
            }
        })
    }

    pub fn binary_pub(&mut self, op: BOp, x: V<'ctx>, y: V<'ctx>) -> Result<V<'ctx>, Fail> {
        self.binary(op, x, y)
    }

    pub fn compare_pub(&mut self, c: Cmp, x: V<'ctx>, y: V<'ctx>) -> Result<V<'ctx>, Fail> {
        self.compare(c, x, y)
    }

    fn binary(&mut self, op: BOp, x: V<'ctx>, y: V<'ctx>) -> Result<V<'ctx>, Fail> {
        if is_float(x) {
            return Ok(match op {
                BOp::Add => float_op!(self, x, y, build_float_add),
                BOp::Sub => float_op!(self, x, y, build_float_sub),
                BOp::Mul => float_op!(self, x, y, build_float_mul),
                BOp::Div => float_op!(self, x, y, build_float_div),
                BOp::Max => self.intrinsic("llvm.maxnum", &[x.get_type()], &[x, y])?,
                BOp::Min => self.intrinsic("llvm.minnum", &[x.get_type()], &[x, y])?,
                other => return Err(Fail(format!("{other:?} on float operands"))),
            });
        }
        Ok(match op {
            BOp::Add => int_op!(self, x, y, build_int_add),
            BOp::Sub => int_op!(self, x, y, build_int_sub),
            BOp::Mul => int_op!(self, x, y, build_int_mul),
            BOp::Div => int_op!(self, x, y, build_int_signed_div),
            BOp::Rem => int_op!(self, x, y, build_int_signed_rem),
            BOp::Shl => int_op!(self, x, y, build_left_shift),
            BOp::Shr => int_op!(self, x, y, build_right_shift, false),
            BOp::And => int_op!(self, x, y, build_and),
            BOp::Or => int_op!(self, x, y, build_or),
            BOp::Xor => int_op!(self, x, y, build_xor),
            BOp::Max => self.intrinsic("llvm.smax", &[x.get_type()], &[x, y])?,
            BOp::Min => self.intrinsic("llvm.smin", &[x.get_type()], &[x, y])?,
        })
    }

    fn compare(&mut self, c: Cmp, x: V<'ctx>, y: V<'ctx>) -> Result<V<'ctx>, Fail> {
        if is_float(x) {
            let p = match c {
                Cmp::Eq => FloatPredicate::OEQ,
                Cmp::Ne => FloatPredicate::UNE,
                Cmp::Lt => FloatPredicate::OLT,
                Cmp::Le => FloatPredicate::OLE,
                Cmp::Gt => FloatPredicate::OGT,
                Cmp::Ge => FloatPredicate::OGE,
            };
            return Ok(match (x, y) {
                (BasicValueEnum::FloatValue(a), BasicValueEnum::FloatValue(b)) => {
                    self.b.build_float_compare(p, a, b, "fc")?.into()
                }
                (BasicValueEnum::VectorValue(a), BasicValueEnum::VectorValue(b)) => {
                    self.b.build_float_compare(p, a, b, "fc")?.into()
                }
                _ => return Err(Fail("compare of mismatched operands".into())),
            });
        }
        let p = match c {
            Cmp::Eq => IntPredicate::EQ,
            Cmp::Ne => IntPredicate::NE,
            Cmp::Lt => IntPredicate::SLT,
            Cmp::Le => IntPredicate::SLE,
            Cmp::Gt => IntPredicate::SGT,
            Cmp::Ge => IntPredicate::SGE,
        };
        Ok(match (x, y) {
            (BasicValueEnum::IntValue(a), BasicValueEnum::IntValue(b)) => {
                self.b.build_int_compare(p, a, b, "ic")?.into()
            }
            (BasicValueEnum::VectorValue(a), BasicValueEnum::VectorValue(b)) => {
                self.b.build_int_compare(p, a, b, "ic")?.into()
            }
            _ => return Err(Fail("compare of mismatched operands".into())),
        })
    }

    fn cast(&mut self, to: Elem, x: V<'ctx>) -> Result<V<'ctx>, Fail> {
        let n = lanes_of(x);
        let target: BasicTypeEnum = match to {
            Elem::F32 => self.ctx.f32_type().into(),
            Elem::I32 => self.ctx.i32_type().into(),
            Elem::I64 => self.ctx.i64_type().into(),
            Elem::Bool => self.ctx.bool_type().into(),
        };
        let ty = if n > 1 { vec_of(target, n) } else { target };
        if x.get_type() == ty {
            return Ok(x);
        }
        let from_bits = scalar_int_bits(x);
        Ok(match (to, is_float(x), from_bits) {
            (Elem::Bool, true, _) => {
                let z = self.float_like(x, 0.0)?;
                self.compare(Cmp::Ne, x, z)?
            }
            (Elem::Bool, false, _) => {
                let z = self.int_like(x, 0)?;
                self.compare(Cmp::Ne, x, z)?
            }
            (Elem::F32, false, Some(1)) => match x {
                BasicValueEnum::IntValue(i) => self
                    .b
                    .build_unsigned_int_to_float(i, ty.into_float_type(), "u2f")?
                    .into(),
                BasicValueEnum::VectorValue(v) => self
                    .b
                    .build_unsigned_int_to_float(v, ty.into_vector_type(), "u2f")?
                    .into(),
                _ => unreachable!(),
            },
            (Elem::F32, false, _) => match x {
                BasicValueEnum::IntValue(i) => self
                    .b
                    .build_signed_int_to_float(i, ty.into_float_type(), "i2f")?
                    .into(),
                BasicValueEnum::VectorValue(v) => self
                    .b
                    .build_signed_int_to_float(v, ty.into_vector_type(), "i2f")?
                    .into(),
                _ => unreachable!(),
            },
            // Saturating: NaN -> 0 and out-of-range -> the nearest bound, as the interpreter.
            // Clamp, convert, then zero NaNs: this vectorises (LLVM's `fptosi.sat` on
            // vectors is scalarised lane by lane on x86).
            (_, true, _) => {
                let (lo, hi) = if to == Elem::I64 {
                    (-9.223_372e18, 9.223_371_5e18)
                } else {
                    (-2_147_483_648.0, 2_147_483_520.0)
                };
                let (lo, hi) = (self.float_like(x, lo)?, self.float_like(x, hi)?);
                let clamped = self.binary(BOp::Max, x, lo)?;
                let clamped = self.binary(BOp::Min, clamped, hi)?;
                let int = match clamped {
                    BasicValueEnum::FloatValue(f) => self
                        .b
                        .build_float_to_signed_int(f, ty.into_int_type(), "f2i")?
                        .into(),
                    BasicValueEnum::VectorValue(v) => self
                        .b
                        .build_float_to_signed_int(v, ty.into_vector_type(), "f2i")?
                        .into(),
                    _ => unreachable!("is_float"),
                };
                let nan = self.compare(Cmp::Ne, x, x)?;
                let zero = self.int_like(int, 0)?;
                match nan {
                    BasicValueEnum::IntValue(c) => self.b.build_select(c, zero, int, "nan0")?,
                    BasicValueEnum::VectorValue(c) => self.b.build_select(c, zero, int, "nan0")?,
                    _ => unreachable!("compare yields i1"),
                }
            }
            (_, false, Some(bits)) => {
                let want = if to == Elem::I64 { 64 } else { 32 };
                match (x, bits.cmp(&want)) {
                    (_, std::cmp::Ordering::Equal) => x,
                    (BasicValueEnum::IntValue(i), std::cmp::Ordering::Less) if bits == 1 => self
                        .b
                        .build_int_z_extend(i, ty.into_int_type(), "z")?
                        .into(),
                    (BasicValueEnum::IntValue(i), std::cmp::Ordering::Less) => self
                        .b
                        .build_int_s_extend(i, ty.into_int_type(), "s")?
                        .into(),
                    (BasicValueEnum::IntValue(i), _) => self
                        .b
                        .build_int_truncate(i, ty.into_int_type(), "t")?
                        .into(),
                    (BasicValueEnum::VectorValue(v), std::cmp::Ordering::Less) if bits == 1 => self
                        .b
                        .build_int_z_extend(v, ty.into_vector_type(), "z")?
                        .into(),
                    (BasicValueEnum::VectorValue(v), std::cmp::Ordering::Less) => self
                        .b
                        .build_int_s_extend(v, ty.into_vector_type(), "s")?
                        .into(),
                    (BasicValueEnum::VectorValue(v), _) => self
                        .b
                        .build_int_truncate(v, ty.into_vector_type(), "t")?
                        .into(),
                    _ => return Err(Fail("cast of a non-numeric value".into())),
                }
            }
            _ => return Err(Fail(format!("cannot cast {} to {to:?}", x.get_type()))),
        })
    }
}

fn scalar_int_bits(v: V) -> Option<u32> {
    match v.get_type() {
        BasicTypeEnum::IntType(t) => Some(t.get_bit_width()),
        BasicTypeEnum::VectorType(t) => match t.get_element_type() {
            BasicTypeEnum::IntType(i) => Some(i.get_bit_width()),
            _ => None,
        },
        _ => None,
    }
}

pub fn vec_of(elem: BasicTypeEnum<'_>, lanes: u32) -> BasicTypeEnum<'_> {
    match elem {
        BasicTypeEnum::FloatType(f) => f.vec_type(lanes).into(),
        BasicTypeEnum::IntType(i) => i.vec_type(lanes).into(),
        other => other,
    }
}

/// `(a, b, a signed)` where `e` is a byte dot product from a zero accumulator (whose lanes'
/// sum `dp4a` chains through one register).
fn dp4a_from_zero(e: &Expr) -> Option<(&Expr, &Expr, bool)> {
    let zero = |acc: &Expr| match acc {
        Expr::Splat { value, .. } => matches!(**value, Expr::Lit(Lit::I32(0))),
        _ => false,
    };
    match e {
        Expr::DotBytes(acc, a, b, None) if zero(acc) => Some((a, b, false)),
        Expr::DotSignedBytes(acc, a, b) if zero(acc) => Some((a, b, true)),
        _ => None,
    }
}
