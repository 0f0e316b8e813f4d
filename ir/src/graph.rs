//! The graph: a petgraph DAG of typed nodes. Edges run from operand to user and carry the
//! operand position, so an op's inputs are ordered without a second list to keep in sync.
//! Every node is typed when added (the shape rule runs in `add`), so a `Graph` that exists
//! is well-typed; `verify` re-checks that for graphs assembled by other means.

use crate::dim::Shape;
use crate::dtype::DType;
use crate::error::IrError;
use crate::infer::infer;
use crate::op::Op;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

pub type NodeId = NodeIndex<u32>;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub dtype: DType,
    pub shape: Shape,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub(crate) dag: DiGraph<Node, u32>,
    /// Named results, in the order the model returns them.
    pub outputs: Vec<(String, NodeId)>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a node after checking its operands against the op's shape rule.
    pub fn add(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId, IrError> {
        let node = self.dag.node_count();
        let operand_types: Vec<(DType, &Shape)> = inputs
            .iter()
            .map(|&i| {
                self.dag
                    .node_weight(i)
                    .map(|n| (n.dtype, &n.shape))
                    .ok_or_else(|| IrError::Node {
                        node,
                        op: op.name(),
                        msg: format!("operand %{} does not exist", i.index()),
                    })
            })
            .collect::<Result<_, _>>()?;
        let (dtype, shape) = infer(&op, &operand_types).map_err(|msg| IrError::Node {
            node,
            op: op.name(),
            msg,
        })?;
        let id = self.dag.add_node(Node { op, dtype, shape });
        for (pos, &i) in inputs.iter().enumerate() {
            self.dag.add_edge(i, id, pos as u32);
        }
        Ok(id)
    }

    pub fn set_output(&mut self, name: &str, node: NodeId) {
        self.outputs.push((name.to_string(), node));
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    pub fn len(&self) -> usize {
        self.dag.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.dag.node_count() == 0
    }

    /// Node ids in insertion order, which is a topological order: `add` only accepts
    /// operands that already exist.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dag.node_indices()
    }

    /// The operands of `id` in position order.
    pub fn inputs(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(u32, NodeId)> = self
            .dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort_unstable_by_key(|(pos, _)| *pos);
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// Whether the graph returns `id` (under any name).
    pub fn is_output(&self, id: NodeId) -> bool {
        self.outputs.iter().any(|(_, o)| *o == id)
    }

    /// Nodes that read `id` (once per use).
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        self.dag
            .edges_directed(id, Direction::Outgoing)
            .map(|e| e.target())
            .collect()
    }

    pub fn inputs_named(&self) -> Vec<(String, NodeId)> {
        self.filter_named(|op| matches!(op, Op::Input { .. }))
    }

    pub fn params_named(&self) -> Vec<(String, NodeId)> {
        self.filter_named(|op| matches!(op, Op::Param { .. }))
    }

    fn filter_named(&self, keep: impl Fn(&Op) -> bool) -> Vec<(String, NodeId)> {
        self.node_ids()
            .filter(|&n| keep(&self.dag[n].op))
            .map(|n| match &self.dag[n].op {
                Op::Input { name, .. } | Op::Param { name, .. } => (name.clone(), n),
                _ => unreachable!("filtered to named ops"),
            })
            .collect()
    }

    /// Every symbol used by any shape in the graph, sorted.
    pub fn symbols(&self) -> Vec<String> {
        let mut syms: Vec<String> = self
            .dag
            .node_weights()
            .flat_map(|n| n.shape.iter().flat_map(|d| d.symbols().map(str::to_string)))
            .collect();
        syms.sort();
        syms.dedup();
        syms
    }
}
