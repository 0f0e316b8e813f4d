//! What is known about the alignment of element indices: the power-of-two factor an
//! integer expression is sure to have.
//!
//! A code generator that cannot state alignment through pointers (SPIR-V's logical
//! addressing reads buffers as arrays of a fixed element type) asks this before reading a
//! run of elements as one wide element: a run of 4 halves whose first index is a multiple
//! of 4 is one 8-byte word pair, any other run straddles two. Only immutable bindings
//! (`Stmt::Let`, `Expr::Let`) are followed; a mutable variable, a symbol or a grid index
//! proves nothing.

use super::{visit_stmts, BOp, Elem, Expr, Kernel, Lit, Stmt, VarId};
use std::collections::HashMap;

/// The largest factor tracked; zero is a multiple of everything, which this stands for.
const ANY: u64 = 1 << 32;

/// The immutable bindings of one kernel, to look through when proving a factor.
pub struct Alignment<'k> {
    lets: HashMap<VarId, &'k Expr>,
}

impl<'k> Alignment<'k> {
    pub fn of(k: &'k Kernel) -> Alignment<'k> {
        let mut lets = HashMap::new();
        fn expr_lets<'k>(e: &'k Expr, lets: &mut HashMap<VarId, &'k Expr>) {
            if let Expr::Let { var, value, .. } = e {
                lets.insert(*var, &**value);
            }
            for c in e.children() {
                expr_lets(c, lets);
            }
        }
        visit_stmts(&k.body, &mut |s| {
            if let Stmt::Let { var, value } = s {
                lets.insert(*var, value);
            }
            for e in s.exprs() {
                expr_lets(e, &mut lets);
            }
        });
        Alignment { lets }
    }

    /// Index `e` as the start of its aligned group of `n` (a power of two) elements and its
    /// offset in the group, where the addends of `e` that are not literals sum to a
    /// multiple of `n`: `base + 20` with `base` a multiple of 16 is `(base + 16, 4)`. The
    /// loads of one group then share one start (and one wide load of it).
    pub fn in_group(&self, e: &Expr, n: u64) -> Option<(Expr, u64)> {
        let (rest, c) = split_constant(e)?;
        if !self.multiple_of(&rest, n) {
            return None;
        }
        let offset = c.rem_euclid(n as i64);
        let start = match c - offset {
            0 => rest,
            s => Expr::Binary(BOp::Add, Box::new(rest), Box::new(Expr::Lit(Lit::I64(s)))),
        };
        Some((start, offset as u64))
    }

    /// Whether integer expression `e` is certainly a multiple of `n` (a power of two).
    pub fn multiple_of(&self, e: &Expr, n: u64) -> bool {
        debug_assert!(n.is_power_of_two());
        self.factor(e, 0).is_multiple_of(n)
    }

    /// A power of two that divides `e` (`ANY` for zero).
    fn factor(&self, e: &Expr, depth: u32) -> u64 {
        // Let chains are short; the bound only keeps a malformed kernel from recursing
        // without end.
        if depth > 64 {
            return 1;
        }
        let f = |e: &Expr| self.factor(e, depth + 1);
        match e {
            Expr::Lit(Lit::I32(v)) => pow2_factor(*v as i64),
            Expr::Lit(Lit::I64(v)) => pow2_factor(*v),
            Expr::Var(v) => self.lets.get(v).map_or(1, |e| f(e)),
            Expr::Let { body, .. } => f(body),
            Expr::Cast(Elem::I32 | Elem::I64, a) => f(a),
            Expr::Binary(BOp::Mul, a, b) => f(a).saturating_mul(f(b)).min(ANY),
            Expr::Binary(BOp::Add | BOp::Sub | BOp::Min | BOp::Max, a, b)
            | Expr::Select(_, a, b) => f(a).min(f(b)),
            // `a - c * trunc(a / c)`: what divides both divides the remainder.
            Expr::Binary(BOp::Rem, a, b) => f(a).min(f(b)),
            Expr::Binary(BOp::Shl, a, b) => match **b {
                Expr::Lit(Lit::I32(s)) if (0..32).contains(&s) => (f(a) << s).min(ANY),
                Expr::Lit(Lit::I64(s)) if (0..32).contains(&s) => (f(a) << s).min(ANY),
                _ => f(a),
            },
            _ => 1,
        }
    }
}

/// A power of two that divides `e` (`ANY` for zero), following no bindings.
pub fn factor_of(e: &Expr) -> u64 {
    Alignment {
        lets: HashMap::new(),
    }
    .factor(e, 0)
}

fn pow2_factor(v: i64) -> u64 {
    if v == 0 {
        ANY
    } else {
        (1u64 << v.unsigned_abs().trailing_zeros()).min(ANY)
    }
}

/// `e` as `rest + c`: the literal addends of its sum tree (through `+` only) gathered into
/// `c`, the others kept in their order (`0` if there are none); `None` if `c` overflows.
fn split_constant(e: &Expr) -> Option<(Expr, i64)> {
    let zero = Expr::Lit(Lit::I64(0));
    Some(match e {
        Expr::Lit(Lit::I64(c)) => (zero, *c),
        Expr::Binary(BOp::Add, a, b) => {
            let ((ra, ca), (rb, cb)) = (split_constant(a)?, split_constant(b)?);
            let rest = match (ra == zero, rb == zero) {
                (true, _) => rb,
                (_, true) => ra,
                _ => Expr::Binary(BOp::Add, Box::new(ra), Box::new(rb)),
            };
            (rest, ca.checked_add(cb)?)
        }
        _ => (e.clone(), 0),
    })
}

/// Every `(buffer, lanes, index)` run load (`lanes > 1`) in `k`.
pub fn run_loads(k: &Kernel) -> Vec<(super::Buf, u8, &Expr)> {
    let mut loads = all_loads(k);
    loads.retain(|&(_, lanes, _)| lanes > 1);
    loads
}

/// Every `(buffer, lanes, index)` load in `k`.
pub fn all_loads(k: &Kernel) -> Vec<(super::Buf, u8, &Expr)> {
    fn walk<'k>(e: &'k Expr, out: &mut Vec<(super::Buf, u8, &'k Expr)>) {
        if let Expr::Load { buf, index, lanes } = e {
            out.push((*buf, *lanes, index));
        }
        for c in e.children() {
            walk(c, out);
        }
    }
    let mut out = Vec::new();
    visit_stmts(&k.body, &mut |s| {
        for e in s.exprs() {
            walk(e, &mut out);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::super::e::*;
    use super::super::{Buf, BufferParam, LoopKind, RedOp};
    use super::*;
    use kiln_ir::DType;

    /// `let 0 = grid0 * 2048; reduce over 1 in 0..512 of x[0 + 1 * 4 ..+4]`, the shape of
    /// a decode matvec's row read, plus an unaligned sibling.
    fn matvec_like() -> Kernel {
        let row = mul(Expr::GridIdx(0), i(2048));
        let at = add(var(0), mul(var(1), i(4)));
        Kernel {
            name: "t".into(),
            args: vec![BufferParam {
                name: "x".into(),
                dtype: DType::F16,
                writes: false,
                offset: false,
            }],
            locals: vec![],
            grid: vec![i(8)],
            min_chunk: 1,
            block_threads: None,
            body: vec![
                Stmt::Let { var: 0, value: row },
                Stmt::Loop {
                    var: 3,
                    extent: i(1),
                    kind: LoopKind::Serial,
                    vector: 1,
                    body: vec![Stmt::Reduce {
                        acc: 2,
                        op: RedOp::Sum,
                        var: 1,
                        extent: i(512),
                        value: Expr::ReduceLanes(
                            RedOp::Sum,
                            Box::new(add(
                                load_vec(Buf::Arg(0), at, 4),
                                load_vec(Buf::Arg(0), add(var(1), i(2)), 4),
                            )),
                        ),
                        vector: 1,
                    }],
                },
            ],
            cost: Default::default(),
            next_var: 4,
        }
    }

    #[test]
    fn factors_follow_lets_products_and_sums() {
        let k = matvec_like();
        let a = Alignment::of(&k);
        let runs = run_loads(&k);
        assert_eq!(runs.len(), 2);
        assert!(a.multiple_of(runs[0].2, 4));
        assert!(!a.multiple_of(runs[0].2, 8), "k * 4 is not a multiple of 8");
        assert!(!a.multiple_of(runs[1].2, 2), "k + 2 proves nothing");
        assert!(a.multiple_of(&i(0), 16));
        assert!(a.multiple_of(&bin(BOp::Shl, var(1), i(3)), 8));
        assert!(!a.multiple_of(&Expr::Dim(0), 2));
        assert!(
            !a.multiple_of(&var(2), 2),
            "a reduction's result is not a let"
        );
        // A q8_0 block's quants: `row * 8704 + (k / 32) * 34 + 2 + (k * 16) % 32`, even
        // but not a multiple of four (remainders and clamps keep their operands' factor).
        let k16 = bin(BOp::Mul, Expr::Dim(0), i(16));
        let quants = bin(
            BOp::Add,
            bin(BOp::Mul, bin(BOp::Min, Expr::Dim(1), i(8191)), i(8704)),
            bin(
                BOp::Add,
                bin(BOp::Mul, bin(BOp::Div, k16.clone(), i(32)), i(34)),
                bin(BOp::Add, i(2), bin(BOp::Rem, k16, i(32))),
            ),
        );
        assert!(a.multiple_of(&quants, 2));
        assert!(!a.multiple_of(&quants, 4));
        assert!(!a.multiple_of(&bin(BOp::Rem, i(16), Expr::Dim(0)), 2));
    }

    /// An index splits into the start of its aligned group and its offset in the group, the
    /// literal addends gathered and the rest kept in order: `row + 20` (`row` a multiple of
    /// 16) is `(row + 16, 4)`.
    #[test]
    fn indices_split_into_an_aligned_group_and_an_offset() {
        let k = matvec_like();
        let a = Alignment::of(&k);
        let row = mul(Expr::GridIdx(0), i(4608));
        let (start, at) = a.in_group(&add(row.clone(), i(20)), 16).unwrap();
        assert_eq!((start, at), (add(row.clone(), i(16)), 4));
        let k16 = mul(var(1), i(16));
        let e = add(row.clone(), add(add(k16.clone(), i(4)), i(8)));
        assert_eq!(
            a.in_group(&e, 16),
            Some((add(row.clone(), k16.clone()), 12))
        );
        assert_eq!(
            a.in_group(&add(row.clone(), i(-4)), 16),
            Some((add(row.clone(), i(-16)), 12))
        );
        // Not a multiple of the group once its literals are gone.
        assert_eq!(a.in_group(&add(mul(var(1), i(8)), i(4)), 16), None);
        assert_eq!(a.in_group(&add(Expr::Dim(0), i(4)), 4), None);
    }
}
