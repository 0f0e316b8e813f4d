//! Which nodes get buffers, and which of those kiln computes with a kernel.

use super::{is_reduction_like, unsupported, BufferKind, LowerError};
use kiln_ir::{DType, Graph, NodeId, Op};
use std::collections::{BTreeMap, BTreeSet};

pub struct Partition {
    /// Every materialised node and where its data lives, in node order.
    pub buffers: Vec<(NodeId, BufferKind)>,
    /// Materialised nodes that need a kernel, in topological order.
    pub computed: Vec<NodeId>,
    /// Outputs that are another buffer (an input, a weight, or an output named twice):
    /// (output index, the output's own node placeholder, source node).
    pub copies: Vec<(usize, NodeId, NodeId)>,
    /// Matmuls whose one reader adds them to another buffer of their shape (a residual
    /// connection): the matmul kernel writes the sum into the sum's buffer, and the sum
    /// gets no kernel of its own. `(matmul, sum, the other addend)`.
    pub residuals: Vec<Residual>,
    /// Buffers that GPU dot products over few rows read around, computing the value in
    /// place (`read_in_place_on_gpu`); the many-row forms still read the buffer, whose
    /// kernel runs only when one of them does.
    pub few_rows_read_in_place: BTreeSet<NodeId>,
    /// Projections whose one reader rotates them (`rope_epilogue`); the lowering folds the
    /// rotation into the few-row form where its blocks hold whole pairs.
    pub rope_epilogues: Vec<RopeEpilogue>,
}

/// A matmul `[rows, heads * dim]` read only by a rope of it as `[rows, heads, dim]` (the
/// rows kept: the rope's positions index them) with adjacent pairs (llama's layout): a dot
/// product computing both outputs of a pair can store them rotated into the rope's buffer,
/// so decode attention waits for the projection only. `matmul` keeps its buffer for the
/// other forms, whose results the rope's kernel rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RopeEpilogue {
    pub matmul: NodeId,
    pub rope: NodeId,
}

/// The rope epilogue `rope` is, if it is one (`RopeEpilogue`).
fn rope_epilogue(g: &Graph, rope: NodeId) -> Option<RopeEpilogue> {
    let n = g.node(rope);
    let Op::Rope {
        layout: kiln_ir::RopeLayout::Interleaved,
        rot_dims,
        ..
    } = n.op
    else {
        return None;
    };
    let view = g.inputs(rope)[0];
    if !matches!(g.node(view).op, Op::Reshape { .. }) || g.users(view) != [rope] {
        return None;
    }
    let matmul = g.inputs(view)[0];
    let m = g.node(matmul);
    let dim = n.shape.last()?.as_known()?;
    let fits = matches!(m.op, Op::MatMul { .. })
        && m.shape.len() == 2
        && n.shape.len() == 3
        && n.shape[0] == m.shape[0]
        && m.dtype == DType::F32
        && n.dtype == DType::F32
        && dim % 2 == 0
        && rot_dims % 2 == 0
        && g.users(matmul) == [view]
        && !g.is_output(matmul)
        && !g.is_output(view);
    fits.then_some(RopeEpilogue { matmul, rope })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Residual {
    pub matmul: NodeId,
    pub sum: NodeId,
    pub addend: NodeId,
}

/// The residual `sum` forms, if it is one: `matmul + addend` (either order) where the
/// matmul is read by nothing else and is no output, and all three are f32 of one shape with
/// `addend` materialised. Adding `addend` as the matmul stores its results saves a kernel
/// and a round trip through memory per residual (two per transformer layer), which decode
/// pays on every step, on GPUs as a launch on the critical path.
fn residual(g: &Graph, kind: &BTreeMap<NodeId, BufferKind>, sum: NodeId) -> Option<Residual> {
    let n = g.node(sum);
    if n.op != Op::Binary(kiln_ir::BinaryOp::Add) || n.dtype != DType::F32 {
        return None;
    }
    let ins = g.inputs(sum);
    let (matmul, addend) = match (&g.node(ins[0]).op, &g.node(ins[1]).op) {
        (Op::MatMul { .. }, _) if ins[0] != ins[1] => (ins[0], ins[1]),
        (_, Op::MatMul { .. }) => (ins[1], ins[0]),
        _ => return None,
    };
    let (m, a) = (g.node(matmul), g.node(addend));
    let fits = m.shape == n.shape && a.shape == n.shape && m.dtype == DType::F32;
    let alone = g.users(matmul) == [sum] && !g.is_output(matmul);
    let stored = matches!(
        kind.get(&addend),
        Some(BufferKind::Temp | BufferKind::Input(_) | BufferKind::Output(_))
    );
    (fits
        && alone
        && stored
        && matches!(
            kind.get(&sum),
            Some(BufferKind::Temp | BufferKind::Output(_))
        ))
    .then_some(Residual {
        matmul,
        sum,
        addend,
    })
}

/// Decoding quantized weights, and widening half ones, is recomputed by each consumer,
/// never stored: an f32 copy of the weights is what the narrow formats exist to avoid.
fn is_decode(g: &Graph, id: NodeId) -> bool {
    match &g.node(id).op {
        Op::Dequant { .. } => true,
        Op::Cast { .. } => g.inputs(id).first().is_some_and(|&x| {
            matches!(g.node(x).dtype, DType::F16 | DType::BF16) && g.node(id).dtype == DType::F32
        }),
        _ => false,
    }
}

/// Layout-only ops: cheap to recompute in every consumer, never worth a buffer.
fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. }
    )
}

/// Whether `id` will have a buffer whatever reads it: inputs, weights, constants, outputs,
/// reductions, and values with several readers (the rules below).
fn stored_anyway(g: &Graph, id: NodeId) -> bool {
    let op = &g.node(id).op;
    matches!(op, Op::Input { .. } | Op::Param { .. } | Op::Const(_))
        || is_reduction_like(op)
        || g.is_output(id)
        || (op.is_injective() && !is_view(op) && !is_decode(g, id) && g.users(id).len() > 1)
}

/// Whether `id` is stored, or an elementwise chain at most `depth` deep over stored
/// values (through views): cheap for a kernel to compute where it reads it.
fn cheap(g: &Graph, id: NodeId, depth: u32) -> bool {
    let mut src = id;
    while is_view(&g.node(src).op) {
        src = g.inputs(src)[0];
    }
    if stored_anyway(g, src) {
        return true;
    }
    let elementwise = matches!(
        g.node(src).op,
        Op::Concat { .. } | Op::Binary(_) | Op::Unary(_) | Op::Cast { .. }
    );
    depth > 0
        && elementwise
        && !is_decode(g, src)
        && g.inputs(src).iter().all(|&i| cheap(g, i, depth - 1))
}

/// A matmul operand that GPU dot products over few rows (decode) compute where they read it
/// rather than through a buffer: a concatenation (attention's cached keys or values and
/// the new rows: a choice between two loads) or a short elementwise chain (SwiGLU's
/// `silu(gate) * up`) over stored values. Each is a kernel on the decode step's critical
/// path; the concatenation also copies the whole cache every step. The many-row forms
/// (prefill) keep the buffer: read in place, a thread per output would load both sources
/// for every element (11% slower prefill on an H200 with the concatenations), and on a
/// CPU the dot products' vector loads would become gathers.
fn read_in_place_on_gpu(g: &Graph, id: NodeId) -> bool {
    !stored_anyway(g, id) && cheap(g, id, 2)
}

/// Whether GPU decode may compute RMS norms and softmaxes inside the dot products that
/// read them (`normalised`); `KILN_NORMS_IN_PLACE=0` keeps their kernels (to tell whether
/// a wrong result comes from this fusion, and to measure what it saves).
fn norms_in_place() -> bool {
    std::env::var("KILN_NORMS_IN_PLACE").as_deref() != Ok("0")
}

/// Whether GPU decode runs attention as one kernel (`decode_attention`), the scores
/// computed where it reads them: only under `KILN_DECODE_ATTENTION=1` at compile time. Its
/// one measurement on a GPU (one H100, 2026-12-06, docs/perf.md) was slower than the two
/// kernels it replaces (1B F16 tg128 642.6 t/s against 701.2), and the version built after
/// it has not run on one; it stays off until a GPU shows it faster.
pub(super) fn decode_attention() -> bool {
    ATTENTION
        .get()
        .unwrap_or_else(|| std::env::var("KILN_DECODE_ATTENTION").as_deref() == Ok("1"))
}

thread_local! {
    /// Overrides `KILN_DECODE_ATTENTION` for tests of this thread (tests run in parallel,
    /// so they cannot set the environment).
    pub(super) static ATTENTION: std::cell::Cell<Option<bool>> =
        const { std::cell::Cell::new(None) };
}

/// A normalisation that GPU dot products over few rows read without its buffer
/// (`normalised`): an RMS norm of a stored row, or a softmax along the last axis of a
/// cheap chain (attention's scaled and masked scores), every reader a matmul taking it,
/// untransposed, as A (so the normalised axis is K). Each is a kernel of one or a few
/// blocks on a decode layer's critical path: the two norms and the softmax of every layer.
fn normalised_in_place_on_gpu(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    let input = match n.op {
        Op::RmsNorm { .. } => stored_anyway(g, g.inputs(id)[0]),
        Op::Softmax { axis } => axis + 1 == n.shape.len() && cheap(g, g.inputs(id)[0], 2),
        _ => false,
    };
    let users = g.users(id);
    input
        && n.dtype == DType::F32
        && !users.is_empty()
        && !g.is_output(id)
        && users.iter().all(|&u| {
            matches!(
                g.node(u).op,
                Op::MatMul {
                    transpose_a: false,
                    ..
                }
            ) && g.inputs(u)[0] == id
                && g.inputs(u)[1] != id
        })
}

/// Longest K of a matmul whose few-row readers compute it in place (`scores_in_place_on_gpu`):
/// each read unrolls K products, and a head's width is 64 to 128.
pub const SCORES_MAX_K: i64 = 128;

/// Attention's scores in decode: the matmuls behind the softmax `softmax`, which few-row
/// products read in place (`normalised_in_place_on_gpu`), through its short elementwise
/// input chain (the scale, the mask), each read by nothing else, f32, with K at most
/// `SCORES_MAX_K`. The decode attention kernel over the softmax (`decode_attention`)
/// computes each score where it reads it, K products unrolled, once per position, and the
/// scores' own kernel (Q.K^T: a block per few scores, its 64-long reductions leaving most
/// threads idle) leaves the decode step.
pub(super) fn scores_in_place_on_gpu(g: &Graph, softmax: NodeId) -> Vec<NodeId> {
    let mut found = Vec::new();
    let mut stack = vec![(g.inputs(softmax)[0], 3u32)];
    while let Some((id, depth)) = stack.pop() {
        let n = g.node(id);
        let alone = g.users(id).len() == 1 && !g.is_output(id);
        match n.op {
            Op::MatMul { transpose_a, .. } if alone && n.dtype == DType::F32 => {
                let a = g.node(g.inputs(id)[0]);
                let k = if transpose_a {
                    &a.shape[a.shape.len() - 2]
                } else {
                    &a.shape[a.shape.len() - 1]
                };
                let f32_inputs = g.inputs(id).iter().all(|&x| g.node(x).dtype == DType::F32);
                if f32_inputs && k.as_known().is_some_and(|k| k <= SCORES_MAX_K) {
                    found.push(id);
                }
            }
            Op::Binary(_) | Op::Unary(_) | Op::Cast { .. } if alone && depth > 0 => {
                stack.extend(g.inputs(id).iter().map(|&x| (x, depth - 1)));
            }
            ref op if is_view(op) && alone && depth > 0 => {
                stack.push((g.inputs(id)[0], depth - 1));
            }
            _ => {}
        }
    }
    found
}

/// The matmuls reading `id`, through layout-only ops; none when anything else reads it (a
/// view that is an output is read by the caller).
pub fn matmul_readers(g: &Graph, id: NodeId) -> Option<Vec<NodeId>> {
    let mut out = Vec::new();
    for u in g.users(id) {
        match g.node(u).op {
            Op::MatMul { .. } => out.push(u),
            ref op if is_view(op) && !g.is_output(u) => out.extend(matmul_readers(g, u)?),
            _ => return None,
        }
    }
    Some(out)
}

/// `gpu`: the schedule is a GPU's (`read_in_place_on_gpu`; every GPU code generator runs
/// the decode attention kernel, which has explicit threads).
pub fn partition(g: &Graph, gpu: bool) -> Result<Partition, LowerError> {
    let attention = gpu && decode_attention();
    let mut kind: BTreeMap<NodeId, BufferKind> = BTreeMap::new();
    let mut in_place = BTreeSet::new();
    let mut copies = Vec::new();
    for (i, (name, _)) in g.inputs_named().iter().enumerate() {
        let _ = name;
        let node = g.inputs_named()[i].1;
        kind.insert(node, BufferKind::Input(i));
    }
    for id in g.node_ids() {
        let n = g.node(id);
        match &n.op {
            Op::Param { name, .. } => {
                kind.insert(id, BufferKind::Param(name.clone()));
            }
            Op::Const(t) if t.numel() > 1 => {
                kind.insert(id, BufferKind::Const(t.clone()));
            }
            Op::Reduce { .. } if n.dtype.is_int() => {
                return Err(unsupported(
                    g,
                    id,
                    "integer reductions are not supported by the kernel lowering",
                ))
            }
            op if is_reduction_like(op) => {
                kind.insert(id, BufferKind::Temp);
            }
            op if op.is_injective()
                && !is_view(op)
                && !is_decode(g, id)
                && g.users(id).len() > 1 =>
            {
                kind.insert(id, BufferKind::Temp);
            }
            _ => {}
        }
        // A matmul's operands, and what is quantized for one, are read many times or in a
        // tight loop: computed once into a buffer rather than inlined there.
        // Through layout-only ops too: a view is free to read through, but the rope or
        // concat behind it would be recomputed for every element the matmul reads (each
        // query element once per key, in attention).
        if let Op::MatMul { .. } | Op::Quantize { .. } = n.op {
            for operand in g.inputs(id) {
                let mut src = operand;
                while is_view(&g.node(src).op) {
                    src = g.inputs(src)[0];
                }
                let op = &g.node(src).op;
                if op.is_injective() && !is_decode(g, src) {
                    kind.entry(src).or_insert(BufferKind::Temp);
                    if gpu && read_in_place_on_gpu(g, src) {
                        in_place.insert(src);
                    }
                }
            }
        }
    }
    let mut output_nodes = BTreeSet::new();
    for (out_idx, (_, named)) in g.outputs.iter().enumerate() {
        // An output that reshapes a value computed anyway (a projection returned as heads):
        // that value's kernel writes the output, whose elements are in the same order.
        let mut src = *named;
        while matches!(g.node(src).op, Op::Reshape { .. }) {
            src = g.inputs(src)[0];
        }
        let node = if src != *named && kind.get(&src) == Some(&BufferKind::Temp) {
            &src
        } else {
            named
        };
        let existing = kind.get(node).cloned();
        let needs_copy = matches!(
            existing,
            Some(BufferKind::Input(_) | BufferKind::Param(_) | BufferKind::Const(_))
        ) || output_nodes.contains(node)
            || matches!(g.node(*node).op, Op::Const(_));
        if needs_copy {
            copies.push((out_idx, *node, *node));
        } else {
            kind.insert(*node, BufferKind::Output(out_idx));
            output_nodes.insert(*node);
        }
    }
    let residuals: Vec<Residual> = kind
        .keys()
        .filter_map(|&sum| residual(g, &kind, sum))
        .collect();
    for r in &residuals {
        kind.remove(&r.matmul);
    }
    let normalised: Vec<NodeId> = g
        .node_ids()
        .filter(|&n| gpu && norms_in_place() && normalised_in_place_on_gpu(g, n))
        .collect();
    let computed = kind
        .iter()
        .filter(|(_, k)| matches!(k, BufferKind::Temp | BufferKind::Output(_)))
        .map(|(n, _)| *n)
        .collect();
    Ok(Partition {
        buffers: kind.into_iter().collect(),
        computed,
        copies,
        residuals,
        // A value anything but a matmul reads must be in its buffer every step.
        few_rows_read_in_place: in_place
            .into_iter()
            .filter(|&n| matmul_readers(g, n).is_some())
            .chain(normalised.iter().copied())
            .chain(normalised.iter().flat_map(|&s| match g.node(s).op {
                Op::Softmax { .. } if attention => scores_in_place_on_gpu(g, s),
                _ => Vec::new(),
            }))
            .collect(),
        rope_epilogues: g.node_ids().filter_map(|n| rope_epilogue(g, n)).collect(),
    })
}
