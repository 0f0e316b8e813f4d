//! GPU decode dot products that normalise their A themselves.
//!
//! An RMS norm and a softmax along K each scale a row by one factor computed from the
//! whole row, so a dot product over that row can sum the unscaled elements and scale its
//! sums once at the end: `sum_k norm(x)_k W_k = r * sum_k (x_k w_k) W_k` with `r =
//! 1 / sqrt(mean(x^2) + eps)`, and `sum_k softmax(s)_k V_k = sum_k e^(s_k - m) V_k / sum_k
//! e^(s_k - m)` with `m` the row's maximum. The factor's own sum (of squares, of
//! exponentials) runs over the same steps of K as the dot products, so a block computes it
//! in the same pass (`kernel::gpu::reduction_group`); a softmax's maximum takes one pass
//! before it. In decode the normalisation's kernel, a single block or a few on the
//! layer's critical path, then does not run (`partition::normalised_in_place_on_gpu`);
//! prefill keeps it, launched under the guard of the forms that read its buffer.

use super::gpu_dot::Step;
use super::inline::value_at;
use super::matmul::{run_of, Operands};
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Elem, Expr, RedOp, Stmt, UOp, VarId};
use kiln_ir::Op;

/// The reduction a dot kernel adds for its A's normalisation, and the variable its
/// scale is bound to (`finish`).
pub(super) struct Normalised {
    sum: VarId,
    scale: VarId,
}

impl Normalised {
    /// Accumulator `acc` of a dot product over the unscaled row, scaled.
    pub fn scaled(&self, acc: VarId) -> Expr {
        mul(var(acc), var(self.scale))
    }
}

/// Where the kernel being built reads A (a norm or softmax) in place: pushes onto `body`
/// the reductions its factor needs (the row's maximum first, for a softmax), and from here
/// until `finish` A reads unscaled (`inline::compute_at`). Each steps over `extent` (K) as
/// the dot products do (`step`; `None`: an element a step). None where A is read from its
/// buffer.
pub(super) fn begin(
    ctx: &mut Ctx,
    ops: &Operands,
    row: &Expr,
    extent: &Expr,
    step: Option<Step>,
    body: &mut Vec<Stmt>,
) -> Result<Option<Normalised>, LowerError> {
    let softmax = match ctx.graph.node(ops.a).op {
        Op::RmsNorm { .. } => false,
        Op::Softmax { .. } => true,
        _ => return Ok(None),
    };
    if !ctx.reads_in_place(ops.a) {
        return Ok(None);
    }
    let mut prefix = Operands::batch_index(&ops.a_shape, ops.nb);
    prefix.push(row.clone());
    let step = step.unwrap_or(Step::consecutive(1, 1));
    let Step { lanes, elems, .. } = step;
    // One reduction over the row, a step's runs of `node` combined, then their lanes.
    let mut over_row = |ctx: &mut Ctx, node, op: RedOp, each: &dyn Fn(VarId, Expr) -> Expr| {
        let (acc, k) = (ctx.fresh(), ctx.fresh());
        let mut value = None;
        for at in step.runs(k) {
            let run = run_of(
                ctx,
                &mut |ctx, k| {
                    let mut idx = prefix.clone();
                    idx.push(k);
                    value_at(ctx, node, &idx)
                },
                at,
                lanes,
            )?;
            let run = each(ctx.fresh(), run);
            value = Some(match value {
                None => run,
                Some(v) => match op {
                    RedOp::Sum => bin(BOp::Add, v, run),
                    RedOp::Max => bin(BOp::Max, v, run),
                },
            });
        }
        let value = value.expect("a step has runs");
        body.push(Stmt::Reduce {
            acc,
            op,
            var: k,
            extent: if elems > 1 {
                div(extent.clone(), i(elems))
            } else {
                extent.clone()
            },
            value: if lanes > 1 {
                Expr::ReduceLanes(op, Box::new(value))
            } else {
                value
            },
            vector: 1,
        });
        Ok::<VarId, LowerError>(acc)
    };
    let input = ctx.graph.inputs(ops.a)[0];
    let sum = if softmax {
        let max = over_row(ctx, input, RedOp::Max, &|_, x| x)?;
        ctx.unscaled.insert(ops.a, Some(max));
        // The exponentials as the dot products read them (`inline::compute_at`).
        over_row(ctx, ops.a, RedOp::Sum, &|_, x| x)?
    } else {
        let squares = over_row(ctx, input, RedOp::Sum, &|sq, x| {
            let_in(sq, x, bin(BOp::Mul, var(sq), var(sq)))
        })?;
        ctx.unscaled.insert(ops.a, None);
        squares
    };
    Ok(Some(Normalised {
        sum,
        scale: ctx.fresh(),
    }))
}

/// Binds the scale of `n` (after the dot products' reductions): `1 / sqrt(sum / K + eps)`
/// for a norm, as its own kernel computes it, `1 / sum` for a softmax. A reads scaled
/// again after it.
pub(super) fn finish(ctx: &mut Ctx, ops: &Operands, n: &Normalised, extent: &Expr) -> Stmt {
    ctx.unscaled.remove(&ops.a);
    let divisor = match ctx.graph.node(ops.a).op {
        Op::RmsNorm { eps } => {
            let mean = bin(BOp::Div, var(n.sum), cast(Elem::F32, extent.clone()));
            un(UOp::Sqrt, bin(BOp::Add, mean, f(eps as f32)))
        }
        _ => var(n.sum),
    };
    Stmt::Let {
        var: n.scale,
        value: bin(BOp::Div, f(1.0), divisor),
    }
}
