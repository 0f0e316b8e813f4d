//! The shared GPU lowering: kernel IR -> one LLVM function per kernel that maps the grid
//! onto blocks and threads as `kiln_compiler::kernel::gpu` decided. It is written once and
//! parameterised by [`GpuDesc`] (triple, address spaces, warp width) and the few
//! primitives spelled differently per instruction set (`primitives.rs`: thread and block
//! indices, barrier, cross-lane exchange). NVPTX and AMDGPU are its two parameterisations.
//!
//! Kernel ABI on every GPU target: `kiln_<name>(buf_0, ..., buf_n, dims, points)`, one
//! global pointer per kernel argument, a global pointer to the plan's symbol values
//! (`i64` each, in plan order) and the grid's point count. Blocks are
//! [`BLOCK_THREADS`](kiln_compiler::kernel::gpu::BLOCK_THREADS) threads; the kernels loop
//! over points with a grid stride, so any block count is correct and the runtime launches
//! `ceil(points / points_per_block)` blocks (capped).

pub mod amdgpu;
mod kernel;
pub mod nvptx;
mod primitives;
#[cfg(test)]
mod tests;

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
