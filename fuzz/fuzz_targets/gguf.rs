//! Mutated GGUF files through everything kiln does with a model file it is handed.
#![no_main]

#[path = "../../models/tests/common/untrusted_gguf.rs"]
mod untrusted_gguf;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = untrusted_gguf::read_untrusted(data);
});
