//! `quantize`: activations encoded as `q8_0` blocks, one grid point per block, following
//! `kiln_ir::quant::quantize_q8_0` step for step (so compiled and interpreted graphs agree
//! bit for bit on the same f32 inputs).

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
    let (be, bb) = (
        QuantFormat::Q8_0.block_elems() as i64,
        QuantFormat::Q8_0.block_bytes() as i64,
    );
    let k = in_shape[r - 1]
        .as_known()
        .ok_or_else(|| LowerError::Internal("quantize of a symbolic row length".into()))?;
    let mut grid: Vec<GridDim> = in_shape[..r - 1].iter().map(GridDim::of).collect();
    grid.push(GridDim::of(&Dim::from(k / be)));
    let rows: Vec<_> = (0..r - 1).map(|a| Expr::GridIdx(a as u32)).collect();
    let block = Expr::GridIdx(r as u32 - 1);
    let lanes = ctx.schedule.lanes;
    let at = |ctx: &mut Ctx, j| {
        let mut idx = rows.clone();
        idx.push(add(mul(block.clone(), i(be)), var(j)));
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
    let x1 = at(ctx, j1)?;
    let mut body = vec![Stmt::Reduce {
        acc: amax,
        op: RedOp::Max,
        var: j1,
        extent: i(be),
        value: un(UOp::Abs, x1),
        vector: lanes,
    }];
    let d = bin(BOp::Div, var(amax), f(127.0));
    body.push(Stmt::Let {
        var: h,
        value: f32_to_f16_bits_up(d, &mut || ctx.fresh()),
    });
    let d16 = f16_bits_to_f32(var(h), &mut || ctx.fresh());
    let d16v = ctx.fresh();
    body.push(Stmt::Let {
        var: id,
        value: let_in(
            d16v,
            d16,
            select(
                cmp(Cmp::Gt, var(d16v), f(0.0)),
                bin(BOp::Div, f(1.0), var(d16v)),
                f(0.0),
            ),
        ),
    });
    body.push(Stmt::Store {
        buf: out,
        index: byte_at(ctx, i(0)),
        value: bin(BOp::And, var(h), i32(255)),
    });
    body.push(Stmt::Store {
        buf: out,
        index: byte_at(ctx, i(1)),
        value: bin(BOp::Shr, var(h), i32(8)),
    });
    let (v, x2) = (ctx.fresh(), at(ctx, j2)?);
    let scaled = max(min(bin(BOp::Mul, x2, var(id)), f(127.0)), f(-127.0));
    let half = select(cmp(Cmp::Lt, var(v), f(0.0)), f(-0.5), f(0.5));
    let q = let_in(v, scaled, cast(Elem::I32, bin(BOp::Add, var(v), half)));
    body.push(Stmt::Loop {
        var: j2,
        extent: i(be),
        kind: LoopKind::Map,
        vector: lanes,
        body: vec![Stmt::Store {
            buf: out,
            index: byte_at(ctx, add(i(2), var(j2))),
            value: q,
        }],
    });
    Ok(ctx.finish(name, grid, body, 64))
}
