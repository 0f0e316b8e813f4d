//! The op conformance suite: every op x dtype x shape, through the whole pipeline (compile,
//! code generation, artifact, runtime), against `kiln_ir::interp`.
//!
//! Shapes include size 1, odd sizes, sizes that do not divide the vector width or the
//! matmul tile, and broadcasts. The error measure is ggml's normalised mean squared error,
//! `sum((a - b)^2) / sum(b^2)`, with one bound per dtype. Every failing case is reported on
//! one line naming op, dtype, shape, backend and the error, and all cases run before the
//! test fails.

mod common;

use kiln::assemble::BackendChoice;
use kiln_ir::{
    BinaryOp, Builder, CmpOp, DType, Dim, Graph, IrError, NodeId, Op, QuantFormat, ReduceOp,
    RopeLayout, Tensor, UnaryOp,
};
use kiln_models::{Model, Weights};
use std::collections::BTreeMap;

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn bound(d: DType) -> f64 {
    match d {
        DType::F32 => 1e-9,
        DType::F16 => 1e-5,
        DType::BF16 => 3e-4,
        DType::I32 | DType::I64 | DType::U8 => 0.0,
    }
}

struct Case {
    name: String,
    graph: Graph,
    /// Inputs are filled with seeded values in `[-scale, scale]` (positive for `positive`).
    scale: f64,
    positive: bool,
    /// The NMSE bound when it is not the output dtype's (an operand's precision is lower).
    bound: Option<f64>,
}

type Build = dyn Fn(&mut Builder, DType) -> Result<NodeId, IrError>;

fn case(name: impl Into<String>, dtype: DType, build: &Build) -> Case {
    let mut b = Builder::new();
    let out = build(&mut b, dtype).unwrap_or_else(|e| panic!("building a conformance case: {e}"));
    b.output("y", out);
    Case {
        name: name.into(),
        graph: b.finish(),
        scale: 2.0,
        positive: false,
        bound: None,
    }
}

fn shapes() -> Vec<Vec<usize>> {
    vec![vec![1], vec![7], vec![3, 17], vec![2, 3, 33], vec![4, 64]]
}

fn unary_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for u in UnaryOp::ALL {
        for d in FLOATS {
            for s in shapes() {
                let s2 = s.clone();
                let mut c = case(format!("{} {d}{s:?}", u.name()), d, &move |b, d| {
                    let x = b.input("x", d, s2.as_slice())?;
                    b.unary(u, x)
                });
                c.positive = matches!(
                    u,
                    UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip
                );
                c.scale = if u == UnaryOp::Exp { 4.0 } else { 3.0 };
                out.push(c);
            }
        }
    }
    out
}

fn binary_cases() -> Vec<Case> {
    let pairs: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![5], vec![5]),
        (vec![3, 17], vec![17]),
        (vec![3, 1], vec![1, 9]),
        (vec![2, 3, 4], vec![3, 1]),
        (vec![1], vec![2, 33]),
    ];
    let mut out = Vec::new();
    for op in BinaryOp::ALL {
        for d in FLOATS {
            for (sa, sb) in pairs.clone() {
                let (a2, b2) = (sa.clone(), sb.clone());
                let mut c = case(
                    format!("{} {d}{sa:?}x{sb:?}", op.name()),
                    d,
                    &move |b, d| {
                        let x = b.input("a", d, a2.as_slice())?;
                        let y = b.input("b", d, b2.as_slice())?;
                        b.binary(op, x, y)
                    },
                );
                c.positive = matches!(op, BinaryOp::Div | BinaryOp::Pow);
                out.push(c);
            }
        }
    }
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        for d in [DType::I32, DType::I64] {
            out.push(case(
                format!("{} {d}[3,17]x[17]", op.name()),
                d,
                &move |b, d| {
                    let x = b.input("a", d, [3, 17])?;
                    let y = b.input("b", d, [17])?;
                    b.binary(op, x, y)
                },
            ));
        }
    }
    for c in CmpOp::ALL {
        for d in [DType::F32, DType::BF16, DType::I32] {
            out.push(case(
                format!("{} {d}[4,9]x[9]", c.name()),
                d,
                &move |b, d| {
                    let x = b.input("a", d, [4, 9])?;
                    let y = b.input("b", d, [9])?;
                    b.compare(c, x, y)
                },
            ));
        }
    }
    for d in FLOATS {
        out.push(case(format!("select {d}[3,5]"), d, &move |b, d| {
            let c = b.input("c", d, [3, 1])?;
            let x = b.input("a", d, [3, 5])?;
            let y = b.input("b", d, [5])?;
            b.select(c, x, y)
        }));
    }
    out
}

fn reduce_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for op in ReduceOp::ALL {
        for d in FLOATS {
            for (shape, axes, keep) in [
                (vec![7usize], vec![0usize], false),
                (vec![3, 17], vec![1], true),
                (vec![3, 17], vec![0], false),
                (vec![2, 5, 33], vec![1, 2], false),
                (vec![4, 100], vec![1], false),
            ] {
                let (s2, a2) = (shape.clone(), axes.clone());
                out.push(case(
                    format!("reduce_{} {d}{shape:?} axes {axes:?}", op.name()),
                    d,
                    &move |b, d| {
                        let x = b.input("x", d, s2.as_slice())?;
                        b.reduce(op, x, &a2, keep)
                    },
                ));
            }
        }
    }
    out
}

fn matmul_cases() -> Vec<Case> {
    let mut out = Vec::new();
    // The last two are wide enough that a grid point owns several column panels, with
    // the final block's panels partly and wholly past N.
    let dims: [(usize, usize, usize); 8] = [
        (1, 1, 1),
        (1, 64, 10),
        (3, 5, 7),
        (13, 33, 17),
        (6, 16, 32),
        (40, 300, 50),
        (9, 70, 600),
        (7, 300, 1100),
    ];
    for d in FLOATS {
        for (m, k, n) in dims {
            for (ta, tb) in [(false, false), (false, true), (true, false)] {
                let a_shape = if ta { [k, m] } else { [m, k] };
                let b_shape = if tb { [n, k] } else { [k, n] };
                out.push(case(
                    format!("matmul {d} m{m} k{k} n{n} ta{ta} tb{tb}"),
                    d,
                    &move |b, d| {
                        let x = b.input("a", d, a_shape)?;
                        let y = b.input("b", d, b_shape)?;
                        b.matmul_t(x, y, ta, tb)
                    },
                ));
            }
        }
        out.push(case(
            format!("batched matmul {d} [2,3,5,9]x[3,9,4]"),
            d,
            &move |b, d| {
                let x = b.input("a", d, [2, 3, 5, 9])?;
                let y = b.input("b", d, [3, 9, 4])?;
                b.matmul(x, y)
            },
        ));
        // Symbolic rows with B transposed get two kernels, picked at run time by the row
        // count: dot products for a few rows (t = 1), the general kernel for many (seq = 11).
        for rows in ["t", "seq"] {
            out.push(case(
                format!("matmul {d} symbolic [{rows},64]x[40,64]^T"),
                d,
                &move |b, d| {
                    let x = b.input("a", d, vec![Dim::sym(rows), Dim::from(64usize)])?;
                    let y = b.input("b", d, [40, 64])?;
                    b.matmul_t(x, y, false, true)
                },
            ));
        }
        // A projection read only by a rope of its heads (llama's queries and keys): the
        // few-row form stores the pairs rotated (`partition::RopeEpilogue`; GPUs give a
        // block two or four columns from 512 outputs), the many-row form leaves the
        // rotation to the rope's kernel.
        for rows in ["t", "seq"].into_iter().filter(|_| d == DType::F32) {
            out.push(case(
                format!("projection+rope {d} symbolic [{rows},32]x[1024,32]^T, 16 heads of 64"),
                d,
                &move |b, d| {
                    let x = b.input("a", d, vec![Dim::sym(rows), Dim::from(32usize)])?;
                    let w = b.input("b", d, [1024, 32])?;
                    let pos = b.input("pos", DType::I32, vec![Dim::sym(rows)])?;
                    let y = b.matmul_t(x, w, false, true)?;
                    let heads =
                        b.reshape(y, vec![Dim::sym(rows), 16usize.into(), 64usize.into()])?;
                    b.rope(heads, pos, RopeLayout::Interleaved, 10000.0, 48)
                },
            ));
        }
        // Shapes for GPU matrix units (half A times transposed half B, K a multiple of
        // 32): tiles partly past M and N, whole tiles, and a batch.
        // (300, 256, 260): several blocks of 128 x 128 along both, each partly filled at the
        // edge, and eight steps along K around a ring of three staged steps.
        for (m, k, n) in [(70, 96, 100), (128, 64, 64), (300, 256, 260)] {
            out.push(case(
                format!("matmul {d} m{m} k{k} n{n} tb (matrix unit shape)"),
                d,
                &move |b, d| {
                    let x = b.input("a", d, [m, k])?;
                    let y = b.input("b", d, [n, k])?;
                    b.matmul_t(x, y, false, true)
                },
            ));
        }
        // f32 activations against f16 weights (the F16 LLM projections): GPU matrix units
        // round the activations to f16, so the bound is f16's.
        if d == DType::F16 {
            for (m, k, n) in [(70, 96, 100), (200, 256, 300)] {
                let mut c = case(
                    format!("matmul f32 x f16 weights m{m} k{k} n{n} tb"),
                    DType::F32,
                    &move |b, _| {
                        let x = b.input("a", DType::F32, [m, k])?;
                        let w = b.input("w", DType::F16, [n, k])?;
                        let w = b.cast(w, DType::F32)?;
                        b.matmul_t(x, w, false, true)
                    },
                );
                c.bound = Some(bound(DType::F16));
                out.push(c);
            }
        }
        out.push(case(
            format!("batched matmul {d} [2,37,64]x[2,72,64]^T"),
            d,
            &move |b, d| {
                let x = b.input("a", d, [2, 37, 64])?;
                let y = b.input("b", d, [2, 72, 64])?;
                b.matmul_t(x, y, false, true)
            },
        ));
        out.push(case(
            format!("matmul {d} symbolic [seq,24]x[24,19]"),
            d,
            &move |b, d| {
                let x = b.input("a", d, vec![Dim::sym("seq"), Dim::from(24usize)])?;
                let y = b.input("b", d, [24, 19])?;
                b.matmul(x, y)
            },
        ));
    }
    out
}

fn composite_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for d in FLOATS {
        for shape in [vec![1usize, 1], vec![3, 17], vec![2, 4, 64], vec![5, 129]] {
            let last = *shape.last().unwrap();
            let (s1, s2, s3) = (shape.clone(), shape.clone(), shape.clone());
            out.push(case(format!("softmax {d}{shape:?}"), d, &move |b, d| {
                let x = b.input("x", d, s1.as_slice())?;
                b.softmax(x, s1.len() - 1)
            }));
            out.push(case(format!("rms_norm {d}{shape:?}"), d, &move |b, d| {
                let x = b.input("x", d, s2.as_slice())?;
                let w = b.input("w", d, [last])?;
                b.rms_norm(x, w, 1e-5)
            }));
            out.push(case(format!("layer_norm {d}{shape:?}"), d, &move |b, d| {
                let x = b.input("x", d, s3.as_slice())?;
                let w = b.input("w", d, [last])?;
                let bias = b.input("bias", d, [last])?;
                b.layer_norm(x, w, bias, 1e-5)
            }));
        }
        out.push(case(format!("softmax {d}[5,6] axis 0"), d, &move |b, d| {
            let x = b.input("x", d, [5, 6])?;
            b.softmax(x, 0)
        }));
        for layout in [RopeLayout::Interleaved, RopeLayout::Neox] {
            for (heads, hd, rot) in [(1usize, 2usize, 2usize), (3, 16, 16), (2, 12, 8)] {
                out.push(case(
                    format!("rope {} {d} h{heads} d{hd} rot{rot}", layout.name()),
                    d,
                    &move |b, d| {
                        let x = b.input("x", d, [5, heads, hd])?;
                        let pos = b.input("pos", DType::I32, [5])?;
                        b.rope(x, pos, layout, 10000.0, rot)
                    },
                ));
            }
        }
        out.push(case(
            format!("gather {d} [10,6] ids [2,3]"),
            d,
            &move |b, d| {
                let t = b.input("table", d, [10, 6])?;
                let ids = b.input("ids", DType::I32, [2, 3])?;
                b.gather(t, ids)
            },
        ));
        out.push(case(
            format!("reshape+permute {d} [2,3,4]->[6,4]^T"),
            d,
            &move |b, d| {
                let x = b.input("x", d, [2, 3, 4])?;
                let r = b.reshape(x, [6, 4])?;
                b.permute(r, &[1, 0])
            },
        ));
        out.push(case(
            format!("slice {d} [5,9] axis 1 1..8 step 3"),
            d,
            &move |b, d| {
                let x = b.input("x", d, [5, 9])?;
                b.slice(x, 1, 1, 8, 3)
            },
        ));
        out.push(case(
            format!("concat {d} [2,3]+[2,1]+[2,5] axis 1"),
            d,
            &move |b, d| {
                let x = b.input("a", d, [2, 3])?;
                let y = b.input("b", d, [2, 1])?;
                let z = b.input("c", d, [2, 5])?;
                b.concat(&[x, y, z], 1)
            },
        ));
        for to in DType::ALL.into_iter().filter(|&t| t != DType::U8) {
            out.push(case(format!("cast {d}->{to} [3,7]"), d, &move |b, d| {
                let x = b.input("x", d, [3, 7])?;
                b.cast(x, to)
            }));
        }
        out.push(case(
            format!("fused chain {d} silu(x*w+b)"),
            d,
            &move |b, d| {
                let x = b.input("x", d, [4, 37])?;
                let w = b.input("w", d, [37])?;
                let bias = b.input("b", d, [1])?;
                let m = b.mul(x, w)?;
                let a = b.add(m, bias)?;
                b.unary(UnaryOp::Silu, a)
            },
        ));
    }
    out
}

fn all_cases() -> Vec<Case> {
    let mut v = unary_cases();
    v.extend(binary_cases());
    v.extend(reduce_cases());
    v.extend(matmul_cases());
    v.extend(composite_cases());
    v.extend(quant_cases());
    v
}

/// Block-quantized weights (`u8` inputs named after their format) decoded by `dequant`,
/// alone and inlined into the ops that read weights: matvec and matmul (LLM projections,
/// B transposed) and gather (token embeddings).
fn quant_cases() -> Vec<Case> {
    let mut out = Vec::new();
    // The activation encoder, bit for bit (a u8 output: any difference fails).
    for (format, k) in [(QuantFormat::Q8_0, 96), (QuantFormat::Q8K, 512)] {
        out.push(case(
            format!("quantize {format} [3,{k}]"),
            DType::F32,
            &move |b, _| {
                let x = b.input("a", DType::F32, [3, k])?;
                b.op(Op::Quantize { format }, &[x])
            },
        ));
    }
    for format in QuantFormat::ALL.into_iter().chain(QuantFormat::RELAID) {
        let row = move |blocks: usize| blocks * format.block_bytes();
        let name = format.name();
        let be = format.block_elems();
        out.push(case(
            format!("dequant {name} [3,{}]", row(2)),
            DType::F32,
            &move |b, _| {
                let q = b.input(name, DType::U8, [3, row(2)])?;
                b.dequant(q, format)
            },
        ));
        for rows in ["t", "seq"] {
            out.push(case(
                format!("matmul {name} symbolic [{rows},{}] tb", 2 * be),
                DType::F32,
                &move |b, _| {
                    let x = b.input("a", DType::F32, vec![Dim::sym(rows), Dim::from(2 * be)])?;
                    let q = b.input(name, DType::U8, [24, row(2)])?;
                    let w = b.dequant(q, format)?;
                    b.matmul_t(x, w, false, true)
                },
            ));
        }
        // 8192 inputs: GPU decode steps take whole runs (`dequant::unit_of`).
        for (m, n, blocks) in [
            (1, 40, 2),
            (1, 7, 5),
            (5, 33, 3),
            (9, 70, 4),
            (1, 6, 8192 / be),
        ] {
            out.push(case(
                format!("matmul {name} m{m} k{} n{n} tb", blocks * be),
                DType::F32,
                &move |b, _| {
                    let x = b.input("a", DType::F32, [m, blocks * be])?;
                    let q = b.input(name, DType::U8, [n, row(blocks)])?;
                    let w = b.dequant(q, format)?;
                    b.matmul_t(x, w, false, true)
                },
            ));
        }
        // Activations quantized (what `--quantize-activations` makes of every projection:
        // q8_0, and q8_k for the K-quants): CPU targets multiply bytes by bytes here, one
        // row at a time for decode (`t`, 1 row; `few`, 4 rows, each on its own) and in tiles
        // of rows for prefill (`seq`, 11 rows: two whole tiles and a partial one; 9 known
        // rows).
        let k_quant = be == 256;
        for (xf, (rows, n, blocks)) in [QuantFormat::Q8_0, QuantFormat::Q8K]
            .into_iter()
            .filter(|&xf| xf == QuantFormat::Q8_0 || k_quant)
            .flat_map(|xf| {
                [
                    (Dim::sym("t"), 40, 2),
                    (Dim::sym("few"), 40, 2),
                    (Dim::sym("seq"), 40, 2),
                    (Dim::from(1i64), 7, 3),
                    (Dim::from(3i64), 9, 1),
                    (Dim::from(9i64), 9, 1),
                    // 8192 inputs: CUDA's byte dot steps read 32-byte runs
                    // (`gpu_byte_dot`, `word_runs`).
                    (Dim::from(1i64), 6, 8192 / be),
                ]
                .map(|c| (xf, c))
            })
        {
            out.push(case(
                format!("matmul {xf} x {name} [{rows},{}] n{n} tb", blocks * be),
                DType::F32,
                &move |b, _| {
                    let x = b.input("a", DType::F32, vec![rows.clone(), Dim::from(blocks * be)])?;
                    let xq = b.op(Op::Quantize { format: xf }, &[x])?;
                    let xq = b.dequant(xq, xf)?;
                    let q = b.input(name, DType::U8, [n, row(blocks)])?;
                    let w = b.dequant(q, format)?;
                    b.matmul_t(xq, w, false, true)
                },
            ));
        }
        out.push(case(
            format!("gather {name} embedding"),
            DType::F32,
            &move |b, _| {
                let q = b.input(name, DType::U8, [10, row(2)])?;
                let table = b.dequant(q, format)?;
                let ids = b.input("ids", DType::I64, [4])?;
                b.gather(table, ids)
            },
        ));
    }
    out
}

/// Valid blocks of `format`: f16 scales and mins of either sign, small and large, one
/// subnormal; arbitrary quant bytes.
fn quant_bytes(format: QuantFormat, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let raw = Tensor::seeded(DType::F32, vec![n], seed, 1.0);
    let mut bytes: Vec<f64> = raw
        .data
        .iter()
        .map(|v| ((v + 1.0) * 127.9).floor())
        .collect();
    for (i, block) in bytes.chunks_mut(format.block_bytes()).enumerate() {
        let d = match i % 4 {
            0 => half::f16::from_f32(0.0123),
            1 => half::f16::from_f32(-3.5),
            2 => half::f16::from_bits(0x0003), // subnormal
            _ => half::f16::from_f32(0.25 + i as f32 * 1e-3),
        };
        for (f, &at) in format.half_fields().iter().enumerate() {
            // A second field (a min) gets a different value than the scale.
            let v = if f == 0 {
                d
            } else {
                half::f16::from_f32(-0.5 * d.to_f32())
            };
            let [lo, hi] = v.to_le_bytes();
            block[at] = lo as f64;
            block[at + 1] = hi as f64;
        }
    }
    Tensor::new(DType::U8, shape.to_vec(), bytes)
}

/// Seeded inputs for every graph input; gather ids and rope positions get valid indices.
fn inputs_for(c: &Case) -> BTreeMap<String, Tensor> {
    let mut inputs = BTreeMap::new();
    for (k, (name, id)) in c.graph.inputs_named().into_iter().enumerate() {
        let n = c.graph.node(id);
        let shape: Vec<usize> = n
            .shape
            .iter()
            // Symbolic dims are 11, except `t`, which is 1 (a decode step's one token), and
            // `few`, which is 4 (a short prompt: the most rows the dot-product form takes).
            .map(|d| {
                d.as_known().unwrap_or(match d.to_string().as_str() {
                    "t" => 1,
                    "few" => 4,
                    _ => 11,
                }) as usize
            })
            .collect();
        let t = match (name.as_str(), n.dtype.is_int()) {
            (q, _) if QuantFormat::from_name(q).is_some() => quant_bytes(
                QuantFormat::from_name(q).expect("checked"),
                &shape,
                200 + k as u64,
            ),
            ("ids", _) => Tensor::new(
                n.dtype,
                shape.clone(),
                (0..shape.iter().product::<usize>())
                    .map(|i| ((i * 7) % 10) as f64)
                    .collect(),
            ),
            ("pos", _) => Tensor::new(
                n.dtype,
                shape.clone(),
                (0..shape[0]).map(|i| (i * 3 + 1) as f64).collect(),
            ),
            (_, true) => {
                let raw = Tensor::seeded(n.dtype, shape, 100 + k as u64, 50.0);
                let data = raw
                    .data
                    .iter()
                    .map(|&v| if v == 0.0 { 3.0 } else { v })
                    .collect();
                Tensor::new(n.dtype, raw.shape, data)
            }
            _ => {
                let t = Tensor::seeded(n.dtype, shape, 100 + k as u64, c.scale);
                if c.positive {
                    Tensor::new(
                        n.dtype,
                        t.shape.clone(),
                        t.data.iter().map(|v| v.abs() + 0.1).collect(),
                    )
                } else {
                    t
                }
            }
        };
        inputs.insert(name, t);
    }
    inputs
}

fn nmse(got: &Tensor, want: &Tensor) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (a, b) in got.data.iter().zip(&want.data) {
        if a.is_nan() && b.is_nan() || a == b {
            continue;
        }
        num += (a - b) * (a - b);
        den += b * b;
    }
    if num == 0.0 {
        0.0
    } else {
        num / den.max(1e-30)
    }
}

fn run_suite(backend: BackendChoice, target: &str) {
    let target = target.parse().unwrap();
    let cases = all_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let inputs = inputs_for(c);
        let env = kiln_ir::interp::infer_bindings(&c.graph, &inputs).unwrap();
        let want = kiln_ir::interp::run(&c.graph, &inputs, &|_| None, &env)
            .unwrap_or_else(|e| panic!("{}: interpreter: {e}", c.name));
        let model = Model {
            name: "case".into(),
            graph: c.graph.clone(),
            weights: Weights::default(),
            vocab: None,
        };
        let line = |msg: String| format!("{} | {backend:?} {target} | {msg}", c.name);
        match kiln::session::run_model(&model, &target, backend, &inputs) {
            Err(e) => failures.push(line(format!("error: {e:#}"))),
            Ok(got) => {
                let (g, w) = (&got["y"], &want["y"]);
                if g.shape != w.shape || g.dtype != w.dtype {
                    failures.push(line(format!(
                        "got {}{:?}, want {}{:?}",
                        g.dtype, g.shape, w.dtype, w.shape
                    )));
                    continue;
                }
                let e = nmse(g, w);
                let limit = c.bound.unwrap_or(bound(w.dtype));
                if e > limit || e.is_nan() {
                    let worst = g
                        .data
                        .iter()
                        .zip(&w.data)
                        .enumerate()
                        .max_by(|a, b| {
                            ((a.1 .0 - a.1 .1).abs()).total_cmp(&(b.1 .0 - b.1 .1).abs())
                        })
                        .map(|(i, (a, b))| format!("worst at {i}: {a} vs {b}"));
                    failures.push(line(format!(
                        "NMSE {e:.3e} > {:.0e} ({})",
                        limit,
                        worst.unwrap_or_default()
                    )));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} conformance cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} conformance cases passed on {backend:?} {target}",
        cases.len()
    );
}

#[cfg(feature = "llvm")]
#[test]
fn conformance_llvm_x86_64_v3() {
    run_suite(BackendChoice::Llvm, "cpu:x86-64-v3");
}

/// The host's own CPU: whatever it has beyond x86-64-v3 (AVX-512, VNNI byte dot products)
/// is what `kiln run` picks, so it runs the suite too.
#[cfg(feature = "llvm")]
#[test]
fn conformance_llvm_native() {
    run_suite(BackendChoice::Llvm, "cpu:native");
}

#[cfg(feature = "llvm")]
#[test]
fn conformance_llvm_x86_64_baseline() {
    run_suite(BackendChoice::Llvm, "cpu:x86-64");
}

#[cfg(feature = "cranelift")]
#[test]
fn conformance_cranelift() {
    run_suite(BackendChoice::Cranelift, "cpu:x86-64-v3");
}

/// The suite on the GPU, compiled for the device's own capability (skipped, saying why,
/// without one; see `common::cuda_target`).
/// Every case's SPIR-V module, for the oldest and the newest version kiln emits, passes the
/// Khronos validator (`spirv-val`); naga already checked each one when it was compiled.
/// Skipped, saying why, without `spirv-val` unless `KILN_REQUIRE_SPIRV_VAL` is set.
#[cfg(feature = "spirv")]
#[test]
fn every_case_passes_spirv_val() {
    use kiln_codegen::Backend;
    let probe = std::process::Command::new("spirv-val")
        .arg("--version")
        .output();
    if let Err(e) = probe {
        assert!(
            std::env::var_os("KILN_REQUIRE_SPIRV_VAL").is_none(),
            "KILN_REQUIRE_SPIRV_VAL is set but spirv-val cannot run: {e}"
        );
        eprintln!("skipped: spirv-val not runnable ({e}); install spirv-tools");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, c) in all_cases().iter().enumerate() {
        for (t, env) in [
            ("vulkan:spv1.3", "vulkan1.1"),
            ("vulkan:spv1.6", "vulkan1.3"),
        ] {
            let target: kiln_compiler::Target = t.parse().unwrap();
            let opts = kiln_compiler::pipeline::Options::default();
            let compiled = kiln_compiler::pipeline::compile(&c.graph, &target, &opts)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let code = kiln_codegen::spirv::SpirvBackend
                .compile(compiled.kernels(), &target)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let modules = kiln_runtime::vulkan::bundle::modules(&code)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            for (needs, module) in modules {
                let path = dir.path().join(format!("{i}-{env}-{needs}.spv"));
                std::fs::write(&path, module).unwrap();
                let out = std::process::Command::new("spirv-val")
                    .args(["--target-env", env])
                    .arg(&path)
                    .output()
                    .unwrap();
                checked += 1;
                if !out.status.success() {
                    failures.push(format!(
                        "{} ({t}, needs {needs}): {}{}",
                        c.name,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} modules fail spirv-val:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{checked} SPIR-V modules pass spirv-val");
}

/// The suite through the SPIR-V backend on a Vulkan device (Mesa's llvmpipe in CI;
/// skipped, saying why, without one).
#[test]
fn conformance_vulkan() {
    if let Some(target) = common::vulkan_target() {
        run_suite(BackendChoice::Llvm, &target);
    }
}

#[cfg(feature = "llvm")]
#[test]
fn conformance_cuda() {
    if let Some(target) = common::cuda_target() {
        run_suite(BackendChoice::Llvm, &target);
    }
}

/// The whole conformance kernel set compiles for every AMD target the HIP issue lists: one
/// code object per gfx holding every case's kernels, each an AMDGPU ELF for that gfx with a
/// kernel descriptor per kernel, which `llvm-objdump` disassembles without unknown
/// instructions. (Nothing runs them: there is no AMD GPU here; the CUDA and Vulkan runs
/// execute the same kernel IR.)
#[cfg(feature = "llvm")]
#[test]
fn every_case_compiles_for_every_listed_amd_target() {
    use kiln_codegen::Backend;
    use object::{Object, ObjectSymbol};
    const MACH: [(&str, u32); 9] = kiln_codegen::llvm::gpu::amdgpu::TESTED;
    let cases = all_cases();
    let kernels_for = |target: &kiln_compiler::Target| {
        let mut all = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let opts = kiln_compiler::pipeline::Options::default();
            let compiled = kiln_compiler::pipeline::compile(&c.graph, target, &opts)
                .unwrap_or_else(|e| panic!("{} ({target}): {e}", c.name));
            for k in compiled.kernels() {
                let mut k = k.clone();
                k.name = format!("c{i}_{}", k.name);
                all.push(k);
            }
        }
        all
    };
    let objdump = std::path::Path::new(
        &std::env::var_os("LLVM_SYS_191_PREFIX").unwrap_or("/usr/lib/llvm-19".into()),
    )
    .join("bin/llvm-objdump");
    let dir = tempfile::tempdir().unwrap();
    let check = |(gfx, mach): (&str, u32)| {
        let target: kiln_compiler::Target = format!("hip:{gfx}").parse().unwrap();
        let kernels = kernels_for(&target);
        let code = kiln_codegen::llvm::LlvmBackend
            .compile(&kernels, &target)
            .unwrap_or_else(|e| panic!("{gfx}: {e}"));
        let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&*code)
            .unwrap_or_else(|e| panic!("{gfx}: not an ELF file: {e}"));
        let e = elf.endian();
        assert_eq!(elf.elf_header().e_machine.get(e), object::elf::EM_AMDGPU);
        assert_eq!(elf.elf_header().e_flags.get(e) & 0xff, mach, "{gfx}");
        let symbols: std::collections::HashSet<String> = elf
            .symbols()
            .filter_map(|s| s.name().ok().map(String::from))
            .collect();
        for k in &kernels {
            assert!(
                symbols.contains(&format!("kiln_{}.kd", k.name)),
                "{gfx}: no kernel descriptor for {}",
                k.name
            );
        }
        let path = dir.path().join(format!("{gfx}.co"));
        std::fs::write(&path, &code).unwrap();
        let out = std::process::Command::new(&objdump)
            .args(["-d", &format!("--mcpu={gfx}")])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", objdump.display()));
        assert!(out.status.success(), "{gfx}: llvm-objdump failed");
        let asm = String::from_utf8_lossy(&out.stdout);
        assert!(
            !asm.contains("<unknown>"),
            "{gfx}: undecodable instructions"
        );
        kernels.len()
    };
    // Two targets at a time: LLVM's code generation is the cost, and contexts are per thread.
    let counts: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = MACH
            .chunks(5)
            .map(|chunk| s.spawn(move || chunk.iter().map(|&m| check(m)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    eprintln!(
        "{} conformance cases ({} kernels) compile for {} AMD targets",
        cases.len(),
        counts[0],
        MACH.len()
    );
}
