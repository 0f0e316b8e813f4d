//! The `.kiln` artifact file: the compiler's output and the runtime's input.
//!
//! One memory-mappable file, so weights are never copied and code is loaded straight from
//! it. Layout (all integers little-endian):
//!
//! ```text
//! 0   magic  b"KILNART\0"
//! 8   u32    format version (1)
//! 12  u32    reserved (0)
//! 16  u64    manifest length L
//! 24  [L]    manifest JSON (see crate::manifest)
//!     u64    section count N
//!     N x { u32 kind (0 code, 1 weights, 2 manifest), u64 offset, u64 length, [32] sha256 }
//!     sections, each at a 64-byte-aligned file offset, zero padding between
//! ```
//!
//! The last table entry is always of kind 2 and covers the manifest bytes themselves, so a
//! damaged manifest (which decides buffer sizes) is caught by the same hash check as the
//! sections. Sections referenced by the manifest are numbered `0..N-1` without it.
//!
//! The reader trusts nothing: every length and offset is checked against the file size with
//! checked arithmetic, every section's hash is checked before its bytes are handed out.

mod read;
mod write;

pub use crate::manifest::SectionKind;
pub use read::Artifact;
pub use write::{write_artifact, SectionData};

use std::path::PathBuf;
use thiserror::Error;

pub const MAGIC: &[u8; 8] = b"KILNART\0";
pub const FORMAT_VERSION: u32 = 1;
/// Sections start at multiples of this (cache line; page-aligned mmap keeps it in memory).
pub const SECTION_ALIGN: u64 = 64;
pub(crate) const HEADER_LEN: u64 = 24;
pub(crate) const ENTRY_LEN: u64 = 4 + 8 + 8 + 32;
/// Table kind of the entry that hashes the manifest.
pub(crate) const MANIFEST_KIND: u32 = 2;

/// One row of the section table, as read from the file (bounds already checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionEntry {
    pub kind: SectionKind,
    pub offset: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a kiln artifact: bad magic")]
    BadMagic { path: PathBuf },
    #[error("{path}: artifact format version {version} is newer than this kiln (supports {FORMAT_VERSION})")]
    NewerVersion { path: PathBuf, version: u32 },
    #[error("{path}: truncated: {what} ends at byte {end} but the file has {size} bytes")]
    Truncated {
        path: PathBuf,
        what: String,
        end: u128,
        size: u64,
    },
    #[error("{path}: malformed: {msg}")]
    Malformed { path: PathBuf, msg: String },
    #[error("{path}: section {index} ({what}) is corrupted: hash mismatch")]
    Corrupted {
        path: PathBuf,
        index: usize,
        what: String,
    },
    #[error("{path}: the manifest is corrupted: hash mismatch")]
    ManifestCorrupted { path: PathBuf },
    #[error("{path}: bad manifest: {msg}")]
    BadManifest { path: PathBuf, msg: String },
    #[error("{path}: cannot write the artifact: {msg}")]
    Write { path: PathBuf, msg: String },
}
