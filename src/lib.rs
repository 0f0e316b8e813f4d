//! The `kiln` library behind the command: assembling artifacts from compiler output,
//! loading models, reading and writing `.npy`. The end-to-end tests use it directly.

pub mod assemble;
pub mod atomic_file;
pub mod embed;
pub mod generate;
pub mod gguf_cache;
pub mod kernel_bench;
pub mod model_source;
pub mod npy;
pub mod sampling;
pub mod session;
