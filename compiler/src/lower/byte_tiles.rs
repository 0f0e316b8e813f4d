//! Prefill's byte dot products: a tile of activation rows (tokens, `q8_0` bytes) against a
//! few rows of quantized weights, every product a byte dot product (`Expr::DotBytes`).
//!
//! Decode's form (`int_dot`) keeps one accumulator vector per weight row and reduces its
//! lanes once at the end; with several tokens that would leave one vector per (token, row)
//! pair to convert, scale and add at every run of every block, which costs more than the
//! byte products themselves. Here the tokens are the lanes instead: after each run, the
//! i32 sums of a row's pairs become one vector with a token per lane (`Lanes` of lane sums,
//! a tree of horizontal adds), so the conversion to f32, the scale (the weight run's
//! multiplier times each token's activation scale, itself a vector) and the accumulation
//! are one instruction each per row and run, shared by the tile's tokens. Each weight run
//! is unpacked once for all the tokens, each activation run once for all the rows.

use super::dequant::{quant, quant_bits, run_scale, run_scales4, Block, Run};
use super::int_dot::{X_BLOCK, X_BLOCK_BYTES};
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Cmp, Elem, Expr, LoopKind, Stmt, VarId};
use kiln_ir::quant::Offset;
use kiln_ir::{NodeId, QuantFormat};

/// Bytes per `DotBytes` of a tile over `format` with `lanes` f32 lanes: a whole run (or
/// the widest vector inside one), or two short runs whose bits lie one after the other
/// (Q6_K's 16), each inside one activation block, with at least four i32 lanes of sums
/// per run (the horizontal adds work on groups of four). `None` when the format does not
/// fit.
pub fn tile_lanes(format: QuantFormat, lanes: u8) -> Option<u8> {
    let run = format.layout().run_len as i64;
    let span = run * runs_per_dot(format, lanes) as i64;
    let bl = (4 * lanes as i64).min(span).min(64);
    let fits = X_BLOCK % span == 0 && span % bl == 0 && bl % 4 == 0;
    (fits && bl / runs_per_dot(format, lanes) as i64 >= 16).then_some(bl as u8)
}

/// Runs one `DotBytes` covers: two where two runs of 16 lie one after the other at the
/// same shifts (a vector of 32 bytes, where one run alone would fill half a vector).
fn runs_per_dot(format: QuantFormat, lanes: u8) -> usize {
    let l = format.layout();
    let contiguous =
        |f: &kiln_ir::quant::BitField| f.byte.coef[0] == l.run_len as i64 && f.shift.coef[0] == 0;
    let pairs = l.run_len == 16
        && 4 * lanes as usize >= 32
        && (format.block_elems() / l.run_len).is_multiple_of(2)
        && !l.low.packed
        && contiguous(&l.low)
        && l.high.as_ref().is_none_or(|h| !h.packed && contiguous(h));
    if pairs {
        2
    } else {
        1
    }
}

/// Statements setting `accs[t][r] = sum over k of dequant(weights)[rows[r], k] *
/// dequant(x)[k]` for activation row `t` (`tokens[t]` indexes it in `x`, rows of `q8_0`
/// bytes), over `k_len` elements, for a schedule of `lanes` f32 lanes (see `tile_lanes`).
pub fn tile_dot_bytes(
    ctx: &mut Ctx,
    (bytes, format): (NodeId, QuantFormat),
    (x, tokens): (NodeId, &[Vec<Expr>]),
    rows: &[Expr],
    k_len: Expr,
    lanes: u8,
    accs: &[Vec<VarId>],
) -> Result<Vec<Stmt>, LowerError> {
    let bl = tile_lanes(format, lanes)
        .ok_or_else(|| LowerError::Internal(format!("no tiled byte dot for {format}")))?;
    let n = bl / 4;
    let nt = tokens.len() as u8;
    let rp = runs_per_dot(format, lanes);
    // The per-row vectors: a lane per token, for each run of a pass.
    let width = nt * rp as u8;
    let l = format.layout();
    let xl = QuantFormat::Q8_0.layout();
    let (be, bb) = (format.block_elems() as i64, format.block_bytes() as i64);
    let runs = format.block_elems() / l.run_len;
    let span = (l.run_len * rp) as i64;
    let blk = ctx.fresh();
    let blocks = Block::of_rows(bytes, rows, blk, bb);
    let x_block = |t: usize, xb: i64| Block {
        bytes: x,
        prefix: tokens[t].clone(),
        base: mul(add(mul(var(blk), i(be / X_BLOCK)), i(xb)), i(X_BLOCK_BYTES)),
    };
    let needs_xsum = l.center != 0 || l.offset != Offset::None;
    let facc: Vec<VarId> = rows.iter().map(|_| ctx.fresh()).collect();
    let isum: Vec<Vec<VarId>> = tokens
        .iter()
        .map(|_| rows.iter().map(|_| ctx.fresh()).collect())
        .collect();
    let xsum: Vec<VarId> = tokens.iter().map(|_| ctx.fresh()).collect();
    let mut body = Vec::new();

    // Each activation block's scales, a lane per token (repeated for each run of a pass).
    let mut dx = Vec::new();
    for xb in 0..be / X_BLOCK {
        let halves = (0..tokens.len())
            .map(|t| x_block(t, xb).half(ctx, 0))
            .collect::<Result<Vec<_>, _>>()?;
        let v = ctx.fresh();
        body.push(Stmt::Let {
            var: v,
            value: Expr::Lanes(
                halves
                    .iter()
                    .cycle()
                    .take(width as usize)
                    .cloned()
                    .collect(),
            ),
        });
        dx.push(v);
    }
    // Formats that keep their runs' multipliers (and mins) in consecutive bytes decode them
    // four runs at a time.
    let four_at_once = super::dequant::scales_four_at_once(&l, runs);
    let (mut scales4, mut offsets4) = (vec![Vec::new(); rows.len()], vec![Vec::new(); rows.len()]);

    for r0 in (0..runs).step_by(rp) {
        // Decoded where first needed, so that only one group's are live at a time.
        if four_at_once && r0 % 4 == 0 {
            let g = r0 / 4;
            for (row, b) in blocks.iter().enumerate() {
                for (offsets, out) in [(false, &mut scales4[row]), (true, &mut offsets4[row])] {
                    match run_scales4(ctx, b, &l, g, offsets)? {
                        Some(value) => {
                            let v = ctx.fresh();
                            body.push(Stmt::Let { var: v, value });
                            out.push(v);
                        }
                        None if !offsets => {
                            return Err(LowerError::Internal(format!(
                                "{format}: no four run scales"
                            )))
                        }
                        None => {}
                    }
                }
            }
        }
        let run = Run::Known(r0);
        let xb = (r0 * l.run_len) as i64 / X_BLOCK;
        let first = (r0 * l.run_len) as i64 % X_BLOCK;
        for &s in isum
            .iter()
            .flatten()
            .chain(xsum.iter().filter(|_| needs_xsum))
        {
            body.push(Stmt::Assign {
                var: s,
                value: splat(i32(0), n),
            });
        }
        let step = ctx.fresh();
        let at = mul(var(step), i(bl as i64));
        let mut inner = Vec::new();
        let mut xs = Vec::new();
        for (t, &xsum) in xsum.iter().enumerate() {
            let q = quant(
                ctx,
                &x_block(t, xb),
                &xl,
                &Run::Known(0),
                add(i(first), at.clone()),
                bl,
            )?;
            let (v, neg) = (ctx.fresh(), ctx.fresh());
            inner.push(Stmt::Let { var: v, value: q });
            if l.signed {
                inner.push(Stmt::Let {
                    var: neg,
                    value: bin(BOp::Sub, splat(i32(0), bl), var(v)),
                });
            }
            if needs_xsum {
                inner.push(Stmt::Assign {
                    var: xsum,
                    value: dot_bytes(var(xsum), splat(i32(1), bl), var(v)),
                });
            }
            xs.push((v, neg));
        }
        for (row, b) in blocks.iter().enumerate() {
            // Signed weights (`q8_0`): their magnitudes times the activations with the
            // weights' signs, as `DotBytes` wants an unsigned operand.
            let (a, negative) = if l.signed {
                let w = ctx.fresh();
                let q = quant(ctx, b, &l, &run, at.clone(), bl)?;
                inner.push(Stmt::Let { var: w, value: q });
                let negative = cmp(Cmp::Lt, var(w), splat(i32(0), bl));
                let a = select(
                    negative.clone(),
                    bin(BOp::Sub, splat(i32(0), bl), var(w)),
                    var(w),
                );
                (a, Some(negative))
            } else {
                (quant_bits(ctx, b, &l, &run, at.clone(), bl)?, None)
            };
            for (t, &(v, neg)) in xs.iter().enumerate() {
                let x_signed = match &negative {
                    Some(c) => select(c.clone(), var(neg), var(v)),
                    None => var(v),
                };
                let s = isum[t][row];
                inner.push(Stmt::Assign {
                    var: s,
                    value: dot_bytes(var(s), a.clone(), x_signed),
                });
            }
        }
        body.push(Stmt::Loop {
            var: step,
            extent: i(span / bl as i64),
            kind: LoopKind::Unroll,
            vector: 1,
            body: inner,
        });

        // Sums with a token per lane, each run of the pass in its own lanes.
        let per_token = |v: &dyn Fn(usize) -> VarId| {
            Expr::LaneSums((0..tokens.len()).map(|t| var(v(t))).collect(), rp as u8)
        };
        // A value per run of the pass, each repeated for every token's lane.
        let per_run = |v: &dyn Fn(usize) -> Expr| -> Expr {
            if rp == 1 {
                splat(v(r0), width)
            } else {
                Expr::Lanes(
                    (0..width as usize)
                        .map(|k| v(r0 + k / nt as usize))
                        .collect(),
                )
            }
        };
        let (xsums, x_scaled) = (ctx.fresh(), ctx.fresh());
        if needs_xsum {
            body.push(Stmt::Let {
                var: xsums,
                value: per_token(&|t| xsum[t]),
            });
            body.push(Stmt::Let {
                var: x_scaled,
                value: bin(BOp::Mul, cast(Elem::F32, var(xsums)), var(dx[xb as usize])),
            });
        }
        for (row, b) in blocks.iter().enumerate() {
            let lane_of = |v: &[VarId], r: usize| Expr::Extract {
                vector: Box::new(var(v[r / 4])),
                lane: (r % 4) as u8,
            };
            let (scale, offset) = if four_at_once {
                let scale = per_run(&|r| lane_of(&scales4[row], r));
                let offset =
                    (!offsets4[row].is_empty()).then(|| per_run(&|r| lane_of(&offsets4[row], r)));
                (scale, offset)
            } else if rp == 1 {
                let (s, o) = run_scale(ctx, b, &l, &run)?;
                (splat(s, width), o.map(|o| splat(o, width)))
            } else {
                return Err(LowerError::Internal(format!(
                    "{format}: runs paired without their scales in consecutive bytes"
                )));
            };
            let mut sums = per_token(&|t| isum[t][row]);
            if l.center != 0 {
                sums = bin(
                    BOp::Sub,
                    sums,
                    bin(BOp::Mul, var(xsums), splat(i32(l.center), width)),
                );
            }
            let acc = facc[row];
            body.push(Stmt::Assign {
                var: acc,
                value: fma(
                    cast(Elem::F32, sums),
                    bin(BOp::Mul, var(dx[xb as usize]), scale),
                    var(acc),
                ),
            });
            if let Some(o) = offset {
                body.push(Stmt::Assign {
                    var: acc,
                    value: fma(var(x_scaled), o, var(acc)),
                });
            }
        }
    }

    let mut out: Vec<Stmt> = facc
        .iter()
        .map(|&a| Stmt::Decl {
            var: a,
            init: splat(f(0.0), width),
        })
        .chain(isum.iter().flatten().chain(&xsum).map(|&a| Stmt::Decl {
            var: a,
            init: splat(i32(0), n),
        }))
        .collect();
    out.push(Stmt::Loop {
        var: blk,
        extent: div(k_len, i(be)),
        kind: LoopKind::Serial,
        vector: 1,
        body,
    });
    for (t, accs) in accs.iter().enumerate() {
        for (&acc, &v) in accs.iter().zip(&facc) {
            let lane = |k: usize| Expr::Extract {
                vector: Box::new(var(v)),
                lane: (k * nt as usize + t) as u8,
            };
            let total = (1..rp).fold(lane(0), |sum, k| bin(BOp::Add, sum, lane(k)));
            out.push(Stmt::Decl {
                var: acc,
                init: total,
            });
        }
    }
    Ok(out)
}
