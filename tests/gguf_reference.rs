//! kiln's GGUF reader and dequantization against the `gguf` Python package (the format's
//! reference implementation, from PyPI): the script writes a file of random blocks of
//! every supported type plus the package's dequantization; kiln must match it bit for bit.
//!
//! Needs the Python reference packages (see `common`).

mod common;

use common::{read_npy_f32, reference_available, run_script};
use kiln_models::gguf::{GgmlType, GgufFile};

#[test]
fn dequantization_matches_the_gguf_package_bit_for_bit() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_script("gguf_blocks.py", &[dir.path().as_os_str()]);
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
        let want = read_npy_f32(&dir.path().join(format!("{}.npy", ty.name())));
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
