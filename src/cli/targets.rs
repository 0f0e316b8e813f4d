//! `kiln targets`: what this build can emit, what this host can run.

use anyhow::Result;
use kiln_compiler::Target;
use kiln_runtime::cpu::features::HostCpu;

/// Examples shown per family; any LLVM CPU name works for `cpu:`.
const CPU_EXAMPLES: [&str; 9] = [
    "x86-64",
    "x86-64-v2",
    "x86-64-v3",
    "x86-64-v4",
    "znver4",
    "tigerlake",
    "aarch64",
    "neoverse-v1",
    "native",
];

/// AMD targets shown; `hip:` takes every gfx9+ name LLVM 19 knows, with `:xnack±`/`:sramecc±`.
const HIP_EXAMPLES: [&str; 4] = ["gfx90a", "gfx942", "gfx1100", "gfx1201"];
const VULKAN_EXAMPLES: [&str; 2] = ["spv1.3", "spv1.6"];

/// CUDA capabilities shown; `cuda:` takes every capability the NVPTX lowering knows.
const CUDA_EXAMPLES: [&str; 5] = ["sm_75", "sm_80", "sm_89", "sm_90a", "sm_120"];

pub fn run() -> Result<()> {
    let host = HostCpu::detect();
    let defaults = super::default_targets();
    println!("default targets: {}", defaults.join(", "));
    println!();
    println!("{:<18} {:<22} this host runs", "target", "this build emits");
    for arch in CPU_EXAMPLES {
        let t: Target = format!("cpu:{arch}").parse()?;
        let emit = emit_status(&t);
        let run = if arch == "native" {
            "yes (compiled for this CPU)".to_string()
        } else {
            match host.can_run(arch, &[]) {
                Ok(_) => "yes".to_string(),
                Err(why) => format!("no: {why}"),
            }
        };
        println!("{:<18} {:<22} {}", t.to_string(), emit, run);
    }
    for sm in CUDA_EXAMPLES {
        let t: Target = format!("cuda:{sm}").parse()?;
        let run = match kiln_runtime::cuda::support(sm) {
            Ok(_) => "yes".to_string(),
            Err(why) => format!("no: {why}"),
        };
        println!("{:<18} {:<22} {}", t.to_string(), emit_status(&t), run);
    }
    for gfx in HIP_EXAMPLES {
        let t: Target = format!("hip:{gfx}").parse()?;
        let run = match kiln_runtime::hip::support(gfx) {
            Ok(_) => "yes".to_string(),
            Err(why) => format!("no: {why}"),
        };
        println!("{:<18} {:<22} {}", t.to_string(), emit_status(&t), run);
    }
    for spv in VULKAN_EXAMPLES {
        let t: Target = format!("vulkan:{spv}").parse()?;
        let run = match kiln_runtime::vulkan::support(spv) {
            Ok(_) => format!(
                "yes ({})",
                kiln_runtime::vulkan::device().unwrap_or_default()
            ),
            Err(why) => format!("no: {why}"),
        };
        println!("{:<18} {:<22} {}", t.to_string(), emit_status(&t), run);
    }
    println!();
    println!("cpu: takes any LLVM CPU name (`llc -mcpu=help` lists them); backends: llvm (default), cranelift (--backend cranelift).");
    println!("vulkan: spv1.3 .. spv1.6 (SPIR-V compute; `vulkan` alone means vulkan:spv1.3, which needs Vulkan 1.1, spv1.6 Vulkan 1.3; KILN_VULKAN_DEVICE picks a device by index or name).");
    println!("cuda: sm_70 .. sm_90a, sm_100(a), sm_120(a) (PTX; a GPU runs PTX of its own or a lower capability, `a` targets only their own).");
    Ok(())
}

fn emit_status(t: &Target) -> String {
    let mut ok = Vec::new();
    #[cfg(feature = "llvm")]
    if kiln_codegen::Backend::check(&kiln_codegen::llvm::LlvmBackend, t).is_ok() {
        ok.push("llvm");
    }
    #[cfg(feature = "cranelift")]
    if kiln_codegen::Backend::check(&kiln_codegen::cranelift::CraneliftBackend, t).is_ok() {
        ok.push("cranelift");
    }
    #[cfg(feature = "spirv")]
    if kiln_codegen::Backend::check(&kiln_codegen::spirv::SpirvBackend, t).is_ok() {
        ok.push("spirv");
    }
    if ok.is_empty() {
        "no".into()
    } else {
        format!("yes ({})", ok.join(", "))
    }
}
