//! Shared test fixtures: graphs from `.kir` text or builder calls, a filetest-style
//! [`check`] (text in, text out), and the reference interpreter's verdict that the
//! rewritten graph computes what the original did.

use super::{rewrite_with, RewriteLimits, RewriteReport, Rule};
use kiln_ir::interp::{infer_bindings, run as interp};
use kiln_ir::text::{parse, print};
use kiln_ir::{Builder, Graph, IrError, Op, Tensor};
use std::collections::BTreeMap;

/// A graph from the body of a `.kir` file (the `kir 1` header is added).
pub fn kir(body: &str) -> Graph {
    parse(&format!("kir 1\n{body}")).unwrap_or_else(|e| panic!("{e} in\n{body}"))
}

/// Filetest: rewrites `before` with `rules`, asserts the printed result is `after` (both
/// `.kir` bodies; node names in `after` are free, printing renumbers them), and that the
/// interpreter gives the same outputs within `tol`.
#[track_caller]
pub fn check(rules: &[Rule], before: &str, after: &str, tol: f64) -> RewriteReport {
    let before = kir(before);
    let (got, report) = run(&before, rules);
    assert_eq!(
        print(&got),
        print(&kir(after)),
        "rules applied: {:?}",
        report.rules_applied
    );
    assert_same_values(&before, &got, tol);
    report
}

/// A graph from builder calls (which set the outputs themselves).
pub fn build(f: impl FnOnce(&mut Builder) -> Result<(), IrError>) -> Graph {
    let mut b = Builder::new();
    f(&mut b).expect("test graph is well-typed");
    b.finish()
}

/// Runs `rules` on `g` with the default limits, panicking on an error.
pub fn run(g: &Graph, rules: &[Rule]) -> (Graph, RewriteReport) {
    rewrite_with(g, rules, &RewriteLimits::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Op names of the nodes, in node order.
pub fn op_names(g: &Graph) -> Vec<&'static str> {
    g.node_ids().map(|n| g.node(n).op.name()).collect()
}

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, c| {
        (h ^ c as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs both graphs on the same seeded inputs and params and asserts every output agrees
/// within `tol`, relative to the output's largest magnitude (at least 1).
pub fn assert_same_values(before: &Graph, after: &Graph, tol: f64) {
    let mut inputs = BTreeMap::new();
    for (name, id) in before.inputs_named() {
        let node = before.node(id);
        let shape = node
            .shape
            .iter()
            .map(|d| d.as_known().expect("test inputs have known shapes") as usize)
            .collect();
        inputs.insert(
            name.clone(),
            Tensor::seeded(node.dtype, shape, seed_of(&name), 2.0),
        );
    }
    let params = |g: &Graph, name: &str| {
        let (_, id) = g.params_named().into_iter().find(|(n, _)| n == name)?;
        let node = g.node(id);
        let Op::Param { dtype, .. } = node.op else {
            return None;
        };
        let shape = node
            .shape
            .iter()
            .map(|d| d.as_known().map(|n| n as usize))
            .collect::<Option<_>>()?;
        Some(Tensor::seeded(dtype, shape, seed_of(name), 1.0))
    };
    let bindings = infer_bindings(before, &inputs).expect("bindings");
    let want =
        interp(before, &inputs, &|n| params(before, n), &bindings).expect("original graph runs");
    let got =
        interp(after, &inputs, &|n| params(after, n), &bindings).expect("rewritten graph runs");
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (name, w) in &want {
        let g = &got[name];
        assert_eq!((w.dtype, &w.shape), (g.dtype, &g.shape), "output `{name}`");
        let scale = w.data.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in w.data.iter().zip(&g.data).enumerate() {
            let close = (a - b).abs() <= tol * scale || (a.is_nan() && b.is_nan());
            assert!(
                close,
                "output `{name}`[{i}]: {a} before, {b} after (tolerance {tol})"
            );
        }
    }
}
