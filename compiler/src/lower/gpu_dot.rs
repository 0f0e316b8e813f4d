//! How a GPU decode dot product reads its rows: how many outputs a block takes, and what
//! one step of its reduction over K reads of each row (runs of vector loads of half or f32
//! rows, units of quantized blocks). The dot kernel (`matmul::dot_kernel`) and the
//! normalisation it computes itself (`normalised`) step alike, so their reductions run as
//! one group (`kernel::gpu::reduction_group`).

use super::matmul::{k_dim, quantized_rows, Form, Operands, DOT_COLUMNS};
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::gpu::BLOCK_THREADS;
use crate::kernel::{BOp, Expr, RedOp, Stmt, VarId};
use crate::schedule::NarrowBlocks;
use kiln_ir::{Dim, QuantFormat};

/// Blocks a GPU dot-product kernel should have at least for one row: with fewer than about
/// two per multiprocessor, each has one reduction's latency to hide alone, so narrow
/// outputs (a decode step's k and v projections, 256 wide in a 1B llama) take fewer
/// columns per block rather than leave most of the machine idle. `KILN_GPU_DOT_BLOCKS` at
/// compile time replaces it, to compare on a GPU.
const GPU_DOT_BLOCKS: i64 = 256;

/// Columns per block of a GPU dot product with `outputs` outputs per row (unknown: the
/// most). `KILN_GPU_DOT_COLUMNS` at compile time replaces the most (to compare on a GPU:
/// every column's block reads the activation row through L1 once).
pub(super) fn gpu_dot_columns(outputs: Option<i64>) -> i64 {
    let mut cols = super::knob("KILN_GPU_DOT_COLUMNS", DOT_COLUMNS);
    let blocks = super::knob("KILN_GPU_DOT_BLOCKS", GPU_DOT_BLOCKS);
    while cols > 1 && outputs.is_some_and(|n| n / cols < blocks) {
        cols /= 2;
    }
    cols
}

/// Threads per block of GPU decode dot products where the target allows fewer than
/// `BLOCK_THREADS` (`Schedule::narrow_dot_blocks`). A 1B llama's projections have K = 2048:
/// 256 threads take one step each and then spend the block's life combining, where 128
/// take two. On one H100 (2026-12-06, `KILN_GPU_DOT_THREADS`), 1B Q8_0 decode 678.6 ->
/// 728.3 t/s with 128 (64: 632.2; F16 709.6 -> 710.2), and the 8192^2 matvecs q8_0 2040
/// -> 2128 GB/s, q6_k 930 -> 1108, q4_0 1338 -> 1438.
const DOT_THREADS: u32 = 128;

/// Threads per block of the GPU decode dot product of `ops`: `DOT_THREADS`, or
/// `BLOCK_THREADS` where the target's blocks are fixed, and for Q4_K rows (relaid, as
/// every target reads them) long enough to give each of 256 threads a whole 32-element run
/// (K >= 8192): that matvec read 1291 GB/s with 256 threads, 1136-1157 with 128 (with
/// quantized activations 1947 and 1352-1653), where the 1B Q4_K_M's projections (K = 2048
/// and 5632) decoded at 702.6 t/s with 128 against 633.7 with 256. A reduction too short to
/// give 128 threads an element each (attention's scores over 64-wide heads) takes 64.
/// `KILN_GPU_DOT_THREADS` at compile time (64, 128 or 256) replaces the choice on every GPU
/// target, to compare on a GPU.
pub(super) fn block_threads(ctx: &Ctx, ops: &Operands) -> u32 {
    if !ctx.schedule.gpu {
        return BLOCK_THREADS;
    }
    let k = k_dim(ops).as_known();
    let q4k = quantized_rows(ctx, ops)
        .is_some_and(|(_, f)| matches!(f, QuantFormat::Q4K | QuantFormat::Q4KX));
    let long_q4k = q4k && k.is_some_and(|k| k >= 32 * BLOCK_THREADS as i64);
    let narrow = match ctx.schedule.narrow_dot_blocks {
        NarrowBlocks::Never => false,
        NarrowBlocks::Always => true,
        NarrowBlocks::WhereSplit => takes_partners(ctx, ops),
    };
    let chosen = if !narrow || long_q4k {
        BLOCK_THREADS
    } else if k.is_some_and(|k| k < DOT_THREADS as i64) {
        64
    } else {
        DOT_THREADS
    };
    let chosen: u32 = super::knob("KILN_GPU_DOT_THREADS", chosen);
    chosen.clamp(64, BLOCK_THREADS).next_power_of_two()
}

/// Elements along K each step of a GPU dot product reads from both rows, when both
/// operands are buffers whose rows run along K and K is a multiple of it (every LLM
/// width): the block's threads then share the row in 16-byte loads of halves (two of f32),
/// where one element per step would issue a 2- or 4-byte load each.
pub(super) fn gpu_dot_lanes(ctx: &mut Ctx, ops: &Operands) -> Result<Option<u8>, LowerError> {
    let lanes = ctx.schedule.gpu_dot_lanes;
    let k_fits = k_dim(ops).as_known().is_some_and(|k| k % lanes as i64 == 0);
    if !ctx.schedule.gpu || lanes <= 1 || ops.ta || !ops.tb || !k_fits {
        return Ok(None);
    }
    // B (the weights) must stream as runs; A is read as runs where it can be, else element
    // by element (`Operands::a_run`): a value computed in place, or strided.
    let k = ctx.fresh();
    let b = ops.b_at(ctx, var(k), i(0))?;
    Ok(along_k(&b, k, lanes).then_some(lanes))
}

/// Whether `e`, an operand probed at element `k` along K, is a buffer read at consecutive
/// elements in each run of `lanes` that starts at a multiple of `lanes`, so a run is one
/// vector load. Attention's output read back as rows (heads folded into a row, `k / 64`
/// and `k % 64`) is, though no single stride covers all of K. (Probing makes the
/// operand's buffer a kernel argument, which the kernel reads either way.)
pub(super) fn along_k(e: &Expr, k: VarId, lanes: u8) -> bool {
    match e {
        Expr::Load { index, .. } => {
            crate::kernel::vectorize::stride_within(index, k, Some(lanes)) == Some(1)
        }
        _ => false,
    }
}

/// Elements each step of a GPU quantized dot product (`dequant::unit_dot`) reads as one
/// vector: `gpu_dot_lanes` (a run of quant bytes is one load of as many bytes as their
/// alignment allows where the target loads bytes natively, and on SPIR-V the few words
/// covering it, `spirv::storage::load_bytes`; A's run is one load where A is a buffer along
/// K, `Operands::a_run`). Only for `Form::Dot` (few rows: a block per output shares K);
/// many rows keep a thread per output.
pub(super) fn gpu_unit_lanes(
    ctx: &Ctx,
    ops: &Operands,
    form: Form,
    format: kiln_ir::QuantFormat,
) -> u8 {
    let lanes = ctx.schedule.gpu_dot_lanes;
    let run = format.layout().run_len;
    let w = lanes as usize;
    let fits = run.is_multiple_of(w) && super::dequant::UNIT.min(run).is_multiple_of(w);
    if !ctx.schedule.gpu || lanes <= 1 || ops.ta || form != Form::Dot || !fits {
        return 1;
    }
    lanes
}

/// Elements of each row one step of a GPU dot product of half or f32 rows reads: 16 bytes
/// of halves, in runs of `gpu_dot_lanes` (one run on CUDA; two on Vulkan, whose vectors
/// hold four). Both runs' loads issue before either is used, so a thread keeps as many
/// bytes of each row in flight on both APIs.
const GPU_DOT_STEP: i64 = 8;

/// What one step of a GPU decode dot product reads of each row: `elems` elements along K,
/// in runs of `lanes` (one vector load each where the operand is a buffer along K). They
/// are consecutive, or, with `split` above 0, two pieces of `elems / 2`, the second
/// `split` elements after the first: the nibble partners of a 4-bit format's elements
/// (`Layout::nibble_partner`), so a step reads each byte it loads whole. A normalisation
/// the kernel computes itself (`normalised::begin`) steps the same way, so its sum joins
/// the dot products' reduction group and reads the same activations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Step {
    pub lanes: u8,
    pub elems: i64,
    pub split: i64,
}

impl Step {
    pub fn consecutive(lanes: u8, elems: i64) -> Step {
        Step {
            lanes,
            elems,
            split: 0,
        }
    }

    /// A step of `elems` elements of a run (`dequant::unit_of`), split into nibble
    /// partners `partner` elements apart where the format has them and each half still
    /// holds whole runs of `lanes`. A split step is no longer than a whole one: Q4_0's
    /// 8192^2 matvec read 1212-1283 GB/s with 32-element steps of two runs against 1417
    /// with 16 of one (one H100, 2026-12-07; two steps a thread where there were four).
    pub fn within_run(lanes: u8, elems: i64, partner: Option<usize>) -> Step {
        let piece = elems / 2;
        match partner {
            Some(d)
                if piece >= lanes as i64 && piece % lanes as i64 == 0 && d as i64 % piece == 0 =>
            {
                Step {
                    lanes,
                    elems,
                    split: d as i64,
                }
            }
            _ => Step::consecutive((lanes as i64).min(elems) as u8, elems),
        }
    }

    /// The first element, along K, of each piece of step `kk` (one, or two where split).
    /// Step `kk`'s first piece is the `kk`-th run of `elems / 2` among the elements whose
    /// partner comes after them (a block of `2 * split` holds `split` of those, then their
    /// partners).
    pub fn pieces(&self, kk: Expr) -> Vec<Expr> {
        if self.split == 0 {
            return vec![mul(kk, i(self.elems))];
        }
        let piece = self.elems / 2;
        let per = self.split / piece;
        let first = add(
            mul(div(kk.clone(), i(per)), i(2 * self.split)),
            mul(rem(kk, i(per)), i(piece)),
        );
        vec![first.clone(), add(first, i(self.split))]
    }

    /// Elements in each piece.
    pub fn piece_len(&self) -> i64 {
        if self.split == 0 {
            self.elems
        } else {
            self.elems / 2
        }
    }

    /// `acc = sum over the steps of K` (`k_len` elements) of the sum of `piece(k0)` over
    /// each step's pieces (`k0` the piece's first element): a quantized dot product's
    /// reduction, each piece scaled by its own run.
    pub fn reduce(
        &self,
        ctx: &mut Ctx,
        acc: VarId,
        k_len: Expr,
        piece: &mut dyn FnMut(&mut Ctx, Expr) -> Result<Expr, LowerError>,
    ) -> Result<Vec<Stmt>, LowerError> {
        let kk = ctx.fresh();
        let mut value = None::<Expr>;
        for k0 in self.pieces(var(kk)) {
            let part = piece(ctx, k0)?;
            value = Some(match value {
                None => part,
                Some(v) => bin(BOp::Add, v, part),
            });
        }
        let value = value.ok_or_else(|| LowerError::Internal("a step of no pieces".into()))?;
        Ok(vec![Stmt::Reduce {
            acc,
            op: RedOp::Sum,
            var: kk,
            extent: div(k_len, i(self.elems)),
            value,
            vector: 1,
        }])
    }

    /// The start, along K, of each run of `lanes` elements of step `kk`.
    pub fn runs(&self, kk: VarId) -> Vec<Expr> {
        let mut out = Vec::new();
        for start in self.pieces(var(kk)) {
            for t in (0..self.piece_len()).step_by(self.lanes as usize) {
                out.push(add(start.clone(), i(t)));
            }
        }
        out
    }
}

/// Whether GPU decode steps over 4-bit quants take nibble partners (`Step::split`): the
/// target's choice (`Schedule::split_steps`), which `KILN_GPU_SPLIT_STEPS` (0 or 1) at
/// compile time overrides, to compare on a GPU.
pub(super) fn split_steps(schedule: &crate::schedule::Schedule) -> bool {
    super::knob("KILN_GPU_SPLIT_STEPS", u8::from(schedule.split_steps)) == 1
}

/// Whether the decode dot product of `ops` steps with nibble partners: rows of a 4-bit
/// format where `split_steps` lets them.
fn takes_partners(ctx: &Ctx, ops: &Operands) -> bool {
    quantized_rows(ctx, ops).is_some_and(|(_, f)| f.layout().nibble_partner().is_some())
        && split_steps(&ctx.schedule)
}

/// Whether a GPU dot product over quantized rows decodes a unit of consecutive elements a
/// step (`dequant::unit_dot`). Where a step's runs are vector loads (`gpu_unit_lanes`),
/// always; without them, formats with one f16 scale per block decode each element cheaply
/// enough that consecutive threads take consecutive elements instead (the generic path)
/// where bytes load natively, while SPIR-V (`byte_loads` false), which reads bytes out of
/// words, keeps the unit.
fn unit_steps(ctx: &Ctx, ops: &Operands, unit_lanes: u8, format: kiln_ir::QuantFormat) -> bool {
    let half_scale = matches!(format.layout().scale, kiln_ir::quant::Scale::Half { .. });
    ctx.schedule.gpu && !ops.ta && (unit_lanes > 1 || !(ctx.schedule.byte_loads && half_scale))
}

/// The step of a GPU dot product's reduction over K, `None` where it reads an element a
/// step (or is not a GPU decode form); a quantized step's length follows the block's
/// `threads` (`dequant::unit_of`).
pub(super) fn gpu_step(
    ctx: &Ctx,
    ops: &Operands,
    gpu_lanes: Option<u8>,
    unit_lanes: u8,
    k: &Dim,
    threads: u32,
) -> Option<Step> {
    if let Some(lanes) = gpu_lanes {
        let elems = GPU_DOT_STEP.max(lanes as i64);
        let fits = k.as_known().is_some_and(|k| k % elems == 0);
        return Some(Step::consecutive(
            lanes,
            if fits { elems } else { lanes as i64 },
        ));
    }
    let (_, format) = quantized_rows(ctx, ops)?;
    if !unit_steps(ctx, ops, unit_lanes, format) {
        return None;
    }
    let l = format.layout();
    let partner = l.nibble_partner().filter(|_| takes_partners(ctx, ops));
    let elems = super::dequant::unit_of(&l, k.as_known(), threads) as i64;
    Some(Step::within_run(unit_lanes, elems, partner))
}
