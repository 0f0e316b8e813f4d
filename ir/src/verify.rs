//! Whole-graph checks beyond what `Graph::add` enforces per node: names are unique, outputs
//! exist, and stored types agree with the shape rules (for graphs rebuilt by passes).

use crate::error::IrError;
use crate::graph::Graph;
use crate::infer::infer;
use crate::op::Op;
use std::collections::BTreeSet;

pub fn verify(g: &Graph) -> Result<(), IrError> {
    let mut names = BTreeSet::new();
    for id in g.node_ids() {
        let node = g.node(id);
        let err = |msg: String| IrError::Node {
            node: id.index(),
            op: node.op.name(),
            msg,
        };
        if let Op::Input { name, .. } | Op::Param { name, .. } = &node.op {
            if !names.insert(name.clone()) {
                return Err(err(format!("name `{name}` is declared twice")));
            }
        }
        let inputs = g.inputs(id);
        if inputs.iter().any(|i| i.index() >= id.index()) {
            return Err(err("reads a node defined after it".into()));
        }
        let operands: Vec<_> = inputs
            .iter()
            .map(|&i| (g.node(i).dtype, &g.node(i).shape))
            .collect();
        let (dtype, shape) = infer(&node.op, &operands).map_err(err)?;
        if dtype != node.dtype || shape != node.shape {
            return Err(err("stored type differs from its shape rule".into()));
        }
    }
    if g.outputs.is_empty() {
        return Err(IrError::Graph("the graph has no outputs".into()));
    }
    let mut out_names = BTreeSet::new();
    for (name, id) in &g.outputs {
        if id.index() >= g.len() {
            return Err(IrError::Graph(format!(
                "output `{name}` refers to missing node %{}",
                id.index()
            )));
        }
        if !out_names.insert(name) {
            return Err(IrError::Graph(format!("output `{name}` is declared twice")));
        }
    }
    Ok(())
}
