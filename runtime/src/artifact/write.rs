//! Writing artifacts: the compiler's last step.
//!
//! The file is written to a temporary file beside the destination, synced, then renamed
//! over it, so a reader sees either the old artifact or the complete new one, never half.

use super::{
    ArtifactError, SectionKind, ENTRY_LEN, FORMAT_VERSION, HEADER_LEN, MAGIC, MANIFEST_KIND,
    SECTION_ALIGN,
};
use crate::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One section's contents, numbered by its position in the slice given to [`write_artifact`].
#[derive(Clone, Copy, Debug)]
pub struct SectionData<'a> {
    pub kind: SectionKind,
    pub bytes: &'a [u8],
}

/// Writes `manifest` and `sections` to `path` atomically. The manifest is checked against
/// the sections first (indices, kinds, weight ranges), so a bad plan never reaches disk.
pub fn write_artifact(
    path: &Path,
    manifest: &Manifest,
    sections: &[SectionData<'_>],
) -> Result<(), ArtifactError> {
    let werr = |msg: String| ArtifactError::Write {
        path: path.to_path_buf(),
        msg,
    };
    let kinds: Vec<(SectionKind, u64)> = sections
        .iter()
        .map(|s| (s.kind, s.bytes.len() as u64))
        .collect();
    manifest
        .check(&kinds)
        .map_err(|m| werr(format!("bad manifest: {m}")))?;
    let json = serde_json::to_vec(manifest)
        .map_err(|e| werr(format!("cannot encode the manifest: {e}")))?;

    let manifest_len = json.len() as u64;
    let entries = sections.len() as u64 + 1;
    let table_end = HEADER_LEN + manifest_len + 8 + entries * ENTRY_LEN;
    let mut offsets = Vec::with_capacity(sections.len());
    let mut end = table_end;
    for s in sections {
        let start = align(end);
        offsets.push(start);
        end = start + s.bytes.len() as u64;
    }

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |e: std::io::Error| ArtifactError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
    let mut w = BufWriter::new(tmp);

    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
    w.write_all(&0u32.to_le_bytes()).map_err(io)?;
    w.write_all(&manifest_len.to_le_bytes()).map_err(io)?;
    w.write_all(&json).map_err(io)?;
    w.write_all(&entries.to_le_bytes()).map_err(io)?;
    for (s, &offset) in sections.iter().zip(&offsets) {
        write_entry(&mut w, s.kind.code(), offset, s.bytes).map_err(io)?;
    }
    write_entry(&mut w, MANIFEST_KIND, HEADER_LEN, &json).map_err(io)?;
    let mut pos = table_end;
    for (s, &offset) in sections.iter().zip(&offsets) {
        w.write_all(&vec![0u8; (offset - pos) as usize])
            .map_err(io)?;
        w.write_all(s.bytes).map_err(io)?;
        pos = offset + s.bytes.len() as u64;
    }

    let tmp = w.into_inner().map_err(|e| io(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // Make the rename itself durable; a failure here leaves a complete file, so ignore it.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_entry(w: &mut impl Write, kind: u32, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&kind.to_le_bytes())?;
    w.write_all(&offset.to_le_bytes())?;
    w.write_all(&(bytes.len() as u64).to_le_bytes())?;
    w.write_all(&Sha256::digest(bytes))
}

fn align(n: u64) -> u64 {
    n.div_ceil(SECTION_ALIGN) * SECTION_ALIGN
}
