//! Matmul kernels. (GPUs with matrix instructions multiply half matrices in `matrix.rs`.)
//!
//! Two forms. When B is transposed (weights stored `[n, k]`, as LLM files store them) and
//! M is small, each output is a dot product along contiguous K: a vectorised `Reduce`.
//! Otherwise a register-tiled kernel in the manner of BLIS (`tiled.rs`): each grid point
//! owns a few `nr`-wide column panels of C; for each `kc` block of K it packs those panels
//! of B into a contiguous local buffer (zero-padded past N), then for each `mr`-row tile
//! runs an `mr x nr` micro-kernel on every panel, accumulating in `mr * nr / lanes` vector
//! variables with FMAs. The tile's `mr x kc` slice of A stays in L1 across the panels.
//! Packing makes B reads sequential whatever its layout or stride (power-of-two strides
//! otherwise alias in cache). How a GPU's dot product steps along K is `gpu_dot.rs`.

use super::gpu_dot::{along_k, gpu_dot_columns, gpu_dot_lanes, gpu_step, gpu_unit_lanes, Step};
use super::inline::{dim_expr, value_at};
use super::{Ctx, GridDim, LowerError};
use crate::kernel::e::*;
use crate::kernel::gpu::BLOCK_THREADS;
use crate::kernel::{Buf, Cmp, Expr, Kernel, LoopKind, RedOp, Stmt, VarId};
use kiln_ir::{Dim, NodeId};

pub(super) struct Operands {
    pub a: NodeId,
    pub b: NodeId,
    pub ta: bool,
    pub tb: bool,
    pub a_shape: Vec<Dim>,
    pub b_shape: Vec<Dim>,
    pub out_shape: Vec<Dim>,
    pub nb: usize,
    /// A buffer of C's shape added to the products as they are stored (a residual
    /// connection folded into the matmul: `partition::Residual`).
    pub addend: Option<Buf>,
    /// The rope whose buffer this kernel writes, its pairs rotated as they are stored
    /// (`partition::RopeEpilogue`; the few-row form only).
    pub rope: Option<NodeId>,
}

impl Operands {
    /// What C gets at flat index `index`: `value`, plus the addend there if there is one.
    pub fn result(&self, value: Expr, index: &Expr) -> Expr {
        match self.addend {
            Some(b) => add(value, load(b, index.clone())),
            None => value,
        }
    }

    pub fn batch_index(shape: &[Dim], nb: usize) -> Vec<Expr> {
        let own = shape.len() - 2;
        (0..own)
            .map(|d| {
                if shape[d].as_known() == Some(1) {
                    i(0)
                } else {
                    Expr::GridIdx((nb - own + d) as u32)
                }
            })
            .collect()
    }

    pub fn a_at(&self, ctx: &mut Ctx, row: Expr, k: Expr) -> Result<Expr, LowerError> {
        let mut idx = Self::batch_index(&self.a_shape, self.nb);
        idx.extend(if self.ta { [k, row] } else { [row, k] });
        value_at(ctx, self.a, &idx)
    }

    /// `lanes` consecutive elements of A's row along K from `k` (`run_of`).
    pub fn a_run(&self, ctx: &mut Ctx, row: Expr, k: Expr, lanes: u8) -> Result<Expr, LowerError> {
        run_of(ctx, &mut |ctx, k| self.a_at(ctx, row.clone(), k), k, lanes)
    }

    pub fn b_at(&self, ctx: &mut Ctx, k: Expr, col: Expr) -> Result<Expr, LowerError> {
        let mut idx = Self::batch_index(&self.b_shape, self.nb);
        idx.extend(if self.tb { [col, k] } else { [k, col] });
        value_at(ctx, self.b, &idx)
    }

    /// Flat index of C[batch.., row, col].
    pub fn c_index(&self, ctx: &Ctx, row: Expr, col: Expr) -> Expr {
        let mut idx: Vec<Expr> = (0..self.nb).map(|d| Expr::GridIdx(d as u32)).collect();
        idx.push(row);
        idx.push(col);
        super::inline::flat_index(ctx, &self.out_shape, &idx)
    }
}

/// The two matmul kernels: dot products along K (LLM decode: few rows, B transposed), and
/// the general one (register-tiled on CPUs, a thread per output on GPUs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Dot,
    /// Dot products over a tile of rows of A at once (`tile_rows`): prefill over quantized
    /// weights with quantized activations on CPUs (`byte_tiles`), where bytes multiply four
    /// times as fast as f32 FMAs and each weight block is unpacked once per tile.
    DotTiles,
    General,
}

/// Rows of A (tokens) a `Form::DotTiles` grid point multiplies by its rows of B: eight
/// where the schedule's vectors are 512 bits (AVX-512: 32 vector registers hold a tile's
/// sums), four otherwise. On Zen 4, eight rather than four: prefill 4-9% faster; on
/// x86-64-v3's 16 registers eight spills (Q4_K 10% slower).
fn tile_rows(ctx: &Ctx) -> i64 {
    if ctx.schedule.lanes >= 16 {
        8
    } else {
        4
    }
}

/// Whether `node` (a matmul, B transposed) multiplies bytes by bytes for any row count: CPU
/// targets with byte dot products, activations quantized (`dequant(quantize(x))`) and
/// weights in a format `int_dot` multiplies.
fn byte_tiles(ctx: &Ctx, node: NodeId) -> bool {
    let g = ctx.graph;
    let s = &ctx.schedule;
    let ins = g.inputs(node);
    let (a, b) = (g.node(ins[0]), g.node(ins[1]));
    let activations = match a.op {
        kiln_ir::Op::Dequant { format }
            if matches!(g.node(g.inputs(ins[0])[0]).op, kiln_ir::Op::Quantize { .. }) =>
        {
            Some(format)
        }
        _ => None,
    };
    let weights = match b.op {
        kiln_ir::Op::Dequant { format } if b.shape.len() == 2 => Some(format),
        _ => None,
    };
    let multiplies = match (activations, weights) {
        (Some(kiln_ir::QuantFormat::Q8_0), Some(w)) => {
            super::byte_tiles::tile_lanes(w, s.lanes).is_some()
        }
        (Some(kiln_ir::QuantFormat::Q8K), Some(w)) => super::k_dot::applies(w, s.lanes),
        _ => false,
    };
    !s.gpu && s.byte_dot && s.lanes > 1 && multiplies
}

/// Rows at or below which the dot-product form wins when B is transposed.
pub const DOT_MAX_ROWS: i64 = 4;

/// The kernels to emit for `node`: `[(None, None)]` (one kernel, chosen by `kernel_for`) for
/// everything but a matmul whose row count is symbolic and whose B is transposed (any B on
/// GPUs); that one gets both forms, each guarded by the row count, so one artifact decodes (one row) with
/// dot products and prefills (many rows) with the general kernel.
pub fn forms(ctx: &Ctx, node: NodeId) -> Vec<(Option<Form>, Option<super::Guard>)> {
    let n = ctx.graph.node(node);
    let (
        kiln_ir::Op::MatMul {
            transpose_a,
            transpose_b,
        },
        true,
    ) = (&n.op, n.shape.len() >= 2)
    else {
        return vec![(None, None)];
    };
    let m = &n.shape[n.shape.len() - 2];
    // On GPUs B need not be transposed: with few rows, a block per output sharing K beats a
    // thread per output, which leaves most of the GPU idle when N is small (attention's
    // probabilities times V in decode: heads x head_dim outputs, K the cache length).
    if (!*transpose_b && !ctx.schedule.gpu) || *transpose_a || m.as_known().is_some() {
        return vec![(None, None)];
    }
    let guard = |above| super::Guard {
        dim: m.clone(),
        max: DOT_MAX_ROWS,
        above,
    };
    let many = if !ctx.schedule.gpu && byte_tiles(ctx, node) {
        Form::DotTiles
    } else {
        Form::General
    };
    vec![
        (Some(Form::Dot), Some(guard(false))),
        (Some(many), Some(guard(true))),
    ]
}

/// `node` (a matmul) in the given form.
pub fn matmul_as(
    ctx: &mut Ctx,
    node: NodeId,
    name: String,
    form: Form,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let kiln_ir::Op::MatMul {
        transpose_a,
        transpose_b,
    } = ctx.graph.node(node).op
    else {
        return Err(LowerError::Internal("matmul_as on another op".into()));
    };
    matmul_in(ctx, node, transpose_a, transpose_b, name, Some(form))
}

pub fn matmul(
    ctx: &mut Ctx,
    node: NodeId,
    ta: bool,
    tb: bool,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    matmul_in(ctx, node, ta, tb, name, None)
}

fn matmul_in(
    ctx: &mut Ctx,
    node: NodeId,
    ta: bool,
    tb: bool,
    name: String,
    form: Option<Form>,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let form = form.unwrap_or(if tb && small_m_shape(ctx, node) {
        Form::Dot
    } else if tb && !ta && byte_tiles(ctx, node) {
        Form::DotTiles
    } else {
        Form::General
    });
    let rope = ctx.rope_epilogue(node).filter(|_| form == Form::Dot);
    let out = ctx.begin(rope.unwrap_or(node));
    let addend = match ctx.residual_addend(node) {
        Some(x) => Some(
            ctx.buffer_of(x)
                .ok_or_else(|| LowerError::Internal("a residual's addend has no buffer".into()))?,
        ),
        None => None,
    };
    let ops = Operands {
        addend,
        rope,
        ..Operands::of(ctx, node, ta, tb)
    };
    if form == Form::Dot && super::decode_attention::applies(ctx, &ops) {
        return super::decode_attention::kernel(ctx, &ops, out, name);
    }
    if let (Form::General, Some(op)) = (form, super::matrix::applies(ctx, &ops)) {
        return super::matrix::kernel(ctx, &ops, out, name, op);
    }
    if form != Form::General || ctx.schedule.lanes == 1 {
        dot_kernel(ctx, &ops, out, name, form)
    } else {
        super::tiled::tiled_kernel(ctx, &ops, out, name)
    }
}

impl Operands {
    /// The operands of matmul `node`, nothing folded into it.
    fn of(ctx: &Ctx, node: NodeId, ta: bool, tb: bool) -> Operands {
        let ins = ctx.graph.inputs(node);
        let out_shape = ctx.graph.node(node).shape.clone();
        Operands {
            a: ins[0],
            b: ins[1],
            ta,
            tb,
            a_shape: ctx.graph.node(ins[0]).shape.clone(),
            b_shape: ctx.graph.node(ins[1]).shape.clone(),
            nb: out_shape.len() - 2,
            out_shape,
            addend: None,
            rope: None,
        }
    }
}

/// Whether the few-row form of matmul `node` is the decode attention kernel
/// (`decode_attention`), as it would be read in the few-row form.
pub fn is_decode_attention(ctx: &mut Ctx, node: NodeId) -> bool {
    let kiln_ir::Op::MatMul {
        transpose_a,
        transpose_b,
    } = ctx.graph.node(node).op
    else {
        return false;
    };
    let ops = Operands::of(ctx, node, transpose_a, transpose_b);
    let was = std::mem::replace(&mut ctx.reading_few_rows, true);
    let applies = super::decode_attention::applies(ctx, &ops);
    ctx.reading_few_rows = was;
    applies
}

/// Whether the few-row form of matmul `node` holds both outputs of every adjacent pair of
/// columns in one grid point, with `dim` (a rope's head width) a multiple of its columns:
/// what a rope folded into it needs (`partition::RopeEpilogue`).
pub fn dot_holds_pairs(ctx: &mut Ctx, node: NodeId, dim: i64) -> Result<bool, LowerError> {
    let kiln_ir::Op::MatMul {
        transpose_a,
        transpose_b,
    } = ctx.graph.node(node).op
    else {
        return Ok(false);
    };
    let ops = Operands::of(ctx, node, transpose_a, transpose_b);
    let cols = columns(ctx, &ops, Form::Dot, true)?.cols;
    Ok(cols % 2 == 0 && dim % cols == 0)
}

/// LLM decode shapes: a handful of rows (tokens) against a weight matrix.
fn small_m_shape(ctx: &Ctx, node: NodeId) -> bool {
    let shape = &ctx.graph.node(node).shape;
    shape[shape.len() - 2]
        .as_known()
        .is_some_and(|m| m <= DOT_MAX_ROWS)
}

/// A as rows of activation blocks (`dequant` of `q8_0` or `q8_k` bytes, not transposed):
/// the bytes and their format.
fn quantized_activations(ctx: &Ctx, ops: &Operands) -> Option<(NodeId, kiln_ir::QuantFormat)> {
    match ctx.graph.node(ops.a).op {
        kiln_ir::Op::Dequant { format }
            if !ops.ta && kiln_ir::QuantFormat::ACTIVATIONS.contains(&format) =>
        {
            Some((ctx.graph.inputs(ops.a)[0], format))
        }
        _ => None,
    }
}

/// `lanes` consecutive elements along K from `k` (a multiple of `lanes`) of the value `at`
/// reads at an element: one vector load where that is a buffer read along K, vector
/// arithmetic on such loads where the kernel computes the value in place from them
/// (`vectorize::as_lanes`), else the elements one by one (a strided read).
pub(super) fn run_of(
    ctx: &mut Ctx,
    at: &mut dyn FnMut(&mut Ctx, Expr) -> Result<Expr, LowerError>,
    k: Expr,
    lanes: u8,
) -> Result<Expr, LowerError> {
    if lanes == 1 {
        return at(ctx, k);
    }
    let probe = ctx.fresh();
    let along = at(ctx, var(probe))?;
    if along_k(&along, probe, lanes) {
        return run_from(at(ctx, k)?, lanes);
    }
    if let Some(run) = crate::kernel::vectorize::as_lanes(&along, probe, &k, lanes) {
        return Ok(run);
    }
    let elems = (0..lanes as i64)
        .map(|l| at(ctx, add(k.clone(), i(l))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Expr::Lanes(elems))
}

/// `lanes` consecutive elements along K starting where `first` (an operand's value at one
/// index, contiguous along K) reads: one vector load. Operands read this way are buffers.
pub(super) fn run_from(first: Expr, lanes: u8) -> Result<Expr, LowerError> {
    let Expr::Load { buf, index, .. } = first else {
        return Err(LowerError::Internal(
            "a matmul operand read as a run along K is not a buffer".into(),
        ));
    };
    Ok(load_vec(buf, *index, lanes))
}

pub(super) fn k_dim(ops: &Operands) -> Dim {
    let a = &ops.a_shape;
    if ops.ta {
        a[a.len() - 2].clone()
    } else {
        a[a.len() - 1].clone()
    }
}

/// Outputs along N per grid point of the dot-product kernel. CPUs read their rows of B one
/// after another (see `vectorize`); GPU blocks combine their reductions
/// (`kernel::gpu::reduction_group`) so that several rows stream from memory at once.
pub(super) const DOT_COLUMNS: i64 = 4;

/// Grid points ahead whose rows a CPU byte dot product prefetches (`int_dot`). Dot products
/// over half and f32 rows prefetch nothing: they read their rows one after another (see
/// `vectorize`), one sequential stream the hardware prefetcher follows, and prefetching the
/// next point's rows on top of that made them slower (docs/perf.md).
const PREFETCH_POINTS: i64 = 1;

/// The rows of B (columns of the output) the grid point `PREFETCH_POINTS` on from the one at
/// `col0` reads, clamped to the last of `n`.
fn rows_ahead(col0: &Expr, cols: i64, n: &Expr) -> Vec<Expr> {
    (0..cols)
        .map(|c| {
            let row = add(col0.clone(), i(PREFETCH_POINTS * cols + c));
            min(row, sub(n.clone(), i(1)))
        })
        .collect()
}

/// `(index, the index read)` for `count` consecutive indices from `first`: past `bound`
/// they read the last one (in bounds; their results are not stored).
fn clamped(first: Expr, count: i64, bound: &Expr) -> Vec<(Expr, Expr)> {
    (0..count)
        .map(|k| {
            let at = add(first.clone(), i(k));
            let read = if count > 1 {
                min(at.clone(), sub(bound.clone(), i(1)))
            } else {
                at.clone()
            };
            (at, read)
        })
        .collect()
}

/// How a dot kernel splits its outputs: `cols` columns of a row per grid point (a block on
/// GPUs), with the GPU forms' elements per step along K.
struct Columns {
    cols: i64,
    gpu_lanes: Option<u8>,
    unit_lanes: u8,
}

/// `pairs`: at least two columns where the form can give a grid point several (a rope
/// folded in needs both columns of each pair).
fn columns(ctx: &mut Ctx, ops: &Operands, form: Form, pairs: bool) -> Result<Columns, LowerError> {
    let nb = ops.nb;
    let vector = if ops.ta { 1 } else { ctx.schedule.lanes };
    // Many rows (prefill) keep a thread per output on GPUs: neighbouring threads read
    // neighbouring columns and share A's value (see `column_sum`).
    let gpu_lanes = match form {
        Form::Dot => gpu_dot_lanes(ctx, ops)?,
        Form::DotTiles | Form::General => None,
    };
    // GPU blocks combine the columns' reductions together (`kernel::gpu::reduction_group`),
    // so several rows of B stream at once. Quantized rows do too where each column is one
    // reduction over runs of vector loads (`gpu_unit_lanes`); elsewhere they keep a block
    // per output (their decoding leaves statements between the reductions).
    let quantized = quantized_rows(ctx, ops);
    let unit_lanes = match quantized {
        Some((_, format)) => gpu_unit_lanes(ctx, ops, form, format),
        None => 1,
    };
    let gpu_columns =
        ctx.schedule.gpu && form == Form::Dot && (quantized.is_none() || unit_lanes > 1);
    let cols = if vector > 1 {
        DOT_COLUMNS
    } else if gpu_lanes.is_some() || gpu_columns {
        // Outputs of one row across the batch (a decode step has one row).
        let outputs = ops.out_shape[..nb]
            .iter()
            .chain([&ops.out_shape[nb + 1]])
            .map(|d| d.as_known())
            .product::<Option<i64>>();
        gpu_dot_columns(outputs).max(if pairs { 2 } else { 1 })
    } else {
        1
    };
    Ok(Columns {
        cols,
        gpu_lanes,
        unit_lanes,
    })
}

fn dot_kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    name: String,
    form: Form,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let nb = ops.nb;
    let vector = if ops.ta { 1 } else { ctx.schedule.lanes };
    let Columns {
        cols,
        gpu_lanes,
        unit_lanes,
    } = columns(ctx, ops, form, ops.rope.is_some())?;
    let tiles = if form == Form::DotTiles {
        tile_rows(ctx)
    } else {
        1
    };
    let mut grid: Vec<GridDim> = ops.out_shape[..nb].iter().map(GridDim::of).collect();
    let mut rows_grid = GridDim::of(&ops.out_shape[nb]);
    let mut cols_grid = GridDim::of(&ops.out_shape[nb + 1]);
    rows_grid.ceil_div = tiles;
    cols_grid.ceil_div = cols;
    // A tile of rows walks the rows of A fastest, so a thread's rows of B stay in cache
    // while every tile of A multiplies them, and B streams from memory once.
    let (row_axis, col_axis) = if tiles > 1 {
        grid.extend([cols_grid, rows_grid]);
        (nb + 1, nb)
    } else {
        grid.extend([rows_grid, cols_grid]);
        (nb, nb + 1)
    };
    let n = dim_expr(ctx, &ops.out_shape[nb + 1]);
    let m = dim_expr(ctx, &ops.out_shape[nb]);
    let tile_rows = clamped(mul(Expr::GridIdx(row_axis as u32), i(tiles)), tiles, &m);
    let row = tile_rows[0].1.clone();
    let col0 = mul(Expr::GridIdx(col_axis as u32), i(cols));
    let kdim = k_dim(ops);
    let extent = dim_expr(ctx, &kdim);
    let mut body = Vec::new();
    let mut stores = Vec::new();
    let columns = clamped(col0.clone(), cols, &n);
    let tile_accs: Vec<Vec<VarId>> = tile_rows
        .iter()
        .map(|_| columns.iter().map(|_| ctx.fresh()).collect())
        .collect();
    let accs = tile_accs[0].clone();
    let activations = quantized_activations(ctx, ops);
    // The block size of the decode form (`gpu_dot::block_threads`). Every GPU form's
    // quantized steps take their length from it; the many-row forms (a thread per output)
    // did so when it was measured (1B Q4_K_M pp512 1014.00 t/s against 928.13 with 256).
    let threads = super::gpu_dot::block_threads(ctx, ops);
    let step = gpu_step(ctx, ops, gpu_lanes, unit_lanes, &kdim, threads);
    let normalised = super::normalised::begin(ctx, ops, &row, &extent, step, &mut body)?;
    // The rows of B this point reads, and A's row prefix for each row of the tile.
    let reads: Vec<Expr> = columns.iter().map(|(_, r)| r.clone()).collect();
    let tokens: Vec<Vec<Expr>> = tile_rows
        .iter()
        .map(|(_, read)| {
            let mut prefix = Operands::batch_index(&ops.a_shape, nb);
            prefix.push(read.clone());
            prefix
        })
        .collect();
    match (quantized_rows(ctx, ops), activations) {
        (Some(weights), Some((x, kiln_ir::QuantFormat::Q8K)))
            if !ctx.schedule.gpu
                && ctx.schedule.byte_dot
                && super::k_dot::applies(weights.1, vector) =>
        {
            if tiles > 1 {
                body.extend(super::k_dot::k_dot(
                    ctx,
                    weights,
                    (x, &tokens),
                    &reads,
                    extent.clone(),
                    &tile_accs,
                )?);
            } else {
                // Decode reads its rows one after another, as for q8_0 (one sequential
                // stream); the activations' sums come with their blocks, so the rows share
                // nothing worth reading them together for.
                for (c, read) in reads.iter().enumerate() {
                    body.extend(super::k_dot::k_dot(
                        ctx,
                        weights,
                        (x, &tokens),
                        std::slice::from_ref(read),
                        extent.clone(),
                        &[vec![tile_accs[0][c]]],
                    )?);
                }
            }
        }
        (Some(weights), Some((x, kiln_ir::QuantFormat::Q8_0))) if tiles > 1 => {
            body.extend(super::byte_tiles::tile_dot_bytes(
                ctx,
                weights,
                (x, &tokens),
                &reads,
                extent.clone(),
                vector,
                &tile_accs,
            )?);
        }
        (Some(weights), Some((x, kiln_ir::QuantFormat::Q8_0)))
            if !ctx.schedule.gpu
                && ctx.schedule.byte_dot
                && vector > 1
                && super::int_dot::byte_lanes(weights.1, vector).is_some() =>
        {
            let mut prefix = Operands::batch_index(&ops.a_shape, nb);
            prefix.push(row.clone());
            // Rows whose dot products need no sums of the activations (Q8_0) are read one
            // after another: one sequential stream, which the hardware prefetcher follows
            // better than four rows in step (1B Q8_0 decode 24.8 -> 30.7-42.8 t/s on two
            // Zen 4 cores). Formats with a centre or offsets (Q4_0..Q5_1 here; the K-quants
            // take q8_k activations, `k_dot`) share each activation block's sum across the
            // point's rows, which they need more (the instructions, not the memory, bound
            // their decode): those read the rows together and prefetch the next point's.
            let l = weights.1.layout();
            if l.center == 0 && l.offset == kiln_ir::quant::Offset::None {
                for (read, acc) in reads.iter().zip(&accs) {
                    body.extend(super::int_dot::rows_dot_bytes(
                        ctx,
                        weights,
                        (x, prefix.clone()),
                        (std::slice::from_ref(read), &[]),
                        extent.clone(),
                        vector,
                        std::slice::from_ref(acc),
                    )?);
                }
            } else {
                let ahead = rows_ahead(&col0, cols, &n);
                body.extend(super::int_dot::rows_dot_bytes(
                    ctx,
                    weights,
                    (x, prefix),
                    (&reads, &ahead),
                    extent.clone(),
                    vector,
                    &accs,
                )?);
            }
        }
        // GPU decode over activations quantized to q8_0: integer steps (`gpu_byte_dot`).
        (Some(weights), Some((x, kiln_ir::QuantFormat::Q8_0)))
            if ctx.schedule.gpu
                && ctx.schedule.byte_dot
                && tiles == 1
                && super::gpu_byte_dot::applies(weights.1) =>
        {
            let step =
                super::gpu_byte_dot::step_of(&ctx.schedule, weights.1, kdim.as_known(), threads);
            let mut prefix = Operands::batch_index(&ops.a_shape, nb);
            prefix.push(row.clone());
            for ((_, read_col), &acc) in columns.iter().zip(&accs) {
                body.extend(super::gpu_byte_dot::unit_dot_bytes(
                    ctx,
                    weights,
                    read_col.clone(),
                    (x, prefix.clone()),
                    extent.clone(),
                    step,
                    acc,
                )?);
            }
        }
        _ if tiles > 1 => {
            return Err(LowerError::Internal(
                "a tiled dot product without byte dot products".into(),
            ))
        }
        (Some(weights), None) if !ctx.schedule.gpu && vector > 1 && !ops.ta => {
            // A's row along K is contiguous (A is not transposed): `lanes` values at once.
            let mut x = |ctx: &mut Ctx, k: Expr, lanes: u8| ops.a_run(ctx, row.clone(), k, lanes);
            body.extend(super::dequant::rows_dot(
                ctx,
                weights,
                &reads,
                &mut x,
                extent.clone(),
                vector,
                &accs,
            )?);
        }
        // GPU: each thread's step decodes a few consecutive elements of one run, so their
        // scale is computed once (`unit_dot`), wherever `gpu_step` gave quantized rows a
        // step (`gpu_dot::unit_steps` says where; their B is decoded, never a plain buffer,
        // so `gpu_lanes` is None). Elsewhere the generic path below.
        (Some(weights), _) if step.is_some() => {
            let Some(step) = step else {
                return Err(LowerError::Internal(
                    "a unit dot product without its step".into(),
                ));
            };
            for ((_, read_col), &acc) in columns.iter().zip(&accs) {
                let mut a =
                    |ctx: &mut Ctx, k: Expr, lanes: u8| ops.a_run(ctx, row.clone(), k, lanes);
                body.extend(super::dequant::unit_dot(
                    ctx,
                    weights,
                    read_col.clone(),
                    &mut a,
                    extent.clone(),
                    step,
                    acc,
                )?);
            }
        }
        _ if gpu_lanes.is_some() => {
            let Some(step) = step else {
                return Err(LowerError::Internal(
                    "a GPU dot product without its step".into(),
                ));
            };
            for ((_, read_col), &acc) in columns.iter().zip(&accs) {
                let kk = ctx.fresh();
                let mut pairs = Vec::new();
                let Step { lanes, elems, .. } = step;
                for at in step.runs(kk) {
                    let a = ops.a_run(ctx, row.clone(), at.clone(), lanes)?;
                    let b = run_from(ops.b_at(ctx, at, read_col.clone())?, lanes)?;
                    pairs.push((a, b));
                }
                body.push(Stmt::Reduce {
                    acc,
                    op: RedOp::Sum,
                    var: kk,
                    extent: div(extent.clone(), i(elems)),
                    value: fma_chain(pairs, lanes, &mut || ctx.fresh()),
                    vector: 1,
                });
            }
        }
        _ => {
            for ((_, read_col), &acc) in columns.iter().zip(&accs) {
                body.extend(column_sum(
                    ctx,
                    ops,
                    form,
                    (row.clone(), read_col.clone()),
                    &extent,
                    vector,
                    acc,
                )?);
            }
        }
    }
    let sum = |acc: VarId| match &normalised {
        Some(n) => n.scaled(acc),
        None => var(acc),
    };
    if let Some(n) = &normalised {
        body.push(super::normalised::finish(ctx, ops, n, &extent));
    }
    for ((row, _), accs) in tile_rows.iter().zip(&tile_accs) {
        for (j, ((col, _), &acc)) in columns.iter().zip(accs).enumerate() {
            let index = ops.c_index(ctx, row.clone(), col.clone());
            let value = match ops.rope {
                // Column `j` and its pair's other one, `j ^ 1`, are both in this block.
                Some(rope) => {
                    let pair = (sum(acc), sum(accs[j ^ 1]));
                    let first = &columns[j & !1].0;
                    rotated(ctx, rope, row, first, j % 2 == 0, pair)?
                }
                None => ops.result(sum(acc), &index),
            };
            let store = Stmt::Store {
                buf: out,
                value,
                index,
            };
            let mut inside = Vec::new();
            if cols > 1 {
                inside.push(cmp(Cmp::Lt, col.clone(), n.clone()));
            }
            if tiles > 1 {
                inside.push(cmp(Cmp::Lt, row.clone(), m.clone()));
            }
            stores.push(inside.into_iter().fold(store, |then, cond| Stmt::If {
                cond,
                then: vec![then],
                otherwise: Vec::new(),
            }));
        }
    }
    body.extend(stores);
    let chunk = kdim
        .as_known()
        .map_or(1, |k| (8192 / (k * cols * tiles).max(1)).max(1) as u64);
    grid.truncate(nb + 2);
    let (mut kernel, args) = ctx.finish(name, grid, body, chunk);
    if form == Form::Dot {
        kernel.block_threads = (threads != BLOCK_THREADS).then_some(threads);
    }
    Ok((kernel, args))
}

/// What a projection folding `rope` in (`partition::RopeEpilogue`) stores at a column of
/// `row` whose pair starts at column `pair_col`: its product `x` rotated with `y`, the
/// product of the pair's other column (`first`: `x` is the pair's first), as the rope's
/// own kernel would. Both columns of a pair compute the same angle, once after LLVM.
fn rotated(
    ctx: &mut Ctx,
    rope: NodeId,
    row: &Expr,
    pair_col: &Expr,
    first: bool,
    (x, y): (Expr, Expr),
) -> Result<Expr, LowerError> {
    let n = ctx.graph.node(rope).clone();
    let kiln_ir::Op::Rope {
        theta, rot_dims, ..
    } = n.op
    else {
        return Err(LowerError::Internal(
            "a rope epilogue without its rope".into(),
        ));
    };
    let dim = dim_expr(ctx, &n.shape[n.shape.len() - 1]);
    let d = rem(pair_col.clone(), dim);
    let pos = value_at(ctx, ctx.graph.inputs(rope)[1], std::slice::from_ref(row))?;
    let turn = super::inline::Rotation {
        pos: cast(crate::kernel::Elem::F32, pos),
        pair: div(d.clone(), i(2)),
        first: cmp(Cmp::Eq, i(if first { 0 } else { 1 }), i(0)),
        rotated: cmp(Cmp::Lt, d, i(rot_dims as i64)),
        theta,
        rot: rot_dims as i64,
    };
    Ok(turn.of(ctx, x, y))
}

/// `acc = sum over k of A[row, k] * B[k, col]`, as the target wants it.
fn column_sum(
    ctx: &mut Ctx,
    ops: &Operands,
    form: Form,
    (row, col): (Expr, Expr),
    extent: &Expr,
    vector: u8,
    acc: VarId,
) -> Result<Vec<Stmt>, LowerError> {
    let k = ctx.fresh();
    let a = ops.a_at(ctx, row, var(k))?;
    let b = ops.b_at(ctx, var(k), col)?;
    if ctx.schedule.gpu && form == Form::General {
        // GPU, many rows: a thread per output, summing along K on its own, so a warp's
        // threads read neighbouring columns of B together (coalesced) and share A's
        // value. (Rows of a transposed B are contiguous along K instead: with few rows, a
        // block per output sharing K reads those rows coalesced.)
        return Ok(vec![
            Stmt::Decl {
                var: acc,
                init: f(0.0),
            },
            Stmt::Loop {
                var: k,
                extent: extent.clone(),
                kind: LoopKind::Serial,
                vector: 1,
                body: vec![Stmt::Assign {
                    var: acc,
                    value: fma(a, b, var(acc)),
                }],
            },
        ]);
    }
    Ok(vec![Stmt::Reduce {
        acc,
        op: RedOp::Sum,
        var: k,
        extent: extent.clone(),
        value: bin(crate::kernel::BOp::Mul, a, b),
        vector,
    }])
}

/// B as rows of quantized blocks (`dequant` of a 2-D byte matrix, transposed so each output
/// column is one row of blocks), or `None`.
pub(super) fn quantized_rows(ctx: &Ctx, ops: &Operands) -> Option<(NodeId, kiln_ir::QuantFormat)> {
    let node = ctx.graph.node(ops.b);
    match node.op {
        kiln_ir::Op::Dequant { format } if ops.tb && ops.b_shape.len() == 2 => {
            Some((ctx.graph.inputs(ops.b)[0], format))
        }
        _ => None,
    }
}
