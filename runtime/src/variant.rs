//! Choosing which of an artifact's variants to run on this host.
//!
//! One artifact carries code for several targets (`cpu:x86-64-v3`, `cpu:x86-64-v4`,
//! `cuda:sm_90`); the runtime picks the best one the host can run, or says for each variant
//! why it cannot. `KILN_TARGET` overrides the choice (to compare variants, or to avoid one).

use crate::cpu::features::{HostCpu, Rank};
use crate::error::RuntimeError;
use crate::manifest::Manifest;

/// Environment variable that forces a variant, spelled like its target (`cpu:x86-64-v2`).
pub const TARGET_ENV: &str = "KILN_TARGET";

/// The variant to run on this machine, honouring `KILN_TARGET`: its index and why it won.
pub fn choose_variant(manifest: &Manifest) -> Result<(usize, String), RuntimeError> {
    let requested = std::env::var(TARGET_ENV).ok().filter(|s| !s.is_empty());
    choose_target(manifest, &HostCpu::detect(), requested.as_deref())
}

/// The best variant for `host`, ignoring the environment.
pub fn choose_variant_with(
    manifest: &Manifest,
    host: &HostCpu,
) -> Result<(usize, String), RuntimeError> {
    choose_target(manifest, host, None)
}

/// The best variant for `host`, or the one named by `requested` if it can run there.
pub fn choose_target(
    manifest: &Manifest,
    host: &HostCpu,
    requested: Option<&str>,
) -> Result<(usize, String), RuntimeError> {
    let support: Vec<Result<Rank, String>> = manifest
        .variants
        .iter()
        .map(|v| variant_support(&v.target, &v.required_features, host))
        .collect();
    if let Some(req) = requested {
        let err = |why: String| RuntimeError::Override {
            requested: req.to_string(),
            why,
        };
        let Some(i) = manifest.variants.iter().position(|v| v.target == req) else {
            let have: Vec<&str> = manifest
                .variants
                .iter()
                .map(|v| v.target.as_str())
                .collect();
            return Err(err(format!(
                "the artifact has no such variant (it has {})",
                have.join(", ")
            )));
        };
        return match &support[i] {
            Ok(_) => Ok((i, format!("{req}: chosen by {TARGET_ENV}"))),
            Err(why) => Err(err(format!("{req} {why}"))),
        };
    }
    let mut best: Option<(usize, Rank)> = None;
    for (i, s) in support.iter().enumerate() {
        if let Ok(rank) = s {
            if best.is_none_or(|(_, b)| *rank > b) {
                best = Some((i, *rank));
            }
        }
    }
    let not_runnable: Vec<String> = manifest
        .variants
        .iter()
        .zip(&support)
        .filter_map(|(v, s)| s.as_ref().err().map(|why| format!("{} {why}", v.target)))
        .collect();
    let Some((chosen, _)) = best else {
        let reasons = if not_runnable.is_empty() {
            "the artifact has no variants".into()
        } else {
            not_runnable.join("; ")
        };
        return Err(RuntimeError::NoVariant {
            model: manifest.model.clone(),
            reasons,
        });
    };
    let target = &manifest.variants[chosen].target;
    let others: Vec<&str> = manifest
        .variants
        .iter()
        .zip(&support)
        .enumerate()
        .filter(|(i, (_, s))| *i != chosen && s.is_ok())
        .map(|(_, (v, _))| v.target.as_str())
        .collect();
    let mut why = format!("{target}: the best variant this host runs");
    if !others.is_empty() {
        why += &format!("; also runnable: {}", others.join(", "));
    }
    if !not_runnable.is_empty() {
        why += &format!("; not runnable: {}", not_runnable.join("; "));
    }
    Ok((chosen, why))
}

/// Whether `target` can run here: its rank, or why not ("needs avx512f, which this CPU
/// lacks"; "needs the cuda runtime, not built into this kiln").
pub fn variant_support(
    target: &str,
    required_features: &[String],
    host: &HostCpu,
) -> Result<Rank, String> {
    let Some((family, arch)) = target.split_once(':') else {
        return Err("is not spelled <family>:<arch>".into());
    };
    match family {
        "cpu" => host.can_run(arch, required_features),
        "cuda" => crate::cuda::support(arch),
        "hip" => crate::hip::support(arch),
        "vulkan" => crate::vulkan::support(arch),
        other => Err(format!("has unknown target family `{other}`")),
    }
}
