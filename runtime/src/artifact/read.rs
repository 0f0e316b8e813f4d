//! Reading artifacts: the runtime's first step.
//!
//! The file is memory-mapped, so weights are used in place. Everything read from it is
//! checked before it is believed: lengths and offsets against the file size (in u128, so
//! nothing overflows), the manifest's hash before it is parsed, each section's hash before
//! its bytes are handed out. Nothing is allocated from a length that was not checked.

use super::{
    ArtifactError, SectionEntry, SectionKind, ENTRY_LEN, FORMAT_VERSION, HEADER_LEN, MAGIC,
    MANIFEST_KIND, SECTION_ALIGN,
};
use crate::manifest::Manifest;
use memmap2::Mmap;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An opened, structurally checked artifact. Section hashes are checked on first access.
#[derive(Debug)]
pub struct Artifact {
    path: PathBuf,
    map: Mmap,
    manifest: Manifest,
    sections: Vec<SectionEntry>,
    /// Whether each section's hash matched, once it has been checked.
    verified: Vec<OnceLock<bool>>,
}

impl Artifact {
    pub fn open(path: impl AsRef<Path>) -> Result<Artifact, ArtifactError> {
        let path = path.as_ref();
        let p = || path.to_path_buf();
        let io = |e| ArtifactError::Io {
            path: p(),
            source: e,
        };
        let mut file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();

        let mut header = [0u8; HEADER_LEN as usize];
        let got = read_prefix(&mut file, &mut header).map_err(io)?;
        if !MAGIC.starts_with(&header[..got.min(8)]) || (got == 0 && size == 0) {
            return Err(ArtifactError::BadMagic { path: p() });
        }
        if got < header.len() {
            let what = "the header".to_string();
            return Err(ArtifactError::Truncated {
                path: p(),
                what,
                end: HEADER_LEN as u128,
                size,
            });
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(ArtifactError::NewerVersion { path: p(), version });
        }
        if version == 0 {
            return Err(ArtifactError::Malformed {
                path: p(),
                msg: "format version 0 does not exist".into(),
            });
        }
        let manifest_len = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));

        // SAFETY: the map is read-only and its bytes are treated as untrusted input: every
        // read below is bounds-checked and hashes are checked before use. Another process
        // truncating the file while it is mapped can still fault, as for any mapped file.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        if map.len() as u64 != size {
            return Err(ArtifactError::Malformed {
                path: p(),
                msg: "the file changed while it was opened".into(),
            });
        }
        let (sections, manifest_bytes) = parse_table(path, &map, manifest_len)?;
        let manifest: Manifest =
            serde_json::from_slice(manifest_bytes).map_err(|e| ArtifactError::BadManifest {
                path: p(),
                msg: e.to_string(),
            })?;
        let kinds: Vec<(SectionKind, u64)> = sections.iter().map(|s| (s.kind, s.len)).collect();
        manifest
            .check(&kinds)
            .map_err(|msg| ArtifactError::BadManifest { path: p(), msg })?;
        let verified = sections.iter().map(|_| OnceLock::new()).collect();
        Ok(Artifact {
            path: p(),
            map,
            manifest,
            sections,
            verified,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The section table, without the manifest's own entry.
    pub fn sections(&self) -> &[SectionEntry] {
        &self.sections
    }

    /// Section `index`'s bytes, after checking its hash (once; the result is remembered).
    pub fn section(&self, index: usize) -> Result<&[u8], ArtifactError> {
        let entry = self
            .sections
            .get(index)
            .ok_or_else(|| ArtifactError::Malformed {
                path: self.path.clone(),
                msg: format!(
                    "section {index} does not exist ({} sections)",
                    self.sections.len()
                ),
            })?;
        // In bounds: parse_table checked offset + len <= file size.
        let bytes = &self.map[entry.offset as usize..(entry.offset + entry.len) as usize];
        let ok =
            *self.verified[index].get_or_init(|| Sha256::digest(bytes).as_slice() == entry.sha256);
        if !ok {
            return Err(ArtifactError::Corrupted {
                path: self.path.clone(),
                index,
                what: self.describe(index),
            });
        }
        Ok(bytes)
    }

    /// Checks every section's hash (`kiln inspect --verify`); [`Artifact::section`] checks lazily.
    pub fn verify_all(&self) -> Result<(), ArtifactError> {
        (0..self.sections.len()).try_for_each(|i| self.section(i).map(|_| ()))
    }

    /// The code of variant `variant`.
    pub fn code(&self, variant: usize) -> Result<&[u8], ArtifactError> {
        let v = self
            .manifest
            .variants
            .get(variant)
            .ok_or_else(|| ArtifactError::Malformed {
                path: self.path.clone(),
                msg: format!("variant {variant} does not exist"),
            })?;
        self.section(v.code_section)
    }

    /// The weights section, if the model has one.
    pub fn weights(&self) -> Result<Option<&[u8]>, ArtifactError> {
        self.manifest
            .weights_section
            .map(|i| self.section(i))
            .transpose()
    }

    /// The vocabulary section (JSON), if the model has one.
    pub fn vocab(&self) -> Result<Option<&[u8]>, ArtifactError> {
        self.manifest
            .vocab_section
            .map(|i| self.section(i))
            .transpose()
    }

    /// "weights" or "code for cpu:x86-64-v3", for error messages.
    fn describe(&self, index: usize) -> String {
        match self.sections[index].kind {
            SectionKind::Weights => "weights".into(),
            SectionKind::Vocab => "vocabulary".into(),
            SectionKind::Code => {
                let targets: Vec<&str> = self
                    .manifest
                    .variants
                    .iter()
                    .filter(|v| v.code_section == index)
                    .map(|v| v.target.as_str())
                    .collect();
                if targets.is_empty() {
                    "code".into()
                } else {
                    format!("code for {}", targets.join(", "))
                }
            }
        }
    }
}

/// Reads up to `buf.len()` bytes, fewer only at end of file.
fn read_prefix(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Parses and bounds-checks the section table; returns it (without the manifest's entry)
/// and the manifest bytes, whose hash it has checked.
fn parse_table<'a>(
    path: &Path,
    map: &'a [u8],
    manifest_len: u64,
) -> Result<(Vec<SectionEntry>, &'a [u8]), ArtifactError> {
    let size = map.len() as u64;
    let p = || path.to_path_buf();
    let truncated = |what: String, end: u128| ArtifactError::Truncated {
        path: p(),
        what,
        end,
        size,
    };
    let malformed = |msg: String| ArtifactError::Malformed { path: p(), msg };

    let manifest_end = HEADER_LEN as u128 + manifest_len as u128;
    if manifest_end > size as u128 {
        return Err(truncated("the manifest".into(), manifest_end));
    }
    let table_start = manifest_end as u64; // <= size, so it fits
    if table_start as u128 + 8 > size as u128 {
        return Err(truncated(
            "the section table".into(),
            table_start as u128 + 8,
        ));
    }
    let count = read_u64(map, table_start);
    let table_end = table_start as u128 + 8 + count as u128 * ENTRY_LEN as u128;
    if table_end > size as u128 {
        return Err(truncated(
            format!("the section table ({count} entries)"),
            table_end,
        ));
    }
    if count == 0 {
        return Err(malformed("the section table has no manifest entry".into()));
    }
    let table_end = table_end as u64;
    let mut sections = Vec::with_capacity(count as usize); // bounded by the file size
    let mut manifest_hash = None;
    for i in 0..count {
        let at = table_start + 8 + i * ENTRY_LEN;
        let kind = u32::from_le_bytes(
            map[at as usize..at as usize + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let offset = read_u64(map, at + 4);
        let len = read_u64(map, at + 12);
        let sha256: [u8; 32] = map[at as usize + 20..at as usize + 52]
            .try_into()
            .expect("32 bytes");
        let last = i + 1 == count;
        if kind == MANIFEST_KIND {
            if !last || offset != HEADER_LEN || len != manifest_len {
                return Err(malformed(format!(
                    "table entry {i} claims to hold the manifest but does not match it"
                )));
            }
            manifest_hash = Some(sha256);
            continue;
        }
        let kind = SectionKind::from_code(kind)
            .ok_or_else(|| malformed(format!("section {i} has unknown kind {kind}")))?;
        let end = offset as u128 + len as u128;
        if end > size as u128 {
            return Err(truncated(format!("section {i}"), end));
        }
        if !offset.is_multiple_of(SECTION_ALIGN) {
            return Err(malformed(format!(
                "section {i} starts at byte {offset}, not a multiple of {SECTION_ALIGN}"
            )));
        }
        if offset < table_end {
            return Err(malformed(format!(
                "section {i} starts at byte {offset}, inside the section table"
            )));
        }
        sections.push(SectionEntry {
            kind,
            offset,
            len,
            sha256,
        });
    }
    let Some(hash) = manifest_hash else {
        return Err(malformed(
            "the section table's last entry is not the manifest's".into(),
        ));
    };
    let manifest = &map[HEADER_LEN as usize..table_start as usize];
    if Sha256::digest(manifest).as_slice() != hash {
        return Err(ArtifactError::ManifestCorrupted { path: p() });
    }
    Ok((sections, manifest))
}

/// Little-endian u64 at `at`; the caller has checked `at + 8 <= map.len()`.
fn read_u64(map: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(
        map[at as usize..at as usize + 8]
            .try_into()
            .expect("8 bytes"),
    )
}
