//! End-to-end tests of the pass with every rule: constant folding, a graph no rule
//! touches, limits on a deep MLP, and the error a type-changing rule produces.

use super::testing::{assert_same_values, build, check, kir, op_names};
use super::{rewrite, rewrite_with, rules, RewriteError, RewriteLimits, Rule};
use kiln_ir::text::print;
use kiln_ir::{Builder, DType, IrError, NodeId, Op, UnaryOp};
use std::time::Duration;

#[test]
fn constants_fold() {
    let report = check(
        &rules(),
        r#"
        %x      = input "x" f32[2,3]
        %c      = const f32[2,3] [0.5, -1.0, 2.0, 0.25, 0.0, -0.75]
        %two    = const f32[] [2.0]
        %scaled = mul %c, %two
        %e      = exp %scaled
        %ints   = const i32[3] [1, 2, 3]
        %floats = cast %ints dtype=f32
        %y      = add %x, %e
        %z      = add %y, %floats
        output "z" = %z
        "#,
        r#"
        %x = input "x" f32[2,3]
        %e = const f32[2,3] [2.7182817, 0.13533528, 54.59815, 1.6487212, 1.0, 0.22313017]
        %f = const f32[3] [1.0, 2.0, 3.0]
        %y = add %x, %e
        %z = add %y, %f
        output "z" = %z
        "#,
        0.0,
    );
    assert_eq!((report.nodes_before, report.nodes_after), (9, 5));
}

/// Every op kind at least once, with symbolic dims, in a graph no rule applies to.
const UNTOUCHED: &str = r#"
    %x      = input "x" f32[seq,4,8]
    %w      = param "w" f32[8]
    %unused = param "unused" f32[2]
    %pos    = input "pos" i32[seq]
    %roped  = rope %x, %pos layout=neox theta=10000.0 rot_dims=8
    %n      = rms_norm %roped, %w eps=1e-6
    %ln     = layer_norm %n, %w, %w eps=1e-5
    %sm     = softmax %ln axis=2
    %m      = matmul %sm, %ln transpose_a=false transpose_b=true
    %r      = reduce_sum %m axes=[2] keep_dims=false
    %cmp    = gt %r, %r
    %sel    = select %cmp, %r, %r
    %sl     = slice %sel axis=1 start=0 end=4 step=2
    %cat    = concat %sl, %sl axis=1
    %ids    = input "ids" i64[3]
    %table  = param "table" f32[10,8]
    %emb    = gather %table, %ids
    %half   = cast %emb dtype=bf16
    %p      = permute %half perm=[1,0]
    %flat   = reshape %p shape=[24]
    %g      = gelu_erf %m
    %mx     = max %g, %g
    %back   = reshape %cat shape=[seq,2,2]
    output "cat" = %cat
    output "flat" = %flat
    output "mx" = %mx
    output "back" = %back
"#;

#[test]
fn graph_without_matches_comes_back_identical() {
    let before = kir(UNTOUCHED);
    let (after, report) = rewrite(&before, &RewriteLimits::default()).unwrap();
    assert_eq!(print(&after), print(&before));
    assert_eq!(report.stop_reason, "saturated");
    assert!(
        report.rules_applied.is_empty(),
        "{:?}",
        report.rules_applied
    );
}

/// `layers` layers of `h = gelu(h @ w_i^T + b_i)`, each transpose and gelu spelled out.
fn mlp(layers: usize, width: usize) -> kiln_ir::Graph {
    build(|b| {
        let mut h = b.input("x", DType::F32, [2, width])?;
        for i in 0..layers {
            let w = b.param(&format!("w{i}"), DType::F32, [width, width])?;
            let bias = b.param(&format!("b{i}"), DType::F32, [width])?;
            let wt = b.permute(w, &[1, 0])?;
            let y = b.matmul(h, wt)?;
            let y = b.add(y, bias)?;
            h = gelu(b, y)?;
        }
        b.output("y", h);
        Ok(())
    })
}

fn gelu(b: &mut Builder, x: NodeId) -> Result<NodeId, IrError> {
    let [half, one, c, k] =
        [0.5, 1.0, (2.0 / std::f64::consts::PI).sqrt(), 0.044715].map(|v| b.scalar(DType::F32, v));
    let cube = b.mul(x, x)?;
    let cube = b.mul(cube, x)?;
    let inner = b.mul(k?, cube)?;
    let inner = b.add(x, inner)?;
    let inner = b.mul(c?, inner)?;
    let t = b.unary(UnaryOp::Tanh, inner)?;
    let t = b.add(one?, t)?;
    let hx = b.mul(half?, x)?;
    b.mul(hx, t)
}

#[test]
fn deep_mlp_fuses_within_limits() {
    let before = mlp(30, 16);
    let limits = RewriteLimits::default();
    let (after, report) = rewrite(&before, &limits).unwrap();
    let names = op_names(&after);
    assert_eq!(names.iter().filter(|n| **n == "gelu_tanh").count(), 30);
    assert!(
        !names.contains(&"permute") && !names.contains(&"tanh"),
        "{names:?}"
    );
    assert!(after.node_ids().all(|n| !matches!(
        after.node(n).op,
        Op::MatMul {
            transpose_b: false,
            ..
        }
    )));
    assert!(report.iterations <= limits.iter_limit);
    assert!(report.egraph_nodes <= limits.node_limit, "{report:?}");
    assert_eq!(report.stop_reason, "saturated");
    let line = report.to_string();
    assert!(
        line.contains("541 -> 151 nodes") && line.contains("gelu-tanh x30"),
        "{line}"
    );
    assert_eq!(report.nodes_after, 1 + 30 * 5);
    assert_same_values(&before, &after, 1e-4);
}

#[test]
fn tight_limits_stop_the_run_and_still_give_a_valid_graph() {
    let before = mlp(30, 8);
    let by_iterations = RewriteLimits {
        iter_limit: 1,
        ..RewriteLimits::default()
    };
    let (after, report) = rewrite(&before, &by_iterations).unwrap();
    assert_eq!(report.stop_reason, "iteration limit (1)");
    assert_eq!(report.iterations, 1);
    assert_same_values(&before, &after, 1e-4);

    let by_nodes = RewriteLimits {
        node_limit: 100,
        ..RewriteLimits::default()
    };
    let (_, report) = rewrite(&before, &by_nodes).unwrap();
    assert!(
        report
            .stop_reason
            .starts_with("node limit (100; e-graph reached"),
        "{}",
        report.stop_reason
    );

    let by_time = RewriteLimits {
        time_limit: Duration::ZERO,
        ..RewriteLimits::default()
    };
    let (_, report) = rewrite(&before, &by_time).unwrap();
    assert!(
        report.stop_reason.starts_with("time limit (0ns; ran"),
        "{}",
        report.stop_reason
    );
}

#[test]
fn a_rule_that_changes_type_is_an_error() {
    let bad: Rule = egg::rewrite!("drop-reduce"; "(reduce_sum ?x ?axes ?keep)" => "?x");
    let before = kir(r#"
        %x = input "x" f32[4,8]
        %s = reduce_sum %x axes=[1] keep_dims=false
        output "s" = %s
        "#);
    let err = rewrite_with(&before, &[bad], &RewriteLimits::default()).unwrap_err();
    assert!(matches!(err, RewriteError::TypeConflict(_)), "{err}");
    assert!(
        err.to_string().contains("rules that fired: drop-reduce"),
        "{err}"
    );
    assert!(
        err.to_string().contains("f32[4]") && err.to_string().contains("f32[4,8]"),
        "{err}"
    );
}

#[test]
fn every_rule_parses_and_names_are_unique() {
    let rules = rules();
    let mut names: Vec<String> = rules.iter().map(|r| r.name.to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), rules.len());
}
