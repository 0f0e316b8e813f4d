//! Dot products of K-quant rows (Q4_K, Q5_K, Q6_K) with `q8_k` activations, multiplied as
//! bytes, for decode (one activation row) and prefill (a tile of them).
//!
//! With `q8_0` activations every 32 elements carry their own scale, so each run of a
//! K-quant block ends in float work: convert its sum, multiply by the run's multiplier and
//! the activation block's scale, add. A `q8_k` block has one scale for all 256 elements,
//! so the runs' multipliers (small integers: 6-bit or signed bytes) go into the byte dot
//! product itself (`Expr::DotBytes` with weights: x86 `pmaddwd` by the multipliers instead
//! of by ones) and the whole block sums in one i32 vector; the float work happens once per
//! block. The K-quants' mins (Q4_K, Q5_K) and centre (Q6_K) need the activations' sums per
//! run, which the `q8_k` block carries (per 16 elements): one integer product per block
//! and row instead of summing the activations again.
//!
//! The activation rows are the lanes of the per-row results (`Expr::LaneSums`, as in
//! `byte_tiles`): one lane for decode, a tile of tokens for prefill.

use super::dequant::{quant, quant_bits, signed_byte, Block, Run};
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Cmp, Elem, Expr, LoopKind, Stmt, VarId};
use kiln_ir::quant::{Offset, Scale};
use kiln_ir::{NodeId, QuantFormat};

/// Whether rows of `format` multiply `q8_k` activations here: the K-quants, on any vector
/// schedule (the 32-byte dot products are split where vectors are narrower), so that the
/// activations' rounding, chosen from this, is the same on every such target.
pub fn applies(format: QuantFormat, lanes: u8) -> bool {
    matches!(
        format,
        QuantFormat::Q4K
            | QuantFormat::Q5K
            | QuantFormat::Q6K
            | QuantFormat::Q4KX
            | QuantFormat::Q6KX
    ) && lanes > 1
}

/// Bytes per `DotBytes`: 64 where vectors hold them (512 bits) and the format keeps 64
/// consecutive elements' bits in consecutive bytes at one shift (the relaid Q4_K and Q6_K:
/// two runs of Q4_K, four of Q6_K per product, half the products and loads of 32), else
/// 32 (one run of Q4_K and Q5_K, two of Q6_K).
fn dot_bytes(format: QuantFormat, lanes: u8) -> u8 {
    let wide = 4 * lanes as usize >= 64 && consecutive(format, 64);
    if wide {
        64
    } else {
        32
    }
}

/// Whether every `len` consecutive elements of a block of `format` (from a multiple of
/// `len`) have their bits in `len` consecutive bytes at one shift, in each field.
fn consecutive(format: QuantFormat, len: usize) -> bool {
    let l = format.layout();
    let at = |f: &kiln_ir::quant::BitField, e: usize| f.locate(e / l.run_len, e % l.run_len);
    len.is_multiple_of(l.run_len)
        && [Some(l.low), l.high].iter().flatten().all(|f| {
            !f.packed
                && (0..format.block_elems()).step_by(len).all(|e0| {
                    let (b0, s0) = at(f, e0);
                    (0..len).all(|k| at(f, e0 + k) == (b0 + k, s0))
                })
        })
}

/// Statements setting `accs[t][r] = sum over k of dequant(weights)[rows[r], k] *
/// dequant(x)[k]` for activation row `t` (`tokens[t]` indexes it in `x`, rows of `q8_k`
/// bytes), over `k_len` elements. Decode reads one row at a time, a sequential stream it
/// also fetches ahead (`prefetch`); a tile prefetches nothing, as its next point reads the
/// same rows.
pub fn k_dot(
    ctx: &mut Ctx,
    (bytes, format): (NodeId, QuantFormat),
    (x, tokens): (NodeId, &[Vec<Expr>]),
    rows: &[Expr],
    k_len: Expr,
    accs: &[Vec<VarId>],
) -> Result<Vec<Stmt>, LowerError> {
    let l = format.layout();
    let xf = QuantFormat::Q8K;
    let xl = xf.layout();
    let (bb, xbb) = (format.block_bytes() as i64, xf.block_bytes() as i64);
    let runs = format.block_elems() / l.run_len;
    let dot = dot_bytes(format, ctx.schedule.lanes);
    let rp = dot as usize / l.run_len;
    let n = dot / 4;
    let nt = tokens.len() as u8;
    if !matches!(rp, 1 | 2 | 4)
        || format.block_elems() != xf.block_elems()
        || !consecutive(format, dot as usize)
    {
        return Err(LowerError::Internal(format!(
            "no q8_k dot product for {format}"
        )));
    }
    let blk = ctx.fresh();
    let blocks = Block::of_rows(bytes, rows, blk, bb);
    let x_block = |t: usize| Block {
        bytes: x,
        prefix: tokens[t].clone(),
        base: mul(var(blk), i(xbb)),
    };
    let facc: Vec<VarId> = rows.iter().map(|_| ctx.fresh()).collect();
    // Decode (one token) keeps each row's block sums in a vector, reduced once at the end
    // rather than once per block.
    let vacc: Vec<VarId> = if nt == 1 {
        rows.iter().map(|_| ctx.fresh()).collect()
    } else {
        Vec::new()
    };
    let isum: Vec<Vec<VarId>> = tokens
        .iter()
        .map(|_| rows.iter().map(|_| ctx.fresh()).collect())
        .collect();
    let mut body = Vec::new();
    // Decode streams its rows from memory; a tile's next point reads the same rows again.
    if nt == 1 {
        for row in rows {
            body.extend(super::prefetch::row_stream(ctx, bytes, row, blk, bb)?);
        }
    }
    let bind = |body: &mut Vec<Stmt>, ctx: &mut Ctx, value: Expr| {
        let v = ctx.fresh();
        body.push(Stmt::Let { var: v, value });
        v
    };

    // The activation blocks' scales and sums of 16, a token per lane / per token.
    let dx_lanes = (0..tokens.len())
        .map(|t| x_block(t).float(ctx, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let dx = bind(&mut body, ctx, per_lane(dx_lanes));
    let (lo, hi) = QuantFormat::Q8K_SUMS;
    let mut sums16 = Vec::new();
    for t in 0..tokens.len() {
        let xb = x_block(t);
        let low = xb.bytes_vec(ctx, i(lo as i64), 16)?;
        let high = signed_byte(xb.bytes_vec(ctx, i(hi as i64), 16)?, 16);
        let s = bin(BOp::Or, low, bin(BOp::Shl, high, splat(i32(8), 16)));
        sums16.push(bind(&mut body, ctx, s));
    }

    for (row, b) in blocks.iter().enumerate() {
        for s in &isum {
            body.push(Stmt::Assign {
                var: s[row],
                value: splat(i32(0), n),
            });
        }
        // The runs' integer multipliers (and Q4_K's and Q5_K's mins), as vectors.
        let (mults, mins) = multipliers(ctx, b, format)?;
        let mults = bind(&mut body, ctx, mults);
        let mins = mins.map(|m| bind(&mut body, ctx, m));
        for r0 in (0..runs).step_by(rp) {
            let run = Run::Known(r0);
            let first = (r0 * l.run_len) as i64;
            let w = if rp == 1 {
                splat(extract(var(mults), r0), n)
            } else {
                let per_run = n as usize / rp;
                Expr::Lanes(
                    (0..n as usize)
                        .map(|k| extract(var(mults), r0 + k / per_run))
                        .collect(),
                )
            };
            // Decode leaves the weights unbound: the code generator builds Q6_K's, picked
            // from one vector (`mults`), with a single shuffle when it sees them as picks
            // (Q6_K decode 0.95 -> 0.56 ms for 4096 x 4096 on one AVX-512 Xeon core). A
            // tile binds them once for all its tokens (inline there, prefill was 11%
            // slower).
            let w = if nt > 1 {
                var(bind(&mut body, ctx, w))
            } else {
                w
            };
            let bits = quant_bits(ctx, b, &l, &run, i(0), dot)?;
            let a = bind(&mut body, ctx, bits);
            for (t, s) in isum.iter().enumerate() {
                let xq = quant(ctx, &x_block(t), &xl, &Run::Known(0), i(first), dot)?;
                body.push(Stmt::Assign {
                    var: s[row],
                    value: dot_bytes_scaled(var(s[row]), var(a), xq, w.clone()),
                });
            }
        }
        // Each token's sum of the block (minus Q6_K's centre), times `d` and its scale.
        let per_token =
            |v: &dyn Fn(usize) -> Expr| Expr::LaneSums((0..tokens.len()).map(v).collect(), 1);
        // One value per token's lane (a scalar for one token, as one-lane values are).
        let splat = |e: Expr| if nt == 1 { e } else { splat(e, nt) };
        let (d, dmin) = block_scales(ctx, b, format)?;
        let acc = facc[row];
        // sum of mult[r] * (q - c) * x = sum of mult[r] * q * x - c * sum of mult[r] *
        // (the run's sum of x).
        let centre = per_token(&|t| bin(BOp::Mul, var(mults), var(sums16[t])));
        if let Some(&v) = vacc.get(row) {
            let ddx = bind(&mut body, ctx, bin(BOp::Mul, d, var(dx)));
            body.push(Stmt::Assign {
                var: v,
                value: fma(
                    cast(Elem::F32, var(isum[0][row])),
                    crate::kernel::e::splat(var(ddx), n),
                    var(v),
                ),
            });
            if l.center != 0 {
                body.push(Stmt::Assign {
                    var: acc,
                    value: fma(
                        cast(Elem::F32, centre),
                        bin(BOp::Mul, f(-(l.center as f32)), var(ddx)),
                        var(acc),
                    ),
                });
            }
        } else {
            let mut sums = per_token(&|t| var(isum[t][row]));
            if l.center != 0 {
                sums = bin(BOp::Sub, sums, bin(BOp::Mul, centre, splat(i32(l.center))));
            }
            body.push(Stmt::Assign {
                var: acc,
                value: fma(
                    cast(Elem::F32, sums),
                    bin(BOp::Mul, splat(d), var(dx)),
                    var(acc),
                ),
            });
        }
        if let (Some(m), Some(dmin)) = (mins, dmin) {
            // The mins: one per run of 32, two sums of 16 each.
            let m16 = Expr::Lanes((0..16).map(|k| extract(var(m), k / 2)).collect());
            let m16 = bind(&mut body, ctx, m16);
            let neg_dmin = un(crate::kernel::UOp::Neg, dmin);
            if let (Some(&v), 16) = (vacc.get(row), n) {
                // Decode on 512-bit vectors: the sixteen products are as wide as the block
                // sums' vector, so they join it rather than being summed across lanes every
                // block (Q4_K matvec 4096^2, one Xeon thread: 0.585 -> 0.55 ms). Q6_K's
                // centre done so was 5% slower, and 256-bit targets keep the scalar form.
                let c = bind(&mut body, ctx, bin(BOp::Mul, neg_dmin, var(dx)));
                body.push(Stmt::Assign {
                    var: v,
                    value: fma(
                        cast(Elem::F32, bin(BOp::Mul, var(m16), var(sums16[0]))),
                        crate::kernel::e::splat(var(c), n),
                        var(v),
                    ),
                });
                continue;
            }
            let mins = per_token(&|t| bin(BOp::Mul, var(m16), var(sums16[t])));
            body.push(Stmt::Assign {
                var: acc,
                value: fma(
                    cast(Elem::F32, mins),
                    bin(BOp::Mul, splat(neg_dmin), var(dx)),
                    var(acc),
                ),
            });
        }
    }

    let mut out: Vec<Stmt> = facc
        .iter()
        .map(|&a| Stmt::Decl {
            var: a,
            init: if nt == 1 { f(0.0) } else { splat(f(0.0), nt) },
        })
        .chain(vacc.iter().map(|&a| Stmt::Decl {
            var: a,
            init: splat(f(0.0), n),
        }))
        .chain(isum.iter().flatten().map(|&a| Stmt::Decl {
            var: a,
            init: splat(i32(0), n),
        }))
        .collect();
    out.push(Stmt::Loop {
        var: blk,
        extent: div(k_len, i(format.block_elems() as i64)),
        kind: LoopKind::Serial,
        vector: 1,
        body,
    });
    for (t, accs) in accs.iter().enumerate() {
        for (row, (&acc, &v)) in accs.iter().zip(&facc).enumerate() {
            let init = match vacc.get(row) {
                Some(&sums) => bin(
                    BOp::Add,
                    var(v),
                    Expr::ReduceLanes(crate::kernel::RedOp::Sum, Box::new(var(sums))),
                ),
                None => extract(var(v), t),
            };
            out.push(Stmt::Decl { var: acc, init });
        }
    }
    Ok(out)
}

/// A vector of `xs`, or the one value.
fn per_lane(mut xs: Vec<Expr>) -> Expr {
    if xs.len() == 1 {
        xs.remove(0)
    } else {
        Expr::Lanes(xs)
    }
}

fn extract(v: Expr, lane: usize) -> Expr {
    Expr::Extract {
        vector: Box::new(v),
        lane: lane as u8,
    }
}

/// The runs' integer multipliers of a block, an i32 vector with a lane per run, and for
/// Q4_K and Q5_K their mins (8 lanes each: the 6-bit values of `Layout::packed6`, from
/// three 8-byte loads); Q6_K's 16 signed bytes.
fn multipliers(
    ctx: &mut Ctx,
    b: &Block,
    format: QuantFormat,
) -> Result<(Expr, Option<Expr>), LowerError> {
    let l = format.layout();
    match (l.scale, l.offset) {
        (Scale::Packed6, Offset::Packed6) => {
            // Lane j: a = s[j] (bytes 4..12), c = s[j + 4] (bytes 8..16), p = s[j - 4]
            // (bytes 0..8; used for j >= 4 only).
            let a = b.bytes_vec(ctx, i(4), 8)?;
            let c = b.bytes_vec(ctx, i(8), 8)?;
            let p = b.bytes_vec(ctx, i(0), 8)?;
            let k = |v: i32| splat(i32(v), 8);
            let top = |v: Expr| bin(BOp::Shl, bin(BOp::Shr, v, k(6)), k(4));
            let first = cmp(Cmp::Lt, Expr::Lanes((0..8).map(i32).collect()), k(4));
            let scales = select(
                first.clone(),
                bin(BOp::And, a.clone(), k(63)),
                bin(BOp::Or, bin(BOp::And, c.clone(), k(15)), top(p)),
            );
            let mins = select(
                first,
                bin(BOp::And, c.clone(), k(63)),
                bin(BOp::Or, bin(BOp::Shr, c, k(4)), top(a)),
            );
            Ok((scales, Some(mins)))
        }
        (Scale::SignedByte { at, .. }, Offset::None)
            if (0..16).all(|r| at.at(r) == at.at(0) + r as i64) =>
        {
            let s = b.bytes_vec(ctx, i(at.at(0)), 16)?;
            Ok((signed_byte(s, 16), None))
        }
        _ => Err(LowerError::Internal(format!(
            "no integer run multipliers for {format}"
        ))),
    }
}

/// The block's `d` (f32) and, for formats with mins, `dmin`.
fn block_scales(
    ctx: &mut Ctx,
    b: &Block,
    format: QuantFormat,
) -> Result<(Expr, Option<Expr>), LowerError> {
    match format.layout().scale {
        Scale::Packed6 => Ok((b.half(ctx, 0)?, Some(b.half(ctx, 2)?))),
        Scale::SignedByte { d_at, .. } => Ok((b.half(ctx, d_at as i64)?, None)),
        _ => Err(LowerError::Internal(format!("no block scale for {format}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64-byte products only where 512-bit vectors meet a layout that keeps 64 elements
    /// consecutive: the relaid formats, not the files' ones.
    #[test]
    fn wide_products_need_wide_vectors_and_a_relaid_layout() {
        use QuantFormat::*;
        for (format, wide) in [(Q4K, 32), (Q5K, 32), (Q6K, 32), (Q4KX, 64), (Q6KX, 64)] {
            assert_eq!(dot_bytes(format, 16), wide, "{format}");
            assert_eq!(dot_bytes(format, 8), 32, "{format} on 256 bits");
            assert!(consecutive(format, 32), "{format}: runs of 32");
        }
    }
}
