//! Whole-graph tests of `run` and `infer_bindings`: binding, checking of supplied tensors,
//! liveness, and the error messages. Per-op semantics are tested beside each op family.

use super::*;
use crate::builder::Builder;
use crate::op::{BinaryOp, ReduceOp, UnaryOp};

fn f32s(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::new(DType::F32, shape.to_vec(), data.to_vec())
}

fn no_params(_: &str) -> Option<Tensor> {
    None
}

fn inputs(pairs: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    pairs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

fn interp_msg(e: IrError) -> String {
    match e {
        IrError::Interp(m) => m,
        other => panic!("expected an interpreter error, got {other:?}"),
    }
}

/// `y = relu(x @ w + b)`, `s = reduce_sum(y, axis 1)`, with `x: f32[seq, 2]`.
fn mlp() -> Graph {
    let mut b = Builder::new();
    let x = b
        .input("x", DType::F32, [Dim::sym("seq"), Dim::known(2)])
        .unwrap();
    let w = b.param("w", DType::F32, [2, 2]).unwrap();
    let bias = b.constant(f32s(&[2], &[0.5, -10.0])).unwrap();
    let xw = b.matmul(x, w).unwrap();
    let pre = b.add(xw, bias).unwrap();
    let y = b.unary(UnaryOp::Relu, pre).unwrap();
    let s = b.reduce(ReduceOp::Sum, y, &[1], false).unwrap();
    b.output("y", y);
    b.output("s", s);
    b.finish()
}

fn mlp_params(name: &str) -> Option<Tensor> {
    (name == "w").then(|| f32s(&[2, 2], &[1.0, 2.0, 3.0, 4.0]))
}

#[test]
fn runs_a_graph_with_symbolic_shapes() {
    let g = mlp();
    let ins = inputs(&[("x", f32s(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]))]);
    let env = infer_bindings(&g, &ins).unwrap();
    assert_eq!(env, Bindings::from([("seq".to_string(), 3)]));
    let out = run(&g, &ins, &mlp_params, &env).unwrap();
    // x @ w rows: (1, 2), (3, 4), (4, 6); + (0.5, -10); relu.
    assert_eq!(out["y"], f32s(&[3, 2], &[1.5, 0.0, 3.5, 0.0, 4.5, 0.0]));
    assert_eq!(out["s"], f32s(&[3], &[1.5, 3.5, 4.5]));
    assert_eq!(out.len(), 2);
}

#[test]
fn missing_input_and_param_are_named() {
    let g = mlp();
    let env = Bindings::from([("seq".to_string(), 1)]);
    let err = interp_msg(run(&g, &BTreeMap::new(), &mlp_params, &env).unwrap_err());
    assert_eq!(err, "missing input `x`");
    let ins = inputs(&[("x", f32s(&[1, 2], &[0.0, 0.0]))]);
    let err = interp_msg(run(&g, &ins, &no_params, &env).unwrap_err());
    assert_eq!(err, "missing param `w`");
}

#[test]
fn supplied_tensors_must_match_their_declaration() {
    let g = mlp();
    let env = Bindings::from([("seq".to_string(), 2)]);
    let wrong_dtype = inputs(&[("x", Tensor::zeros(DType::F16, vec![2, 2]))]);
    let err = interp_msg(run(&g, &wrong_dtype, &mlp_params, &env).unwrap_err());
    assert_eq!(
        err,
        "input `x`: expected f32[2,2] (declared f32[seq,2]), got f16[2,2]"
    );
    let wrong_shape = inputs(&[("x", Tensor::zeros(DType::F32, vec![3, 2]))]);
    let err = interp_msg(run(&g, &wrong_shape, &mlp_params, &env).unwrap_err());
    assert_eq!(
        err,
        "input `x`: expected f32[2,2] (declared f32[seq,2]), got f32[3,2]"
    );
    let bad_param = |_: &str| Some(Tensor::zeros(DType::F32, vec![2, 3]));
    let ok_x = inputs(&[("x", Tensor::zeros(DType::F32, vec![2, 2]))]);
    let err = interp_msg(run(&g, &ok_x, &bad_param, &env).unwrap_err());
    assert_eq!(
        err,
        "param `w`: expected f32[2,2] (declared f32[2,2]), got f32[2,3]"
    );
}

#[test]
fn unbound_symbol_is_named() {
    let g = mlp();
    let ins = inputs(&[("x", Tensor::zeros(DType::F32, vec![2, 2]))]);
    let err = interp_msg(run(&g, &ins, &mlp_params, &Bindings::new()).unwrap_err());
    assert!(err.contains("unbound symbol `seq`"), "{err}");
    assert!(err.contains("node %0 (input)"), "{err}");
}

#[test]
fn infer_bindings_rejects_inconsistent_inputs() {
    let mut b = Builder::new();
    let x = b
        .input("x", DType::F32, [Dim::sym("seq"), Dim::known(4)])
        .unwrap();
    let y = b
        .input("y", DType::F32, [Dim::sym("seq"), Dim::known(4)])
        .unwrap();
    let s = b.add(x, y).unwrap();
    b.output("s", s);
    let g = b.finish();
    let ins = inputs(&[
        ("x", Tensor::zeros(DType::F32, vec![3, 4])),
        ("y", Tensor::zeros(DType::F32, vec![5, 4])),
    ]);
    let err = interp_msg(infer_bindings(&g, &ins).unwrap_err());
    assert_eq!(
        err,
        "input `y` gives symbol `seq` = 5, but input `x` gave 3"
    );
    let ins = inputs(&[("x", Tensor::zeros(DType::F32, vec![3]))]);
    let err = interp_msg(infer_bindings(&g, &ins).unwrap_err());
    assert!(
        err.contains("input `x` is declared [seq,4], got shape [3] of rank 1"),
        "{err}"
    );
    // Missing inputs are left for `run` to report.
    assert_eq!(infer_bindings(&g, &BTreeMap::new()), Ok(Bindings::new()));
}

#[test]
fn only_nodes_an_output_needs_are_evaluated() {
    let mut b = Builder::new();
    let x = b.input("x", DType::I32, [2]).unwrap();
    let unused = b.param("never_loaded", DType::I32, [2]).unwrap();
    let _dead = b.add(x, unused).unwrap();
    let y = b.unary(UnaryOp::Neg, x).unwrap();
    b.output("y", y);
    b.output("same_y", y);
    let g = b.finish();
    let ins = inputs(&[("x", Tensor::new(DType::I32, vec![2], vec![1.0, -2.0]))]);
    let out = run(&g, &ins, &no_params, &Bindings::new()).unwrap();
    assert_eq!(out["y"].data, vec![-1.0, 2.0]);
    assert_eq!(out["same_y"], out["y"]);
}

#[test]
fn op_errors_name_the_node() {
    let mut b = Builder::new();
    let table = b.constant(f32s(&[3, 2], &[0.0; 6])).unwrap();
    let ids = b.input("ids", DType::I32, [Dim::sym("n")]).unwrap();
    let rows = b.gather(table, ids).unwrap();
    b.output("rows", rows);
    let g = b.finish();
    let ins = inputs(&[("ids", Tensor::new(DType::I32, vec![2], vec![2.0, 7.0]))]);
    let env = infer_bindings(&g, &ins).unwrap();
    let err = interp_msg(run(&g, &ins, &no_params, &env).unwrap_err());
    assert_eq!(
        err,
        "node %2 (gather): gather index 7 (ids element 1) out of range for table of 3 rows"
    );
}

#[test]
fn symbolic_reshape_uses_the_bindings() {
    let mut b = Builder::new();
    let seq = Dim::sym("seq");
    let x = b
        .input("x", DType::F32, [seq.clone(), Dim::known(3)])
        .unwrap();
    let r = b.reshape(x, vec![Dim::known(3), seq]).unwrap();
    let two = b.scalar(DType::F32, 2.0).unwrap();
    let y = b.binary(BinaryOp::Pow, r, two).unwrap();
    b.output("y", y);
    let g = b.finish();
    let ins = inputs(&[("x", f32s(&[2, 3], &[1.0, -2.0, 3.0, 0.5, 2.0, -1.0]))]);
    let out = run(&g, &ins, &no_params, &infer_bindings(&g, &ins).unwrap()).unwrap();
    assert_eq!(out["y"], f32s(&[3, 2], &[1.0, 4.0, 9.0, 0.25, 4.0, 1.0]));
}

#[test]
fn output_of_a_missing_node_is_an_error() {
    let mut g = mlp();
    g.set_output("ghost", NodeId::new(99));
    let ins = inputs(&[("x", Tensor::zeros(DType::F32, vec![1, 2]))]);
    let env = infer_bindings(&g, &ins).unwrap();
    let err = interp_msg(run(&g, &ins, &mlp_params, &env).unwrap_err());
    assert_eq!(err, "output `ghost` refers to missing node %99");
}

#[test]
fn eval_op_checks_operand_count_and_leaves() {
    let x = f32s(&[1], &[1.0]);
    let err = eval_op(&Op::Binary(BinaryOp::Add), &[&x], &Bindings::new()).unwrap_err();
    assert_eq!(err, "takes 2 operand(s), got 1");
    let input = Op::Input {
        name: "x".into(),
        dtype: DType::F32,
        shape: vec![],
    };
    assert!(eval_op(&input, &[], &Bindings::new())
        .unwrap_err()
        .contains("`x` is supplied by `run`"));
    assert_eq!(eval_op(&Op::Const(x.clone()), &[], &Bindings::new()), Ok(x));
}
