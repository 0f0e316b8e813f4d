//! Small integers converted to f32 through the exponent field, for GPUs whose conversion
//! unit is narrow.
//!
//! NVIDIA GPUs convert integers to floats at a quarter of the FMA pipes' rate (16 results
//! per cycle and multiprocessor on sm_80 and sm_90), and a quantized dot product converts
//! every weight it reads: a q8_0 matvec step of eight bytes spent eight conversions beside
//! eight FMAs. An integer `v` in `[0, 2^23)` or-ed into the bits of 2^23 (`0x4b000000`) is
//! the f32 `2^23 + v`, and subtracting 2^23 leaves `v`; one in `[-2^22, 2^22)` is added to
//! the bits of 1.5 * 2^23 instead. Both steps run at full rate, and the result is the
//! conversion's, bit for bit: every value involved is an integer below 2^24.
//!
//! The range comes from the expression itself ([`range`]): bytes loaded from a `u8`
//! buffer, literals, and the masks, shifts and offsets quantized formats decode with.

use super::e::*;
use super::{BOp, Buf, Elem, Expr, Kernel, Lit};
use kiln_ir::DType;

/// Rewrites every `cast<F32>` of an integer whose range is known small in `k`.
pub fn convert_through_exponent(k: &mut Kernel) {
    // The buffers' dtypes apart from `k`, whose body the rewrite borrows.
    let args: Vec<DType> = k.args.iter().map(|a| a.dtype).collect();
    let locals: Vec<DType> = k.locals.iter().map(|l| l.dtype).collect();
    let dtype = |b: Buf| match b {
        Buf::Arg(i) => args.get(i as usize).copied(),
        Buf::Local(i) => locals.get(i as usize).copied(),
    };
    super::map_exprs(&mut k.body, &mut |e| {
        super::rewrite_bottom_up(e, &mut |e| match e {
            Expr::Cast(Elem::F32, v) => match range(&v, &dtype) {
                Some(r) => through_exponent(*v, r, &dtype),
                None => Expr::Cast(Elem::F32, v),
            },
            other => other,
        })
    });
}

/// `v`, an i32 scalar or vector within `(lo, hi)`, as f32: or-ed or added into a power of
/// two's bits, then that power subtracted. An offset added last (`(b ^ 128) - 128`, a
/// signed byte) joins the subtraction when what it offsets is non-negative, so the integer
/// side is one `or` that folds into the mask or xor before it (one LOP3 on NVIDIA).
fn through_exponent(v: Expr, (lo, hi): (i64, i64), dtype: &impl Fn(Buf) -> Option<DType>) -> Expr {
    let lanes = lanes_of(&v);
    let (mut v, mut offset) = (v, 0i64);
    while let Expr::Binary(op @ (BOp::Add | BOp::Sub), a, c) = &v {
        let c = match &**c {
            Expr::Lit(Lit::I32(c)) => *c as i64,
            Expr::Splat { value, .. } => match &**value {
                Expr::Lit(Lit::I32(c)) => *c as i64,
                _ => break,
            },
            _ => break,
        };
        match bounds(a, dtype) {
            Some((alo, ahi)) if alo >= 0 && ahi < 1 << 23 => {
                offset += if *op == BOp::Add { c } else { -c };
                v = (**a).clone();
            }
            _ => break,
        }
    }
    let (bits, op, base) = if offset != 0 || (lo >= 0 && hi < 1 << 23) {
        (0x4b00_0000, BOp::Or, 8_388_608.0 - offset as f32)
    } else {
        (0x4b40_0000, BOp::Add, 12_582_912.0)
    };
    let shifted = bitcast(Elem::F32, bin(op, v, splat(i32(bits), lanes)));
    bin(BOp::Sub, shifted, splat(f(base), lanes))
}

/// Lanes of an integer expression `range` accepted (its leaves are loads, literals and
/// splats, which say theirs).
fn lanes_of(e: &Expr) -> u8 {
    match e {
        Expr::Load { lanes, .. } | Expr::Splat { lanes, .. } => *lanes,
        Expr::Lanes(v) => v.len() as u8,
        Expr::Extract { .. } | Expr::Lit(_) => 1,
        other => other
            .children()
            .iter()
            .map(|c| lanes_of(c))
            .max()
            .unwrap_or(1),
    }
}

/// Inclusive bounds of the i32 values `e` can take, where its form shows them to be within
/// `[-2^22, 2^22)` or `[0, 2^23)`; `None` otherwise (or where `e` is not an i32: every leaf
/// this accepts is one, and the operations it follows keep the type).
pub fn range(e: &Expr, dtype: &impl Fn(Buf) -> Option<DType>) -> Option<(i64, i64)> {
    let r = bounds(e, dtype)?;
    let fits = (r.0 >= -(1 << 22) && r.1 < 1 << 22) || (r.0 >= 0 && r.1 < 1 << 23);
    fits.then_some(r)
}

/// Bounds of an i32 expression as i64s, `None` where unknown or outside i32.
fn bounds(e: &Expr, dtype: &impl Fn(Buf) -> Option<DType>) -> Option<(i64, i64)> {
    let r = match e {
        Expr::Lit(Lit::I32(v)) => (*v as i64, *v as i64),
        Expr::Load { buf, .. } if dtype(*buf)? == DType::U8 => (0, 255),
        Expr::Splat { value, .. } => bounds(value, dtype)?,
        Expr::Extract { vector, .. } => bounds(vector, dtype)?,
        Expr::Lanes(v) => v
            .iter()
            .map(|x| bounds(x, dtype))
            .reduce(|a, b| Some(union(a?, b?)))??,
        Expr::Select(_, a, b) => union(bounds(a, dtype)?, bounds(b, dtype)?),
        // A non-negative mask bounds the result whatever the other operand (an i32, as
        // the mask is).
        Expr::Binary(BOp::And, a, b) => {
            let masks = [bounds(a, dtype), bounds(b, dtype)];
            let hi = masks
                .iter()
                .flatten()
                .filter(|r| r.0 >= 0)
                .map(|r| r.1)
                .min()?;
            (0, hi)
        }
        Expr::Binary(op, a, b) => binary(*op, bounds(a, dtype)?, bounds(b, dtype)?)?,
        _ => return None,
    };
    (r.0 >= i32::MIN as i64 && r.1 <= i32::MAX as i64).then_some(r)
}

fn union(a: (i64, i64), b: (i64, i64)) -> (i64, i64) {
    (a.0.min(b.0), a.1.max(b.1))
}

/// Bounds of `a op b` from its operands' (all within i32, so the i64 arithmetic below
/// cannot overflow but for shifts, which are checked).
fn binary(op: BOp, a: (i64, i64), b: (i64, i64)) -> Option<(i64, i64)> {
    let nonneg = a.0 >= 0 && b.0 >= 0;
    // The smallest all-ones mask covering both (bits either may set).
    let ones = |hi: i64| (hi.max(0) as u64 + 1).next_power_of_two() as i64 - 1;
    Some(match op {
        BOp::Add => (a.0 + b.0, a.1 + b.1),
        BOp::Sub => (a.0 - b.1, a.1 - b.0),
        BOp::Mul => {
            let p = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
            (*p.iter().min()?, *p.iter().max()?)
        }
        BOp::Min => (a.0.min(b.0), a.1.min(b.1)),
        BOp::Max => (a.0.max(b.0), a.1.max(b.1)),
        BOp::Or | BOp::Xor if nonneg => (0, ones(a.1.max(b.1))),
        // Logical shifts of a non-negative value only shrink it.
        BOp::Shr if nonneg && b.1 < 32 => (a.0 >> b.1, a.1 >> b.0),
        BOp::Shl if nonneg && b.1 < 32 => (a.0 << b.0, a.1.checked_shl(b.1 as u32)?),
        _ => return None,
    })
}

/// Whether any statement of `body` still converts with `cast<F32>` an integer of known
/// small range (a test's check that the pass saw every one).
#[cfg(test)]
pub(crate) fn casts_left(k: &Kernel) -> usize {
    let dtype = |b: Buf| Some(k.buf_dtype(b));
    let mut n = 0;
    super::visit_stmts(&k.body, &mut |s: &super::Stmt| {
        for e in s.exprs() {
            count(e, &dtype, &mut n);
        }
    });
    n
}

#[cfg(test)]
fn count(e: &Expr, dtype: &impl Fn(Buf) -> Option<DType>, n: &mut usize) {
    if let Expr::Cast(Elem::F32, v) = e {
        *n += range(v, dtype).is_some() as usize;
    }
    for c in e.children() {
        count(c, dtype, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_bufs(_: Buf) -> Option<DType> {
        None
    }

    #[test]
    fn ranges_follow_the_decoding_of_quantized_bytes() {
        let bytes = |_: Buf| Some(DType::U8);
        let byte = load(Buf::Arg(0), i(0));
        // q8_0: a signed byte as `(b ^ 128) - 128`.
        let signed = bin(BOp::Sub, bin(BOp::Xor, byte.clone(), i32(128)), i32(128));
        assert_eq!(range(&signed, &bytes), Some((-128, 127)));
        // A nibble, and a K-quant's six-bit scale put together from two bytes.
        let nibble = bin(BOp::And, bin(BOp::Shr, byte.clone(), i32(4)), i32(15));
        assert_eq!(range(&nibble, &bytes), Some((0, 15)));
        let six = bin(
            BOp::Or,
            bin(BOp::And, byte.clone(), i32(15)),
            bin(BOp::Shl, bin(BOp::Shr, byte.clone(), i32(6)), i32(4)),
        );
        assert_eq!(range(&six, &bytes), Some((0, 63)));
        // Half bits put together from two bytes fit; four bytes' words do not.
        let half = bin(BOp::Or, byte.clone(), bin(BOp::Shl, byte.clone(), i32(8)));
        assert_eq!(range(&half, &bytes), Some((0, 65535)));
        let word = bin(BOp::Or, half.clone(), bin(BOp::Shl, byte.clone(), i32(24)));
        assert_eq!(range(&word, &bytes), None);
        // Unknown leaves (a variable, an f32 or i32 buffer, an i64) give no range.
        assert_eq!(
            range(&bin(BOp::And, var(3), i32(15)), &bytes),
            Some((0, 15))
        );
        assert_eq!(range(&bin(BOp::Add, var(3), i32(15)), &bytes), None);
        assert_eq!(range(&byte, &no_bufs), None);
        assert_eq!(range(&i(7), &bytes), None);
        // A signed operand's `or` may set any bit.
        assert_eq!(range(&bin(BOp::Or, signed, i32(1)), &bytes), None);
    }

    #[test]
    fn converted_values_equal_the_conversion_bit_for_bit() {
        let ranges = [
            (-128i64, 127i64),
            (0, 255),
            (0, (1 << 23) - 1),
            (-(1 << 22), (1 << 22) - 1),
        ];
        for (lo, hi) in ranges {
            for v in [lo, lo + 1, 0.max(lo), (-1i64).max(lo), hi - 1, hi] {
                let e = through_exponent(i32(v as i32), (lo, hi), &no_bufs);
                assert_eq!(
                    eval(&e).to_bits(),
                    (v as f32).to_bits(),
                    "{v} in [{lo}, {hi}]"
                );
            }
        }
        // A signed byte, `(b ^ 128) - 128`: the offset joins the float subtraction.
        for b in [0, 1, 127, 128, 129, 255] {
            let signed = bin(BOp::Sub, bin(BOp::Xor, i32(b), i32(128)), i32(128));
            let e = through_exponent(signed, (-128, 127), &|_| None);
            assert!(matches!(&e, Expr::Binary(BOp::Sub, x, _)
                if matches!(&**x, Expr::Bitcast(_, o) if matches!(&**o, Expr::Binary(BOp::Or, ..)))));
            assert_eq!(eval(&e), (b as i8) as f32, "byte {b}");
        }
    }

    /// Evaluates the scalar integer and float forms these tests build.
    fn eval(e: &Expr) -> f32 {
        match e {
            Expr::Binary(BOp::Sub, a, b) if matches!(**b, Expr::Lit(Lit::F32(_))) => {
                eval(a) - eval(b)
            }
            Expr::Lit(Lit::F32(x)) => *x,
            Expr::Bitcast(Elem::F32, x) => f32::from_bits(int(x) as u32),
            other => panic!("not a float form: {other}"),
        }
    }

    fn int(e: &Expr) -> i32 {
        match e {
            Expr::Lit(Lit::I32(v)) => *v,
            Expr::Binary(op, a, b) => {
                let (a, b) = (int(a), int(b));
                match op {
                    BOp::Add => a.wrapping_add(b),
                    BOp::Sub => a.wrapping_sub(b),
                    BOp::Or => a | b,
                    BOp::Xor => a ^ b,
                    other => panic!("unexpected op {other:?}"),
                }
            }
            other => panic!("not an integer form: {other}"),
        }
    }
}
