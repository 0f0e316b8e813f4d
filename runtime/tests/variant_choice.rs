//! Variant choice against made-up CPUs: the best runnable variant wins, and when none runs
//! the error says for each variant why.

mod common;

use common::{manifest, variant};
use kiln_runtime::{choose_target, choose_variant_with, HostArch, HostCpu, RuntimeError};

fn targets(ts: &[&str]) -> kiln_runtime::Manifest {
    manifest(ts.iter().enumerate().map(|(i, t)| variant(t, i)).collect())
}

#[test]
fn best_runnable_level_wins() {
    let m = targets(&[
        "cpu:x86-64-v2",
        "cpu:x86-64-v4",
        "cpu:x86-64-v3",
        "cuda:sm_90",
    ]);
    let (i, why) = choose_variant_with(&m, &HostCpu::x86_level(3, &[])).unwrap();
    assert_eq!(m.variants[i].target, "cpu:x86-64-v3");
    assert!(why.contains("cpu:x86-64-v4 needs avx512f"), "{why}");
    assert!(why.contains("also runnable: cpu:x86-64-v2"), "{why}");
    let (i, _) = choose_variant_with(&m, &HostCpu::x86_level(4, &[])).unwrap();
    assert_eq!(m.variants[i].target, "cpu:x86-64-v4");
    let (i, _) = choose_variant_with(&m, &HostCpu::x86_level(2, &[])).unwrap();
    assert_eq!(m.variants[i].target, "cpu:x86-64-v2");
}

#[test]
fn named_cpus_rank_by_level_then_features() {
    let m = targets(&["cpu:x86-64-v3", "cpu:znver3", "cpu:x86-64-v4", "cpu:znver4"]);
    let zen3 = HostCpu::x86_level(3, &["adx", "rdseed", "sha", "vaes", "vpclmulqdq"]);
    let (i, _) = choose_variant_with(&m, &zen3).unwrap();
    assert_eq!(m.variants[i].target, "cpu:znver3");
    let skx = HostCpu::x86_level(4, &["adx", "rdseed"]);
    let (i, why) = choose_variant_with(&m, &skx).unwrap();
    assert_eq!(m.variants[i].target, "cpu:x86-64-v4");
    assert!(why.contains("cpu:znver4 needs avx512vnni"), "{why}");
}

#[test]
fn native_runs_only_where_its_features_are() {
    let mut m = targets(&["cpu:x86-64-v2", "cpu:native"]);
    // As LLVM lists a host's features: every tier, plus some it does not imply.
    let v2 = ["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16"];
    let v3 = [
        "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave",
    ];
    let v4 = [
        "avx512f",
        "avx512bw",
        "avx512cd",
        "avx512dq",
        "avx512vl",
        "-avx512fp16",
    ];
    m.variants[1].required_features = v2
        .iter()
        .chain(&v3)
        .chain(&v4)
        .map(|f| {
            if f.starts_with('-') {
                f.to_string()
            } else {
                format!("+{f}")
            }
        })
        .collect();
    let (i, _) = choose_variant_with(&m, &HostCpu::x86_level(4, &[])).unwrap();
    assert_eq!(m.variants[i].target, "cpu:native");
    let (i, why) = choose_variant_with(&m, &HostCpu::x86_level(3, &[])).unwrap();
    assert_eq!(m.variants[i].target, "cpu:x86-64-v2");
    assert!(why.contains("cpu:native needs avx512f, avx512bw"), "{why}");
}

#[test]
fn no_runnable_variant_lists_every_reason() {
    let m = targets(&[
        "cpu:x86-64-v4",
        // No GPU has capability 99.0, so this cannot run whether or not the host has one.
        "cuda:sm_990",
        "cpu:neoverse-v1",
        "cpu:pentium9",
        "tpu:v5",
    ]);
    let err = choose_variant_with(&m, &HostCpu::x86_level(3, &[])).unwrap_err();
    assert!(matches!(err, RuntimeError::NoVariant { .. }));
    let msg = err.to_string();
    for want in [
        "no variant of model `tiny` runs on this host",
        "cpu:x86-64-v4 needs avx512f, avx512bw, avx512cd, avx512dq, avx512vl, which this CPU lacks",
        // Without a driver: "needs NVIDIA's driver ..."; with one: "needs a GPU of ...".
        "cuda:sm_990 needs ",
        "cpu:neoverse-v1 needs an aarch64 CPU, this host is x86-64",
        "cpu:pentium9 is a CPU this kiln does not know",
        "tpu:v5 has unknown target family `tpu`",
    ] {
        assert!(msg.contains(want), "missing `{want}` in: {msg}");
    }
}

#[test]
fn aarch64_hosts_run_aarch64_variants() {
    let arm = HostCpu {
        arch: HostArch::Aarch64,
        features: ["neon", "dotprod", "fp16"].map(String::from).into(),
    };
    let m = targets(&[
        "cpu:x86-64",
        "cpu:aarch64",
        "cpu:neoverse-n1",
        "cpu:neoverse-v1",
    ]);
    let (i, why) = choose_variant_with(&m, &arm).unwrap();
    assert_eq!(m.variants[i].target, "cpu:neoverse-n1");
    assert!(
        why.contains("cpu:neoverse-v1 needs bf16, i8mm, sve"),
        "{why}"
    );
}

#[test]
fn override_picks_the_named_variant_or_says_why_not() {
    let m = targets(&["cpu:x86-64-v2", "cpu:x86-64-v3", "cpu:x86-64-v4"]);
    let host = HostCpu::x86_level(3, &[]);
    let (i, why) = choose_target(&m, &host, Some("cpu:x86-64-v2")).unwrap();
    assert_eq!(
        (i, why.as_str()),
        (0, "cpu:x86-64-v2: chosen by KILN_TARGET")
    );
    let err = choose_target(&m, &host, Some("cpu:x86-64-v4"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "KILN_TARGET=cpu:x86-64-v4: cpu:x86-64-v4 needs avx512f, avx512bw, avx512cd, avx512dq, avx512vl, which this CPU lacks");
    let err = choose_target(&m, &host, Some("cpu:znver4"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "the artifact has no such variant (it has cpu:x86-64-v2, cpu:x86-64-v3, cpu:x86-64-v4)"
        ),
        "{err}"
    );
}
