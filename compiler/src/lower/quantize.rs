//! `quantize`: activations encoded as `q8_0` or `q8_k` blocks, one grid point per block,
//! following `kiln_ir::quant::quantize_q8_0` and `quantize_q8_k` step for step (so compiled
//! and interpreted graphs agree bit for bit on the same f32 inputs).

use super::inline::{flat_index, value_at};
use super::{Ctx, GridDim, LowerError};
use crate::kernel::e::*;
use crate::kernel::half::{f16_bits_to_f32, f32_to_f16_bits_up};
use crate::kernel::{BOp, Cmp, Elem, Expr, Kernel, LoopKind, RedOp, Stmt, UOp};
use kiln_ir::{Dim, NodeId, QuantFormat};

pub fn quantize(
    ctx: &mut Ctx,
    node: NodeId,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let out = ctx.begin(node);
    let x = ctx.graph.inputs(node)[0];
    let in_shape = ctx.graph.node(x).shape.clone();
    let out_shape = ctx.graph.node(node).shape.clone();
    let r = in_shape.len();
    let kiln_ir::Op::Quantize { format } = ctx.graph.node(node).op else {
        return Err(LowerError::Internal("quantize of another op".into()));
    };
    let (be, bb) = (format.block_elems() as i64, format.block_bytes() as i64);
    let k = in_shape[r - 1]
        .as_known()
        .ok_or_else(|| LowerError::Internal("quantize of a symbolic row length".into()))?;
    let mut grid: Vec<GridDim> = in_shape[..r - 1].iter().map(GridDim::of).collect();
    grid.push(GridDim::of(&Dim::from(k / be)));
    let rows: Vec<_> = (0..r - 1).map(|a| Expr::GridIdx(a as u32)).collect();
    let block = Expr::GridIdx(r as u32 - 1);
    let lanes = ctx.schedule.lanes;
    let at = |ctx: &mut Ctx, j: Expr| {
        let mut idx = rows.clone();
        idx.push(add(mul(block.clone(), i(be)), j));
        value_at(ctx, x, &idx)
    };
    let byte_at = |ctx: &Ctx, off: Expr| {
        let mut idx = rows.clone();
        idx.push(add(mul(block.clone(), i(bb)), off));
        flat_index(ctx, &out_shape, &idx)
    };
    let (j1, j2, amax, h, id) = (
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
    );
    let x1 = at(ctx, var(j1))?;
    let mut body = vec![Stmt::Reduce {
        acc: amax,
        op: RedOp::Max,
        var: j1,
        extent: i(be),
        value: un(UOp::Abs, x1),
        vector: lanes,
    }];
    let d = bin(BOp::Div, var(amax), f(127.0));
    // The scale as stored (q8_0: the f16 at or above it; q8_k: f32) and its bytes.
    let (scale, scale_bytes) = match format {
        QuantFormat::Q8_0 => {
            body.push(Stmt::Let {
                var: h,
                value: f32_to_f16_bits_up(d, &mut || ctx.fresh()),
            });
            (f16_bits_to_f32(var(h), &mut || ctx.fresh()), 2)
        }
        QuantFormat::Q8K => {
            body.push(Stmt::Let { var: h, value: d });
            (var(h), 4)
        }
        other => {
            return Err(LowerError::Internal(format!(
                "quantize to {other}, not an activation format"
            )))
        }
    };
    let bits = if scale_bytes == 4 {
        Expr::Bitcast(Elem::I32, Box::new(var(h)))
    } else {
        var(h)
    };
    for k in 0..scale_bytes {
        body.push(Stmt::Store {
            buf: out,
            index: byte_at(ctx, i(k)),
            value: bin(
                BOp::And,
                bin(BOp::Shr, bits.clone(), i32(8 * k as i32)),
                i32(255),
            ),
        });
    }
    let dv = ctx.fresh();
    body.push(Stmt::Let {
        var: id,
        value: let_in(
            dv,
            scale,
            select(
                cmp(Cmp::Gt, var(dv), f(0.0)),
                bin(BOp::Div, f(1.0), var(dv)),
                f(0.0),
            ),
        ),
    });
    let quant_of = |ctx: &mut Ctx, j: Expr| -> Result<Expr, LowerError> {
        let (v, x) = (ctx.fresh(), at(ctx, j)?);
        let scaled = max(min(bin(BOp::Mul, x, var(id)), f(127.0)), f(-127.0));
        let half = select(cmp(Cmp::Lt, var(v), f(0.0)), f(-0.5), f(0.5));
        Ok(let_in(
            v,
            scaled,
            cast(Elem::I32, bin(BOp::Add, var(v), half)),
        ))
    };
    let q = quant_of(ctx, var(j2))?;
    body.push(Stmt::Loop {
        var: j2,
        extent: i(be),
        kind: LoopKind::Map,
        vector: lanes,
        body: vec![Stmt::Store {
            buf: out,
            index: byte_at(ctx, add(i(scale_bytes), var(j2))),
            value: q,
        }],
    });
    if format == QuantFormat::Q8K {
        // The sums of each 16 quants, computed again from `x` (the kernel reads nothing it
        // wrote), as i16: low bytes, then high bytes. Summed in f32 (exact: at most 2032 in
        // size), as every backend's reductions are.
        let (lo, hi) = QuantFormat::Q8K_SUMS;
        for g in 0..16i64 {
            let (j, s) = (ctx.fresh(), ctx.fresh());
            let q = quant_of(ctx, add(i(g * 16), var(j)))?;
            body.push(Stmt::Reduce {
                acc: s,
                op: RedOp::Sum,
                var: j,
                extent: i(16),
                value: cast(Elem::F32, q),
                vector: lanes.min(16),
            });
            let s = bin(BOp::And, cast(Elem::I32, var(s)), i32(0xffff));
            body.push(Stmt::Store {
                buf: out,
                index: byte_at(ctx, i(lo as i64 + g)),
                value: bin(BOp::And, s.clone(), i32(255)),
            });
            body.push(Stmt::Store {
                buf: out,
                index: byte_at(ctx, i(hi as i64 + g)),
                value: bin(BOp::Shr, s, i32(8)),
            });
        }
    }
    Ok(ctx.finish(name, grid, body, 64))
}
