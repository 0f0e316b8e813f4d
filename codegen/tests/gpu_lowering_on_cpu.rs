//! Kernels lowered for a GPU target, compiled for this CPU and run grid point by grid point:
//! the GPU lowering's arithmetic checked against the interpreter on a machine without a
//! GPU. A GPU-scheduled kernel is ordinary kernel IR (a block per point, its reductions
//! shared by the block's threads on the device, a serial loop here), so the CPU backend
//! computes what the device would, up to the order of the sums. What only the device can
//! check (launch shapes, shuffles, shared memory) stays with `scripts/gpu-check.sh`.
#![cfg(feature = "llvm")]

use kiln_compiler::kernel::Kernel;
use kiln_compiler::Target;
use kiln_ir::{DType, QuantFormat, Tensor};
use std::collections::BTreeMap;

mod common;

/// Runs `k`, compiled for `cpu:x86-64-v3`, over every grid point, one buffer per argument;
/// returns them after the run.
fn run_on_cpu(k: &Kernel, data: Vec<Vec<u8>>, dims: &[i64]) -> Vec<Vec<u8>> {
    common::run_compiled(
        &kiln_codegen::llvm::LlvmBackend,
        "cpu:x86-64-v3",
        k,
        data,
        dims,
    )
}

/// The single kernel `g` lowers to under `schedule`, run on this CPU with the graph's
/// inputs (`inputs`, by name, as bytes); the output's bytes.
fn run_lowered(
    g: &kiln_ir::Graph,
    schedule: &kiln_compiler::schedule::Schedule,
    inputs: &BTreeMap<String, Vec<u8>>,
    dims: &[i64],
) -> Vec<u8> {
    use kiln_compiler::lower::BufferKind;
    let mut lowered = kiln_compiler::lower::lower(g, *schedule).unwrap();
    assert!(!lowered.kernels.is_empty(), "a kernel");
    let names: Vec<String> = g.inputs_named().into_iter().map(|(n, _)| n).collect();
    let launch = &lowered.launches[0];
    let data: Vec<Vec<u8>> = launch
        .args
        .iter()
        .map(|&b| {
            let info = &lowered.buffers[b];
            match &info.kind {
                BufferKind::Input(j) => inputs[&names[*j]].clone(),
                BufferKind::Output(_) => {
                    let elems: i64 = info
                        .shape
                        .iter()
                        .map(|d| d.as_known().unwrap_or(dims[0]))
                        .product();
                    vec![0; elems as usize * info.dtype.size_bytes()]
                }
                other => panic!("a buffer of kind {other:?}"),
            }
        })
        .collect();
    let out = launch
        .args
        .iter()
        .position(|&b| matches!(lowered.buffers[b].kind, BufferKind::Output(_)))
        .expect("an output");
    let kernel = &mut lowered.kernels[0];
    kiln_compiler::pipeline::finish_kernel(kernel);
    run_on_cpu(kernel, data, dims).swap_remove(out)
}

/// The NMSE of the f32 outputs `got` (little-endian bytes) against `want`; not finite where
/// `want` is all zeros, which a test must not compare against.
fn nmse_of(got: &[u8], want: &[f64]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (g, w) in got.chunks_exact(4).zip(want) {
        let g = f32::from_le_bytes(g.try_into().unwrap()) as f64;
        err += (g - w).powi(2);
        norm += w.powi(2);
    }
    if norm > 0.0 {
        err / norm
    } else {
        f64::NAN
    }
}

/// Rows of `format` blocks with random quant bits and small, finite f16 scales.
fn quant_rows(format: QuantFormat, rows: usize, k: usize, seed: u64) -> Vec<u8> {
    let (be, bb) = (format.block_elems(), format.block_bytes());
    let raw = Tensor::seeded(DType::U8, vec![rows * k / be * bb], seed, 255.0);
    let mut bytes: Vec<u8> = raw.data.iter().map(|&v| v.abs() as u8).collect();
    for (n, block) in bytes.chunks_exact_mut(bb).enumerate() {
        for (j, &at) in format.half_fields().iter().enumerate() {
            let v = half::f16::from_f32(0.01 + 0.003 * ((n * 7 + j * 3) % 11) as f32);
            block[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    bytes
}

/// A decode matvec: `%x` (one row of `k` inputs, defined by the kir lines `x`) times `n`
/// rows of `format`'s blocks, input `w`, transposed, as output `y`.
fn matvec_graph(x: &str, n: usize, k: usize, format: QuantFormat) -> kiln_ir::Graph {
    let bb = format.block_bytes() * k / format.block_elems();
    let src = format!(
        "kir 1
{x}
%w = input \"w\" u8[{n},{bb}]
%d = dequant %w format={}
%y = matmul %x, %d transpose_a=false transpose_b=true
output \"y\" = %y
",
        format.name()
    );
    kiln_ir::text::parse(&src).unwrap()
}

/// Output `name` of `g` on `inputs`, as the interpreter computes it.
fn interpreted(g: &kiln_ir::Graph, inputs: &BTreeMap<String, Tensor>, name: &str) -> Tensor {
    let env = kiln_ir::interp::infer_bindings(g, inputs).unwrap();
    kiln_ir::interp::run(g, inputs, &|_| None, &env).unwrap()[name].clone()
}

/// A decode matvec (one row of activations against `n` rows of quantized weights) in every
/// format, lowered for CUDA (vector loads; 64 rows a block per output, 1024 four outputs a
/// block; at 8192 inputs the 4-bit formats' steps take nibble partners, `Step::split`) and
/// for Vulkan (byte by byte): its kernel's outputs match the interpreter's.
#[test]
fn gpu_quantized_matvecs_compute_what_the_interpreter_does() {
    for (target, n, k) in [
        ("cuda:sm_90", 64usize, 512usize),
        ("cuda:sm_90", 1024, 512),
        ("cuda:sm_90", 64, 8192),
        ("vulkan:spv1.3", 64, 512),
    ] {
        let t: Target = target.parse().unwrap();
        let schedule = kiln_compiler::pipeline::schedule_for(&t, &Default::default()).unwrap();
        for format in QuantFormat::ALL.into_iter().chain(QuantFormat::RELAID) {
            let bb = format.block_bytes() * k / format.block_elems();
            let g = matvec_graph(&format!("%x = input \"x\" f32[1,{k}]"), n, k, format);
            let x = Tensor::seeded(DType::F32, vec![1, k], 7, 1.0);
            let w_bytes = quant_rows(format, n, k, 11);
            let w = Tensor::new(
                DType::U8,
                vec![n, bb],
                w_bytes.iter().map(|&b| b as f64).collect(),
            );
            let inputs = BTreeMap::from([("x".to_string(), x.clone()), ("w".to_string(), w)]);
            let want = interpreted(&g, &inputs, "y");
            let x_bytes: Vec<u8> = x
                .data
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect();
            let bytes = BTreeMap::from([("x".to_string(), x_bytes), ("w".to_string(), w_bytes)]);
            let got = run_lowered(&g, &schedule, &bytes, &[0]);
            let nmse = nmse_of(&got, &want.data);
            assert!(
                nmse.is_finite(),
                "{target} {format:?}: the reference is all zeros"
            );
            assert!(nmse < 1e-10, "{target} {n} rows {format:?}: NMSE {nmse:e}");
        }
    }
}

/// A decode matvec over activations already in q8_0 blocks, lowered for CUDA, whose
/// schedule multiplies bytes by bytes (`lower::gpu_byte_dot`: `dp4a` there, the CPU's byte
/// dot products here): every format it takes, with steps of eight (512 inputs) and of
/// sixteen elements (8192), computes what the interpreter does.
#[test]
fn gpu_byte_dot_matvecs_compute_what_the_interpreter_does() {
    let n = 64usize;
    let t: Target = "cuda:sm_90".parse().unwrap();
    let schedule = kiln_compiler::pipeline::schedule_for(&t, &Default::default()).unwrap();
    assert!(schedule.byte_dot, "CUDA's schedule multiplies bytes");
    let mut formats = 0;
    for k in [512usize, 8192] {
        for format in QuantFormat::ALL.into_iter().chain(QuantFormat::RELAID) {
            if !kiln_compiler::lower::gpu_byte_dot_applies(format) {
                continue;
            }
            formats += 1;
            let bb = format.block_bytes() * k / format.block_elems();
            let xb = k / 32 * 34;
            let x = format!("%q = input \"q\" u8[1,{xb}]\n%x = dequant %q format=q8_0");
            let g = matvec_graph(&x, n, k, format);
            let (q_bytes, w_bytes) = (
                quant_rows(QuantFormat::Q8_0, 1, k, 5),
                quant_rows(format, n, k, 11),
            );
            let tensor = |shape: Vec<usize>, b: &[u8]| {
                Tensor::new(DType::U8, shape, b.iter().map(|&v| v as f64).collect())
            };
            let inputs = BTreeMap::from([
                ("q".to_string(), tensor(vec![1, xb], &q_bytes)),
                ("w".to_string(), tensor(vec![n, bb], &w_bytes)),
            ]);
            let want = interpreted(&g, &inputs, "y");
            let lowered = kiln_compiler::lower::lower(&g, schedule).unwrap();
            let text = lowered.kernels[0].to_string();
            assert!(
                text.contains("dot_"),
                "{format:?}: no byte dot product:\n{text}"
            );
            let bytes = BTreeMap::from([("q".to_string(), q_bytes), ("w".to_string(), w_bytes)]);
            let got = run_lowered(&g, &schedule, &bytes, &[0]);
            let nmse = nmse_of(&got, &want.data);
            assert!(nmse.is_finite(), "{format:?}: the reference is all zeros");
            assert!(nmse < 1e-10, "{k} inputs {format:?}: NMSE {nmse:e}");
        }
    }
    assert!(formats >= 16, "{formats} format cases");
}

/// A residual connection folded into the matmul before it (`partition::Residual`): the
/// decode form (one row, a block per four outputs) and the many-row form (a thread per
/// output) both store the products plus the addend, on CUDA's and Vulkan's schedules.
#[test]
fn gpu_matmuls_add_a_residual_as_they_store() {
    let (k, n) = (128usize, 96usize);
    for target in ["cuda:sm_90", "vulkan:spv1.3"] {
        let t: Target = target.parse().unwrap();
        let schedule = kiln_compiler::pipeline::schedule_for(&t, &Default::default()).unwrap();
        for rows in [1usize, 37] {
            let src = format!(
                "kir 1
%x = input \"x\" f32[{rows},{k}]
%h = input \"h\" f32[{rows},{n}]
%w = input \"w\" f32[{n},{k}]
%y = matmul %x, %w transpose_a=false transpose_b=true
%r = add %h, %y
output \"r\" = %r
"
            );
            let g = kiln_ir::text::parse(&src).unwrap();
            let inputs = BTreeMap::from([
                (
                    "x".to_string(),
                    Tensor::seeded(DType::F32, vec![rows, k], 3, 1.0),
                ),
                (
                    "h".to_string(),
                    Tensor::seeded(DType::F32, vec![rows, n], 5, 4.0),
                ),
                (
                    "w".to_string(),
                    Tensor::seeded(DType::F32, vec![n, k], 9, 1.0),
                ),
            ]);
            let want = interpreted(&g, &inputs, "r");
            let bytes = inputs
                .iter()
                .map(|(name, t)| {
                    let b: Vec<u8> = t
                        .data
                        .iter()
                        .flat_map(|&v| (v as f32).to_le_bytes())
                        .collect();
                    (name.clone(), b)
                })
                .collect();
            let got: Vec<f32> = run_lowered(&g, &schedule, &bytes, &[0])
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(got.len(), want.data.len());
            for (at, (g, w)) in got.iter().zip(&want.data).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{target} {rows} rows, element {at}: {g} against {w}"
                );
            }
        }
    }
}
