//! The GPU matmul on matrix instructions (`Expr::Mma`), for targets whose schedule has a
//! matrix unit and matmuls of half matrices (A `[.., m, k]`, B stored transposed
//! `[.., n, k]`: the LLM layout, and the one whose rows of both operands run along K; B
//! f16 or bf16, A the same or f32 activations against f16 weights, see `applies`).
//!
//! Each grid point is one warp and owns a block of instruction tiles of C (`tiles`: 64 x 64
//! elements on every unit kiln knows), held in registers across the whole K
//! loop. Per step along K each lane loads its few consecutive elements of every row of A
//! and column of B it holds (`kernel::matrix` relabels K so they are consecutive: 16-byte
//! loads) and issues one instruction per tile pair. Operands come straight from global
//! memory; neighbouring warps of a block share rows of A through the L1 cache. Staging
//! tiles through shared memory (`cp.async`, `ldmatrix`) and Hopper's `wgmma` are the next
//! steps (docs/perf.md).
//!
//! Rows past M and columns past N read the last row or column (in bounds) and are not
//! stored; K must be a known multiple of the step (every LLM width is).

use super::inline::dim_expr;
use super::matmul::{k_dim, run_from, Operands};
use super::{Ctx, GridDim, LowerError};
use crate::kernel::e::*;
use crate::kernel::matrix::{MatrixOp, MatrixUnit};
use crate::kernel::{Buf, Cmp, Expr, Kernel, Stmt, VarId};
use kiln_ir::{DType, NodeId};

/// Bytes each lane loads per row of A or column of B and step: 16, the widest load.
const LOAD_BYTES: i64 = 16;

/// Instruction tiles of C per warp, (along M, along N): a 64 x 64 block of C.
fn tiles(unit: MatrixUnit) -> (i64, i64) {
    let (m, n, _) = unit.shape();
    (64 / m, 64 / n)
}

/// Steps of the instruction along K per loaded vector, so a lane's load is `LOAD_BYTES`.
fn substeps(unit: MatrixUnit) -> i64 {
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
    let step = k * substeps(unit);
    let k_fits = k_dim(ops).as_known().is_some_and(|kd| kd % step == 0);
    (a_fits && k_fits).then_some(MatrixOp { unit, input })
}

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
    let (tm, tn) = tiles(unit);
    let s = substeps(unit);
    let kl = unit.k_per_lane();
    let run = kl * s;
    let (a_len, b_len, c_len) = unit.fragment_lanes();
    let m = dim_expr(ctx, &ops.out_shape[nb]);
    let n = dim_expr(ctx, &ops.out_shape[nb + 1]);
    let k_total = k_dim(ops)
        .as_known()
        .ok_or_else(|| LowerError::Internal("matrix matmul with a symbolic K".into()))?;
    let mut grid: Vec<GridDim> = ops.out_shape.iter().map(GridDim::of).collect();
    grid[nb].ceil_div = tm * um;
    grid[nb + 1].ceil_div = tn * un;
    let row0 = mul(Expr::GridIdx(nb as u32), i(tm * um));
    let col0 = mul(Expr::GridIdx(nb as u32 + 1), i(tn * un));
    let lane = Expr::Lane;
    let mut body = Vec::new();

    // Where each lane's K run starts within a step, and the rows and columns it reads.
    let kk = ctx.fresh();
    let k_start = add(
        mul(var(kk), i(uk * s)),
        mul(unit.k_group(lane.clone()), i(run)),
    );
    let a_offsets: Vec<i64> = {
        let mut v: Vec<i64> = (0..a_len as i64).map(|e| unit.a_elem(e).0).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut a_rows = Vec::new(); // (tile, offset) -> var holding the row read
    for t in 0..tm {
        for &off in &a_offsets {
            let row = add(add(row0.clone(), i(t * um + off)), unit.a_row(lane.clone()));
            let v = bind(ctx, &mut body, min(row, sub(m.clone(), i(1))));
            a_rows.push(((t, off), v));
        }
    }
    let mut b_cols = Vec::new();
    for t in 0..tn {
        let col = add(add(col0.clone(), i(t * un)), unit.b_col(lane.clone()));
        let v = bind(ctx, &mut body, min(col, sub(n.clone(), i(1))));
        b_cols.push(v);
    }
    let accs: Vec<Vec<VarId>> = (0..tm)
        .map(|_| (0..tn).map(|_| ctx.fresh()).collect())
        .collect();
    for &acc in accs.iter().flatten() {
        body.push(Stmt::Decl {
            var: acc,
            init: splat(f(0.0), c_len),
        });
    }

    // One step along K: load the runs, then one instruction per tile pair and substep.
    let mut step = Vec::new();
    let mut a_runs = std::collections::HashMap::new();
    for &((t, off), row) in &a_rows {
        let value = run_load(ctx, ops, true, var(row), k_start.clone(), run)?;
        a_runs.insert((t, off), bind(ctx, &mut step, value));
    }
    let mut b_runs = Vec::new();
    for &col in &b_cols {
        let value = run_load(ctx, ops, false, var(col), k_start.clone(), run)?;
        b_runs.push(bind(ctx, &mut step, value));
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
                bind(ctx, &mut step, Expr::Lanes(lanes))
            })
            .collect();
        let b_frags: Vec<VarId> = b_runs
            .iter()
            .map(|&r| {
                let lanes = (0..b_len as i64)
                    .map(|e| extract(var(r), sub_step * kl + unit.b_elem(e)))
                    .collect();
                bind(ctx, &mut step, Expr::Lanes(lanes))
            })
            .collect();
        for (ti, &af) in a_frags.iter().enumerate() {
            for (tj, &bf) in b_frags.iter().enumerate() {
                let acc = accs[ti][tj];
                step.push(Stmt::Assign {
                    var: acc,
                    value: mma(op, var(af), var(bf), var(acc)),
                });
            }
        }
    }
    body.push(Stmt::Loop {
        var: kk,
        extent: i(k_total / (uk * s)),
        kind: crate::kernel::LoopKind::Serial,
        vector: 1,
        body: step,
    });

    // Each lane stores its registers of C that fall inside the matrix.
    let m_whole = ops.out_shape[nb]
        .as_known()
        .is_some_and(|d| d % (tm * um) == 0);
    let n_whole = ops.out_shape[nb + 1]
        .as_known()
        .is_some_and(|d| d % (tn * un) == 0);
    for (ti, row_accs) in accs.iter().enumerate() {
        for (tj, &acc) in row_accs.iter().enumerate() {
            for e in 0..c_len as i64 {
                let (r, c) = unit.c_elem(lane.clone(), e);
                let row = add(add(row0.clone(), i(ti as i64 * um)), r);
                let col = add(add(col0.clone(), i(tj as i64 * un)), c);
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
                .reduce(|a, b| bin(crate::kernel::BOp::And, a, b));
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
    Ok(ctx.finish(name, grid, body, 1))
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

/// `len` consecutive elements along K of a row of A (or of B's transposed storage).
fn run_load(
    ctx: &mut Ctx,
    ops: &Operands,
    a: bool,
    line: Expr,
    k: Expr,
    len: i64,
) -> Result<Expr, LowerError> {
    let first = if a {
        ops.a_at(ctx, line, k)?
    } else {
        ops.b_at(ctx, k, line)?
    };
    run_from(first, len as u8)
}
