//! Kernel pass tests: a kernel before and after, compared as printed text.

use super::e::*;
use super::*;
use kiln_ir::DType;

fn kernel(body: Vec<Stmt>, next_var: VarId) -> Kernel {
    Kernel {
        name: "t".into(),
        args: vec![
            BufferParam {
                name: "x".into(),
                dtype: DType::F32,
                writes: false,
            },
            BufferParam {
                name: "y".into(),
                dtype: DType::F32,
                writes: true,
            },
        ],
        locals: vec![],
        grid: vec![],
        min_chunk: 1,
        body,
        cost: Default::default(),
        next_var,
    }
}

#[test]
fn map_loops_split_into_vector_body_and_scalar_tail() {
    let body = vec![Stmt::Loop {
        var: 0,
        extent: i(10),
        kind: LoopKind::Map,
        vector: 4,
        body: vec![Stmt::Store {
            buf: Buf::Arg(1),
            index: var(0),
            value: bin(BOp::Mul, load(Buf::Arg(0), var(0)), f(2.0)),
        }],
    }];
    let mut k = kernel(body, 1);
    vectorize::vectorize_kernel(&mut k);
    let text = k.to_string();
    let want = "\
kernel t(a0: f32* x, mut a1: f32* y) grid[] {
  Serial v1 in 0..2 {
    let v3 = (v1 * 4)
    a1[v3] = (a0[v3]x4 * splat4(2.0f))
  }
  Serial v2 in 0..2 {
    a1[(8 + v2)] = (a0[(8 + v2)] * 2.0f)
  }
}
";
    assert_eq!(text, want);
}

#[test]
fn strided_stores_stay_scalar() {
    let body = vec![Stmt::Loop {
        var: 0,
        extent: i(8),
        kind: LoopKind::Map,
        vector: 4,
        body: vec![Stmt::Store {
            buf: Buf::Arg(1),
            index: mul(var(0), i(2)),
            value: load(Buf::Arg(0), var(0)),
        }],
    }];
    let mut k = kernel(body.clone(), 1);
    vectorize::vectorize_kernel(&mut k);
    assert_eq!(
        k.body, body,
        "a scatter is left for the backend as a scalar loop"
    );
}

#[test]
fn strided_loads_become_lanes_and_broadcasts_stay_scalar() {
    let body = vec![Stmt::Loop {
        var: 0,
        extent: i(4),
        kind: LoopKind::Map,
        vector: 4,
        body: vec![Stmt::Store {
            buf: Buf::Arg(1),
            index: var(0),
            value: bin(
                BOp::Add,
                load(Buf::Arg(0), mul(var(0), i(3))),
                load(Buf::Arg(0), i(7)),
            ),
        }],
    }];
    let mut k = kernel(body, 1);
    vectorize::vectorize_kernel(&mut k);
    let text = k.to_string();
    assert!(
        text.contains("<a0[(v3 * 3)], a0[((v3 + 1) * 3)], a0[((v3 + 2) * 3)], a0[((v3 + 3) * 3)]>"),
        "{text}"
    );
    assert!(text.contains("splat4(a0[7])"), "{text}");
}

#[test]
fn transcendental_ops_leave_no_unary_calls_behind() {
    for op in [UOp::Exp, UOp::Log, UOp::Tanh, UOp::Erf, UOp::Sin, UOp::Cos] {
        let body = vec![Stmt::Store {
            buf: Buf::Arg(1),
            index: i(0),
            value: un(op, load(Buf::Arg(0), i(0))),
        }];
        let mut k = kernel(body, 0);
        math::expand_kernel(&mut k);
        let text = k.to_string();
        for name in ["exp(", "log(", "tanh(", "erf(", "sin(", "cos("] {
            assert!(!text.contains(name), "{op:?} left {name} in:\n{text}");
        }
    }
}

fn sum_over(acc: VarId, k: VarId, value: Expr) -> Stmt {
    Stmt::Reduce {
        acc,
        op: RedOp::Sum,
        var: k,
        extent: i(16),
        value,
        vector: 4,
    }
}

#[test]
fn independent_reductions_share_one_loop() {
    // Two dot products over the same extent, as a matvec grid point computes them.
    let body = vec![
        sum_over(0, 1, load(Buf::Arg(0), var(1))),
        sum_over(2, 3, load(Buf::Arg(0), add(var(3), i(16)))),
    ];
    let mut k = kernel(body, 4);
    vectorize::vectorize_kernel(&mut k);
    let text = k.to_string();
    let loops = text.matches("Serial").count();
    assert_eq!(loops, 2, "one main loop and one tail loop:\n{text}");
    assert!(
        text.contains("a0[(v4 * 8)]x4") && text.contains("a0[((v4 * 8) + 16)]x4"),
        "{text}"
    );
}

#[test]
fn a_reduction_reading_another_stays_after_it() {
    // A variance reads the mean: joining them would read the mean before it exists.
    let body = vec![
        sum_over(0, 1, load(Buf::Arg(0), var(1))),
        sum_over(2, 3, bin(BOp::Sub, load(Buf::Arg(0), var(3)), var(0))),
    ];
    let mut k = kernel(body, 4);
    vectorize::vectorize_kernel(&mut k);
    let text = k.to_string();
    assert_eq!(text.matches("Serial").count(), 4, "two loops each:\n{text}");
}

/// A prefetch placed before a reduction and read with its variable moves into the vector
/// loop (issued once per step, at the step's first element); one that does not read it
/// stays where it was.
#[test]
fn prefetches_of_a_reduction_run_at_each_vector_step() {
    let body = vec![
        Stmt::Prefetch {
            buf: Buf::Arg(0),
            index: add(i(64), var(0)),
        },
        Stmt::Prefetch {
            buf: Buf::Arg(0),
            index: i(128),
        },
        Stmt::Reduce {
            acc: 1,
            op: RedOp::Sum,
            var: 0,
            extent: i(16),
            value: load(Buf::Arg(0), var(0)),
            vector: 4,
        },
        Stmt::Store {
            buf: Buf::Arg(1),
            index: i(0),
            value: var(1),
        },
    ];
    let mut k = kernel(body, 2);
    vectorize::vectorize_kernel(&mut k);
    let text = k.to_string();
    let (before, loop_and_after) = text.split_once("Serial").expect("a vector loop");
    assert!(before.contains("prefetch a0[128]"), "{text}");
    assert!(!before.contains("prefetch a0[(64"), "{text}");
    let vector_loop = loop_and_after.split('}').next().unwrap();
    assert!(vector_loop.contains("prefetch a0[(64 + "), "{text}");
    assert_eq!(text.matches("prefetch").count(), 2, "{text}");
}

/// The plan's write list comes from the body: a store inside a branch of a loop counts, a
/// load does not, and a store to a local is no argument's.
#[test]
fn stored_args_are_found_in_nested_bodies() {
    let body = vec![Stmt::Loop {
        var: 0,
        extent: i(4),
        kind: LoopKind::Serial,
        vector: 1,
        body: vec![Stmt::If {
            cond: cmp(Cmp::Lt, var(0), i(2)),
            then: vec![Stmt::Store {
                buf: Buf::Local(0),
                index: var(0),
                value: load(Buf::Arg(0), var(0)),
            }],
            otherwise: vec![Stmt::Store {
                buf: Buf::Arg(1),
                index: var(0),
                value: f(1.0),
            }],
        }],
    }];
    assert_eq!(kernel(body, 1).stored_args(), [false, true]);
    assert_eq!(kernel(vec![], 0).stored_args(), [false, false]);
}
