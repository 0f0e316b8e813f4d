//! The Cranelift backend: kiln's fast-compile tier for `cpu:` targets. It lowers the same
//! kernel IR as the LLVM backend into an ELF object, linked the same way, so artifacts,
//! the runtime and the tests do not care which tier produced the code.
//!
//! Cranelift's x86 vectors are 128 bits, so the compiler schedules `cpu:` targets for
//! Cranelift with 4 f32 lanes (`pipeline::Options::vector_bits`); wider kernel-IR vectors
//! are rejected with a clear error rather than split.

mod expr;
mod function;
mod half;

use crate::{link, Backend, CodegenError};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_module::{default_libcall_names, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_compiler::kernel::Kernel;
use kiln_compiler::{CpuDesc, Target};

pub struct CraneliftBackend;

/// x86 features Cranelift can use, per x86-64 level (each level adds to the previous).
const X86_LEVEL_FLAGS: [&[&str]; 4] = [
    &[],
    &[
        "has_sse3",
        "has_ssse3",
        "has_sse41",
        "has_sse42",
        "has_popcnt",
        "has_cmpxchg16b",
    ],
    &[
        "has_avx",
        "has_avx2",
        "has_fma",
        "has_bmi1",
        "has_bmi2",
        "has_lzcnt",
    ],
    &["has_avx512f", "has_avx512dq", "has_avx512vl"],
];

/// The x86-64 level a CPU name implies, for named CPUs by their vector width.
fn x86_level(desc: &CpuDesc) -> usize {
    match desc.llvm_cpu.as_str() {
        "x86-64" => 1,
        "x86-64-v2" => 2,
        "x86-64-v3" => 3,
        "x86-64-v4" => 4,
        _ if desc.vector_bits >= 512 => 4,
        _ if desc.vector_bits >= 256 => 3,
        _ => 2,
    }
}

fn unsupported(target: &Target, why: &str) -> CodegenError {
    CodegenError::Unsupported {
        backend: "cranelift",
        target: target.to_string(),
        why: why.to_string(),
    }
}

fn isa_for(target: &Target) -> Result<(OwnedTargetIsa, CpuDesc), CodegenError> {
    let desc = target
        .cpu_desc(None)
        .ok_or_else(|| unsupported(target, "Cranelift emits cpu: targets only"))?;
    if target.arch() == "native" {
        return Err(unsupported(target, "cpu:native needs host detection; use --backend llvm, or name the level (cpu:x86-64-v3)"));
    }
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| unsupported(target, &format!("setting {k}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", "true")?;
    let triple = if desc.aarch64 {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    };
    let mut isa = cranelift_codegen::isa::lookup_by_name(triple)
        .map_err(|e| unsupported(target, &e.to_string()))?;
    if !desc.aarch64 {
        for level in X86_LEVEL_FLAGS.iter().take(x86_level(&desc)) {
            for f in *level {
                isa.enable(f)
                    .map_err(|e| unsupported(target, &format!("enabling {f}: {e}")))?;
            }
        }
    }
    let isa = isa
        .finish(settings::Flags::new(flags))
        .map_err(|e| unsupported(target, &e.to_string()))?;
    Ok((isa, desc))
}

impl Backend for CraneliftBackend {
    fn name(&self) -> &'static str {
        "cranelift"
    }

    fn check(&self, target: &Target) -> Result<(), CodegenError> {
        isa_for(target).map(|_| ())
    }

    fn compile(&self, kernels: &[Kernel], target: &Target) -> Result<Vec<u8>, CodegenError> {
        let (isa, desc) = isa_for(target)?;
        let has_fma = desc.aarch64 || x86_level(&desc) >= 3;
        let builder = ObjectBuilder::new(isa, "kiln", default_libcall_names())
            .map_err(|e| unsupported(target, &e.to_string()))?;
        let mut module = ObjectModule::new(builder);
        for k in kernels {
            let fail = |msg: String| CodegenError::Kernel {
                kernel: k.name.clone(),
                target: target.to_string(),
                msg,
            };
            let mut ctx = module.make_context();
            function::build(&mut ctx.func, k, module.isa(), has_fma).map_err(fail)?;
            let id = module
                .declare_function(
                    &crate::symbol_name(&k.name),
                    Linkage::Export,
                    &ctx.func.signature,
                )
                .map_err(|e| fail(e.to_string()))?;
            module
                .define_function(id, &mut ctx)
                .map_err(|e| fail(format!("{e:?}")))?;
        }
        let object = module
            .finish()
            .emit()
            .map_err(|e| unsupported(target, &format!("writing the object: {e}")))?;
        link::link_shared(&object, &target.to_string())
    }
}
