//! Code generators: kernel IR + target -> code blob for the artifact.
//!
//! Each backend is one module implementing [`Backend`]; the compiler never names a backend,
//! and a backend never sees graph ops, only kernel IR. CPU backends emit an ELF object that
//! [`link`] turns into the shared object the runtime loads; each kernel is exported as
//! `kiln_<name>(args: *const *mut u8, dims: *const i64, begin: i64, end: i64)`, running grid
//! points `begin..end` (flattened, row-major over the kernel's grid). GPU backends emit
//! PTX text (`cuda:`), code objects (`hip:`) or a SPIR-V module (`vulkan:`), with the GPU
//! ABIs described in `llvm/gpu` and `spirv`.

#[cfg(feature = "cranelift")]
pub mod cranelift;
pub mod link;
#[cfg(feature = "llvm")]
pub mod llvm;
#[cfg(feature = "spirv")]
pub mod spirv;
#[cfg(all(test, any(feature = "llvm", feature = "spirv")))]
mod test_model;

use kiln_compiler::kernel::Kernel;
use kiln_compiler::Target;

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("backend {backend} cannot emit code for {target}: {why}")]
    Unsupported {
        backend: &'static str,
        target: String,
        why: String,
    },
    #[error("kernel {kernel} ({target}): {msg}")]
    Kernel {
        kernel: String,
        target: String,
        msg: String,
    },
    #[error("linking for {target}: {msg}")]
    Link { target: String, msg: String },
}

/// The symbol a kernel is exported under.
pub fn symbol_name(kernel: &str) -> String {
    format!("kiln_{kernel}")
}

pub trait Backend {
    fn name(&self) -> &'static str;
    /// `Err` says why this backend cannot serve `target` in this build.
    fn check(&self, target: &Target) -> Result<(), CodegenError>;
    /// Compiles all kernels of one model for one target into one code blob.
    fn compile(&self, kernels: &[Kernel], target: &Target) -> Result<Vec<u8>, CodegenError>;
    /// Whether `target`'s kernels wait for the grids they depend on before touching memory,
    /// so that the runtime may launch each before those finish
    /// (`kiln_runtime::manifest::Variant::waits_for_prior_grids`).
    fn waits_for_prior_grids(&self, target: &Target) -> bool {
        let _ = target;
        false
    }
    /// Whether `target`'s kernels count their grid points from the symbols rather than
    /// reading the count the runtime passes
    /// (`kiln_runtime::manifest::Variant::counts_own_points`).
    fn counts_own_points(&self, target: &Target) -> bool {
        let _ = target;
        false
    }
    /// Whether `target`'s kernels take the address of their buffers' offsets where a point
    /// count was passed before, and add each offset to its buffer's address
    /// (`kiln_runtime::manifest::Variant::buffer_offsets`).
    fn reads_buffer_offsets(&self, target: &Target) -> bool {
        let _ = target;
        false
    }
}
