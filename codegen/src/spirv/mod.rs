//! The SPIR-V backend (through `rspirv`): kernel IR -> one Vulkan compute module holding
//! every kernel of a model as an entry point `kiln_<name>`.
//!
//! It lowers the same kernel IR, with the same grid-to-workgroup mapping, as the LLVM GPU
//! lowering (`kiln_compiler::kernel::gpu` decides it once for every GPU target); what
//! differs is only how SPIR-V spells things: structured control flow, logical addressing
//! (buffers are arrays indexed through access chains, not pointers).
//!
//! Module interface (what the Vulkan executor binds):
//! - descriptor set 0, binding 0: the launch parameters, a read-only storage buffer holding
//!   `i64 points` at offset 0, then the plan's symbol values as `i64`s from offset 8. They
//!   are in memory rather than push constants so that a recorded command buffer replays
//!   with new values (the executor writes them, and the workgroup counts of indirect
//!   dispatches, before each run);
//! - descriptor set 0, binding `i + 1`: kernel argument `i`, a storage buffer read as 32-bit
//!   words whatever its dtype (`storage.rs`);
//! - workgroup size: the kernel's block size in x (`kernel::gpu::launch_shape`: a power of
//!   two up to `BLOCK_THREADS`), declared by each entry point; the executor dispatches
//!   `ceil(points / points_per_block)` workgroups (capped; kernels stride over points).
//!
//! A variant's code is a bundle (`bundle.rs`) of two modules: one whose block reductions use
//! subgroup arithmetic, for devices that have it, and one that reduces through workgroup
//! memory only, for every device; the executor loads the first its device can run.
//!
//! Every module is checked by naga's SPIR-V front end and validator before it is returned;
//! a module that fails is a compile error naming the kernel, not a driver crash later.

mod builder;
pub mod bundle;
mod emitter;
mod expr;
mod groups;
mod kernel;
mod storage;
#[cfg(test)]
mod tests;
mod validate;

use crate::{Backend, CodegenError};
use kiln_compiler::kernel::gpu::BLOCK_THREADS;
use kiln_compiler::kernel::Kernel;
use kiln_compiler::Target;
use rspirv::binary::Assemble;
use rspirv::dr::Builder;
use rspirv::spirv::{AddressingModel, Capability, MemoryModel};

pub use validate::validate;

pub struct SpirvBackend;

/// Why a kernel could not be emitted.
#[derive(Debug)]
pub struct Fail(pub String);

impl Fail {
    pub fn msg(m: &str) -> Fail {
        Fail(m.into())
    }
}

impl From<rspirv::dr::Error> for Fail {
    fn from(e: rspirv::dr::Error) -> Fail {
        Fail(format!("SPIR-V builder: {e}"))
    }
}

/// The SPIR-V minor version a `vulkan:spv1.N` target asks for.
pub fn spirv_minor(target: &Target) -> Result<u8, CodegenError> {
    let unsupported = |why: String| CodegenError::Unsupported {
        backend: "spirv",
        target: target.to_string(),
        why,
    };
    match target {
        Target::Vulkan(arch) => arch
            .strip_prefix("spv1.")
            .and_then(|m| m.parse::<u8>().ok())
            .filter(|m| (3..=6).contains(m))
            .ok_or_else(|| unsupported(format!("`{arch}` is not spv1.3 .. spv1.6"))),
        _ => Err(unsupported(
            "the SPIR-V backend emits vulkan: targets only".into(),
        )),
    }
}

/// One module with every kernel as an entry point, as SPIR-V words; with `subgroups`, block
/// reductions use subgroup arithmetic (a device feature, so such a module is one of two).
pub fn compile_words(
    kernels: &[Kernel],
    minor: u8,
    subgroups: bool,
) -> Result<Vec<u32>, (String, String)> {
    let mut b = Builder::new();
    b.set_version(1, minor);
    b.capability(Capability::Shader);
    b.capability(Capability::Int64);
    if subgroups {
        b.capability(Capability::GroupNonUniform);
        b.capability(Capability::GroupNonUniformArithmetic);
    }
    b.memory_model(AddressingModel::Logical, MemoryModel::GLSL450);
    let mut s = builder::Spv::new(b);
    let dims = kernels.iter().map(|k| k.dims_read()).max().unwrap_or(0);
    let abi = kernel::abi(&mut s, dims, BLOCK_THREADS, subgroups);
    for k in kernels {
        kernel::emit(&mut s, &abi, k, minor >= 4).map_err(|Fail(m)| (k.name.clone(), m))?;
    }
    Ok(s.b.module().assemble())
}

/// The flavours of a variant's module, richest first: each is `(needs, module)` where
/// `needs` is what the device must have ([`bundle::SUBGROUP_ARITHMETIC`]).
const FLAVOURS: [(u32, bool); 2] = [(bundle::SUBGROUP_ARITHMETIC, true), (0, false)];

impl Backend for SpirvBackend {
    fn name(&self) -> &'static str {
        "spirv"
    }

    fn check(&self, target: &Target) -> Result<(), CodegenError> {
        spirv_minor(target).map(|_| ())
    }

    fn compile(&self, kernels: &[Kernel], target: &Target) -> Result<Vec<u8>, CodegenError> {
        let minor = spirv_minor(target)?;
        let fail = |kernel: String, msg: String| CodegenError::Kernel {
            kernel,
            target: target.to_string(),
            msg,
        };
        let mut modules = Vec::new();
        for (needs, subgroups) in FLAVOURS {
            let words = compile_words(kernels, minor, subgroups).map_err(|(k, m)| fail(k, m))?;
            if let Err((kernel, msg)) = validate(&words) {
                // Name the kernel: the first one whose module alone fails.
                let culprit = kernels.iter().find_map(|k| {
                    let alone = compile_words(std::slice::from_ref(k), minor, subgroups).ok()?;
                    validate(&alone).err().map(|(_, m)| (k.name.clone(), m))
                });
                let (kernel, msg) = culprit.unwrap_or((kernel, msg));
                return Err(fail(kernel, msg));
            }
            modules.push((needs, words));
        }
        Ok(bundle::write(&modules))
    }
}
