//! Transcendental functions as f32 arithmetic, written once for every backend.
//!
//! Backends then need no math library (CPU objects stay self-contained, GPU kernels need no
//! libdevice), the expansions vectorise like any other arithmetic, and every target gets
//! the same numerics. Polynomials are the Cephes single-precision ones (about 1-2 ulp on
//! their reduced ranges); `erf` uses Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).

// The coefficients are kept as published (more digits than f32 holds), so they can be
// checked against their source; the compiler rounds them.
#![allow(clippy::excessive_precision)]

use super::ir::e::*;
use super::ir::*;

/// Replaces every transcendental [`UOp`] in the kernel with its expansion.
pub fn expand_kernel(k: &mut Kernel) {
    let mut next = k.next_var;
    map_exprs(&mut k.body, &mut |x| {
        rewrite_bottom_up(x, &mut |n| expand(n, &mut next))
    });
    k.next_var = next;
}

fn expand(e: Expr, next: &mut VarId) -> Expr {
    let Expr::Unary(op, x) = e else { return e };
    let mut fresh = || {
        *next += 1;
        *next - 1
    };
    let x = *x;
    match op {
        UOp::Exp => {
            let v = fresh();
            let_in(v, x, exp(var(v), &mut fresh))
        }
        UOp::Log => {
            let v = fresh();
            let_in(v, x, log(var(v), &mut fresh))
        }
        UOp::Tanh => {
            let v = fresh();
            let_in(v, x, tanh(var(v), &mut fresh))
        }
        UOp::Erf => {
            let v = fresh();
            let_in(v, x, erf(var(v), &mut fresh))
        }
        UOp::Sin => {
            let v = fresh();
            let_in(v, x, sin_cos(var(v), 0, &mut fresh))
        }
        UOp::Cos => {
            let v = fresh();
            let_in(v, x, sin_cos(var(v), 1, &mut fresh))
        }
        UOp::Neg | UOp::Abs | UOp::Sqrt | UOp::HalfBits => un(op, x),
    }
}

fn fadd(a: Expr, b: Expr) -> Expr {
    bin(BOp::Add, a, b)
}
fn fsub(a: Expr, b: Expr) -> Expr {
    bin(BOp::Sub, a, b)
}
fn fmul(a: Expr, b: Expr) -> Expr {
    bin(BOp::Mul, a, b)
}

/// Horner evaluation of `c[0]*x^n + ... + c[n]`.
fn horner(x: &Expr, c: &[f32]) -> Expr {
    let mut acc = f(c[0]);
    for &ci in &c[1..] {
        acc = fma(acc, x.clone(), f(ci));
    }
    acc
}

/// `round(v)` to an i32 (half away from zero), without a rounding instruction.
fn round_i32(v: Expr) -> Expr {
    let half = select(cmp(Cmp::Ge, v.clone(), f(0.0)), f(0.5), f(-0.5));
    cast(Elem::I32, fadd(v, half))
}

/// 1.5 * 2^23: adding it to an f32 of magnitude below 2^22 rounds to an integer (to
/// nearest, ties to even), which then sits in the low mantissa bits.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// `e^x` as `2^n * e^r` with `n = round(x * log2 e)` and `r = x - n ln 2` (Cody-Waite, in
/// two parts); `e^r` by a degree-7 polynomial. The magic-number rounding yields `n` both as
/// a float and, in the mantissa bits, as the integer for the exponent field: no float to
/// int conversion, which x86 needs several instructions to saturate.
pub(crate) fn exp(x: Expr, fresh: &mut impl FnMut() -> VarId) -> Expr {
    let (xc, t, r, p) = (fresh(), fresh(), fresh(), fresh());
    let clamped = max(min(x, f(88.37626)), f(-87.33654));
    let body = {
        let nf = fsub(var(t), f(ROUNDING_MAGIC));
        let red = fsub(
            fsub(var(xc), fmul(nf.clone(), f(0.693_359_4))),
            fmul(nf, f(-2.121_944_4e-4)),
        );
        let rr = var(r);
        let poly = horner(
            &rr,
            &[
                1.987_569_1e-4,
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                5.000_000_1e-1,
            ],
        );
        let y = fadd(fadd(fmul(fmul(var(p), rr.clone()), rr.clone()), rr), f(1.0));
        // The low 9 bits of the magic's pattern are zero, so shifting t's bits left by 23
        // leaves exactly (n + 127) << 23.
        let scale = bitcast(
            Elem::F32,
            bin(
                BOp::Shl,
                bin(BOp::Add, bitcast(Elem::I32, var(t)), i32(127)),
                i32(23),
            ),
        );
        let_in(r, red, let_in(p, poly, fmul(y, scale)))
    };
    let_in(
        xc,
        clamped,
        let_in(
            t,
            fadd(
                fmul(var(xc), f(std::f32::consts::LOG2_E)),
                f(ROUNDING_MAGIC),
            ),
            body,
        ),
    )
}

fn log(x: Expr, fresh: &mut impl FnMut() -> VarId) -> Expr {
    let (bits, m0, e0, big, m, ee, z, y) = (
        fresh(),
        fresh(),
        fresh(),
        fresh(),
        fresh(),
        fresh(),
        fresh(),
        fresh(),
    );
    let exp_bits = bin(
        BOp::Sub,
        bin(BOp::And, bin(BOp::Shr, var(bits), i32(23)), i32(0xff)),
        i32(127),
    );
    let mant = bitcast(
        Elem::F32,
        bin(
            BOp::Or,
            bin(BOp::And, var(bits), i32(0x007f_ffff)),
            i32(0x3f80_0000),
        ),
    );
    let is_big = cmp(Cmp::Gt, var(m0), f(std::f32::consts::SQRT_2));
    let mm = fsub(select(var(big), fmul(var(m0), f(0.5)), var(m0)), f(1.0));
    let ef = fadd(cast(Elem::F32, var(e0)), select(var(big), f(1.0), f(0.0)));
    let poly = horner(
        &var(m),
        &[
            7.037_683_6e-2,
            -1.151_461_e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333_1e-1,
        ],
    );
    let yv = fmul(fmul(poly, var(m)), var(z));
    let result = fadd(
        fadd(
            fadd(var(m), fadd(var(y), fmul(f(-2.121_944_4e-4), var(ee)))),
            fmul(f(-0.5), var(z)),
        ),
        fmul(f(0.693_359_4), var(ee)),
    );
    let finite = let_in(z, fmul(var(m), var(m)), let_in(y, yv, result));
    let value = let_in(
        bits,
        bitcast(Elem::I32, x.clone()),
        let_in(
            e0,
            exp_bits,
            let_in(
                m0,
                mant,
                let_in(big, is_big, let_in(m, mm, let_in(ee, ef, finite))),
            ),
        ),
    );
    let nan = bitcast(Elem::F32, i32(0x7fc0_0000));
    let neg_inf = bitcast(Elem::F32, i32(0xff80_0000_u32 as i32));
    let pos_inf = bitcast(Elem::F32, i32(0x7f80_0000));
    select(
        cmp(Cmp::Lt, x.clone(), f(0.0)),
        nan,
        select(
            cmp(Cmp::Eq, x.clone(), f(0.0)),
            neg_inf,
            select(cmp(Cmp::Eq, x, pos_inf.clone()), pos_inf, value),
        ),
    )
}

fn tanh(x: Expr, fresh: &mut impl FnMut() -> VarId) -> Expr {
    let (ax, z, t) = (fresh(), fresh(), fresh());
    let small = {
        let poly = horner(
            &var(z),
            &[
                -5.704_988_7e-3,
                2.063_908_9e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328_2e-1,
            ],
        );
        let_in(
            z,
            fmul(x.clone(), x.clone()),
            fadd(fmul(fmul(poly, var(z)), x.clone()), x.clone()),
        )
    };
    let e2 = exp(fmul(var(ax), f(2.0)), fresh);
    let large_abs = fsub(f(1.0), bin(BOp::Div, f(2.0), fadd(e2, f(1.0))));
    let large = let_in(
        t,
        large_abs,
        select(
            cmp(Cmp::Lt, x.clone(), f(0.0)),
            un(UOp::Neg, var(t)),
            var(t),
        ),
    );
    let_in(
        ax,
        min(un(UOp::Abs, x), f(9.0)),
        select(cmp(Cmp::Lt, var(ax), f(0.625)), small, large),
    )
}

fn erf(x: Expr, fresh: &mut impl FnMut() -> VarId) -> Expr {
    let (ax, t, y) = (fresh(), fresh(), fresh());
    let tt = bin(
        BOp::Div,
        f(1.0),
        fadd(f(1.0), fmul(f(0.327_591_1), var(ax))),
    );
    let poly = fmul(
        horner(
            &var(t),
            &[
                1.061_405_4,
                -1.453_152_1,
                1.421_413_8,
                -0.284_496_74,
                0.254_829_6,
            ],
        ),
        var(t),
    );
    let e = exp(un(UOp::Neg, fmul(var(ax), var(ax))), fresh);
    let r = fsub(f(1.0), fmul(poly, e));
    let signed = select(
        cmp(Cmp::Lt, x.clone(), f(0.0)),
        un(UOp::Neg, var(y)),
        var(y),
    );
    let_in(ax, un(UOp::Abs, x), let_in(t, tt, let_in(y, r, signed)))
}

/// `sin(x)` for `shift == 0`, `cos(x)` for `shift == 1` (a quarter-turn later).
fn sin_cos(x: Expr, shift: i32, fresh: &mut impl FnMut() -> VarId) -> Expr {
    let (j, r, z, q, s, c) = (fresh(), fresh(), fresh(), fresh(), fresh(), fresh());
    let jf = cast(Elem::F32, var(j));
    // pi/2 split in three parts so that j * part is exact for moderate j.
    let red = fsub(
        fsub(
            fsub(x.clone(), fmul(jf.clone(), f(1.570_312_5))),
            fmul(jf.clone(), f(4.837_512_969_970_703e-4)),
        ),
        fmul(jf, f(7.549_789_948_768_648e-8)),
    );
    let sin_p = fadd(
        fmul(
            fmul(
                horner(&var(z), &[-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1]),
                var(z),
            ),
            var(r),
        ),
        var(r),
    );
    let cos_p = fadd(
        fsub(
            fmul(
                fmul(
                    horner(&var(z), &[2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2]),
                    var(z),
                ),
                var(z),
            ),
            fmul(f(0.5), var(z)),
        ),
        f(1.0),
    );
    let quadrant = bin(BOp::And, bin(BOp::Add, var(j), i32(shift)), i32(3));
    let pick = select(
        cmp(Cmp::Eq, var(q), i32(0)),
        var(s),
        select(
            cmp(Cmp::Eq, var(q), i32(1)),
            var(c),
            select(
                cmp(Cmp::Eq, var(q), i32(2)),
                un(UOp::Neg, var(s)),
                un(UOp::Neg, var(c)),
            ),
        ),
    );
    let_in(
        j,
        round_i32(fmul(x, f(std::f32::consts::FRAC_2_PI))),
        let_in(
            r,
            red,
            let_in(
                z,
                fmul(var(r), var(r)),
                let_in(q, quadrant, let_in(s, sin_p, let_in(c, cos_p, pick))),
            ),
        ),
    )
}
