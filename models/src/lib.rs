//! Model builders: architectures as functions that build a `kiln_ir::Graph` plus the
//! weights its parameters name. `gguf` reads llama.cpp's model files (metadata, tensor
//! table, zero-copy data, dequantization); the MLP here and the built-in demo model need
//! no file at all.

pub mod bert;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod mlp;
pub mod safetensors;
pub mod tokenizer;
pub mod weights;

pub use weights::Weights;

/// A graph together with the data for every parameter it declares.
pub struct Model {
    pub name: String,
    pub graph: kiln_ir::Graph,
    pub weights: Weights,
    /// The vocabulary, for models that read and write text.
    pub vocab: Option<tokenizer::Vocab>,
}

/// The model in a GGUF file, built by its `general.architecture`: BERT encoders, or the
/// decoders `llama` builds (which names every architecture kiln reads when it is none).
pub fn load_gguf(f: &gguf::GgufFile) -> Result<Model, llama::ModelError> {
    match f.get("general.architecture").and_then(|v| v.as_str()) {
        Some("bert") => bert::load(f),
        _ => llama::load(f),
    }
}

/// The model `kiln` uses when none is given: small enough to compile in a second, large
/// enough that its matmuls are tiled and its threads have work.
pub fn builtin(name: &str) -> Option<Model> {
    match name {
        "builtin:mlp" | "mlp" => Some(mlp::demo()),
        _ => None,
    }
}

pub const BUILTIN_NAMES: [&str; 1] = ["builtin:mlp"];
