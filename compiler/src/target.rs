//! Targets, spelled `<family>:<arch>` everywhere (command line, artifact, tests, Nix).
//!
//! Parsing checks the spelling only; whether this build can emit code for a target is the
//! code generators' capability query, and whether a host can run it is the runtime's.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// `cpu:x86-64-v3`, `cpu:znver4`, `cpu:aarch64`, `cpu:native`, ...
    Cpu(String),
    /// `cuda:sm_90a`
    Cuda(String),
    /// `vulkan:spv1.3`
    Vulkan(String),
    /// `hip:gfx1100`
    Hip(String),
}

/// What the CPU code generators need to know about a `cpu:` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuDesc {
    pub triple: &'static str,
    /// The LLVM CPU name (`x86-64-v3`, `znver4`, `neoverse-v1`, `generic`, or the host's).
    pub llvm_cpu: String,
    pub features: String,
    /// Widest vector register in bits: decides f32 lanes of vectorised loops and tiles.
    pub vector_bits: u32,
    pub aarch64: bool,
    /// f16 <-> f32 conversion instructions (x86 F16C, every AArch64): half weights widen
    /// with one instruction per vector instead of a dozen integer operations.
    pub half_conversions: bool,
    /// The widest vectors (bits) of x86's byte multiply-adds (`pmaddubsw`, `pmaddwd`): 128
    /// with SSSE3, 256 with AVX2, 512 with AVX-512BW, 0 without them (or off x86). Byte dot
    /// products (`Expr::DotBytes`) use them; elsewhere they widen and multiply.
    pub byte_dot_bits: u32,
    /// The widest vectors (bits) of x86's VNNI byte dot product (`vpdpbusd`: both of the
    /// above and the add in one instruction): 512 with AVX512-VNNI (256 and 128 through
    /// AVX512-VL), 256 with AVX-VNNI, 0 without. At most `byte_dot_bits`.
    pub vnni_bits: u32,
}

pub const X86_LEVELS: [&str; 4] = ["x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"];

/// Named x86 CPUs, their vector width and VNNI width (see `CpuDesc::vnni_bits`); anything
/// else LLVM accepts also works, with 256-bit vectors assumed (`kiln targets` lists these
/// as examples, not a limit).
const X86_NAMED: [(&str, u32, u32); 12] = [
    ("haswell", 256, 0),
    ("broadwell", 256, 0),
    ("skylake", 256, 0),
    ("alderlake", 256, 256),
    ("znver2", 256, 0),
    ("znver3", 256, 0),
    ("skylake-avx512", 512, 0),
    ("icelake-server", 512, 512),
    ("tigerlake", 512, 512),
    ("sapphirerapids", 512, 512),
    ("znver4", 512, 512),
    ("znver5", 512, 512),
];

impl Target {
    pub fn family(&self) -> &'static str {
        match self {
            Target::Cpu(_) => "cpu",
            Target::Cuda(_) => "cuda",
            Target::Vulkan(_) => "vulkan",
            Target::Hip(_) => "hip",
        }
    }

    pub fn arch(&self) -> &str {
        match self {
            Target::Cpu(a) | Target::Cuda(a) | Target::Vulkan(a) | Target::Hip(a) => a,
        }
    }

    /// The CPU description, for `cpu:` targets. `native` resolves to `host_cpu`, which
    /// the caller takes from LLVM (`TargetMachine::get_host_cpu_name`) where it has it.
    pub fn cpu_desc(&self, host_cpu: Option<(&str, &str)>) -> Option<CpuDesc> {
        let Target::Cpu(arch) = self else { return None };
        let arch = arch.as_str();
        if arch == "aarch64" || crate::cpu_names::AARCH64.contains(&arch) {
            let cpu = if arch == "aarch64" { "generic" } else { arch };
            return Some(CpuDesc {
                triple: "aarch64-unknown-linux-gnu",
                llvm_cpu: cpu.into(),
                features: "+neon".into(),
                vector_bits: 128,
                aarch64: true,
                half_conversions: true,
                byte_dot_bits: 0,
                vnni_bits: 0,
            });
        }
        let x86 =
            |cpu: &str, bits: u32, features: &str, f16c: bool, (byte_dot, vnni): (u32, u32)| {
                CpuDesc {
                    triple: "x86_64-unknown-linux-gnu",
                    llvm_cpu: cpu.into(),
                    features: features.into(),
                    vector_bits: bits,
                    aarch64: false,
                    half_conversions: f16c,
                    byte_dot_bits: byte_dot,
                    vnni_bits: vnni.min(byte_dot),
                }
            };
        Some(match arch {
            "native" => {
                let (cpu, feats) = host_cpu.unwrap_or(("x86-64-v2", ""));
                let bits = if feats.contains("+avx512f") {
                    512
                } else if feats.contains("+avx2") {
                    256
                } else {
                    128
                };
                let byte_dot = if feats.contains("+avx512bw") {
                    512
                } else if feats.contains("+avx2") {
                    256
                } else if feats.contains("+ssse3") {
                    128
                } else {
                    0
                };
                let vnni = if feats.contains("+avx512vnni") && feats.contains("+avx512vl") {
                    512
                } else if feats.contains("+avxvnni") {
                    256
                } else {
                    0
                };
                x86(
                    cpu,
                    bits,
                    feats,
                    feats.contains("+f16c"),
                    (byte_dot.min(bits), vnni.min(bits)),
                )
            }
            "x86-64" => x86(arch, 128, "", false, (0, 0)),
            "x86-64-v2" => x86(arch, 128, "", false, (128, 0)),
            "x86-64-v3" => x86(arch, 256, "", true, (256, 0)),
            // AVX-512 with 512-bit vectors preferred: LLVM's default for v4 caps at 256.
            "x86-64-v4" => x86(
                arch,
                512,
                "+prefer-no-gather,-prefer-256-bit",
                true,
                (512, 0),
            ),
            named => {
                // Every CPU in the named list has AVX2, so F16C; other names are assumed
                // to lack it (correct either way, only slower).
                let known = X86_NAMED.iter().find(|(n, _, _)| *n == named);
                let bits = known.map_or(256, |(_, b, _)| *b);
                let feats = if bits == 512 { "-prefer-256-bit" } else { "" };
                // The named 512-bit CPUs all have AVX-512BW.
                let byte_dot = if known.is_some() { bits } else { 0 };
                let vnni = known.map_or(0, |(_, _, v)| *v);
                x86(named, bits, feats, known.is_some(), (byte_dot, vnni))
            }
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.family(), self.arch())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unknown target `{spelling}`: {why}; targets are spelled cpu:<arch> (cpu:x86-64-v3, cpu:znver4, cpu:aarch64, cpu:native), cuda:sm_<NN> (cuda:sm_90a), vulkan:spv1.3 or hip:gfx<NNNN> (hip:gfx1100)")]
pub struct TargetError {
    pub spelling: String,
    pub why: String,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        let err = |why: &str| TargetError {
            spelling: s.to_string(),
            why: why.to_string(),
        };
        // Vulkan has one sensible default: SPIR-V 1.3 is what every Vulkan 1.1 driver takes.
        let spelled = if s == "vulkan" { "vulkan:spv1.3" } else { s };
        let (family, arch) = spelled
            .split_once(':')
            .ok_or_else(|| err("missing `<family>:` (only `vulkan` may stand alone)"))?;
        let ok_chars = !arch.is_empty()
            && arch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:+".contains(c));
        if !ok_chars {
            return Err(err(
                "the architecture is empty or has unexpected characters",
            ));
        }
        match family {
            "cpu" => {
                let known = arch == "native"
                    || arch == "aarch64"
                    || crate::cpu_names::X86_64.contains(&arch)
                    || crate::cpu_names::AARCH64.contains(&arch);
                if known {
                    Ok(Target::Cpu(arch.into()))
                } else {
                    Err(err("LLVM 19 knows no such CPU (`kiln targets` shows examples; `llc -mcpu=help` lists all)"))
                }
            }
            "cuda" => {
                let digits = arch.strip_prefix("sm_").map(|d| d.trim_end_matches('a'));
                match digits {
                    Some(d)
                        if !d.is_empty()
                            && d.chars().all(|c| c.is_ascii_digit())
                            && d.parse::<u32>().is_ok_and(|n| n >= 50) =>
                    {
                        Ok(Target::Cuda(arch.into()))
                    }
                    _ => Err(err(
                        "CUDA architectures are sm_<major><minor>, e.g. sm_80, sm_90a",
                    )),
                }
            }
            "vulkan" => match arch.strip_prefix("spv1.") {
                Some(m) if m.parse::<u32>().is_ok_and(|m| (3..=6).contains(&m)) => {
                    Ok(Target::Vulkan(arch.into()))
                }
                _ => Err(err("Vulkan targets are spv1.3 .. spv1.6")),
            },
            "hip" => {
                let base = arch.split(':').next().unwrap_or_default();
                match base.strip_prefix("gfx") {
                    Some(d) if d.len() >= 3 && d.chars().all(|c| c.is_ascii_hexdigit()) => {
                        Ok(Target::Hip(arch.into()))
                    }
                    _ => Err(err("AMD architectures are gfx<NNN>, e.g. gfx90a, gfx1100")),
                }
            }
            other => Err(err(&format!("unknown family `{other}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in [
            "cpu:x86-64-v3",
            "cpu:znver4",
            "cpu:aarch64",
            "cuda:sm_90a",
            "cuda:sm_80",
            "vulkan:spv1.3",
            "hip:gfx1100",
            "hip:gfx90a",
        ] {
            let t: Target = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        let bare: Target = "vulkan".parse().unwrap();
        assert_eq!(bare.to_string(), "vulkan:spv1.3");
    }

    #[test]
    fn bad_spellings_say_why() {
        for (s, why) in [
            ("x86-64-v3", "missing"),
            ("cuda", "only `vulkan` may stand alone"),
            ("gpu:foo", "unknown family `gpu`"),
            ("cuda:90", "sm_<major><minor>"),
            ("cuda:sm_", "sm_<major><minor>"),
            ("hip:rdna3", "gfx<NNN>"),
            ("vulkan:spv2.0", "spv1.3"),
            ("cpu:", "empty"),
            ("cpu:notacpu", "no such CPU"),
        ] {
            let e = s.parse::<Target>().unwrap_err();
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn cpu_descs_pick_vector_width() {
        let d = |s: &str| s.parse::<Target>().unwrap().cpu_desc(None).unwrap();
        assert_eq!(d("cpu:x86-64-v2").vector_bits, 128);
        assert_eq!(d("cpu:x86-64-v3").vector_bits, 256);
        assert_eq!(d("cpu:x86-64-v4").vector_bits, 512);
        assert_eq!(d("cpu:znver4").vector_bits, 512);
        assert!(d("cpu:neoverse-v1").aarch64);
        // Hardware half conversions: F16C from x86-64-v3 and on the named AVX2 CPUs.
        assert!(!d("cpu:x86-64-v2").half_conversions);
        assert!(d("cpu:x86-64-v3").half_conversions && d("cpu:znver2").half_conversions);
        assert!(!d("cpu:sandybridge").half_conversions);
        assert!(d("cpu:aarch64").half_conversions);
        let byte_dot = |t: &str| d(t).byte_dot_bits;
        assert_eq!(byte_dot("cpu:x86-64"), 0);
        assert_eq!(byte_dot("cpu:x86-64-v2"), 128);
        assert_eq!(byte_dot("cpu:znver3"), 256);
        assert_eq!(byte_dot("cpu:x86-64-v4"), 512);
        assert_eq!(byte_dot("cpu:aarch64"), 0);
        // VNNI: none in the x86-64 levels (v4 does not include it), on the named CPUs that
        // have it, from the host's features for `native`.
        let vnni = |t: &str| d(t).vnni_bits;
        assert_eq!(vnni("cpu:x86-64-v4"), 0);
        assert_eq!(vnni("cpu:znver3"), 0);
        assert_eq!(vnni("cpu:znver4"), 512);
        assert_eq!(vnni("cpu:alderlake"), 256);
        let native = |feats: &str| {
            "cpu:native"
                .parse::<Target>()
                .unwrap()
                .cpu_desc(Some(("znver4", feats)))
                .unwrap()
                .vnni_bits
        };
        assert_eq!(
            native("+avx2,+avx512f,+avx512bw,+avx512vl,+avx512vnni"),
            512
        );
        assert_eq!(native("+avx2,+avxvnni"), 256);
        assert_eq!(native("+avx2,+avx512f,+avx512bw,+avx512vnni"), 0);
        assert!("cuda:sm_90"
            .parse::<Target>()
            .unwrap()
            .cpu_desc(None)
            .is_none());
    }
}
