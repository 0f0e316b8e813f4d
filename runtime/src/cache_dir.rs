//! Where kiln keeps what it can rebuild but would rather not: compiled GGUF artifacts and
//! drivers' compiled pipelines. `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else
//! `~/.cache/kiln`.

use std::path::PathBuf;

/// The cache directory (not created here), or why there is none.
pub fn cache_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("KILN_CACHE_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("kiln"));
    }
    let home = std::env::var_os("HOME")
        .ok_or("cannot find a cache directory: set KILN_CACHE_DIR (or HOME)")?;
    Ok(PathBuf::from(home).join(".cache/kiln"))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a reader never sees half a file.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
