//! What kiln does with a GGUF file it was handed, from the reader to the model builder and
//! the tokenizer: the fuzz target (`fuzz/fuzz_targets/gguf.rs`) runs it on mutated files,
//! and `../gguf_regressions.rs` on the inputs kept from fuzzing. Any panic is a bug; errors
//! are the expected answer to a bad file.

use kiln_models::gguf::GgufFile;
use kiln_models::tokenizer::{Tokenizer, Vocab};
use std::path::Path;

/// Reads `bytes` as `kiln run model.gguf` would; `Err` says where it stopped.
pub fn read_untrusted(bytes: &[u8]) -> Result<(), String> {
    let f =
        GgufFile::from_bytes(Path::new("input.gguf"), bytes.to_vec()).map_err(|e| e.to_string())?;
    for t in &f.tensors {
        let values = f.dequantize(t);
        assert_eq!(values.len() as u64, t.elements());
    }
    if let Some(vocab) = Vocab::from_gguf(&f)? {
        let tok = Tokenizer::new(vocab)?;
        let ids = tok.encode("Hello, kiln! 123")?;
        let _ = tok.decode(&ids);
    }
    kiln_models::load_gguf(&f).map_err(|e| e.to_string())?;
    Ok(())
}
