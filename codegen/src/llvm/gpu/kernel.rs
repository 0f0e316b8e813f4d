//! One kernel -> one GPU entry point (see the module doc for the ABI).
//!
//! Explicit threads: every thread of block `b` runs the whole body for the points `b, b +
//! block count, ...`, reading its index from `Expr::Thread` and its lane from `Expr::Lane`;
//! shared locals lie in the block's dynamic shared memory and `Stmt::Await` is the barrier
//! (`copies.rs`). A thread per point:
//! each thread takes the points `id, id + total threads, ...` (`id` its global thread
//! index) and runs the body on its own. A block per point: each block takes the points
//! `b, b + block count, ...`; statements reached by every thread run in every thread (stores
//! of the same value to the same place included, which is harmless), shared `Map` loops and
//! `Reduce`s give thread `t` the iterations `t, t + T, ...`, and a barrier follows each
//! shared loop, since the statements after it may read what other threads stored.

use super::super::expr::{Emitter, Fail, V};
use super::super::function::{decompose, emit_if, load_dims_and_grid, reduce_strided, stmt, stmts};
use super::{primitives, GpuArch, GpuDesc};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, BasicType};
use inkwell::values::{GlobalValue, IntValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};
use kiln_compiler::kernel::align::Alignment;
use kiln_compiler::kernel::gpu::{
    explicit_threads, has_shared_loop, launch_shape, matrix_warp, max_reduction_group,
    reduce_unroll, reduction_group, SharedLayout,
};
use kiln_compiler::kernel::{Kernel, LoopKind, RedOp, Stmt};
use std::collections::HashMap;

pub fn emit<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    k: &Kernel,
    desc: &GpuDesc,
) -> Result<(), Fail> {
    let launch = launch_shape(k);
    let global = ctx.ptr_type(primitives::global(desc));
    let i64t = ctx.i64_type();
    // The buffers, the symbol values, and the buffers' offsets (module doc).
    let params: Vec<BasicMetadataTypeEnum> = (0..k.args.len() + 2).map(|_| global.into()).collect();
    let func = module.add_function(
        &crate::symbol_name(&k.name),
        ctx.void_type().fn_type(&params, false),
        None,
    );
    func.set_call_conventions(desc.kernel_cc);
    if desc.arch == GpuArch::Nvptx {
        super::nvptx::annotate_occupancy(
            ctx,
            module,
            func,
            k,
            launch.threads,
            launch.shared_bytes,
        )?;
    }
    if desc.arch == GpuArch::Amdgpu {
        // The launch never exceeds this block size; telling LLVM lets it budget registers.
        func.add_attribute(
            AttributeLoc::Function,
            ctx.create_string_attribute(
                "amdgpu-flat-work-group-size",
                &format!("1,{}", launch.threads),
            ),
        );
    }
    let noalias = ctx.create_enum_attribute(Attribute::get_named_enum_kind_id("noalias"), 0);
    // Every buffer starts at a multiple of 64 bytes (arena slots, weights, inputs), so
    // vector loads at aligned offsets can be single wide loads.
    let align = ctx.create_enum_attribute(Attribute::get_named_enum_kind_id("align"), 16);
    for p in 0..k.args.len() {
        func.add_attribute(AttributeLoc::Param(p as u32), noalias);
        func.add_attribute(AttributeLoc::Param(p as u32), align);
    }
    let b = ctx.create_builder();
    let entry = ctx.append_basic_block(func, "entry");
    b.position_at_end(entry);
    let param = |i: usize| {
        func.get_nth_param(i as u32)
            .ok_or_else(|| Fail::msg("kernel params"))
    };
    let bufs = (0..k.args.len())
        .map(|i| param(i).map(|p| p.into_pointer_value()))
        .collect::<Result<Vec<_>, _>>()?;
    let dims_ptr = param(k.args.len())?.into_pointer_value();
    let offsets_ptr = param(k.args.len() + 1)?.into_pointer_value();
    let mut em = Emitter {
        ctx,
        module,
        b,
        func,
        k,
        bufs,
        locals: Vec::new(),
        dims: Vec::new(),
        grid: Vec::new(),
        lets: HashMap::new(),
        vars: HashMap::new(),
        // PTX and AMDGPU convert halves in one instruction on every supported GPU.
        native_half: true,
        // CPU byte multiply-adds; NVPTX has `dp4a` (the `dp4a` flag), AMD widens for now.
        byte_dot_bits: 0,
        vnni_bits: 0,
        lane: None,
        byte_permute: desc.arch == super::GpuArch::Nvptx,
        dp4a: desc.arch == super::GpuArch::Nvptx,
        split_byte_runs: desc.arch == super::GpuArch::Nvptx,
        thread: None,
        gpu: Some(desc),
        alignment: Alignment::of(k),
    };
    // The symbols and the offsets come from the host, not from earlier grids, so they are
    // read before the wait.
    let extents = load_dims_and_grid(&mut em, k, dims_ptr)?;
    offset_buffers(&mut em, desc, offsets_ptr)?;
    // Counted here rather than taken from the host, which then passes the same arguments
    // run after run while the symbols change (a CUDA graph's nodes stay as they are).
    let mut points = i64t.const_int(1, false);
    for &e in &extents {
        points = em.b.build_int_mul(points, e, "points")?;
    }
    let g = Gpu::new(&mut em, desc, launch.threads)?;
    let explicit = explicit_threads(&k.body);
    primitives::await_prior_grids(&mut em, desc)?;
    let layout = SharedLayout::of(k);
    let shared = match layout.bytes {
        0 => None,
        _ => Some(aligned_base(
            &mut em,
            dynamic_shared(ctx, module, desc, k),
            layout.align,
        )?),
    };
    for (at, l) in k.locals.iter().enumerate() {
        let ty = super::super::expr::storage_type(ctx, l.dtype).array_type(l.len);
        if l.shared != explicit {
            return Err(Fail::msg(if l.shared {
                "a shared local in a kernel without explicit threads"
            } else {
                "a thread's own local array in a kernel of explicit threads (only shared \
                 locals are allocated there)"
            }));
        }
        if !l.shared && launch.block_per_point() {
            return Err(Fail::msg(
                "kernel-local arrays in a block-per-point kernel need shared memory, which \
                 the GPU lowering allocates only for kernels of explicit threads",
            ));
        }
        em.locals.push(match (shared, layout.offsets[at]) {
            (Some(base), Some(offset)) => {
                let offset = i64t.const_int(offset as u64, false);
                // SAFETY: the offset lies inside the launch's dynamic shared memory, which
                // the plan sizes to every shared local (`SharedLayout`).
                unsafe {
                    em.b.build_in_bounds_gep(ctx.i8_type(), base, &[offset], "shared")?
                }
            }
            _ => em.b.build_alloca(ty, "local")?,
        });
    }
    let warp = matrix_warp(&k.body);
    if warp.is_some() && !explicit {
        return Err(Fail::msg(
            "matrix instructions in a kernel without explicit threads (a warp's lanes must \
             reach them together)",
        ));
    }
    if explicit {
        if let Some(warp) = warp {
            check_warp(warp, desc)?;
        }
        // Every thread runs the body for the block's points `b, b + blocks, ...`.
        let w = i64t.const_int(desc.warp as u64, false);
        em.thread = Some(g.thread);
        em.lane = Some(em.b.build_int_unsigned_rem(g.thread, w, "lane")?);
        em.strided_loop(g.block, points, g.blocks, &mut |em, p| {
            em.grid = decompose(em, p, &extents)?;
            stmts(em, &k.body)
        })?;
    } else if launch.block_per_point() {
        let scratch = scratch_array(ctx, module, k, desc);
        let (start, step) = (g.block, g.blocks);
        em.strided_loop(start, points, step, &mut |em, p| {
            em.grid = decompose(em, p, &extents)?;
            block_stmts(em, &g, scratch, &k.body)
        })?;
    } else {
        let t = i64t.const_int(launch.threads as u64, false);
        let first = em.b.build_int_mul(g.block, t, "b0")?;
        let first = em.b.build_int_add(first, g.thread, "p0")?;
        let step = em.b.build_int_mul(g.blocks, t, "stride")?;
        em.strided_loop(first, points, step, &mut |em, p| {
            em.grid = decompose(em, p, &extents)?;
            stmts(em, &k.body)
        })?;
    }
    em.b.build_return(None)?;
    Ok(())
}

/// Moves each buffer that a launch may bind to a model output (`BufferParam::offset`) by
/// its offset from the launch's table (one `i64` of bytes for each such buffer, in order;
/// the others have none: each load is latency at the kernel's start, see
/// `primitives::load_at_start`).
/// The runtime passes a carried output's storage and the rows held as its offset, so a
/// replayed launch's arguments stay the same while the rows grow
/// (`kiln_runtime::manifest::Variant::buffer_offsets`). The offsets are multiples of 16
/// bytes (`kiln_runtime::carry::ROW_ALIGN`); masked so, they show LLVM that the buffers keep
/// the alignment their parameters declare, which its load vectoriser needs.
fn offset_buffers<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    desc: &GpuDesc,
    table: PointerValue<'ctx>,
) -> Result<(), Fail> {
    let (i8t, i64t) = (em.ctx.i8_type(), em.ctx.i64_type());
    let mut entry = 0;
    for i in 0..em.bufs.len() {
        if !em.k.args[i].offset {
            continue;
        }
        let offset = primitives::load_at_start(em, desc, table, entry)?;
        entry += 1;
        let offset =
            em.b.build_and(offset, i64t.const_int(!15, true), "offset16")?;
        // SAFETY of the generated code: the offset lies inside the buffer's allocation.
        em.bufs[i] = unsafe {
            em.b.build_in_bounds_gep(i8t, em.bufs[i], &[offset], "buf")?
        };
    }
    Ok(())
}

fn check_warp(warp: u32, desc: &GpuDesc) -> Result<(), Fail> {
    if warp != desc.warp {
        return Err(Fail(format!(
            "the kernel's matrix instructions need a warp of {warp}, the target's is {}",
            desc.warp
        )));
    }
    Ok(())
}

/// An array of type `ty`, one per block, in shared memory: 16-byte aligned, so copies and
/// vector reads at multiples of 16 bytes are single instructions.
fn shared_array<'ctx>(
    module: &Module<'ctx>,
    desc: &GpuDesc,
    ty: inkwell::types::ArrayType<'ctx>,
    name: &str,
) -> GlobalValue<'ctx> {
    let g = module.add_global(ty, Some(AddressSpace::from(desc.shared_as)), name);
    g.set_linkage(Linkage::Internal);
    g.set_initializer(&ty.get_undef());
    g.set_alignment(16);
    g
}

/// The block's dynamic shared memory, which holds the kernel's shared locals: its size is
/// the launch's (`GpuLaunch::shared_bytes`), so it may exceed what a static declaration may
/// (48 KiB on CUDA).
fn dynamic_shared<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    desc: &GpuDesc,
    k: &Kernel,
) -> PointerValue<'ctx> {
    let ty = ctx.i8_type().array_type(0);
    let name = format!("kiln_{}_shared", k.name);
    let g = module.add_global(ty, Some(AddressSpace::from(desc.shared_as)), &name);
    g.set_linkage(Linkage::External);
    g.set_alignment(16);
    g.as_pointer_value()
}

/// `base` rounded up to a multiple of `align` bytes (the launch gives 16, and `align - 16`
/// bytes more where more is needed: `SharedLayout`).
fn aligned_base<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    base: PointerValue<'ctx>,
    align: u32,
) -> Result<PointerValue<'ctx>, Fail> {
    if align <= 16 {
        return Ok(base);
    }
    let i64t = em.ctx.i64_type();
    let at = em.b.build_ptr_to_int(base, i64t, "base")?;
    let behind = em.b.build_int_neg(at, "behind")?;
    let pad =
        em.b.build_and(behind, i64t.const_int(align as u64 - 1, false), "pad")?;
    // SAFETY: the launch gives `align - 16` bytes past the locals for this padding.
    Ok(unsafe {
        em.b.build_in_bounds_gep(em.ctx.i8_type(), base, &[pad], "aligned")?
    })
}

/// Per-launch values every statement may need.
struct Gpu<'d, 'ctx> {
    desc: &'d GpuDesc,
    threads: u32,
    thread: IntValue<'ctx>,
    block: IntValue<'ctx>,
    blocks: IntValue<'ctx>,
}

impl<'d, 'ctx> Gpu<'d, 'ctx> {
    fn new(em: &mut Emitter<'_, 'ctx>, desc: &'d GpuDesc, threads: u32) -> Result<Self, Fail> {
        Ok(Gpu {
            desc,
            threads,
            thread: primitives::thread_index(em, desc)?,
            block: primitives::block_index(em, desc)?,
            blocks: primitives::block_count(em, desc)?,
        })
    }

    fn barrier(&self, em: &mut Emitter<'_, 'ctx>) -> Result<(), Fail> {
        primitives::barrier(em, self.desc)
    }

    fn shuffle_xor(
        &self,
        em: &mut Emitter<'_, 'ctx>,
        x: V<'ctx>,
        offset: u32,
    ) -> Result<V<'ctx>, Fail> {
        primitives::shuffle_xor(em, self.desc, self.thread, x, offset)
    }

    /// Combines every thread's `xs[r]` with `ops[r]`, for each `r`; all threads get the
    /// results. The reductions' shuffles interleave and share one pass through shared memory
    /// (reduction `r`'s partials at `[r * warps + warp]`). Deterministic: the same tree of
    /// operations every time.
    fn block_reduce(
        &self,
        em: &mut Emitter<'_, 'ctx>,
        scratch: GlobalValue<'ctx>,
        ops: &[RedOp],
        mut xs: Vec<V<'ctx>>,
    ) -> Result<Vec<V<'ctx>>, Fail> {
        let mut off = self.desc.warp / 2;
        while off > 0 {
            for (x, &op) in xs.iter_mut().zip(ops) {
                let y = self.shuffle_xor(em, *x, off)?;
                *x = em.reduce_step(op, *x, y)?;
            }
            off /= 2;
        }
        let i64t = em.ctx.i64_type();
        let f32t = em.ctx.f32_type();
        let warps = (self.threads / self.desc.warp) as u64;
        let warp = i64t.const_int(self.desc.warp as u64, false);
        let lane = em.b.build_int_unsigned_rem(self.thread, warp, "lane")?;
        let wid = em.b.build_int_unsigned_div(self.thread, warp, "warp")?;
        let first =
            em.b.build_int_compare(IntPredicate::EQ, lane, i64t.const_zero(), "lane0")?;
        let (write, join) = (em.block("red_write"), em.block("red_join"));
        em.b.build_conditional_branch(first, write, join)?;
        em.b.position_at_end(write);
        let base = scratch.as_pointer_value();
        for (r, x) in xs.iter().enumerate() {
            let at = i64t.const_int(r as u64 * warps, false);
            let at = em.b.build_int_add(at, wid, "at")?;
            // SAFETY of the generated code: r * warps + warp index < the array's length
            // (`scratch_array` sizes it for the kernel's largest group).
            let slot = unsafe { em.b.build_in_bounds_gep(f32t, base, &[at], "slot")? };
            em.b.build_store(slot, *x)?;
        }
        em.b.build_unconditional_branch(join)?;
        em.b.position_at_end(join);
        self.barrier(em)?;
        let mut totals = Vec::with_capacity(xs.len());
        for (r, &op) in ops.iter().enumerate() {
            let mut total: Option<V<'ctx>> = None;
            for w in 0..warps {
                let at = i64t.const_int(r as u64 * warps + w, false);
                // SAFETY of the generated code: as above.
                let slot = unsafe { em.b.build_in_bounds_gep(f32t, base, &[at], "s")? };
                let v = em.b.build_load(f32t, slot, "part")?;
                total = Some(match total {
                    None => v,
                    Some(t) => em.reduce_step(op, t, v)?,
                });
            }
            totals.push(total.ok_or_else(|| Fail::msg("a block of no warps"))?);
        }
        // The next reduction overwrites the array only after everyone has read it.
        self.barrier(em)?;
        Ok(totals)
    }
}

/// `group` (see `reduction_group`): one strided loop over the threads computes every
/// reduction's partial result, then one block-wide combination gives every thread the
/// totals.
fn reduce_together<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    g: &Gpu<'_, 'ctx>,
    scratch: GlobalValue<'ctx>,
    group: &[Stmt],
    threads: IntValue<'ctx>,
) -> Result<(), Fail> {
    let parts = reduce_strided(em, group, g.thread, threads, reduce_unroll())?;
    let mut xs = Vec::with_capacity(parts.len());
    for (acc, _) in &parts {
        xs.push(em.read_var(*acc)?);
    }
    let ops: Vec<RedOp> = parts.iter().map(|(_, op)| *op).collect();
    let totals = g.block_reduce(em, scratch, &ops, xs)?;
    for ((acc, _), total) in parts.iter().zip(totals) {
        em.assign(*acc, total)?;
    }
    Ok(())
}

/// The block's array of per-warp partial results, in shared memory.
fn scratch_array<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    k: &Kernel,
    desc: &GpuDesc,
) -> GlobalValue<'ctx> {
    let launch = launch_shape(k);
    let group = max_reduction_group(&k.body).max(1) as u32;
    let ty = ctx
        .f32_type()
        .array_type(launch.threads / desc.warp * group);
    shared_array(module, desc, ty, &format!("kiln_{}_partials", k.name))
}

/// Statements every thread of the block reaches (see the module doc).
fn block_stmts<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    g: &Gpu<'_, 'ctx>,
    scratch: GlobalValue<'ctx>,
    body: &[Stmt],
) -> Result<(), Fail> {
    let i64t = em.ctx.i64_type();
    let threads = i64t.const_int(g.threads as u64, false);
    let mut at = 0;
    while at < body.len() {
        let s = &body[at];
        at += 1;
        if !has_shared_loop(s) {
            stmt(em, s)?;
            continue;
        }
        match s {
            Stmt::Loop {
                var,
                extent,
                kind: LoopKind::Map,
                body,
                ..
            } => {
                let n = em.expr(extent)?.into_int_value();
                em.strided_loop(g.thread, n, threads, &mut |em, it| {
                    em.lets.insert(*var, it.into());
                    stmts(em, body)
                })?;
                g.barrier(em)?;
            }
            Stmt::Loop {
                var, extent, body, ..
            } => {
                let n = em.expr(extent)?.into_int_value();
                em.counted_loop(n, &mut |em, it| {
                    em.lets.insert(*var, it.into());
                    block_stmts(em, g, scratch, body)
                })?;
            }
            Stmt::Reduce { .. } => {
                let group = &body[at - 1..at - 1 + reduction_group(&body[at - 1..])];
                at += group.len() - 1;
                reduce_together(em, g, scratch, group, threads)?;
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => emit_if(em, cond, then, otherwise, &mut |em, body| {
                block_stmts(em, g, scratch, body)
            })?,
            other => stmt(em, other)?,
        }
    }
    Ok(())
}
