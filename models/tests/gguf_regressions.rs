//! Inputs kept from fuzzing the GGUF reader (`fuzz/`, docs/fuzzing.md): each one goes
//! through everything kiln does with a file it is handed and must come back as an error
//! (or a model), never a panic or an allocation the file's size does not justify.

#[path = "common/untrusted_gguf.rs"]
mod untrusted_gguf;

use std::path::Path;

#[test]
fn kept_fuzz_inputs_are_answered_without_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gguf-regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "only {} kept inputs in {}",
        files.len(),
        dir.display()
    );
    let mut refused = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let answer = std::panic::catch_unwind(|| untrusted_gguf::read_untrusted(&bytes));
        match answer {
            Err(_) => panic!("{}: the reader panicked", path.display()),
            Ok(Err(msg)) => {
                assert!(!msg.is_empty(), "{}: an empty error", path.display());
                // The fuzzer's seeds are valid models (fuzz/make_seeds.py).
                let name = path.file_name().unwrap().to_string_lossy();
                assert!(
                    !name.starts_with("micro-"),
                    "{name} is a valid model: {msg}"
                );
                refused += 1;
            }
            Ok(Ok(())) => {}
        }
    }
    eprintln!(
        "{} kept inputs, {refused} refused with an error",
        files.len()
    );
}
