//! The artifact reader against good files and every kind of damaged one: each must give a
//! clear error naming the file, never a panic or a huge allocation.

mod common;

use kiln_runtime::plan::BufferRef;
use kiln_runtime::{write_artifact, Artifact, ArtifactError, SectionData, SectionKind};
use std::path::{Path, PathBuf};

const CODE_V3: &[u8] = b"code for v3, any bytes will do here";
const CODE_V4: &[u8] = b"v4 code";

fn weights() -> Vec<u8> {
    (0..1000u32).map(|i| (i % 251) as u8).collect()
}

/// Writes a three-section artifact (two code, one weights) and returns its path and bytes.
fn write_good(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut m = common::manifest(vec![
        common::variant("cpu:x86-64-v3", 0),
        common::variant("cpu:x86-64-v4", 1),
    ]);
    m.weights_section = Some(2);
    m.variants[0].plan.launches[0].args.push(BufferRef::Weight {
        offset: 100,
        len: 900,
    });
    let w = weights();
    let sections = [
        SectionData {
            kind: SectionKind::Code,
            bytes: CODE_V3,
        },
        SectionData {
            kind: SectionKind::Code,
            bytes: CODE_V4,
        },
        SectionData {
            kind: SectionKind::Weights,
            bytes: &w,
        },
    ];
    let path = dir.join("tiny.kiln");
    write_artifact(&path, &m, &sections).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Writes `bytes` to a fresh file and opens it, expecting an error.
fn open_err(dir: &Path, name: &str, bytes: &[u8]) -> ArtifactError {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let art = Artifact::open(&path);
    let err = match art {
        Err(e) => e,
        Ok(a) => a.verify_all().expect_err("damaged artifact verified"),
    };
    assert!(
        err.to_string().contains(path.to_str().unwrap()),
        "message does not name the file: {err}"
    );
    err
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Byte position of section table entry `i`.
fn entry_at(b: &[u8], i: usize) -> usize {
    24 + u64_at(b, 16) as usize + 8 + i * 52
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = write_good(dir.path());
    let art = Artifact::open(&path).unwrap();
    assert_eq!(art.manifest().variants.len(), 2);
    assert_eq!(art.manifest().compile_report["passes"], 3);
    assert_eq!(art.sections().len(), 3);
    for s in art.sections() {
        assert_eq!(s.offset % 64, 0);
    }
    assert_eq!(art.code(0).unwrap(), CODE_V3);
    assert_eq!(art.code(1).unwrap(), CODE_V4);
    assert_eq!(art.weights().unwrap().unwrap(), &weights()[..]);
    art.verify_all().unwrap();
    assert_eq!(&bytes[..8], b"KILNART\0");
    // Nothing but the artifact is left in the directory (the temp file was renamed).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn truncated_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = write_good(dir.path());
    let table = entry_at(&bytes, 0) - 8;
    for cut in [
        0,
        5,
        8,
        23,
        24,
        30,
        table - 1,
        table + 4,
        table + 60,
        entry_at(&bytes, 4) - 1,
        bytes.len() - 1,
    ] {
        let err = open_err(dir.path(), &format!("cut{cut}.kiln"), &bytes[..cut]);
        let msg = err.to_string();
        assert!(
            msg.contains("truncated") || msg.contains("bad magic"),
            "cut at {cut}: {msg}"
        );
    }
    let err = open_err(dir.path(), "cut.kiln", &bytes[..bytes.len() - 1]).to_string();
    let want = format!(
        "truncated: section 2 ends at byte {} but the file has {} bytes",
        bytes.len(),
        bytes.len() - 1
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn bad_magic_and_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = write_good(dir.path());
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(
        open_err(dir.path(), "magic.kiln", &b),
        ArtifactError::BadMagic { .. }
    ));
    let err = open_err(dir.path(), "text.kiln", b"hello, I am a text file\n").to_string();
    assert!(err.ends_with("not a kiln artifact: bad magic"), "{err}");
    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&7u32.to_le_bytes());
    let err = open_err(dir.path(), "v7.kiln", &b).to_string();
    assert!(
        err.contains("artifact format version 7 is newer than this kiln (supports 1)"),
        "{err}"
    );
}

#[test]
fn flipped_byte_in_each_section_is_a_hash_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = write_good(dir.path());
    let art = Artifact::open(&path).unwrap();
    let what = [
        "code for cpu:x86-64-v3",
        "code for cpu:x86-64-v4",
        "weights",
    ];
    for (i, s) in art.sections().iter().enumerate() {
        let mut b = bytes.clone();
        b[(s.offset + s.len / 2) as usize] ^= 0x40;
        let err = open_err(dir.path(), &format!("flip{i}.kiln"), &b).to_string();
        assert!(
            err.ends_with(&format!(
                "section {i} ({}) is corrupted: hash mismatch",
                what[i]
            )),
            "{err}"
        );
    }
    // A flipped byte in the manifest is caught by its own hash.
    let mut b = bytes.clone();
    b[40] ^= 0x01;
    assert!(matches!(
        open_err(dir.path(), "flipm.kiln", &b),
        ArtifactError::ManifestCorrupted { .. }
    ));
}

#[test]
fn lengths_larger_than_the_file_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = write_good(dir.path());
    for len in [bytes.len() as u64 + 1, u64::MAX, u64::MAX - 23] {
        let mut b = bytes.clone();
        b[16..24].copy_from_slice(&len.to_le_bytes());
        let err = open_err(dir.path(), "mlen.kiln", &b).to_string();
        assert!(
            err.contains("truncated: the manifest ends at byte"),
            "{err}"
        );
    }
    // Section count, offset and length set to u64::MAX.
    let mut b = bytes.clone();
    let count_at = entry_at(&bytes, 0) - 8;
    b[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = open_err(dir.path(), "count.kiln", &b).to_string();
    assert!(
        err.contains("the section table (18446744073709551615 entries)"),
        "{err}"
    );
    for (field, name) in [(4, "offset"), (12, "len")] {
        for i in 0..4 {
            let mut b = bytes.clone();
            let at = entry_at(&bytes, i) + field;
            b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
            let err = open_err(dir.path(), &format!("{name}{i}.kiln"), &b).to_string();
            assert!(
                err.contains("truncated") || err.contains("malformed"),
                "{name} of entry {i}: {err}"
            );
        }
    }
}

#[test]
fn misplaced_sections_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = write_good(dir.path());
    let mut b = bytes.clone();
    let at = entry_at(&bytes, 1) + 4;
    let off = u64_at(&bytes, at);
    b[at..at + 8].copy_from_slice(&(off + 1).to_le_bytes());
    assert!(open_err(dir.path(), "align.kiln", &b)
        .to_string()
        .contains("not a multiple of 64"));
    let mut b = bytes.clone();
    b[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(open_err(dir.path(), "overlap.kiln", &b)
        .to_string()
        .contains("inside the section table"));
    let mut b = bytes.clone();
    let kind_at = entry_at(&bytes, 0);
    b[kind_at..kind_at + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(open_err(dir.path(), "kind.kiln", &b)
        .to_string()
        .contains("unknown kind 9"));
}

#[test]
fn missing_file_names_it() {
    let err = Artifact::open("/nonexistent/dir/model.kiln")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/nonexistent/dir/model.kiln:"), "{err}");
}

#[test]
fn writer_refuses_plans_that_do_not_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.kiln");
    let code = [SectionData {
        kind: SectionKind::Code,
        bytes: b"x",
    }];
    type Edit = dyn Fn(&mut kiln_runtime::Manifest);
    let cases: [(&Edit, &str); 5] = [
        (
            &|m| m.variants[0].code_section = 3,
            "code section 3 does not exist",
        ),
        (
            &|m| m.variants[0].plan.launches[0].args[0] = BufferRef::Slot(5),
            "slot 5 does not exist",
        ),
        (
            &|m| m.variants[0].plan.launches[0].kernel = "other".into(),
            "not in the variant's kernel list",
        ),
        (
            &|m| m.variants[0].kernels[0] = "copy; rm".into(),
            "not a C identifier",
        ),
        (
            &|m| m.variants[0].plan.launches[0].args[0] = BufferRef::Weight { offset: 0, len: 4 },
            "has none",
        ),
    ];
    for (edit, want) in cases {
        let mut m = common::manifest(vec![common::variant("cpu:x86-64", 0)]);
        edit(&mut m);
        let err = write_artifact(&path, &m, &code).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
        assert!(!path.exists());
    }
}

#[test]
fn a_vocabulary_section_round_trips_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = common::manifest(vec![common::variant("cpu:x86-64-v3", 0)]);
    m.vocab_section = Some(1);
    let vocab = br#"{"tokens":["a","b"]}"#;
    let sections = [
        SectionData {
            kind: SectionKind::Code,
            bytes: CODE_V3,
        },
        SectionData {
            kind: SectionKind::Vocab,
            bytes: vocab,
        },
    ];
    let path = dir.path().join("vocab.kiln");
    write_artifact(&path, &m, &sections).unwrap();
    let art = Artifact::open(&path).unwrap();
    assert_eq!(art.vocab().unwrap().unwrap(), &vocab[..]);
    art.verify_all().unwrap();

    m.vocab_section = Some(0);
    let err = write_artifact(&dir.path().join("bad.kiln"), &m, &sections).unwrap_err();
    assert!(
        err.to_string()
            .contains("vocab_section 0 is not a vocabulary section"),
        "{err}"
    );
}
