//! AMDGPU: `hip:gfxNNNN[:feature±...]` targets -> one code object (ELF shared object, code
//! object v5, what `hipModuleLoadData` takes) per target.
//!
//! The same lowering as NVPTX with AMDGPU's parameters: wave64 on the gfx9 family (GCN and
//! CDNA), wave32 on RDNA (gfx10 and later, LLVM's default there); kernels are
//! `amdgpu_kernel` functions whose explicit arguments are the GPU ABI's (8 bytes each).

use super::{GpuArch, GpuDesc};
use crate::CodegenError;
use inkwell::context::Context;
use inkwell::module::{FlagBehavior, Module};
use inkwell::targets::{FileType, RelocMode, TargetMachine};
use kiln_compiler::kernel::Kernel;
use kiln_compiler::Target;

/// The gfx names LLVM 19 accepts that have the cross-lane instructions the lowering uses
/// (`ds_bpermute`: gfx8 and later; gfx9 and later listed).
pub const GFX: [&str; 31] = [
    "gfx900", "gfx902", "gfx904", "gfx906", "gfx908", "gfx909", "gfx90a", "gfx90c", "gfx940",
    "gfx941", "gfx942", "gfx1010", "gfx1011", "gfx1012", "gfx1013", "gfx1030", "gfx1031",
    "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036", "gfx1100", "gfx1101", "gfx1102",
    "gfx1103", "gfx1150", "gfx1151", "gfx1152", "gfx1200", "gfx1201",
];

/// The targets the issue names, each with the `EF_AMDGPU_MACH` value its code objects
/// must carry (LLVM's BinaryFormat/ELF.h); the unit and end-to-end tests check every one.
pub const TESTED: [(&str, u32); 9] = [
    ("gfx906", 0x02f),
    ("gfx908", 0x030),
    ("gfx90a", 0x03f),
    ("gfx942", 0x04c),
    ("gfx1030", 0x036),
    ("gfx1100", 0x041),
    ("gfx1101", 0x046),
    ("gfx1200", 0x048),
    ("gfx1201", 0x04e),
];

/// `gfx90a:xnack+:sramecc-` -> ("gfx90a", "+xnack,-sramecc").
fn split(arch: &str) -> Result<(&str, String), String> {
    let mut parts = arch.split(':');
    let gfx = parts.next().unwrap_or_default();
    if !GFX.contains(&gfx) {
        return Err(format!(
            "kiln knows AMD targets {} (LLVM 19's gfx9 and later)",
            GFX.join(", ")
        ));
    }
    let mut feats = Vec::new();
    for p in parts {
        let (name, sign) = match p.strip_suffix('+') {
            Some(n) => (n, '+'),
            None => match p.strip_suffix('-') {
                Some(n) => (n, '-'),
                None => return Err(format!("feature `{p}` needs a + or - suffix (xnack+)")),
            },
        };
        if name != "xnack" && name != "sramecc" {
            return Err(format!(
                "unknown AMD target feature `{name}` (xnack, sramecc)"
            ));
        }
        feats.push(format!("{sign}{name}"));
    }
    Ok((gfx, feats.join(",")))
}

/// Threads per wave: 64 on the gfx9 family, 32 on RDNA.
pub fn wave_size(gfx: &str) -> u32 {
    if gfx.starts_with("gfx9") {
        64
    } else {
        32
    }
}

pub fn desc(arch: &str) -> Result<GpuDesc, String> {
    let (gfx, features) = split(arch)?;
    Ok(GpuDesc {
        arch: GpuArch::Amdgpu,
        triple: "amdgcn-amd-amdhsa",
        cpu: gfx.to_string(),
        features,
        warp: wave_size(gfx),
        kernel_cc: 91,
        global_as: 1,
        shared_as: 3,
        waits_for_prior_grids: false,
    })
}

pub fn machine(arch: &str, target: &Target) -> Result<(TargetMachine, GpuDesc), CodegenError> {
    let desc = desc(arch).map_err(|why| CodegenError::Unsupported {
        backend: "llvm",
        target: target.to_string(),
        why,
    })?;
    let tm = super::target_machine(&desc, target, RelocMode::PIC)?;
    Ok((tm, desc))
}

/// All kernels of one model -> one code object.
pub fn compile(kernels: &[Kernel], arch: &str, target: &Target) -> Result<Vec<u8>, CodegenError> {
    let (tm, desc) = machine(arch, target)?;
    let obj = super::compile_module(
        kernels,
        &desc,
        &tm,
        target,
        FileType::Object,
        &code_object_v5,
    )?;
    crate::link::link_shared(obj.as_slice(), &target.to_string())
}

/// Code object v5: LLVM 19's default, stated so a newer LLVM does not change it.
fn code_object_v5<'c>(ctx: &'c Context, module: &Module<'c>) {
    module.add_basic_value_flag(
        "amdgpu_code_object_version",
        FlagBehavior::Error,
        ctx.i32_type().const_int(500, false),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_features_are_checked() {
        assert_eq!(
            split("gfx90a:xnack+:sramecc-").unwrap(),
            ("gfx90a", "+xnack,-sramecc".into())
        );
        assert!(split("gfx1100").unwrap().1.is_empty());
        assert!(split("gfx123").unwrap_err().contains("gfx1100"));
        assert!(split("gfx90a:xnack").unwrap_err().contains("suffix"));
        assert!(split("gfx90a:wave64+").unwrap_err().contains("unknown"));
        assert_eq!(wave_size("gfx942"), 64);
        assert_eq!(wave_size("gfx1201"), 32);
    }
}
