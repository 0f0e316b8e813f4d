//! One kernel per materialised computed node: elementwise maps, reductions, softmax and
//! the norms. Matmul has its own file (it is scheduled differently per target).

use super::inline::{compute_at, dim_expr, flat_index, value_at};
use super::{unsupported, BufferInfo, BufferKind, Ctx, GridDim, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Buf, Expr, Kernel, LoopKind, RedOp, Stmt, UOp, VarId};
use kiln_ir::{DType, Dim, NodeId, Op, ReduceOp};

/// Grid points are split over threads in chunks of at least this many elements' work.
const MIN_CHUNK_ELEMS: i64 = 8192;

pub fn kernel_for(
    ctx: &mut Ctx,
    node: NodeId,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let n = ctx.graph.node(node).clone();
    match &n.op {
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => super::matmul::matmul(ctx, node, *transpose_a, *transpose_b, name),
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => reduce(ctx, node, *op, axes, *keep_dims, name),
        Op::Softmax { axis } => softmax(ctx, node, *axis, name),
        Op::RmsNorm { eps } => norm(ctx, node, *eps, false, name),
        Op::LayerNorm { eps } => norm(ctx, node, *eps, true, name),
        Op::Quantize { .. } => super::quantize::quantize(ctx, node, name),
        Op::Rope { .. } if !ctx.schedule.gpu && rope_heads(&n.shape).is_some() => {
            let out = ctx.begin(node);
            let (grid, body, chunk) = rope_rows(ctx, &n, node, out)?;
            Ok(ctx.finish(name, grid, body, chunk))
        }
        op if op.is_injective() => {
            let out = ctx.begin(node);
            let (grid, body, chunk) =
                map_over(ctx, &n, |ctx, idx| compute_at(ctx, node, idx), out)?;
            Ok(ctx.finish(name, grid, body, chunk))
        }
        _ => Err(unsupported(
            ctx.graph,
            node,
            "no kernel lowering for this op",
        )),
    }
}

/// A kernel writing output `out_idx` as a copy of `src` (for outputs that are inputs,
/// weights, constants, or another output).
pub fn copy_kernel(
    ctx: &mut Ctx,
    _node: NodeId,
    src: NodeId,
    out_idx: usize,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let n = ctx.graph.node(src).clone();
    let global = ctx.buffers.len();
    ctx.buffers.push(BufferInfo {
        kind: BufferKind::Output(out_idx),
        dtype: n.dtype,
        shape: n.shape.clone(),
    });
    ctx.args.clear();
    ctx.writes.clear();
    ctx.next_var = 0;
    let out = Buf::Arg(ctx.arg_for(global, true));
    let (grid, body, chunk) = map_over(ctx, &n, |ctx, idx| value_at(ctx, src, idx), out)?;
    Ok(ctx.finish(name, grid, body, chunk))
}

/// Heads a rope kernel writes per grid point: the known extent of the axis before the
/// last (`[.., seq, heads, dim]`), up to a bound that keeps the kernel's code small.
fn rope_heads(shape: &[Dim]) -> Option<i64> {
    let r = shape.len();
    (r >= 3)
        .then(|| shape[r - 2].as_known())
        .flatten()
        .filter(|h| (1..=64).contains(h))
}

/// Rope over one token per grid point, every head in the same loop over the head
/// dimension: a rotation's angle depends on the token and the dimension only, so each
/// head's store computes the same cosine and sine, which the code generator computes once
/// (a grid point per head, as `map_over` makes, computed them once per head: rope was 3% of
/// the 125m model's prefill).
fn rope_rows(
    ctx: &mut Ctx,
    n: &kiln_ir::Node,
    node: NodeId,
    out: Buf,
) -> Result<(Vec<GridDim>, Vec<Stmt>, u64), LowerError> {
    let shape = &n.shape;
    let r = shape.len();
    let heads = rope_heads(shape)
        .ok_or_else(|| LowerError::Internal("rope rows without a known head count".into()))?;
    let grid: Vec<GridDim> = shape[..r - 2].iter().map(GridDim::of).collect();
    let j = ctx.fresh();
    let mut stores = Vec::new();
    for h in 0..heads {
        let mut idx: Vec<Expr> = (0..r - 2).map(|a| Expr::GridIdx(a as u32)).collect();
        idx.extend([i(h), var(j)]);
        let value = compute_at(ctx, node, &idx)?;
        stores.push(Stmt::Store {
            buf: out,
            index: flat_index(ctx, shape, &idx),
            value,
        });
    }
    let body = vec![along_last_axis(ctx, shape, n.dtype, j, stores)];
    let per_point = shape[r - 1].as_known().map_or(1, |d| d * heads);
    Ok((grid, body, chunk_for(Some(per_point))))
}

fn lanes(ctx: &Ctx) -> u8 {
    ctx.schedule.lanes
}

/// Grid points per chunk for kernels whose points each touch `elems` elements (`None`:
/// unknown, one point a chunk): enough points for `MIN_CHUNK_ELEMS`.
fn chunk_for(elems: Option<i64>) -> u64 {
    elems.map_or(1, |n| (MIN_CHUNK_ELEMS / n.max(1)).max(1) as u64)
}

/// Grid over all axes but the last of `node`'s shape, a vectorisable loop over the last,
/// storing `value`.
fn map_over(
    ctx: &mut Ctx,
    node: &kiln_ir::Node,
    mut value: impl FnMut(&mut Ctx, &[Expr]) -> Result<Expr, LowerError>,
    out: Buf,
) -> Result<(Vec<GridDim>, Vec<Stmt>, u64), LowerError> {
    let shape = &node.shape;
    if shape.is_empty() {
        let v = value(ctx, &[])?;
        return Ok((
            Vec::new(),
            vec![Stmt::Store {
                buf: out,
                index: i(0),
                value: v,
            }],
            1,
        ));
    }
    let r = shape.len();
    if ctx.schedule.gpu {
        let grid: Vec<GridDim> = shape.iter().map(GridDim::of).collect();
        let idx: Vec<Expr> = (0..r).map(|a| Expr::GridIdx(a as u32)).collect();
        let v = value(ctx, &idx)?;
        let store = Stmt::Store {
            buf: out,
            index: flat_index(ctx, shape, &idx),
            value: v,
        };
        return Ok((grid, vec![store], 1));
    }
    let grid: Vec<GridDim> = shape[..r - 1].iter().map(GridDim::of).collect();
    let j = ctx.fresh();
    let mut idx: Vec<Expr> = (0..r - 1).map(|a| Expr::GridIdx(a as u32)).collect();
    idx.push(var(j));
    let v = value(ctx, &idx)?;
    let store = Stmt::Store {
        buf: out,
        index: flat_index(ctx, shape, &idx),
        value: v,
    };
    let body = vec![along_last_axis(ctx, shape, node.dtype, j, vec![store])];
    Ok((grid, body, chunk_for(shape[r - 1].as_known())))
}

/// The vectorisable loop of `var` over the last axis of `shape`, running `body`.
fn along_last_axis(ctx: &Ctx, shape: &[Dim], dtype: DType, var: VarId, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        extent: dim_expr(ctx, &shape[shape.len() - 1]),
        kind: LoopKind::Map,
        vector: ctx.schedule.lanes_for(dtype),
        body,
    }
}

fn reduce(
    ctx: &mut Ctx,
    node: NodeId,
    op: ReduceOp,
    axes: &[usize],
    keep: bool,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let out = ctx.begin(node);
    let input = ctx.graph.inputs(node)[0];
    let in_shape = ctx.graph.node(input).shape.clone();
    let out_shape = ctx.graph.node(node).shape.clone();
    let kept: Vec<usize> = (0..in_shape.len()).filter(|a| !axes.contains(a)).collect();
    let grid: Vec<GridDim> = kept.iter().map(|&a| GridDim::of(&in_shape[a])).collect();
    let mut sorted_axes = axes.to_vec();
    sorted_axes.sort_unstable();
    let reduced: Vec<Dim> = sorted_axes.iter().map(|&a| in_shape[a].clone()).collect();
    let count = reduced
        .iter()
        .fold(i(1), |acc, d| mul(acc, dim_expr(ctx, d)));
    let r = ctx.fresh();
    // Reduced axes are walked as one flat loop: a single trailing axis stays contiguous.
    let red_idx = super::inline::unflatten(ctx, &reduced, var(r));
    let mut idx = vec![i(0); in_shape.len()];
    for (g, &a) in kept.iter().enumerate() {
        idx[a] = Expr::GridIdx(g as u32);
    }
    for (k, &a) in sorted_axes.iter().enumerate() {
        idx[a] = red_idx[k].clone();
    }
    let value = value_at(ctx, input, &idx)?;
    let acc = ctx.fresh();
    let red_op = if op == ReduceOp::Max {
        RedOp::Max
    } else {
        RedOp::Sum
    };
    let vector = if sorted_axes.last() == Some(&(in_shape.len() - 1)) {
        lanes(ctx)
    } else {
        1
    };
    let mut result = var(acc);
    if op == ReduceOp::Mean {
        result = bin(
            BOp::Div,
            result,
            cast(crate::kernel::Elem::F32, count.clone()),
        );
    }
    let out_idx: Vec<Expr> = if keep {
        (0..in_shape.len())
            .map(|a| {
                if axes.contains(&a) {
                    i(0)
                } else {
                    idx[a].clone()
                }
            })
            .collect()
    } else {
        kept.iter().map(|&a| idx[a].clone()).collect()
    };
    let body = vec![
        Stmt::Reduce {
            acc,
            op: red_op,
            var: r,
            extent: count,
            value,
            vector,
        },
        Stmt::Store {
            buf: out,
            index: flat_index(ctx, &out_shape, &out_idx),
            value: result,
        },
    ];
    let chunk = reduced
        .iter()
        .map(|d| d.as_known().unwrap_or(1))
        .product::<i64>();
    Ok(ctx.finish(name, grid, body, chunk_for(Some(chunk))))
}

/// Grid over every axis but `axis`; returns the grid and the index with `axis` at `v`.
fn rows_along(shape: &[Dim], axis: usize, v: crate::kernel::VarId) -> (Vec<GridDim>, Vec<Expr>) {
    let mut grid = Vec::new();
    let mut idx = Vec::new();
    for (a, d) in shape.iter().enumerate() {
        if a == axis {
            idx.push(var(v));
        } else {
            idx.push(Expr::GridIdx(grid.len() as u32));
            grid.push(GridDim::of(d));
        }
    }
    (grid, idx)
}

/// Softmax along `axis`: a max pass, then the exponentials and their sum, then a scale.
/// An f32 output holds the exponentials between passes, so each is computed once and the
/// row is re-read from cache; narrower outputs would round them before the sum, so there
/// the exponentials are computed again in the last pass instead.
fn softmax(
    ctx: &mut Ctx,
    node: NodeId,
    axis: usize,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let out = ctx.begin(node);
    let input = ctx.graph.inputs(node)[0];
    let shape = ctx.graph.node(node).shape.clone();
    let keep_exps = ctx.graph.node(node).dtype == DType::F32;
    let vec = if axis + 1 == shape.len() {
        lanes(ctx)
    } else {
        1
    };
    let extent = dim_expr(ctx, &shape[axis]);
    let (r1, r2, j, m, s, inv) = (
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
    );
    let (grid, idx1) = rows_along(&shape, axis, r1);
    let (_, idx2) = rows_along(&shape, axis, r2);
    let (_, idx3) = rows_along(&shape, axis, j);
    let x1 = value_at(ctx, input, &idx1)?;
    let exp_at = |ctx: &mut Ctx, idx: &[Expr]| -> Result<Expr, LowerError> {
        let x = value_at(ctx, input, idx)?;
        Ok(un(UOp::Exp, bin(BOp::Sub, x, var(m))))
    };
    let map = |j: VarId, value: Expr, at: Expr| Stmt::Loop {
        var: j,
        extent: extent.clone(),
        kind: LoopKind::Map,
        vector: vec,
        body: vec![Stmt::Store {
            buf: out,
            index: at,
            value,
        }],
    };
    let sum = |value: Expr| Stmt::Reduce {
        acc: s,
        op: RedOp::Sum,
        var: r2,
        extent: extent.clone(),
        value,
        vector: vec,
    };
    let out_at = flat_index(ctx, &shape, &idx3);
    let mut body = vec![Stmt::Reduce {
        acc: m,
        op: RedOp::Max,
        var: r1,
        extent: extent.clone(),
        value: x1,
        vector: vec,
    }];
    let scaled = if keep_exps {
        let j0 = ctx.fresh();
        let (_, idx0) = rows_along(&shape, axis, j0);
        let e0 = exp_at(ctx, &idx0)?;
        body.push(map(j0, e0, flat_index(ctx, &shape, &idx0)));
        body.push(sum(load(out, flat_index(ctx, &shape, &idx2))));
        load(out, out_at.clone())
    } else {
        let e2 = exp_at(ctx, &idx2)?;
        body.push(sum(e2));
        exp_at(ctx, &idx3)?
    };
    body.push(Stmt::Let {
        var: inv,
        value: bin(BOp::Div, f(1.0), var(s)),
    });
    body.push(map(j, bin(BOp::Mul, scaled, var(inv)), out_at));
    let chunk = chunk_for(shape[axis].as_known());
    Ok(ctx.finish(name, grid, body, chunk))
}

/// rms_norm (`with_mean == false`) or layer_norm over the last axis.
fn norm(
    ctx: &mut Ctx,
    node: NodeId,
    eps: f64,
    with_mean: bool,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let out = ctx.begin(node);
    let ins = ctx.graph.inputs(node);
    let shape = ctx.graph.node(node).shape.clone();
    let last = shape.len() - 1;
    let d = dim_expr(ctx, &shape[last]);
    let df = cast(crate::kernel::Elem::F32, d.clone());
    let (r1, r2, j, sum, mean, ss, scale) = (
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
    );
    let (grid, idx1) = rows_along(&shape, last, r1);
    let (_, idx2) = rows_along(&shape, last, r2);
    let (_, idx3) = rows_along(&shape, last, j);
    let lanes = lanes(ctx);
    let mut body = Vec::new();
    let centre = |x: Expr| {
        if with_mean {
            bin(BOp::Sub, x, var(mean))
        } else {
            x
        }
    };
    if with_mean {
        let x1 = value_at(ctx, ins[0], &idx1)?;
        body.push(Stmt::Reduce {
            acc: sum,
            op: RedOp::Sum,
            var: r1,
            extent: d.clone(),
            value: x1,
            vector: lanes,
        });
        body.push(Stmt::Let {
            var: mean,
            value: bin(BOp::Div, var(sum), df.clone()),
        });
    }
    let x2 = centre(value_at(ctx, ins[0], &idx2)?);
    let sq = ctx.fresh();
    body.push(Stmt::Reduce {
        acc: ss,
        op: RedOp::Sum,
        var: r2,
        extent: d.clone(),
        value: let_in(sq, x2, bin(BOp::Mul, var(sq), var(sq))),
        vector: lanes,
    });
    let var_term = bin(BOp::Add, bin(BOp::Div, var(ss), df), f(eps as f32));
    body.push(Stmt::Let {
        var: scale,
        value: bin(BOp::Div, f(1.0), un(UOp::Sqrt, var_term)),
    });
    let x3 = centre(value_at(ctx, ins[0], &idx3)?);
    let w = value_at(ctx, ins[1], &[var(j)])?;
    let mut y = bin(BOp::Mul, bin(BOp::Mul, x3, var(scale)), w);
    if with_mean {
        y = bin(BOp::Add, y, value_at(ctx, ins[2], &[var(j)])?);
    }
    body.push(Stmt::Loop {
        var: j,
        extent: d,
        kind: LoopKind::Map,
        vector: lanes,
        body: vec![Stmt::Store {
            buf: out,
            index: flat_index(ctx, &shape, &idx3),
            value: y,
        }],
    });
    let chunk = chunk_for(shape[last].as_known());
    Ok(ctx.finish(name, grid, body, chunk))
}

/// Floating-point work and bytes moved, for benchmark and profile figures.
pub fn count_cost(ctx: &Ctx, node: NodeId, k: &mut Kernel) {
    let n = ctx.graph.node(node);
    let numel = n.shape.clone();
    k.cost.flops = match &n.op {
        Op::MatMul { transpose_a, .. } => {
            let a = &ctx.graph.node(ctx.graph.inputs(node)[0]).shape;
            let kdim = if *transpose_a {
                a[a.len() - 2].clone()
            } else {
                a[a.len() - 1].clone()
            };
            let mut t = vec![Dim::known(2), kdim];
            t.extend(numel.iter().cloned());
            vec![t]
        }
        _ => {
            let input = ctx
                .graph
                .inputs(node)
                .first()
                .map(|&i| ctx.graph.node(i).shape.clone())
                .unwrap_or_default();
            vec![if input.len() >= numel.len() {
                input
            } else {
                numel.clone()
            }]
        }
    };
    k.cost.bytes = ctx
        .args
        .iter()
        .map(|&g| {
            let b = &ctx.buffers[g];
            let mut t = vec![Dim::known(b.dtype.size_bytes() as i64)];
            t.extend(b.shape.iter().cloned());
            t
        })
        .collect();
}
