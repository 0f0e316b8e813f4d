//! Which `cpu:` targets this host can run, and how good each is.
//!
//! An artifact may carry code for several CPU levels; running code built for a feature the
//! CPU lacks dies with SIGILL, so the runtime decides from detected features, never from
//! the target name alone. Detection is a value ([`HostCpu`]) so tests can inject any CPU.
//! Feature names use LLVM's spelling (`bmi`, `cx16`, `sse4.1`), the compiler's spelling.

use std::collections::BTreeSet;

const X86_V2: &[&str] = &["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16"];
#[rustfmt::skip]
const X86_V3: &[&str] = &["avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"];
const X86_V4: &[&str] = &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];

/// Ice Lake's AVX-512 additions, shared by later Intel and AMD cores.
#[rustfmt::skip]
const ICL: &[&str] = &[
    "avx512vnni", "avx512vbmi", "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq", "avx512ifma",
    "gfni", "vaes", "vpclmulqdq",
];
const ADX: &[&str] = &["adx", "rdseed"];

/// Named x86 CPUs: the x86-64 level they imply and the feature groups they add on top.
#[rustfmt::skip]
const X86_NAMED: &[(&str, u8, &[&[&str]])] = &[
    ("haswell", 3, &[]),
    ("broadwell", 3, &[ADX]),
    ("skylake", 3, &[ADX]),
    ("alderlake", 3, &[ADX, &["sha", "gfni", "vaes", "vpclmulqdq"]]),
    ("znver2", 3, &[ADX, &["sha"]]),
    ("znver3", 3, &[ADX, &["sha", "vaes", "vpclmulqdq"]]),
    ("skylake-avx512", 4, &[ADX]),
    ("cascadelake", 4, &[ADX, &["avx512vnni"]]),
    ("icelake-server", 4, &[ICL]),
    ("tigerlake", 4, &[ICL]),
    ("sapphirerapids", 4, &[ICL, &["avx512bf16", "avx512fp16"]]),
    ("znver4", 4, &[ICL, &["avx512bf16"]]),
    ("znver5", 4, &[ICL, &["avx512bf16"]]),
];

/// Named aarch64 CPUs and the features they need beyond the baseline (NEON).
#[rustfmt::skip]
const AARCH64_NAMED: &[(&str, &[&str])] = &[
    ("neoverse-n1", &["dotprod", "fp16"]),
    ("neoverse-v1", &["dotprod", "fp16", "bf16", "i8mm", "sve"]),
    ("neoverse-n2", &["dotprod", "fp16", "bf16", "i8mm", "sve", "sve2"]),
    ("neoverse-v2", &["dotprod", "fp16", "bf16", "i8mm", "sve", "sve2"]),
];

/// Every x86 feature this runtime can detect; a `cpu:native` variant's
/// `required_features` should list only these (others make it unrunnable).
#[rustfmt::skip]
pub const X86_DETECTABLE: &[&str] = &[
    "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16", "avx", "avx2", "bmi", "bmi2", "f16c",
    "fma", "lzcnt", "movbe", "xsave", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl",
    "avx512vnni", "avx512vbmi", "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq", "avx512ifma",
    "avx512bf16", "avx512fp16", "gfni", "vaes", "vpclmulqdq", "adx", "rdseed", "sha", "aes",
    "pclmulqdq",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostArch {
    X86_64,
    Aarch64,
    Other(String),
}

/// What the host CPU is and which features it has (LLVM spelling).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCpu {
    pub arch: HostArch,
    pub features: BTreeSet<String>,
}

/// How good a runnable variant is; larger is better. Compared field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    /// x86-64 level 1..=4 (aarch64: 1).
    pub level: u8,
    /// Features required beyond the level.
    pub extra: usize,
}

impl HostCpu {
    /// The machine this process runs on.
    pub fn detect() -> HostCpu {
        detect_host()
    }

    /// A made-up x86-64 CPU, for tests: the features of `level` plus `extra`.
    pub fn x86_level(level: u8, extra: &[&str]) -> HostCpu {
        let mut features: BTreeSet<String> = level_features(level).map(String::from).collect();
        features.extend(extra.iter().map(|f| normalise(f).to_string()));
        HostCpu {
            arch: HostArch::X86_64,
            features,
        }
    }

    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(normalise(feature))
    }

    /// Whether this CPU can run code for `cpu:<arch>` that needs `required` features too:
    /// its rank, or why not (e.g. "needs avx512f, avx512bw, which this CPU lacks").
    pub fn can_run(&self, arch: &str, required: &[String]) -> Result<Rank, String> {
        let (need_arch, level, mut needs) = requirements(arch)?;
        if need_arch != self.arch {
            let want = if need_arch == HostArch::X86_64 {
                "x86-64"
            } else {
                "aarch64"
            };
            return Err(format!(
                "needs an {want} CPU, this host is {}",
                self.arch_name()
            ));
        }
        for f in required.iter().map(|f| f.as_str()) {
            // LLVM feature strings: `+avx2` needed, `-avx512f` explicitly not used.
            let f = f.trim().trim_start_matches('+');
            if !f.is_empty() && !f.starts_with('-') {
                let f = normalise(f);
                if !needs.contains(&f) {
                    needs.push(f);
                }
            }
        }
        let undetectable: Vec<&str> = match self.arch {
            HostArch::X86_64 => needs
                .iter()
                .copied()
                .filter(|f| !X86_DETECTABLE.contains(f))
                .collect(),
            _ => Vec::new(),
        };
        if !undetectable.is_empty() {
            return Err(format!(
                "needs {}, which this kiln cannot detect",
                undetectable.join(", ")
            ));
        }
        let missing: Vec<&str> = needs.iter().copied().filter(|f| !self.has(f)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "needs {}, which this CPU lacks",
                missing.join(", ")
            ));
        }
        // `native`: the level is the highest whose own tier of features is all listed
        // (LLVM's host feature lists name every feature, lower tiers included).
        let tiers: [&[&str]; 3] = [X86_V2, X86_V3, X86_V4];
        let level = level.unwrap_or_else(|| {
            (2..=4u8)
                .rev()
                .find(|&l| tiers[l as usize - 2].iter().all(|f| needs.contains(f)))
                .unwrap_or(1)
        });
        let base = level_features(level).filter(|f| needs.contains(f)).count();
        Ok(Rank {
            level,
            extra: needs.len() - base,
        })
    }

    fn arch_name(&self) -> &str {
        match &self.arch {
            HostArch::X86_64 => "x86-64",
            HostArch::Aarch64 => "aarch64",
            HostArch::Other(a) => a,
        }
    }
}

/// The architecture, x86 level (`None` for `native`: decided by its feature list) and the
/// features a `cpu:` arch name needs; unknown names are an error saying so.
fn requirements(arch: &str) -> Result<(HostArch, Option<u8>, Vec<&'static str>), String> {
    if let Some(l) = ["x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"]
        .iter()
        .position(|n| *n == arch)
    {
        let level = l as u8 + 1;
        return Ok((
            HostArch::X86_64,
            Some(level),
            level_features(level).collect(),
        ));
    }
    if arch == "native" {
        // The compiler resolves `native` on x86-64 hosts only (see kiln-compiler's Target).
        return Ok((HostArch::X86_64, None, Vec::new()));
    }
    if let Some((_, level, extra)) = X86_NAMED.iter().find(|(n, _, _)| *n == arch) {
        let mut needs: Vec<&str> = level_features(*level).collect();
        needs.extend(extra.iter().flat_map(|g| g.iter().copied()));
        return Ok((HostArch::X86_64, Some(*level), needs));
    }
    if arch == "aarch64" {
        return Ok((HostArch::Aarch64, Some(1), Vec::new()));
    }
    if let Some((_, extra)) = AARCH64_NAMED.iter().find(|(n, _)| *n == arch) {
        return Ok((HostArch::Aarch64, Some(1), extra.to_vec()));
    }
    Err(format!(
        "is a CPU this kiln does not know (known: x86-64[-v2|-v3|-v4], native, aarch64, {})",
        known_names()
    ))
}

fn known_names() -> String {
    let x86 = X86_NAMED.iter().map(|(n, _, _)| *n);
    let arm = AARCH64_NAMED.iter().map(|(n, _)| *n);
    x86.chain(arm).collect::<Vec<_>>().join(", ")
}

/// Features of x86-64 level `level` (1 = baseline, which needs nothing to be checked).
fn level_features(level: u8) -> impl Iterator<Item = &'static str> {
    let lists: [&[&str]; 3] = [X86_V2, X86_V3, X86_V4];
    lists
        .into_iter()
        .take(level.saturating_sub(1) as usize)
        .flatten()
        .copied()
}

/// LLVM's spelling of a feature that Rust's detector spells differently.
fn normalise(feature: &str) -> &str {
    match feature {
        "bmi1" => "bmi",
        "cmpxchg16b" => "cx16",
        "sse4_1" => "sse4.1",
        "sse4_2" => "sse4.2",
        f => f,
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_host() -> HostCpu {
    let mut features = BTreeSet::new();
    macro_rules! probe {
        ($($name:tt => $llvm:expr),* $(,)?) => {
            $(if std::is_x86_feature_detected!($name) { features.insert($llvm.to_string()); })*
        };
    }
    probe!(
        "sse3" => "sse3", "ssse3" => "ssse3", "sse4.1" => "sse4.1", "sse4.2" => "sse4.2", "popcnt" => "popcnt",
        "cmpxchg16b" => "cx16", "avx" => "avx", "avx2" => "avx2", "bmi1" => "bmi", "bmi2" => "bmi2",
        "f16c" => "f16c", "fma" => "fma", "lzcnt" => "lzcnt", "movbe" => "movbe", "xsave" => "xsave",
        "avx512f" => "avx512f", "avx512bw" => "avx512bw", "avx512cd" => "avx512cd", "avx512dq" => "avx512dq",
        "avx512vl" => "avx512vl", "avx512vnni" => "avx512vnni", "avx512vbmi" => "avx512vbmi",
        "avx512vbmi2" => "avx512vbmi2", "avx512bitalg" => "avx512bitalg", "avx512vpopcntdq" => "avx512vpopcntdq",
        "avx512ifma" => "avx512ifma", "avx512bf16" => "avx512bf16", "avx512fp16" => "avx512fp16",
        "gfni" => "gfni", "vaes" => "vaes", "vpclmulqdq" => "vpclmulqdq", "adx" => "adx", "rdseed" => "rdseed",
        "sha" => "sha", "aes" => "aes", "pclmulqdq" => "pclmulqdq",
    );
    HostCpu {
        arch: HostArch::X86_64,
        features,
    }
}

#[cfg(target_arch = "aarch64")]
fn detect_host() -> HostCpu {
    let mut features = BTreeSet::new();
    macro_rules! probe {
        ($($name:tt),*) => { $(if std::arch::is_aarch64_feature_detected!($name) { features.insert($name.to_string()); })* };
    }
    probe!("neon", "dotprod", "fp16", "bf16", "i8mm", "sve", "sve2");
    HostCpu {
        arch: HostArch::Aarch64,
        features,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect_host() -> HostCpu {
    HostCpu {
        arch: HostArch::Other(std::env::consts::ARCH.to_string()),
        features: BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_named_cpus() {
        let v3 = HostCpu::x86_level(3, &[]);
        assert_eq!(v3.can_run("x86-64", &[]), Ok(Rank { level: 1, extra: 0 }));
        assert_eq!(
            v3.can_run("x86-64-v3", &[]),
            Ok(Rank { level: 3, extra: 0 })
        );
        assert_eq!(v3.can_run("haswell", &[]), Ok(Rank { level: 3, extra: 0 }));
        let e = v3.can_run("x86-64-v4", &[]).unwrap_err();
        assert!(e.starts_with("needs avx512f, avx512bw"), "{e}");
        assert!(v3.can_run("znver3", &[]).unwrap_err().contains("sha"));
        assert!(v3
            .can_run("aarch64", &[])
            .unwrap_err()
            .contains("aarch64 CPU"));
        assert!(v3
            .can_run("pentium9", &[])
            .unwrap_err()
            .contains("does not know"));

        let zen4_extra: Vec<&str> = ICL.iter().copied().chain(["avx512bf16"]).collect();
        let zen4 = HostCpu::x86_level(4, &zen4_extra);
        let r = zen4.can_run("znver4", &[]).unwrap();
        assert_eq!(
            r,
            Rank {
                level: 4,
                extra: zen4_extra.len()
            }
        );
        assert!(r > zen4.can_run("x86-64-v4", &[]).unwrap());
        assert!(zen4
            .can_run("sapphirerapids", &[])
            .unwrap_err()
            .contains("avx512fp16"));
    }

    #[test]
    fn native_needs_its_recorded_features() {
        let v3 = HostCpu::x86_level(3, &["adx"]);
        let feats = |fs: &[&str]| fs.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        let ok = v3
            .can_run("native", &feats(&["+avx2", "+bmi1", "-avx512f", "+adx"]))
            .unwrap();
        assert_eq!(ok, Rank { level: 1, extra: 3 });
        let mut all = feats(X86_V2);
        all.extend(feats(X86_V3));
        assert_eq!(v3.can_run("native", &all).unwrap().level, 3);
        assert!(v3
            .can_run("native", &feats(&["+avx512f"]))
            .unwrap_err()
            .contains("lacks"));
        assert!(v3
            .can_run("native", &feats(&["+prfchw"]))
            .unwrap_err()
            .contains("cannot detect"));
    }

    #[test]
    fn detection_finds_a_runnable_baseline() {
        let host = HostCpu::detect();
        if cfg!(target_arch = "x86_64") {
            assert!(host.can_run("x86-64", &[]).is_ok());
            assert!(host.has("sse3") || host.features.is_empty());
        }
    }
}
