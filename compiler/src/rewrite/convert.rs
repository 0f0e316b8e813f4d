//! Between kiln graphs and egg expressions.
//!
//! [`to_recexpr`] writes a [`Graph`] as a [`RecExpr`] (one e-node per graph node, its
//! attributes as leaves, and a root `outputs` node listing the results in order).
//! [`extract`] reads the cheapest graph back out of a saturated e-graph, ordered so that a
//! graph no rule changed comes back in its original node order. [`to_graph`] rebuilds a
//! `Graph` through [`Builder`], which re-runs every shape rule: an extracted node that
//! fails one is a bug in a rule and comes back as an error naming that node.

use super::analysis::KilnGraph;
use super::attrs::Attr;
use super::cost::KilnCost;
use super::lang::{Head, KilnLang};
use super::RewriteError;
use egg::{Extractor, Id, Language, RecExpr};
use kiln_ir::{verify, Builder, Graph, NodeId, Op};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// `g` as an expression rooted at `outputs`, and the expression id of every graph node.
pub fn to_recexpr(g: &Graph) -> (RecExpr<KilnLang>, Vec<Id>) {
    let mut expr = RecExpr::default();
    let mut ids: Vec<Id> = Vec::with_capacity(g.len());
    for n in g.node_ids() {
        let operands: Vec<Id> = g.inputs(n).iter().map(|i| ids[i.index()]).collect();
        let node = KilnLang::encode(&g.node(n).op, &operands, &mut |leaf| expr.add(leaf));
        ids.push(expr.add(node));
    }
    let outputs = g.outputs.iter().map(|(_, n)| ids[n.index()]).collect();
    expr.add(KilnLang {
        head: Head::Outputs,
        children: outputs,
    });
    (expr, ids)
}

/// The cheapest expression for `root`, also holding the classes in `keep` (the input
/// graph's inputs and params, which the output graph declares even when unused).
///
/// `graph_nodes[i]` is the e-class of the input graph's node `%i`. Nodes are emitted in
/// topological order, choosing among the ready ones by the smallest input-graph index of
/// their class; classes the rules created sit right after their last operand.
pub fn extract(egraph: &KilnGraph, root: Id, keep: &[Id], graph_nodes: &[Id]) -> RecExpr<KilnLang> {
    let extractor = Extractor::new(egraph, KilnCost);
    let mut rank: HashMap<Id, usize> = HashMap::new();
    for (i, &id) in graph_nodes.iter().enumerate() {
        rank.entry(egraph.find(id)).or_insert(i);
    }

    // Depth-first over the chosen nodes, recording a post-order.
    let root = egraph.find(root);
    let mut chosen: HashMap<Id, KilnLang> = HashMap::new();
    let mut post: Vec<Id> = Vec::new();
    let mut stack: Vec<(Id, bool)> = keep
        .iter()
        .rev()
        .map(|&k| (egraph.find(k), false))
        .collect();
    stack.insert(0, (root, false));
    while let Some((class, expanded)) = stack.pop() {
        if expanded {
            post.push(class);
            continue;
        }
        if chosen.contains_key(&class) {
            continue;
        }
        let node = extractor
            .find_best_node(class)
            .clone()
            .map_children(|c| egraph.find(c));
        stack.push((class, true));
        stack.extend(
            node.children
                .iter()
                .rev()
                .filter(|c| !chosen.contains_key(c))
                .map(|&c| (c, false)),
        );
        chosen.insert(class, node);
    }

    // Sort keys: the input-graph index, or the last operand's index for new classes.
    let mut key: HashMap<Id, (usize, usize)> = HashMap::new();
    for (i, &class) in post.iter().enumerate() {
        let k = if class == root {
            (usize::MAX, 0)
        } else if let Some(&r) = rank.get(&class) {
            (r, 0)
        } else {
            let last = chosen[&class]
                .children
                .iter()
                .map(|c| key[c].0)
                .max()
                .unwrap_or(0);
            (last, i + 1)
        };
        key.insert(class, k);
    }

    // Kahn's algorithm, smallest key first.
    let mut waiting: HashMap<Id, usize> = HashMap::new();
    let mut users: HashMap<Id, Vec<Id>> = HashMap::new();
    for &class in &post {
        let mut children = chosen[&class].children.clone();
        children.sort_unstable();
        children.dedup();
        waiting.insert(class, children.len());
        for c in children {
            users.entry(c).or_default().push(class);
        }
    }
    let mut ready: BinaryHeap<Reverse<((usize, usize), Id)>> = post
        .iter()
        .filter(|c| waiting[c] == 0)
        .map(|&c| Reverse((key[&c], c)))
        .collect();
    let mut expr = RecExpr::default();
    let mut new_id: HashMap<Id, Id> = HashMap::new();
    while let Some(Reverse((_, class))) = ready.pop() {
        let node = chosen[&class].clone().map_children(|c| new_id[&c]);
        new_id.insert(class, expr.add(node));
        for &user in users.get(&class).map(Vec::as_slice).unwrap_or_default() {
            let w = waiting.get_mut(&user).expect("every user is chosen");
            *w -= 1;
            if *w == 0 {
                ready.push(Reverse((key[&user], user)));
            }
        }
    }
    expr
}

/// Rebuilds a graph from `expr`, naming its outputs as `original` names them.
pub fn to_graph(expr: &RecExpr<KilnLang>, original: &Graph) -> Result<Graph, RewriteError> {
    let mut b = Builder::new();
    let mut attrs: Vec<Option<Attr>> = Vec::with_capacity(expr.len());
    let mut nodes: Vec<Option<NodeId>> = Vec::with_capacity(expr.len());
    let mut outputs_seen = false;
    for node in expr.as_ref() {
        let attr = node.attr(|c| attrs[usize::from(c)].clone());
        let mut id = None;
        if attr.is_none() {
            let tensor = |c: &Id| {
                nodes[usize::from(*c)].ok_or(RewriteError::Extract(format!(
                    "`{node}` reads an attribute"
                )))
            };
            let operands = node
                .operands()
                .iter()
                .map(tensor)
                .collect::<Result<Vec<_>, _>>()?;
            if node.head == Head::Outputs {
                set_outputs(&mut b, &operands, original)?;
                outputs_seen = true;
            } else {
                let op = node
                    .decode(|c| attrs[usize::from(c)].clone())
                    .map_err(RewriteError::Extract)?;
                id = Some(b.op(op, &operands).map_err(RewriteError::Rebuild)?);
            }
        }
        attrs.push(attr);
        nodes.push(id);
    }
    if !outputs_seen {
        return Err(RewriteError::Extract(
            "the expression has no `outputs` root".into(),
        ));
    }
    let g = b.finish();
    verify(&g).map_err(RewriteError::Rebuild)?;
    let names = |v: Vec<(String, NodeId)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    if names(g.inputs_named()) != names(original.inputs_named())
        || names(g.params_named()) != names(original.params_named())
    {
        return Err(RewriteError::Extract("the inputs or params changed".into()));
    }
    Ok(g)
}

fn set_outputs(b: &mut Builder, operands: &[NodeId], original: &Graph) -> Result<(), RewriteError> {
    if operands.len() != original.outputs.len() {
        let (got, want) = (operands.len(), original.outputs.len());
        return Err(RewriteError::Extract(format!(
            "{got} outputs extracted, the graph has {want}"
        )));
    }
    for ((name, was), &now) in original.outputs.iter().zip(operands) {
        let (was, now_node) = (original.node(*was), b.graph.node(now));
        if (was.dtype, &was.shape) != (now_node.dtype, &now_node.shape) {
            return Err(RewriteError::Extract(format!(
                "output `{name}` changed type"
            )));
        }
        b.output(name, now);
    }
    Ok(())
}

/// The e-classes of the input graph's inputs and params, in node order.
pub fn sources(g: &Graph, graph_nodes: &[Id]) -> Vec<Id> {
    g.node_ids()
        .filter(|&n| matches!(g.node(n).op, Op::Input { .. } | Op::Param { .. }))
        .map(|n| graph_nodes[n.index()])
        .collect()
}
