//! Turns an ELF object into a shared object with LLVM's `ld.lld`, which links for every
//! architecture kiln targets (a host `cc` could not link AArch64 objects here). Kernels
//! call nothing outside themselves, so no C library is linked.

use crate::CodegenError;
use std::path::PathBuf;
use std::process::Command;

/// Where `ld.lld` is: `KILN_LLD`, then `ld.lld-19`/`ld.lld` on PATH, then LLVM's prefix.
pub fn find_lld() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_LLD") {
        return Some(PathBuf::from(p));
    }
    let candidates = ["ld.lld-19", "ld.lld"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for c in candidates {
            let p = dir.join(c);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let prefix = std::env::var_os("LLVM_SYS_191_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/llvm-19".into());
    let p = prefix.join("bin/ld.lld");
    p.is_file().then_some(p)
}

pub fn link_shared(object: &[u8], target: &str) -> Result<Vec<u8>, CodegenError> {
    let err = |msg: String| CodegenError::Link {
        target: target.to_string(),
        msg,
    };
    let lld = find_lld()
        .ok_or_else(|| err("ld.lld not found: install lld-19 (Debian) or set KILN_LLD".into()))?;
    let dir = tempfile::tempdir().map_err(|e| err(format!("temporary directory: {e}")))?;
    let obj = dir.path().join("kernels.o");
    let so = dir.path().join("kernels.so");
    std::fs::write(&obj, object).map_err(|e| err(format!("writing object: {e}")))?;
    let out = Command::new(&lld)
        .args(["-shared", "--hash-style=both", "-z", "noexecstack", "-o"])
        .arg(&so)
        .arg(&obj)
        .output()
        .map_err(|e| err(format!("running {}: {e}", lld.display())))?;
    if !out.status.success() {
        return Err(err(format!(
            "{} failed: {}",
            lld.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::read(&so).map_err(|e| err(format!("reading linked object: {e}")))
}
