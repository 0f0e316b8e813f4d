//! Lowering: a typed graph -> kernels in kernel IR, plus which buffers each launch reads
//! and writes.
//!
//! Partitioning is simple and explicit: a node gets its own buffer (is *materialised*) if
//! it is a graph input, weight or tensor constant, a graph output, a reduction-like op
//! (reduce, matmul, softmax, norms), read by several nodes, or a non-trivial operand of a
//! matmul. Each materialised computed node is one kernel; every other node is inlined into
//! the kernels that read it (see [`inline`]), which fuses elementwise chains, broadcasts
//! and layout changes into their consumers.

mod byte_tiles;
mod decode_attention;
mod dequant;
mod gpu_byte_dot;
mod gpu_dot;
mod int_dot;
pub use gpu_byte_dot::applies as gpu_byte_dot_applies;
pub use int_dot::byte_lanes as byte_dot_lanes;
mod inline;
mod k_dot;
pub use k_dot::applies as q8k_dot_applies;
mod group_matrix;
mod kernels;
mod matmul;
mod matrix;
mod normalised;
mod partition;
mod prefetch;
mod quantize;
mod tiled;

pub use inline::{dim_expr, flat_index};

use crate::kernel::{BufferParam, Kernel, VarId};
use crate::schedule::Schedule;
use kiln_ir::{DType, Dim, Graph, NodeId, Op, Tensor};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LowerError {
    #[error("node %{node} ({op}): {why}")]
    Unsupported {
        node: usize,
        op: &'static str,
        why: String,
    },
    #[error("internal lowering error: {0}")]
    Internal(String),
}

/// Where a materialised node's data lives.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    Input(usize),
    Output(usize),
    Param(String),
    Const(Tensor),
    /// An intermediate: gets an arena slot from the memory planner.
    Temp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BufferInfo {
    pub kind: BufferKind,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

/// One grid axis as the runtime computes it: `ceil(dim / ceil_div)` points. (The kernel
/// carries the same extent as a kernel-IR expression for the code generators.)
#[derive(Clone, Debug, PartialEq)]
pub struct GridDim {
    pub dim: Dim,
    pub ceil_div: i64,
}

impl GridDim {
    pub fn of(dim: &Dim) -> GridDim {
        GridDim {
            dim: dim.clone(),
            ceil_div: 1,
        }
    }

    /// The axis's points where its extent is known at compile time.
    pub fn known_points(&self) -> Option<i64> {
        self.dim
            .as_known()
            .map(|d| (d + self.ceil_div - 1) / self.ceil_div)
    }
}

/// One kernel launch: which global buffers the kernel's arguments are, over which grid.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelLaunch {
    pub kernel: usize,
    pub args: Vec<usize>,
    pub grid: Vec<GridDim>,
    /// Runs only when this holds (one of several kernels for the same node, each for a
    /// range of a symbol's values: a matmul's decode and prefill forms).
    pub guard: Option<Guard>,
}

/// `dim <= max` (or, with `above`, `dim > max`), evaluated at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub dim: Dim,
    pub max: i64,
    pub above: bool,
}

#[derive(Clone, Debug)]
pub struct Lowered {
    pub symbols: Vec<String>,
    pub buffers: Vec<BufferInfo>,
    pub kernels: Vec<Kernel>,
    pub launches: Vec<KernelLaunch>,
}

/// Lowering state: the graph, global buffers, and the kernel being built.
pub struct Ctx<'g> {
    pub graph: &'g Graph,
    pub schedule: Schedule,
    symbols: Vec<String>,
    node_buffer: HashMap<NodeId, usize>,
    buffers: Vec<BufferInfo>,
    /// Global buffer ids of the current kernel's arguments, in argument order.
    args: Vec<usize>,
    writes: Vec<bool>,
    /// The grid of the kernel last finished.
    grid: Vec<GridDim>,
    next_var: VarId,
    /// Matmuls that add another buffer as they store (`partition::Residual`): the addend.
    residual_addend: HashMap<NodeId, NodeId>,
    /// Matmuls whose few-row form stores a rope of them, rotated (`partition::RopeEpilogue`,
    /// where the form holds whole pairs): the rope.
    rope_epilogue: HashMap<NodeId, NodeId>,
    /// Buffers the few-row dot products compute in place
    /// (`Partition::few_rows_read_in_place`), and whether the kernel being built is one.
    few_rows_in_place: std::collections::BTreeSet<NodeId>,
    reading_few_rows: bool,
    /// Norms and softmaxes the current kernel reads without their scale (`x * weight`;
    /// `e^(x - max)`, the max in the variable given), because it multiplies its sums by the
    /// scale itself (`normalised`).
    pub(super) unscaled: HashMap<NodeId, Option<crate::kernel::VarId>>,
}

impl<'g> Ctx<'g> {
    pub fn symbol(&self, name: &str) -> u32 {
        self.symbols
            .iter()
            .position(|s| s == name)
            .expect("symbols are collected from the graph") as u32
    }

    pub fn fresh(&mut self) -> VarId {
        self.next_var += 1;
        self.next_var - 1
    }

    /// The storage dtype of the current kernel's argument `buf` (locals: f32).
    pub fn arg_dtype(&self, buf: crate::kernel::Buf) -> DType {
        match buf {
            crate::kernel::Buf::Arg(a) => self.buffers[self.args[a as usize]].dtype,
            crate::kernel::Buf::Local(_) => DType::F32,
        }
    }

    /// The node a matmul adds to its results as it stores them (a residual connection
    /// folded into the matmul: `partition::Residual`).
    pub fn residual_addend(&self, matmul: NodeId) -> Option<NodeId> {
        self.residual_addend.get(&matmul).copied()
    }

    /// The rope a matmul's few-row form stores its results rotated for
    /// (`partition::RopeEpilogue`), where the lowering folded one in.
    pub fn rope_epilogue(&self, matmul: NodeId) -> Option<NodeId> {
        self.rope_epilogue.get(&matmul).copied()
    }

    /// Whether the kernel being built computes `node` where it reads it rather than
    /// loading its buffer (`Partition::few_rows_read_in_place`).
    pub fn reads_in_place(&self, node: NodeId) -> bool {
        self.reading_few_rows && self.few_rows_in_place.contains(&node)
    }

    /// The current kernel's argument for a materialised node (added on first use); none
    /// for a buffer the current kernel computes in place instead.
    pub fn buffer_of(&mut self, node: NodeId) -> Option<crate::kernel::Buf> {
        if self.reads_in_place(node) {
            return None;
        }
        let global = *self.node_buffer.get(&node)?;
        Some(crate::kernel::Buf::Arg(self.arg_for(global, false)))
    }

    fn arg_for(&mut self, global: usize, writes: bool) -> u32 {
        let k = match self.args.iter().position(|&a| a == global) {
            Some(k) => k,
            None => {
                self.args.push(global);
                self.writes.push(false);
                self.args.len() - 1
            }
        };
        self.writes[k] |= writes;
        k as u32
    }

    /// Starts a kernel that writes `node`'s buffer; returns the output argument.
    fn begin(&mut self, node: NodeId) -> crate::kernel::Buf {
        self.args.clear();
        self.writes.clear();
        self.next_var = 0;
        let global = self.node_buffer[&node];
        crate::kernel::Buf::Arg(self.arg_for(global, true))
    }

    fn finish(
        &mut self,
        name: String,
        grid_dims: Vec<GridDim>,
        body: Vec<crate::kernel::Stmt>,
        min_chunk: u64,
    ) -> (Kernel, Vec<usize>) {
        use crate::kernel::e::{add, div, i};
        let grid = grid_dims
            .iter()
            .map(|g| {
                if g.ceil_div == 1 {
                    dim_expr(self, &g.dim)
                } else {
                    div(
                        add(dim_expr(self, &g.dim), i(g.ceil_div - 1)),
                        i(g.ceil_div),
                    )
                }
            })
            .collect();
        self.grid = grid_dims;
        let args = self
            .args
            .iter()
            .zip(&self.writes)
            .map(|(&g, &w)| BufferParam {
                name: format!("b{g}"),
                dtype: self.buffers[g].dtype,
                writes: w,
                offset: false,
            })
            .collect();
        let kernel = Kernel {
            name,
            args,
            locals: Vec::new(),
            block_threads: None,
            grid,
            min_chunk,
            body,
            cost: Default::default(),
            next_var: self.next_var,
        };
        (kernel, self.args.clone())
    }
}

pub fn lower(graph: &Graph, schedule: Schedule) -> Result<Lowered, LowerError> {
    let part = partition::partition(graph, schedule.gpu)?;
    let mut ctx = Ctx {
        graph,
        schedule,
        symbols: graph.symbols(),
        node_buffer: HashMap::new(),
        buffers: Vec::new(),
        args: Vec::new(),
        writes: Vec::new(),
        grid: Vec::new(),
        next_var: 0,
        residual_addend: HashMap::new(),
        rope_epilogue: HashMap::new(),
        few_rows_in_place: part.few_rows_read_in_place,
        reading_few_rows: false,
        unscaled: HashMap::new(),
    };
    for (node, kind) in part.buffers {
        let n = graph.node(node);
        ctx.node_buffer.insert(node, ctx.buffers.len());
        ctx.buffers.push(BufferInfo {
            kind,
            dtype: n.dtype,
            shape: n.shape.clone(),
        });
    }
    // A residual's matmul writes the sum's buffer, and is lowered where the sum would be.
    let mut matmul_of_sum = HashMap::new();
    for r in &part.residuals {
        let sum_buffer = ctx.node_buffer[&r.sum];
        ctx.node_buffer.insert(r.matmul, sum_buffer);
        ctx.residual_addend.insert(r.matmul, r.addend);
        matmul_of_sum.insert(r.sum, r.matmul);
    }
    // Ropes folded into their projection's few-row form where its grid points hold whole
    // pairs: the rope's own kernel runs with the projection's other forms.
    let mut folded_ropes = HashMap::new();
    for r in &part.rope_epilogues {
        let dim = graph.node(r.rope).shape.last().and_then(|d| d.as_known());
        let has_dot = matmul::forms(&ctx, r.matmul)
            .iter()
            .any(|(f, _)| *f == Some(matmul::Form::Dot));
        let Some(dim) = dim.filter(|_| has_dot) else {
            continue;
        };
        if matmul::dot_holds_pairs(&mut ctx, r.matmul, dim)? {
            let guard = many_row_guard(&ctx, [r.matmul]);
            ctx.rope_epilogue.insert(r.matmul, r.rope);
            folded_ropes.insert(r.rope, guard);
        }
    }
    // Attention's scores computed in place by the decode attention kernel over their softmax
    // keep their kernel's other forms, which must run whenever the softmax's kernel does.
    let scores: Vec<NodeId> = ctx
        .few_rows_in_place
        .iter()
        .copied()
        .filter(|&n| matches!(graph.node(n).op, Op::MatMul { .. }))
        .collect();
    for node in scores {
        let readers = softmax_of(graph, node)
            .and_then(|s| partition::matmul_readers(graph, s))
            .unwrap_or_default();
        let attention = readers
            .iter()
            .all(|&r| matmul::is_decode_attention(&mut ctx, r));
        let has_dot = |m| {
            matmul::forms(&ctx, m)
                .iter()
                .any(|(f, _)| *f == Some(matmul::Form::Dot))
        };
        let same_guard = many_row_guard(&ctx, [node]) == many_row_guard(&ctx, readers.clone());
        if !same_guard || !has_dot(node) || readers.is_empty() || !attention {
            ctx.few_rows_in_place.remove(&node);
        }
    }
    let mut kernels = Vec::new();
    let mut launches = Vec::new();
    for node in part.computed {
        let node = matmul_of_sum.get(&node).copied().unwrap_or(node);
        let mut forms = matmul::forms(&ctx, node);
        if ctx.few_rows_in_place.contains(&node) {
            forms = if matches!(graph.node(node).op, Op::MatMul { .. }) {
                forms
                    .into_iter()
                    .filter(|(f, _)| *f != Some(matmul::Form::Dot))
                    .collect()
            } else {
                match copy_needed(&ctx, node) {
                    Some(guard) => vec![(None, guard)],
                    None => Vec::new(),
                }
            };
        }
        if let Some(guard) = folded_ropes.get(&node) {
            forms = guard.iter().map(|g| (None, g.clone())).collect();
        }
        for (form, guard) in forms {
            let name = format!("k{}_{}", kernels.len(), graph.node(node).op.name());
            ctx.reading_few_rows = form == Some(matmul::Form::Dot);
            let built = match form {
                Some(form) => matmul::matmul_as(&mut ctx, node, name, form),
                None => kernels::kernel_for(&mut ctx, node, name),
            };
            ctx.reading_few_rows = false;
            let (mut kernel, args) = built?;
            kernels::count_cost(&ctx, node, &mut kernel);
            launches.push(KernelLaunch {
                kernel: kernels.len(),
                args,
                grid: ctx.grid.clone(),
                guard,
            });
            kernels.push(kernel);
        }
    }
    for (out_idx, node, src) in part.copies {
        let name = format!("k{}_copy", kernels.len());
        let (kernel, args) = kernels::copy_kernel(&mut ctx, node, src, out_idx, name)?;
        launches.push(KernelLaunch {
            kernel: kernels.len(),
            args,
            grid: ctx.grid.clone(),
            guard: None,
        });
        kernels.push(kernel);
    }
    Ok(Lowered {
        symbols: ctx.symbols,
        buffers: ctx.buffers,
        kernels,
        launches,
    })
}

/// The softmax that matmul `node` feeds through a chain of single readers
/// (`partition::scores_in_place_on_gpu`).
fn softmax_of(graph: &Graph, node: NodeId) -> Option<NodeId> {
    let mut id = node;
    loop {
        let users = graph.users(id);
        if users.len() != 1 {
            return None;
        }
        id = users[0];
        if matches!(graph.node(id).op, Op::Softmax { .. }) {
            return Some(id);
        }
    }
}

/// When the buffer of `node`, which few-row dot products compute in place, must still be
/// written: `Some(guard)` for the launches of its readers' other forms (`Some(None)` when
/// one of them always runs), `None` when no reader ever reads it.
fn copy_needed(ctx: &Ctx, node: NodeId) -> Option<Option<Guard>> {
    many_row_guard(
        ctx,
        partition::matmul_readers(ctx.graph, node).unwrap_or_default(),
    )
}

/// The guard under which any of `matmuls`' forms other than the few-row one runs:
/// `Some(None)` when one always runs, `None` when there is none.
fn many_row_guard(ctx: &Ctx, matmuls: impl IntoIterator<Item = NodeId>) -> Option<Option<Guard>> {
    let mut guard: Option<Option<Guard>> = None;
    for matmul in matmuls {
        for (form, g) in matmul::forms(ctx, matmul) {
            if form == Some(matmul::Form::Dot) {
                continue;
            }
            guard = match (guard, g) {
                (None, g) => Some(g),
                (Some(Some(a)), Some(b)) if a == b => Some(Some(a)),
                _ => Some(None),
            };
        }
    }
    guard
}

fn unsupported(graph: &Graph, node: NodeId, why: impl Into<String>) -> LowerError {
    LowerError::Unsupported {
        node: node.index(),
        op: graph.node(node).op.name(),
        why: why.into(),
    }
}

fn is_reduction_like(op: &Op) -> bool {
    matches!(
        op,
        Op::Reduce { .. }
            | Op::MatMul { .. }
            | Op::Softmax { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Quantize { .. }
    )
}

#[cfg(test)]
mod tests;

/// A number the lowering takes from the environment at compile time, `default` where the
/// variable is unset or not a number: knobs for comparing schedules on a GPU
/// (`scripts/gpu-check.sh`, `MATVEC_PROFILE=1`), never needed to compile correctly.
pub(crate) fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
