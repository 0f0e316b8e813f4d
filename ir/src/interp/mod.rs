//! The reference interpreter: the definition of what every op computes.
//!
//! Every backend is tested against [`run`], so this module is the oracle, not a fast path:
//! each op is written in the plainest form that states its meaning (softmax subtracts the
//! row max, matmul is three loops, layer norm divides by `d`). Arithmetic is done in f64 and
//! each op's output is rounded once to its dtype (by [`Tensor::new`], via [`DType::round`]),
//! which is what a backend does when it stores a result. Computing in f64 keeps the
//! oracle's own error far below an f32 ulp, so a mismatch is the backend's, and rounding per
//! op output (not per arithmetic step) makes f16/bf16 graphs see the storage rounding that
//! backends cannot avoid while leaving them free to keep wider intermediates inside a kernel.
//!
//! Integer tensors take the same path: values are exact in f64 up to 2^53, results are
//! truncated toward zero and saturated to the type's range by `DType::round` (so integer
//! `add` saturates rather than wraps), and integer division by zero is defined as 0.
//! Floats follow IEEE: `1/0` is `inf`, `log(-1)` is NaN, and `max`/`min` propagate NaN.
//!
//! The op families live in their own files; [`eval_op`] is the one dispatch over [`Op`].

mod binary;
mod broadcast;
mod erf;
mod layout;
mod matmul;
mod norm;
mod reduce;
mod rope;
mod unary;

pub use erf::{erf, erfc};

use crate::dim::{shape_to_string, Bindings, Dim};
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Runs `g` and returns its outputs keyed by output name.
///
/// `inputs` holds one tensor per `input` node (by name), `params` supplies each `param`
/// node's tensor (called once per param the outputs depend on), and `bindings` gives the
/// value of every symbol in the shapes of the nodes evaluated ([`infer_bindings`] derives
/// them from the inputs). Only nodes that some output depends on are evaluated, and each
/// intermediate value is dropped after its last use. Supplied tensors must match their
/// declared dtype and shape exactly, and every computed value is checked against its
/// node's declared type, so the shape rules and these semantics cannot drift apart.
pub fn run(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    params: &dyn Fn(&str) -> Option<Tensor>,
    bindings: &Bindings,
) -> Result<BTreeMap<String, Tensor>, IrError> {
    let n = g.len();
    if let Some((name, id)) = g.outputs.iter().find(|(_, id)| id.index() >= n) {
        return Err(interp(format!(
            "output `{name}` refers to missing node %{}",
            id.index()
        )));
    }
    let live = live_nodes(g);
    let mut uses = vec![0usize; n];
    for id in g.node_ids().filter(|id| live[id.index()]) {
        for i in g.inputs(id) {
            uses[i.index()] += 1;
        }
    }
    let mut is_output = vec![false; n];
    for (_, id) in &g.outputs {
        is_output[id.index()] = true;
    }
    let mut values: Vec<Option<Tensor>> = vec![None; n];
    for id in g.node_ids().filter(|id| live[id.index()]) {
        let t = eval_node(g, id, &values, inputs, params, bindings)?;
        values[id.index()] = Some(t);
        for i in g.inputs(id) {
            uses[i.index()] -= 1;
            if uses[i.index()] == 0 && !is_output[i.index()] {
                values[i.index()] = None;
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, id) in &g.outputs {
        let t = values[id.index()]
            .clone()
            .expect("outputs are live and never dropped");
        out.insert(name.clone(), t);
    }
    Ok(out)
}

/// Binds each symbol that appears alone as a dim of an input (`x: f32[seq, 64]`) to that
/// input's extent. Inputs absent from `inputs` are skipped (`run` reports them); an input
/// of the wrong rank, or two extents for one symbol, is an error naming input and symbol.
pub fn infer_bindings(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Result<Bindings, IrError> {
    let mut env = Bindings::new();
    let mut source: BTreeMap<String, String> = BTreeMap::new();
    for (name, id) in g.inputs_named() {
        let Some(t) = inputs.get(&name) else { continue };
        let declared = &g.node(id).shape;
        if declared.len() != t.shape.len() {
            return Err(interp(format!(
                "input `{name}` is declared {}, got shape {:?} of rank {}",
                shape_to_string(declared),
                t.shape,
                t.shape.len()
            )));
        }
        for (d, &extent) in declared.iter().zip(&t.shape) {
            let Some(sym) = lone_symbol(d) else { continue };
            let extent = extent as i64;
            match env.get(sym) {
                Some(&v) if v != extent => {
                    return Err(interp(format!(
                        "input `{name}` gives symbol `{sym}` = {extent}, but input `{}` gave {v}",
                        source[sym]
                    )));
                }
                Some(_) => {}
                None => {
                    env.insert(sym.to_string(), extent);
                    source.insert(sym.to_string(), name.clone());
                }
            }
        }
    }
    Ok(env)
}

/// Evaluates one compute op on concrete operands: the semantics of `op`, usable on its own
/// (constant folding, single-op conformance tests). `bindings` resolves symbolic reshape
/// targets. `input` and `param` have no operands to compute from; `run` supplies them.
pub fn eval_op(op: &Op, args: &[&Tensor], bindings: &Bindings) -> Result<Tensor, String> {
    if let Some(k) = op.arity() {
        if args.len() != k {
            return Err(format!("takes {k} operand(s), got {}", args.len()));
        }
    } else if args.is_empty() {
        return Err("takes at least one operand".into());
    }
    match op {
        Op::Input { name, .. } | Op::Param { name, .. } => {
            Err(format!("`{name}` is supplied by `run`, not computed"))
        }
        Op::Const(t) => Ok(t.clone()),
        Op::Unary(u) => Ok(unary::unary(*u, args[0])),
        Op::Binary(b) => binary::binary(*b, args[0], args[1]),
        Op::Compare(c) => binary::compare(*c, args[0], args[1]),
        Op::Select => binary::select(args[0], args[1], args[2]),
        Op::Cast { dtype } => Ok(unary::cast(args[0], *dtype)),
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => reduce::reduce(*op, args[0], axes, *keep_dims),
        Op::Softmax { axis } => reduce::softmax(args[0], *axis),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul::matmul(args[0], args[1], *transpose_a, *transpose_b),
        Op::RmsNorm { eps } => norm::rms_norm(args[0], args[1], *eps),
        Op::LayerNorm { eps } => norm::layer_norm(args[0], args[1], args[2], *eps),
        Op::Rope {
            layout,
            theta,
            rot_dims,
        } => rope::rope(args[0], args[1], *layout, *theta, *rot_dims),
        Op::Gather => layout::gather(args[0], args[1]),
        Op::Dequant { format } => layout::dequant(args[0], *format),
        Op::Quantize { format } => layout::quantize(args[0], *format),
        Op::Reshape { shape } => {
            let shape = concrete_shape(shape, bindings)?;
            layout::reshape(args[0], shape)
        }
        Op::Permute { perm } => layout::permute(args[0], perm),
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => layout::slice(args[0], *axis, *start, *end, *step),
        Op::Concat { axis } => layout::concat(args, *axis),
    }
}

/// Computes node `id` and checks the result against the node's declared type.
fn eval_node(
    g: &Graph,
    id: NodeId,
    values: &[Option<Tensor>],
    inputs: &BTreeMap<String, Tensor>,
    params: &dyn Fn(&str) -> Option<Tensor>,
    bindings: &Bindings,
) -> Result<Tensor, IrError> {
    let node = g.node(id);
    let at = |msg: String| interp(format!("node %{} ({}): {msg}", id.index(), node.op.name()));
    let expected = concrete_shape(&node.shape, bindings).map_err(at)?;
    let t = match &node.op {
        Op::Input { name, .. } => {
            let t = inputs
                .get(name)
                .ok_or_else(|| interp(format!("missing input `{name}`")))?;
            check_supplied("input", name, t, node.dtype, &node.shape, &expected)?;
            return Ok(t.clone());
        }
        Op::Param { name, .. } => {
            let t = params(name).ok_or_else(|| interp(format!("missing param `{name}`")))?;
            check_supplied("param", name, &t, node.dtype, &node.shape, &expected)?;
            return Ok(t);
        }
        op => {
            let args: Vec<&Tensor> = g
                .inputs(id)
                .into_iter()
                .map(|i| {
                    values[i.index()]
                        .as_ref()
                        .expect("operands are evaluated first")
                })
                .collect();
            eval_op(op, &args, bindings).map_err(at)?
        }
    };
    if t.dtype != node.dtype || t.shape != expected {
        return Err(at(format!(
            "computed {}, but the node is declared {} = {}",
            type_string(t.dtype, &t.shape),
            type_string_sym(node.dtype, &node.shape),
            type_string(node.dtype, &expected)
        )));
    }
    Ok(t)
}

fn check_supplied(
    kind: &str,
    name: &str,
    t: &Tensor,
    dtype: DType,
    declared: &[Dim],
    expected: &[usize],
) -> Result<(), IrError> {
    if t.dtype == dtype && t.shape == expected {
        return Ok(());
    }
    Err(interp(format!(
        "{kind} `{name}`: expected {} (declared {}), got {}",
        type_string(dtype, expected),
        type_string_sym(dtype, declared),
        type_string(t.dtype, &t.shape)
    )))
}

/// Nodes some output depends on.
fn live_nodes(g: &Graph) -> Vec<bool> {
    let mut live = vec![false; g.len()];
    let mut stack: Vec<NodeId> = g.outputs.iter().map(|(_, id)| *id).collect();
    while let Some(id) = stack.pop() {
        if !std::mem::replace(&mut live[id.index()], true) {
            stack.extend(g.inputs(id));
        }
    }
    live
}

fn lone_symbol(d: &Dim) -> Option<&str> {
    match d.terms.as_slice() {
        [(s, 1)] if d.constant == 0 => Some(s),
        _ => None,
    }
}

fn type_string(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(","))
}

fn type_string_sym(dtype: DType, shape: &[Dim]) -> String {
    format!("{dtype}{}", shape_to_string(shape))
}

/// Extents of `shape` under `env`; errors name the unbound symbol or the negative dim.
fn concrete_shape(shape: &[Dim], env: &Bindings) -> Result<Vec<usize>, String> {
    shape
        .iter()
        .map(|d| {
            let v = d
                .eval(env)
                .map_err(|sym| format!("unbound symbol `{sym}` in dim `{d}`"))?;
            usize::try_from(v).map_err(|_| format!("dim `{d}` evaluates to negative {v}"))
        })
        .collect()
}

fn interp(msg: String) -> IrError {
    IrError::Interp(msg)
}

#[cfg(test)]
mod tests;
