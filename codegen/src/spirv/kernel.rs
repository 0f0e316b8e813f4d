//! The module's shared interface and one compute entry point per kernel.
//!
//! The grid maps onto workgroups exactly as on the other GPU targets
//! (`kiln_compiler::kernel::gpu::launch_shape`): a thread per point, or a workgroup per
//! point whose invocations share `Map` loops and `Reduce`s. Entry points loop over points
//! with a grid stride, so any workgroup count is correct. A block-wide reduction combines
//! the invocations' partial results in workgroup memory as a fixed tree, so results do not
//! depend on the device's subgroup size.

use super::builder::{Spv, V};
use super::emitter::Subgroups;
use super::emitter::{Abi, Emitter};
use super::groups::Groups;
use super::Fail;
use kiln_compiler::kernel::align::{run_loads, Alignment};
use kiln_compiler::kernel::gpu::{
    has_shared_loop, launch_shape, reduce_unroll_or, reduction_group, GpuLaunch, BLOCK_THREADS,
    MAX_BLOCK_REDUCTIONS,
};
use kiln_compiler::kernel::ranges::Ranges;
use kiln_compiler::kernel::{BOp, Buf, Cmp, Expr, Kernel, Lit, LoopKind, RedOp, Stmt, VType};
use kiln_ir::DType;
use rspirv::dr::{InsertPoint, Instruction, Operand};
use rspirv::spirv::{
    BuiltIn, Decoration, ExecutionMode, ExecutionModel, FunctionControl, GroupOperation,
    MemorySemantics, Op, Scope, StorageClass, Word,
};
use std::collections::HashMap;

/// Creates the globals every entry point uses: the launch-parameter block (`points`, then
/// `dims` symbol values; binding 0), the invocation and workgroup ids, the reduction array, and the
/// types of a binding (storage buffers of 32-bit words, or of 2- or 4-word vectors; each
/// kernel declares its own bindings).
pub fn abi(s: &mut Spv, dims: u32, threads: u32, subgroups: bool) -> Abi {
    let i64t = s.ty(VType::I64);
    let f32t = s.ty(VType::F32);
    let mut view = |words: u8| {
        let element = s.ty(VType::I32.with_lanes(words));
        let array = s.b.type_runtime_array(element);
        let stride = Operand::LiteralBit32(4 * words as u32);
        s.b.decorate(array, Decoration::ArrayStride, [stride]);
        let buffer = s.b.type_struct([array]);
        s.b.decorate(buffer, Decoration::Block, []);
        s.b.member_decorate(buffer, 0, Decoration::Offset, [Operand::LiteralBit32(0)]);
        s.ptr(StorageClass::StorageBuffer, buffer)
    };
    let buffer_ptr = [view(1), view(2), view(4)];

    let n = s.u32_const(dims.max(1));
    let dims_arr = s.b.type_array(i64t, n);
    s.b.decorate(
        dims_arr,
        Decoration::ArrayStride,
        [Operand::LiteralBit32(8)],
    );
    let params_t = s.b.type_struct([i64t, dims_arr]);
    s.b.decorate(params_t, Decoration::Block, []);
    s.b.member_decorate(params_t, 0, Decoration::Offset, [Operand::LiteralBit32(0)]);
    s.b.member_decorate(params_t, 1, Decoration::Offset, [Operand::LiteralBit32(8)]);
    let params_ptr = s.ptr(StorageClass::StorageBuffer, params_t);
    let params =
        s.b.variable(params_ptr, None, StorageClass::StorageBuffer, None);
    s.b.decorate(
        params,
        Decoration::DescriptorSet,
        [Operand::LiteralBit32(0)],
    );
    s.b.decorate(params, Decoration::Binding, [Operand::LiteralBit32(0)]);
    s.b.decorate(params, Decoration::NonWritable, []);

    let u32t = s.u32_ty();
    let uvec3 = s.b.type_vector(u32t, 3);
    let in_ptr = s.ptr(StorageClass::Input, uvec3);
    let mut builtin = |which: BuiltIn| {
        let v = s.b.variable(in_ptr, None, StorageClass::Input, None);
        s.b.decorate(v, Decoration::BuiltIn, [Operand::BuiltIn(which)]);
        v
    };
    let local_id = builtin(BuiltIn::LocalInvocationId);
    let group_id = builtin(BuiltIn::WorkgroupId);
    let group_count = builtin(BuiltIn::NumWorkgroups);
    let subgroups = subgroups.then(|| {
        let u32_in = s.ptr(StorageClass::Input, u32t);
        let mut scalar = |which: BuiltIn| {
            let v = s.b.variable(u32_in, None, StorageClass::Input, None);
            s.b.decorate(v, Decoration::BuiltIn, [Operand::BuiltIn(which)]);
            v
        };
        Subgroups {
            lane: scalar(BuiltIn::SubgroupLocalInvocationId),
            id: scalar(BuiltIn::SubgroupId),
            count: scalar(BuiltIn::NumSubgroups),
        }
    });

    // Room for the largest group of reductions a block combines at once.
    let len = s.u32_const(threads * MAX_BLOCK_REDUCTIONS as u32);
    let arr = s.b.type_array(f32t, len);
    let arr_ptr = s.ptr(StorageClass::Workgroup, arr);
    let partials = s.b.variable(arr_ptr, None, StorageClass::Workgroup, None);
    Abi {
        buffer_ptr,
        params,
        subgroups,
        local_id,
        group_id,
        group_count,
        partials,
    }
}

impl Abi {
    /// The globals an entry point with `bindings` uses, for its interface (SPIR-V 1.4 and
    /// later list them all; earlier versions list only inputs).
    pub fn globals(&self, bindings: &[Word], all: bool) -> Vec<Word> {
        let mut v = vec![self.local_id, self.group_id, self.group_count];
        if let Some(sg) = &self.subgroups {
            v.extend([sg.lane, sg.id, sg.count]);
        }
        if all {
            v.extend(bindings);
            v.push(self.params);
            v.push(self.partials);
        }
        v
    }
}

/// Kernel `k`'s storage buffers, binding `i + 1` for argument `i` (binding 0 holds the
/// launch parameters). Every one is `Restrict` (kiln
/// never binds one buffer to two arguments of a launch) and the ones the kernel only reads
/// are `NonWritable`: what lets a driver keep loads in registers across stores and read
/// weights through its read-only cache, as `noalias` does for the LLVM GPU targets.
///
/// `views[i]`: the words per array element of argument `i`'s binding ([`views`]).
fn bindings(s: &mut Spv, abi: &Abi, k: &Kernel, views: &[u8]) -> Vec<Word> {
    k.args
        .iter()
        .zip(views)
        .enumerate()
        .map(|(i, (a, &words))| {
            let ptr = abi.buffer_ptr[words.trailing_zeros() as usize];
            let v = s.b.variable(ptr, None, StorageClass::StorageBuffer, None);
            s.b.decorate(v, Decoration::DescriptorSet, [Operand::LiteralBit32(0)]);
            s.b.decorate(
                v,
                Decoration::Binding,
                [Operand::LiteralBit32(i as u32 + 1)],
            );
            s.b.decorate(v, Decoration::Restrict, []);
            if !a.writes {
                s.b.decorate(v, Decoration::NonWritable, []);
            }
            v
        })
        .collect()
}

/// How each argument's binding is typed: 32-bit words (1), or vectors of 2 or 4 words when
/// the kernel only reads the argument and reads runs of that many words at indices proven
/// aligned to the run (`kernel::align`): such a run is one wide load, where a word array
/// would take one load per word (which drivers do not merge: nothing tells them the
/// index is aligned). The executor binds every range in multiples of 16 bytes from offsets
/// aligned to 64, so a vector element never reaches past its binding.
/// A binding whose narrow reads share 16-byte groups (`groups`) has the 4-word view too.
fn views(k: &Kernel, align: &Alignment, groups: &Groups) -> Vec<u8> {
    let mut views = vec![1u8; k.args.len()];
    for (buf, lanes, index) in run_loads(k) {
        let Buf::Arg(a) = buf else { continue };
        let arg = &k.args[a as usize];
        let words = run_words(arg.dtype, lanes);
        if !arg.writes && words > 1 && align.multiple_of(index, lanes as u64) {
            views[a as usize] = views[a as usize].max(words);
        }
    }
    for (a, v) in views.iter_mut().enumerate() {
        if groups.any(a as u32) {
            *v = 4;
        }
    }
    views
}

/// Words in a run of `lanes` elements of `dtype` that a wide load can decode (f32, i32,
/// f16 and bf16 runs of at most 4 lanes filling 2 or 4 words); 0 for any other run.
pub fn run_words(dtype: DType, lanes: u8) -> u8 {
    let bytes = lanes as usize * dtype.size_bytes();
    let decodable = matches!(dtype, DType::F32 | DType::I32 | DType::F16 | DType::BF16);
    match bytes {
        8 | 16 if decodable && lanes <= 4 => (bytes / 4) as u8,
        _ => 0,
    }
}

/// Adds kernel `k` as entry point `kiln_<name>`.
pub fn emit(s: &mut Spv, abi: &Abi, k: &Kernel, all_globals: bool) -> Result<(), Fail> {
    let launch = launch_shape(k);
    let explicit = kiln_compiler::kernel::gpu::explicit_threads(&k.body);
    // Each entry point declares its own workgroup size; the module's reduction array is
    // sized for `BLOCK_THREADS`, and the tree through it halves a power of two.
    if launch.threads > BLOCK_THREADS || !launch.threads.is_power_of_two() {
        return Err(Fail(format!(
            "{} threads per block; SPIR-V kernels take a power of two up to {BLOCK_THREADS}",
            launch.threads
        )));
    }
    let align = Alignment::of(k);
    let groups = Groups::of(k, &align);
    let views = views(k, &align, &groups);
    let bindings = bindings(s, abi, k, &views);
    // Shared locals live in workgroup memory, declared at module scope (before the
    // function, where `OpVariable` would land in its block).
    let shared = shared_locals(s, k, explicit)?;
    let void = s.b.type_void();
    let fn_ty = s.b.type_function(void, []);
    let f =
        s.b.begin_function(void, None, FunctionControl::NONE, fn_ty)?;
    let name = crate::symbol_name(&k.name);
    s.b.name(f, name.clone());
    s.b.begin_block(None)?;
    let start = s.b.id();
    s.b.branch(start)?;
    s.b.begin_block(Some(start))?;
    s.begin_numbering();
    let locals_needed = !k.locals.is_empty();
    if locals_needed && launch.block_per_point() && !explicit {
        return Err(Fail::msg(
            "kernel-local arrays in a block-per-point kernel need workgroup memory, which \
             the GPU lowering does not allocate yet",
        ));
    }
    let mut em = Emitter {
        s,
        abi,
        k,
        bindings: bindings.clone(),
        views,
        groups,
        align,
        locals: Vec::new(),
        thread: None,
        dims: Vec::new(),
        grid: Vec::new(),
        lets: HashMap::new(),
        ranges: match explicit {
            true => Ranges::new(&k.grid).with_threads(launch.threads),
            false => Ranges::new(&k.grid),
        },
        vars: HashMap::new(),
        narrowed: HashMap::new(),
        next_var: k.next_var,
        fn_vars: Vec::new(),
    };
    for (l, shared) in k.locals.iter().zip(&shared) {
        let local = match shared {
            Some(v) => (*v, StorageClass::Workgroup),
            None => {
                let arr = local_array(em.s, l);
                (em.function_var(arr), StorageClass::Function)
            }
        };
        em.locals.push(local);
    }
    for d in 0..k.dims_read() {
        let v = em.param_i64(&[1, d])?;
        em.dims.push(v);
    }
    let points = em.param_i64(&[0])?;
    let extents = k
        .grid
        .iter()
        .map(|g| em.expr(g))
        .collect::<Result<Vec<_>, _>>()?;
    let g = Ids {
        thread: em.builtin_x(abi.local_id)?,
        block: em.builtin_x(abi.group_id)?,
        blocks: em.builtin_x(abi.group_count)?,
        launch,
    };
    // The runtime launches at most one block per point (`plan::block_count`), so a loop
    // over the points steps by at most their count plus a block, and ends below twice that.
    let points_hi = em.ranges.of(&grid_points(&k.grid)).and_then(|r| r.hi);
    let narrow = points_hi
        .and_then(|h| h.checked_mul(2)?.checked_add(launch.threads as i64))
        .is_some_and(|v| v <= i32::MAX as i64);
    if explicit {
        // Every invocation runs the whole body for the workgroup's points; the body's
        // `Await`s are its barriers (as on the LLVM GPU targets).
        em.thread = Some(g.thread);
        em.strided_loop(g.block, points, g.blocks, narrow, &mut |em, p| {
            em.grid = decompose(em, p, &k.grid, &extents, narrow)?;
            stmts(em, &k.body)
        })?;
    } else if launch.block_per_point() {
        em.strided_loop(g.block, points, g.blocks, narrow, &mut |em, p| {
            em.grid = decompose(em, p, &k.grid, &extents, narrow)?;
            block_stmts(em, &g, &k.body)
        })?;
    } else {
        let t = em.s.i64(launch.threads as i64);
        let first = em.index_op(Op::IMul, g.block, t, narrow)?;
        let first = em.index_op(Op::IAdd, first, g.thread, narrow)?;
        let step = em.index_op(Op::IMul, g.blocks, t, narrow)?;
        em.strided_loop(first, points, step, narrow, &mut |em, p| {
            em.grid = decompose(em, p, &k.grid, &extents, narrow)?;
            stmts(em, &k.body)
        })?;
    }
    em.s.b.ret()?;
    em.place_vars()?;
    s.b.end_function()?;
    let mut interface = abi.globals(&bindings, all_globals);
    if all_globals {
        interface.extend(shared.iter().flatten());
    }
    s.b.entry_point(ExecutionModel::GLCompute, f, name, interface);
    s.b.execution_mode(f, ExecutionMode::LocalSize, [launch.threads, 1, 1]);
    Ok(())
}

/// The element array of local `l` (f32 or i32 elements).
fn local_array(s: &mut Spv, l: &kiln_compiler::kernel::LocalBuf) -> Word {
    let elem = match l.dtype {
        DType::I32 => VType::I32,
        _ => VType::F32,
    };
    let et = s.ty(elem);
    let n = s.u32_const(l.len);
    s.b.type_array(et, n)
}

/// A workgroup variable for each shared local of `k` (kernels of explicit threads only).
fn shared_locals(s: &mut Spv, k: &Kernel, explicit: bool) -> Result<Vec<Option<Word>>, Fail> {
    k.locals
        .iter()
        .map(|l| {
            if !l.shared {
                return Ok(None);
            }
            if !explicit {
                return Err(Fail::msg(
                    "a shared local in a kernel without explicit threads",
                ));
            }
            let arr = local_array(s, l);
            let ptr = s.ptr(StorageClass::Workgroup, arr);
            Ok(Some(s.b.variable(ptr, None, StorageClass::Workgroup, None)))
        })
        .collect()
}

/// Per-launch values every statement may need.
struct Ids {
    thread: V,
    block: V,
    blocks: V,
    launch: GpuLaunch,
}

impl Emitter<'_, '_> {
    /// Launch-parameter member at access-chain `path`, an i64.
    fn param_i64(&mut self, path: &[u32]) -> Result<V, Fail> {
        let i64t = self.s.ty(VType::I64);
        let ptr_t = self.s.ptr(StorageClass::StorageBuffer, i64t);
        let idx: Vec<Word> = path.iter().map(|&p| self.s.i32(p as i32).id).collect();
        let ptr = self.s.b.access_chain(ptr_t, None, self.abi.params, idx)?;
        self.load_ptr(ptr, VType::I64)
    }

    /// Component x of a `uvec3` built-in (an unsigned index or count), zero-extended to an
    /// i64. Not sign-extended: Mesa's llvmpipe (Debian 12) compiled `thread < 64` of the
    /// sign-extended invocation index to false for every invocation (`thread >= 64`, and the
    /// same test on 32 bits, were right), so decode attention stored nothing.
    fn builtin_x(&mut self, var: Word) -> Result<V, Fail> {
        let u32t = self.s.u32_ty();
        let uvec3 = self.s.b.type_vector(u32t, 3);
        let v = self.s.op(Op::Load, uvec3, &[var])?;
        let x = self.s.b.composite_extract(u32t, None, v, [0])?;
        let u64t = self.s.b.type_int(64, 0);
        let x64 = self.s.op(Op::UConvert, u64t, &[x])?;
        let i64t = self.s.ty(VType::I64);
        let wide = V {
            id: self.s.op(Op::Bitcast, i64t, &[x64])?,
            t: VType::I64,
        };
        // Its i32 twin: workgroup sizes, indices and counts all lie below 2^31.
        let i32t = self.s.ty(VType::I32);
        let narrow = V {
            id: self.s.op(Op::Bitcast, i32t, &[x])?,
            t: VType::I32,
        };
        self.narrowed.insert(wide.id, narrow);
        Ok(wide)
    }

    /// Waits for every invocation of the workgroup; their writes to buffers and workgroup
    /// memory before it are visible to all after it.
    fn barrier(&mut self) -> Result<(), Fail> {
        let wg = self.s.u32_const(Scope::Workgroup as u32);
        let sem = MemorySemantics::ACQUIRE_RELEASE
            | MemorySemantics::UNIFORM_MEMORY
            | MemorySemantics::WORKGROUP_MEMORY;
        let sem = self.s.u32_const(sem.bits());
        self.s.effect(
            Op::ControlBarrier,
            vec![Operand::IdRef(wg), Operand::IdRef(wg), Operand::IdRef(sem)],
        )
    }

    /// The start value of an `op` reduction.
    fn identity(&mut self, op: RedOp) -> Result<V, Fail> {
        match op {
            RedOp::Sum => Ok(self.s.f32(0.0)),
            RedOp::Max => self.f32_lit(f32::NEG_INFINITY),
        }
    }

    /// Reduction `r`'s entry for invocation or subgroup `i` (an i32) of the workgroup
    /// array: a group of reductions keeps `threads` entries each.
    fn partial_of(&mut self, r: usize, threads: u32, i: V) -> Result<Word, Fail> {
        let base = self.s.i32((r as u32 * threads) as i32);
        let idx = self.s.op_v(Op::IAdd, VType::I32, &[base, i])?;
        self.partial(idx)
    }

    fn partial(&mut self, at: V) -> Result<Word, Fail> {
        let f32t = self.s.ty(VType::F32);
        let ptr_t = self.s.ptr(StorageClass::Workgroup, f32t);
        Ok(self
            .s
            .b
            .access_chain(ptr_t, None, self.abi.partials, [at.id])?)
    }

    /// Combines every invocation's `xs[r]` with `ops[r]`, for each `r`; all get the
    /// results. The reductions share each step of the tree (reduction `r` at
    /// `[r * threads + invocation]` of the workgroup array), so a group costs the barriers
    /// of one.
    fn block_reduce(&mut self, g: &Ids, ops: &[RedOp], xs: &[V]) -> Result<Vec<V>, Fail> {
        if let Some(sg) = self.abi.subgroups {
            return self.subgroup_reduce(g, sg, ops, xs);
        }
        let threads = g.launch.threads;
        let t = self.narrow_i32(g.thread)?;
        for (r, x) in xs.iter().enumerate() {
            let mine = self.partial_of(r, threads, t)?;
            self.store_ptr(mine, x.id)?;
        }
        self.barrier()?;
        let mut half = threads / 2;
        while half > 0 {
            let h = self.s.i32(half as i32);
            let active = self.compare(Cmp::Lt, t, h)?;
            self.if_else(
                active,
                &mut |em| {
                    let other = em.s.op_v(Op::IAdd, VType::I32, &[t, h])?;
                    for (r, &op) in ops.iter().enumerate() {
                        let mine = em.partial_of(r, threads, t)?;
                        let theirs = em.partial_of(r, threads, other)?;
                        let a = em.load_ptr(mine, VType::F32)?;
                        let b = em.load_ptr(theirs, VType::F32)?;
                        let v = em.reduce_step(op, a, b)?;
                        em.store_ptr(mine, v.id)?;
                    }
                    Ok(())
                },
                &mut |_| Ok(()),
            )?;
            self.barrier()?;
            half /= 2;
        }
        let zero = self.s.i32(0);
        let mut totals = Vec::with_capacity(xs.len());
        for r in 0..xs.len() {
            let first = self.partial_of(r, threads, zero)?;
            totals.push(self.load_ptr(first, VType::F32)?);
        }
        // The next reduction overwrites the array only after everyone has read it.
        self.barrier()?;
        Ok(totals)
    }

    /// [`Emitter::block_reduce`] on devices with subgroup arithmetic: each subgroup reduces
    /// its invocations' values in one instruction, its first invocation stores the result
    /// (reduction `r`'s at `[r * threads + subgroup]`), and after one barrier every
    /// invocation folds the subgroups' results in order: three steps where the tree takes
    /// eight, with two barriers. Deterministic for a given subgroup size.
    fn subgroup_reduce(
        &mut self,
        g: &Ids,
        sg: Subgroups,
        ops: &[RedOp],
        xs: &[V],
    ) -> Result<Vec<V>, Fail> {
        let threads = g.launch.threads;
        let u32t = self.s.u32_ty();
        let i32t = self.s.ty(VType::I32);
        let f32t = self.s.ty(VType::F32);
        let builtin = |em: &mut Self, var: Word| -> Result<V, Fail> {
            let v = em.s.op(Op::Load, u32t, &[var])?;
            Ok(V {
                id: em.s.op(Op::Bitcast, i32t, &[v])?,
                t: VType::I32,
            })
        };
        let lane = builtin(self, sg.lane)?;
        let id = builtin(self, sg.id)?;
        let count = builtin(self, sg.count)?;
        let scope = self.s.u32_const(Scope::Subgroup as u32);
        let mut partial = Vec::with_capacity(xs.len());
        for (x, &op) in xs.iter().zip(ops) {
            let which = match op {
                RedOp::Sum => Op::GroupNonUniformFAdd,
                RedOp::Max => Op::GroupNonUniformFMax,
            };
            let id = self.s.b.id();
            let inst = Instruction::new(
                which,
                Some(f32t),
                Some(id),
                vec![
                    Operand::IdRef(scope),
                    Operand::GroupOperation(GroupOperation::Reduce),
                    Operand::IdRef(x.id),
                ],
            );
            self.s.b.insert_into_block(InsertPoint::End, inst)?;
            partial.push(V { id, t: VType::F32 });
        }
        let zero = self.s.i32(0);
        let first = self.compare(Cmp::Eq, lane, zero)?;
        self.if_else(
            first,
            &mut |em| {
                for (r, p) in partial.iter().enumerate() {
                    let slot = em.partial_of(r, threads, id)?;
                    em.store_ptr(slot, p.id)?;
                }
                Ok(())
            },
            &mut |_| Ok(()),
        )?;
        self.barrier()?;
        let n = self.widen(count)?;
        let mut totals = Vec::with_capacity(xs.len());
        for (r, &op) in ops.iter().enumerate() {
            let acc = self.next_var;
            self.next_var += 1;
            let init = self.identity(op)?;
            self.declare(acc, init)?;
            self.counted_loop(n, true, &mut |em, s| {
                let s = em.narrow_i32(s)?;
                let slot = em.partial_of(r, threads, s)?;
                let v = em.load_ptr(slot, VType::F32)?;
                let a = em.read_var(acc)?;
                let v = em.reduce_step(op, a, v)?;
                em.assign(acc, v)
            })?;
            totals.push(self.read_var(acc)?);
        }
        // The next reduction overwrites the array only after everyone has read it.
        self.barrier()?;
        Ok(totals)
    }
}

/// The number of points of a grid: the product of its extents.
fn grid_points(grid: &[Expr]) -> Expr {
    let product = |a, b| Expr::Binary(BOp::Mul, Box::new(a), Box::new(b));
    grid.iter()
        .cloned()
        .reduce(product)
        .unwrap_or(Expr::Lit(Lit::I64(1)))
}

/// The grid indices of point `flat` (non-negative; within i32 with `narrow`) over
/// `extents` (the values of `grid`), the last axis fastest. A constant power-of-two extent
/// divides by a shift and a mask, any other unsigned: a signed 64-bit division is a long
/// instruction sequence on GPUs.
fn decompose(
    em: &mut Emitter,
    flat: V,
    grid: &[Expr],
    extents: &[V],
    narrow: bool,
) -> Result<Vec<V>, Fail> {
    let mut idx = vec![flat; extents.len()];
    let mut rest = match narrow {
        true => em.narrow_i32(flat)?,
        false => flat,
    };
    for g in (0..extents.len()).rev() {
        if g == 0 {
            idx[g] = em.widen(rest)?;
            break;
        }
        let extent = match narrow && em.fits_i32(&grid[g]) {
            true => em.index32(&grid[g])?,
            false if narrow => em.narrow_i32(extents[g])?,
            false => extents[g],
        };
        let r = em.int_op(BOp::Rem, true, &grid[g], rest, extent)?;
        idx[g] = em.widen(r)?;
        rest = em.int_op(BOp::Div, true, &grid[g], rest, extent)?;
    }
    Ok(idx)
}

fn stmts(em: &mut Emitter, body: &[Stmt]) -> Result<(), Fail> {
    for s in body {
        stmt(em, s)?;
    }
    Ok(())
}

fn stmt(em: &mut Emitter, s: &Stmt) -> Result<(), Fail> {
    match s {
        Stmt::Let { var, value } => {
            let v = em.expr(value)?;
            em.bind_let(*var, v, value);
        }
        Stmt::Decl { var, init } => {
            let v = em.expr(init)?;
            em.declare(*var, v)?;
        }
        Stmt::Assign { var, value } => {
            let v = em.expr(value)?;
            em.assign(*var, v)?;
        }
        // SPIR-V has no prefetch; the hint is dropped (GPU lowering does not emit it).
        Stmt::Prefetch { .. } => {}
        // Copies are done when issued, so every batch has landed at its `Await`.
        Stmt::Copy {
            dst,
            dst_index,
            src,
            src_index,
            lanes,
        } => {
            let (to, from) = (em.index(*dst, dst_index)?, em.index(*src, src_index)?);
            for l in 0..*lanes as u64 {
                let off = em.s.lit(from.t, l);
                let at = em.s.op_v(Op::IAdd, from.t, &[from, off])?;
                let x = em.load(*src, at)?;
                let off = em.s.lit(to.t, l);
                let at = em.s.op_v(Op::IAdd, to.t, &[to, off])?;
                em.store(*dst, at, x)?;
            }
        }
        Stmt::Await { .. } => em.barrier()?,
        Stmt::GroupMma { .. } | Stmt::GroupWait { .. } => {
            return Err(Fail::msg(
                "warpgroup matrix instructions are NVIDIA sm_90a's (cuda:sm_90a), not SPIR-V",
            ))
        }
        Stmt::Store { buf, index, value } => {
            let i = em.index(*buf, index)?;
            let v = em.expr(value)?;
            for l in 0..v.t.lanes {
                let x = em.extract(v, l)?;
                let at = if l == 0 {
                    i
                } else {
                    let off = em.s.lit(i.t, l as u64);
                    em.s.op_v(Op::IAdd, i.t, &[i, off])?
                };
                em.store(*buf, at, x)?;
            }
        }
        Stmt::Loop {
            var, extent, body, ..
        } => {
            let (n, narrow) = em.loop_extent(extent, 1)?;
            em.counted_loop(n, narrow, &mut |em, it| {
                em.bind_index(*var, it, extent);
                stmts(em, body)
            })?;
        }
        Stmt::Reduce { .. } => {
            let zero = em.s.i64(0);
            reduce_strided(em, std::slice::from_ref(s), zero, 1, 1)?;
        }
        Stmt::If {
            cond,
            then,
            otherwise,
        } => {
            let c = em.expr(cond)?;
            em.if_else(c, &mut |em| stmts(em, then), &mut |em| stmts(em, otherwise))?;
        }
    }
    Ok(())
}

/// For each `Reduce` of `group` (which share their extent), `acc = op over var in start,
/// start + step, .. < extent of value`, all in one loop; with `unroll` above 1 a first loop
/// takes that many steps at a time, their values computed before any is accumulated (as
/// the LLVM GPU code generator's `reduce_strided`). Returns each reduction's accumulator
/// and op.
fn reduce_strided(
    em: &mut Emitter,
    group: &[Stmt],
    start: V,
    step: u32,
    unroll: u32,
) -> Result<Vec<(u32, RedOp)>, Fail> {
    let mut parts = Vec::with_capacity(group.len());
    for s in group {
        let Stmt::Reduce { acc, op, .. } = s else {
            return Err(Fail::msg("a reduction group holds another statement"));
        };
        let init = em.identity(*op)?;
        em.declare(*acc, init)?;
        parts.push((*acc, *op));
    }
    let Some(Stmt::Reduce { extent, .. }) = group.first() else {
        return Ok(parts);
    };
    let (n, narrow) = em.loop_extent(extent, step as u64 * unroll as u64)?;
    let mut rest = start;
    if unroll > 1 {
        // The first loop stops where a step's last value would pass the end.
        let behind = em.s.i64(step as i64 * (unroll as i64 - 1));
        let end = em.index_op(Op::ISub, n, behind, narrow)?;
        let wide = em.s.i64(step as i64 * unroll as i64);
        rest = em.strided_loop(start, end, wide, narrow, &mut |em, it| {
            let mut at = it;
            let mut steps = Vec::with_capacity(unroll as usize);
            let step = em.s.i64(step as i64);
            for _ in 0..unroll {
                steps.push(step_values(em, group, at)?);
                at = em.index_op(Op::IAdd, at, step, narrow)?;
            }
            for values in steps {
                accumulate(em, group, values)?;
            }
            Ok(())
        })?;
    }
    let step = em.s.i64(step as i64);
    em.strided_loop(rest, n, step, narrow, &mut |em, it| {
        let values = step_values(em, group, it)?;
        accumulate(em, group, values)
    })?;
    Ok(parts)
}

/// Each reduction of `group`'s value at index `at`.
fn step_values(em: &mut Emitter, group: &[Stmt], at: V) -> Result<Vec<V>, Fail> {
    let mut values = Vec::with_capacity(group.len());
    for s in group {
        if let Stmt::Reduce {
            var, value, extent, ..
        } = s
        {
            em.bind_index(*var, at, extent);
            values.push(em.expr(value)?);
        }
    }
    Ok(values)
}

/// `acc = op(acc, value)` for each reduction of `group` and its value.
fn accumulate(em: &mut Emitter, group: &[Stmt], values: Vec<V>) -> Result<(), Fail> {
    for (s, x) in group.iter().zip(values) {
        if let Stmt::Reduce { acc, op, .. } = s {
            let a = em.read_var(*acc)?;
            let r = em.reduce_step(*op, a, x)?;
            em.assign(*acc, r)?;
        }
    }
    Ok(())
}

/// `group` (see `kiln_compiler::kernel::gpu::reduction_group`): one strided loop over the
/// invocations computes every reduction's partial result, then one combination across the
/// workgroup gives every invocation the totals.
fn reduce_together(em: &mut Emitter, g: &Ids, group: &[Stmt]) -> Result<(), Fail> {
    let threads = g.launch.threads;
    // One step at a time unless `KILN_GPU_UNROLL` says otherwise: NVIDIA's Vulkan compiler
    // already overlaps a thread's loads (1B F16 decode: 421.4 t/s at 1, 421.0 at 2;
    // docs/perf.md, 2026-12-07), and it computed wrong sums from the two-step loop that
    // Mesa's and CUDA's computed right (one H100, 2026-12-07: every 8192-input quantized
    // matvec but Q4_K's, whose threads take one step), as it did from split steps over
    // q8_0 activations until the indices were 32-bit. Not run there since.
    let parts = reduce_strided(em, group, g.thread, threads, reduce_unroll_or(1))?;
    let mut xs = Vec::with_capacity(parts.len());
    for (acc, _) in &parts {
        xs.push(em.read_var(*acc)?);
    }
    let ops: Vec<RedOp> = parts.iter().map(|(_, op)| *op).collect();
    let totals = em.block_reduce(g, &ops, &xs)?;
    for ((acc, _), total) in parts.iter().zip(totals) {
        em.assign(*acc, total)?;
    }
    Ok(())
}

/// Statements every invocation of the workgroup reaches (see `llvm/gpu/kernel.rs`, whose
/// mapping this is).
fn block_stmts(em: &mut Emitter, g: &Ids, body: &[Stmt]) -> Result<(), Fail> {
    let threads = em.s.i64(g.launch.threads as i64);
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
                let (n, narrow) = em.loop_extent(extent, g.launch.threads as u64)?;
                em.strided_loop(g.thread, n, threads, narrow, &mut |em, it| {
                    em.bind_index(*var, it, extent);
                    stmts(em, body)
                })?;
                em.barrier()?;
            }
            Stmt::Loop {
                var, extent, body, ..
            } => {
                let (n, narrow) = em.loop_extent(extent, 1)?;
                em.counted_loop(n, narrow, &mut |em, it| {
                    em.bind_index(*var, it, extent);
                    block_stmts(em, g, body)
                })?;
            }
            Stmt::Reduce { .. } => {
                let group = &body[at - 1..at - 1 + reduction_group(&body[at - 1..])];
                at += group.len() - 1;
                reduce_together(em, g, group)?;
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let c = em.expr(cond)?;
                em.if_else(c, &mut |em| block_stmts(em, g, then), &mut |em| {
                    block_stmts(em, g, otherwise)
                })?;
            }
            other => stmt(em, other)?,
        }
    }
    Ok(())
}
