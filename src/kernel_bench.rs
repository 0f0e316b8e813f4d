//! Kernel benchmarks shared by `kiln bench` and `cargo bench`: each case is a one-op
//! graph compiled through the normal pipeline and timed through the runtime (kernel time
//! only, from the runtime's per-launch timings), next to a reference users would
//! otherwise pick and the machine's copy bandwidth.

use crate::assemble::BackendChoice;
use anyhow::Result;
use kiln_compiler::Target;
use kiln_ir::{Builder, DType, Dim, Graph, Tensor, UnaryOp};
use kiln_models::{Model, Weights};
use kiln_runtime::session::{HostBuffer, Session};
use std::time::{Duration, Instant};

/// What a case's figure measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
}

pub struct BenchCase {
    pub name: &'static str,
    pub shape: String,
    pub model: Model,
    pub inputs: Vec<Tensor>,
    pub work: Work,
}

fn model(name: &str, b: Builder, seed: u64) -> Model {
    let graph: Graph = b.finish();
    let weights = Weights::seeded_for(&graph, seed).expect("bench weights have known shapes");
    Model {
        name: name.into(),
        graph,
        weights,
        vocab: None,
    }
}

pub fn matmul(n: usize) -> BenchCase {
    let mut b = Builder::new();
    let x = b.input("a", DType::F32, [n, n]).expect("valid");
    let w = b.input("b", DType::F32, [n, n]).expect("valid");
    let y = b.matmul(x, w).expect("valid");
    b.output("c", y);
    let inputs = vec![
        Tensor::seeded(DType::F32, vec![n, n], 1, 1.0),
        Tensor::seeded(DType::F32, vec![n, n], 2, 1.0),
    ];
    BenchCase {
        name: "matmul f32",
        shape: format!("{n}x{n}x{n}"),
        model: model("matmul", b, 1),
        inputs,
        work: Work::Flops(2.0 * (n * n * n) as f64),
    }
}

/// `C = A B^T` of half matrices, A `[m, k]` and B stored `[n, k]` (the layout of LLM weights):
/// what GPU matrix units multiply (shape `m x k x n`).
pub fn matmul_half(m: usize, k: usize, n: usize, dtype: DType) -> BenchCase {
    let mut b = Builder::new();
    let x = b.input("a", dtype, [m, k]).expect("valid");
    let w = b.input("b", dtype, [n, k]).expect("valid");
    let y = b.matmul_t(x, w, false, true).expect("valid");
    b.output("c", y);
    let inputs = vec![
        Tensor::seeded(dtype, vec![m, k], 1, 1.0),
        Tensor::seeded(dtype, vec![n, k], 2, 1.0),
    ];
    BenchCase {
        name: if dtype == DType::BF16 {
            "matmul bf16 nt"
        } else {
            "matmul f16 nt"
        },
        shape: format!("{m}x{k}x{n}"),
        model: model("matmul", b, 1),
        inputs,
        work: Work::Flops(2.0 * (m * k * n) as f64),
    }
}

/// `y = W x` with W `[n, k]` stored as weights, as LLM decode reads it.
pub fn matvec(n: usize, k: usize) -> BenchCase {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, [1, k]).expect("valid");
    let w = b.param("w", DType::F32, [n, k]).expect("valid");
    let y = b.matmul_t(x, w, false, true).expect("valid");
    b.output("y", y);
    let inputs = vec![Tensor::seeded(DType::F32, vec![1, k], 3, 1.0)];
    BenchCase {
        name: "matvec f32",
        shape: format!("{n}x{k}"),
        model: model("matvec", b, 2),
        inputs,
        work: Work::Bytes((n * k * 4 + k * 4 + n * 4) as f64),
    }
}

/// `y = W x` with W `[n, k]` in a block-quantized format, decoded inside the kernel: the
/// bytes moved are the blocks', which is what decode speed depends on.
pub fn matvec_quant(n: usize, k: usize, format: kiln_ir::QuantFormat) -> BenchCase {
    quant_case(1, n, k, format, None)
}

/// `matvec_quant` with `x` quantized to q8_0 in the graph (`--quantize-activations`), so
/// the CPU multiplies bytes by bytes; the quantize kernel's time is included.
pub fn matvec_quant_x8(n: usize, k: usize, format: kiln_ir::QuantFormat) -> BenchCase {
    quant_case(1, n, k, format, Some(cpu_activations(format)))
}

/// `matvec_quant_x8` as GPUs quantize activations: q8_0 for every format
/// (`lower::gpu_byte_dot`).
pub fn matvec_quant_x8_gpu(n: usize, k: usize, format: kiln_ir::QuantFormat) -> BenchCase {
    quant_case(1, n, k, format, Some(kiln_ir::QuantFormat::Q8_0))
}

/// The activation format `--quantize-activations` chooses on CPUs: q8_k for the K-quants,
/// q8_0 for the others.
fn cpu_activations(format: kiln_ir::QuantFormat) -> kiln_ir::QuantFormat {
    if format.block_elems() == 256 {
        kiln_ir::QuantFormat::Q8K
    } else {
        kiln_ir::QuantFormat::Q8_0
    }
}

/// LLM prefill of `m` tokens through one projection: `m` rows of q8_0 activations times
/// `[n, k]` quantized weights (`--quantize-activations`), the CPU's tiled byte dot
/// products; counted in multiply-adds (2 flops each), the quantize kernel included.
pub fn prefill_quant_x8(m: usize, n: usize, k: usize, format: kiln_ir::QuantFormat) -> BenchCase {
    quant_case(m, n, k, format, Some(cpu_activations(format)))
}

fn quant_case(
    m: usize,
    n: usize,
    k: usize,
    format: kiln_ir::QuantFormat,
    x_format: Option<kiln_ir::QuantFormat>,
) -> BenchCase {
    use kiln_ir::QuantFormat as Q;
    let quantized_x = x_format.is_some();
    let mut b = Builder::new();
    let mut x = b.input("x", DType::F32, [m, k]).expect("valid");
    if let Some(xf) = x_format {
        let q = b
            .op(kiln_ir::Op::Quantize { format: xf }, &[x])
            .expect("valid");
        x = b.dequant(q, xf).expect("valid");
    }
    let row_bytes = k / format.block_elems() * format.block_bytes();
    let raw = b.param("w", DType::U8, [n, row_bytes]).expect("valid");
    let w = b.dequant(raw, format).expect("valid");
    let y = b.matmul_t(x, w, false, true).expect("valid");
    b.output("y", y);
    let inputs = vec![Tensor::seeded(DType::F32, vec![m, k], 3, 1.0)];
    let mut model = model("matvec", b, 2);
    // Valid blocks: small positive f16 scales (0x0a1e, about 0.0059), arbitrary quants.
    let halves = format.half_fields();
    let data: Vec<f64> = (0..n * row_bytes)
        .map(|i| {
            let j = i % format.block_bytes();
            if halves.contains(&j) {
                0x1e as f64
            } else if j > 0 && halves.contains(&(j - 1)) {
                0x0a as f64
            } else {
                ((i / format.block_bytes() * 31 + j * 17) % 256) as f64
            }
        })
        .collect();
    model
        .weights
        .insert("w", Tensor::new(DType::U8, vec![n, row_bytes], data));
    if m > 1 {
        return BenchCase {
            name: match format {
                Q::Q8_0 => "prefill q8_0 (q8 x)",
                Q::Q4_0 => "prefill q4_0 (q8 x)",
                Q::Q4_1 => "prefill q4_1 (q8 x)",
                Q::Q5_0 => "prefill q5_0 (q8 x)",
                Q::Q5_1 => "prefill q5_1 (q8 x)",
                Q::Q4K => "prefill q4_k (q8 x)",
                Q::Q5K => "prefill q5_k (q8 x)",
                Q::Q6K => "prefill q6_k (q8 x)",
                Q::Q4KX => "prefill q4_kx (q8 x)",
                Q::Q6KX => "prefill q6_kx (q8 x)",
                Q::Q8K => "prefill q8_k (q8 x)",
            },
            shape: format!("{m}x{k}x{n}"),
            model,
            inputs,
            work: Work::Flops(2.0 * (m * k * n) as f64),
        };
    }
    BenchCase {
        name: match (format, quantized_x) {
            (Q::Q8_0, false) => "matvec q8_0",
            (Q::Q4_0, false) => "matvec q4_0",
            (Q::Q4_1, false) => "matvec q4_1",
            (Q::Q5_0, false) => "matvec q5_0",
            (Q::Q5_1, false) => "matvec q5_1",
            (Q::Q4K, false) => "matvec q4_k",
            (Q::Q5K, false) => "matvec q5_k",
            (Q::Q6K, false) => "matvec q6_k",
            (Q::Q8_0, true) => "matvec q8_0 (q8 x)",
            (Q::Q4_0, true) => "matvec q4_0 (q8 x)",
            (Q::Q4_1, true) => "matvec q4_1 (q8 x)",
            (Q::Q5_0, true) => "matvec q5_0 (q8 x)",
            (Q::Q5_1, true) => "matvec q5_1 (q8 x)",
            (Q::Q4K, true) => "matvec q4_k (q8 x)",
            (Q::Q5K, true) => "matvec q5_k (q8 x)",
            (Q::Q6K, true) => "matvec q6_k (q8 x)",
            (Q::Q4KX, false) => "matvec q4_kx",
            (Q::Q6KX, false) => "matvec q6_kx",
            (Q::Q4KX, true) => "matvec q4_kx (q8 x)",
            (Q::Q6KX, true) => "matvec q6_kx (q8 x)",
            (Q::Q8K, false) => "matvec q8_k",
            (Q::Q8K, true) => "matvec q8_k (q8 x)",
        },
        shape: format!("{n}x{k}"),
        model,
        inputs,
        work: Work::Bytes((n * row_bytes + k * 4 + n * 4) as f64),
    }
}

pub fn softmax(rows: usize, cols: usize) -> BenchCase {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, [rows, cols]).expect("valid");
    let y = b.softmax(x, 1).expect("valid");
    b.output("y", y);
    let inputs = vec![Tensor::seeded(DType::F32, vec![rows, cols], 4, 3.0)];
    BenchCase {
        name: "softmax f32",
        shape: format!("{rows}x{cols}"),
        model: model("softmax", b, 3),
        inputs,
        work: Work::Bytes((rows * cols * 8) as f64),
    }
}

pub fn rms_norm(rows: usize, cols: usize) -> BenchCase {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, [rows, cols]).expect("valid");
    let w = b.param("w", DType::F32, [cols]).expect("valid");
    let y = b.rms_norm(x, w, 1e-5).expect("valid");
    b.output("y", y);
    let inputs = vec![Tensor::seeded(DType::F32, vec![rows, cols], 5, 3.0)];
    BenchCase {
        name: "rms_norm f32",
        shape: format!("{rows}x{cols}"),
        model: model("rms_norm", b, 4),
        inputs,
        work: Work::Bytes((rows * cols * 8) as f64),
    }
}

/// `y = -x` over `n` f32s: a copy's traffic (each element read once, written once) through
/// the device's compute units. On Vulkan the API's own copy may take another path:
/// `vkCmdCopyBuffer` read 848 GB/s on an H100 whose compute shaders read 900 (2026-12-07),
/// so bandwidth-bound kernels there are judged against the faster of the two.
pub fn copy_kernel(n: usize) -> BenchCase {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![Dim::from(n)]).expect("valid");
    let y = b.unary(UnaryOp::Neg, x).expect("valid");
    b.output("y", y);
    BenchCase {
        name: "copy f32",
        shape: format!("{n}"),
        model: model("copy", b, 7),
        inputs: vec![Tensor::seeded(DType::F32, vec![n], 7, 1.0)],
        work: Work::Bytes((n * 8) as f64),
    }
}

/// `silu(x * w + b) * x`: four elementwise ops, one fused kernel.
pub fn elementwise_chain(n: usize) -> BenchCase {
    let mut b = Builder::new();
    let x = b
        .input("x", DType::F32, vec![Dim::sym("rows"), Dim::from(n)])
        .expect("valid");
    let w = b.param("w", DType::F32, [n]).expect("valid");
    let bias = b.param("b", DType::F32, [n]).expect("valid");
    let m = b.mul(x, w).expect("valid");
    let a = b.add(m, bias).expect("valid");
    let s = b.unary(UnaryOp::Silu, a).expect("valid");
    let y = b.mul(s, x).expect("valid");
    b.output("y", y);
    let rows = 1024;
    let inputs = vec![Tensor::seeded(DType::F32, vec![rows, n], 6, 2.0)];
    BenchCase {
        name: "fused chain f32",
        shape: format!("{rows}x{n}"),
        model: model("chain", b, 5),
        inputs,
        work: Work::Bytes((rows * n * 8) as f64),
    }
}

pub fn default_cases(quick: bool) -> Vec<BenchCase> {
    let mut v = vec![matmul(256), matmul(1024)];
    if !quick {
        v.push(matmul(2048));
    }
    v.extend([
        matvec(4096, 4096),
        matvec_quant(4096, 4096, kiln_ir::QuantFormat::Q8_0),
        matvec_quant_x8(4096, 4096, kiln_ir::QuantFormat::Q8_0),
        matvec_quant(4096, 4096, kiln_ir::QuantFormat::Q4_0),
        matvec_quant_x8(4096, 4096, kiln_ir::QuantFormat::Q4_0),
        matvec_quant(4096, 4096, kiln_ir::QuantFormat::Q5_0),
        matvec_quant_x8(4096, 4096, kiln_ir::QuantFormat::Q5_0),
        matvec_quant(4096, 4096, kiln_ir::QuantFormat::Q4K),
        matvec_quant_x8(4096, 4096, kiln_ir::QuantFormat::Q4K),
        matvec_quant(4096, 4096, kiln_ir::QuantFormat::Q6K),
        matvec_quant_x8(4096, 4096, kiln_ir::QuantFormat::Q6K),
        // A 1B llama's prefill of 128 tokens through its MLP's up projection.
        prefill_quant_x8(128, 5632, 2048, kiln_ir::QuantFormat::Q8_0),
        prefill_quant_x8(128, 5632, 2048, kiln_ir::QuantFormat::Q4K),
        prefill_quant_x8(128, 5632, 2048, kiln_ir::QuantFormat::Q6K),
        // And through its down projection: K long (22 K-quant blocks a row), N short.
        prefill_quant_x8(128, 2048, 5632, kiln_ir::QuantFormat::Q4K),
        prefill_quant_x8(128, 2048, 5632, kiln_ir::QuantFormat::Q6K),
        softmax(1024, 4096),
        rms_norm(1024, 4096),
        elementwise_chain(4096),
    ]);
    v
}

/// Cases for GPU targets: sizes that fill the device, and bandwidth-bound cases whose data
/// (64-256 MiB) is larger than the GPU's L2, so they measure memory, not cache.
pub fn gpu_cases(quick: bool) -> Vec<BenchCase> {
    let mut v = vec![matmul(1024), matmul_half(1024, 1024, 1024, DType::F16)];
    if !quick {
        v.extend([
            matmul(4096),
            matmul_half(4096, 4096, 4096, DType::F16),
            matmul_half(4096, 4096, 4096, DType::BF16),
            // A 1B llama's prefill of 512 tokens through its MLP's up projection.
            matmul_half(512, 2048, 5632, DType::F16),
        ]);
    }
    v.extend([
        matvec(4096, 4096),
        matvec(8192, 8192),
        matvec_quant(8192, 8192, kiln_ir::QuantFormat::Q8_0),
        matvec_quant(8192, 8192, kiln_ir::QuantFormat::Q4_0),
        matvec_quant(8192, 8192, kiln_ir::QuantFormat::Q4K),
        matvec_quant(8192, 8192, kiln_ir::QuantFormat::Q6K),
        // Activations quantized first (`--quantize-activations`): CUDA multiplies bytes
        // by bytes (`dp4a`); the quantize kernel's time is counted.
        matvec_quant_x8_gpu(8192, 8192, kiln_ir::QuantFormat::Q8_0),
        matvec_quant_x8_gpu(8192, 8192, kiln_ir::QuantFormat::Q4K),
        softmax(4096, 4096),
        rms_norm(4096, 4096),
        elementwise_chain(8192),
    ]);
    v
}

/// A case compiled and loaded, ready to time.
pub struct Prepared {
    session: Session,
    inputs: Vec<HostBuffer>,
    _dir: tempfile::TempDir,
}

impl Prepared {
    pub fn new(
        case: &BenchCase,
        target: &Target,
        backend: BackendChoice,
        threads: usize,
    ) -> Result<Prepared> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bench.kiln");
        crate::session::compile_to(&case.model, std::slice::from_ref(target), backend, &path)?;
        let mut session = Session::new(&path, Some(threads))?;
        let inputs: Vec<HostBuffer> = case.inputs.iter().map(HostBuffer::from).collect();
        session.run(&inputs)?;
        Ok(Prepared {
            session,
            inputs,
            _dir: dir,
        })
    }

    /// Kernel time of one run (input copies and output allocation excluded), or the whole
    /// run's time on a device that cannot time kernels (a Vulkan queue without timestamps).
    pub fn kernel_time(&mut self) -> Result<Duration> {
        let t0 = std::time::Instant::now();
        let (_, t) = self.session.run_profiled(&self.inputs)?;
        if t.is_empty() {
            return Ok(t0.elapsed());
        }
        Ok(t.iter().map(|l| l.duration).sum())
    }
}

/// Something to time: one call runs the work once and returns how long it took.
pub type Runner<'a> = Box<dyn FnMut() -> Result<Duration> + 'a>;

/// Fastest time of each runner over interleaved rounds (one call of each per round)
/// lasting about `budget` in all. Interleaving puts every contender under the same machine
/// conditions; taking the fastest round discards the runs that other tenants of a shared
/// host slowed down (interference only ever adds time), the same rule for every contender.
pub fn time_interleaved(runners: &mut [Runner<'_>], budget: Duration) -> Result<Vec<Duration>> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); runners.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 3 || (start.elapsed() < budget && rounds < 1000) {
        for (r, t) in runners.iter_mut().zip(&mut times) {
            t.push(r()?);
        }
        rounds += 1;
    }
    Ok(times
        .into_iter()
        .map(|t| t.into_iter().min().expect("at least three rounds"))
        .collect())
}

/// `matrixmultiply::sgemm` (single-threaded) on `n`^3, the reference row of matmul cases.
pub fn reference_sgemm<'a>(n: usize) -> Runner<'a> {
    let seeded = |seed| -> Vec<f32> {
        Tensor::seeded(DType::F32, vec![n * n], seed, 1.0)
            .data
            .iter()
            .map(|&v| v as f32)
            .collect()
    };
    let (a, b) = (seeded(1), seeded(2));
    let mut c = vec![0f32; n * n];
    Box::new(move || {
        let t = Instant::now();
        // SAFETY: a, b, c are n*n row-major f32 matrices; strides describe exactly that.
        unsafe {
            matrixmultiply::sgemm(
                n,
                n,
                n,
                1.0,
                a.as_ptr(),
                n as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        let elapsed = t.elapsed();
        std::hint::black_box(&mut c);
        Ok(elapsed)
    })
}

/// STREAM-like copy bandwidth with `threads` threads over 2 x 256 MiB: bytes read plus
/// bytes written, per second (the best of several passes).
pub fn copy_bandwidth(threads: usize) -> f64 {
    let n = 64 << 20;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let chunk = n.div_ceil(threads);
        std::thread::scope(|s| {
            for (d, sr) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(sr));
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    (2 * n * 4) as f64 / best
}
