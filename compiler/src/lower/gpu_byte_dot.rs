//! GPU decode dot products in integers: quantized weight rows times activations quantized
//! to q8_0 (`--quantize-activations`), each step's bytes multiplied four at a time
//! (`Expr::DotBytes`, `Expr::DotSignedBytes`: PTX `dp4a`) and scaled once.
//!
//! Decoding weights to f32 costs a GPU three to five instructions a weight (a byte placed,
//! a subtraction, an FMA, the masks and shifts of narrower quants), which bounds the
//! decode matvecs by instructions rather than memory. With the activations in bytes too,
//! four weights take one instruction, and the run's multipliers meet the activation
//! block's scale once per step. The numbers change by the activations' rounding to 8 bits,
//! as on the CPU's byte dot products (`activations.rs`), which is why it is an option.
//!
//! A step takes `elems` consecutive elements of one run that lie in one 32-element
//! activation block, or two such pieces, nibble partners (`gpu_dot::Step`). Weight quants
//! go in as their unsigned bits (`quant_bits`); a signed
//! format (Q8_0) multiplies its signed bytes as they are. A centred format subtracts
//! `centre * sum(x_q)` and an offset format adds `offset * d_x * sum(x_q)`, that sum itself
//! a dot product of the activation bytes with ones.

use super::dequant::{quant, quant_bits, run_scale, unit_within, Block, Run};
use super::gpu_dot::Step;
use super::int_dot::{X_BLOCK, X_BLOCK_BYTES};
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Elem, Expr, RedOp, Stmt, VarId};
use kiln_ir::quant::Offset;
use kiln_ir::{NodeId, QuantFormat};

/// Whether weights in `format` multiply q8_0 activations here: their runs tile the
/// activation blocks and their quants are bytes or narrower.
pub fn applies(format: QuantFormat) -> bool {
    let l = format.layout();
    let run = l.run_len as i64;
    (X_BLOCK % run == 0 || run % X_BLOCK == 0) && l.quant_bits() <= 8 && format != QuantFormat::Q8K
}

/// Quant bytes a step reads of each row at most. Twice the f32 form's (`dequant::unit_of`):
/// a step's instructions are few, and on an H100 a q8_0 matvec over 8192 inputs read 2180
/// GB/s with 32-byte steps, 1948 with 16 (the f32 form: 1029 and 2039, its registers
/// growing with the step); Q4_K read the same with either.
const STEP_BYTES: usize = 32;

/// The step for `format` over `k` inputs: as the f32 form's (`gpu_dot::gpu_step`, which
/// keeps every thread of a block busy and takes nibble partners where the schedule lets
/// it) with `STEP_BYTES`, within a run and an activation block. A split step's pieces are
/// eight elements or more (whole `dp4a` words, two or more: a lone word's dot product is a
/// one-lane vector, which the CPU's code generator, the lowering's test bed, crashed on);
/// each piece's bytes multiply as one group (`unit_dot_bytes` reads `piece_len`).
pub fn step_of(
    schedule: &crate::schedule::Schedule,
    format: QuantFormat,
    k: Option<i64>,
    threads: u32,
) -> Step {
    let l = format.layout();
    let unit = unit_within(&l, k, STEP_BYTES, threads) as i64;
    let elems = unit.min(X_BLOCK).min(l.run_len as i64).max(4);
    let partner = l
        .nibble_partner()
        .filter(|_| super::gpu_dot::split_steps(schedule));
    Step::within_run(8, elems, partner)
}

/// `acc = sum over k of dequant(bytes)[row, k] * dequant(x)[k]` as one reduction over
/// steps (`step_of`; see the module doc); `x` is the q8_0 bytes of the activation row,
/// indexed by `x_prefix`. Each piece of a step multiplies its bytes in one go and meets
/// its run's and its activation block's scales once.
pub fn unit_dot_bytes(
    ctx: &mut Ctx,
    (bytes, format): (NodeId, QuantFormat),
    row: Expr,
    (x, x_prefix): (NodeId, Vec<Expr>),
    k_len: Expr,
    step: Step,
    acc: VarId,
) -> Result<Vec<Stmt>, LowerError> {
    let l = format.layout();
    let run_len = l.run_len as i64;
    let piece = step.piece_len();
    if piece % 4 != 0 || X_BLOCK % piece != 0 || run_len % piece != 0 {
        return Err(LowerError::Internal(format!(
            "byte dot pieces of {piece} for {format}'s runs of {run_len}"
        )));
    }
    step.reduce(ctx, acc, k_len, &mut |ctx, k0| {
        piece_dot(ctx, (bytes, format), &row, (x, &x_prefix), k0, piece)
    })
}

/// The scaled integer dot product of the `piece` elements from `k0` (one run, one
/// activation block).
fn piece_dot(
    ctx: &mut Ctx,
    (bytes, format): (NodeId, QuantFormat),
    row: &Expr,
    (x, x_prefix): (NodeId, &[Expr]),
    k0: Expr,
    piece: i64,
) -> Result<Expr, LowerError> {
    let l = format.layout();
    let be = format.block_elems() as i64;
    let run_len = l.run_len as i64;
    let lanes = piece as u8;
    let words = lanes / 4;
    let blk = Block {
        bytes,
        prefix: vec![row.clone()],
        base: mul(div(k0.clone(), i(be)), i(format.block_bytes() as i64)),
    };
    let j0 = rem(k0.clone(), i(be));
    let run = if be == run_len {
        Run::Known(0)
    } else {
        Run::Computed(div(j0.clone(), i(run_len)))
    };
    let t0 = rem(j0, i(run_len));
    let xblk = Block {
        bytes: x,
        prefix: x_prefix.to_vec(),
        base: mul(div(k0.clone(), i(X_BLOCK)), i(X_BLOCK_BYTES)),
    };
    let xl = QuantFormat::Q8_0.layout();
    let xq = quant(ctx, &xblk, &xl, &Run::Known(0), rem(k0, i(X_BLOCK)), lanes)?;
    let (xs, x_sum) = (ctx.fresh(), ctx.fresh());
    let zero = || splat(i32(0), words);
    let sum = |e: Expr| Expr::ReduceLanes(RedOp::Sum, Box::new(e));
    let dot = if l.signed {
        let w = quant(ctx, &blk, &l, &run, t0, lanes)?;
        sum(dot_signed_bytes(zero(), w, var(xs)))
    } else {
        let w = quant_bits(ctx, &blk, &l, &run, t0, lanes)?;
        sum(dot_bytes(zero(), w, var(xs)))
    };
    let centred = l.center != 0 && !l.signed;
    let q = if centred {
        bin(BOp::Sub, dot, bin(BOp::Mul, var(x_sum), i32(l.center)))
    } else {
        dot
    };
    let dx = xblk.half(ctx, 0)?;
    let (scale, offset) = run_scale(ctx, &blk, &l, &run)?;
    let mut value = bin(
        BOp::Mul,
        cast(Elem::F32, q),
        bin(BOp::Mul, scale, dx.clone()),
    );
    let offset = offset.filter(|_| l.offset != Offset::None);
    let needs_sum = centred || offset.is_some();
    if let Some(o) = offset {
        value = fma(cast(Elem::F32, var(x_sum)), bin(BOp::Mul, o, dx), value);
    }
    if needs_sum {
        let ones = sum(dot_bytes(zero(), splat(i32(1), lanes), var(xs)));
        value = let_in(x_sum, ones, value);
    }
    Ok(let_in(xs, xq, value))
}
