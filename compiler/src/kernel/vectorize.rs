//! Makes the lanes of `Map` loops and `Reduce` statements explicit for CPU targets.
//!
//! A loop asking for `vector = W` becomes a main loop over groups of W iterations whose
//! body computes W lanes at once, plus a scalar loop for the remainder. Inside the vector
//! body every expression is either *uniform* (the same for all lanes, kept scalar and
//! splatted where it meets a vector) or *varying*. Loads whose index moves by exactly 1
//! per iteration become vector loads; any other varying expression the rules below do not
//! cover is built lane by lane, which is always correct and merely slower.
//! Reductions keep `UNROLL` independent vector accumulators to hide add latency, unless
//! the reduced value is itself long to compute: its work then hides the latency, and more
//! copies of it would only spill registers.

use super::ir::e::*;
use super::ir::*;
use std::collections::HashSet;

const UNROLL: i64 = 4;
/// Reduced values with more expression nodes than this get one accumulator.
const HEAVY_VALUE_NODES: usize = 24;

pub fn vectorize_kernel(k: &mut Kernel) {
    let mut next = k.next_var;
    let cx = Cx {
        bufs: k.args.iter().map(|a| a.dtype).collect(),
        locals: k.locals.iter().map(|l| l.dtype).collect(),
        vars: Default::default(),
    };
    let body = std::mem::take(&mut k.body);
    k.body = vectorize_stmts(&cx, body, &mut next);
    k.next_var = next;
}

/// Vectorises a statement list, tracking the element types of the variables it binds.
///
/// Each reduction gets its own loop, even where several independent ones share an extent (a
/// matvec grid point's four rows): on CPUs one row after another is one sequential stream
/// for the hardware prefetcher, and on the 2-core Zen 4 machine it decoded a 125m F16 llama
/// 1.5x faster than four rows read in one loop (docs/perf.md). GPU blocks group such
/// reductions their own way (`kernel::gpu::reduction_group`).
fn vectorize_stmts(cx: &Cx, body: Vec<Stmt>, next: &mut VarId) -> Vec<Stmt> {
    let mut cx = cx.clone();
    let mut out = Vec::new();
    for s in body {
        match &s {
            Stmt::Let { var, value } | Stmt::Decl { var, init: value } => {
                if let Some(t) = cx.elem(value) {
                    cx.vars.insert(*var, t);
                }
            }
            Stmt::Loop { var, .. } => {
                cx.vars.insert(*var, Elem::I64);
            }
            Stmt::Reduce { acc, var, .. } => {
                cx.vars.insert(*var, Elem::I64);
                cx.vars.insert(*acc, Elem::F32);
            }
            _ => {}
        }
        match s {
            Stmt::Reduce {
                acc,
                op,
                var,
                extent,
                value,
                vector,
            } if vector > 1 => {
                let red = Reduction { acc, var, value };
                out.extend(vectorize_reduction(&cx, op, extent, vector, red, next));
            }
            s => out.extend(vectorize_stmt(&cx, s, next)),
        }
    }
    out
}

fn vectorize_stmt(cx: &Cx, s: Stmt, next: &mut VarId) -> Vec<Stmt> {
    let mut fresh = || {
        *next += 1;
        *next - 1
    };
    match s {
        Stmt::Loop {
            var,
            extent,
            kind: LoopKind::Map,
            vector,
            body,
        } if vector > 1 && body_is_simple(&body, var) => {
            let w = vector as i64;
            let (groups, tail, base) = (fresh(), fresh(), fresh());
            let main_len = mul(div(extent.clone(), i(w)), i(w));
            let vec_vars = HashSet::from([var]);
            let mut vbody = vec![Stmt::Let {
                var: base,
                value: mul(var_e(groups), i(w)),
            }];
            vbody.extend(
                body.iter()
                    .map(|st| vector_stmt(cx, st, var, base, vector, &vec_vars)),
            );
            let scalar_body = substitute_stmts(&body, var, &add(main_len.clone(), var_e(tail)));
            vec![
                Stmt::Loop {
                    var: groups,
                    extent: div(extent.clone(), i(w)),
                    kind: LoopKind::Serial,
                    vector: 1,
                    body: vbody,
                },
                Stmt::Loop {
                    var: tail,
                    extent: sub(extent, main_len),
                    kind: LoopKind::Serial,
                    vector: 1,
                    body: scalar_body,
                },
            ]
        }
        Stmt::Loop {
            var,
            extent,
            kind,
            vector,
            body,
        } => {
            let body = vectorize_stmts(cx, body, next);
            vec![Stmt::Loop {
                var,
                extent,
                kind,
                vector,
                body,
            }]
        }
        Stmt::If {
            cond,
            then,
            otherwise,
        } => {
            let then = vectorize_stmts(cx, then, next);
            let otherwise = vectorize_stmts(cx, otherwise, next);
            vec![Stmt::If {
                cond,
                then,
                otherwise,
            }]
        }
        other => vec![other],
    }
}

/// A reduction being vectorised.
struct Reduction {
    acc: VarId,
    var: VarId,
    value: Expr,
}

/// Whether `e` reads variable `v`.
pub fn mentions(e: &Expr, v: VarId) -> bool {
    matches!(e, Expr::Var(x) if *x == v) || e.children().iter().any(|c| mentions(c, v))
}

/// Vector code for a reduction: `unroll` vector accumulators, a main loop over groups of
/// `lanes * unroll` iterations, the lanes folded, then a scalar loop for the remainder.
fn vectorize_reduction(
    cx: &Cx,
    op: RedOp,
    extent: Expr,
    vector: u8,
    red: Reduction,
    next: &mut VarId,
) -> Vec<Stmt> {
    let mut fresh = || {
        *next += 1;
        *next - 1
    };
    let w = vector as i64;
    let unroll = if red.value.node_count() > HEAVY_VALUE_NODES {
        1
    } else {
        UNROLL
    };
    let step = w * unroll;
    let (groups, tail) = (fresh(), fresh());
    let accs: Vec<VarId> = (0..unroll).map(|_| fresh()).collect();
    // Integer reductions start from integers (the element type of what they add up).
    let identity = match (op, cx.elem(&red.value)) {
        (RedOp::Sum, Some(Elem::I32)) => Expr::Lit(Lit::I32(0)),
        (RedOp::Max, Some(Elem::I32)) => Expr::Lit(Lit::I32(i32::MIN)),
        (RedOp::Sum, _) => f(0.0),
        (RedOp::Max, _) => f(f32::NEG_INFINITY),
    };
    let combine = |a: Expr, b: Expr| match op {
        RedOp::Sum => bin(BOp::Add, a, b),
        RedOp::Max => bin(BOp::Max, a, b),
    };
    let mut out: Vec<Stmt> = accs
        .iter()
        .map(|&a| Stmt::Decl {
            var: a,
            init: splat(identity.clone(), vector),
        })
        .collect();
    let mut body = Vec::new();
    for (u, &a) in accs.iter().enumerate() {
        let start = add(mul(var_e(groups), i(step)), i(u as i64 * w));
        let lanes = vector_expr(
            cx,
            &red.value,
            red.var,
            &start,
            vector,
            &HashSet::from([red.var]),
        );
        body.push(Stmt::Assign {
            var: a,
            value: combine(var_e(a), lanes),
        });
    }
    out.push(Stmt::Loop {
        var: groups,
        extent: div(extent.clone(), i(step)),
        kind: LoopKind::Serial,
        vector: 1,
        body,
    });
    let main_len = mul(div(extent.clone(), i(step)), i(step));
    let total = accs
        .iter()
        .skip(1)
        .fold(var_e(accs[0]), |t, &a| combine(t, var_e(a)));
    out.push(Stmt::Decl {
        var: red.acc,
        init: Expr::ReduceLanes(op, Box::new(total)),
    });
    let tail_value = substitute(&red.value, red.var, &add(main_len.clone(), var_e(tail)));
    out.push(Stmt::Loop {
        var: tail,
        extent: sub(extent, main_len),
        kind: LoopKind::Serial,
        vector: 1,
        body: vec![Stmt::Assign {
            var: red.acc,
            value: combine(var_e(red.acc), tail_value),
        }],
    });
    out
}

fn var_e(v: VarId) -> Expr {
    Expr::Var(v)
}

/// Only bodies of contiguous stores are vectorised (values name shared subexpressions
/// with `Expr::Let`); anything else stays scalar, which is correct and merely slower.
fn body_is_simple(body: &[Stmt], var: VarId) -> bool {
    body.iter()
        .all(|s| matches!(s, Stmt::Store { index, .. } if stride_of(index, var) == Some(1)))
}

fn vector_stmt(
    cx: &Cx,
    s: &Stmt,
    var: VarId,
    base: VarId,
    lanes: u8,
    vec_vars: &HashSet<VarId>,
) -> Stmt {
    let Stmt::Store { buf, index, value } = s else {
        unreachable!("body_is_simple admits only stores")
    };
    let start = var_e(base);
    let value = as_vector(
        vector_expr(cx, value, var, &start, lanes, vec_vars),
        value,
        vec_vars,
        lanes,
    );
    Stmt::Store {
        buf: *buf,
        index: substitute(index, var, &start),
        value,
    }
}

fn as_vector(x: Expr, orig: &Expr, vec_vars: &HashSet<VarId>, lanes: u8) -> Expr {
    if depends(orig, vec_vars) {
        x
    } else {
        splat(x, lanes)
    }
}

/// True if `x` reads any varying variable.
fn depends(x: &Expr, vec_vars: &HashSet<VarId>) -> bool {
    let mut found = false;
    let _ = rewrite_bottom_up(x.clone(), &mut |n| {
        if let Expr::Var(v) = &n {
            found |= vec_vars.contains(v);
        }
        n
    });
    found
}

/// The vector form of `x` for lanes `start + 0 .. start + lanes` of `var`, `start` a
/// multiple of `lanes`.
fn vector_expr(
    cx: &Cx,
    x: &Expr,
    var: VarId,
    start: &Expr,
    lanes: u8,
    vec_vars: &HashSet<VarId>,
) -> Expr {
    if !depends(x, vec_vars) {
        return x.clone();
    }
    let v = |y: &Expr| vector_expr(cx, y, var, start, lanes, vec_vars);
    let vs = |y: &Expr| as_vector(v(y), y, vec_vars, lanes);
    // Index arithmetic (i64) stays scalar, one copy per lane: its vectors would be wide and
    // it only feeds addresses and comparisons.
    let index_math = |y: &Expr| cx.elem(y) == Some(Elem::I64);
    match x {
        Expr::Var(id) if *id != var => x.clone(),
        Expr::Load {
            buf,
            index,
            lanes: 1,
        } if !depends(index, &(vec_vars - &HashSet::from([var]))) => match stride_of(index, var) {
            Some(0) => x.clone(),
            Some(1) => load_vec(*buf, substitute(index, var, start), lanes),
            _ if stride_within(index, var, Some(lanes)) == Some(1) => {
                load_vec(*buf, substitute(index, var, start), lanes)
            }
            _ => per_lane(x, var, start, lanes, vec_vars),
        },
        _ if index_math(x) => per_lane(x, var, start, lanes, vec_vars),
        Expr::Cmp(_, a, _) | Expr::Cast(_, a) if index_math(a) => {
            per_lane(x, var, start, lanes, vec_vars)
        }
        Expr::Unary(op, a) => un(*op, vs(a)),
        Expr::Binary(op, a, b) => bin(*op, vs(a), vs(b)),
        Expr::Fma(a, b, c) => fma(vs(a), vs(b), vs(c)),
        Expr::Select(c, a, b) => select(vs(c), vs(a), vs(b)),
        Expr::Cmp(c, a, b) => cmp(*c, vs(a), vs(b)),
        Expr::Cast(t, a) => cast(*t, vs(a)),
        Expr::Bitcast(t, a) => bitcast(*t, vs(a)),
        Expr::Let {
            var: lv,
            value,
            body,
        } => {
            let mut inner = vec_vars.clone();
            if depends(value, vec_vars) {
                inner.insert(*lv);
            }
            let value_v = v(value);
            let mut cx2 = cx.clone();
            if let Some(t) = cx.elem(value) {
                cx2.vars.insert(*lv, t);
            }
            let body_v = vector_expr(&cx2, body, var, start, lanes, &inner);
            let body_v = as_vector(body_v, body, &inner, lanes);
            let_in(*lv, value_v, body_v)
        }
        _ => per_lane(x, var, start, lanes, vec_vars),
    }
}

/// Lane `l` of `x`: the loop variable becomes `start + l`, other varying variables
/// (vector-valued lets) become their lane `l`.
fn per_lane(x: &Expr, var: VarId, start: &Expr, lanes: u8, vec_vars: &HashSet<VarId>) -> Expr {
    Expr::Lanes(
        (0..lanes)
            .map(|l| {
                rewrite_bottom_up(x.clone(), &mut |n| match n {
                    Expr::Var(v) if v == var => add(start.clone(), i(l as i64)),
                    Expr::Var(v) if vec_vars.contains(&v) => Expr::Extract {
                        vector: Box::new(Expr::Var(v)),
                        lane: l,
                    },
                    other => other,
                })
            })
            .collect(),
    )
}

/// Element types of expressions, from buffer dtypes and the variables bound so far.
#[derive(Clone)]
struct Cx {
    bufs: Vec<kiln_ir::DType>,
    locals: Vec<kiln_ir::DType>,
    vars: std::collections::HashMap<VarId, Elem>,
}

impl Cx {
    fn elem(&self, x: &Expr) -> Option<Elem> {
        Some(match x {
            Expr::Lit(Lit::F32(_)) => Elem::F32,
            Expr::Lit(Lit::I32(_)) => Elem::I32,
            Expr::Lit(Lit::I64(_))
            | Expr::Dim(_)
            | Expr::GridIdx(_)
            | Expr::Lane
            | Expr::Thread => Elem::I64,
            Expr::Lit(Lit::Bool(_)) | Expr::Cmp(..) => Elem::Bool,
            Expr::Var(v) => *self.vars.get(v)?,
            Expr::Load {
                buf: Buf::Arg(b), ..
            }
            | Expr::LoadMatrix {
                buf: Buf::Arg(b), ..
            } => Elem::of_storage(*self.bufs.get(*b as usize)?),
            Expr::Load {
                buf: Buf::Local(b), ..
            }
            | Expr::LoadMatrix {
                buf: Buf::Local(b), ..
            } => Elem::of_storage(*self.locals.get(*b as usize)?),
            Expr::Cast(t, _) | Expr::Bitcast(t, _) => *t,
            Expr::Fma(..) | Expr::Mma(..) => Elem::F32,
            Expr::ReduceLanes(_, a) => self.elem(a)?,
            Expr::DotBytes(..) | Expr::DotSignedBytes(..) | Expr::LaneSums(..) => Elem::I32,
            Expr::Unary(crate::kernel::UOp::HalfBits, _) => Elem::F32,
            Expr::Unary(_, a)
            | Expr::Binary(_, a, _)
            | Expr::Select(_, a, _)
            | Expr::Splat { value: a, .. } => self.elem(a)?,
            Expr::Extract { vector, .. } => self.elem(vector)?,
            Expr::Lanes(v) => self.elem(v.first()?)?,
            Expr::Let { var, value, body } => {
                let mut inner = self.clone();
                inner.vars.insert(*var, self.elem(value)?);
                inner.elem(body)?
            }
        })
    }
}

/// How far `index` moves when `var` grows by one, if that is a known constant.
pub fn stride_of(index: &Expr, var: VarId) -> Option<i64> {
    stride_within(index, var, None)
}

/// `stride_of`, or with `block` the stride within one vector's lanes, which start at a
/// multiple of `block` (both callers of `vector_expr` count lanes in whole vectors). There
/// a division or remainder by a multiple of `block` of `var` plus a multiple of `block` (a
/// reshaped row, `(r * 768 + e) / 64`, read 16 lanes at a time) is constant over the lanes,
/// and the remainder steps by one; `stride_of` finds no single stride for either. Index
/// arithmetic is non-negative, where truncating and flooring divisions agree.
pub fn stride_within(index: &Expr, var: VarId, block: Option<u8>) -> Option<i64> {
    let s = |e: &Expr| stride_within(e, var, block);
    let aligned = |a: &Expr, c: i64, lanes: u8| {
        c % lanes as i64 == 0
            && stride_of(a, var) == Some(1)
            && super::align::factor_of(&substitute(a, var, &i(0))).is_multiple_of(lanes as u64)
    };
    match index {
        Expr::Var(v) if *v == var => Some(1),
        Expr::Lit(_)
        | Expr::Dim(_)
        | Expr::GridIdx(_)
        | Expr::Var(_)
        | Expr::Lane
        | Expr::Thread => Some(0),
        Expr::Binary(op @ (BOp::Div | BOp::Rem), a, b) if block.is_some() => {
            let (Expr::Lit(Lit::I64(c)), Some(lanes)) = (b.as_ref(), block) else {
                return uses_not(index, var);
            };
            match (s(a)?, op) {
                (0, _) => Some(0),
                _ if *c <= 0 || !aligned(a, *c, lanes) => None,
                (_, BOp::Div) => Some(0),
                _ => Some(1),
            }
        }
        Expr::Binary(BOp::Add, a, b) => Some(s(a)? + s(b)?),
        Expr::Binary(BOp::Sub, a, b) => Some(s(a)? - s(b)?),
        Expr::Binary(BOp::Mul, a, b) => {
            let (sa, sb) = (s(a)?, s(b)?);
            match (sa, sb, a.as_ref(), b.as_ref()) {
                (0, 0, _, _) => Some(0),
                (_, 0, _, Expr::Lit(Lit::I64(k))) => Some(sa * k),
                (0, _, Expr::Lit(Lit::I64(k)), _) => Some(sb * k),
                _ => None,
            }
        }
        other => uses_not(other, var),
    }
}

/// Stride 0 where `e` does not read `var`; no known stride where it does.
fn uses_not(e: &Expr, var: VarId) -> Option<i64> {
    let mut uses = false;
    let _ = rewrite_bottom_up(e.clone(), &mut |n| {
        uses |= n == Expr::Var(var);
        n
    });
    (!uses).then_some(0)
}

/// `x`, an element computed from `var`, for `var` = `start + 0 .. start + lanes` (`start`
/// a multiple of `lanes`) as one vector expression: each read that moves with `var` moves
/// by one element within such a run (one vector load), the rest is lane-wise arithmetic,
/// and what does not move within the run is splatted. `None` for anything else (a `let`, a
/// comparison, `exp` and its kin, `var` used as a value), which the caller builds lane by
/// lane. A decode dot product's activations normalised in place (`x[k] * w[k]`) so read two
/// vector loads a run where lane by lane they took a scalar load per element and operand.
/// (The CPU vectoriser's `vector_expr` does more, `let`s and a lane-by-lane fallback inside
/// one expression, but works on a finished kernel, typing expressions by its arguments
/// (`Cx`), where `run_of` builds one expression during lowering.)
pub fn as_lanes(x: &Expr, var: VarId, start: &Expr, lanes: u8) -> Option<Expr> {
    if same_within(x, var, lanes) {
        return Some(splat(substitute(x, var, start), lanes));
    }
    let v = |y: &Expr| as_lanes(y, var, start, lanes);
    Some(match x {
        Expr::Load {
            buf,
            index,
            lanes: 1,
        } if stride_within(index, var, Some(lanes)) == Some(1) => {
            load_vec(*buf, substitute(index, var, start), lanes)
        }
        // Not transcendental ones: on GPUs `kernel::math` expands them after lowering,
        // with scalar constants that the GPU code generators do not splat.
        Expr::Unary(op @ (UOp::Neg | UOp::Abs | UOp::Sqrt | UOp::HalfBits), a) => un(*op, v(a)?),
        Expr::Binary(op, a, b) => bin(*op, v(a)?, v(b)?),
        Expr::Fma(a, b, c) => fma(v(a)?, v(b)?, v(c)?),
        Expr::Cast(t, a) => cast(*t, v(a)?),
        Expr::Bitcast(t, a) => bitcast(*t, v(a)?),
        _ => return None,
    })
}

/// Whether scalar `x` has the same value for every lane of a run of `lanes` values of `var`
/// starting at a multiple of `lanes`: it reads `var` only in the indices of loads that stay
/// put over such a run (a block's scale, at `k / 32`).
fn same_within(x: &Expr, var: VarId, lanes: u8) -> bool {
    match x {
        Expr::Var(v) => *v != var,
        Expr::Load {
            index, lanes: 1, ..
        } => stride_within(index, var, Some(lanes)) == Some(0),
        _ => x.children().iter().all(|c| same_within(c, var, lanes)),
    }
}

/// `x` with every read of `var` replaced by `by`.
pub fn substitute(x: &Expr, var: VarId, by: &Expr) -> Expr {
    rewrite_bottom_up(x.clone(), &mut |n| {
        if n == Expr::Var(var) {
            by.clone()
        } else {
            n
        }
    })
}

fn substitute_stmts(body: &[Stmt], var: VarId, by: &Expr) -> Vec<Stmt> {
    let mut out = body.to_vec();
    map_exprs(&mut out, &mut |x| substitute(&x, var, by));
    out
}
