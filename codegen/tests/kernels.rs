//! Hand-built kernels run through each CPU backend: vectorised maps with remainders,
//! reductions, half-precision storage, the transcendental expansions, scratch buffers.
//! One suite, instantiated per backend by `backend_suite!`.

use kiln_codegen::Backend;
use kiln_compiler::kernel::e::*;
use kiln_compiler::kernel::{
    Buf, BufferParam, Cmp, Expr, Kernel, LocalBuf, LoopKind, RedOp, Stmt, UOp,
};
use kiln_compiler::pipeline::finish_kernel;
use kiln_ir::DType;

mod common;

/// Compiles `k` (after the standard kernel passes), runs every grid point, returns buffers.
fn run(
    backend: &dyn Backend,
    target: &str,
    mut k: Kernel,
    bufs: Vec<Vec<u8>>,
    dims: &[i64],
) -> Vec<Vec<u8>> {
    finish_kernel(&mut k);
    common::run_compiled(backend, target, &k, bufs, dims)
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn arg(name: &str, dtype: DType, writes: bool) -> BufferParam {
    BufferParam {
        name: name.into(),
        dtype,
        writes,
        offset: false,
    }
}

fn kernel(
    name: &str,
    args: Vec<BufferParam>,
    grid: Vec<Expr>,
    body: Vec<Stmt>,
    next_var: u32,
) -> Kernel {
    Kernel {
        name: name.into(),
        args,
        locals: vec![],
        grid,
        min_chunk: 1,
        block_threads: None,
        body,
        cost: Default::default(),
        next_var,
    }
}

/// out[r, j] = x[r, j] * y[j] + 1 over rows x n, vectorised with a remainder.
fn broadcast_fma(backend: &dyn Backend, target: &str, lanes: u8) {
    for n in [1i64, 3, 8, 17, 100] {
        let rows = 3;
        let j = 0;
        let idx = add(mul(Expr::GridIdx(0), Expr::Dim(0)), var(j));
        let value = fma(
            load(Buf::Arg(0), idx.clone()),
            load(Buf::Arg(1), var(j)),
            f(1.0),
        );
        let body = vec![Stmt::Loop {
            var: j,
            extent: Expr::Dim(0),
            kind: LoopKind::Map,
            vector: lanes,
            body: vec![Stmt::Store {
                buf: Buf::Arg(2),
                index: idx,
                value,
            }],
        }];
        let k = kernel(
            "bfma",
            vec![
                arg("x", DType::F32, false),
                arg("y", DType::F32, false),
                arg("o", DType::F32, true),
            ],
            vec![i(rows)],
            body,
            1,
        );
        let x: Vec<f32> = (0..rows * n).map(|v| v as f32 * 0.5 - 3.0).collect();
        let y: Vec<f32> = (0..n).map(|v| 1.0 + v as f32).collect();
        let out = run(
            backend,
            target,
            k,
            vec![bytes(&x), bytes(&y), vec![0; (rows * n * 4) as usize]],
            &[n],
        );
        let got = f32s(&out[2]);
        for r in 0..rows {
            for c in 0..n {
                let want = x[(r * n + c) as usize] * y[c as usize] + 1.0;
                assert_eq!(got[(r * n + c) as usize], want, "n={n} r={r} c={c}");
            }
        }
    }
}

fn reductions(backend: &dyn Backend, target: &str, lanes: u8) {
    for n in [1i64, 3, 17, 64, 1000] {
        let (r, s, m) = (0, 1, 2);
        let x = |v| load(Buf::Arg(0), var(v));
        let body = vec![
            Stmt::Reduce {
                acc: s,
                op: RedOp::Sum,
                var: r,
                extent: Expr::Dim(0),
                value: x(r),
                vector: lanes,
            },
            Stmt::Reduce {
                acc: m,
                op: RedOp::Max,
                var: 3,
                extent: Expr::Dim(0),
                value: x(3),
                vector: lanes,
            },
            Stmt::Store {
                buf: Buf::Arg(1),
                index: i(0),
                value: var(s),
            },
            Stmt::Store {
                buf: Buf::Arg(1),
                index: i(1),
                value: var(m),
            },
        ];
        let k = kernel(
            "red",
            vec![arg("x", DType::F32, false), arg("o", DType::F32, true)],
            vec![],
            body,
            4,
        );
        let xs: Vec<f32> = (0..n)
            .map(|v| ((v * 37 % 101) as f32) / 7.0 - 5.0)
            .collect();
        let out = f32s(&run(backend, target, k, vec![bytes(&xs), vec![0; 8]], &[n])[1]);
        let sum: f64 = xs.iter().map(|&v| v as f64).sum();
        let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            (out[0] as f64 - sum).abs() <= 1e-4 * (1.0 + sum.abs()),
            "n={n}: sum {} vs {sum}",
            out[0]
        );
        assert_eq!(out[1], max, "n={n}");
    }
}

/// Half types: f32 -> f16/bf16 store, then load back to f32, against the `half` crate.
fn half_storage(backend: &dyn Backend, target: &str, lanes: u8) {
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        65520.0,
        1e-5,
        6e-8,
        3.0e-8,
        1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.333_333,
        1.0 + 1.0 / 512.0,
        1.0 + 3.0 / 1024.0,
    ];
    let n = specials.len() as i64;
    for dtype in [DType::F16, DType::BF16] {
        let j = 0;
        let store = Stmt::Loop {
            var: j,
            extent: i(n),
            kind: LoopKind::Map,
            vector: lanes,
            body: vec![Stmt::Store {
                buf: Buf::Arg(1),
                index: var(j),
                value: load(Buf::Arg(0), var(j)),
            }],
        };
        let back = Stmt::Loop {
            var: 1,
            extent: i(n),
            kind: LoopKind::Map,
            vector: lanes,
            body: vec![Stmt::Store {
                buf: Buf::Arg(2),
                index: var(1),
                value: load(Buf::Arg(1), var(1)),
            }],
        };
        let k = kernel(
            "half",
            vec![
                arg("x", DType::F32, false),
                arg("h", dtype, true),
                arg("o", DType::F32, true),
            ],
            vec![],
            vec![store, back],
            2,
        );
        let out = run(
            backend,
            target,
            k,
            vec![
                bytes(&specials),
                vec![0; (n * 2) as usize],
                vec![0; (n * 4) as usize],
            ],
            &[],
        );
        for (l, (&x, h)) in specials.iter().zip(out[1].chunks_exact(2)).enumerate() {
            let bits = u16::from_le_bytes([h[0], h[1]]);
            let want = if dtype == DType::F16 {
                half::f16::from_f32(x).to_bits()
            } else {
                half::bf16::from_f32(x).to_bits()
            };
            if x.is_nan() {
                let back = if dtype == DType::F16 {
                    half::f16::from_bits(bits).is_nan()
                } else {
                    half::bf16::from_bits(bits).is_nan()
                };
                assert!(back, "{dtype} lane {l}: NaN stored as {bits:#06x}");
            } else {
                assert_eq!(
                    bits, want,
                    "{dtype} lane {l}: {x} stored as {bits:#06x}, want {want:#06x}"
                );
            }
        }
        let back = f32s(&out[2]);
        for (l, &x) in specials.iter().enumerate() {
            let want = if dtype == DType::F16 {
                half::f16::from_f32(x).to_f32()
            } else {
                half::bf16::from_f32(x).to_f32()
            };
            assert!(
                back[l] == want || (back[l].is_nan() && want.is_nan()),
                "{dtype} lane {l}: {x} read back as {}, want {want}",
                back[l]
            );
        }
    }
}

/// An f64 reference implementation of a unary op.
type Reference = fn(f64) -> f64;

/// The kernel::math expansions against f64 references.
fn transcendentals(backend: &dyn Backend, target: &str, lanes: u8) {
    let xs: Vec<f32> = (0..400).map(|v| (v as f32 - 200.0) * 0.137).collect();
    let n = xs.len() as i64;
    let cases: [(UOp, Reference, f64); 6] = [
        (UOp::Exp, f64::exp, 2e-6),
        (UOp::Tanh, f64::tanh, 2e-6),
        (UOp::Sin, f64::sin, 2e-6),
        (UOp::Cos, f64::cos, 2e-6),
        (UOp::Log, |x: f64| x.abs().ln(), 2e-6),
        (UOp::Erf, erf_ref, 3e-7),
    ];
    for (op, reference, tol) in cases {
        let j = 0;
        let x = load(Buf::Arg(0), var(j));
        let x = if op == UOp::Log { un(UOp::Abs, x) } else { x };
        let body = vec![Stmt::Loop {
            var: j,
            extent: i(n),
            kind: LoopKind::Map,
            vector: lanes,
            body: vec![Stmt::Store {
                buf: Buf::Arg(1),
                index: var(j),
                value: un(op, x),
            }],
        }];
        let k = kernel(
            "math",
            vec![arg("x", DType::F32, false), arg("o", DType::F32, true)],
            vec![],
            body,
            1,
        );
        let out = f32s(
            &run(
                backend,
                target,
                k,
                vec![bytes(&xs), vec![0; (n * 4) as usize]],
                &[],
            )[1],
        );
        for (&x, &y) in xs.iter().zip(&out) {
            let want = reference(x as f64);
            if (op == UOp::Exp && want > 1e38) || (want.is_infinite() && y as f64 == want) {
                continue;
            }
            let err = (y as f64 - want).abs() / want.abs().max(1.0);
            assert!(err <= tol, "{op:?}({x}) = {y}, want {want} (error {err:e})");
        }
    }
}

/// Abramowitz & Stegun 7.1.26 is what the kernels implement; compare to a precise erf.
fn erf_ref(x: f64) -> f64 {
    // Maclaurin series below 4 (about 1e-9 accurate there); beyond, erfc < 2e-8.
    if x.abs() >= 4.0 {
        return x.signum();
    }
    let mut term = x;
    let mut sum = x;
    for k in 1..120 {
        term *= -x * x / k as f64;
        sum += term / (2 * k + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// A scratch buffer, an `If`, a serial loop with a mutable variable and a select.
fn locals_and_control(backend: &dyn Backend, target: &str) {
    let (j, acc, q) = (0, 1, 2);
    let body = vec![
        Stmt::Loop {
            var: j,
            extent: i(8),
            kind: LoopKind::Serial,
            vector: 1,
            body: vec![Stmt::Store {
                buf: Buf::Local(0),
                index: var(j),
                value: cast(kiln_compiler::kernel::Elem::F32, var(j)),
            }],
        },
        Stmt::Decl {
            var: acc,
            init: f(0.0),
        },
        Stmt::Loop {
            var: q,
            extent: i(8),
            kind: LoopKind::Serial,
            vector: 1,
            body: vec![Stmt::If {
                cond: cmp(Cmp::Lt, var(q), Expr::Dim(0)),
                then: vec![Stmt::Assign {
                    var: acc,
                    value: add_f(var(acc), load(Buf::Local(0), var(q))),
                }],
                otherwise: vec![Stmt::Assign {
                    var: acc,
                    value: select(
                        cmp(Cmp::Gt, var(acc), f(100.0)),
                        var(acc),
                        add_f(var(acc), f(100.0)),
                    ),
                }],
            }],
        },
        Stmt::Store {
            buf: Buf::Arg(0),
            index: Expr::GridIdx(0),
            value: var(acc),
        },
    ];
    let mut k = kernel("ctl", vec![arg("o", DType::F32, true)], vec![i(2)], body, 3);
    k.locals.push(LocalBuf {
        shared: false,
        dtype: DType::F32,
        len: 8,
    });
    let out = f32s(&run(backend, target, k, vec![vec![0; 8]], &[5])[0]);
    // 0+1+2+3+4 = 10, then +100 once (110 > 100 afterwards): 110.
    assert_eq!(out, vec![110.0, 110.0]);
}

fn add_f(a: Expr, b: Expr) -> Expr {
    bin(kiln_compiler::kernel::BOp::Add, a, b)
}

macro_rules! backend_suite {
    ($modname:ident, $backend:expr, $target:expr, $lanes:expr) => {
        mod $modname {
            use super::*;
            #[test]
            fn broadcast_fma_with_remainders() {
                broadcast_fma(&$backend, $target, $lanes);
            }
            #[test]
            fn sum_and_max_reductions() {
                reductions(&$backend, $target, $lanes);
            }
            #[test]
            fn half_precision_storage() {
                half_storage(&$backend, $target, $lanes);
            }
            #[test]
            fn transcendental_expansions() {
                transcendentals(&$backend, $target, $lanes);
            }
            #[test]
            fn scratch_and_control_flow() {
                locals_and_control(&$backend, $target);
            }
        }
    };
}

#[cfg(feature = "llvm")]
backend_suite!(llvm_v3, kiln_codegen::llvm::LlvmBackend, "cpu:x86-64-v3", 8);
#[cfg(feature = "llvm")]
backend_suite!(
    llvm_baseline,
    kiln_codegen::llvm::LlvmBackend,
    "cpu:x86-64",
    4
);
#[cfg(feature = "llvm")]
backend_suite!(
    llvm_scalar,
    kiln_codegen::llvm::LlvmBackend,
    "cpu:x86-64-v2",
    1
);
#[cfg(feature = "cranelift")]
backend_suite!(
    cranelift_v3,
    kiln_codegen::cranelift::CraneliftBackend,
    "cpu:x86-64-v3",
    4
);
#[cfg(feature = "cranelift")]
backend_suite!(
    cranelift_baseline,
    kiln_codegen::cranelift::CraneliftBackend,
    "cpu:x86-64",
    4
);
#[cfg(feature = "cranelift")]
backend_suite!(
    cranelift_scalar,
    kiln_codegen::cranelift::CraneliftBackend,
    "cpu:x86-64-v2",
    1
);

/// `Expr::LaneSums` against sums computed here: the pairwise-add tree (four or eight
/// vectors whose runs are whole groups of four lanes, one run or two per vector) and the
/// one-by-one form for every other shape, on AVX2 and on baseline x86 (no `phaddd`).
#[cfg(feature = "llvm")]
#[test]
fn lane_sums_match_sums_lane_by_lane() {
    let backend = kiln_codegen::llvm::LlvmBackend;
    for target in ["cpu:x86-64-v3", "cpu:x86-64"] {
        for (n, lanes, groups) in [
            (4usize, 8u8, 1u8),
            (4, 8, 2),
            (4, 4, 1),
            (8, 8, 1),
            (8, 16, 2),
            (8, 16, 4),
            (3, 8, 1),
            (4, 6, 2),
        ] {
            let vectors: Vec<Expr> = (0..n)
                .map(|k| load_vec(Buf::Arg(0), i((k * lanes as usize) as i64), lanes))
                .collect();
            let body = vec![Stmt::Store {
                buf: Buf::Arg(1),
                index: i(0),
                value: Expr::LaneSums(vectors, groups),
            }];
            let k = kernel(
                "lane_sums",
                vec![arg("x", DType::I32, false), arg("o", DType::I32, true)],
                vec![],
                body,
                0,
            );
            let xs: Vec<i32> = (0..n * lanes as usize)
                .map(|v| (v as i32 * 7919) % 2001 - 1000)
                .collect();
            let x_bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
            let outs = n * groups as usize;
            let out = run(&backend, target, k, vec![x_bytes, vec![0; 4 * outs]], &[]);
            let got: Vec<i32> = out[1]
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let part = lanes as usize / groups as usize;
            let want: Vec<i32> = (0..groups as usize)
                .flat_map(|g| {
                    let xs = &xs;
                    (0..n).map(move |k| {
                        let start = k * lanes as usize + g * part;
                        xs[start..start + part].iter().sum::<i32>()
                    })
                })
                .collect();
            assert_eq!(
                got, want,
                "{target}: {n} vectors of {lanes} in {groups} runs"
            );
        }
    }
}

/// Whether this CPU runs `cpu:x86-64-v4` code.
fn host_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512cd")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Vector accumulators wider than the target's registers (16 f32 lanes on AVX2's 8, as a
/// K-quant decode's per-run sums would be): per point, over blocks, `acc += f32(m16 * s) *
/// d`, with `m16` picked pairwise from an 8-lane vector, reduced once at the end.
#[cfg(feature = "llvm")]
#[test]
fn wide_vector_accumulators_match_scalar_sums() {
    use kiln_compiler::kernel::{BOp, Elem};
    let backend = kiln_codegen::llvm::LlvmBackend;
    let (points, blocks) = (6usize, 5usize);
    for target in ["cpu:x86-64-v3", "cpu:x86-64", "cpu:x86-64-v4"] {
        if target == "cpu:x86-64-v4" && !host_has_avx512() {
            eprintln!("skipping {target}: this CPU lacks AVX-512 (F, BW, CD, DQ, VL)");
            continue;
        }
        let (acc, b, m) = (0, 1, 2);
        let block = add(mul(Expr::GridIdx(0), i(blocks as i64)), var(b));
        let m16 = Expr::Lanes(
            (0..16)
                .map(|k| Expr::Extract {
                    vector: Box::new(var(m)),
                    lane: (k / 2) as u8,
                })
                .collect(),
        );
        let body = vec![
            Stmt::Decl {
                var: acc,
                init: splat(f(0.0), 16),
            },
            Stmt::Loop {
                var: b,
                extent: i(blocks as i64),
                kind: LoopKind::Serial,
                vector: 1,
                body: vec![
                    Stmt::Let {
                        var: m,
                        value: load_vec(Buf::Arg(1), mul(block.clone(), i(8)), 8),
                    },
                    Stmt::Assign {
                        var: acc,
                        value: fma(
                            cast(
                                Elem::F32,
                                bin(
                                    BOp::Mul,
                                    m16,
                                    load_vec(Buf::Arg(0), mul(block.clone(), i(16)), 16),
                                ),
                            ),
                            splat(load(Buf::Arg(2), block.clone()), 16),
                            var(acc),
                        ),
                    },
                ],
            },
            Stmt::Store {
                buf: Buf::Arg(3),
                index: Expr::GridIdx(0),
                value: Expr::ReduceLanes(RedOp::Sum, Box::new(var(acc))),
            },
        ];
        let mut k = kernel(
            "wide",
            vec![
                arg("s", DType::I32, false),
                arg("m", DType::I32, false),
                arg("d", DType::F32, false),
                arg("o", DType::F32, true),
            ],
            vec![],
            body,
            3,
        );
        k.grid = vec![i(points as i64)];
        let s: Vec<i32> = (0..points * blocks * 16)
            .map(|v| (v as i32 * 7919) % 4001 - 2000)
            .collect();
        let ms: Vec<i32> = (0..points * blocks * 8)
            .map(|v| (v as i32 * 31) % 63)
            .collect();
        let d: Vec<f32> = (0..points * blocks)
            .map(|v| 0.01 + 0.001 * v as f32)
            .collect();
        let ints = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let out = run(
            &backend,
            target,
            k,
            vec![ints(&s), ints(&ms), bytes(&d), vec![0; 4 * points]],
            &[],
        );
        let got = f32s(&out[3]);
        for (p, &g) in got.iter().enumerate() {
            let mut want = 0.0f64;
            for blk in 0..blocks {
                let q = p * blocks + blk;
                for l in 0..16 {
                    want += (ms[q * 8 + l / 2] * s[q * 16 + l]) as f64 * d[q] as f64;
                }
            }
            assert!(
                (g as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{target} point {p}: {g} vs {want}"
            );
        }
    }
}
