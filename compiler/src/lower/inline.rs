//! Values of graph nodes as kernel-IR expressions at an index.
//!
//! This is where fusion happens: an injective node that is not materialised is *inlined*,
//! its value at an index computed from its operands' values at mapped indices, so a chain
//! of elementwise ops, broadcasts, transposes and reshapes becomes one expression inside
//! whichever kernel reads it. Materialised nodes are loads from their buffer.

use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Cmp, Elem, Expr, UOp};
use kiln_ir::{BinaryOp, CmpOp, DType, Dim, NodeId, Op, RopeLayout, UnaryOp};

/// An i64 expression for a dim (`Expr::Dim(i)` reads symbol `i` at run time).
pub fn dim_expr(ctx: &Ctx, d: &Dim) -> Expr {
    d.terms.iter().fold(i(d.constant), |acc, (sym, c)| {
        add(acc, mul(i(*c), Expr::Dim(ctx.symbol(sym))))
    })
}

/// Row-major flat index of `idx` in `shape`.
pub fn flat_index(ctx: &Ctx, shape: &[Dim], idx: &[Expr]) -> Expr {
    let mut flat = i(0);
    for (d, x) in shape.iter().zip(idx) {
        flat = add(mul(flat, dim_expr(ctx, d)), x.clone());
    }
    flat
}

/// The index in `shape` of row-major position `flat`.
pub fn unflatten(ctx: &Ctx, shape: &[Dim], flat: Expr) -> Vec<Expr> {
    let mut out = vec![i(0); shape.len()];
    let mut rest = flat;
    for (k, d) in shape.iter().enumerate().rev() {
        if k == 0 {
            out[k] = rest.clone();
        } else {
            let de = dim_expr(ctx, d);
            out[k] = rem(rest.clone(), de.clone());
            rest = div(rest, de);
        }
    }
    out
}

/// The index in `from` (a reshape's input) of index `idx` in `to` (its output). Only the
/// part that really regroups elements goes through a flat index: unit dims are dropped or
/// set to 0, and leading and trailing dims the two shapes share map one to one. So
/// `[h, all, d] -> [h, 1, all, d]` (attention's cache, `all` symbolic) costs nothing, where
/// a flat index would divide by `all * d` for every element read.
pub fn reshape_index(ctx: &Ctx, to: &[Dim], from: &[Dim], idx: &[Expr]) -> Vec<Expr> {
    let unit = |d: &Dim| d.as_known() == Some(1);
    let out: Vec<usize> = (0..to.len()).filter(|&k| !unit(&to[k])).collect();
    let inp: Vec<usize> = (0..from.len()).filter(|&k| !unit(&from[k])).collect();
    let mut src = vec![i(0); from.len()];
    let mut head = 0;
    while head < out.len().min(inp.len()) && to[out[head]] == from[inp[head]] {
        src[inp[head]] = idx[out[head]].clone();
        head += 1;
    }
    let mut tail = 0;
    while tail < (out.len() - head).min(inp.len() - head)
        && to[out[out.len() - 1 - tail]] == from[inp[inp.len() - 1 - tail]]
    {
        src[inp[inp.len() - 1 - tail]] = idx[out[out.len() - 1 - tail]].clone();
        tail += 1;
    }
    let (om, im) = (&out[head..out.len() - tail], &inp[head..inp.len() - tail]);
    if !im.is_empty() {
        let dims = |ks: &[usize], shape: &[Dim]| -> Vec<Dim> {
            ks.iter().map(|&k| shape[k].clone()).collect()
        };
        let part: Vec<Expr> = om.iter().map(|&k| idx[k].clone()).collect();
        let flat = flat_index(ctx, &dims(om, to), &part);
        for (&k, x) in im.iter().zip(unflatten(ctx, &dims(im, from), flat)) {
            src[k] = x;
        }
    }
    src
}

/// Index into an operand of shape `shape` broadcast to the output index `idx`.
fn broadcast_index(shape: &[Dim], idx: &[Expr]) -> Vec<Expr> {
    let off = idx.len() - shape.len();
    shape
        .iter()
        .enumerate()
        .map(|(d, dim)| {
            if dim.as_known() == Some(1) {
                i(0)
            } else {
                idx[off + d].clone()
            }
        })
        .collect()
}

/// `node`'s value at `idx`: a load if it has a buffer, else its computation, inlined.
pub fn value_at(ctx: &mut Ctx, node: NodeId, idx: &[Expr]) -> Result<Expr, LowerError> {
    if let Some(buf) = ctx.buffer_of(node) {
        let n = ctx.graph.node(node);
        let index = flat_index(ctx, &n.shape.clone(), idx);
        return Ok(load(buf, index));
    }
    compute_at(ctx, node, idx)
}

/// Element `idx` of matmul `node` (`ta`, `tb`: its operands transposed) as the sum of its K
/// products, each operand read at `idx`'s batch position (broadcast where the operand's
/// batch dimension is 1: grouped-query attention's shared keys).
fn scores_at(
    ctx: &mut Ctx,
    node: NodeId,
    (ta, tb): (bool, bool),
    idx: &[Expr],
) -> Result<Expr, LowerError> {
    let ins = ctx.graph.inputs(node);
    let (a, b) = (ins[0], ins[1]);
    let a_shape = ctx.graph.node(a).shape.clone();
    let b_shape = ctx.graph.node(b).shape.clone();
    let nb = idx.len() - 2;
    let (row, col) = (idx[nb].clone(), idx[nb + 1].clone());
    let k_axis = if ta {
        a_shape.len() - 2
    } else {
        a_shape.len() - 1
    };
    let k = a_shape[k_axis]
        .as_known()
        .filter(|&k| k <= super::partition::SCORES_MAX_K)
        .ok_or_else(|| LowerError::Internal("scores in place with an unknown K".into()))?;
    let at = |shape: &[Dim], last: [Expr; 2]| {
        let mut at = broadcast_index(&shape[..shape.len() - 2], &idx[..nb]);
        at.extend(last);
        at
    };
    let mut sum = None;
    for d in 0..k {
        let ai = at(
            &a_shape,
            if ta {
                [i(d), row.clone()]
            } else {
                [row.clone(), i(d)]
            },
        );
        let bi = at(
            &b_shape,
            if tb {
                [col.clone(), i(d)]
            } else {
                [i(d), col.clone()]
            },
        );
        let (x, y) = (value_at(ctx, a, &ai)?, value_at(ctx, b, &bi)?);
        sum = Some(match sum {
            None => mul(x, y),
            Some(s) => fma(x, y, s),
        });
    }
    sum.ok_or_else(|| LowerError::Internal("scores over an empty K".into()))
}

/// `node`'s value at `idx` computed from its operands (what the kernel that writes
/// `node`'s own buffer stores).
pub fn compute_at(ctx: &mut Ctx, node: NodeId, idx: &[Expr]) -> Result<Expr, LowerError> {
    let n = ctx.graph.node(node).clone();
    let ins = ctx.graph.inputs(node);
    let elem = Elem::of_storage(n.dtype);
    let operand = |ctx: &mut Ctx, k: usize| -> Result<Expr, LowerError> {
        let s = ctx.graph.node(ins[k]).shape.clone();
        value_at(ctx, ins[k], &broadcast_index(&s, idx))
    };
    Ok(match &n.op {
        // Read by a dot product that scales its sums by the factor itself (`normalised`).
        Op::RmsNorm { .. } if ctx.unscaled.contains_key(&node) => {
            let x = value_at(ctx, ins[0], idx)?;
            let w = value_at(ctx, ins[1], &idx[idx.len() - 1..])?;
            bin(BOp::Mul, x, w)
        }
        Op::Softmax { .. } if ctx.unscaled.contains_key(&node) => {
            let max = ctx.unscaled[&node].ok_or_else(|| {
                LowerError::Internal("an unscaled softmax without its maximum".into())
            })?;
            let x = value_at(ctx, ins[0], idx)?;
            un(UOp::Exp, bin(BOp::Sub, x, var(max)))
        }
        // Attention's scores, read in place by GPU decode attention (`decode_attention`,
        // `partition::scores_in_place_on_gpu`): the dot product of a short K, unrolled.
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => scores_at(ctx, node, (*transpose_a, *transpose_b), idx)?,
        Op::Const(t) if t.numel() == 1 => literal(n.dtype, t.data[0]),
        Op::Unary(u) => {
            let x = operand(ctx, 0)?;
            unary(ctx, *u, x, elem)
        }
        Op::Binary(b) => {
            let (x, y) = (operand(ctx, 0)?, operand(ctx, 1)?);
            binary(ctx, *b, x, y, elem)
        }
        Op::Compare(c) => {
            let (x, y) = (operand(ctx, 0)?, operand(ctx, 1)?);
            select(
                cmp(cmp_op(*c), x, y),
                literal(n.dtype, 1.0),
                literal(n.dtype, 0.0),
            )
        }
        Op::Select => {
            let c = operand(ctx, 0)?;
            let zero = literal(ctx.graph.node(ins[0]).dtype, 0.0);
            select(cmp(Cmp::Ne, c, zero), operand(ctx, 1)?, operand(ctx, 2)?)
        }
        Op::Cast { .. } => {
            let from = Elem::of_storage(ctx.graph.node(ins[0]).dtype);
            let x = operand(ctx, 0)?;
            if from == elem {
                x
            } else {
                cast(elem, x)
            }
        }
        Op::Reshape { .. } => {
            let in_shape = ctx.graph.node(ins[0]).shape.clone();
            let src = reshape_index(ctx, &n.shape, &in_shape, idx);
            value_at(ctx, ins[0], &src)?
        }
        Op::Permute { perm } => {
            let mut src = vec![i(0); idx.len()];
            for (j, &p) in perm.iter().enumerate() {
                src[p] = idx[j].clone();
            }
            value_at(ctx, ins[0], &src)?
        }
        Op::Slice {
            axis, start, step, ..
        } => {
            let mut src = idx.to_vec();
            src[*axis] = add(i(*start), mul(idx[*axis].clone(), i(*step)));
            value_at(ctx, ins[0], &src)?
        }
        Op::Concat { axis } => concat(ctx, &ins, *axis, idx)?,
        Op::Gather => {
            let ids_rank = ctx.graph.node(ins[1]).shape.len();
            let rows = dim_expr(ctx, &ctx.graph.node(ins[0]).shape[0].clone());
            let id = value_at(ctx, ins[1], &idx[..ids_rank])?;
            let id = if ctx.graph.node(ins[1]).dtype == DType::I64 {
                id
            } else {
                cast(Elem::I64, id)
            };
            // Out-of-range ids read the nearest row instead of faulting (the interpreter
            // reports them as errors); the LLM driver validates token ids before running.
            let row = min(max(id, i(0)), sub(rows, i(1)));
            let mut src = vec![row];
            src.extend_from_slice(&idx[ids_rank..]);
            value_at(ctx, ins[0], &src)?
        }
        Op::Rope {
            layout,
            theta,
            rot_dims,
        } => rope(ctx, &ins, *layout, *theta, *rot_dims, idx)?,
        Op::Dequant { format } => super::dequant::dequant_at(ctx, ins[0], *format, idx)?,
        other => {
            return Err(LowerError::Internal(format!(
                "{} is not injective but was not materialised",
                other.name()
            )))
        }
    })
}

pub fn literal(dtype: DType, v: f64) -> Expr {
    match Elem::of_storage(dtype) {
        Elem::F32 => f(v as f32),
        Elem::I32 => i32(v as i32),
        _ => i(v as i64),
    }
}

fn cmp_op(c: CmpOp) -> Cmp {
    match c {
        CmpOp::Eq => Cmp::Eq,
        CmpOp::Ne => Cmp::Ne,
        CmpOp::Lt => Cmp::Lt,
        CmpOp::Le => Cmp::Le,
        CmpOp::Gt => Cmp::Gt,
        CmpOp::Ge => Cmp::Ge,
    }
}

fn unary(ctx: &mut Ctx, u: UnaryOp, x: Expr, elem: Elem) -> Expr {
    let v = ctx.fresh();
    let xv = || var(v);
    let one = || f(1.0);
    let body = match u {
        UnaryOp::Neg if elem != Elem::F32 => return bin(BOp::Sub, zero(elem), x),
        UnaryOp::Abs if elem != Elem::F32 => select(
            cmp(Cmp::Lt, xv(), zero(elem)),
            bin(BOp::Sub, zero(elem), xv()),
            xv(),
        ),
        UnaryOp::Relu => return max(x, zero(elem)),
        UnaryOp::Neg => return un(UOp::Neg, x),
        UnaryOp::Abs => return un(UOp::Abs, x),
        UnaryOp::Exp => return un(UOp::Exp, x),
        UnaryOp::Log => return un(UOp::Log, x),
        UnaryOp::Sqrt => return un(UOp::Sqrt, x),
        UnaryOp::Tanh => return un(UOp::Tanh, x),
        UnaryOp::Rsqrt => return bin(BOp::Div, one(), un(UOp::Sqrt, x)),
        UnaryOp::Recip => return bin(BOp::Div, one(), x),
        UnaryOp::Sigmoid => {
            return bin(
                BOp::Div,
                one(),
                bin(BOp::Add, one(), un(UOp::Exp, un(UOp::Neg, x))),
            )
        }
        UnaryOp::Silu => bin(
            BOp::Div,
            xv(),
            bin(BOp::Add, one(), un(UOp::Exp, un(UOp::Neg, xv()))),
        ),
        UnaryOp::GeluTanh => {
            let cube = bin(BOp::Mul, bin(BOp::Mul, xv(), xv()), xv());
            let inner = bin(
                BOp::Mul,
                f(0.797_884_6),
                bin(BOp::Add, xv(), bin(BOp::Mul, f(0.044_715), cube)),
            );
            bin(
                BOp::Mul,
                bin(BOp::Mul, f(0.5), xv()),
                bin(BOp::Add, one(), un(UOp::Tanh, inner)),
            )
        }
        UnaryOp::GeluErf => {
            let e = un(
                UOp::Erf,
                bin(BOp::Mul, xv(), f(std::f32::consts::FRAC_1_SQRT_2)),
            );
            bin(
                BOp::Mul,
                bin(BOp::Mul, f(0.5), xv()),
                bin(BOp::Add, one(), e),
            )
        }
    };
    let_in(v, x, body)
}

fn zero(elem: Elem) -> Expr {
    match elem {
        Elem::F32 => f(0.0),
        Elem::I32 => i32(0),
        _ => i(0),
    }
}

fn binary(ctx: &mut Ctx, b: BinaryOp, x: Expr, y: Expr, elem: Elem) -> Expr {
    let op = match b {
        BinaryOp::Add => BOp::Add,
        BinaryOp::Sub => BOp::Sub,
        BinaryOp::Mul => BOp::Mul,
        BinaryOp::Div => BOp::Div,
        BinaryOp::Max => BOp::Max,
        BinaryOp::Min => BOp::Min,
        BinaryOp::Pow => return pow(ctx, x, y, elem),
    };
    if op == BOp::Div && elem != Elem::F32 {
        // Integer division by zero is defined as 0 (the interpreter's rule), not a trap.
        let (vx, vy) = (ctx.fresh(), ctx.fresh());
        let safe = select(cmp(Cmp::Eq, var(vy), zero(elem)), one_of(elem), var(vy));
        let q = select(
            cmp(Cmp::Eq, var(vy), zero(elem)),
            zero(elem),
            bin(BOp::Div, var(vx), safe),
        );
        return let_in(vx, x, let_in(vy, y, q));
    }
    bin(op, x, y)
}

fn one_of(elem: Elem) -> Expr {
    match elem {
        Elem::F32 => f(1.0),
        Elem::I32 => i32(1),
        _ => i(1),
    }
}

/// `x^y` as `exp(y * log|x|)`, with the sign of odd integer powers of negative bases and
/// NaN for non-integer powers of them, as IEEE `pow` defines.
fn pow(ctx: &mut Ctx, x: Expr, y: Expr, elem: Elem) -> Expr {
    if elem != Elem::F32 {
        // Integer powers are rare in graphs; compute through f32.
        return cast(
            elem,
            pow(ctx, cast(Elem::F32, x), cast(Elem::F32, y), Elem::F32),
        );
    }
    if let Expr::Lit(crate::kernel::Lit::F32(k)) = y {
        if k == 2.0 {
            let v = ctx.fresh();
            return let_in(v, x, bin(BOp::Mul, var(v), var(v)));
        }
        if k == 1.0 {
            return x;
        }
        if k == 0.5 {
            return un(UOp::Sqrt, x);
        }
    }
    let (vx, vy, r, yi) = (ctx.fresh(), ctx.fresh(), ctx.fresh(), ctx.fresh());
    let mag = un(
        UOp::Exp,
        bin(BOp::Mul, var(vy), un(UOp::Log, un(UOp::Abs, var(vx)))),
    );
    let is_int = cmp(Cmp::Eq, cast(Elem::F32, var(yi)), var(vy));
    let odd = cmp(Cmp::Eq, bin(BOp::And, var(yi), i32(1)), i32(1));
    let nan = bitcast(Elem::F32, i32(0x7fc0_0000));
    let neg_case = select(is_int, select(odd, un(UOp::Neg, var(r)), var(r)), nan);
    let zero_base = cmp(Cmp::Eq, var(vx), f(0.0));
    let zero_pow = select(
        cmp(Cmp::Eq, var(vy), f(0.0)),
        f(1.0),
        select(cmp(Cmp::Lt, var(vy), f(0.0)), f(f32::INFINITY), f(0.0)),
    );
    let result = select(
        zero_base,
        zero_pow,
        select(cmp(Cmp::Lt, var(vx), f(0.0)), neg_case, var(r)),
    );
    let_in(
        vx,
        x,
        let_in(
            vy,
            y,
            let_in(r, mag, let_in(yi, cast(Elem::I32, var(vy)), result)),
        ),
    )
}

fn concat(ctx: &mut Ctx, ins: &[NodeId], axis: usize, idx: &[Expr]) -> Result<Expr, LowerError> {
    // Walk operands from the last: value = idx < offset_k ? (earlier operands) : operand k.
    // Every operand's index is clamped into range because both sides of a select are
    // evaluated (vector code loads both); never below 0, even for an empty operand (a
    // decoder's cache before the first token), whose read of index 0 is discarded:
    // index -1 read before the buffer, outside its allocation.
    let sizes: Vec<Dim> = ins
        .iter()
        .map(|&n| ctx.graph.node(n).shape[axis].clone())
        .collect();
    let mut offsets = vec![Dim::known(0)];
    for s in &sizes {
        offsets.push(offsets.last().expect("non-empty").add(s));
    }
    let mut value: Option<Expr> = None;
    for (k, &n) in ins.iter().enumerate() {
        let mut src = idx.to_vec();
        let local = sub(idx[axis].clone(), dim_expr(ctx, &offsets[k]));
        let last = sub(dim_expr(ctx, &sizes[k]), i(1));
        src[axis] = max(min(local, last), i(0));
        let here = value_at(ctx, n, &src)?;
        value = Some(match value {
            None => here,
            Some(before) => select(
                cmp(Cmp::Lt, idx[axis].clone(), dim_expr(ctx, &offsets[k])),
                before,
                here,
            ),
        });
    }
    value.ok_or_else(|| LowerError::Internal("concat without operands".into()))
}

fn rope(
    ctx: &mut Ctx,
    ins: &[NodeId],
    layout: RopeLayout,
    theta: f64,
    rot: usize,
    idx: &[Expr],
) -> Result<Expr, LowerError> {
    let r = idx.len();
    let d = idx[r - 1].clone();
    let rot = rot as i64;
    let half = rot / 2;
    let pos = value_at(ctx, ins[1], &[idx[r - 3].clone()])?;
    let pos = cast(Elem::F32, pos);
    let at = |ctx: &mut Ctx, dd: Expr| {
        let mut src = idx.to_vec();
        src[r - 1] = dd;
        value_at(ctx, ins[0], &src)
    };
    // Pair index, partner element and whether this element is the first of its pair.
    let (pair, partner, first) = match layout {
        RopeLayout::Interleaved => {
            let first = cmp(Cmp::Eq, rem(d.clone(), i(2)), i(0));
            let partner = select(first.clone(), add(d.clone(), i(1)), sub(d.clone(), i(1)));
            (div(d.clone(), i(2)), partner, first)
        }
        RopeLayout::Neox => {
            let first = cmp(Cmp::Lt, d.clone(), i(half));
            let partner = select(
                first.clone(),
                add(d.clone(), i(half)),
                sub(d.clone(), i(half)),
            );
            (rem(d.clone(), i(half)), partner, first)
        }
    };
    let rotated = cmp(Cmp::Lt, d.clone(), i(rot));
    let partner = select(rotated.clone(), partner, d.clone());
    let (x, y) = (at(ctx, d)?, at(ctx, partner)?);
    let turn = Rotation {
        pos,
        pair,
        first,
        rotated,
        theta,
        rot,
    };
    Ok(turn.of(ctx, x, y))
}

/// One element of a rope's output from the element `x` and its pair's other element `y`.
pub struct Rotation {
    /// The token's position (f32).
    pub pos: Expr,
    /// The pair's index within the rotated dimensions.
    pub pair: Expr,
    /// Whether `x` is the first of its pair.
    pub first: Expr,
    /// Whether `x` is among the rotated dimensions (else it passes through).
    pub rotated: Expr,
    pub theta: f64,
    pub rot: i64,
}

impl Rotation {
    pub fn of(self, ctx: &mut Ctx, x: Expr, y: Expr) -> Expr {
        let inv_freq = un(
            UOp::Exp,
            bin(
                BOp::Mul,
                cast(Elem::F32, self.pair),
                f((-2.0 * self.theta.ln() / self.rot as f64) as f32),
            ),
        );
        let (a, vx, vy, vc, vs) = (
            ctx.fresh(),
            ctx.fresh(),
            ctx.fresh(),
            ctx.fresh(),
            ctx.fresh(),
        );
        let out_first = bin(
            BOp::Sub,
            bin(BOp::Mul, var(vx), var(vc)),
            bin(BOp::Mul, var(vy), var(vs)),
        );
        let out_second = bin(
            BOp::Add,
            bin(BOp::Mul, var(vx), var(vc)),
            bin(BOp::Mul, var(vy), var(vs)),
        );
        let value = select(
            self.rotated,
            select(self.first, out_first, out_second),
            var(vx),
        );
        // The angle's cosine and sine bound once: each is a polynomial of some twenty
        // instructions, which both arms of the select would otherwise evaluate again.
        let value = let_in(
            vc,
            un(UOp::Cos, var(a)),
            let_in(vs, un(UOp::Sin, var(a)), value),
        );
        let_in(
            vx,
            x,
            let_in(vy, y, let_in(a, bin(BOp::Mul, self.pos, inv_freq), value)),
        )
    }
}
