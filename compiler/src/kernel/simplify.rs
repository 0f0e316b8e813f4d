//! Integer index simplification with value ranges: `(x * c + y) / c` is `x` and
//! `(x * c + y) % c` is `y` when `x >= 0` and `0 <= y < c`. Reshapes and permutes produce
//! such divisions and remainders in their index arithmetic (a `[seq, 768]` row read as
//! `[seq, 12, 64]` divides by 64 and 12); simplified away, a load along the head dimension
//! has unit stride again, so the vectoriser reads it as one vector instead of a gather of
//! lanes each doing its own divisions (attention's matmuls were 20x slower for it).
//!
//! Ranges come from the kernel (`ranges`). Only non-negative terms are moved across a
//! division, where truncation and flooring agree.

use super::e::*;
use super::ranges::Ranges;
use super::{BOp, Expr, Kernel, Lit, Stmt};

/// Index simplification with the ranges a walk over a kernel has gathered.
struct Simplifier<'a>(Ranges<'a>);

impl Simplifier<'_> {
    fn of(&self, e: &Expr) -> Option<super::ranges::Range> {
        self.0.of(e)
    }

    /// `e` as `constant + sum of coef * atom` over non-negative atoms with positive
    /// coefficients, or `None`.
    fn linear(&self, e: &Expr) -> Option<(i64, Vec<(i64, Expr)>)> {
        match e {
            Expr::Lit(Lit::I64(v)) => Some((*v, Vec::new())),
            Expr::Binary(BOp::Add, a, b) => {
                let (ca, mut ta) = self.linear(a)?;
                let (cb, tb) = self.linear(b)?;
                ta.extend(tb);
                Some((ca.checked_add(cb)?, ta))
            }
            Expr::Binary(BOp::Mul, a, b) => {
                let (k, x) = match (a.as_ref(), b.as_ref()) {
                    (Expr::Lit(Lit::I64(k)), x) | (x, Expr::Lit(Lit::I64(k))) => (*k, x),
                    _ => return self.atom(e),
                };
                if k <= 0 {
                    return None;
                }
                let (c, terms) = self.linear(x)?;
                let terms = terms
                    .into_iter()
                    .map(|(t, a)| Some((t.checked_mul(k)?, a)))
                    .collect::<Option<Vec<_>>>()?;
                Some((c.checked_mul(k)?, terms))
            }
            _ => self.atom(e),
        }
    }

    fn atom(&self, e: &Expr) -> Option<(i64, Vec<(i64, Expr)>)> {
        (self.of(e)?.lo >= 0).then(|| (0, vec![(1, e.clone())]))
    }

    /// `e / c` (`rem == false`) or `e % c` without the division, when the terms not
    /// divisible by `c` stay within `0..c`.
    fn split(&self, e: &Expr, c: i64, rem: bool) -> Option<Expr> {
        let (k, terms) = self.linear(e)?;
        if k < 0 {
            return None;
        }
        let (mut whole, mut part) = (Vec::new(), Vec::new());
        for (t, a) in terms {
            if t % c == 0 {
                whole.push((t / c, a));
            } else {
                part.push((t, a));
            }
        }
        let (mut lo, mut hi) = (k % c, k % c);
        for (t, a) in &part {
            let r = self.of(a)?;
            lo += t * r.lo;
            hi = hi.checked_add(t.checked_mul(r.hi?)?)?;
        }
        if lo < 0 || hi >= c {
            return None;
        }
        let sum = |k: i64, terms: Vec<(i64, Expr)>| {
            terms
                .into_iter()
                .fold(i(k), |acc, (t, a)| add(acc, mul(a, i(t))))
        };
        Some(if rem {
            sum(k % c, part)
        } else {
            sum(k / c, whole)
        })
    }

    fn simplify(&self, e: Expr) -> Expr {
        super::rewrite_bottom_up(e, &mut |n| match &n {
            Expr::Binary(op @ (BOp::Div | BOp::Rem), a, b) => match b.as_ref() {
                Expr::Lit(Lit::I64(c)) if *c > 0 => self.split(a, *c, *op == BOp::Rem).unwrap_or(n),
                _ => n,
            },
            Expr::Binary(BOp::Add, a, b) => regrouped(a, b).unwrap_or(n),
            _ => n,
        })
    }
}

/// `x` for `(x / c) * c + x % c` (either order of the sum and of the product): true of
/// truncating division for every `x`. Splitting a dim and joining it again leaves this
/// (grouped-query attention's heads, `[32] -> [4, 8] -> [32]`), and the whole of it moves
/// by one where `x` does, which the vectoriser and the GPU dot products need to see.
fn regrouped(a: &Expr, b: &Expr) -> Option<Expr> {
    let quotient_times = |e: &Expr| -> Option<(Expr, Expr)> {
        let Expr::Binary(BOp::Mul, p, q) = e else {
            return None;
        };
        [(p, q), (q, p)]
            .into_iter()
            .find_map(|(d, c)| match d.as_ref() {
                Expr::Binary(BOp::Div, x, c2) if c2 == c => {
                    Some((x.as_ref().clone(), c.as_ref().clone()))
                }
                _ => None,
            })
    };
    let remainder = |e: &Expr| -> Option<(Expr, Expr)> {
        match e {
            Expr::Binary(BOp::Rem, x, c) => Some((x.as_ref().clone(), c.as_ref().clone())),
            _ => None,
        }
    };
    [(a, b), (b, a)].into_iter().find_map(|(p, r)| {
        let (x, c) = quotient_times(p)?;
        (remainder(r)? == (x.clone(), c)).then_some(x)
    })
}

/// Simplifies the index arithmetic of every expression in `k`.
pub fn simplify_kernel(k: &mut Kernel) {
    let grid = k.grid.clone();
    walk(&mut k.body, &mut Simplifier(Ranges::new(&grid)));
}

fn walk(stmts: &mut [Stmt], r: &mut Simplifier) {
    for s in stmts {
        match s {
            Stmt::Let { var, value } => {
                *value = r.simplify(std::mem::replace(value, i(0)));
                r.0.bind_value(*var, value);
            }
            Stmt::Decl { init: e, .. } | Stmt::Assign { value: e, .. } => {
                *e = r.simplify(std::mem::replace(e, i(0)));
            }
            Stmt::Store { index, value, .. } => {
                *index = r.simplify(std::mem::replace(index, i(0)));
                *value = r.simplify(std::mem::replace(value, i(0)));
            }
            Stmt::Prefetch { index, .. } => {
                *index = r.simplify(std::mem::replace(index, i(0)));
            }
            Stmt::Copy {
                dst_index,
                src_index,
                ..
            } => {
                *dst_index = r.simplify(std::mem::replace(dst_index, i(0)));
                *src_index = r.simplify(std::mem::replace(src_index, i(0)));
            }
            Stmt::Await { .. } | Stmt::GroupWait { .. } => {}
            Stmt::GroupMma { products, .. } => {
                for p in products {
                    p.a_index = r.simplify(std::mem::replace(&mut p.a_index, i(0)));
                    p.b_index = r.simplify(std::mem::replace(&mut p.b_index, i(0)));
                }
            }
            Stmt::Loop {
                var, extent, body, ..
            } => {
                r.0.bind_index(*var, extent);
                walk(body, r);
            }
            Stmt::Reduce {
                var, extent, value, ..
            } => {
                r.0.bind_index(*var, extent);
                *value = r.simplify(std::mem::replace(value, i(0)));
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                *cond = r.simplify(std::mem::replace(cond, i(0)));
                walk(then, r);
                walk(otherwise, r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::rewrite_bottom_up;

    fn ranges(grid: &[Expr]) -> Simplifier<'_> {
        let mut r = Ranges::new(grid);
        r.bind_index(7, &i(64));
        Simplifier(r)
    }

    /// A `[rows, 768]` row read as `[rows, 12, 64]` and permuted: the divisions and
    /// remainders cancel, leaving `g1 * 768 + g0 * 64 + k`.
    #[test]
    fn reshape_divisions_cancel_within_ranges() {
        let grid = [i(12), Expr::Dim(0)];
        let r = ranges(&grid);
        let (g0, g1, k) = (Expr::GridIdx(0), Expr::GridIdx(1), var(7));
        let flat = add(
            mul(add(mul(g1.clone(), i(12)), g0.clone()), i(64)),
            k.clone(),
        );
        let head = rem(div(flat.clone(), i(64)), i(12));
        let row = div(div(flat.clone(), i(64)), i(12));
        let col = rem(flat, i(64));
        let index = add(mul(add(mul(row, i(12)), head), i(64)), col);
        let want = add(
            add(mul(g1.clone(), i(768)), mul(g0.clone(), i(64))),
            k.clone(),
        );
        let got = r.simplify(index);
        let eval = |e: &Expr, a: i64, b: i64, c: i64| {
            let e = super::super::vectorize::substitute(e, 7, &i(c));
            let e = rewrite_bottom_up(e, &mut |n| match n {
                Expr::GridIdx(0) => i(a),
                Expr::GridIdx(1) => i(b),
                Expr::Binary(op, x, y) => match (*x, *y) {
                    (Expr::Lit(Lit::I64(x)), Expr::Lit(Lit::I64(y))) => i(match op {
                        BOp::Add => x + y,
                        BOp::Mul => x * y,
                        BOp::Div => x / y,
                        BOp::Rem => x % y,
                        _ => unreachable!(),
                    }),
                    (x, y) => bin(op, x, y),
                },
                n => n,
            });
            match e {
                Expr::Lit(Lit::I64(v)) => v,
                other => panic!("not constant: {other}"),
            }
        };
        assert!(!format!("{got}").contains('/'), "{got}");
        for (a, b, c) in [(0, 0, 0), (11, 3, 63), (5, 100, 17)] {
            assert_eq!(eval(&got, a, b, c), eval(&want, a, b, c));
        }
    }

    /// Nothing moves across a division when the remainder part can reach the divisor.
    #[test]
    fn divisions_stay_when_the_range_does_not_fit() {
        let grid = [Expr::Dim(0)];
        let r = ranges(&grid);
        let e = div(add(mul(Expr::GridIdx(0), i(64)), var(7)), i(32));
        assert_eq!(r.simplify(e.clone()), e);
        let e = div(add(Expr::GridIdx(0), var(7)), i(64));
        assert_eq!(r.simplify(e.clone()), e);
    }

    #[test]
    fn a_split_index_joined_again_is_the_index() {
        let grid = [Expr::Dim(0)];
        let r = ranges(&grid);
        // Heads split into (kv head, group) and joined: x / 8 * 8 + x % 8 with x = k / 64.
        let x = div(var(3), i(64));
        let joined = add(mul(div(x.clone(), i(8)), i(8)), rem(x.clone(), i(8)));
        assert_eq!(r.simplify(joined), x);
        let swapped = add(rem(x.clone(), i(8)), mul(i(8), div(x.clone(), i(8))));
        assert_eq!(r.simplify(swapped), x);
        // Symbolic divisors too; different divisors or operands stay.
        let d = Expr::Dim(0);
        let symbolic = add(
            mul(div(var(3), d.clone()), d.clone()),
            rem(var(3), d.clone()),
        );
        assert_eq!(r.simplify(symbolic), var(3));
        let other = add(mul(div(var(3), i(8)), i(4)), rem(var(3), i(8)));
        assert_eq!(r.simplify(other.clone()), other);
        let other = add(mul(div(var(3), i(8)), i(8)), rem(var(4), i(8)));
        assert_eq!(r.simplify(other.clone()), other);
    }
}
