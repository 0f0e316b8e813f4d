//! NVPTX: `cuda:sm_NN` targets -> PTX text, one module per capability.
//!
//! Each capability gets the lowest PTX ISA version that names it, so the module loads on
//! the oldest driver that knows the GPU. LLVM 19 knows capabilities up to `sm_90a`; newer
//! ones (`sm_100`, `sm_120`, ...) are compiled as `sm_90` code, which uses no instruction
//! newer GPUs lack, and their `.version`/`.target` lines are raised to what `ptxas` needs
//! for them. Instructions specific to those GPUs wait for an LLVM that knows them.

use super::{GpuArch, GpuDesc};
use crate::CodegenError;
use inkwell::targets::{FileType, RelocMode, TargetMachine};
use kiln_compiler::kernel::Kernel;
use kiln_compiler::Target;

/// Every capability `cuda:` accepts, with its PTX ISA version (major*10 + minor), and
/// the capability LLVM compiles it as.
const CAPABILITIES: [(&str, u32, &str); 13] = [
    ("sm_70", 60, "sm_70"),
    ("sm_72", 61, "sm_72"),
    ("sm_75", 63, "sm_75"),
    ("sm_80", 70, "sm_80"),
    ("sm_86", 71, "sm_86"),
    ("sm_87", 74, "sm_87"),
    ("sm_89", 78, "sm_89"),
    ("sm_90", 78, "sm_90"),
    ("sm_90a", 80, "sm_90a"),
    ("sm_100", 86, "sm_90"),
    ("sm_100a", 86, "sm_90"),
    ("sm_120", 87, "sm_90"),
    ("sm_120a", 87, "sm_90"),
];

/// The capabilities `kiln targets` lists and the tests compile for.
pub fn capabilities() -> impl Iterator<Item = &'static str> {
    CAPABILITIES.iter().map(|(c, _, _)| *c)
}

/// The description for `sm`, or why there is none.
pub fn desc(sm: &str) -> Result<(GpuDesc, Retarget), String> {
    let (_, ptx, llvm_sm) = CAPABILITIES
        .iter()
        .find(|(c, _, _)| *c == sm)
        .ok_or_else(|| {
            let known: Vec<&str> = capabilities().collect();
            format!(
                "kiln knows CUDA capabilities {} (sm_70 and newer)",
                known.join(", ")
            )
        })?;
    // LLVM 19's highest PTX ISA is 8.5; newer capabilities are emitted at 7.8 (sm_90's)
    // and their header raised.
    let llvm_ptx = if *llvm_sm == sm { *ptx } else { 78 };
    let desc = GpuDesc {
        arch: GpuArch::Nvptx,
        triple: "nvptx64-nvidia-cuda",
        cpu: llvm_sm.to_string(),
        features: format!("+ptx{llvm_ptx}"),
        warp: 32,
        kernel_cc: 71,
        global_as: 1,
        shared_as: 3,
        waits_for_prior_grids: waits_for_prior_grids(sm),
    };
    let retarget = Retarget {
        target: sm.to_string(),
        version: *ptx,
    };
    Ok((desc, retarget))
}

/// Whether `cuda:<sm>`'s kernels start with `griddepcontrol` (sm_90 and newer, PTX ISA
/// 7.8): each waits for the grids it depends on and then lets its dependents launch, so
/// the runtime may launch it before they finish (`GpuDesc::waits_for_prior_grids`). Only
/// under `KILN_CUDA_EARLY_LAUNCH=1` at compile time: on one H100 it made decode slower (1B
/// F16 tg128 632 and 545 t/s against 700 and 709 without, interleaved; the instructions and
/// weight fetches alone, under plain edges, 675 and 659; docs/perf.md, 2026-12-06, seventh
/// session). Kept as a knob for other placements of the trigger and newer GPUs.
pub fn waits_for_prior_grids(sm: &str) -> bool {
    let digits: String = sm
        .trim_start_matches("sm_")
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let hopper = digits.parse::<u32>().is_ok_and(|cap| cap >= 90);
    let asked = EARLY_LAUNCH
        .get()
        .unwrap_or_else(|| std::env::var("KILN_CUDA_EARLY_LAUNCH").as_deref() == Ok("1"));
    hopper && asked
}

thread_local! {
    /// Overrides `KILN_CUDA_EARLY_LAUNCH` for this thread's compiles (tests run in
    /// parallel, so they cannot set the environment).
    pub static EARLY_LAUNCH: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The LLVM target machine for `cuda:<sm>`, or why there is none.
pub fn machine(
    sm: &str,
    target: &Target,
) -> Result<(TargetMachine, GpuDesc, Retarget), CodegenError> {
    let (desc, retarget) = desc(sm).map_err(|why| CodegenError::Unsupported {
        backend: "llvm",
        target: target.to_string(),
        why,
    })?;
    let tm = super::target_machine(&desc, target, RelocMode::Default)?;
    Ok((tm, desc, retarget))
}

/// All kernels of one model -> one PTX module (text).
pub fn compile(kernels: &[Kernel], sm: &str, target: &Target) -> Result<Vec<u8>, CodegenError> {
    let (tm, desc, retarget) = machine(sm, target)?;
    let fail = |msg: String| CodegenError::Kernel {
        kernel: "(module)".into(),
        target: target.to_string(),
        msg,
    };
    let asm = super::compile_module(kernels, &desc, &tm, target, FileType::Assembly, &|_, _| {})?;
    let text =
        std::str::from_utf8(asm.as_slice()).map_err(|e| fail(format!("PTX is not text: {e}")))?;
    // An intrinsic LLVM does not know becomes a call to an undefined function, which only
    // the driver would notice, at load time.
    if let Some(line) = text.lines().find(|l| l.contains(".extern .func")) {
        return Err(fail(format!("PTX calls an undefined function: {line}")));
    }
    Ok(retarget.apply(text).map_err(fail)?.into_bytes())
}

/// The `.target` and `.version` lines the PTX module must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retarget {
    pub target: String,
    /// PTX ISA version, major*10 + minor.
    pub version: u32,
}

impl Retarget {
    /// Rewrites the header LLVM wrote; the rest of the module is untouched.
    pub fn apply(&self, ptx: &str) -> Result<String, String> {
        let mut out = String::with_capacity(ptx.len() + 16);
        let (mut saw_target, mut saw_version) = (false, false);
        for line in ptx.lines() {
            let t = line.trim_start();
            if !saw_version && t.starts_with(".version ") {
                out.push_str(&format!(
                    ".version {}.{}",
                    self.version / 10,
                    self.version % 10
                ));
                saw_version = true;
            } else if !saw_target && t.starts_with(".target ") {
                out.push_str(&format!(".target {}", self.target));
                saw_target = true;
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        if !(saw_target && saw_version) {
            return Err("LLVM's PTX has no .version/.target header".into());
        }
        Ok(out)
    }
}

/// Under `KILN_CUDA_RESIDENT_THREADS=<n>` at compile time (a knob to measure on a GPU;
/// without it nothing is added), tells `ptxas` a kernel's block size (`.maxntid`, every
/// launch's) and that blocks of `n` threads in all should fit on a multiprocessor at once
/// (`.minnctapersm`), which caps its registers at what that leaves each thread (1024: 64).
/// For kernels without matrix instructions or large shared staging (the decode dot
/// products and elementwise grids): a memory-bound kernel with too few threads resident
/// has too few loads in flight; one whose registers the cap spills loses more (the q6_k
/// matvec, docs/perf.md).
pub(super) fn annotate_occupancy<'ctx>(
    ctx: &'ctx inkwell::context::Context,
    module: &inkwell::module::Module<'ctx>,
    func: inkwell::values::FunctionValue<'ctx>,
    k: &Kernel,
    threads: u32,
    shared_bytes: u32,
) -> Result<(), super::super::expr::Fail> {
    let Some(resident) = std::env::var("KILN_CUDA_RESIDENT_THREADS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return Ok(());
    };
    let blocks = resident.min(2048) / threads.max(1);
    let matrix = kiln_compiler::kernel::gpu::matrix_warp(&k.body).is_some();
    if blocks == 0 || matrix || shared_bytes > 16 << 10 {
        return Ok(());
    }
    let i32t = ctx.i32_type();
    let f = func.as_global_value().as_pointer_value();
    for (key, value) in [
        ("maxntidx", threads),
        ("maxntidy", 1),
        ("maxntidz", 1),
        ("minctasm", blocks),
    ] {
        let node = ctx.metadata_node(&[
            f.into(),
            ctx.metadata_string(key).into(),
            i32t.const_int(value as u64, false).into(),
        ]);
        module
            .add_global_metadata("nvvm.annotations", &node)
            .map_err(|e| super::super::expr::Fail::msg(format!("nvvm.annotations: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capability_has_a_description() {
        for sm in capabilities() {
            let (d, r) = desc(sm).unwrap();
            assert_eq!(r.target, sm);
            assert!(d.features.starts_with("+ptx"));
        }
        assert!(desc("sm_61").unwrap_err().contains("sm_70 and newer"));
    }

    #[test]
    fn hopper_and_newer_wait_for_prior_grids_when_asked() {
        EARLY_LAUNCH.set(Some(true));
        let waiting: Vec<&str> = capabilities()
            .filter(|s| waits_for_prior_grids(s))
            .collect();
        assert_eq!(
            waiting,
            ["sm_90", "sm_90a", "sm_100", "sm_100a", "sm_120", "sm_120a"]
        );
        EARLY_LAUNCH.set(Some(false));
        assert_eq!(
            capabilities().filter(|s| waits_for_prior_grids(s)).count(),
            0
        );
        EARLY_LAUNCH.set(None);
    }

    #[test]
    fn retarget_rewrites_only_the_header() {
        let ptx = "//\n.version 7.8\n.target sm_90\n.address_size 64\n.visible .entry k()\n";
        let r = Retarget {
            target: "sm_120".into(),
            version: 87,
        };
        let out = r.apply(ptx).unwrap();
        assert!(out.contains(".version 8.7\n.target sm_120\n.address_size 64"));
        assert!(r.apply("no header").is_err());
    }
}
