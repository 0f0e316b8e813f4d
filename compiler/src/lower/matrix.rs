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
//! from global memory once per block rather than once per warp. Per step each lane reads its
//! few consecutive elements of every row of A and column of B it holds (`kernel::matrix`
//! relabels K so they are consecutive: one 16-byte read of halves) and issues one
//! instruction per tile pair. Hopper's `wgmma` is the next step (docs/perf.md).
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

/// Bytes of shared memory a block may declare statically on every GPU kiln targets (CUDA's
/// limit without opting in per kernel; AMD's LDS holds 64 KiB).
const SHARED_BYTES: i64 = 48 * 1024;

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
}

impl Plan {
    /// Two plans, from measurements on one H100 (2026-12-06, docs/perf.md):
    /// - **large** matmuls ([`LARGE_OUTPUTS`] or more): warps of 64 x 64 outputs (all 255
    ///   registers), two a block, steps of 64 along K, two stages: 4096^3 at 331-334
    ///   TFLOP/s, where four warps a block ran 286-298 and steps of 32 with blocks of two
    ///   293;
    /// - otherwise warps of 64 x 32 outputs (166 registers), four a block, steps of 32,
    ///   three stages: 512 x 2048 x 5632 (a 1B llama's prefill) at 215-218 TFLOP/s where the
    ///   large plan ran 172-188, since blocks of 128 x 128 outputs leave much of the GPU
    ///   idle there.
    ///
    /// `KILN_GPU_MMA_LARGE=0|1`, `KILN_GPU_MMA_WARP_COLS=32|64`, `KILN_GPU_MMA_WARPS_M`,
    /// `_N`, `KILN_GPU_MMA_SUBSTEPS` and `KILN_GPU_MMA_STAGES` ask for others at compile
    /// time, to compare on a GPU; what does not fit K or shared memory is not taken.
    fn choose(unit: MatrixUnit, outputs: Option<i64>, k: i64, sizes: (i64, i64)) -> Option<Plan> {
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
        let natural_warps = if large { (2, 1) } else { (2, 2) };
        let asked = (
            super::knob("KILN_GPU_MMA_WARPS_M", natural_warps.0).clamp(1, 4),
            super::knob("KILN_GPU_MMA_WARPS_N", natural_warps.1).clamp(1, 4),
        );
        let warps = [asked, natural_warps, (1, 1)]
            .into_iter()
            .find(|&w| 2 * step_bytes(w) <= SHARED_BYTES)?;
        let fit = SHARED_BYTES / step_bytes(warps);
        let natural_stages = if large { 2 } else { MAX_STAGES.min(fit) };
        Some(Plan {
            tiles: (64 / um, cols / un),
            warps,
            substeps,
            stages: super::knob("KILN_GPU_MMA_STAGES", natural_stages).clamp(2, fit),
        })
    }
}

/// One operand's steps in shared memory: per stage, `rows` rows (of A, or of B's
/// transposed storage) of one step along K, in 16-byte chunks.
struct Staged {
    local: Buf,
    rows: i64,
    /// Elements per 16-byte chunk.
    chunk: i64,
    /// Chunks per row.
    per_row: i64,
}

impl Staged {
    fn new(local: u32, dtype: DType, rows: i64, step: i64) -> Staged {
        let chunk = 16 / dtype.size_bytes() as i64;
        Staged {
            local: Buf::Local(local),
            rows,
            chunk,
            per_row: step / chunk,
        }
    }

    fn stage_len(&self) -> i64 {
        self.rows * self.per_row * self.chunk
    }

    /// Element index of `chunk` of `row` in `stage`. A quarter warp's reads (eight lanes,
    /// 128 bytes, the most shared memory serves at once) cover two rows of four lanes on
    /// `mma.sync`; in rows of 128 bytes or more those would meet in the same banks, so odd
    /// rows swap neighbouring chunks (the copies store through the same map).
    fn at(&self, stage: Expr, row: Expr, chunk: Expr) -> Expr {
        let chunk = if self.per_row * 16 >= 128 {
            bin(BOp::Xor, chunk, rem(row.clone(), i(2)))
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

/// The tiled matmul: a block of warps per tile of C (see the module doc).
pub(super) fn kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    name: String,
    op: MatrixOp,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let unit = op.unit;
    let nb = ops.nb;
    let (um, un, uk) = unit.shape();
    let outputs = ops
        .out_shape
        .iter()
        .map(|d| d.as_known())
        .product::<Option<i64>>();
    let (a_dtype, b_dtype) = (stored_type(ctx, ops.a), stored_type(ctx, ops.b));
    let k_total = k_dim(ops)
        .as_known()
        .ok_or_else(|| LowerError::Internal("matrix matmul with a symbolic K".into()))?;
    let sizes = (a_dtype.size_bytes() as i64, b_dtype.size_bytes() as i64);
    let plan = Plan::choose(unit, outputs, k_total, sizes)
        .ok_or_else(|| LowerError::Internal("no matrix-unit plan fits shared memory".into()))?;
    let (tm, tn) = plan.tiles;
    let s = plan.substeps;
    let kl = unit.k_per_lane();
    let run = kl * s;
    let step = uk * s;
    let (a_len, b_len, c_len) = unit.fragment_lanes();
    let (warp_m, warp_n) = (tm * um, tn * un);
    let (wm, wn) = plan.warps;
    let stages = plan.stages;
    let warp = unit.warp() as i64;
    let threads = wm * wn * warp;
    let (block_m, block_n) = (wm * warp_m, wn * warp_n);
    let sa = Staged::new(0, a_dtype, block_m, step);
    let sb = Staged::new(1, b_dtype, block_n, step);
    let m = dim_expr(ctx, &ops.out_shape[nb]);
    let n = dim_expr(ctx, &ops.out_shape[nb + 1]);
    let steps = k_total / step;
    let mut grid: Vec<GridDim> = ops.out_shape.iter().map(GridDim::of).collect();
    grid[nb].ceil_div = block_m;
    grid[nb + 1].ceil_div = block_n;
    let row0 = mul(Expr::GridIdx(nb as u32), i(block_m));
    let col0 = mul(Expr::GridIdx(nb as u32 + 1), i(block_n));
    let lane = Expr::Lane;
    let mut body = Vec::new();
    let warp_id = div(Expr::Thread, i(warp));
    let my_m = bind(ctx, &mut body, mul(div(warp_id.clone(), i(wn)), i(warp_m)));
    let my_n = bind(ctx, &mut body, mul(rem(warp_id, i(wn)), i(warp_n)));

    let accs: Vec<Vec<VarId>> = (0..tm)
        .map(|_| (0..tn).map(|_| ctx.fresh()).collect())
        .collect();
    for &acc in accs.iter().flatten() {
        body.push(Stmt::Decl {
            var: acc,
            init: splat(f(0.0), c_len),
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
    // Prologue: the first `stages - 1` steps, each its own batch.
    let in_flight = (stages - 2) as u8;
    for st in 0..(stages - 1).min(steps) {
        copies(ctx, i(st), i(st), &mut body)?;
        if st < stages - 2 {
            body.push(Stmt::Await { in_flight });
        }
    }

    // Each step: wait for its copies (and for every warp to be done with the stage the
    // next copies overwrite), start the copies `stages - 1` steps ahead, multiply.
    let kk = ctx.fresh();
    let mut each = vec![Stmt::Await { in_flight }];
    let ahead = add(var(kk), i(stages - 1));
    let mut next = Vec::new();
    copies(ctx, rem(ahead.clone(), i(stages)), ahead.clone(), &mut next)?;
    each.push(Stmt::If {
        cond: cmp(Cmp::Lt, ahead, i(steps)),
        then: next,
        otherwise: Vec::new(),
    });
    let stage = bind(ctx, &mut each, rem(var(kk), i(stages)));
    let stage = var(stage);
    let mut a_runs = std::collections::HashMap::new();
    for t in 0..tm {
        for off in a_offsets(unit) {
            let row = add(add(var(my_m), i(t * um + off)), unit.a_row(lane.clone()));
            let chunk0 = mul(unit.k_group(lane.clone()), i(run / sa.chunk));
            let value = sa.read(ctx, &mut each, &stage, row, chunk0, run);
            a_runs.insert((t, off), bind(ctx, &mut each, value));
        }
    }
    let mut b_runs = Vec::new();
    for t in 0..tn {
        let col = add(add(var(my_n), i(t * un)), unit.b_col(lane.clone()));
        let chunk0 = mul(unit.k_group(lane.clone()), i(run / sb.chunk));
        let value = sb.read(ctx, &mut each, &stage, col, chunk0, run);
        b_runs.push(bind(ctx, &mut each, value));
    }
    for sub_step in 0..s {
        let a_frags: Vec<VarId> = (0..tm)
            .map(|t| {
                let lanes = (0..a_len as i64)
                    .map(|e| {
                        let (off, local) = unit.a_elem(e);
                        extract(var(a_runs[&(t, off)]), sub_step * kl + local)
                    })
                    .collect();
                bind(ctx, &mut each, Expr::Lanes(lanes))
            })
            .collect();
        let b_frags: Vec<VarId> = b_runs
            .iter()
            .map(|&r| {
                let lanes = (0..b_len as i64)
                    .map(|e| extract(var(r), sub_step * kl + unit.b_elem(e)))
                    .collect();
                bind(ctx, &mut each, Expr::Lanes(lanes))
            })
            .collect();
        for (ti, &af) in a_frags.iter().enumerate() {
            for (tj, &bf) in b_frags.iter().enumerate() {
                let acc = accs[ti][tj];
                each.push(Stmt::Assign {
                    var: acc,
                    value: mma(op, var(af), var(bf), var(acc)),
                });
            }
        }
    }
    body.push(Stmt::Loop {
        var: kk,
        extent: i(steps),
        kind: crate::kernel::LoopKind::Serial,
        vector: 1,
        body: each,
    });

    // Each lane stores its registers of C that fall inside the matrix.
    for (ti, row_accs) in accs.iter().enumerate() {
        for (tj, &acc) in row_accs.iter().enumerate() {
            for e in 0..c_len as i64 {
                let (r, c) = unit.c_elem(lane.clone(), e);
                let row = add(add(add(row0.clone(), var(my_m)), i(ti as i64 * um)), r);
                let col = add(add(add(col0.clone(), var(my_n)), i(tj as i64 * un)), c);
                let index = ops.c_index(ctx, row.clone(), col.clone());
                let store = Stmt::Store {
                    buf: out,
                    value: ops.result(extract(var(acc), e), &index),
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
    }
    grid.truncate(nb + 2);
    let (mut kernel, args) = ctx.finish(name, grid, body, 1);
    kernel.locals = [(a_dtype, &sa), (b_dtype, &sb)]
        .map(|(dtype, st)| LocalBuf {
            dtype,
            len: (stages * st.stage_len()) as u32,
            shared: true,
        })
        .to_vec();
    kernel.block_threads = Some(threads as u32);
    Ok((kernel, args))
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
fn bind(ctx: &mut Ctx, out: &mut Vec<Stmt>, value: Expr) -> VarId {
    let var = ctx.fresh();
    out.push(Stmt::Let { var, value });
    var
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

    #[test]
    fn plans_fit_shared_memory_and_divide_k() {
        let unit = MatrixUnit::MmaM16N8K16;
        // A 1B llama's prefill projection: small warps, four a block, three stages.
        let p = Plan::choose(unit, Some(512 * 5632), 2048, (2, 2)).unwrap();
        assert_eq!(
            (p.tiles, p.warps, p.substeps, p.stages),
            ((4, 4), (2, 2), 2, 3)
        );
        // 4096^3: large warps, two a block, steps of 64 along K, two stages.
        let p = Plan::choose(unit, Some(4096 * 4096), 4096, (2, 2)).unwrap();
        assert_eq!(
            (p.tiles, p.warps, p.substeps, p.stages),
            ((4, 8), (2, 1), 4, 2)
        );
        // K not a multiple of 64 keeps steps of 32; f32 activations take one warp a block.
        let p = Plan::choose(unit, Some(4096 * 4096), 4096 + 32, (2, 2)).unwrap();
        assert_eq!((p.warps, p.substeps), ((2, 1), 2));
        let p = Plan::choose(unit, Some(4096 * 4096), 4096, (4, 2)).unwrap();
        assert_eq!((p.warps, p.substeps), ((1, 1), 4));
        for (outputs, sizes) in [(1 << 20, (4, 2)), (1 << 24, (4, 2)), (1 << 24, (2, 2))] {
            let p = Plan::choose(unit, Some(outputs), 4096, sizes).unwrap();
            let (um, un, uk) = unit.shape();
            let rows = p.warps.0 * p.tiles.0 * um * sizes.0 + p.warps.1 * p.tiles.1 * un * sizes.1;
            assert!(p.stages * uk * p.substeps * rows <= SHARED_BYTES, "{p:?}");
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
            let kernel = &tiled_kernel(a_type, m, n, k);
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
        let t: crate::Target = "cuda:sm_90".parse().unwrap();
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
    /// the unit's layouts) against a plain product of the same operands rounded to f16:
    /// partial tiles, f32 activations, and two blocks of the large matmuls' plan.
    #[test]
    fn tiled_matmuls_compute_the_product() {
        let round = |x: f32| half::f16::from_f32(x).to_f32();
        for (a_type, m, n, k, some_blocks) in [
            ("f16", 70, 100, 96, false),
            ("f32", 200, 300, 256, false),
            ("f16", 4096, 4096, 64, true),
        ] {
            let kernel = tiled_kernel(a_type, m, n, k);
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
            crate::kernel::lockstep::run(&kernel, threads, 32, &mut args, &points)
                .unwrap_or_else(|e| panic!("{a_type} {m}x{k}x{n}: {e}"));
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
                        "{a_type} {m}x{k}x{n}: c[{r}][{col}] = {got}, want {want}"
                    );
                }
            }
            let whole = if some_blocks {
                let (rows, cols) = (m / extents[0], n / extents[1]);
                2 * rows * cols
            } else {
                m * n
            };
            assert_eq!(written, whole, "{a_type} {m}x{k}x{n}: outputs written");
        }
    }
}
