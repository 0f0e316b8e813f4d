//! kiln's GGUF reader and dequantization against the `gguf` Python package (the format's
//! reference implementation, from PyPI): the script writes a file of random blocks of
//! every supported type plus the package's dequantization; kiln must match it bit for bit.
//!
//! Needs a Python with `gguf` and `numpy`: `$KILN_PYTHON` (scripts/install-deps.sh makes
//! one in target/pyref and scripts/env.sh names it), else `python3`. Without them the test
//! says so and skips, unless KILN_REQUIRE_PYTHON_REFERENCE is set (CI sets it), when their
//! absence is a failure.

use kiln_models::gguf::{GgmlType, GgufFile};
use std::path::Path;
use std::process::Command;

fn python() -> String {
    std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn python_reference_available() -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", "import gguf, numpy"])
        .output()
        .map_err(|e| format!("{} cannot be run: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} lacks gguf/numpy: {}",
            python(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn read_npy(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    npy.into_vec::<f32>().unwrap()
}

#[test]
fn dequantization_matches_the_gguf_package_bit_for_bit() {
    if let Err(why) = python_reference_available() {
        if std::env::var_os("KILN_REQUIRE_PYTHON_REFERENCE").is_some() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/gguf_blocks.py");
    let status = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
    let file = GgufFile::open(&dir.path().join("blocks.gguf")).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(
        file.get("general.architecture").and_then(|v| v.as_str()),
        Some("blocks")
    );
    for ty in GgmlType::ALL {
        let info = file
            .tensor(ty.name())
            .unwrap_or_else(|| panic!("the file has no {ty} tensor"));
        assert_eq!(info.ggml_type, ty);
        let ours = file.dequantize(info);
        let want = read_npy(&dir.path().join(format!("{}.npy", ty.name())));
        assert_eq!(ours.len(), want.len(), "{ty}: element count");
        assert_eq!(info.shape()[0], 3, "{ty}: rows");
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{ty} element {i}: kiln {a}, gguf package {b}"
            );
        }
    }
}
