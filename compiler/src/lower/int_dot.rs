//! Dot products of quantized rows with activations that are themselves `q8_0` blocks,
//! multiplied as bytes (`Expr::DotBytes`: four products per i32 lane, one or two
//! instructions per vector on x86) instead of decoded to f32 and multiplied with FMAs.
//! This is how LLM decode stops being bound by the decode instructions: the weights stay
//! bytes from memory to the multiplier.
//!
//! Per run of a weight block (consecutive elements sharing one multiplier), each row sums
//! `q_w * q_x` in i32, exactly; then the run's multiplier times the activation block's
//! scale is applied once, in f32. Weight quants are fed unsigned (their raw bits), so a
//! centred format (`q - 8`, `q - 32`) subtracts `centre * sum(q_x)`, and an offset format
//! adds `offset * d_x * sum(q_x)`: `sum(q_x)` is shared by all rows. Signed weights (Q8_0)
//! take the usual trick: `|w|` times `x` with `w`'s sign.

use super::dequant::{quant, quant_bits, run_scale, run_scales4, Block, Run};
use super::inline::value_at;
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Cmp, Elem, Expr, LoopKind, RedOp, Stmt, VarId};
use kiln_ir::quant::{Offset, Scale};
use kiln_ir::{NodeId, QuantFormat};

/// Bytes per cache line, the unit a prefetch fetches.
const CACHE_LINE: i64 = 64;

/// The activations' block: `q8_0`.
pub(super) const X_BLOCK: i64 = 32;
pub(super) const X_BLOCK_BYTES: i64 = 34;

/// Byte lanes per `DotBytes` for `format`'s runs with `lanes` f32 lanes, or `None` when the
/// format's runs do not sit inside activation blocks.
pub fn byte_lanes(format: QuantFormat, lanes: u8) -> Option<u8> {
    let run = (format.layout().run_len * runs_per_pass(format, lanes)) as i64;
    let bl = (4 * lanes as i64).min(run).min(64);
    (X_BLOCK % run == 0 && run % bl == 0 && bl % 4 == 0 && bl >= 8).then_some(bl as u8)
}

/// Consecutive runs multiplied by one `DotBytes`: two where two short runs (Q6_K's 16) fill
/// one vector, their bits sitting in one contiguous span of bytes at the same shifts, with
/// scales read as vectors and no offsets; the vector's lower lanes then belong to the first
/// run and its upper lanes to the second, each scaled by its own multiplier.
fn runs_per_pass(format: QuantFormat, lanes: u8) -> usize {
    let l = format.layout();
    let contiguous =
        |f: &kiln_ir::quant::BitField| f.byte.coef[0] == l.run_len as i64 && f.shift.coef[0] == 0;
    let pairs = 2 * l.run_len as i64 <= X_BLOCK.min(4 * lanes as i64)
        && (format.block_elems() / l.run_len).is_multiple_of(4)
        && matches!(l.scale, Scale::SignedByte { .. })
        && l.offset == Offset::None
        && contiguous(&l.low)
        && l.high.as_ref().is_none_or(contiguous);
    if pairs {
        2
    } else {
        1
    }
}

/// Statements setting each `accs[r] = sum over k of dequant(weights)[rows[r], k] *
/// dequant(x)[k]`, where `x` is the `q8_0` bytes of one activation row (`x_prefix` indexes
/// it), over `k_len` elements. `lanes`: the schedule's f32 lanes (see `byte_lanes`).
/// `ahead`: rows a later grid point reads, whose blocks are prefetched line by line as these
/// are read (rows read together are several short streams, each over before a hardware
/// prefetcher has learnt it).
pub fn rows_dot_bytes(
    ctx: &mut Ctx,
    (bytes, format): (NodeId, QuantFormat),
    (x, x_prefix): (NodeId, Vec<Expr>),
    (rows, ahead): (&[Expr], &[Expr]),
    k_len: Expr,
    lanes: u8,
    accs: &[VarId],
) -> Result<Vec<Stmt>, LowerError> {
    let bl = byte_lanes(format, lanes)
        .ok_or_else(|| LowerError::Internal(format!("no byte dot for {format}")))?;
    let n = bl / 4;
    let l = format.layout();
    let xl = QuantFormat::Q8_0.layout();
    let (be, bb) = (format.block_elems() as i64, format.block_bytes() as i64);
    let blk = ctx.fresh();
    let blocks = Block::of_rows(bytes, rows, blk, bb);
    let facc: Vec<VarId> = rows.iter().map(|_| ctx.fresh()).collect();
    let isum: Vec<VarId> = rows.iter().map(|_| ctx.fresh()).collect();
    let xsum = ctx.fresh();
    let needs_xsum = l.center != 0 || l.offset != Offset::None;
    let izero = || splat(i32(0), n);
    let mut body = Vec::new();
    let runs = format.block_elems() / l.run_len;
    let x_block = |r: usize| Block {
        bytes: x,
        prefix: x_prefix.clone(),
        base: mul(
            add(
                mul(var(blk), i(be / X_BLOCK)),
                i((r * l.run_len) as i64 / X_BLOCK),
            ),
            i(X_BLOCK_BYTES),
        ),
    };
    // Formats with many runs per block keep their runs' scales (and mins) in consecutive
    // bytes: there each row's block gets its multipliers, times the activations' scales,
    // as 4-lane vectors once, and its offsets' share is one multiply-add per four runs.
    let vector_scales = super::dequant::scales_four_at_once(&l, runs);
    let vector_offsets = vector_scales && l.offset == Offset::Packed6;
    let mut dxs = Vec::new();
    let mut scales: Vec<Vec<VarId>> = vec![Vec::new(); rows.len()];
    let mut offsets: Vec<Vec<VarId>> = vec![Vec::new(); rows.len()];
    let mut xsums = Vec::new();
    let maccs: Vec<VarId> = if vector_offsets {
        rows.iter().map(|_| ctx.fresh()).collect()
    } else {
        Vec::new()
    };
    if vector_scales {
        for r in 0..runs {
            let dx = ctx.fresh();
            body.push(Stmt::Let {
                var: dx,
                value: x_block(r).half(ctx, 0)?,
            });
            dxs.push(dx);
        }
        for g in 0..runs / 4 {
            let dx4 = ctx.fresh();
            body.push(Stmt::Let {
                var: dx4,
                value: Expr::Lanes(dxs[4 * g..4 * g + 4].iter().map(|&d| var(d)).collect()),
            });
            for (row, b) in blocks.iter().enumerate() {
                let sv = ctx.fresh();
                let sc = run_scales4(ctx, b, &l, g, false)?.expect("contiguous scales");
                body.push(Stmt::Let {
                    var: sv,
                    value: bin(BOp::Mul, sc, var(dx4)),
                });
                scales[row].push(sv);
                if vector_offsets {
                    let ov = ctx.fresh();
                    let o = run_scales4(ctx, b, &l, g, true)?.expect("packed mins");
                    body.push(Stmt::Let { var: ov, value: o });
                    offsets[row].push(ov);
                }
            }
        }
    }
    let per_pass = runs_per_pass(format, lanes);
    let span = l.run_len * per_pass;
    for r in (0..runs).step_by(per_pass) {
        let run = Run::Known(r);
        let first = (r * l.run_len) as i64;
        let xblk = x_block(r);
        for &s in isum.iter().chain(needs_xsum.then_some(&xsum)) {
            body.push(Stmt::Assign {
                var: s,
                value: izero(),
            });
        }
        let step = ctx.fresh();
        let t = mul(var(step), i(bl as i64));
        let xq = quant(
            ctx,
            &xblk,
            &xl,
            &Run::Known(0),
            add(i(first % X_BLOCK), t.clone()),
            bl,
        )?;
        let (xs, neg_xs) = (ctx.fresh(), ctx.fresh());
        let mut inner = vec![Stmt::Let { var: xs, value: xq }];
        if l.signed {
            inner.push(Stmt::Let {
                var: neg_xs,
                value: bin(BOp::Sub, splat(i32(0), bl), var(xs)),
            });
        }
        if needs_xsum {
            inner.push(Stmt::Assign {
                var: xsum,
                value: dot_bytes(var(xsum), splat(i32(1), bl), var(xs)),
            });
        }
        for (b, &s) in blocks.iter().zip(&isum) {
            let (a, x_signed) = if l.signed {
                let w = ctx.fresh();
                let q = quant(ctx, b, &l, &run, t.clone(), bl)?;
                let negative = cmp(Cmp::Lt, var(w), splat(i32(0), bl));
                let a = let_in(
                    w,
                    q.clone(),
                    select(
                        negative.clone(),
                        bin(BOp::Sub, splat(i32(0), bl), var(w)),
                        var(w),
                    ),
                );
                (a, let_in(w, q, select(negative, var(neg_xs), var(xs))))
            } else {
                (quant_bits(ctx, b, &l, &run, t.clone(), bl)?, var(xs))
            };
            inner.push(Stmt::Assign {
                var: s,
                value: dot_bytes(var(s), a, x_signed),
            });
        }
        body.push(Stmt::Loop {
            var: step,
            extent: i(span as i64 / bl as i64),
            kind: LoopKind::Unroll,
            vector: 1,
            body: inner,
        });
        let centred = |s: VarId| {
            let q = var(s);
            if l.center != 0 {
                bin(
                    BOp::Sub,
                    q,
                    bin(BOp::Mul, var(xsum), splat(i32(l.center), n)),
                )
            } else {
                q
            }
        };
        if vector_scales {
            for (row, (&s, &acc)) in isum.iter().zip(&facc).enumerate() {
                let scale_of = |r: usize| Expr::Extract {
                    vector: Box::new(var(scales[row][r / 4])),
                    lane: (r % 4) as u8,
                };
                let scale = if per_pass == 1 {
                    splat(scale_of(r), n)
                } else {
                    let half = (n / 2) as usize;
                    Expr::Lanes(
                        (0..n as usize)
                            .map(|lane| scale_of(r + lane / half))
                            .collect(),
                    )
                };
                body.push(Stmt::Assign {
                    var: acc,
                    value: fma(cast(Elem::F32, centred(s)), scale, var(acc)),
                });
            }
            if vector_offsets {
                let xs = ctx.fresh();
                // Summed as integers (exact, and a tree of adds rather than a chain),
                // converted once.
                let total = cast(
                    Elem::F32,
                    Expr::ReduceLanes(RedOp::Sum, Box::new(var(xsum))),
                );
                body.push(Stmt::Let {
                    var: xs,
                    value: bin(BOp::Mul, total, var(dxs[r])),
                });
                xsums.push(xs);
            }
            continue;
        }
        let dx = ctx.fresh();
        body.push(Stmt::Let {
            var: dx,
            value: xblk.half(ctx, 0)?,
        });
        for ((b, &s), &acc) in blocks.iter().zip(&isum).zip(&facc) {
            let (scale, offset) = run_scale(ctx, b, &l, &run)?;
            let q = centred(s);
            body.push(Stmt::Assign {
                var: acc,
                value: fma(
                    cast(Elem::F32, q),
                    splat(bin(BOp::Mul, scale, var(dx)), n),
                    var(acc),
                ),
            });
            if let Some(o) = offset {
                body.push(Stmt::Assign {
                    var: acc,
                    value: fma(
                        cast(Elem::F32, var(xsum)),
                        splat(bin(BOp::Mul, o, var(dx)), n),
                        var(acc),
                    ),
                });
            }
        }
    }
    if vector_offsets {
        for (row, &m) in maccs.iter().enumerate() {
            for (g, &ov) in offsets[row].iter().enumerate() {
                let xs4 = Expr::Lanes(xsums[4 * g..4 * g + 4].iter().map(|&x| var(x)).collect());
                body.push(Stmt::Assign {
                    var: m,
                    value: fma(var(ov), xs4, var(m)),
                });
            }
        }
    }
    let mut out: Vec<Stmt> = maccs
        .iter()
        .map(|&a| Stmt::Decl {
            var: a,
            init: splat(f(0.0), 4),
        })
        .chain(facc.iter().map(|&a| Stmt::Decl {
            var: a,
            init: splat(f(0.0), n),
        }))
        .chain(isum.iter().chain([&xsum]).map(|&a| Stmt::Decl {
            var: a,
            init: izero(),
        }))
        .collect();
    // One row read alone is one stream: fetched ahead along itself.
    if let ([row], []) = (rows, ahead) {
        body.extend(super::prefetch::row_stream(ctx, bytes, row, blk, bb)?);
    }
    // Every cache line of the block: one prefetch per block left most of a K-quant's lines
    // (144 to 210 bytes a block) to the hardware.
    for row in ahead {
        for line in (0..bb).step_by(CACHE_LINE as usize) {
            let at = add(mul(var(blk), i(bb)), i(line));
            if let Expr::Load { buf, index, .. } = value_at(ctx, bytes, &[row.clone(), at])? {
                body.push(Stmt::Prefetch { buf, index: *index });
            }
        }
    }
    out.push(Stmt::Loop {
        var: blk,
        extent: div(k_len, i(be)),
        kind: LoopKind::Serial,
        vector: 1,
        body,
    });
    for (r, (&acc, &v)) in accs.iter().zip(&facc).enumerate() {
        let mut total = Expr::ReduceLanes(RedOp::Sum, Box::new(var(v)));
        if let Some(&m) = maccs.get(r) {
            total = bin(
                BOp::Add,
                total,
                Expr::ReduceLanes(RedOp::Sum, Box::new(var(m))),
            );
        }
        out.push(Stmt::Decl {
            var: acc,
            init: total,
        });
    }
    Ok(out)
}
