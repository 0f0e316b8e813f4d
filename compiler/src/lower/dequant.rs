//! `dequant` inlined: the value of element `k` of a row of block-quantized bytes, as an
//! expression over byte loads, so a matmul reading quantized weights decodes them in
//! registers (the weights stay in their block format in memory).

use super::inline::value_at;
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Cmp, Elem, Expr, LoopKind, RedOp, Stmt, VarId};
use kiln_ir::{NodeId, QuantFormat};

pub fn dequant_at(
    ctx: &mut Ctx,
    bytes: NodeId,
    format: QuantFormat,
    idx: &[Expr],
) -> Result<Expr, LowerError> {
    let r = idx.len();
    let be = format.block_elems() as i64;
    let k = idx[r - 1].clone();
    let base = mul(div(k.clone(), i(be)), i(format.block_bytes() as i64));
    let j = rem(k, i(be));
    // Byte `off` of this element's block, an i32 in 0..=255.
    let byte = |ctx: &mut Ctx, off: Expr| {
        let mut src = idx[..r - 1].to_vec();
        src.push(add(base.clone(), off));
        value_at(ctx, bytes, &src)
    };
    let lo = byte(ctx, i(0))?;
    let hi = byte(ctx, i(1))?;
    let scale = half_bits_to_f32(ctx, bin(BOp::Or, lo, bin(BOp::Shl, hi, i32(8))));
    let q = match format {
        QuantFormat::Q8_0 => {
            let b = byte(ctx, add(i(2), j))?;
            decode(Part::SignedByte, b, 1)
        }
        QuantFormat::Q4_0 => {
            // Element j < 16 is the low nibble of byte j, element j + 16 the high nibble.
            let b = byte(ctx, add(i(2), rem(j.clone(), i(16))))?;
            let (v, w) = (ctx.fresh(), ctx.fresh());
            let lo = decode(Part::LowNibble, var(v), 1);
            let hi = decode(Part::HighNibble, var(w), 1);
            let nibble = select(cmp(Cmp::Lt, j, i(16)), lo, hi);
            let_in(v, b, let_in(w, var(v), nibble))
        }
    };
    Ok(bin(BOp::Mul, cast(Elem::F32, q), scale))
}

/// How a quant value sits in its byte.
#[derive(Clone, Copy)]
enum Part {
    /// A two's-complement byte (Q8_0).
    SignedByte,
    /// The low or high nibble, offset by 8 (Q4_0).
    LowNibble,
    HighNibble,
}

/// The i32 quant value in `byte` (an i32 in 0..=255).
/// `byte` may be a vector of `lanes` bytes.
fn decode(part: Part, byte: Expr, lanes: u8) -> Expr {
    let c = |v: i32| splat(i32(v), lanes);
    match part {
        // (b ^ 128) - 128: the form compilers recognise as a sign extension.
        Part::SignedByte => bin(BOp::Sub, bin(BOp::Xor, byte, c(128)), c(128)),
        Part::LowNibble => bin(BOp::Sub, bin(BOp::And, byte, c(15)), c(8)),
        Part::HighNibble => bin(BOp::Sub, bin(BOp::Shr, byte, c(4)), c(8)),
    }
}

/// A run of consecutive elements of a block whose quant values sit in consecutive bytes:
/// elements `first..first + len`, bytes from `byte0` on. Summing a run is a unit-stride
/// loop over bytes, which the vectoriser turns into vector loads.
struct Run {
    first: i64,
    len: i64,
    byte0: i64,
    part: Part,
}

fn runs(format: QuantFormat) -> Vec<Run> {
    match format {
        QuantFormat::Q8_0 => vec![Run {
            first: 0,
            len: 32,
            byte0: 2,
            part: Part::SignedByte,
        }],
        QuantFormat::Q4_0 => vec![
            Run {
                first: 0,
                len: 16,
                byte0: 2,
                part: Part::LowNibble,
            },
            Run {
                first: 16,
                len: 16,
                byte0: 2,
                part: Part::HighNibble,
            },
        ],
    }
}

/// Statements that set each `accs[r]` to `sum over k of dequant(bytes)[rows[r], k] * x(k)`
/// (k over `k_len` elements) with explicit `lanes`-wide vectors, for CPU targets: per block,
/// each run of quant values is loaded `lanes` bytes at a time, decoded, multiplied by `x`
/// and the block's scale and added into one vector accumulator per row; the lanes are
/// summed once at the end. All rows advance together, so every row streams at once.
/// Needs `lanes` to divide every run's length (true for 4, 8 and 16).
pub fn rows_dot(
    ctx: &mut Ctx,
    (bytes, format): (NodeId, QuantFormat),
    rows: &[Expr],
    x: &mut dyn FnMut(&mut Ctx, Expr, u8) -> Result<Expr, LowerError>,
    k_len: Expr,
    lanes: u8,
    accs: &[VarId],
) -> Result<Vec<Stmt>, LowerError> {
    let (be, bb) = (format.block_elems() as i64, format.block_bytes() as i64);
    let w = lanes as i64;
    let blk = ctx.fresh();
    let base = mul(var(blk), i(bb));
    let first_elem = mul(var(blk), i(be));
    let vaccs: Vec<VarId> = rows.iter().map(|_| ctx.fresh()).collect();
    let mut body = Vec::new();
    let mut scales = Vec::new();
    for row in rows {
        let lo = value_at(ctx, bytes, &[row.clone(), base.clone()])?;
        let hi = value_at(ctx, bytes, &[row.clone(), add(base.clone(), i(1))])?;
        let s = ctx.fresh();
        let value = half_bits_to_f32(ctx, bin(BOp::Or, lo, bin(BOp::Shl, hi, i32(8))));
        body.push(Stmt::Let { var: s, value });
        scales.push(s);
    }
    for run in runs(format) {
        let step = ctx.fresh();
        let mut inner = Vec::new();
        let offset = mul(var(step), i(w));
        let xv = x(
            ctx,
            add(first_elem.clone(), add(i(run.first), offset.clone())),
            lanes,
        )?;
        for ((row, &acc), &s) in rows.iter().zip(&vaccs).zip(&scales) {
            let at = add(base.clone(), add(i(run.byte0), offset.clone()));
            let Expr::Load { buf, index, .. } = value_at(ctx, bytes, &[row.clone(), at])? else {
                return Err(LowerError::Internal(
                    "quantized bytes are not a buffer".into(),
                ));
            };
            let q = decode(run.part, load_vec(buf, *index, lanes), lanes);
            let prod = bin(BOp::Mul, xv.clone(), cast(Elem::F32, q));
            inner.push(Stmt::Assign {
                var: acc,
                value: fma(prod, splat(var(s), lanes), var(acc)),
            });
        }
        body.push(Stmt::Loop {
            var: step,
            extent: i(run.len / w),
            kind: LoopKind::Unroll,
            vector: 1,
            body: inner,
        });
    }
    let mut out: Vec<Stmt> = vaccs
        .iter()
        .map(|&a| Stmt::Decl {
            var: a,
            init: splat(f(0.0), lanes),
        })
        .collect();
    out.push(Stmt::Loop {
        var: blk,
        extent: div(k_len, i(be)),
        kind: LoopKind::Serial,
        vector: 1,
        body,
    });
    for (&acc, &v) in accs.iter().zip(&vaccs) {
        out.push(Stmt::Decl {
            var: acc,
            init: Expr::ReduceLanes(RedOp::Sum, Box::new(var(v))),
        });
    }
    Ok(out)
}

fn half_bits_to_f32(ctx: &mut Ctx, h: Expr) -> Expr {
    crate::kernel::half::f16_bits_to_f32(h, &mut || ctx.fresh())
}
