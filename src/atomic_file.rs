//! Output files appear whole or not at all: written to a temporary file in the
//! destination's directory, then renamed over the destination.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

pub fn write_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut w).with_context(|| format!("writing {}", path.display()))?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| Ok(w.write_all(bytes)?))
}
