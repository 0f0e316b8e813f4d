//! Hugging Face checkpoint folders of llama-family decoders (llama, mistral, qwen2):
//! `config.json` for the hyper-parameters and `model.safetensors` (or the shards
//! `model.safetensors.index.json` lists) for the weights, built into the same graph as the
//! GGUF files' (`llama::build_graph`).
//!
//! Hugging Face keeps Q and K rows in the order its `rotate_half` rope pairs them (element
//! `i` with `i + head_dim / 2`), which is kiln's neox layout; llama.cpp's converter permutes
//! llama's rows for interleaved pairs instead, so the same model reads as interleaved from
//! GGUF and as neox from here. Half matrices stay half; vectors become f32. The folder's
//! `tokenizer.json`, when it has one, becomes the artifact's vocabulary
//! (`tokenizer::hf`), with BOS and EOS from config.json.

use crate::llama::{build_graph, DecoderStyle, LlamaConfig, ModelError, Storage};
use crate::weights::Weight;
use crate::{Model, Weights};
use kiln_ir::{DType, RopeLayout};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    intermediate_size: usize,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    vocab_size: usize,
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    head_dim: Option<usize>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

/// A token id in config.json: a number, or a list whose first entry counts.
fn token_id(v: &Option<serde_json::Value>) -> Option<u32> {
    let v = v.as_ref()?;
    let n = v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())?;
    u32::try_from(n).ok()
}

/// The weight file names of a checkpoint: one `model.safetensors`, or the shards its index
/// names.
fn weight_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|_| {
        "no model.safetensors and no model.safetensors.index.json (kiln reads safetensors checkpoints)".to_string()
    })?;
    #[derive(Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let idx: Index =
        serde_json::from_str(&text).map_err(|e| format!("model.safetensors.index.json: {e}"))?;
    let mut files: Vec<String> = idx.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    Ok(files.iter().map(|f| dir.join(f)).collect())
}

/// The Hugging Face name of a kiln (GGUF) parameter name.
fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => "model.embed_tokens.weight",
        "output_norm.weight" => "model.norm.weight",
        "output.weight" => "lm_head.weight",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(fixed.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Builds the decoder in checkpoint folder `dir`.
pub fn load_dir(dir: &Path) -> Result<Model, ModelError> {
    let path = dir.display().to_string();
    let bad = |msg: String| ModelError::Checkpoint {
        path: path.clone(),
        msg,
    };
    let text = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| bad(format!("config.json: {e}")))?;
    let hf: HfConfig = serde_json::from_str(&text).map_err(|e| bad(format!("config.json: {e}")))?;
    let (qkv_bias, arch) = match hf.model_type.as_str() {
        "llama" | "mistral" => (false, "llama"),
        "qwen2" => (true, "qwen2"),
        other => {
            return Err(ModelError::UnknownArch {
                path,
                arch: other.into(),
            })
        }
    };
    let heads = hf.num_attention_heads;
    let kv_heads = hf.num_key_value_heads.unwrap_or(heads);
    if heads == 0
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || !hf.hidden_size.is_multiple_of(heads)
    {
        return Err(bad(format!(
            "config.json: {heads} heads, {kv_heads} key/value heads and width {} do not divide",
            hf.hidden_size
        )));
    }
    let head_dim = hf.head_dim.unwrap_or(hf.hidden_size / heads);
    let maps = weight_files(dir)
        .map_err(bad)?
        .into_iter()
        .map(|f| {
            let file = std::fs::File::open(&f).map_err(|e| bad(format!("{}: {e}", f.display())))?;
            // SAFETY: read-only, private map; see GgufFile::open.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| bad(format!("{}: {e}", f.display())))?;
            Ok((f, map))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let files = maps
        .iter()
        .map(|(f, m)| {
            SafeTensors::deserialize(m).map_err(|e| {
                bad(format!(
                    "{}: not a valid safetensors file: {e}",
                    f.display()
                ))
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let find = |name: &str| files.iter().find_map(|st| st.tensor(name).ok());
    let cfg = LlamaConfig {
        arch: arch.into(),
        vocab: hf.vocab_size,
        embd: hf.hidden_size,
        layers: hf.num_hidden_layers,
        ff: hf.intermediate_size,
        heads,
        kv_heads,
        head_dim,
        rot_dims: head_dim,
        rope_theta: hf.rope_theta.unwrap_or(10_000.0),
        rope_layout: RopeLayout::Neox,
        norm_eps: hf.rms_norm_eps,
        context: hf.max_position_embeddings,
        qkv_bias,
        tied_embeddings: hf.tie_word_embeddings.unwrap_or(false)
            || find("lm_head.weight").is_none(),
        style: DecoderStyle::Llama,
    };
    let mut weights = Weights::default();
    let graph = build_graph(&cfg, &mut |name, shape| {
        let hf = hf_name(name).ok_or_else(|| bad(format!("no Hugging Face name for `{name}`")))?;
        let view = find(&hf).ok_or_else(|| ModelError::MissingTensor {
            path: path.clone(),
            name: hf.clone(),
        })?;
        if view.shape() != shape {
            return Err(ModelError::TensorShape {
                path: path.clone(),
                name: hf,
                want: shape.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(bad(format!(
                    "`{hf}` is {other:?}; kiln reads F32, F16 and BF16"
                )))
            }
        };
        let bytes = view.data();
        // Half matrices stay half; everything else becomes f32.
        let (dtype, bytes) = if shape.len() == 2 || dtype == DType::F32 {
            (dtype, bytes.to_vec())
        } else {
            let n = dtype.size_bytes();
            let f: Vec<u8> = bytes
                .chunks_exact(n)
                .flat_map(|c| (dtype.decode(c) as f32).to_le_bytes())
                .collect();
            (DType::F32, f)
        };
        let w = Weight::from_bytes(dtype, shape.to_vec(), bytes)
            .map_err(|m| bad(format!("`{hf}`: {m}")))?;
        weights.insert_weight(name, w);
        Ok(Storage::Float(dtype))
    })?;
    let name = dir
        .file_name()
        .map_or_else(|| arch.to_string(), |n| n.to_string_lossy().into_owned());
    let tokenizer = dir.join("tokenizer.json");
    let vocab = if tokenizer.is_file() {
        let text =
            std::fs::read_to_string(&tokenizer).map_err(|e| bad(format!("tokenizer.json: {e}")))?;
        let eos = token_id(&hf.eos_token_id);
        let v = crate::tokenizer::hf::vocab_from_json(&text, token_id(&hf.bos_token_id), eos)
            .map_err(bad)?;
        Some(v)
    } else {
        None
    };
    Ok(Model {
        name,
        graph,
        weights,
        vocab,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(dir: &Path) -> String {
        match load_dir(dir) {
            Ok(_) => panic!("the folder was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_folders_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            err(dir.path()).contains("config.json"),
            "{}",
            err(dir.path())
        );
        let config = |model_type: &str| {
            format!(
                r#"{{"model_type": "{model_type}", "hidden_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 4, "intermediate_size": 128, "rms_norm_eps": 1e-5,
                "vocab_size": 10, "max_position_embeddings": 16}}"#
            )
        };
        std::fs::write(dir.path().join("config.json"), config("gpt_neox")).unwrap();
        assert!(err(dir.path()).contains("`gpt_neox` is not supported"));
        std::fs::write(dir.path().join("config.json"), config("llama")).unwrap();
        assert!(err(dir.path()).contains("no model.safetensors"));
        std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
        assert!(err(dir.path()).contains("not a valid safetensors file"));
    }

    #[test]
    fn parameter_names_map_to_hugging_face_names() {
        assert_eq!(
            hf_name("blk.3.ffn_gate.weight").as_deref(),
            Some("model.layers.3.mlp.gate_proj.weight")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("blk.0.attn_qkv.weight"), None);
    }
}
