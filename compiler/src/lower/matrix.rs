//! The GPU matmul on matrix instructions (`Expr::Mma`), for targets whose schedule has a
//! matrix unit and matmuls of half matrices (A `[.., m, k]`, B stored transposed
//! `[.., n, k]`: the LLM layout, and the one whose rows of both operands run along K; B
//! f16 or bf16, A the same or f32 activations against f16 weights, see `applies`).
//!
//! Each grid point is a block of warps (explicit threads, `kernel::gpu`) and owns a tile of
//! C; each warp owns a block of instruction tiles of it (64 x 64 or 64 x 32 elements, see
//! `Plan`), held in registers across the whole K loop. The block stages each step
//! along K of its rows of A and B in shared memory (`Stmt::Copy`: `cp.async` on NVIDIA, so
//! the copies of the steps ahead run while the warps multiply), so every element is read
//! from global memory once per block rather than once per warp. Per instruction step each
//! warp reads its fragments from the staged tiles (`Order`: by `ldmatrix` on NVIDIA) and
//! issues one instruction per tile pair. On `cuda:sm_90a` half operands take Hopper's
//! warpgroup instructions instead (`lower::group_matrix`), on the same staged kernel
//! (`staged_kernel`).
//!
//! Rows past M and columns past N read the last row or column (in bounds) and are not
//! stored; K must be a known multiple of the step (every LLM width is).

use super::inline::dim_expr;
use super::matmul::{k_dim, Operands};
use super::{Ctx, GridDim, LowerError};
use crate::kernel::e::*;
use crate::kernel::matrix::{MatrixOp, MatrixUnit};
use crate::kernel::{BOp, Buf, Cmp, Expr, Kernel, LocalBuf, Stmt, VarId};
use kiln_ir::{DType, NodeId};

/// Bytes each lane loads per row of A or column of B and step: 16, the widest load.
const LOAD_BYTES: i64 = 16;

/// Instruction steps along K each lane's 16-byte read of a row covers (`LOAD_BYTES`): the
/// least the loop steps by, so K must be a multiple of the instruction's K times this.
fn base_substeps(unit: MatrixUnit) -> i64 {
    (LOAD_BYTES / 2 / unit.k_per_lane()).max(1)
}

/// The matrix instruction for this matmul, if the target has one and the operands fit.
///
/// B decides the input type: a buffer of halves, or the f32 cast of one (how graphs hold
/// F16 weights). A is a buffer of the same type, or, for f16, an f32 buffer (activations)
/// whose values the instruction rounds to f16 (to nearest even), as GPU frameworks multiply
/// f16 weights: about 2^-11 relative error per activation, accumulated in f32. bf16's
/// coarser rounding is not applied to f32 activations.
pub(super) fn applies(ctx: &Ctx, ops: &Operands) -> Option<MatrixOp> {
    let unit = ctx.schedule.matrix?;
    if ops.ta || !ops.tb {
        return None;
    }
    let g = ctx.graph;
    let stored = |n| ctx.node_buffer.contains_key(&n);
    let half = |d: DType| match d {
        DType::F16 => true,
        DType::BF16 => ctx.schedule.matrix_bf16,
        _ => false,
    };
    // The half type a buffer holds, seen through a widening cast.
    let half_of = |n: NodeId| -> Option<DType> {
        let node = g.node(n);
        if stored(n) && half(node.dtype) {
            return Some(node.dtype);
        }
        match (&node.op, g.inputs(n).first()) {
            (kiln_ir::Op::Cast { .. }, Some(&x))
                if node.dtype == DType::F32 && stored(x) && half(g.node(x).dtype) =>
            {
                Some(g.node(x).dtype)
            }
            _ => None,
        }
    };
    let input = half_of(ops.b)?;
    let a_fits = half_of(ops.a) == Some(input)
        || (input == DType::F16 && stored(ops.a) && g.node(ops.a).dtype == DType::F32);
    let (_, _, k) = unit.shape();
    let step = k * base_substeps(unit);
    let k_fits = k_dim(ops).as_known().is_some_and(|kd| kd % step == 0);
    (a_fits && k_fits).then_some(MatrixOp { unit, input })
}

/// Most steps along K staged at once: three keeps two steps' copies in flight while the
/// warps multiply the third, as sm_80-style kernels do.
const MAX_STAGES: i64 = 3;

/// Outputs (all batches) from which a matmul counts as large (see [`Plan::choose`]).
const LARGE_OUTPUTS: i64 = 4096 * 4096;

/// How the kernel divides a matmul: each warp owns `tiles` instruction tiles of C in
/// registers, a block is `warps.0 x warps.1` warps, a step of the loop covers `substeps`
/// instruction steps along K, and `stages` steps are staged in shared memory at once (at
/// least two, so one step's copies overlap the last one's products).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Plan {
    tiles: (i64, i64),
    warps: (i64, i64),
    substeps: i64,
    stages: i64,
    order: Order,
}

impl Plan {
    /// Two plans, from measurements on one H100 (2026-12-06, docs/perf.md):
    /// - **large** matmuls ([`LARGE_OUTPUTS`] or more): warps of 64 x 64 outputs (all 255
    ///   registers), four a block (128 x 128), steps of 64 along K, three stages (96 KiB of
    ///   shared memory): 4096^3 at 370-388 TFLOP/s with `ldmatrix` reads, where two warps a
    ///   block ran 338 and steps of 32 with four stages 346;
    /// - otherwise warps of 64 x 32 outputs (166 registers), four a block, steps of 32,
    ///   three stages: 512 x 2048 x 5632 (a 1B llama's prefill) at 237 TFLOP/s, where the
    ///   large plan ran 172-188 (before `ldmatrix`), since blocks of 128 x 128 outputs leave
    ///   much of the GPU idle there.
    ///
    /// Where the shared memory cannot hold a plan's stages, it takes fewer (two at least),
    /// then fewer warps.
    ///
    /// `KILN_GPU_MMA_LARGE=0|1`, `KILN_GPU_MMA_WARP_COLS=32|64`, `KILN_GPU_MMA_WARPS_M`,
    /// `_N`, `KILN_GPU_MMA_SUBSTEPS` and `KILN_GPU_MMA_STAGES` ask for others at compile
    /// time, to compare on a GPU; what does not fit K or the `shared` bytes a block may use
    /// (`Schedule::shared_bytes`) is not taken.
    fn choose(
        unit: MatrixUnit,
        outputs: Option<i64>,
        k: i64,
        sizes: (i64, i64),
        shared: i64,
    ) -> Option<Plan> {
        let (um, un, uk) = unit.shape();
        let large = outputs.is_some_and(|o| o >= LARGE_OUTPUTS);
        let large = super::knob("KILN_GPU_MMA_LARGE", large as u8) == 1;
        let cols: i64 = super::knob("KILN_GPU_MMA_WARP_COLS", if large { 64 } else { 32 });
        let cols = cols.clamp(un, 64);
        let base = base_substeps(unit);
        let natural = if large && k % (uk * 2 * base) == 0 {
            2 * base
        } else {
            base
        };
        let substeps = Some(super::knob("KILN_GPU_MMA_SUBSTEPS", natural))
            .filter(|&s| (base..=4 * base).contains(&s) && k % (uk * s) == 0)
            .unwrap_or(natural);
        let step_bytes =
            |(wm, wn): (i64, i64)| uk * substeps * (wm * 64 * sizes.0 + wn * cols * sizes.1);
        let asked = (
            super::knob("KILN_GPU_MMA_WARPS_M", 2).clamp(1, 4),
            super::knob("KILN_GPU_MMA_WARPS_N", 2).clamp(1, 4),
        );
        let warps = [asked, (2, 2), (2, 1), (1, 1)]
            .into_iter()
            .find(|&w| 2 * step_bytes(w) <= shared)?;
        let fit = shared / step_bytes(warps);
        Some(Plan {
            tiles: (64 / um, cols / un),
            warps,
            substeps,
            stages: super::knob("KILN_GPU_MMA_STAGES", MAX_STAGES).clamp(2, fit),
            order: Order::asked(Order::Matrices),
        })
    }
}

/// One operand's steps in shared memory: per stage, `rows` rows (of A, or of B's
/// transposed storage) of one step along K, in 16-byte chunks.
pub(super) struct Staged {
    local: Buf,
    rows: i64,
    /// Elements per 16-byte chunk.
    chunk: i64,
    /// Chunks per row.
    per_row: i64,
}

impl Staged {
    pub(super) fn new(local: u32, dtype: DType, rows: i64, step: i64) -> Staged {
        let chunk = 16 / dtype.size_bytes() as i64;
        Staged {
            local: Buf::Local(local),
            rows,
            chunk,
            per_row: step / chunk,
        }
    }

    pub(super) fn stage_len(&self) -> i64 {
        self.rows * self.per_row * self.chunk
    }

    /// Element index of `chunk` of `row` in `stage`, swizzled (see `at_swizzled`) so that
    /// the warps' reads meet in no bank; the copies store through the same map.
    fn at(&self, stage: Expr, row: Expr, chunk: Expr) -> Expr {
        self.at_swizzled(stage, row.clone(), chunk, rem(row, i(8)))
    }

    /// [`Staged::at`], given `row_mod8`, the row's remainder by 8 (on which the swizzle
    /// depends), in a form the reader may know better than `row % 8`.
    fn at_swizzled(&self, stage: Expr, row: Expr, chunk: Expr, row_mod8: Expr) -> Expr {
        // Chunk `c` of `row` lies at `c ^ swizzle(row)`, which gives each row of a group
        // spanning 128 bytes of every 8 consecutive rows its own chunks: eight lanes reading
        // the same chunk of eight rows (16-byte reads), or a warp reading the same word of
        // eight rows and four chunks (4-byte reads), meet no two rows in the same bank.
        let spread = self.per_row * 16 / 128;
        let swizzle = if spread >= 1 {
            mul(row_mod8, i(spread))
        } else {
            rem(div(row_mod8, i(128 / (self.per_row * 16))), i(self.per_row))
        };
        let chunk = if self.per_row > 1 {
            bin(BOp::Xor, chunk, swizzle)
        } else {
            chunk
        };
        add(
            add(
                mul(stage, i(self.stage_len())),
                mul(row, i(self.per_row * self.chunk)),
            ),
            mul(chunk, i(self.chunk)),
        )
    }

    /// `lanes` consecutive elements of `row` from K position `k + k_lane` of the step (in
    /// one chunk), as one read; `k` a multiple of the chunk, and `row_mod8` the row's
    /// remainder by 8. Written so that only `k` varies between a lane's reads: the
    /// swizzled chunk is then one of a few values fixed for the whole loop, and each read's
    /// address a constant offset from one of them.
    fn element(
        &self,
        stage: &Expr,
        row: Expr,
        row_mod8: Expr,
        k: i64,
        k_lane: Expr,
        lanes: i64,
    ) -> Expr {
        let at = self.element_at(stage, row, row_mod8, k, k_lane);
        load_vec(self.local, at, lanes as u8)
    }

    /// The index [`Staged::element`] reads at.
    fn element_at(&self, stage: &Expr, row: Expr, row_mod8: Expr, k: i64, k_lane: Expr) -> Expr {
        debug_assert_eq!(k % self.chunk, 0);
        let chunk = add(i(k / self.chunk), div(k_lane.clone(), i(self.chunk)));
        let at = self.at_swizzled(stage.clone(), row, chunk, row_mod8);
        add(at, rem(k_lane, i(self.chunk)))
    }

    /// The copies of one step into `stage`: the block's threads take consecutive chunks, a
    /// row's chunks in neighbouring threads, so each warp reads whole rows of the step (64
    /// or 128 contiguous bytes each). `line(ctx, row, k)` is the operand's element at row
    /// `row` of the tile and K position `k`; the step starts at `k0`.
    fn copies(
        &self,
        ctx: &mut Ctx,
        threads: i64,
        stage: Expr,
        line: &mut dyn FnMut(&mut Ctx, Expr, Expr) -> Result<Expr, LowerError>,
        k0: Expr,
        out: &mut Vec<Stmt>,
    ) -> Result<(), LowerError> {
        let rows_per_pass = threads / self.per_row;
        if threads % self.per_row != 0 || self.rows % rows_per_pass != 0 {
            return Err(LowerError::Internal(format!(
                "{threads} threads cannot share the copies of {} rows of {} chunks",
                self.rows, self.per_row
            )));
        }
        let chunk = rem(Expr::Thread, i(self.per_row));
        let k = add(k0, mul(chunk.clone(), i(self.chunk)));
        for pass in 0..self.rows / rows_per_pass {
            let row = add(div(Expr::Thread, i(self.per_row)), i(pass * rows_per_pass));
            let Expr::Load { buf, index, .. } = line(ctx, row.clone(), k.clone())? else {
                return Err(LowerError::Internal(
                    "a matrix-unit operand that is not a buffer".into(),
                ));
            };
            out.push(Stmt::Copy {
                dst: self.local,
                dst_index: self.at(stage.clone(), row, chunk.clone()),
                src: buf,
                src_index: *index,
                lanes: self.chunk as u8,
            });
        }
        Ok(())
    }

    /// `run` consecutive elements of `row` from the start of chunk `first` (`run` a
    /// multiple of the chunk), each chunk one aligned vector read.
    fn read(
        &self,
        ctx: &mut Ctx,
        out: &mut Vec<Stmt>,
        stage: &Expr,
        row: Expr,
        first: Expr,
        run: i64,
    ) -> Expr {
        let n = run / self.chunk;
        let parts: Vec<Expr> = (0..n)
            .map(|j| {
                load_vec(
                    self.local,
                    self.at(stage.clone(), row.clone(), add(first.clone(), i(j))),
                    self.chunk as u8,
                )
            })
            .collect();
        if n == 1 {
            return parts.into_iter().next().unwrap_or(i(0));
        }
        let vars: Vec<VarId> = parts.into_iter().map(|p| bind(ctx, out, p)).collect();
        Expr::Lanes(
            vars.iter()
                .flat_map(|&v| (0..self.chunk).map(move |l| extract(var(v), l)))
                .collect(),
        )
    }
}

/// The tiled matmul: a block of warps per tile of C (see the module doc). On targets with
/// Hopper's warpgroup instruction the block is warpgroups instead (`lower::group_matrix`).
pub(super) fn kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    name: String,
    op: MatrixOp,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let unit = op.unit;
    let (um, un, uk) = unit.shape();
    let outputs = ops
        .out_shape
        .iter()
        .map(|d| d.as_known())
        .product::<Option<i64>>();
    let dtypes = (stored_type(ctx, ops.a), stored_type(ctx, ops.b));
    let k_total = k_dim(ops)
        .as_known()
        .ok_or_else(|| LowerError::Internal("matrix matmul with a symbolic K".into()))?;
    let sizes = (dtypes.0.size_bytes() as i64, dtypes.1.size_bytes() as i64);
    let shared = ctx.schedule.shared_bytes as i64;
    if let Some(plan) = super::group_matrix::plan(ctx, op, dtypes, outputs, k_total) {
        return super::group_matrix::kernel(ctx, ops, out, name, op, dtypes, plan);
    }
    let plan = Plan::choose(unit, outputs, k_total, sizes, shared)
        .ok_or_else(|| LowerError::Internal("no matrix-unit plan fits shared memory".into()))?;
    let (tm, tn) = plan.tiles;
    let s = plan.substeps;
    let (_, _, c_len) = unit.fragment_lanes();
    let (warp_m, warp_n) = (tm * um, tn * un);
    let (wm, wn) = plan.warps;
    let warp = unit.warp() as i64;
    let blocking = Blocking {
        block: (wm * warp_m, wn * warp_n),
        threads: wm * wn * warp,
        step: uk * s,
        stages: plan.stages,
        dtypes,
    };
    let mut head = Vec::new();
    let warp_id = div(Expr::Thread, i(warp));
    let my_m = bind(ctx, &mut head, mul(div(warp_id.clone(), i(wn)), i(warp_m)));
    let my_n = bind(ctx, &mut head, mul(rem(warp_id, i(wn)), i(warp_n)));
    let accs: Vec<Vec<VarId>> = (0..tm)
        .map(|_| (0..tn).map(|_| ctx.fresh()).collect())
        .collect();
    // Each lane's registers of C, as `kernel::matrix` places them.
    let placed: Vec<Acc> = accs
        .iter()
        .enumerate()
        .flat_map(|(ti, row)| row.iter().enumerate().map(move |(tj, &v)| (ti, tj, v)))
        .map(|(ti, tj, v)| Acc {
            var: v,
            pairs: unit == MatrixUnit::MmaM16N8K16,
            at: (0..c_len as i64)
                .map(|e| {
                    let (r, c) = unit.c_elem(Expr::Lane, e);
                    (
                        add(add(var(my_m), i(ti as i64 * um)), r),
                        add(add(var(my_n), i(tj as i64 * un)), c),
                    )
                })
                .collect(),
        })
        .collect();
    let (sa, sb) = blocking.staged();
    let mut multiply = |ctx: &mut Ctx, out: &mut Vec<Stmt>, stage: Expr| {
        let warp_tile = WarpTile {
            op,
            my_m,
            my_n,
            run: unit.k_per_lane() * s,
            substeps: s,
            a: &sa,
            b: &sb,
            stage,
        };
        warp_tile.multiply(ctx, out, &accs, plan.order);
        Ok(())
    };
    let products = BlockProducts {
        head,
        accs: placed,
        multiply: &mut multiply,
        lag: 0,
        drain: Vec::new(),
    };
    staged_kernel(ctx, ops, out, name, &blocking, products)
}

/// How a block covers C and walks K: a `block` (rows, columns) tile of C a block,
/// `threads` threads, `step` K positions a loop step, `stages` steps staged at once (at
/// least two, so one step's copies overlap the last one's products), A and B staged as
/// `dtypes`.
#[derive(Clone, Copy)]
pub(super) struct Blocking {
    pub block: (i64, i64),
    pub threads: i64,
    pub step: i64,
    pub stages: i64,
    pub dtypes: (DType, DType),
}

impl Blocking {
    /// The staged tiles of A (local 0) and B (local 1).
    pub fn staged(&self) -> (Staged, Staged) {
        (
            Staged::new(0, self.dtypes.0, self.block.0, self.step),
            Staged::new(1, self.dtypes.1, self.block.1, self.step),
        )
    }
}

/// An accumulator vector of a thread and, per lane, its (row, column) of C within the
/// block's tile; `pairs` where lanes `2j` and `2j + 1` always hold neighbouring columns
/// of one row (`mma.sync`'s and `wgmma`'s C), which are then stored together.
pub(super) struct Acc {
    pub var: VarId,
    pub at: Vec<(Expr, Expr)>,
    pub pairs: bool,
}

/// Appends one staged step's products to the loop body, given the step's stage.
pub(super) type StepProducts<'a> =
    dyn FnMut(&mut Ctx, &mut Vec<Stmt>, Expr) -> Result<(), LowerError> + 'a;

/// What multiplies a block's staged steps: `head` (bindings the products and the
/// accumulators' places name), the accumulators, each step's products, how many steps'
/// products may still be reading their stages when the next step begins (`lag`: their
/// stages are not overwritten until then), and `drain`, which waits for them after the
/// last step.
pub(super) struct BlockProducts<'a> {
    pub head: Vec<Stmt>,
    pub accs: Vec<Acc>,
    pub multiply: &'a mut StepProducts<'a>,
    pub lag: i64,
    pub drain: Vec<Stmt>,
}

/// The kernel around a block's products: `head`, the accumulators zeroed, the copies of
/// the first steps, the loop over K (wait for a step's copies, start those `stages - 1`
/// ahead, multiply the step's stage), and each accumulator's lanes stored where they fall
/// inside C.
pub(super) fn staged_kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    name: String,
    blocking: &Blocking,
    products: BlockProducts,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let nb = ops.nb;
    let k_total = k_dim(ops)
        .as_known()
        .ok_or_else(|| LowerError::Internal("matrix matmul with a symbolic K".into()))?;
    let Blocking {
        block: (block_m, block_n),
        threads,
        step,
        stages,
        dtypes,
    } = *blocking;
    let BlockProducts {
        head,
        accs,
        multiply,
        lag,
        drain,
    } = products;
    let (sa, sb) = blocking.staged();
    let m = dim_expr(ctx, &ops.out_shape[nb]);
    let n = dim_expr(ctx, &ops.out_shape[nb + 1]);
    let steps = k_total / step;
    // Steps copied ahead of the one multiplied: every stage but that one's and the `lag`
    // ones still being read, and no more than there are steps (a prologue short of
    // batches would let an `Await` count an empty batch as the one it must wait for).
    let ahead = (stages - 1 - lag).min(steps).max(1);
    let stages = ahead + 1 + lag;
    let mut grid: Vec<GridDim> = ops.out_shape.iter().map(GridDim::of).collect();
    grid[nb].ceil_div = block_m;
    grid[nb + 1].ceil_div = block_n;
    let row0 = mul(Expr::GridIdx(nb as u32), i(block_m));
    let col0 = mul(Expr::GridIdx(nb as u32 + 1), i(block_n));
    let mut body = head;
    for acc in &accs {
        body.push(Stmt::Decl {
            var: acc.var,
            init: splat(f(0.0), acc.at.len() as u8),
        });
    }

    let m_whole = ops.out_shape[nb]
        .as_known()
        .is_some_and(|d| d % block_m == 0);
    let n_whole = ops.out_shape[nb + 1]
        .as_known()
        .is_some_and(|d| d % block_n == 0);
    // The copies of step `kk` into `stage`: rows past M or N read the last one. Where the
    // tiles divide the matrix no row needs the clamp, and without it a thread's rows lie
    // at constant distances, so one address serves all its copies of an operand.
    let clamp = |line: Expr, whole: bool, extent: &Expr| {
        if whole {
            line
        } else {
            min(line, sub(extent.clone(), i(1)))
        }
    };
    let copies = |ctx: &mut Ctx, stage: Expr, kk: Expr, out: &mut Vec<Stmt>| {
        let k0 = mul(kk, i(step));
        sa.copies(
            ctx,
            threads,
            stage.clone(),
            &mut |ctx, row, k| ops.a_at(ctx, clamp(add(row0.clone(), row), m_whole, &m), k),
            k0.clone(),
            out,
        )?;
        sb.copies(
            ctx,
            threads,
            stage,
            &mut |ctx, row, k| ops.b_at(ctx, k, clamp(add(col0.clone(), row), n_whole, &n)),
            k0,
            out,
        )
    };
    // Prologue: the first `ahead` steps, each its own batch.
    let in_flight = (ahead - 1) as u8;
    for st in 0..ahead {
        copies(ctx, i(st), i(st), &mut body)?;
        if st < ahead - 1 {
            body.push(Stmt::Await { in_flight });
        }
    }

    // Each step: wait for its copies (and for every thread to be done with the stage the
    // next copies overwrite), start the copies `ahead` steps ahead, multiply.
    let kk = ctx.fresh();
    let mut each = vec![Stmt::Await { in_flight }];
    let ahead = add(var(kk), i(ahead));
    let mut next = Vec::new();
    copies(ctx, rem(ahead.clone(), i(stages)), ahead.clone(), &mut next)?;
    each.push(Stmt::If {
        cond: cmp(Cmp::Lt, ahead, i(steps)),
        then: next,
        otherwise: Vec::new(),
    });
    let stage = bind(ctx, &mut each, rem(var(kk), i(stages)));
    multiply(ctx, &mut each, var(stage))?;
    body.push(Stmt::Loop {
        var: kk,
        extent: i(steps),
        kind: crate::kernel::LoopKind::Serial,
        vector: 1,
        body: each,
    });
    body.extend(drain);

    // Each thread stores its accumulators' lanes that fall inside the matrix, two
    // neighbouring columns at once where N is whole (one 4-byte store of halves).
    for acc in &accs {
        let width = if acc.pairs && n_whole { 2 } else { 1 };
        for (e, (r, c)) in acc.at.iter().enumerate().step_by(width) {
            let row = add(row0.clone(), r.clone());
            let col = add(col0.clone(), c.clone());
            let index = ops.c_index(ctx, row.clone(), col.clone());
            let lanes: Vec<Expr> = (0..width as i64)
                .map(|l| {
                    let at = add(index.clone(), i(l));
                    ops.result(extract(var(acc.var), e as i64 + l), &at)
                })
                .collect();
            let value = match <[Expr; 1]>::try_from(lanes) {
                Ok([one]) => one,
                Err(lanes) => Expr::Lanes(lanes),
            };
            let store = Stmt::Store {
                buf: out,
                value,
                index,
            };
            let inside = [
                (!m_whole).then(|| cmp(Cmp::Lt, row, m.clone())),
                (!n_whole).then(|| cmp(Cmp::Lt, col, n.clone())),
            ]
            .into_iter()
            .flatten()
            .reduce(|a, b| bin(BOp::And, a, b));
            body.push(match inside {
                None => store,
                Some(cond) => Stmt::If {
                    cond,
                    then: vec![store],
                    otherwise: Vec::new(),
                },
            });
        }
    }
    grid.truncate(nb + 2);
    let (mut kernel, args) = ctx.finish(name, grid, body, 1);
    kernel.locals = [(dtypes.0, &sa), (dtypes.1, &sb)]
        .map(|(dtype, st)| LocalBuf {
            dtype,
            len: (stages * st.stage_len()) as u32,
            shared: true,
        })
        .to_vec();
    kernel.block_threads = Some(threads as u32);
    Ok((kernel, args))
}

/// How a warp reads its fragments of a step from shared memory. Every plan asks for
/// `Matrices`, which falls back where it cannot apply (see [`WarpTile::multiply`]);
/// `KILN_GPU_MMA_ORDER=whole|pieces|matrices` asks for one at compile time, to compare.
/// Measured on one H100 (2026-12-06, docs/perf.md), 4096^3 f16 under the large plan:
/// whole runs 283 TFLOP/s, pieces 338, matrices 370-388.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    /// Each lane's run of every row it holds, in 16-byte reads (K relabelled so the run
    /// is consecutive, `kernel::matrix`), then every product: few reads, and on AMD's
    /// units each fragment is one row's run; on `mma.sync` each A fragment pairs two rows,
    /// which the assembler gathers with a move per register per instruction.
    Whole,
    /// Per instruction step, each fragment read in the instruction's own K order a piece
    /// at a time, straight into the registers it takes (`WarpTile::multiply_pieces`).
    Pieces,
    /// As `Pieces`, each A fragment and each two B fragments read by one `ldmatrix`
    /// (`Expr::LoadMatrix`): a quarter of the reads, and no address per piece.
    Matrices,
}

impl Order {
    fn asked(natural: Order) -> Order {
        #[cfg(test)]
        if let Some(order) = tests::ORDER.get() {
            return order;
        }
        match std::env::var("KILN_GPU_MMA_ORDER").as_deref() {
            Ok("whole") => Order::Whole,
            Ok("pieces") => Order::Pieces,
            Ok("matrices") => Order::Matrices,
            _ => natural,
        }
    }
}

/// One warp's part of a step: the instruction tiles it owns, read from the staged operands.
struct WarpTile<'a> {
    op: MatrixOp,
    /// First row and column of the warp's block of C within the block's tile.
    my_m: VarId,
    my_n: VarId,
    /// Consecutive K positions each lane holds per row in a step.
    run: i64,
    substeps: i64,
    a: &'a Staged,
    b: &'a Staged,
    stage: Expr,
}

impl WarpTile<'_> {
    /// Appends to `out` the step's products into `accs` (`accs[ti][tj]`), in `order`.
    /// `ldmatrix` is NVIDIA's and reads 16-bit elements: `Matrices` reads f32 activations
    /// in pieces, and AMD's fragments (single rows) in whole runs.
    fn multiply(&self, ctx: &mut Ctx, out: &mut Vec<Stmt>, accs: &[Vec<VarId>], order: Order) {
        let nvidia = self.op.unit == MatrixUnit::MmaM16N8K16;
        let halves = self.a.chunk == 8 && self.b.chunk == 8;
        let order = match order {
            Order::Matrices if !nvidia => Order::Whole,
            Order::Matrices if !halves => Order::Pieces,
            other => other,
        };
        match order {
            Order::Matrices => return self.multiply_matrices(ctx, out, accs),
            Order::Pieces => return self.multiply_pieces(ctx, out, accs),
            Order::Whole => {}
        }
        let a = self.read_a(ctx, out, accs.len() as i64);
        let b: Vec<VarId> = (0..accs[0].len() as i64)
            .map(|t| self.read_b(ctx, out, t))
            .collect();
        for sub in 0..self.substeps {
            let a_frags = self.a_fragments(ctx, out, &a, sub);
            let b_frags: Vec<VarId> = b
                .iter()
                .map(|&r| self.b_fragment(ctx, out, r, sub))
                .collect();
            self.products(out, accs, &a_frags, &b_frags);
        }
    }

    /// Each instruction step's fragments read in the instruction's own K order
    /// (`MatrixUnit::k_position`), a few elements at a time, straight into the registers
    /// the instruction takes: on `mma.sync` a lane's A fragment pairs two rows, which no
    /// single read yields, and assembling it from runs of one row costs a move per register
    /// per instruction (Nsight Compute, 2026-12-06: half the instructions of the kernel).
    fn multiply_pieces(&self, ctx: &mut Ctx, out: &mut Vec<Stmt>, accs: &[Vec<VarId>]) {
        let unit = self.op.unit;
        let (um, un, uk) = unit.shape();
        let (a_len, b_len, _) = unit.fragment_lanes();
        let piece = unit.k_piece();
        // Every row a lane reads is its own row of an instruction tile (`a_row`, `b_col`)
        // past a multiple of 8, so its remainder by 8 is the same for all of them.
        let a_mod8 = bind(ctx, out, rem(unit.a_row(Expr::Lane), i(8)));
        let b_mod8 = bind(ctx, out, rem(unit.b_col(Expr::Lane), i(8)));
        let k_lane = bind(ctx, out, unit.k_lane(Expr::Lane));
        for sub in 0..self.substeps {
            // The fragment of `elems` (row, element of the lane's group) of `staged`.
            let fragment = |ctx: &mut Ctx,
                            out: &mut Vec<Stmt>,
                            staged: &Staged,
                            mod8: VarId,
                            elems: &[(Expr, i64)]| {
                let mut lanes = Vec::with_capacity(elems.len());
                for chunk in elems.chunks(piece as usize) {
                    let (row, local) = chunk[0].clone();
                    let k = sub * uk + unit.k_offset(local);
                    let value = staged.element(&self.stage, row, var(mod8), k, var(k_lane), piece);
                    let v = bind(ctx, out, value);
                    lanes.extend((0..piece).map(|j| extract(var(v), j)));
                }
                bind(ctx, out, Expr::Lanes(lanes))
            };
            let a_frags: Vec<VarId> = (0..accs.len() as i64)
                .map(|t| {
                    let row = add(var(self.my_m), i(t * um));
                    let elems: Vec<(Expr, i64)> = (0..a_len as i64)
                        .map(|e| {
                            let (off, local) = unit.a_elem(e);
                            (add(add(row.clone(), i(off)), unit.a_row(Expr::Lane)), local)
                        })
                        .collect();
                    fragment(ctx, out, self.a, a_mod8, &elems)
                })
                .collect();
            let b_frags: Vec<VarId> = (0..accs[0].len() as i64)
                .map(|t| {
                    let col = add(add(var(self.my_n), i(t * un)), unit.b_col(Expr::Lane));
                    let elems: Vec<(Expr, i64)> = (0..b_len as i64)
                        .map(|e| (col.clone(), unit.b_elem(e)))
                        .collect();
                    fragment(ctx, out, self.b, b_mod8, &elems)
                })
                .collect();
            self.products(out, accs, &a_frags, &b_frags);
        }
    }

    /// `multiply_pieces` with `ldmatrix` reads (`Order::Matrices`): per instruction step, one
    /// read of four 8 x 8 matrices per A fragment (rows 0-7 and 8-15 of the tile, K 0-7
    /// and 8-15: registers a0a1, a2a3, a4a5, a6a7) and one per two B fragments (K 0-7 and
    /// 8-15 of each tile's 8 columns). Lane `8j + r` names row `r` of matrix `j`.
    fn multiply_matrices(&self, ctx: &mut Ctx, out: &mut Vec<Stmt>, accs: &[Vec<VarId>]) {
        let (um, un, uk) = self.op.unit.shape();
        let lane = Expr::Lane;
        let r8 = bind(ctx, out, rem(lane.clone(), i(8)));
        // A: matrix j = lane / 8 covers rows 8 (j % 2) and K 8 (j / 2).
        let a_row = bind(
            ctx,
            out,
            add(var(r8), mul(rem(div(lane.clone(), i(8)), i(2)), i(8))),
        );
        let a_k = bind(ctx, out, mul(div(lane.clone(), i(16)), i(8)));
        // B: matrix j covers K 8 (j % 2) of tile j / 2.
        let b_col = bind(ctx, out, add(var(r8), mul(div(lane.clone(), i(16)), i(8))));
        let b_k = bind(ctx, out, mul(rem(div(lane, i(8)), i(2)), i(8)));
        let (tm, tn) = (accs.len() as i64, accs[0].len() as i64);
        // Reading each instruction step's fragments before the previous step's products
        // measured no faster (docs/perf.md): the assembler schedules them itself.
        for sub in 0..self.substeps {
            let a_frags: Vec<VarId> = (0..tm)
                .map(|t| {
                    let row = add(add(var(self.my_m), i(t * um)), var(a_row));
                    let at = self
                        .a
                        .element_at(&self.stage, row, var(r8), sub * uk, var(a_k));
                    bind(ctx, out, load_matrix(self.a.local, at, 4))
                })
                .collect();
            let mut b_frags = Vec::with_capacity(tn as usize);
            for t in (0..tn).step_by(2) {
                let pair = t + 1 < tn;
                let col = add(add(var(self.my_n), i(t * un)), var(b_col));
                let at = self
                    .b
                    .element_at(&self.stage, col, var(r8), sub * uk, var(b_k));
                let got = bind(
                    ctx,
                    out,
                    load_matrix(self.b.local, at, if pair { 4 } else { 2 }),
                );
                for half in 0..if pair { 2 } else { 1 } {
                    let lanes = (0..4).map(|e| extract(var(got), 4 * half + e)).collect();
                    b_frags.push(bind(ctx, out, Expr::Lanes(lanes)));
                }
            }
            self.products(out, accs, &a_frags, &b_frags);
        }
    }

    /// The lane's run of each of the warp's rows of A, by (tile, row offset).
    fn read_a(
        &self,
        ctx: &mut Ctx,
        out: &mut Vec<Stmt>,
        tm: i64,
    ) -> std::collections::HashMap<(i64, i64), VarId> {
        let unit = self.op.unit;
        let (um, _, _) = unit.shape();
        let mut runs = std::collections::HashMap::new();
        for t in 0..tm {
            for off in a_offsets(unit) {
                let row = add(add(var(self.my_m), i(t * um + off)), unit.a_row(Expr::Lane));
                let value = self.read_run(ctx, out, self.a, row);
                runs.insert((t, off), bind(ctx, out, value));
            }
        }
        runs
    }

    /// The lane's run of its column of tile `t` of B.
    fn read_b(&self, ctx: &mut Ctx, out: &mut Vec<Stmt>, t: i64) -> VarId {
        let unit = self.op.unit;
        let (_, un, _) = unit.shape();
        let col = add(add(var(self.my_n), i(t * un)), unit.b_col(Expr::Lane));
        let value = self.read_run(ctx, out, self.b, col);
        bind(ctx, out, value)
    }

    /// The lane's run along K of the step in `row` of `staged`.
    fn read_run(&self, ctx: &mut Ctx, out: &mut Vec<Stmt>, staged: &Staged, row: Expr) -> Expr {
        let first = mul(self.op.unit.k_group(Expr::Lane), i(self.run / staged.chunk));
        staged.read(ctx, out, &self.stage, row, first, self.run)
    }

    /// The A fragment of instruction step `sub`, per row tile.
    fn a_fragments(
        &self,
        ctx: &mut Ctx,
        out: &mut Vec<Stmt>,
        runs: &std::collections::HashMap<(i64, i64), VarId>,
        sub: i64,
    ) -> Vec<VarId> {
        let unit = self.op.unit;
        let (a_len, _, _) = unit.fragment_lanes();
        let tm = runs.len() as i64 / a_offsets(unit).len() as i64;
        (0..tm)
            .map(|t| {
                let lanes = (0..a_len as i64)
                    .map(|e| {
                        let (off, local) = unit.a_elem(e);
                        extract(var(runs[&(t, off)]), sub * unit.k_per_lane() + local)
                    })
                    .collect();
                bind(ctx, out, Expr::Lanes(lanes))
            })
            .collect()
    }

    /// The B fragment of instruction step `sub`, from a tile's run.
    fn b_fragment(&self, ctx: &mut Ctx, out: &mut Vec<Stmt>, run: VarId, sub: i64) -> VarId {
        let unit = self.op.unit;
        let (_, b_len, _) = unit.fragment_lanes();
        let lanes = (0..b_len as i64)
            .map(|e| extract(var(run), sub * unit.k_per_lane() + unit.b_elem(e)))
            .collect();
        bind(ctx, out, Expr::Lanes(lanes))
    }

    /// One instruction per pair of an A fragment and a B fragment, into `accs[ti][tj]`.
    fn products(&self, out: &mut Vec<Stmt>, accs: &[Vec<VarId>], a: &[VarId], b: &[VarId]) {
        for (ti, &af) in a.iter().enumerate() {
            for (tj, &bf) in b.iter().enumerate() {
                let acc = accs[ti][tj];
                out.push(Stmt::Assign {
                    var: acc,
                    value: mma(self.op, var(af), var(bf), var(acc)),
                });
            }
        }
    }
}

/// The element type of the buffer behind operand `n`: its own, or that of the half buffer
/// it widens (`applies` takes nothing else).
fn stored_type(ctx: &Ctx, n: NodeId) -> DType {
    let g = ctx.graph;
    match g.inputs(n).first() {
        Some(&x) if !ctx.node_buffer.contains_key(&n) => g.node(x).dtype,
        _ => g.node(n).dtype,
    }
}

/// The rows past `a_row` each lane's registers of A cover (0 and 8 on `mma.sync`).
fn a_offsets(unit: MatrixUnit) -> Vec<i64> {
    let (a_len, _, _) = unit.fragment_lanes();
    let mut v: Vec<i64> = (0..a_len as i64).map(|e| unit.a_elem(e).0).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `value` bound to a fresh variable by a `Let` appended to `out`.
pub(super) fn bind(ctx: &mut Ctx, out: &mut Vec<Stmt>, value: Expr) -> VarId {
    let var = ctx.fresh();
    out.push(Stmt::Let { var, value });
    var
}

fn load_matrix(local: Buf, index: Expr, count: u8) -> Expr {
    Expr::LoadMatrix {
        buf: local,
        index: Box::new(index),
        count,
    }
}

fn extract(vector: Expr, lane: i64) -> Expr {
    Expr::Extract {
        vector: Box::new(vector),
        lane: lane as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// The order this thread's lowerings take (`Order::asked`), so a test can cover
        /// each without the environment, which every test thread shares.
        pub(super) static ORDER: std::cell::Cell<Option<Order>> = const { std::cell::Cell::new(None) };
    }

    #[test]
    fn plans_fit_shared_memory_and_divide_k() {
        let unit = MatrixUnit::MmaM16N8K16;
        let (static_limit, sm_80) = (48 << 10, 99 << 10);
        // A 1B llama's prefill projection: small warps, four a block, three stages.
        let p = Plan::choose(unit, Some(512 * 5632), 2048, (2, 2), sm_80).unwrap();
        assert_eq!(
            (p.tiles, p.warps, p.substeps, p.stages),
            ((4, 4), (2, 2), 2, 3)
        );
        // 4096^3: large warps, four a block, steps of 64 along K, three stages, in pieces.
        let p = Plan::choose(unit, Some(4096 * 4096), 4096, (2, 2), sm_80).unwrap();
        assert_eq!(
            (p.tiles, p.warps, p.substeps, p.stages, p.order),
            ((4, 8), (2, 2), 4, 3, Order::Matrices)
        );
        // Where less shared memory is allowed (AMD's 64 KiB), fewer stages.
        let p = Plan::choose(unit, Some(4096 * 4096), 4096, (2, 2), 64 << 10).unwrap();
        assert_eq!((p.warps, p.stages), ((2, 2), 2));
        // K not a multiple of 64 keeps steps of 32; f32 activations take fewer warps where
        // only 48 KiB fit.
        let p = Plan::choose(unit, Some(4096 * 4096), 4096 + 32, (2, 2), sm_80).unwrap();
        assert_eq!((p.warps, p.substeps, p.stages), ((2, 2), 2, 3));
        let p = Plan::choose(unit, Some(4096 * 4096), 4096, (4, 2), static_limit).unwrap();
        assert_eq!((p.warps, p.substeps), ((1, 1), 4));
        let p = Plan::choose(unit, Some(4096 * 4096), 4096, (4, 2), sm_80).unwrap();
        assert_eq!((p.warps, p.substeps, p.stages), ((2, 2), 4, 2));
        for limit in [static_limit, sm_80] {
            for (outputs, sizes) in [(1 << 20, (4, 2)), (1 << 24, (4, 2)), (1 << 24, (2, 2))] {
                let p = Plan::choose(unit, Some(outputs), 4096, sizes, limit).unwrap();
                let (um, un, uk) = unit.shape();
                let rows =
                    p.warps.0 * p.tiles.0 * um * sizes.0 + p.warps.1 * p.tiles.1 * un * sizes.1;
                assert!(p.stages * uk * p.substeps * rows <= limit, "{p:?}");
            }
        }
    }

    /// Integer value of an index expression of the tiled kernel (block 0).
    fn eval(e: &Expr, env: &std::collections::HashMap<VarId, i64>, thread: i64) -> Option<i64> {
        use crate::kernel::Lit;
        Some(match e {
            Expr::Lit(Lit::I64(v)) => *v,
            Expr::Var(v) => *env.get(v)?,
            Expr::Thread => thread,
            Expr::Lane => thread % 32,
            Expr::GridIdx(_) => 0,
            Expr::Binary(op, a, b) => {
                let (a, b) = (eval(a, env, thread)?, eval(b, env, thread)?);
                crate::kernel::lockstep::int_op(*op, a, b).ok()?
            }
            _ => return None,
        })
    }

    /// Shared memory serves a warp's read in one pass per 128 bytes (a quarter warp of
    /// 16-byte reads, a whole warp of 4-byte ones) unless two lanes of a pass read different
    /// words of one of its 32 banks. Every read of half tiles, in either order and both
    /// plans, must be free of such conflicts: checked on warp 0's first step, each lane's
    /// indices evaluated as the kernel computes them.
    #[test]
    fn reads_of_half_tiles_meet_no_bank_conflicts() {
        use std::collections::HashMap;
        for (m, n, k) in [(256, 384, 512), (4096, 4096, 128)] {
            for order in [Order::Whole, Order::Pieces, Order::Matrices] {
                ORDER.set(Some(order));
                let kernel = tiled_kernel("f16", m, n, k);
                ORDER.set(None);
                let mut envs: Vec<HashMap<VarId, i64>> = vec![HashMap::new(); 32];
                let bind_all = |envs: &mut Vec<HashMap<VarId, i64>>, var: VarId, value: &Expr| {
                    for (lane, env) in envs.iter_mut().enumerate() {
                        if let Some(v) = eval(value, env, lane as i64) {
                            env.insert(var, v);
                        }
                    }
                };
                let mut body = None;
                for st in &kernel.body {
                    match st {
                        Stmt::Let { var, value } => bind_all(&mut envs, *var, value),
                        Stmt::Loop { var, body: b, .. } => {
                            envs.iter_mut().for_each(|e| {
                                e.insert(*var, 0);
                            });
                            body = Some(b);
                        }
                        _ => {}
                    }
                }
                let mut reads = 0;
                for st in body.expect("the loop along K") {
                    let Stmt::Let { var, value } = st else {
                        continue;
                    };
                    // (index, bytes each lane reads, lanes that read): `ldmatrix` reads
                    // 16 bytes for each lane naming a row, a matrix of 8 rows a pass.
                    let (index, bytes, readers) = match value {
                        Expr::Load {
                            buf: Buf::Local(_),
                            index,
                            lanes,
                        } => (index, *lanes as i64 * 2, 32),
                        Expr::LoadMatrix { index, count, .. } => (index, 16, 8 * *count as usize),
                        _ => {
                            bind_all(&mut envs, *var, value);
                            continue;
                        }
                    };
                    reads += 1;
                    let per_pass = (128 / bytes) as usize;
                    let words: Vec<Vec<i64>> = (0..readers)
                        .map(|lane| {
                            let at = eval(index, &envs[lane], lane as i64).unwrap() * 2;
                            (at / 4..(at + bytes) / 4).collect()
                        })
                        .collect();
                    for pass in words.chunks(per_pass) {
                        let mut banks: HashMap<i64, i64> = HashMap::new();
                        for &w in pass.iter().flatten() {
                            let held = *banks.entry(w % 32).or_insert(w);
                            assert_eq!(
                                held, w,
                                "{m}x{k}x{n} {order:?}: words {held} and {w} share a bank"
                            );
                        }
                    }
                }
                assert!(reads >= 8, "{m}x{k}x{n} {order:?}: {reads} reads");
            }
        }
    }

    /// The staging checked without a GPU, on block 0's first step along K: over every thread,
    /// the copies fill each element of stage 0 of both shared arrays once, and every lane
    /// reads, for each row of A (column of B) it holds, its K group's `run` consecutive
    /// elements of that row, the warp reading each element of its rows once.
    #[test]
    fn staged_tiles_hold_what_each_lane_reads() {
        use std::collections::{HashMap, HashSet};
        for (a_type, m, n, k) in [
            ("f16", 256, 384, 512),
            ("f32", 256, 384, 512),
            ("f16", 4096, 4096, 128),
        ] {
            ORDER.set(Some(Order::Whole));
            let kernel = &tiled_kernel(a_type, m, n, k);
            ORDER.set(None);
            let threads = kernel.block_threads.unwrap() as i64;
            let mut env = HashMap::new();
            // The copies of stage 0: position -> (operand row, K position).
            let mut held: Vec<HashMap<i64, (i64, i64)>> = vec![HashMap::new(); 2];
            let stage_len = |l: usize| kernel.locals[l].len as i64;
            let mut loop_body = None;
            // Stage 0's copies are the ones before the first await (or the loop).
            let mut first_stage = true;
            for st in &kernel.body {
                match st {
                    Stmt::Await { .. } => first_stage = false,
                    Stmt::Let { var, value } => {
                        if let Some(v) = eval(value, &env, 0) {
                            env.insert(*var, v);
                        }
                    }
                    Stmt::Copy {
                        dst: Buf::Local(l),
                        dst_index,
                        src_index,
                        lanes,
                        ..
                    } if first_stage => {
                        for th in 0..threads {
                            let at = eval(dst_index, &env, th).unwrap();
                            let from = eval(src_index, &env, th).unwrap();
                            for j in 0..*lanes as i64 {
                                let place = (from + j) / k;
                                let old = held[*l as usize].insert(at + j, (place, (from + j) % k));
                                assert!(old.is_none(), "{a_type}: element {} copied twice", at + j);
                            }
                        }
                    }
                    Stmt::Loop { var, body, .. } => loop_body = Some((*var, body)),
                    _ => {}
                }
            }
            let (kk, body) = loop_body.expect("the loop along K");
            env.insert(kk, 0);
            let mut reads: HashMap<(i64, usize, i64), Vec<i64>> = HashMap::new();
            for st in body {
                let Stmt::Let { var, value } = st else {
                    continue;
                };
                if let Some(v) = eval(value, &env, 0) {
                    env.insert(*var, v);
                    continue;
                }
                let Expr::Load {
                    buf: Buf::Local(l),
                    index,
                    lanes,
                } = value
                else {
                    continue;
                };
                for th in 0..threads {
                    let at = eval(index, &env, th).unwrap();
                    for j in 0..*lanes as i64 {
                        let &(row, kp) = held[*l as usize].get(&(at + j)).unwrap_or_else(|| {
                            panic!("{a_type}: a read of an element no copy wrote")
                        });
                        reads.entry((th, *l as usize, row)).or_default().push(kp);
                    }
                }
            }
            let mut per_warp: HashMap<(i64, usize), HashSet<(i64, i64)>> = HashMap::new();
            for ((th, l, row), mut ks) in reads {
                ks.sort_unstable();
                let lane = th % 32;
                let run = ks.len() as i64;
                let first = (lane % 4) * run;
                assert_eq!(
                    ks,
                    (first..first + run).collect::<Vec<_>>(),
                    "{a_type}: thread {th}'s row {row}"
                );
                assert_eq!(row % 8, lane / 4, "{a_type}: thread {th} reads row {row}");
                for kp in ks {
                    assert!(
                        per_warp.entry((th / 32, l)).or_default().insert((row, kp)),
                        "{a_type}: read twice"
                    );
                }
            }
            assert_eq!(
                per_warp.len() as i64,
                threads / 32 * 2,
                "{a_type}: reads of both operands by every warp"
            );
            for ((w, l), got) in per_warp {
                let rows: HashSet<i64> = got.iter().map(|&(r, _)| r).collect();
                let ks: HashSet<i64> = got.iter().map(|&(_, kp)| kp).collect();
                assert_eq!(
                    got.len(),
                    rows.len() * ks.len(),
                    "{a_type}: warp {w}'s tile of operand {l}"
                );
                assert!(
                    rows.len() >= 32
                        && rows.iter().max().unwrap() - rows.iter().min().unwrap()
                            < rows.len() as i64
                );
            }
            for (l, h) in held.iter().enumerate() {
                let per_stage = h.len() as i64;
                assert!(
                    per_stage > 0 && stage_len(l) % per_stage == 0,
                    "{a_type}: local {l}"
                );
                assert!(
                    h.keys().all(|&p| p < per_stage),
                    "{a_type}: stage 0 of local {l} is its first {per_stage}"
                );
            }
        }
    }

    /// The matmul of `a_type` A `[m, k]` and f16 B `[n, k]`, lowered for `cuda:sm_90`.
    fn tiled_kernel(a_type: &str, m: i64, n: i64, k: i64) -> Kernel {
        tiled_kernel_for("cuda:sm_90", a_type, m, n, k)
    }

    fn tiled_kernel_for(target: &str, a_type: &str, m: i64, n: i64, k: i64) -> Kernel {
        let t: crate::Target = target.parse().unwrap();
        let schedule = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
        let cast = if a_type == "f32" {
            "%bf = cast %b dtype=f32\n"
        } else {
            ""
        };
        let b = if a_type == "f32" { "%bf" } else { "%b" };
        let src = format!(
            "kir 1\n%a = input \"a\" {a_type}[{m},{k}]\n%b = input \"b\" f16[{n},{k}]\n{cast}\
             %c = matmul %a, {b} transpose_a=false transpose_b=true\noutput \"c\" = %c\n"
        );
        let g = kiln_ir::text::parse(&src).unwrap();
        let lowered = super::super::lower(&g, schedule).unwrap();
        lowered
            .kernels
            .into_iter()
            .find(|kr| kr.locals.iter().any(|l| l.shared))
            .unwrap_or_else(|| panic!("{a_type} {m}x{k}x{n}: no tiled kernel"))
    }

    /// The tiled kernel run by the lockstep interpreter (every thread of a block, `Mma` from
    /// the unit's layouts, `GroupMma` through the swizzled address map) against a plain
    /// product of the same operands rounded to f16: partial tiles, f32 activations, and two
    /// blocks of the large matmuls' plans. On `sm_90a` half operands take warpgroup
    /// instructions and f32 activations `mma.sync`.
    #[test]
    fn tiled_matmuls_compute_the_product() {
        let round = |x: f32| half::f16::from_f32(x).to_f32();
        let (hopper, warps) = ("cuda:sm_90a", "cuda:sm_90");
        for (target, a_type, m, n, k, some_blocks, order) in [
            (warps, "f16", 70, 100, 96, false, Order::Whole),
            (warps, "f16", 70, 100, 96, false, Order::Pieces),
            (warps, "f32", 200, 300, 256, false, Order::Whole),
            (warps, "f32", 200, 300, 256, false, Order::Pieces),
            (warps, "f16", 4096, 4096, 64, true, Order::Whole),
            (warps, "f16", 4096, 4096, 128, true, Order::Pieces),
            (warps, "f16", 70, 100, 96, false, Order::Matrices),
            (warps, "f32", 200, 300, 256, false, Order::Matrices),
            (warps, "f16", 4096, 4096, 128, true, Order::Matrices),
            (hopper, "f16", 200, 300, 192, false, Order::Matrices),
            (hopper, "f16", 70, 100, 64, false, Order::Matrices),
            (hopper, "f32", 200, 300, 256, false, Order::Matrices),
            (hopper, "f16", 4096, 4096, 256, true, Order::Matrices),
            // A batch of products left in flight across each step.
            (hopper, "f16+", 200, 300, 384, false, Order::Matrices),
            (hopper, "f16+", 4096, 4096, 384, true, Order::Matrices),
        ] {
            let pending = a_type.ends_with('+');
            let a_type = a_type.trim_end_matches('+');
            ORDER.set(Some(order));
            super::super::group_matrix::PENDING.set(Some(pending as i64));
            let kernel = tiled_kernel_for(target, a_type, m, n, k);
            ORDER.set(None);
            super::super::group_matrix::PENDING.set(None);
            if pending {
                let waits = kernel.to_string().matches("group wait <= 1").count();
                assert_eq!(waits, 1, "{target} {m}x{k}x{n}: a wait leaving one batch");
            }
            let grouped = crate::kernel::gpu::has_group_mma(&kernel.body);
            assert_eq!(
                grouped,
                target == hopper && a_type == "f16",
                "{target} {a_type}: warpgroup instructions"
            );
            let value = |seed: i64, at: i64| ((at * 7919 + seed) % 1001 - 500) as f32 / 333.0;
            let a: Vec<f32> = (0..m * k)
                .map(|x| {
                    if a_type == "f16" {
                        round(value(1, x))
                    } else {
                        value(1, x)
                    }
                })
                .collect();
            let b: Vec<f32> = (0..n * k).map(|x| round(value(2, x))).collect();
            let mut args: Vec<Vec<f32>> = kernel
                .args
                .iter()
                .map(|p| match (p.writes, p.name.as_str()) {
                    (true, _) => vec![f32::NAN; (m * n) as usize],
                    (false, "b0") => a.clone(),
                    (false, "b1") => b.clone(),
                    other => panic!("argument {other:?}"),
                })
                .collect();
            let extents: Vec<i64> = kernel
                .grid
                .iter()
                .map(|g| eval(g, &Default::default(), 0).unwrap())
                .collect();
            let points: Vec<Vec<i64>> = if some_blocks {
                vec![vec![0, 0], extents.iter().map(|e| e - 1).collect()]
            } else {
                (0..extents[0])
                    .flat_map(|r| (0..extents[1]).map(move |c| vec![r, c]))
                    .collect()
            };
            let threads = kernel.block_threads.unwrap() as usize;
            crate::kernel::lockstep::run(&kernel, (threads, 32), &[], &mut args, &points)
                .unwrap_or_else(|e| panic!("{target} {a_type} {m}x{k}x{n} {order:?}: {e}"));
            let c = &args[kernel.args.iter().position(|p| p.writes).unwrap()];
            let mut written = 0;
            for r in 0..m {
                for col in 0..n {
                    let got = c[(r * n + col) as usize];
                    if got.is_nan() {
                        continue;
                    }
                    written += 1;
                    let want: f64 = (0..k)
                        .map(|kk| {
                            round(a[(r * k + kk) as usize]) as f64
                                * b[(col * k + kk) as usize] as f64
                        })
                        .sum();
                    assert!(
                        (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{target} {a_type} {m}x{k}x{n} {order:?}: c[{r}][{col}] = {got}, want {want}"
                    );
                }
            }
            let whole = if some_blocks {
                let (rows, cols) = (m / extents[0], n / extents[1]);
                2 * rows * cols
            } else {
                m * n
            };
            assert_eq!(
                written, whole,
                "{a_type} {m}x{k}x{n} {order:?}: outputs written"
            );
        }
    }
}
