//! The LLVM backend (through inkwell): kernel IR -> LLVM IR -> optimised object -> shared
//! object. CPU targets now; the GPU targets of later work reuse the expression lowering in
//! `expr.rs` and differ in how a kernel's grid and loops map to the machine (`function.rs`).

mod convert;
mod dot;
mod expr;
mod function;
pub mod gpu;
mod lane_sums;

use crate::{link, Backend, CodegenError};
use inkwell::context::Context;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine,
    TargetTriple,
};
use inkwell::OptimizationLevel;
use kiln_compiler::kernel::Kernel;
use kiln_compiler::{CpuDesc, Target};

pub struct LlvmBackend;

/// The host CPU's LLVM name and feature string, for `cpu:native`.
pub fn host_cpu() -> (String, String) {
    (
        TargetMachine::get_host_cpu_name().to_string(),
        TargetMachine::get_host_cpu_features().to_string(),
    )
}

fn desc_for(target: &Target) -> Result<CpuDesc, CodegenError> {
    let (cpu, feats) = host_cpu();
    target
        .cpu_desc(Some((&cpu, &feats)))
        .ok_or_else(|| CodegenError::Unsupported {
            backend: "llvm",
            target: target.to_string(),
            why: "this build's LLVM backend emits cpu:, cuda: and hip: targets only".into(),
        })
}

/// LLVM's target registry is global and not safe to initialise from two threads at once.
fn init_targets() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        LlvmTarget::initialize_x86(&InitializationConfig::default());
        LlvmTarget::initialize_aarch64(&InitializationConfig::default());
        LlvmTarget::initialize_nvptx(&InitializationConfig::default());
        LlvmTarget::initialize_amd_gpu(&InitializationConfig::default());
    });
}

/// The target's features for LLVM, with kiln's tuning: where the CPU has VNNI, keep
/// `vpdpwssd` as one instruction. LLVM's machine combiner otherwise splits it into
/// `vpmaddwd` + `vpaddd` to shorten an accumulator's dependency chain, but kiln's byte dot
/// products keep several independent chains (a tile's tokens), so the split only adds
/// instructions: an eighth of the Q4_K prefill tile's loop.
pub(super) fn llvm_features(desc: &CpuDesc) -> String {
    if desc.vnni_bits > 0 && !desc.aarch64 {
        if desc.features.is_empty() {
            "+fast-dpwssd".to_string()
        } else {
            format!("{},+fast-dpwssd", desc.features)
        }
    } else {
        desc.features.clone()
    }
}

fn machine(desc: &CpuDesc, target: &Target) -> Result<TargetMachine, CodegenError> {
    let unsupported = |why: String| CodegenError::Unsupported {
        backend: "llvm",
        target: target.to_string(),
        why,
    };
    init_targets();
    let triple = TargetTriple::create(desc.triple);
    let llvm_target = LlvmTarget::from_triple(&triple).map_err(|e| unsupported(e.to_string()))?;
    llvm_target
        .create_target_machine(
            &triple,
            &desc.llvm_cpu,
            &llvm_features(desc),
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| unsupported(format!("LLVM does not know CPU `{}`", desc.llvm_cpu)))
}

impl Backend for LlvmBackend {
    fn name(&self) -> &'static str {
        "llvm"
    }

    fn check(&self, target: &Target) -> Result<(), CodegenError> {
        match target {
            Target::Cuda(sm) => return gpu::nvptx::machine(sm, target).map(|_| ()),
            Target::Hip(arch) => return gpu::amdgpu::machine(arch, target).map(|_| ()),
            _ => {}
        }
        // Target parsing already rejected CPU names LLVM does not know.
        let desc = desc_for(target)?;
        machine(&desc, target).map(|_| ())
    }

    fn waits_for_prior_grids(&self, target: &Target) -> bool {
        matches!(target, Target::Cuda(sm) if gpu::nvptx::waits_for_prior_grids(sm))
    }

    fn counts_own_points(&self, target: &Target) -> bool {
        matches!(target, Target::Cuda(_) | Target::Hip(_))
    }

    fn reads_buffer_offsets(&self, target: &Target) -> bool {
        matches!(target, Target::Cuda(_) | Target::Hip(_))
    }

    fn compile(&self, kernels: &[Kernel], target: &Target) -> Result<Vec<u8>, CodegenError> {
        match target {
            Target::Cuda(sm) => return gpu::nvptx::compile(kernels, sm, target),
            Target::Hip(arch) => return gpu::amdgpu::compile(kernels, arch, target),
            _ => {}
        }
        let desc = desc_for(target)?;
        let tm = machine(&desc, target)?;
        let ctx = Context::create();
        let module = ctx.create_module("kiln");
        module.set_triple(&tm.get_triple());
        module.set_data_layout(&tm.get_target_data().get_data_layout());
        for k in kernels {
            function::emit_kernel(&ctx, &module, k, &desc).map_err(|msg| CodegenError::Kernel {
                kernel: k.name.clone(),
                target: target.to_string(),
                msg,
            })?;
        }
        module.verify().map_err(|e| CodegenError::Kernel {
            kernel: "(module)".into(),
            target: target.to_string(),
            msg: format!("LLVM verifier: {e}"),
        })?;
        let opts = PassBuilderOptions::create();
        module
            .run_passes("default<O3>", &tm, opts)
            .map_err(|e| CodegenError::Kernel {
                kernel: "(module)".into(),
                target: target.to_string(),
                msg: format!("optimisation: {e}"),
            })?;
        if let Ok(path) = std::env::var("KILN_DUMP_LLVM") {
            let _ = module.print_to_file(std::path::Path::new(&path));
        }
        let obj = tm
            .write_to_memory_buffer(&module, FileType::Object)
            .map_err(|e| CodegenError::Kernel {
                kernel: "(module)".into(),
                target: target.to_string(),
                msg: format!("emitting object: {e}"),
            })?;
        link::link_shared(obj.as_slice(), &target.to_string())
    }
}

#[cfg(test)]
mod tests;
