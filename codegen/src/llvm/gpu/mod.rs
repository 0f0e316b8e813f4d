//! The shared GPU lowering: kernel IR -> one LLVM function per kernel that maps the grid
//! onto blocks and threads as `kiln_compiler::kernel::gpu` decided. It is written once and
//! parameterised by [`GpuDesc`] (triple, address spaces, warp width) and the few
//! primitives spelled differently per instruction set (`primitives.rs`: thread and block
//! indices, barrier, cross-lane exchange). NVPTX and AMDGPU are its two parameterisations.
//!
//! Kernel ABI on every GPU target: `kiln_<name>(buf_0, ..., buf_n, dims, offsets)`, one
//! global pointer per kernel argument, a global pointer to the plan's symbol values
//! (`i64` each, in plan order) and a global pointer to the launch's buffer offsets (`i64`
//! bytes each, one for each argument marked `BufferParam::offset`, in order, added to its
//! address; the other arguments have none: a decode's carried outputs are
//! passed as their storage and the rows held so far as their offsets, see
//! `kiln_runtime::manifest::Variant::buffer_offsets`). Artifacts compiled before that
//! passed a point count there instead, which later kernels stopped reading. Blocks are
//! [`BLOCK_THREADS`](kiln_compiler::kernel::gpu::BLOCK_THREADS) threads; the kernels count
//! their grid's points from the symbols and loop over them with a grid stride, so any
//! block count is correct: the runtime launches at least `ceil(points /
//! points_per_block)` blocks (capped), and may launch more, so that a replayed launch's
//! arguments stay the same while a decode's position grows (see
//! `kiln_runtime::manifest::Variant::counts_own_points`).

pub mod amdgpu;
mod byte_permute;
pub(super) mod copies;
mod dp4a;
mod kernel;
pub(super) mod matrix;
pub mod nvptx;
mod primitives;
#[cfg(test)]
mod tests;
pub(super) mod warpgroup;
mod word_runs;

use super::expr::Fail;
use inkwell::context::Context;
use inkwell::module::Module;
use kiln_compiler::kernel::Kernel;

/// The GPU instruction sets this lowering targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuArch {
    Nvptx,
    Amdgpu,
}

/// What differs between GPU targets, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuDesc {
    pub arch: GpuArch,
    pub triple: &'static str,
    /// The LLVM CPU name (`sm_90a`).
    pub cpu: String,
    pub features: String,
    /// Threads that execute in lockstep and can exchange registers (a warp or wave).
    pub warp: u32,
    /// The calling convention that makes a function a kernel entry point.
    pub kernel_cc: u32,
    pub global_as: u16,
    pub shared_as: u16,
    /// Every kernel lets the grids after it launch at once and waits for the grids before
    /// it to finish before touching memory (CUDA's programmatic dependent launch, sm_90 and
    /// newer): the runtime may then start a kernel while its predecessor drains, hiding the
    /// launch and the block scheduling that a decode step's hundreds of short kernels pay
    /// one after the other.
    pub waits_for_prior_grids: bool,
}

/// Adds every kernel of `kernels` to `module` as a GPU entry point.
pub fn emit_kernels<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    kernels: &[Kernel],
    desc: &GpuDesc,
) -> Result<(), (String, String)> {
    for k in kernels {
        kernel::emit(ctx, module, k, desc).map_err(|Fail(m)| (k.name.clone(), m))?;
    }
    Ok(())
}

/// The LLVM target machine for `desc`, or why there is none.
pub(super) fn target_machine(
    desc: &GpuDesc,
    target: &kiln_compiler::Target,
    reloc: inkwell::targets::RelocMode,
) -> Result<inkwell::targets::TargetMachine, crate::CodegenError> {
    use inkwell::targets::{CodeModel, Target as LlvmTarget, TargetTriple};
    let unsupported = |why: String| crate::CodegenError::Unsupported {
        backend: "llvm",
        target: target.to_string(),
        why,
    };
    super::init_targets();
    let triple = TargetTriple::create(desc.triple);
    let llvm_target = LlvmTarget::from_triple(&triple).map_err(|e| unsupported(e.to_string()))?;
    llvm_target
        .create_target_machine(
            &triple,
            &desc.cpu,
            &desc.features,
            inkwell::OptimizationLevel::Aggressive,
            reloc,
            CodeModel::Default,
        )
        .ok_or_else(|| unsupported(format!("LLVM cannot target {}", desc.cpu)))
}

/// Every kernel as an entry point of one module, verified, optimised and emitted as
/// `file_type` (PTX text for NVPTX, an object for AMDGPU). `configure` sets module flags.
pub(super) fn compile_module(
    kernels: &[Kernel],
    desc: &GpuDesc,
    tm: &inkwell::targets::TargetMachine,
    target: &kiln_compiler::Target,
    file_type: inkwell::targets::FileType,
    configure: &dyn for<'c> Fn(&'c Context, &Module<'c>),
) -> Result<inkwell::memory_buffer::MemoryBuffer<'static>, crate::CodegenError> {
    let fail = |kernel: &str, msg: String| crate::CodegenError::Kernel {
        kernel: kernel.into(),
        target: target.to_string(),
        msg,
    };
    let ctx = Context::create();
    let module = ctx.create_module("kiln");
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    configure(&ctx, &module);
    emit_kernels(&ctx, &module, kernels, desc).map_err(|(k, m)| fail(&k, m))?;
    module
        .verify()
        .map_err(|e| fail("(module)", format!("LLVM verifier: {e}")))?;
    module
        .run_passes(
            "default<O3>",
            tm,
            inkwell::passes::PassBuilderOptions::create(),
        )
        .map_err(|e| fail("(module)", format!("optimisation: {e}")))?;
    if let Ok(path) = std::env::var("KILN_DUMP_LLVM") {
        let _ = module.print_to_file(std::path::Path::new(&path));
    }
    tm.write_to_memory_buffer(&module, file_type)
        .map_err(|e| fail("(module)", format!("emitting code: {e}")))
}
