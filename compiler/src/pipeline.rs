//! The compiler's front door: graph + target -> kernels ready for a code generator, the
//! launch list, and the arena plan. `kiln compile` calls this once per target.

use crate::kernel::{math, simplify, vectorize, Kernel};
use crate::lower::{self, LowerError, Lowered};
use crate::memory::{self, ArenaPlan};
use crate::rewrite::{self, RewriteLimits, RewriteReport};
use crate::schedule::{NarrowBlocks, Schedule};
use crate::target::Target;
use kiln_ir::Graph;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Ir(#[from] kiln_ir::IrError),
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error("rewrite: {0}")]
    Rewrite(String),
    #[error("target {0} has no schedule in this compiler")]
    NoSchedule(String),
}

#[derive(Clone, Debug)]
pub struct Compiled {
    pub graph: Graph,
    pub lowered: Lowered,
    pub arena: ArenaPlan,
    /// What the e-graph pass did (`None` when it was turned off).
    pub rewrite: Option<RewriteReport>,
}

impl Compiled {
    pub fn kernels(&self) -> &[Kernel] {
        &self.lowered.kernels
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Run the e-graph rewrite pass (on by default; off compiles the graph as written).
    pub rewrite: bool,
    pub limits: RewriteLimits,
    /// For `cpu:` targets: the widest vector register in bits (from the target, or the
    /// backend's own limit, e.g. Cranelift's 128).
    pub vector_bits: Option<u32>,
    /// The host CPU's LLVM name and feature string: what `cpu:native` means. The compiler
    /// cannot ask LLVM itself; without it `cpu:native` is scheduled as a baseline CPU
    /// (128-bit vectors), which would halve the lanes of an AVX2 host's kernels.
    pub host_cpu: Option<(String, String)>,
    /// Quantize the activations of matmuls over quantized weights to `q8_0` so CPU decode
    /// multiplies bytes (see `activations`); changes results by the quantization error.
    pub quantize_activations: bool,
    /// The code generator compiles the kernel-IR operations only LLVM's CPU backend has
    /// (`Expr::DotBytes` on wide vectors, `UOp::HalfBits`); false for Cranelift.
    pub llvm_ops: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rewrite: true,
            limits: RewriteLimits::default(),
            vector_bits: None,
            host_cpu: None,
            quantize_activations: false,
            llvm_ops: true,
        }
    }
}

pub fn schedule_for(target: &Target, opts: &Options) -> Result<Schedule, CompileError> {
    match target {
        // LLVM's GPU targets convert halves in one instruction. AMD GPUs convert bytes to
        // floats at full rate (`v_cvt_f32_ubyte*`), NVIDIA's at a quarter.
        Target::Cuda(arch) | Target::Hip(arch) => {
            let matrix = crate::kernel::matrix::MatrixUnit::for_gpu(target.family(), arch);
            return Ok(Schedule {
                half_bits: opts.llvm_ops,
                int_to_float_by_exponent: matches!(target, Target::Cuda(_)),
                // `dp4a` (every capability kiln emits): decode's byte dot products where
                // activations are quantized (`gpu_byte_dot`).
                byte_dot: matches!(target, Target::Cuda(_)) && opts.llvm_ops,
                matrix,
                matrix_bf16: matrix.is_some_and(|m| m.takes(kiln_ir::DType::BF16, arch)),
                // `wgmma` exists on sm_90a alone (sm_100a has another instruction); it is
                // written as inline PTX, which only the LLVM NVPTX backend emits.
                group_mma: matches!(target, Target::Cuda(a) if a == "sm_90a") && opts.llvm_ops,
                // Measured on NVIDIA's (docs/perf.md, 2026-12-06); HIP keeps 256 threads
                // until an AMD GPU measures it.
                narrow_dot_blocks: match target {
                    Target::Cuda(_) => NarrowBlocks::Always,
                    _ => NarrowBlocks::Never,
                },
                shared_bytes: shared_bytes(target.family(), arch),
                ..Schedule::gpu()
            });
        }
        Target::Vulkan(_) => {
            return Ok(Schedule {
                byte_loads: false,
                // Four lanes: SPIR-V vectors have at most four, and a run of four halves
                // (four f32s) whose index is aligned is one 8-byte (16-byte) load.
                gpu_dot_lanes: 4,
                // For NVIDIA's drivers (the measured ones); two full-rate instructions
                // instead of one conversion elsewhere.
                int_to_float_by_exponent: true,
                // A quantized block's f16 scales through `UnpackHalf2x16` (core Vulkan),
                // one instruction where the bit-by-bit conversion takes a dozen.
                half_bits: true,
                // Nibble-partner steps in blocks of 128 invocations, for the 4-bit formats
                // only. On one H100 (2026-12-07, docs/perf.md) the 1B Q4_K_M decoded at
                // 363.5 t/s so against 334.7 with neither and 318.6 with split steps alone.
                // Narrow blocks for every format were slower on the 1B Q8_0 (2026-12-06:
                // 318.5 t/s against 339.9), whose steps never split.
                narrow_dot_blocks: NarrowBlocks::WhereSplit,
                // Split steps as on every GPU, q8_0 activations dequantized in the kernel
                // too: NVIDIA's driver computed wrong sums from those (21 conformance cases)
                // while SPIR-V's indices were 64-bit, and computes them right since they are
                // 32-bit (one H100, 2026-12-07, eighth session: 762 cases and the tiny
                // models pass with split steps forced on). Vulkan's models keep f32
                // activations, so this changes none of their kernels.
                ..Schedule::gpu()
            });
        }
        _ => {}
    }
    let host = opts
        .host_cpu
        .as_ref()
        .map(|(c, f)| (c.as_str(), f.as_str()));
    let desc = target
        .cpu_desc(host)
        .ok_or_else(|| CompileError::NoSchedule(target.to_string()))?;
    let bits = opts
        .vector_bits
        .map_or(desc.vector_bits, |b| b.min(desc.vector_bits));
    Ok(Schedule {
        byte_dot: opts.llvm_ops,
        half_bits: opts.llvm_ops && desc.half_conversions,
        ..Schedule::for_vector_bits(bits)
    })
}

/// Shared memory a block may use on GPUs of `arch`, opted into at load time where needed
/// (`runtime::cuda`). Code for a capability also runs on later ones, so CUDA's limit is the
/// least of every GPU from that capability on: 99 KiB from sm_80 (sm_86, sm_89 and sm_120
/// have no more). Code for `sm_90a` or `sm_100a` runs only on that capability, which has
/// 227 KiB. AMD's LDS holds 64 KiB.
fn shared_bytes(api: &str, arch: &str) -> u32 {
    let base = Schedule::gpu().shared_bytes;
    match api {
        "cuda" => {
            let digits = arch.trim_start_matches("sm_");
            let specific = digits.ends_with('a');
            match digits.trim_end_matches('a').parse::<u32>() {
                Ok(90 | 100) if specific => 227 << 10,
                Ok(sm) if sm >= 80 => 99 << 10,
                _ => base,
            }
        }
        "hip" => 64 << 10,
        _ => base,
    }
}

pub fn compile(graph: &Graph, target: &Target, opts: &Options) -> Result<Compiled, CompileError> {
    kiln_ir::verify(graph)?;
    let schedule = schedule_for(target, opts)?;
    let (graph, report) = if opts.rewrite {
        let (g, r) = rewrite::rewrite(graph, &opts.limits)
            .map_err(|e| CompileError::Rewrite(e.to_string()))?;
        (g, Some(r))
    } else {
        (graph.clone(), None)
    };
    let graph = if opts.quantize_activations && schedule.byte_dot {
        crate::activations::quantize_activations(&graph, &schedule)?
    } else {
        graph
    };
    let mut lowered = lower::lower(&graph, schedule)?;
    for k in &mut lowered.kernels {
        finish_kernel(k);
        // Only where a block shares a reduction (decode dot products): there loads and
        // issue bound the kernel, and the conversions' narrow unit is what the exponent
        // form spares. A thread per output (prefill's matmuls) is bound by the FMA pipe,
        // which the exponent form's add would join while the conversion unit runs beside
        // it: 1B Q8_0 prefill on CUDA read 202 t/s with it, 230 without.
        if schedule.int_to_float_by_exponent
            && crate::kernel::gpu::launch_shape(k).block_per_point()
        {
            crate::kernel::small_ints::convert_through_exponent(k);
        }
    }
    // One launch for a layer's q, k and v matvecs (and gate and up): on GPUs a launch
    // costs microseconds that move no weights. `KILN_MERGE_SIBLINGS=0` keeps them apart,
    // for comparing on a GPU.
    if schedule.gpu && lower::knob("KILN_MERGE_SIBLINGS", 1u8) != 0 {
        crate::siblings::merge_sibling_launches(&mut lowered);
    }
    crate::share::share_identical_kernels(&mut lowered);
    crate::offsets::mark_offset_buffers(&mut lowered);
    let arena = memory::plan(&lowered);
    Ok(Compiled {
        graph,
        lowered,
        arena,
        rewrite: report,
    })
}

/// Target-independent kernel passes run before any code generator sees a kernel.
pub fn finish_kernel(k: &mut Kernel) {
    math::expand_kernel(k);
    simplify::simplify_kernel(k);
    vectorize::vectorize_kernel(k);
}

/// `.kir` text lowered for `target` and its kernels finished, as `compile` has them before
/// the passes over the whole kernel list (for those passes' tests).
#[cfg(test)]
pub(crate) fn finished_kernels(src: &str, target: &str) -> Lowered {
    let g = kiln_ir::text::parse(src).unwrap_or_else(|e| panic!("{e}"));
    let t: Target = target.parse().unwrap();
    let mut l = lower::lower(&g, schedule_for(&t, &Options::default()).unwrap()).unwrap();
    for k in &mut l.kernels {
        finish_kernel(k);
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cpu:native` is scheduled for the host the caller names, as the code generator
    /// compiles it; without one it falls back to a baseline CPU's 4 lanes.
    #[test]
    fn native_is_scheduled_for_the_host_it_is_compiled_for() {
        let native: Target = "cpu:native".parse().unwrap();
        let lanes = |host: Option<(&str, &str)>| {
            let opts = Options {
                host_cpu: host.map(|(c, f)| (c.to_string(), f.to_string())),
                ..Options::default()
            };
            schedule_for(&native, &opts).unwrap().lanes
        };
        assert_eq!(lanes(Some(("znver3", "+avx,+avx2,+fma,+f16c"))), 8);
        assert_eq!(lanes(Some(("sapphirerapids", "+avx2,+avx512f"))), 16);
        assert_eq!(lanes(None), 4);
    }

    /// Quantized weights convert to f32 through the exponent field in decode dot products
    /// (a block per output) on the targets whose conversion unit is narrow (CUDA; Vulkan,
    /// for NVIDIA's drivers), and with the conversion instruction elsewhere: in kernels of a
    /// thread per output (prefill's form of a symbolic row count), on AMD (which converts
    /// bytes at full rate) and on CPUs.
    #[test]
    fn small_integers_convert_through_the_exponent_where_conversions_are_slow() {
        for format in ["q8_0", "q4_k"] {
            let row = if format == "q8_0" { 272 } else { 144 };
            let src = format!(
                "kir 1\n%x = input \"x\" f32[seq,256]\n%w = input \"w\" u8[64,{row}]\n\
                 %d = dequant %w format={format}\n\
                 %y = matmul %x, %d transpose_a=false transpose_b=true\noutput \"y\" = %y\n"
            );
            let g = kiln_ir::text::parse(&src).unwrap();
            for (target, by_exponent) in [
                ("cuda:sm_90", true),
                ("vulkan:spv1.3", true),
                ("hip:gfx1100", false),
                ("cpu:x86-64-v3", false),
            ] {
                let t: Target = target.parse().unwrap();
                let c = compile(&g, &t, &Options::default()).unwrap();
                let mut shapes = Vec::new();
                for k in &c.lowered.kernels {
                    let block = crate::kernel::gpu::launch_shape(k).block_per_point();
                    let left = crate::kernel::small_ints::casts_left(k);
                    let converted = k.to_string().contains("bitcast<F32>");
                    let expect = by_exponent && block;
                    assert_eq!(left == 0, expect, "{format} on {target}: {k}");
                    assert_eq!(converted, expect, "{format} on {target}: {k}");
                    shapes.push(block);
                }
                if target.starts_with("cuda") && format == "q8_0" {
                    // Both forms: decode's block per output, prefill's thread per output.
                    // (K-quants, and every format on SPIR-V, keep a block per output.)
                    shapes.sort();
                    assert_eq!(shapes, [false, true], "{format} on {target}");
                }
            }
        }
    }
}
