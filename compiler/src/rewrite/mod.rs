//! The e-graph rewrite pass: `Graph -> Graph`, the compiler's first stage.
//!
//! Model files spell many ops as primitives (softmax as exp/sub/max/sum/div, a transposed
//! weight as a permute feeding a matmul, gelu as a dozen arithmetic ops). This pass puts
//! the graph in an [egg](https://docs.rs/egg) e-graph, applies rules that state
//! equalities between graphs (algebraic identities, layout folding, recognition of fused
//! composites), and extracts the cheapest equivalent graph under [`KilnCost`]. Because an
//! e-graph keeps every form at once, the order in which rules fire cannot hide a better
//! graph the way a sequence of greedy passes can.
//!
//! The output graph has the inputs, params and named outputs of the input graph (same
//! names, same order, same types) and computes the same values up to rounding: a fused op
//! rounds once where its expansion rounded per step. Every rule is guarded by
//! [`conditions::keeps_type`], and the e-class analysis checks that merged classes agree on
//! type, so a faulty rule is reported as [`RewriteError::TypeConflict`], never a wrong
//! graph. Elementwise chains are left for the fusion stage downstream.
//!
//! The rules live by purpose in [`algebra`], [`layout`] and [`fusion_patterns`], with
//! their side conditions in [`conditions`]. [`lang`] is the e-graph language and [`attrs`]
//! how op attributes become leaf children; [`analysis`] holds each class's type and small
//! constant value (constant folding); [`cost`] picks what to extract and [`convert`] moves
//! graphs in and out of the e-graph.

/// `rule!(name; lhs => rhs if cond ...)`: egg's `rewrite!`, plus the guard that the
/// instantiated right side has the matched class's dtype and shape.
macro_rules! rule {
    ($name:expr; $lhs:literal => $rhs:literal $(if $cond:expr)*) => {
        egg::rewrite!($name; $lhs => $rhs $(if $cond)* if $crate::rewrite::conditions::keeps_type($rhs))
    };
}

pub mod algebra;
pub mod analysis;
pub mod attrs;
pub mod conditions;
pub mod convert;
pub mod cost;
pub mod fusion_patterns;
pub mod lang;
pub mod layout;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use analysis::{Facts, KilnGraph, TypeAnalysis};
pub use attrs::Attr;
pub use cost::KilnCost;
pub use lang::{Head, KilnLang, Source};

use egg::{Id, Language, Runner, StopReason};
use kiln_ir::{Graph, IrError};
use serde::Serialize;
use std::fmt;
use std::time::Duration;
use thiserror::Error;

/// One rewrite rule over kiln's e-graph language.
pub type Rule = egg::Rewrite<KilnLang, TypeAnalysis>;

/// Bounds on the e-graph run, shown in the compile report when one is hit.
#[derive(Clone, Debug, PartialEq)]
pub struct RewriteLimits {
    pub iter_limit: usize,
    pub node_limit: usize,
    pub time_limit: Duration,
}

impl Default for RewriteLimits {
    fn default() -> Self {
        RewriteLimits {
            iter_limit: 30,
            node_limit: 10_000,
            time_limit: Duration::from_secs(5),
        }
    }
}

/// What the pass did, for `kiln compile`'s report (its `Display` is one line).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RewriteReport {
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// `saturated`, or the limit that stopped the run.
    pub stop_reason: String,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Rules that changed the e-graph, with how often, in rule order.
    pub rules_applied: Vec<(String, usize)>,
}

impl fmt::Display for RewriteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rewrite: {} -> {} nodes; {} iteration(s), {}; e-graph {} nodes in {} classes",
            self.nodes_before,
            self.nodes_after,
            self.iterations,
            self.stop_reason,
            self.egraph_nodes,
            self.egraph_classes
        )?;
        for (i, (rule, n)) in self.rules_applied.iter().enumerate() {
            write!(f, "{} {rule} x{n}", if i == 0 { "; applied" } else { "," })?;
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum RewriteError {
    /// The extracted graph fails a shape rule or the verifier: a bug in a rule.
    #[error("rewrite: the extracted graph is invalid: {0}")]
    Rebuild(IrError),
    /// An e-class got two different types: a rule equated tensors of different types.
    #[error("rewrite: a rule equated different types: {0}")]
    TypeConflict(String),
    /// The extracted expression does not describe the input graph's interface.
    #[error("rewrite: extraction failed: {0}")]
    Extract(String),
}

/// Every rule the pass applies, by group.
pub fn rules() -> Vec<Rule> {
    let mut rules = algebra::rules();
    rules.extend(layout::rules());
    rules.extend(fusion_patterns::rules());
    rules
}

/// Rewrites `g` into the cheapest equivalent graph found within `limits`.
///
/// ```
/// use kiln_compiler::rewrite::{rewrite, RewriteLimits};
/// use kiln_ir::text::{parse, print};
///
/// let linear = parse(
///     r#"kir 1
///     %x  = input "x" f32[4,8]
///     %w  = param "w" f32[16,8]
///     %wt = permute %w perm=[1,0]
///     %y  = matmul %x, %wt transpose_a=false transpose_b=false
///     output "y" = %y
///     "#,
/// )?;
/// let (g, report) = rewrite(&linear, &RewriteLimits::default())?;
/// assert!(print(&g).contains("%2 = matmul %0, %1 transpose_a=false transpose_b=true"));
/// assert_eq!(report.rules_applied, [("matmul-transpose-b".to_string(), 1)]);
/// assert_eq!(report.stop_reason, "saturated");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn rewrite(g: &Graph, limits: &RewriteLimits) -> Result<(Graph, RewriteReport), RewriteError> {
    rewrite_with(g, &rules(), limits)
}

/// [`rewrite`] with a chosen rule set (tests run one group at a time).
pub fn rewrite_with(
    g: &Graph,
    rules: &[Rule],
    limits: &RewriteLimits,
) -> Result<(Graph, RewriteReport), RewriteError> {
    let (expr, expr_ids) = convert::to_recexpr(g);
    let mut egraph = KilnGraph::new(TypeAnalysis::default());
    let mut class_of: Vec<Id> = Vec::with_capacity(expr.len());
    for node in expr.as_ref() {
        let node = node.clone().map_children(|c| class_of[usize::from(c)]);
        class_of.push(egraph.add(node));
    }
    egraph.rebuild();
    let root = *class_of
        .last()
        .expect("to_recexpr always adds the outputs root");
    let graph_nodes: Vec<Id> = expr_ids.iter().map(|&i| class_of[usize::from(i)]).collect();

    let runner = Runner::default()
        .with_egraph(egraph)
        .with_iter_limit(limits.iter_limit)
        .with_node_limit(limits.node_limit)
        .with_time_limit(limits.time_limit)
        .run(rules);
    let rules_applied = applied(&runner, rules);
    if let Some(conflict) = runner.egraph.analysis.conflicts.first() {
        let fired: Vec<&str> = rules_applied.iter().map(|(r, _)| r.as_str()).collect();
        let msg = format!("{conflict}; rules that fired: {}", fired.join(", "));
        return Err(RewriteError::TypeConflict(msg));
    }
    let keep = convert::sources(g, &graph_nodes);
    let best = convert::extract(&runner.egraph, root, &keep, &graph_nodes);
    let out = convert::to_graph(&best, g)?;

    let report = RewriteReport {
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        stop_reason: stop_reason(runner.stop_reason.as_ref(), limits),
        nodes_before: g.len(),
        nodes_after: out.len(),
        rules_applied,
    };
    Ok((out, report))
}

fn stop_reason(reason: Option<&StopReason>, limits: &RewriteLimits) -> String {
    match reason {
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(size)) => {
            format!("node limit ({}; e-graph reached {size})", limits.node_limit)
        }
        Some(StopReason::TimeLimit(secs)) => {
            format!("time limit ({:?}; ran {secs:.3} s)", limits.time_limit)
        }
        Some(StopReason::Other(why)) => why.clone(),
        None => "not run".into(),
    }
}

fn applied(runner: &Runner<KilnLang, TypeAnalysis>, rules: &[Rule]) -> Vec<(String, usize)> {
    rules
        .iter()
        .filter_map(|r| {
            let n: usize = runner
                .iterations
                .iter()
                .filter_map(|it| it.applied.get(&r.name))
                .sum();
            (n > 0).then(|| (r.name.to_string(), n))
        })
        .collect()
}
