//! Where a model comes from: a `.kir` file (with weights from a safetensors file or a seed),
//! a GGUF file (decoders and BERT encoders), a Hugging Face checkpoint folder (config.json
//! and safetensors), or a built-in model.

use anyhow::{bail, Context, Result};
use kiln_models::{Model, Weights};
use std::path::Path;

pub fn load(spec: &str, weights: Option<&Path>, seed: Option<u64>) -> Result<Model> {
    if let Some(m) = kiln_models::builtin(spec) {
        if weights.is_some() {
            bail!(
                "{spec} is a built-in model with its own weights; --weights applies to .kir files"
            );
        }
        return Ok(m);
    }
    let path = Path::new(spec);
    if spec.starts_with("builtin:") {
        bail!(
            "unknown built-in model `{spec}`; built-in models: {}",
            kiln_models::BUILTIN_NAMES.join(", ")
        );
    }
    if path.is_dir() {
        if weights.is_some() || seed.is_some() {
            bail!("{}: a checkpoint folder holds its own weights; --weights and --seed apply to .kir files", path.display());
        }
        return Ok(kiln_models::hf::load_dir(path)?);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("kir") => {}
        Some("gguf") => {
            if weights.is_some() || seed.is_some() {
                bail!("{}: a GGUF file holds its own weights; --weights and --seed apply to .kir files", path.display());
            }
            let file = kiln_models::gguf::GgufFile::open(path)?;
            return Ok(kiln_models::load_gguf(&file)?);
        }
        Some(ext) => bail!("{}: unsupported model format `.{ext}` (kiln reads .gguf models, .kir graphs and built-in models: {})", path.display(), kiln_models::BUILTIN_NAMES.join(", ")),
        None => bail!("{}: no file extension; kiln reads .gguf models and .kir graphs", path.display()),
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let graph =
        kiln_ir::text::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    kiln_ir::verify(&graph).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let has_params = !graph.params_named().is_empty();
    let weights = match (weights, seed) {
        (Some(w), _) => kiln_models::safetensors::load(w, &graph)
            .with_context(|| format!("weights for {}", path.display()))?,
        (None, Some(seed)) => Weights::seeded_for(&graph, seed)?,
        (None, None) if has_params => {
            let names: Vec<String> = graph.params_named().into_iter().map(|(n, _)| n).collect();
            bail!("{} declares parameters ({}) but no data was given: pass --weights FILE.safetensors, or --seed N for deterministic test values", path.display(), names.join(", "))
        }
        (None, None) => Weights::default(),
    };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    Ok(Model {
        name,
        graph,
        weights,
        vocab: None,
    })
}
