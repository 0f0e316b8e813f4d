//! `kiln run model.gguf`: the GGUF file compiled for this host once, then reused.
//!
//! The artifact is kept under `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else
//! `~/.cache/kiln`, named by a hash of what decides its contents: the kiln version, the
//! file's canonical path, size and modification time, the targets and the compile choices
//! (`--quantize-activations`). Editing or replacing
//! the file, or upgrading kiln, compiles afresh; a half-written artifact never appears
//! (artifacts are written to a temporary file and renamed).

use crate::assemble::{BackendChoice, Choices};
use anyhow::{Context, Result};
use kiln_compiler::Target;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The cache directory (not created here).
pub fn cache_dir() -> Result<PathBuf> {
    kiln_runtime::cache_dir::cache_dir().map_err(anyhow::Error::msg)
}

/// The targets a GGUF file is compiled for when run directly: this CPU, and this
/// machine's GPU when it has a usable one.
pub fn host_targets() -> Vec<Target> {
    let mut t = vec![Target::Cpu("native".into())];
    if let Ok((_, (major, minor))) = kiln_runtime::cuda::device() {
        t.push(Target::Cuda(format!("sm_{major}{minor}")));
    }
    t
}

/// The cached artifact for `gguf`, compiling it first if there is none; activations
/// quantized for byte dot products when `quantize_activations`.
pub fn artifact_for(gguf: &Path, quantize_activations: bool) -> Result<PathBuf> {
    let targets = host_targets();
    let choices = Choices {
        quantize_activations,
        ..Choices::new(BackendChoice::Llvm)
    };
    let path = cache_dir()?.join(format!("{}.kiln", key(gguf, &targets, &choices)?));
    if path.is_file() {
        eprintln!(
            "using {} (compiled earlier from {})",
            path.display(),
            gguf.display()
        );
        return Ok(path);
    }
    let names: Vec<String> = targets.iter().map(Target::to_string).collect();
    eprintln!(
        "compiling {} for {} (once; kept in {})",
        gguf.display(),
        names.join(", "),
        path.display()
    );
    let model = crate::model_source::load(&gguf.to_string_lossy(), None, None)?;
    let dir = path.parent().expect("a file in the cache directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::session::compile_with(&model, &targets, &choices, &path)?;
    Ok(path)
}

fn key(gguf: &Path, targets: &[Target], choices: &Choices) -> Result<String> {
    let canonical = gguf
        .canonicalize()
        .with_context(|| format!("{}", gguf.display()))?;
    let meta = std::fs::metadata(&canonical).with_context(|| format!("{}", gguf.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(kiln_runtime::CODE_ABI.to_le_bytes());
    h.update(canonical.to_string_lossy().as_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(mtime.to_le_bytes());
    for t in targets {
        h.update(t.to_string());
        h.update([0]);
    }
    h.update(format!("{choices:?}"));
    let digest = h.finalize();
    let stem = gguf.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{stem}-{hex}"))
}
