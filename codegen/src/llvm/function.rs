//! One kernel -> one exported LLVM function.
//!
//! The exported `kiln_<name>(args, dims, begin, end)` only unpacks the argument array and
//! calls an internal, always-inlined body whose buffer parameters are `noalias`: LLVM keeps
//! that knowledge as alias scopes when it inlines, which is what lets it keep loads in
//! registers across stores. The body loops over grid points `begin..end`, recovers each
//! point's grid index, and emits the kernel's statements.

use super::expr::{Emitter, Fail, V};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, BasicType};
use inkwell::values::{BasicMetadataValueEnum, IntValue};
use inkwell::AddressSpace;
use kiln_compiler::kernel::align::Alignment;
use kiln_compiler::kernel::{Expr, Kernel, LoopKind, RedOp, Stmt, VarId};
use kiln_compiler::CpuDesc;
use std::collections::HashMap;

pub fn emit_kernel<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    k: &Kernel,
    desc: &CpuDesc,
) -> Result<(), String> {
    emit(ctx, module, k, desc).map_err(|Fail(m)| m)
}

fn emit<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    k: &Kernel,
    desc: &CpuDesc,
) -> Result<(), Fail> {
    let ptr = ctx.ptr_type(AddressSpace::default());
    let i64t = ctx.i64_type();
    let void = ctx.void_type();

    let mut impl_params: Vec<BasicMetadataTypeEnum> = k.args.iter().map(|_| ptr.into()).collect();
    impl_params.extend::<[BasicMetadataTypeEnum; 3]>([ptr.into(), i64t.into(), i64t.into()]);
    let impl_fn = module.add_function(
        &format!("{}_body", k.name),
        void.fn_type(&impl_params, false),
        Some(Linkage::Private),
    );
    let noalias = ctx.create_enum_attribute(Attribute::get_named_enum_kind_id("noalias"), 0);
    for p in 0..=k.args.len() {
        impl_fn.add_attribute(AttributeLoc::Param(p as u32), noalias);
    }
    impl_fn.add_attribute(
        AttributeLoc::Function,
        ctx.create_enum_attribute(Attribute::get_named_enum_kind_id("alwaysinline"), 0),
    );
    cpu_attributes(ctx, impl_fn, desc);

    // Exported wrapper: unpack `args[i]` and call the body.
    let wrapper = module.add_function(
        &crate::symbol_name(&k.name),
        void.fn_type(&[ptr.into(), ptr.into(), i64t.into(), i64t.into()], false),
        None,
    );
    cpu_attributes(ctx, wrapper, desc);
    let b = ctx.create_builder();
    let entry = ctx.append_basic_block(wrapper, "entry");
    b.position_at_end(entry);
    let args_ptr = wrapper
        .get_nth_param(0)
        .ok_or_else(|| Fail::msg("wrapper params"))?
        .into_pointer_value();
    let mut call_args: Vec<BasicMetadataValueEnum> = Vec::new();
    for a in 0..k.args.len() {
        // SAFETY of the generated code: the runtime passes one pointer per kernel argument.
        let slot = unsafe {
            b.build_in_bounds_gep(ptr, args_ptr, &[i64t.const_int(a as u64, false)], "argp")?
        };
        call_args.push(b.build_load(ptr, slot, "arg")?.into());
    }
    for p in 1..4 {
        call_args.push(
            wrapper
                .get_nth_param(p)
                .ok_or_else(|| Fail::msg("wrapper params"))?
                .into(),
        );
    }
    b.build_call(impl_fn, &call_args, "")?;
    b.build_return(None)?;

    // The body.
    let entry = ctx.append_basic_block(impl_fn, "entry");
    b.position_at_end(entry);
    let param = |i: usize| {
        impl_fn
            .get_nth_param(i as u32)
            .ok_or_else(|| Fail::msg("body params"))
    };
    let bufs = (0..k.args.len())
        .map(|i| param(i).map(|p| p.into_pointer_value()))
        .collect::<Result<Vec<_>, _>>()?;
    let dims_ptr = param(k.args.len())?.into_pointer_value();
    let begin = param(k.args.len() + 1)?.into_int_value();
    let end = param(k.args.len() + 2)?.into_int_value();
    let mut em = Emitter {
        ctx,
        module,
        b,
        func: impl_fn,
        k,
        bufs,
        locals: Vec::new(),
        dims: Vec::new(),
        grid: Vec::new(),
        lets: HashMap::new(),
        vars: HashMap::new(),
        native_half: desc.half_conversions,
        byte_dot_bits: desc.byte_dot_bits,
        vnni_bits: desc.vnni_bits,
        byte_permute: false,
        dp4a: false,
        split_byte_runs: false,
        thread: None,
        gpu: None,
        lane: None,
        alignment: Alignment::of(k),
    };
    for l in &k.locals {
        let ty = super::expr::storage_type(ctx, l.dtype);
        let arr = ty.array_type(l.len);
        let p = em.b.build_alloca(arr, "local")?;
        if let Some(inst) = p.as_instruction() {
            inst.set_alignment(64).map_err(Fail::msg)?;
        }
        em.locals.push(p);
    }
    let extents = load_dims_and_grid(&mut em, k, dims_ptr)?;
    let count = em.b.build_int_sub(end, begin, "count")?;
    em.counted_loop(count, &mut |em, it| {
        let flat = em.b.build_int_add(begin, it, "flat")?;
        em.grid = decompose(em, flat, &extents)?;
        stmts(em, &k.body)
    })?;
    em.b.build_return(None)?;
    Ok(())
}

/// Tells LLVM which CPU both functions are for (inlining needs them to agree).
fn cpu_attributes<'ctx>(
    ctx: &'ctx Context,
    f: inkwell::values::FunctionValue<'ctx>,
    desc: &CpuDesc,
) {
    f.add_attribute(
        AttributeLoc::Function,
        ctx.create_string_attribute("target-cpu", &desc.llvm_cpu),
    );
    let features = super::llvm_features(desc);
    if !features.is_empty() {
        f.add_attribute(
            AttributeLoc::Function,
            ctx.create_string_attribute("target-features", &features),
        );
    }
}

pub(super) fn decompose<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    flat: IntValue<'ctx>,
    extents: &[IntValue<'ctx>],
) -> Result<Vec<IntValue<'ctx>>, Fail> {
    let mut idx = vec![flat; extents.len()];
    let mut rest = flat;
    for g in (0..extents.len()).rev() {
        if g == 0 {
            idx[g] = rest;
        } else {
            idx[g] = em.b.build_int_signed_rem(rest, extents[g], "gi")?;
            rest = em.b.build_int_signed_div(rest, extents[g], "gr")?;
        }
    }
    Ok(idx)
}

pub(super) fn stmts(em: &mut Emitter, body: &[Stmt]) -> Result<(), Fail> {
    for s in body {
        stmt(em, s)?;
    }
    Ok(())
}

pub(super) fn stmt(em: &mut Emitter, s: &Stmt) -> Result<(), Fail> {
    match s {
        Stmt::Let { var, value } => {
            let v = em.expr(value)?;
            em.lets.insert(*var, v);
        }
        Stmt::Decl { var, init } => {
            let v = em.expr(init)?;
            em.declare(*var, v)?;
        }
        Stmt::Assign { var, value } => {
            let v = em.expr(value)?;
            em.assign(*var, v)?;
        }
        Stmt::Store { buf, index, value } => {
            let i = em.expr(index)?.into_int_value();
            let v = em.expr(value)?;
            em.store(*buf, i, v)?;
        }
        Stmt::Prefetch { buf, index } => {
            let i = em.expr(index)?.into_int_value();
            em.prefetch(*buf, i)?;
        }
        Stmt::Copy {
            dst,
            dst_index,
            src,
            src_index,
            lanes,
        } => {
            let to = em.expr(dst_index)?.into_int_value();
            let from = em.expr(src_index)?.into_int_value();
            super::gpu::copies::copy(em, *dst, to, *src, from, *lanes)?;
        }
        Stmt::Await { in_flight } => super::gpu::copies::await_copies(em, *in_flight)?,
        Stmt::GroupMma { op, products } => super::gpu::warpgroup::group_mma(em, *op, products)?,
        Stmt::GroupWait { accs, pending } => super::gpu::warpgroup::group_wait(em, accs, *pending)?,
        Stmt::Loop {
            var,
            extent,
            kind,
            body,
            ..
        } => {
            let n = em.expr(extent)?.into_int_value();
            // Unroll loops are left to LLVM's unroller, which sees their literal extents.
            let _: &LoopKind = kind;
            em.counted_loop(n, &mut |em, it| {
                em.lets.insert(*var, it.into());
                stmts(em, body)
            })?;
        }
        Stmt::Reduce { .. } => {
            // Scalar form: vector reductions were rewritten by the vectorize pass.
            let i64t = em.ctx.i64_type();
            let (start, step) = (i64t.const_zero(), i64t.const_int(1, false));
            reduce_strided(em, std::slice::from_ref(s), start, step, 1)?;
        }
        Stmt::If {
            cond,
            then,
            otherwise,
        } => emit_if(em, cond, then, otherwise, &mut |em, body| stmts(em, body))?,
    }
    Ok(())
}

/// Loads the symbol values the kernel reads from `dims_ptr` into `em.dims`, then returns
/// the grid's extents.
pub(super) fn load_dims_and_grid<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    k: &Kernel,
    dims_ptr: inkwell::values::PointerValue<'ctx>,
) -> Result<Vec<IntValue<'ctx>>, Fail> {
    let i64t = em.ctx.i64_type();
    for d in 0..k.dims_read() {
        // SAFETY of the generated code: the runtime passes every symbol of the plan.
        let at = unsafe {
            em.b.build_in_bounds_gep(i64t, dims_ptr, &[i64t.const_int(d as u64, false)], "dimp")?
        };
        em.dims
            .push(em.b.build_load(i64t, at, "dim")?.into_int_value());
    }
    k.grid
        .iter()
        .map(|g| em.expr(g).map(|v| v.into_int_value()))
        .collect()
}

/// Emits a list of statements (the arms of an `If`).
pub(super) type EmitStmts<'f, 'a, 'ctx> =
    dyn FnMut(&mut Emitter<'a, 'ctx>, &[Stmt]) -> Result<(), Fail> + 'f;

/// `if cond { then } else { otherwise }`, each arm emitted by `arm`.
pub(super) fn emit_if<'a, 'ctx>(
    em: &mut Emitter<'a, 'ctx>,
    cond: &Expr,
    then: &[Stmt],
    otherwise: &[Stmt],
    arm: &mut EmitStmts<'_, 'a, 'ctx>,
) -> Result<(), Fail> {
    let c = em.expr(cond)?.into_int_value();
    let (bt, be, bj) = (em.block("then"), em.block("else"), em.block("join"));
    em.b.build_conditional_branch(c, bt, be)?;
    em.b.position_at_end(bt);
    arm(em, then)?;
    em.b.build_unconditional_branch(bj)?;
    em.b.position_at_end(be);
    arm(em, otherwise)?;
    em.b.build_unconditional_branch(bj)?;
    em.b.position_at_end(bj);
    Ok(())
}

/// For each `Reduce` of `group` (which share their extent), `acc = op over var in start,
/// start + step, .. < extent of value`, all in one loop: a GPU thread's share of a block's
/// reductions, or on CPUs the whole of one with start 0 and step 1. With `unroll` above 1
/// a first loop takes that many steps at a time, every step's value computed before any
/// is accumulated (so their loads are in flight together), and a second loop the rest;
/// the steps accumulate in the same order either way. Returns each reduction's
/// accumulator and op.
pub(super) fn reduce_strided<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    group: &[Stmt],
    start: IntValue<'ctx>,
    step: IntValue<'ctx>,
    unroll: u32,
) -> Result<Vec<(VarId, RedOp)>, Fail> {
    let mut parts = Vec::with_capacity(group.len());
    for s in group {
        let Stmt::Reduce { acc, op, .. } = s else {
            return Err(Fail::msg("a reduction group holds another statement"));
        };
        let init = match op {
            RedOp::Sum => em.ctx.f32_type().const_float(0.0),
            RedOp::Max => em.ctx.f32_type().const_float(f64::NEG_INFINITY),
        };
        em.declare(*acc, init.into())?;
        parts.push((*acc, *op));
    }
    let Some(Stmt::Reduce { extent, .. }) = group.first() else {
        return Ok(parts);
    };
    let n = em.expr(extent)?.into_int_value();
    let mut rest = start;
    if unroll > 1 {
        let i64t = em.ctx.i64_type();
        let wide =
            em.b.build_int_mul(step, i64t.const_int(unroll as u64, false), "wide")?;
        let behind = em.b.build_int_sub(wide, step, "behind")?;
        let end = em.b.build_int_sub(n, behind, "wide_end")?;
        rest = em.strided_loop(start, end, wide, &mut |em, it| {
            let mut at = it;
            let mut steps = Vec::with_capacity(unroll as usize);
            for _ in 0..unroll {
                steps.push(step_values(em, group, at)?);
                at = em.b.build_int_add(at, step, "at")?;
            }
            for values in steps {
                accumulate(em, group, values)?;
            }
            Ok(())
        })?;
    }
    em.strided_loop(rest, n, step, &mut |em, it| {
        let values = step_values(em, group, it)?;
        accumulate(em, group, values)
    })?;
    Ok(parts)
}

/// Each reduction of `group`'s value at index `at`.
fn step_values<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    group: &[Stmt],
    at: IntValue<'ctx>,
) -> Result<Vec<V<'ctx>>, Fail> {
    let mut values = Vec::with_capacity(group.len());
    for s in group {
        if let Stmt::Reduce { var, value, .. } = s {
            em.lets.insert(*var, at.into());
            values.push(em.expr(value)?);
        }
    }
    Ok(values)
}

/// `acc = op(acc, value)` for each reduction of `group` and its value.
fn accumulate<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    group: &[Stmt],
    values: Vec<V<'ctx>>,
) -> Result<(), Fail> {
    for (s, x) in group.iter().zip(values) {
        if let Stmt::Reduce { acc, op, .. } = s {
            let a = em.read_var(*acc)?;
            let r = em.reduce_step(*op, a, x)?;
            em.assign(*acc, r)?;
        }
    }
    Ok(())
}
