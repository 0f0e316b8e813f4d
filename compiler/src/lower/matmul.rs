//! Matmul kernels. (GPUs with matrix instructions multiply half matrices in `matrix.rs`.)
//!
//! Two forms. When B is transposed (weights stored `[n, k]`, as LLM files store them) and
//! M is small, each output is a dot product along contiguous K: a vectorised `Reduce`.
//! Otherwise a register-tiled kernel in the manner of BLIS: each grid point owns a few
//! `nr`-wide column panels of C; for each `kc` block of K it packs those panels of B into a
//! contiguous local buffer (zero-padded past N), then for each `mr`-row tile runs an
//! `mr x nr` micro-kernel on every panel, accumulating in `mr * nr / lanes` vector
//! variables with FMAs. The tile's `mr x kc` slice of A stays in L1 across the panels. Packing makes B reads
//! sequential whatever its layout or stride (power-of-two strides otherwise alias in cache).

use super::inline::{dim_expr, value_at};
use super::{Ctx, GridDim, LowerError};
use crate::kernel::e::*;
use crate::kernel::{Buf, Cmp, Expr, Kernel, LocalBuf, LoopKind, RedOp, Stmt, VarId};
use kiln_ir::{DType, Dim, NodeId};

/// The fewest column blocks a tiled matmul is split into when N allows.
const MIN_GRID_POINTS: i64 = 16;

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
    if let (Form::General, Some(op)) = (form, super::matrix::applies(ctx, &ops)) {
        return super::matrix::kernel(ctx, &ops, out, name, op);
    }
    if form != Form::General || ctx.schedule.lanes == 1 {
        dot_kernel(ctx, &ops, out, name, form)
    } else {
        tiled_kernel(ctx, &ops, out, name)
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
/// reads at an element: one vector load where that is a buffer read along K, else the
/// elements one by one (a value the kernel computes in place, or a strided read).
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
const DOT_COLUMNS: i64 = 4;

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

/// Blocks a GPU dot-product kernel should have at least for one row: with fewer than about
/// two per multiprocessor, each has one reduction's latency to hide alone, so narrow
/// outputs (a decode step's k and v projections, 256 wide in a 1B llama) take fewer
/// columns per block rather than leave most of the machine idle.
const GPU_DOT_BLOCKS: i64 = 256;

/// Columns per block of a GPU dot product with `outputs` outputs per row (unknown: the
/// most).
fn gpu_dot_columns(outputs: Option<i64>) -> i64 {
    let mut cols = DOT_COLUMNS;
    while cols > 1 && outputs.is_some_and(|n| n / cols < GPU_DOT_BLOCKS) {
        cols /= 2;
    }
    cols
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
    let step = gpu_step(ctx, ops, gpu_lanes, unit_lanes, &kdim);
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
        // scale is computed once (`unit_dot`). Where bytes load natively and A is a buffer
        // along K, a step is one vector load of quant bytes and one of activations
        // (`gpu_unit_lanes`); without vector loads, formats with one f16 scale per block
        // decode each element cheaply enough that consecutive threads take consecutive
        // elements instead (the generic path below), while SPIR-V (`byte_loads` false)
        // reads a run's bytes from shared words, one element at a time.
        (Some(weights), _) if unit_steps(ctx, ops, unit_lanes, weights.1) => {
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
            let Some(Step { lanes, elems }) = step else {
                return Err(LowerError::Internal(
                    "a GPU dot product without its step".into(),
                ));
            };
            for ((_, read_col), &acc) in columns.iter().zip(&accs) {
                let kk = ctx.fresh();
                let mut pairs = Vec::new();
                for at in step_runs(kk, lanes, elems) {
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
    Ok(ctx.finish(name, grid, body, chunk))
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

/// Elements along K each step of a GPU dot product reads from both rows, when both
/// operands are buffers whose rows run along K and K is a multiple of it (every LLM
/// width): the block's threads then share the row in 16-byte loads of halves (two of f32),
/// where one element per step would issue a 2- or 4-byte load each.
fn gpu_dot_lanes(ctx: &mut Ctx, ops: &Operands) -> Result<Option<u8>, LowerError> {
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
fn along_k(e: &Expr, k: VarId, lanes: u8) -> bool {
    match e {
        Expr::Load { index, .. } => {
            crate::kernel::vectorize::stride_within(index, k, Some(lanes)) == Some(1)
        }
        _ => false,
    }
}

/// Elements each step of a GPU quantized dot product (`dequant::unit_dot`) reads as one
/// vector: `gpu_dot_lanes` where the target loads bytes natively (a run of quant bytes is one
/// load of as many bytes as their alignment allows; A's run is one load where A is a buffer
/// along K, `Operands::a_run`); else 1, one load per element. Only for `Form::Dot` (few
/// rows: a block per output shares K); many rows keep a thread per output.
fn gpu_unit_lanes(ctx: &Ctx, ops: &Operands, form: Form, format: kiln_ir::QuantFormat) -> u8 {
    let lanes = ctx.schedule.gpu_dot_lanes;
    let run = format.layout().run_len;
    let w = lanes as usize;
    let fits = run.is_multiple_of(w) && super::dequant::UNIT.min(run).is_multiple_of(w);
    if !ctx.schedule.gpu
        || !ctx.schedule.byte_loads
        || lanes <= 1
        || ops.ta
        || form != Form::Dot
        || !fits
    {
        return 1;
    }
    lanes
}

/// Elements of each row one step of a GPU dot product of half or f32 rows reads: 16 bytes
/// of halves, in runs of `gpu_dot_lanes` (one run on CUDA; two on Vulkan, whose vectors
/// hold four). Both runs' loads issue before either is used, so a thread keeps as many
/// bytes of each row in flight on both APIs.
const GPU_DOT_STEP: i64 = 8;

/// What one step of a GPU decode dot product reads of each row: `elems` consecutive
/// elements along K, in runs of `lanes` (one vector load each where the operand is a
/// buffer along K). A normalisation the kernel computes itself (`normalised::begin`)
/// steps the same way, so its sum joins the dot products' reduction group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Step {
    pub lanes: u8,
    pub elems: i64,
}

/// The start, along K, of each run of step `kk`.
pub(super) fn step_runs(kk: VarId, lanes: u8, elems: i64) -> Vec<Expr> {
    (0..elems)
        .step_by(lanes as usize)
        .map(|t| add(mul(var(kk), i(elems)), i(t)))
        .collect()
}

/// Whether a GPU dot product over quantized rows decodes a unit of consecutive elements a
/// step (`dequant::unit_dot`). Where bytes load natively and A is a buffer along K, a step
/// is one vector load of quant bytes and one of activations (`gpu_unit_lanes`); without
/// vector loads, formats with one f16 scale per block decode each element cheaply enough
/// that consecutive threads take consecutive elements instead (the generic path), while
/// SPIR-V (`byte_loads` false) reads a run's bytes from shared words, one element at a time.
fn unit_steps(ctx: &Ctx, ops: &Operands, unit_lanes: u8, format: kiln_ir::QuantFormat) -> bool {
    let half_scale = matches!(format.layout().scale, kiln_ir::quant::Scale::Half { .. });
    ctx.schedule.gpu && !ops.ta && (unit_lanes > 1 || !(ctx.schedule.byte_loads && half_scale))
}

/// The step of a GPU dot product's reduction over K, `None` where it reads an element a
/// step (or is not a GPU decode form).
fn gpu_step(
    ctx: &Ctx,
    ops: &Operands,
    gpu_lanes: Option<u8>,
    unit_lanes: u8,
    k: &Dim,
) -> Option<Step> {
    if let Some(lanes) = gpu_lanes {
        let elems = GPU_DOT_STEP.max(lanes as i64);
        let fits = k.as_known().is_some_and(|k| k % elems == 0);
        return Some(Step {
            lanes,
            elems: if fits { elems } else { lanes as i64 },
        });
    }
    let (_, format) = quantized_rows(ctx, ops)?;
    unit_steps(ctx, ops, unit_lanes, format).then(|| Step {
        lanes: unit_lanes,
        elems: super::dequant::unit_of(&format.layout(), k.as_known()) as i64,
    })
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
fn quantized_rows(ctx: &Ctx, ops: &Operands) -> Option<(NodeId, kiln_ir::QuantFormat)> {
    let node = ctx.graph.node(ops.b);
    match node.op {
        kiln_ir::Op::Dequant { format } if ops.tb && ops.b_shape.len() == 2 => {
            Some((ctx.graph.inputs(ops.b)[0], format))
        }
        _ => None,
    }
}

fn tiled_kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let s = ctx.schedule;
    let (w, nr, mr, kc) = (s.lanes as i64, s.nr as i64, s.mr as i64, s.kc as i64);
    // Fewer panels per grid point when N is small, so that the grid keeps enough
    // points to spread over the cores (the grid only splits N and the batch).
    let n_known = ops.out_shape[ops.nb + 1].as_known();
    let panels = n_known.map_or(1, |n| {
        (n / (nr * MIN_GRID_POINTS)).clamp(1, s.panels.max(1) as i64)
    });
    let nb = ops.nb;
    let m = dim_expr(ctx, &ops.out_shape[nb]);
    let n = dim_expr(ctx, &ops.out_shape[nb + 1]);
    let kdim = dim_expr(ctx, &k_dim(ops));
    let mut grid: Vec<GridDim> = ops.out_shape[..nb].iter().map(GridDim::of).collect();
    grid.push(GridDim {
        dim: ops.out_shape[nb + 1].clone(),
        ceil_div: nr * panels,
    });
    let (j0, kb, k0, kn, kk, jj, p, jp) = (
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
    );
    // Panel p covers columns jp = j0 + p*nr .. jp + nr and lives at p*kc*nr in the local.
    let panel_start = |p: VarId| Stmt::Let {
        var: jp,
        value: add(var(j0), mul(var(p), i(nr))),
    };
    let panel_base = mul(var(p), i(kc * nr));
    let full = cmp(Cmp::Le, add(var(jp), i(nr)), n.clone());

    // Pack B[k0..k0+kn, jp..jp+nr] into panel p, zero past N.
    let b_full = ops.b_at(ctx, add(var(k0), var(kk)), add(var(jp), var(jj)))?;
    let clamped_col = min(add(var(jp), var(jj)), sub(n.clone(), i(1)));
    let b_edge = ops.b_at(ctx, add(var(k0), var(kk)), clamped_col)?;
    let b_edge = select(
        cmp(Cmp::Lt, add(var(jp), var(jj)), n.clone()),
        b_edge,
        f(0.0),
    );
    let panel_at = add(panel_base.clone(), add(mul(var(kk), i(nr)), var(jj)));
    let pack_row = |value: Expr| Stmt::Loop {
        var: jj,
        extent: i(nr),
        kind: LoopKind::Map,
        vector: w as u8,
        body: vec![Stmt::Store {
            buf: Buf::Local(0),
            index: panel_at.clone(),
            value,
        }],
    };
    let pack = over_panels(
        p,
        panels,
        vec![
            panel_start(p),
            Stmt::Loop {
                var: kk,
                extent: var(kn),
                kind: LoopKind::Serial,
                vector: 1,
                body: vec![Stmt::If {
                    cond: full.clone(),
                    then: vec![pack_row(b_full)],
                    otherwise: vec![pack_row(b_edge)],
                }],
            },
        ],
    );

    let tile = Tile {
        jp,
        panel_base,
        kb,
        k0,
        kn,
        n: n.clone(),
        w,
        nr,
    };
    // Row tiles outside, panels inside: the micro-kernel's rows of A stay in L1 while
    // every panel of B passes over them.
    let row_tiles = |ctx: &mut Ctx, rows: i64, i0: Expr| -> Result<Stmt, LowerError> {
        let mut body = vec![panel_start(p)];
        let kernel = micro_kernel(ctx, ops, out, rows, i0, &tile)?;
        body.push(Stmt::If {
            cond: cmp(Cmp::Lt, var(jp), n.clone()),
            then: kernel,
            otherwise: Vec::new(),
        });
        Ok(over_panels(p, panels, body))
    };
    let tiles = ctx.fresh();
    let rest = ctx.fresh();
    let tile_body = row_tiles(ctx, mr, mul(var(tiles), i(mr)))?;
    let rest_row = add(mul(div(m.clone(), i(mr)), i(mr)), var(rest));
    let rest_body = row_tiles(ctx, 1, rest_row)?;
    let body = vec![
        Stmt::Let {
            var: j0,
            value: mul(Expr::GridIdx(nb as u32), i(nr * panels)),
        },
        Stmt::Loop {
            var: kb,
            extent: div(add(kdim.clone(), i(kc - 1)), i(kc)),
            kind: LoopKind::Serial,
            vector: 1,
            body: vec![
                Stmt::Let {
                    var: k0,
                    value: mul(var(kb), i(kc)),
                },
                Stmt::Let {
                    var: kn,
                    value: min(i(kc), sub(kdim.clone(), var(k0))),
                },
                pack,
                Stmt::Loop {
                    var: tiles,
                    extent: div(m.clone(), i(mr)),
                    kind: LoopKind::Serial,
                    vector: 1,
                    body: vec![tile_body],
                },
                Stmt::Loop {
                    var: rest,
                    extent: rem(m, i(mr)),
                    kind: LoopKind::Serial,
                    vector: 1,
                    body: vec![rest_body],
                },
            ],
        },
    ];
    let (mut kernel, args) = ctx.finish(name, grid, body, 1);
    kernel.locals.push(LocalBuf {
        dtype: DType::F32,
        len: (panels * kc * nr) as u32,
    });
    Ok((kernel, args))
}

/// A serial loop over the grid point's panels.
fn over_panels(p: VarId, panels: i64, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var: p,
        extent: i(panels),
        kind: LoopKind::Serial,
        vector: 1,
        body,
    }
}

struct Tile {
    /// First column of the panel.
    jp: VarId,
    /// Where the packed panel starts in the local buffer.
    panel_base: Expr,
    kb: VarId,
    k0: VarId,
    kn: VarId,
    n: Expr,
    w: i64,
    nr: i64,
}

/// `rows x nr` outputs starting at row `i0`, column `j0`, for one k block: load the
/// partial sums (after the first block), accumulate `kn` rank-1 updates, store back.
fn micro_kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    rows: i64,
    i0: Expr,
    t: &Tile,
) -> Result<Vec<Stmt>, LowerError> {
    let nv = t.nr / t.w;
    let lanes = t.w as u8;
    let row0 = ctx.fresh();
    let acc: Vec<Vec<VarId>> = (0..rows)
        .map(|_| (0..nv).map(|_| ctx.fresh()).collect())
        .collect();
    let full = cmp(Cmp::Le, add(var(t.jp), i(t.nr)), t.n.clone());
    let col = |v: i64, l: i64| add(var(t.jp), i(v * t.w + l));
    let row = |r: i64| add(var(row0), i(r));

    let mut body = vec![Stmt::Let {
        var: row0,
        value: i0,
    }];
    for r in 0..rows {
        for v in 0..nv {
            body.push(Stmt::Decl {
                var: acc[r as usize][v as usize],
                init: splat(f(0.0), lanes),
            });
        }
    }
    // The tile's sums so far (after the first block of K), or the addend (before it).
    let mut start_from = |buf: Buf| -> Stmt {
        let mut load_full = Vec::new();
        let mut load_edge = Vec::new();
        for r in 0..rows {
            for v in 0..nv {
                let at = ops.c_index(ctx, row(r), col(v, 0));
                load_full.push(Stmt::Assign {
                    var: acc[r as usize][v as usize],
                    value: load_vec(buf, at, lanes),
                });
                let lanes_v = (0..t.w)
                    .map(|l| {
                        let clamped = min(col(v, l), sub(t.n.clone(), i(1)));
                        select(
                            cmp(Cmp::Lt, col(v, l), t.n.clone()),
                            load(buf, ops.c_index(ctx, row(r), clamped)),
                            f(0.0),
                        )
                    })
                    .collect();
                load_edge.push(Stmt::Assign {
                    var: acc[r as usize][v as usize],
                    value: Expr::Lanes(lanes_v),
                });
            }
        }
        Stmt::If {
            cond: full.clone(),
            then: load_full,
            otherwise: load_edge,
        }
    };
    let resume = start_from(out);
    let first = ops.addend.map(&mut start_from).into_iter().collect();
    body.push(Stmt::If {
        cond: cmp(Cmp::Ne, var(t.kb), i(0)),
        then: vec![resume],
        otherwise: first,
    });

    let kk = ctx.fresh();
    let mut step = Vec::new();
    let b_vars: Vec<VarId> = (0..nv).map(|_| ctx.fresh()).collect();
    for (v, &bv) in b_vars.iter().enumerate() {
        let at = add(
            t.panel_base.clone(),
            add(mul(var(kk), i(t.nr)), i(v as i64 * t.w)),
        );
        step.push(Stmt::Let {
            var: bv,
            value: load_vec(Buf::Local(0), at, lanes),
        });
    }
    for r in 0..rows {
        let a = ctx.fresh();
        let a_val = ops.a_at(ctx, row(r), add(var(t.k0), var(kk)))?;
        step.push(Stmt::Let {
            var: a,
            value: splat(a_val, lanes),
        });
        for (v, &bv) in b_vars.iter().enumerate() {
            let x = acc[r as usize][v];
            step.push(Stmt::Assign {
                var: x,
                value: fma(var(a), var(bv), var(x)),
            });
        }
    }
    body.push(Stmt::Loop {
        var: kk,
        extent: var(t.kn),
        kind: LoopKind::Serial,
        vector: 1,
        body: step,
    });

    let mut store_full = Vec::new();
    let mut store_edge = Vec::new();
    for r in 0..rows {
        for v in 0..nv {
            let x = acc[r as usize][v as usize];
            store_full.push(Stmt::Store {
                buf: out,
                index: ops.c_index(ctx, row(r), col(v, 0)),
                value: var(x),
            });
            for l in 0..t.w {
                store_edge.push(Stmt::If {
                    cond: cmp(Cmp::Lt, col(v, l), t.n.clone()),
                    then: vec![Stmt::Store {
                        buf: out,
                        index: ops.c_index(ctx, row(r), col(v, l)),
                        value: Expr::Extract {
                            vector: Box::new(var(x)),
                            lane: l as u8,
                        },
                    }],
                    otherwise: Vec::new(),
                });
            }
        }
    }
    body.push(Stmt::If {
        cond: full,
        then: store_full,
        otherwise: store_edge,
    });
    Ok(body)
}
