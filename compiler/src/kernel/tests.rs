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
                offset: false,
            },
            BufferParam {
                name: "y".into(),
                dtype: DType::F32,
                writes: true,
                offset: false,
            },
        ],
        locals: vec![],
        grid: vec![],
        min_chunk: 1,
        block_threads: None,
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

/// Two dot products over the same extent, as a matvec grid point computes them: each gets
/// its own vector loop (four accumulators) and tail, one row read after the other.
#[test]
fn independent_reductions_run_one_after_another() {
    let body = vec![
        sum_over(0, 1, load(Buf::Arg(0), var(1))),
        sum_over(2, 3, load(Buf::Arg(0), add(var(3), i(16)))),
    ];
    let mut k = kernel(body, 4);
    vectorize::vectorize_kernel(&mut k);
    let text = k.to_string();
    assert_eq!(text.matches("Serial").count(), 4, "two loops each:\n{text}");
    let (first, second) = text
        .split_once("var v0 =")
        .expect("the first sum, then the second");
    assert!(first.contains("a0[(v4 * 16)]x4"), "{text}");
    assert!(
        first.contains("a0[((v4 * 16) + 12)]x4"),
        "four accumulators:\n{text}"
    );
    assert!(second.contains("a0[((v"), "{text}");
    assert!(
        !first.contains("+ 16)"),
        "the second row waits for the first:\n{text}"
    );
}

/// A prefetch stays where the kernel put it (byte dot products issue theirs inside their
/// own block loop).
#[test]
fn prefetches_stay_in_place() {
    let body = vec![
        Stmt::Prefetch {
            buf: Buf::Arg(0),
            index: i(128),
        },
        sum_over(0, 1, load(Buf::Arg(0), var(1))),
    ];
    let mut k = kernel(body, 2);
    vectorize::vectorize_kernel(&mut k);
    let text = k.to_string();
    let (before, _) = text.split_once("Serial").expect("a vector loop");
    assert!(before.contains("prefetch a0[128]"), "{text}");
    assert_eq!(text.matches("prefetch").count(), 1, "{text}");
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

/// A row read through a reshape (`[rows, 256]` seen as `[4, rows, 64]`: divisions and
/// remainders by 64) is a vector load when the lanes cannot cross a multiple of 64, and
/// still a gather of lanes when they can (a division by 6 here).
#[test]
fn reshaped_reads_stay_vector_loads_where_lanes_share_a_quotient() {
    let reshaped = |c: i64| {
        let e = add(mul(GridIdx(0), i(256)), var(0));
        add(
            mul(
                add(mul(div(e.clone(), i(c)), Expr::Dim(0)), GridIdx(0)),
                i(c),
            ),
            rem(e, i(c)),
        )
    };
    use Expr::GridIdx;
    for (c, vector) in [(64, true), (6, false)] {
        let body = vec![Stmt::Loop {
            var: 0,
            extent: i(256),
            kind: LoopKind::Map,
            vector: 16,
            body: vec![Stmt::Store {
                buf: Buf::Arg(1),
                index: add(mul(GridIdx(0), i(256)), var(0)),
                value: load(Buf::Arg(0), reshaped(c)),
            }],
        }];
        let mut k = kernel(body, 1);
        vectorize::vectorize_kernel(&mut k);
        let text = k.to_string();
        assert_eq!(text.contains("]x16"), vector, "divisor {c}:\n{text}");
        assert_eq!(text.contains("<a0["), !vector, "divisor {c}:\n{text}");
    }
}

/// An element computed from reads along `k` becomes vector arithmetic on vector loads
/// (`vectorize::as_lanes`): a normalised activation `x[r + k] * w[k]`, and a q8_0
/// activation, whose block scale at `k / 32` is the same for the run's lanes (splatted).
/// A strided read, a `let` or an `exp` is left to the caller, element by element.
#[test]
fn elements_computed_from_reads_along_k_become_vector_arithmetic() {
    use super::vectorize::as_lanes;
    let (k, start) = (7, var(8));
    let row = mul(Expr::GridIdx(0), i(2048));
    let normalised = mul(
        load(Buf::Arg(0), add(row.clone(), var(k))),
        load(Buf::Arg(1), var(k)),
    );
    assert_eq!(
        as_lanes(&normalised, k, &start, 4),
        Some(mul(
            load_vec(Buf::Arg(0), add(row.clone(), start.clone()), 4),
            load_vec(Buf::Arg(1), start.clone(), 4)
        ))
    );
    let block = |k: Expr| mul(bin(BOp::Div, k, i(32)), i(34));
    let quant = |k: Expr| {
        let at = add(block(k.clone()), add(i(2), bin(BOp::Rem, k, i(32))));
        cast(Elem::F32, load(Buf::Arg(2), at))
    };
    let scale = |k: Expr| un(UOp::HalfBits, word_le(Buf::Arg(2), block(k), 2));
    let q8 = mul(quant(var(k)), scale(var(k)));
    let vector_quants = cast(
        Elem::F32,
        load_vec(
            Buf::Arg(2),
            add(
                block(start.clone()),
                add(i(2), bin(BOp::Rem, start.clone(), i(32))),
            ),
            4,
        ),
    );
    assert_eq!(
        as_lanes(&q8, k, &start, 4),
        Some(mul(vector_quants, splat(scale(start.clone()), 4)))
    );
    assert_eq!(
        as_lanes(&load(Buf::Arg(0), mul(var(k), i(2))), k, &start, 4),
        None
    );
    let bound = let_in(9, load(Buf::Arg(0), var(k)), mul(var(9), var(9)));
    assert_eq!(as_lanes(&bound, k, &start, 4), None);
    let exp = un(UOp::Exp, load(Buf::Arg(0), var(k)));
    assert_eq!(as_lanes(&exp, k, &start, 4), None);
}
