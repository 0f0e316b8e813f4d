//! Value ranges of i64 index expressions, from what a kernel says of its leaves: grid
//! indices lie in `0..extent` (unbounded above for a symbolic extent), loop variables in
//! `0..extent`, symbols are non-negative, the thread index of a kernel of explicit threads
//! lies below its block size.
//!
//! Index simplification (`simplify`) moves terms across a division with them; the SPIR-V
//! backend computes an index in 32 bits where they show every part of it to fit, and
//! divides non-negative values by powers of two with shifts.

use super::{BOp, Expr, Lit, VarId};
use std::collections::HashMap;

/// Inclusive bounds; `hi == None` is unbounded above.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: i64,
    pub hi: Option<i64>,
}

impl Range {
    /// The values of a loop or grid index over `extent`.
    pub fn upto(extent: &Expr) -> Range {
        match extent {
            Expr::Lit(Lit::I64(n)) if *n > 0 => Range {
                lo: 0,
                hi: Some(n - 1),
            },
            _ => Range { lo: 0, hi: None },
        }
    }

    pub fn exactly(v: i64) -> Range {
        Range { lo: v, hi: Some(v) }
    }

    /// Whether every value lies within i32, where 32- and 64-bit arithmetic agree.
    pub fn within_i32(self) -> bool {
        self.lo >= i32::MIN as i64 && self.hi.is_some_and(|h| h <= i32::MAX as i64)
    }

    fn union(self, o: Range) -> Range {
        Range {
            lo: self.lo.min(o.lo),
            hi: self.hi.zip(o.hi).map(|(a, b)| a.max(b)),
        }
    }
}

/// What is known of a kernel's leaves, as a walk over its body reaches them.
pub struct Ranges<'a> {
    grid: &'a [Expr],
    threads: Option<u32>,
    vars: HashMap<VarId, Range>,
}

impl<'a> Ranges<'a> {
    pub fn new(grid: &'a [Expr]) -> Self {
        Ranges {
            grid,
            threads: None,
            vars: HashMap::new(),
        }
    }

    /// With the block size of a kernel of explicit threads (`Expr::Thread`).
    pub fn with_threads(self, threads: u32) -> Self {
        Ranges {
            threads: Some(threads),
            ..self
        }
    }

    pub fn bind(&mut self, var: VarId, r: Range) {
        self.vars.insert(var, r);
    }

    /// Nothing known of `var` (a mutable variable).
    pub fn forget(&mut self, var: VarId) {
        self.vars.remove(&var);
    }

    /// `var` as the index of a loop over `extent`.
    pub fn bind_index(&mut self, var: VarId, extent: &Expr) {
        self.bind(var, Range::upto(extent));
    }

    /// `var` bound to `value`: its range where known, else nothing (a variable of an
    /// earlier binding of the same id is forgotten).
    pub fn bind_value(&mut self, var: VarId, value: &Expr) {
        match self.of(value) {
            Some(r) => self.bind(var, r),
            None => self.forget(var),
        }
    }

    /// The range of i64 expression `e`, or `None` where its form does not show one (any
    /// leaf but those above and i64 literals; operations whose bounds need signs it
    /// cannot see; anything that could leave i64).
    pub fn of(&self, e: &Expr) -> Option<Range> {
        match e {
            Expr::Lit(Lit::I64(v)) => Some(Range::exactly(*v)),
            Expr::GridIdx(a) => Some(Range::upto(self.grid.get(*a as usize)?)),
            Expr::Dim(_) => Some(Range { lo: 0, hi: None }),
            Expr::Thread => Some(Range {
                lo: 0,
                hi: Some(self.threads? as i64 - 1),
            }),
            Expr::Var(v) => self.vars.get(v).copied(),
            Expr::Select(_, a, b) => Some(self.of(a)?.union(self.of(b)?)),
            Expr::Binary(op, a, b) => binary(*op, self.of(a)?, self.of(b)?),
            _ => None,
        }
    }
}

fn binary(op: BOp, x: Range, y: Range) -> Option<Range> {
    // An upper bound from both operands' (unbounded where either is), or `None` where
    // it would leave i64: then nothing is known.
    let both = |f: fn(i64, i64) -> Option<i64>| match (x.hi, y.hi) {
        (Some(p), Some(q)) => f(p, q).map(Some),
        _ => Some(None),
    };
    let nonneg = x.lo >= 0 && y.lo >= 0;
    // A shift by a known amount below the bit count of an i64.
    let by = y.hi.filter(|&h| h == y.lo && (0..63).contains(&h));
    let shl = |v: i64, s: i64| v.checked_shl(s as u32).filter(|w| w >> s == v);
    Some(match op {
        BOp::Add => Range {
            lo: x.lo.checked_add(y.lo)?,
            hi: both(i64::checked_add)?,
        },
        BOp::Sub => Range {
            lo: x.lo.checked_sub(y.hi?)?,
            hi: match x.hi {
                Some(h) => Some(h.checked_sub(y.lo)?),
                None => None,
            },
        },
        BOp::Mul if nonneg => Range {
            lo: x.lo.checked_mul(y.lo)?,
            hi: both(i64::checked_mul)?,
        },
        // Signed factors: the extremes are products of bounds (`(g1 - 512) * 4`, the second
        // half of a fused pair of projections).
        BOp::Mul => {
            let (xh, yh) = (x.hi?, y.hi?);
            let corners = [(x.lo, y.lo), (x.lo, yh), (xh, y.lo), (xh, yh)]
                .into_iter()
                .map(|(p, q)| p.checked_mul(q))
                .collect::<Option<Vec<i64>>>()?;
            Range {
                lo: *corners.iter().min()?,
                hi: corners.iter().max().copied(),
            }
        }
        BOp::Div if x.lo >= 0 && y.lo > 0 => Range {
            lo: x.lo / y.hi.unwrap_or(i64::MAX).max(1),
            hi: x.hi.map(|h| h / y.lo),
        },
        BOp::Rem if x.lo >= 0 && y.lo > 0 => Range {
            lo: 0,
            hi: Some(match (x.hi, y.hi) {
                (Some(h), Some(d)) => h.min(d - 1),
                (Some(h), None) => h,
                (None, Some(d)) => d - 1,
                (None, None) => return None,
            }),
        },
        BOp::Shl if x.lo >= 0 => {
            let s = by?;
            Range {
                lo: shl(x.lo, s)?,
                hi: match x.hi {
                    Some(h) => Some(shl(h, s)?),
                    None => None,
                },
            }
        }
        BOp::Shr if x.lo >= 0 => {
            let s = by?;
            Range {
                lo: x.lo >> s,
                hi: x.hi.map(|h| h >> s),
            }
        }
        // A non-negative mask bounds the result whatever the other operand.
        BOp::And if x.lo >= 0 || y.lo >= 0 => Range {
            lo: 0,
            hi: [x, y]
                .into_iter()
                .filter(|r| r.lo >= 0)
                .filter_map(|r| r.hi)
                .min(),
        },
        BOp::Min => Range {
            lo: x.lo.min(y.lo),
            hi: match (x.hi, y.hi) {
                (Some(p), Some(q)) => Some(p.min(q)),
                (p, q) => p.or(q),
            },
        },
        BOp::Max => Range {
            lo: x.lo.max(y.lo),
            hi: both(|p, q| Some(p.max(q)))?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::e::*;

    #[test]
    fn ranges_follow_index_arithmetic() {
        let grid = [i(2048), Expr::Dim(0)];
        let mut r = Ranges::new(&grid).with_threads(256);
        r.bind_index(5, &i(256));
        let range = |r: &Ranges, e: &Expr| r.of(e).map(|r| (r.lo, r.hi));
        // A Q4_K step's byte offset in its row: (v5 / 4) * 128 + (v5 % 4) * 16.
        let k = add(
            mul(div(var(5), i(4)), i(128)),
            mul(rem(var(5), i(4)), i(16)),
        );
        assert_eq!(range(&r, &k), Some((0, Some(63 * 128 + 3 * 16))));
        let row = add(mul(Expr::GridIdx(0), i(4608)), div(k.clone(), i(256)));
        assert_eq!(range(&r, &row), Some((0, Some(2047 * 4608 + 31))));
        assert!(r.of(&row).unwrap().within_i32());
        // Shifts and masks by constants; a symbolic grid extent leaves no upper bound.
        let e = bin(BOp::And, bin(BOp::Shr, Expr::Thread, i(2)), i(7));
        assert_eq!(range(&r, &e), Some((0, Some(7))));
        let e = bin(BOp::Shl, var(5), i(3));
        assert_eq!(range(&r, &e), Some((0, Some(255 * 8))));
        let g1 = Expr::GridIdx(1);
        assert_eq!(range(&r, &mul(g1.clone(), i(64))), Some((0, None)));
        assert!(!r.of(&g1).unwrap().within_i32());
        // Subtraction needs the subtrahend's bound; unknown leaves give nothing.
        assert_eq!(range(&r, &sub(var(5), i(1))), Some((-1, Some(254))));
        assert_eq!(range(&r, &sub(var(5), g1.clone())), None);
        assert_eq!(range(&r, &add(var(9), i(1))), None);
        // Signed products take the extremes of their bounds' products; unbounded ones none.
        assert_eq!(
            range(&r, &mul(sub(var(5), i(1)), i(3))),
            Some((-3, Some(762)))
        );
        assert_eq!(
            range(&r, &mul(sub(var(5), i(1)), i(-2))),
            Some((-508, Some(2)))
        );
        assert_eq!(range(&r, &mul(sub(g1.clone(), i(1)), i(3))), None);
        // The second half of a fused pair: `min((g - 512) * 4, 2047)`.
        let e = bin(BOp::Min, mul(sub(var(5), i(128)), i(4)), i(200));
        assert_eq!(range(&r, &e), Some((-512, Some(200))));
        // A binding whose value has no range forgets an earlier one.
        r.bind_value(5, &var(9));
        assert_eq!(range(&r, &var(5)), None);
    }

    #[test]
    fn shifts_that_would_leave_i64_have_no_range() {
        let grid = [i(1 << 40)];
        let r = Ranges::new(&grid);
        assert_eq!(
            r.of(&bin(BOp::Shl, Expr::GridIdx(0), i(23))).unwrap().hi,
            Some(((1 << 40) - 1) << 23)
        );
        assert_eq!(r.of(&bin(BOp::Shl, Expr::GridIdx(0), i(30))), None);
        assert_eq!(r.of(&mul(Expr::GridIdx(0), i(1 << 30))), None);
        assert_eq!(r.of(&bin(BOp::Shl, i(1), i(63))), None);
    }
}
