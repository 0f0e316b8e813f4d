//! `dequant` inlined: block-quantized bytes decoded in registers where they are read, so a
//! matmul reading quantized weights never needs an f32 copy of them. Both forms here are
//! driven by the format's `Layout` (kiln_ir::quant), the one description of where its bits
//! are: `dequant_at` decodes one element at a computed index (gathers, the generic paths),
//! `rows_dot` decodes whole runs as vectors for the CPU's dot products, and `unit_dot`
//! decodes a few consecutive elements per step for the GPU's, sharing their scale.

use super::inline::value_at;
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Cmp, Elem, Expr, Lit, LoopKind, RedOp, Stmt, UOp, VarId};
use kiln_ir::quant::{Affine, BitField, Layout, Offset, Scale};
use kiln_ir::{NodeId, QuantFormat};

/// One block of a row of quantized bytes: `prefix` indexes the row, `base` is the block's
/// first byte within it.
pub(super) struct Block {
    pub(super) bytes: NodeId,
    pub(super) prefix: Vec<Expr>,
    pub(super) base: Expr,
}

impl Block {
    /// Block `blk` (a loop variable) of each of `rows` of `bytes`, `bb` bytes a block.
    pub(super) fn of_rows(bytes: NodeId, rows: &[Expr], blk: VarId, bb: i64) -> Vec<Block> {
        rows.iter()
            .map(|row| Block {
                bytes,
                prefix: vec![row.clone()],
                base: mul(var(blk), i(bb)),
            })
            .collect()
    }

    /// Byte `off` of the block, an i32 in 0..=255.
    fn byte(&self, ctx: &mut Ctx, off: Expr) -> Result<Expr, LowerError> {
        let mut idx = self.prefix.clone();
        idx.push(add(self.base.clone(), off));
        value_at(ctx, self.bytes, &idx)
    }

    /// `lanes` consecutive bytes from `off`, as an i32 vector.
    pub(super) fn bytes_vec(
        &self,
        ctx: &mut Ctx,
        off: Expr,
        lanes: u8,
    ) -> Result<Expr, LowerError> {
        match self.byte(ctx, off)? {
            Expr::Load { buf, index, .. } => Ok(load_vec(buf, *index, lanes)),
            _ => Err(LowerError::Internal(
                "quantized bytes are not a buffer".into(),
            )),
        }
    }

    /// The f32 at byte `at`.
    pub(super) fn float(&self, ctx: &mut Ctx, at: i64) -> Result<Expr, LowerError> {
        Ok(Expr::Bitcast(Elem::F32, Box::new(self.word(ctx, at, 4)?)))
    }

    /// The little-endian integer in `count` bytes from byte `at` (`e::word_le`).
    fn word(&self, ctx: &mut Ctx, at: i64, count: u8) -> Result<Expr, LowerError> {
        match self.byte(ctx, i(at))? {
            Expr::Load { buf, index, .. } => Ok(word_le(buf, *index, count)),
            // Bytes computed where they are used: each on its own.
            first => (1..count as i64).try_fold(first, |w, k| {
                let b = self.byte(ctx, i(at + k))?;
                Ok(bin(BOp::Or, w, bin(BOp::Shl, b, i32(8 * k as i32))))
            }),
        }
    }

    /// The f16 at byte `at`, as f32.
    pub(super) fn half(&self, ctx: &mut Ctx, at: i64) -> Result<Expr, LowerError> {
        let bits = self.word(ctx, at, 2)?;
        if ctx.schedule.half_bits {
            return Ok(un(UOp::HalfBits, bits));
        }
        Ok(crate::kernel::half::f16_bits_to_f32(bits, &mut || {
            ctx.fresh()
        }))
    }
}

/// Which run of a block: known while lowering (the CPU walks every run) or computed from
/// the element index (an i64 expression).
#[derive(Clone)]
pub(super) enum Run {
    Known(usize),
    Computed(Expr),
}

impl Run {
    /// `a` at this run, an i64.
    fn affine(&self, a: &Affine) -> Expr {
        match self {
            Run::Known(r) => i(a.at(*r)),
            Run::Computed(r) => a.coef.iter().enumerate().fold(i(a.base), |acc, (b, &c)| {
                if c == 0 {
                    return acc;
                }
                let bit = rem(div(r.clone(), i(1 << b)), i(2));
                add(acc, mul(bit, i(c)))
            }),
        }
    }
}

/// The run's 6-bit packed scale (`min == false`) or min, an i32 (see `Layout::packed6`).
fn packed6(ctx: &mut Ctx, blk: &Block, run: &Run, min: bool) -> Result<Expr, LowerError> {
    let j4 = match run {
        Run::Known(r) => i(*r as i64 % 4),
        Run::Computed(r) => rem(r.clone(), i(4)),
    };
    let (a, b, c) = match run {
        // On a GPU, the three 4-byte words the bytes sit in, each shifted to its byte: a
        // step that takes nibble partners (`gpu_dot::Step::split`) decodes two runs and
        // then loads three words for both rather than six bytes.
        Run::Computed(_) if ctx.schedule.gpu => {
            let shift = cast(Elem::I32, mul(j4, i(8)));
            let mut byte_of = |at: i64| -> Result<Expr, LowerError> {
                let w = blk.word(ctx, at, 4)?;
                Ok(bin(BOp::And, bin(BOp::Shr, w, shift.clone()), i32(255)))
            };
            (byte_of(4)?, byte_of(8)?, byte_of(12)?)
        }
        _ => (
            blk.byte(ctx, add(i(4), j4.clone()))?,
            blk.byte(ctx, add(i(8), j4.clone()))?,
            blk.byte(ctx, add(i(12), j4))?,
        ),
    };
    let low = |v: Expr| bin(BOp::And, v, i32(63));
    let top = |v: Expr| bin(BOp::Shl, bin(BOp::Shr, v, i32(6)), i32(4));
    let (first, last) = if min {
        (
            low(b.clone()),
            bin(BOp::Or, bin(BOp::Shr, c, i32(4)), top(b)),
        )
    } else {
        (
            low(a.clone()),
            bin(BOp::Or, bin(BOp::And, c, i32(15)), top(a)),
        )
    };
    Ok(match run {
        Run::Known(r) if *r < 4 => first,
        Run::Known(_) => last,
        Run::Computed(r) => select(cmp(Cmp::Lt, r.clone(), i(4)), first, last),
    })
}

/// The run's multiplier and what it adds (f32 expressions), as `Layout::run_scale`.
pub(super) fn run_scale(
    ctx: &mut Ctx,
    blk: &Block,
    l: &Layout,
    run: &Run,
) -> Result<(Expr, Option<Expr>), LowerError> {
    let as_f32 = |v: Expr| cast(Elem::F32, v);
    let scale = match l.scale {
        Scale::Half { at } => blk.half(ctx, at as i64)?,
        Scale::Single { at } => blk.float(ctx, at as i64)?,
        Scale::Packed6 => {
            let d = blk.half(ctx, 0)?;
            bin(BOp::Mul, d, as_f32(packed6(ctx, blk, run, false)?))
        }
        Scale::SignedByte { at, d_at } => {
            let d = blk.half(ctx, d_at as i64)?;
            let sc = blk.byte(ctx, run.affine(&at))?;
            bin(BOp::Mul, d, as_f32(signed_byte(sc, 1)))
        }
    };
    let offset = match l.offset {
        Offset::None => None,
        Offset::Half { at } => Some(blk.half(ctx, at as i64)?),
        Offset::Packed6 => {
            let dmin = blk.half(ctx, 2)?;
            let m = bin(BOp::Mul, dmin, as_f32(packed6(ctx, blk, run, true)?));
            Some(un(UOp::Neg, m))
        }
    };
    Ok((scale, offset))
}

/// Whether a block of `runs` runs of layout `l` keeps its multipliers (and offsets) in
/// consecutive bytes, four runs to a group, so that `run_scales4` decodes them.
pub(super) fn scales_four_at_once(l: &Layout, runs: usize) -> bool {
    let contiguous = match l.scale {
        Scale::Packed6 => true,
        Scale::SignedByte { at, .. } => (0..runs).all(|r| at.at(r) == at.at(0) + r as i64),
        Scale::Half { .. } | Scale::Single { .. } => false,
    };
    runs.is_multiple_of(4) && contiguous && matches!(l.offset, Offset::None | Offset::Packed6)
}

/// The multipliers (`offsets == false`) or offsets of runs `4g..4g + 4` as one 4-lane f32
/// vector, for formats that keep them in consecutive bytes (the K-quants' packed 6-bit
/// scales and mins, Q6_K's signed bytes): four runs' scales from three or one vector
/// loads, instead of a dozen scalar operations per run. `None` for other formats.
pub(super) fn run_scales4(
    ctx: &mut Ctx,
    blk: &Block,
    l: &Layout,
    g: usize,
    offsets: bool,
) -> Result<Option<Expr>, LowerError> {
    let as_f32 = |v: Expr| cast(Elem::F32, v);
    let packed = |ctx: &mut Ctx, min: bool| -> Result<Expr, LowerError> {
        let a = blk.bytes_vec(ctx, i(4), 4)?;
        let b = blk.bytes_vec(ctx, i(8), 4)?;
        let c = blk.bytes_vec(ctx, i(12), 4)?;
        let k = |v: i32| splat(i32(v), 4);
        let top = |v: Expr| bin(BOp::Shl, bin(BOp::Shr, v, k(6)), k(4));
        Ok(match (g, min) {
            (0, false) => bin(BOp::And, a, k(63)),
            (0, true) => bin(BOp::And, b, k(63)),
            (_, false) => bin(BOp::Or, bin(BOp::And, c, k(15)), top(a)),
            (_, true) => bin(BOp::Or, bin(BOp::Shr, c, k(4)), top(b)),
        })
    };
    Ok(match (offsets, l.scale, l.offset) {
        (false, Scale::Packed6, _) => {
            let d = blk.half(ctx, 0)?;
            Some(bin(BOp::Mul, as_f32(packed(ctx, false)?), splat(d, 4)))
        }
        (false, Scale::SignedByte { at, d_at }, _)
            if (0..4).all(|k| at.at(4 * g + k) == at.at(4 * g) + k as i64) =>
        {
            let d = blk.half(ctx, d_at as i64)?;
            let sc = signed_byte(blk.bytes_vec(ctx, i(at.at(4 * g)), 4)?, 4);
            Some(bin(BOp::Mul, as_f32(sc), splat(d, 4)))
        }
        (true, _, Offset::Packed6) => {
            let dmin = blk.half(ctx, 2)?;
            let m = bin(BOp::Mul, as_f32(packed(ctx, true)?), splat(dmin, 4));
            Some(un(UOp::Neg, m))
        }
        _ => None,
    })
}

/// `(b ^ 128) - 128`: the form compilers recognise as a sign extension of a byte.
pub(super) fn signed_byte(b: Expr, lanes: u8) -> Expr {
    let c = splat(i32(128), lanes);
    bin(BOp::Sub, bin(BOp::Xor, b, c.clone()), c)
}

/// The i32 quant values of `lanes` consecutive elements of the run from element `t`.
pub(super) fn quant(
    ctx: &mut Ctx,
    blk: &Block,
    l: &Layout,
    run: &Run,
    t: Expr,
    lanes: u8,
) -> Result<Expr, LowerError> {
    let q = quant_bits(ctx, blk, l, run, t, lanes)?;
    Ok(if l.signed {
        signed_byte(q, lanes)
    } else if l.center != 0 {
        bin(BOp::Sub, q, splat(i32(l.center), lanes))
    } else {
        q
    })
}

/// The quant bits of `lanes` consecutive elements, before sign or centre: unsigned,
/// below `2^(low + high width)`.
pub(super) fn quant_bits(
    ctx: &mut Ctx,
    blk: &Block,
    l: &Layout,
    run: &Run,
    t: Expr,
    lanes: u8,
) -> Result<Expr, LowerError> {
    let field = |ctx: &mut Ctx, f: &BitField| -> Result<Expr, LowerError> {
        if f.packed {
            return packed_bits(ctx, blk, f, run, t.clone(), lanes);
        }
        let off = add(run.affine(&f.byte), t.clone());
        let mut v = if lanes == 1 {
            blk.byte(ctx, off)?
        } else {
            blk.bytes_vec(ctx, off, lanes)?
        };
        let shift = match run.affine(&f.shift) {
            Expr::Lit(Lit::I64(0)) => None,
            Expr::Lit(Lit::I64(s)) => Some(i32(s as i32)),
            s => Some(cast(Elem::I32, s)),
        };
        if let Some(s) = shift {
            v = bin(BOp::Shr, v, splat(s, lanes));
        }
        if f.width < 8 {
            v = bin(BOp::And, v, splat(i32((1 << f.width) - 1), lanes));
        }
        Ok(v)
    };
    let mut q = field(ctx, &l.low)?;
    if let Some(h) = &l.high {
        let high = field(ctx, h)?;
        let high = bin(BOp::Shl, high, splat(i32(l.low.width as i32), lanes));
        q = bin(BOp::Or, q, high);
    }
    Ok(q)
}

/// Bits `shift + t ..` of a packed field (one bit per element, `BitField::packed`), as an
/// i32 vector: the bytes holding the `lanes` bits, joined into one word, shifted by each
/// lane's position. Vector loads start at a multiple of `lanes` elements, so for powers of
/// two the bits of one load sit in `max(lanes / 8, 1)` whole bytes.
fn packed_bits(
    ctx: &mut Ctx,
    blk: &Block,
    f: &BitField,
    run: &Run,
    t: Expr,
    lanes: u8,
) -> Result<Expr, LowerError> {
    let bit = add(run.affine(&f.shift), t);
    let first = add(run.affine(&f.byte), div(bit.clone(), i(8)));
    let in_byte = cast(Elem::I32, rem(bit, i(8)));
    let mut word = blk.byte(ctx, first.clone())?;
    for k in 1..(lanes as i64 / 8).max(1) {
        let next = blk.byte(ctx, add(first.clone(), i(k)))?;
        word = bin(BOp::Or, word, bin(BOp::Shl, next, i32(8 * k as i32)));
    }
    let shift = if lanes == 1 {
        in_byte
    } else {
        let iota = Expr::Lanes((0..lanes as i32).map(i32).collect());
        bin(BOp::Add, splat(in_byte, lanes), iota)
    };
    let v = bin(BOp::Shr, splat(word, lanes), shift);
    Ok(bin(BOp::And, v, splat(i32(1), lanes)))
}

/// Element `idx[last]` of the rows `idx[..last]` of `bytes` decoded as `format`.
pub fn dequant_at(
    ctx: &mut Ctx,
    bytes: NodeId,
    format: QuantFormat,
    idx: &[Expr],
) -> Result<Expr, LowerError> {
    let l = format.layout();
    let r = idx.len();
    let be = format.block_elems() as i64;
    let k = idx[r - 1].clone();
    let blk = Block {
        bytes,
        prefix: idx[..r - 1].to_vec(),
        base: mul(div(k.clone(), i(be)), i(format.block_bytes() as i64)),
    };
    let j = rem(k, i(be));
    // The run index is written out wherever it is used rather than bound once: it is
    // index arithmetic, which the vectoriser keeps scalar per lane only inside expressions.
    let run = if be as usize == l.run_len {
        Run::Known(0)
    } else {
        Run::Computed(div(j.clone(), i(l.run_len as i64)))
    };
    let t = rem(j, i(l.run_len as i64));
    let q = quant(ctx, &blk, &l, &run, t, 1)?;
    let (scale, offset) = run_scale(ctx, &blk, &l, &run)?;
    let value = bin(BOp::Mul, cast(Elem::F32, q), scale);
    Ok(match offset {
        Some(o) => bin(BOp::Add, value, o),
        None => value,
    })
}

/// Statements that set each `accs[r]` to `sum over k of dequant(bytes)[rows[r], k] * x(k)`
/// (k over `k_len` elements) with explicit `lanes`-wide vectors, for CPU targets. Per
/// block and run, every row's quant values are loaded `lanes` bytes at a time, decoded and
/// multiplied into a per-row vector sum of `x * q`; the run's multiplier is applied once
/// to that sum, and its offset (if any) once to the run's sum of `x`, which all rows share.
/// All rows advance together, so every row streams at once. Needs `lanes` to divide the
/// run length (true for 4, 8 and 16).
pub fn rows_dot(
    ctx: &mut Ctx,
    (bytes, format): (NodeId, QuantFormat),
    rows: &[Expr],
    x: &mut dyn FnMut(&mut Ctx, Expr, u8) -> Result<Expr, LowerError>,
    k_len: Expr,
    lanes: u8,
    accs: &[VarId],
) -> Result<Vec<Stmt>, LowerError> {
    let l = format.layout();
    let (be, bb) = (format.block_elems() as i64, format.block_bytes() as i64);
    let w = lanes as i64;
    let blk = ctx.fresh();
    let blocks = Block::of_rows(bytes, rows, blk, bb);
    let vaccs: Vec<VarId> = rows.iter().map(|_| ctx.fresh()).collect();
    let sums: Vec<VarId> = rows.iter().map(|_| ctx.fresh()).collect();
    let xsum = ctx.fresh();
    let zero = || splat(f(0.0), lanes);
    let mut body = Vec::new();
    for r in 0..format.block_elems() / l.run_len {
        let run = Run::Known(r);
        let step = ctx.fresh();
        let offset = mul(var(step), i(w));
        let first = add(mul(var(blk), i(be)), i((r * l.run_len) as i64));
        let xv = x(ctx, add(first, offset.clone()), lanes)?;
        let xs = ctx.fresh();
        let mut inner = vec![Stmt::Let { var: xs, value: xv }];
        for (b, &sum) in blocks.iter().zip(&sums) {
            body.push(Stmt::Assign {
                var: sum,
                value: zero(),
            });
            let q = quant(ctx, b, &l, &run, offset.clone(), lanes)?;
            inner.push(Stmt::Assign {
                var: sum,
                value: fma(var(xs), cast(Elem::F32, q), var(sum)),
            });
        }
        if l.offset != Offset::None {
            body.push(Stmt::Assign {
                var: xsum,
                value: zero(),
            });
            inner.push(Stmt::Assign {
                var: xsum,
                value: bin(BOp::Add, var(xsum), var(xs)),
            });
        }
        body.push(Stmt::Loop {
            var: step,
            extent: i(l.run_len as i64 / w),
            kind: LoopKind::Unroll,
            vector: 1,
            body: inner,
        });
        for ((b, &sum), &acc) in blocks.iter().zip(&sums).zip(&vaccs) {
            let (scale, add_on) = run_scale(ctx, b, &l, &run)?;
            body.push(Stmt::Assign {
                var: acc,
                value: fma(var(sum), splat(scale, lanes), var(acc)),
            });
            if let Some(o) = add_on {
                body.push(Stmt::Assign {
                    var: acc,
                    value: fma(var(xsum), splat(o, lanes), var(acc)),
                });
            }
        }
    }
    let mut out: Vec<Stmt> = vaccs
        .iter()
        .chain(&sums)
        .chain([&xsum])
        .map(|&a| Stmt::Decl {
            var: a,
            init: zero(),
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

/// Elements per step of `unit_dot` at least: a run's consecutive elements that share one
/// multiplier and one offset, decoded together.
pub(super) const UNIT: usize = 8;

/// Elements per step of `unit_dot` over `k` elements (`None`: unknown): `UNIT`, doubled
/// within the run while a block's threads still get a step each and the step's quant bits
/// stay within `step_bytes()`. Longer steps decode the run's multiplier and offset (a
/// K-quant's six-bit pair: three byte loads and a dozen instructions) for more elements,
/// and give each thread more loads in flight; but a step's bytes and activations live in
/// registers together, for every column of the block. On one H100 (2026-12-05), steps of
/// 32 took the 8192^2 matvecs of 4-bit formats from 769-985 GB/s to 1035-1222 GB/s, and
/// q8_0's (32 bytes a step) from 1666 down to 945; the cap keeps q8_0 at 16.
pub(super) fn unit_of(l: &Layout, k: Option<i64>, threads: u32) -> usize {
    unit_within(l, k, step_bytes(), threads)
}

/// `unit_of` with at most `cap` bytes of quants a step, for blocks of `threads`.
pub(super) fn unit_within(l: &Layout, k: Option<i64>, cap: usize, threads: u32) -> usize {
    let threads = threads as i64;
    let bits = l.quant_bits();
    let mut unit = UNIT.min(l.run_len);
    while 2 * unit <= l.run_len
        && l.run_len.is_multiple_of(2 * unit)
        && 2 * unit * bits <= 8 * cap
        && k.is_some_and(|k| k / (2 * unit as i64) >= threads)
    {
        unit *= 2;
    }
    unit
}

/// Bytes of quants a GPU decode step reads of each row at most (`unit_of`): 16, or
/// `KILN_GPU_STEP_BYTES` at compile time (for comparing on a GPU).
fn step_bytes() -> usize {
    super::knob("KILN_GPU_STEP_BYTES", 16)
}

/// `acc = sum over k of dequant(bytes)[row, k] * a(k)` as one reduction over steps of
/// `step.elems` elements, for GPU targets, where a block of threads shares the reduction's
/// iterations. Each piece of a step (the step, or its two halves where it takes nibble
/// partners: `Step::split`) lies in one run, whose multiplier and offset it computes once
/// (rather than once per element as `dequant_at` would), then sums `a * q` over its
/// elements, `lanes` at a time in one FMA chain: each run of `lanes` is one vector load of
/// quant bytes and one of activations (`a(k, lanes)` reads `lanes` elements from `k`),
/// where `lanes == 1` issues a load per byte and element. `lanes` must divide a piece, and
/// a piece the run length.
pub fn unit_dot(
    ctx: &mut Ctx,
    (bytes, format): (NodeId, QuantFormat),
    row: Expr,
    a: &mut dyn FnMut(&mut Ctx, Expr, u8) -> Result<Expr, LowerError>,
    k_len: Expr,
    step: super::gpu_dot::Step,
    acc: VarId,
) -> Result<Vec<Stmt>, LowerError> {
    let l = format.layout();
    let be = format.block_elems() as i64;
    let lanes = step.lanes;
    let piece = step.piece_len() as usize;
    if !piece.is_multiple_of(lanes as usize) || !l.run_len.is_multiple_of(piece) {
        return Err(LowerError::Internal(format!(
            "{lanes} lanes and pieces of {piece} do not fit {format:?}'s runs"
        )));
    }
    step.reduce(ctx, acc, k_len, &mut |ctx, k0| {
        let blk = Block {
            bytes,
            prefix: vec![row.clone()],
            base: mul(div(k0.clone(), i(be)), i(format.block_bytes() as i64)),
        };
        let j0 = rem(k0.clone(), i(be));
        let run = if be as usize == l.run_len {
            Run::Known(0)
        } else {
            Run::Computed(div(j0.clone(), i(l.run_len as i64)))
        };
        let t0 = rem(j0, i(l.run_len as i64));
        let mut products = Vec::new();
        let mut xs = None::<Expr>;
        for t in (0..piece as i64).step_by(lanes as usize) {
            let x = a(ctx, add(k0.clone(), i(t)), lanes)?;
            let q = cast(
                Elem::F32,
                quant(ctx, &blk, &l, &run, add(t0.clone(), i(t)), lanes)?,
            );
            if l.offset != kiln_ir::quant::Offset::None {
                xs = Some(match xs {
                    None => x.clone(),
                    Some(sum) => bin(BOp::Add, sum, x.clone()),
                });
            }
            products.push((x, q));
        }
        let xq = fma_chain(products, lanes, &mut || ctx.fresh());
        let (scale, offset) = run_scale(ctx, &blk, &l, &run)?;
        let mut part = bin(BOp::Mul, xq, scale);
        if let (Some(o), Some(xs)) = (offset, xs) {
            let xs = if lanes > 1 {
                Expr::ReduceLanes(RedOp::Sum, Box::new(xs))
            } else {
                xs
            };
            part = fma(xs, o, part);
        }
        Ok(part)
    })
}
