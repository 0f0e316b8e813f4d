//! Decoder-only transformers from a GGUF file: the llama family (llama 2/3, mistral, qwen2)
//! and gpt2 (`DecoderStyle`): hyper-parameters from its metadata, the graph of a forward
//! pass over a whole sequence, and the weights.
//!
//! The graph runs `seq` new tokens after `past` cached ones, both symbolic, so one artifact
//! serves the prompt (prefill, `past = 0`) and every decode step (`seq = 1`):
//! - inputs `tokens: i32[seq]`, `pos: i32[seq]` (their positions), `past_pos: i32[past]`,
//!   `logit_rows: i32[picked]` (the rows of this run whose logits to compute), and per layer
//!   `k_cache.L`, `v_cache.L`: `f32[past, kv_heads, head_dim]` (keys after rope);
//! - outputs `logits: f32[picked, vocab]` and per layer `k_new.L`, `v_new.L`: `f32[seq,
//!   kv_heads, head_dim]`, the rows the caller appends to its caches.
//!
//! Generation needs the logits of the last row only; a prompt's other rows would multiply
//! the whole output projection for nothing (a fifth of a 125M model's prefill, 6% of a
//! 1B's), so the caller picks the rows (tests comparing every position pick them all).
//!
//! The causal mask is computed in the graph from the positions. Attention groups query
//! heads by their key/value head (grouped-query attention) through reshapes and one
//! batched matmul per step, so no key or value is copied per query head.
//!

use crate::gguf::{GgmlType, GgufError, GgufFile, TensorInfo};
use crate::weights::Weight;
use crate::{Model, Weights};
use kiln_ir::{Builder, CmpOp, DType, Dim, IrError, NodeId, QuantFormat, RopeLayout, UnaryOp};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "{path}: architecture `{arch}` is not supported (kiln builds: llama, mistral, qwen2, gpt2, bert)"
    )]
    UnknownArch { path: String, arch: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey { path: String, key: String },
    #[error("{path}: metadata key `{key}` is {value}, {want}")]
    BadKey {
        path: String,
        key: String,
        value: String,
        want: String,
    },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: String, name: String },
    #[error("{path}: tensor `{name}` has shape {got:?}, the metadata implies {want:?}")]
    TensorShape {
        path: String,
        name: String,
        want: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: vocabulary: {msg}")]
    Vocab { path: String, msg: String },
    #[error("{path}: {msg}")]
    Checkpoint { path: String, msg: String },
    #[error("building the graph: {0}")]
    Ir(#[from] IrError),
}

/// Hyper-parameters of a llama-family model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub arch: String,
    pub vocab: usize,
    pub embd: usize,
    pub layers: usize,
    pub ff: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rot_dims: usize,
    pub rope_theta: f64,
    pub rope_layout: RopeLayout,
    /// The epsilon of every norm (RMS norms for the llama family, layer norms for gpt2).
    pub norm_eps: f64,
    pub context: usize,
    /// qwen2 adds biases to the q, k and v projections.
    pub qkv_bias: bool,
    /// No `output.weight`: the logits reuse the token embedding.
    pub tied_embeddings: bool,
    pub style: DecoderStyle,
}

/// How the blocks are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderStyle {
    /// RMS norms, rope, separate Q/K/V projections, a SiLU-gated MLP, no biases but qwen2's
    /// on Q/K/V.
    Llama,
    /// Layer norms, learned position embeddings, one fused QKV projection, a GELU (tanh)
    /// MLP, biases on every projection and norm.
    Gpt2,
}

impl LlamaConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<LlamaConfig, ModelError> {
        let path = f.path().display().to_string();
        let arch = f
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::MissingKey {
                path: path.clone(),
                key: "general.architecture".into(),
            })?
            .to_string();
        // llama.cpp writes mistral models as `llama`; qwen2 differs in rope and biases.
        let (rope_layout, qkv_bias, style) = match arch.as_str() {
            "llama" => (RopeLayout::Interleaved, false, DecoderStyle::Llama),
            "qwen2" => (RopeLayout::Neox, true, DecoderStyle::Llama),
            "gpt2" => (RopeLayout::Neox, true, DecoderStyle::Gpt2),
            _ => return Err(ModelError::UnknownArch { path, arch }),
        };
        let key = |k: &str| format!("{arch}.{k}");
        let count = |k: &str| positive_count(f, &key(k));
        let real = |k: &str, default: Option<f64>| -> Result<f64, ModelError> {
            let k = key(k);
            match (f.get(&k), default) {
                (None, Some(d)) => Ok(d),
                (None, None) => Err(ModelError::MissingKey {
                    path: path.clone(),
                    key: k,
                }),
                (Some(v), _) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| ModelError::BadKey {
                        path: path.clone(),
                        key: k,
                        value: v.to_string(),
                        want: "expected a positive number".into(),
                    }),
            }
        };
        let embd = count("embedding_length")?;
        let heads = count("attention.head_count")?;
        let kv_heads = match f.get(&key("attention.head_count_kv")) {
            None => heads,
            Some(_) => count("attention.head_count_kv")?,
        };
        if embd % heads != 0 || heads % kv_heads != 0 {
            return Err(ModelError::BadKey {
                path,
                key: key("attention.head_count_kv"),
                value: format!("{kv_heads} (with {heads} heads, embedding {embd})"),
                want: "heads must divide the embedding and kv heads must divide the heads".into(),
            });
        }
        let head_dim = embd / heads;
        let rot_dims = match f.get(&key("rope.dimension_count")) {
            None => head_dim,
            Some(_) => count("rope.dimension_count")?,
        };
        let token_embd =
            f.tensor("token_embd.weight")
                .ok_or_else(|| ModelError::MissingTensor {
                    path: path.clone(),
                    name: "token_embd.weight".into(),
                })?;
        let vocab = token_embd.shape()[0];
        // The graph declares each layer's inputs before reading its tensors: a block count
        // the file's tensors do not back is refused here, before anything is built for it.
        let layers = count("block_count")?;
        let last = format!("blk.{}.attn_norm.weight", layers - 1);
        if f.tensor(&last).is_none() {
            return Err(ModelError::BadKey {
                path: path.clone(),
                key: key("block_count"),
                value: layers.to_string(),
                want: format!("the file has no `{last}`"),
            });
        }
        Ok(LlamaConfig {
            vocab,
            embd,
            layers,
            ff: count("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            rot_dims,
            rope_theta: real("rope.freq_base", Some(10_000.0))?,
            rope_layout,
            norm_eps: match style {
                DecoderStyle::Llama => real("attention.layer_norm_rms_epsilon", None)?,
                DecoderStyle::Gpt2 => real("attention.layer_norm_epsilon", None)?,
            },
            context: count("context_length")?,
            qkv_bias,
            tied_embeddings: f.tensor("output.weight").is_none(),
            style,
            arch,
        })
    }
}

/// Metadata key `key` of `f`, which must be a positive integer.
pub(crate) fn positive_count(f: &GgufFile, key: &str) -> Result<usize, ModelError> {
    let path = || f.path().display().to_string();
    let v = f.get(key).ok_or_else(|| ModelError::MissingKey {
        path: path(),
        key: key.into(),
    })?;
    match v.as_u64() {
        Some(n) if n > 0 => Ok(n as usize),
        _ => Err(ModelError::BadKey {
            path: path(),
            key: key.into(),
            value: v.to_string(),
            want: "expected a positive integer".into(),
        }),
    }
}

/// Builds the model in `f`: its graph and its weights (stored by `store_tensor`).
pub fn load(f: &GgufFile) -> Result<Model, ModelError> {
    let cfg = LlamaConfig::from_gguf(f)?;
    let mut weights = Weights::default();
    let graph = build_graph(&cfg, &mut |name, shape| {
        store_tensor(f, &mut weights, name, shape)
    })?;
    let name = f
        .get("general.name")
        .and_then(|v| v.as_str())
        .map_or_else(|| cfg.arch.clone(), str::to_string);
    let vocab = crate::tokenizer::Vocab::from_gguf(f).map_err(|msg| ModelError::Vocab {
        path: f.path().display().to_string(),
        msg,
    })?;
    Ok(Model {
        name,
        graph,
        weights,
        vocab,
    })
}

/// Puts tensor `name` of `f` (checked against `shape`) into `weights` as kiln stores it:
/// matrices in a block format the compiler decodes (`GgmlType::quant_format`) stay in it,
/// f16/bf16 matrices stay half (the graph decodes or widens them where they are read),
/// other tensors become f32.
pub(crate) fn store_tensor(
    f: &GgufFile,
    weights: &mut Weights,
    name: &str,
    shape: &[usize],
) -> Result<Storage, ModelError> {
    let t = tensor_checked(f, name, shape)?;
    // The reader checked every tensor's extent against its shape and type.
    let stored = |dtype: DType, shape: Vec<usize>, bytes: Vec<u8>| {
        Weight::from_bytes(dtype, shape, bytes).expect("the file's extents were checked")
    };
    if let (Some(format), [rows, _]) = (t.ggml_type.quant_format(), shape) {
        let bytes = f.data(t);
        let row_bytes = bytes.len() / rows;
        let w = stored(DType::U8, vec![*rows, row_bytes], bytes.to_vec());
        weights.insert_weight(name, w);
        return Ok(Storage::Blocks(format));
    }
    // Half matrices stay half (the file's bytes; converted where they are read);
    // everything else (norms, vectors) becomes f32.
    let (dtype, bytes) = match (t.ggml_type, shape) {
        (GgmlType::F16, [_, _]) => (DType::F16, f.data(t).to_vec()),
        (GgmlType::BF16, [_, _]) => (DType::BF16, f.data(t).to_vec()),
        _ => (
            DType::F32,
            f.dequantize(t)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    };
    weights.insert_weight(name, stored(dtype, shape.to_vec(), bytes));
    Ok(Storage::Float(dtype))
}

fn tensor_checked<'f>(
    f: &'f GgufFile,
    name: &str,
    shape: &[usize],
) -> Result<&'f TensorInfo, ModelError> {
    let path = f.path().display().to_string();
    let t = f.tensor(name).ok_or_else(|| ModelError::MissingTensor {
        path: path.clone(),
        name: name.into(),
    })?;
    if t.shape() != shape {
        return Err(ModelError::TensorShape {
            path,
            name: name.into(),
            want: shape.to_vec(),
            got: t.shape(),
        });
    }
    Ok(t)
}

/// How a parameter's data is stored: floats (f32, or f16/bf16 that the graph widens where
/// they are read), or rows of quantized blocks that the graph decodes with `dequant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Float(DType),
    Blocks(QuantFormat),
}

/// Called with each parameter's name and row-major (f32) shape; says how its data is stored.
pub type WeightSink<'a> = dyn FnMut(&str, &[usize]) -> Result<Storage, ModelError> + 'a;

/// Declares parameter `name` of f32 shape `shape`, stored as `storage`, and returns its
/// f32 value: half weights widened, block rows decoded where they are read.
pub(crate) fn declare(
    b: &mut Builder,
    name: &str,
    shape: &[usize],
    storage: Storage,
) -> Result<NodeId, ModelError> {
    match storage {
        Storage::Float(dtype) => {
            let dims: Vec<Dim> = shape.iter().map(|&n| Dim::from(n)).collect();
            let p = b.param(name, dtype, dims)?;
            Ok(if dtype == DType::F32 {
                p
            } else {
                b.cast(p, DType::F32)?
            })
        }
        Storage::Blocks(format) => {
            let (rows, cols) = (shape[0], shape[shape.len() - 1]);
            let row_bytes = cols / format.block_elems() * format.block_bytes();
            let raw = b.param(name, DType::U8, [rows, row_bytes])?;
            Ok(b.dequant(raw, format)?)
        }
    }
}

/// Declares a parameter in the graph (and supplies its data): what the block builders call.
type ParamFn<'a> = dyn FnMut(&mut Builder, &str, &[usize]) -> Result<NodeId, ModelError> + 'a;

/// The forward graph of `cfg`. `weight(name, shape)` is called for every parameter the
/// graph declares, so the caller can supply (and check) its data.
pub fn build_graph(
    cfg: &LlamaConfig,
    weight: &mut WeightSink<'_>,
) -> Result<kiln_ir::Graph, ModelError> {
    let mut b = Builder::new();
    let mut param = |b: &mut Builder, name: &str, shape: &[usize]| {
        let storage = weight(name, shape)?;
        declare(b, name, shape, storage)
    };
    let seq = Dim::sym("seq");
    let (d, hd, nh, nkv) = (cfg.embd, cfg.head_dim, cfg.heads, cfg.kv_heads);
    let group = nh / nkv;
    let past = Dim::sym("past");
    let all = past.add(&seq);
    let tokens = b.input("tokens", DType::I32, vec![seq.clone()])?;
    let pos = b.input("pos", DType::I32, vec![seq.clone()])?;
    let past_pos = b.input("past_pos", DType::I32, vec![past.clone()])?;
    let logit_rows = b.input("logit_rows", DType::I32, vec![Dim::sym("picked")])?;
    let cache_shape = vec![past.clone(), Dim::from(nkv), Dim::from(hd)];
    let mut caches = Vec::new();
    for l in 0..cfg.layers {
        let k = b.input(&format!("k_cache.{l}"), DType::F32, cache_shape.clone())?;
        let v = b.input(&format!("v_cache.{l}"), DType::F32, cache_shape.clone())?;
        caches.push((k, v));
    }
    let embd = param(&mut b, "token_embd.weight", &[cfg.vocab, d])?;
    let mut x = b.gather(embd, tokens)?;
    let gpt2 = cfg.style == DecoderStyle::Gpt2;
    if gpt2 {
        let table = param(&mut b, "position_embd.weight", &[cfg.context, d])?;
        let at = b.gather(table, pos)?;
        x = b.add(x, at)?;
    }
    // RMS norm (llama) or layer norm with a bias (gpt2) of `x`, weights `{name}.weight`.
    let norm = |b: &mut Builder,
                param: &mut ParamFn<'_>,
                x: NodeId,
                name: &str|
     -> Result<NodeId, ModelError> {
        let w = param(b, &format!("{name}.weight"), &[d])?;
        Ok(if gpt2 {
            let bias = param(b, &format!("{name}.bias"), &[d])?;
            b.layer_norm(x, w, bias, cfg.norm_eps)?
        } else {
            b.rms_norm(x, w, cfg.norm_eps)?
        })
    };
    // `x W^T (+ bias)`: the projection `{name}.weight` of `rows` outputs.
    let linear = |b: &mut Builder,
                  param: &mut ParamFn<'_>,
                  x: NodeId,
                  name: &str,
                  (rows, cols): (usize, usize),
                  bias: bool|
     -> Result<NodeId, ModelError> {
        let w = param(b, &format!("{name}.weight"), &[rows, cols])?;
        let y = b.matmul_t(x, w, false, true)?;
        Ok(if bias {
            let bn = param(b, &format!("{name}.bias"), &[rows])?;
            b.add(y, bn)?
        } else {
            y
        })
    };

    // Causal mask from positions: key j is hidden from query i when its position is
    // later than the query's.
    let key_pos = b.concat(&[past_pos, pos], 0)?;
    let pos_q = b.reshape(pos, vec![seq.clone(), Dim::from(1usize)])?;
    let pos_k = b.reshape(key_pos, vec![Dim::from(1usize), all.clone()])?;
    let future = b.compare(CmpOp::Gt, pos_k, pos_q)?;
    let neg_inf = b.scalar(DType::F32, f64::NEG_INFINITY)?;
    let zero = b.scalar(DType::F32, 0.0)?;
    let mask = b.select(future, neg_inf, zero)?;
    let scale = b.scalar(DType::F32, 1.0 / (hd as f64).sqrt())?;

    for (l, &(k_cache, v_cache)) in caches.iter().enumerate() {
        let p = |s: &str| format!("blk.{l}.{s}");
        let h = norm(&mut b, &mut param, x, &p("attn_norm"))?;
        let (q, k, v) = if gpt2 {
            // One projection whose rows are Q, then K, then V.
            let (qn, kn) = (nh * hd, nkv * hd);
            let qkv = linear(
                &mut b,
                &mut param,
                h,
                &p("attn_qkv"),
                (qn + 2 * kn, d),
                true,
            )?;
            let part = |b: &mut Builder, start: usize, n: usize| {
                b.slice(qkv, 1, start as i64, (start + n) as i64, 1)
            };
            (
                part(&mut b, 0, qn)?,
                part(&mut b, qn, kn)?,
                part(&mut b, qn + kn, kn)?,
            )
        } else {
            let mut proj = |b: &mut Builder, name: &str, rows: usize| {
                linear(b, &mut param, h, &p(name), (rows, d), cfg.qkv_bias)
            };
            (
                proj(&mut b, "attn_q", nh * hd)?,
                proj(&mut b, "attn_k", nkv * hd)?,
                proj(&mut b, "attn_v", nkv * hd)?,
            )
        };
        let heads = |b: &mut Builder, t: NodeId, n: usize| {
            b.reshape(t, vec![seq.clone(), Dim::from(n), Dim::from(hd)])
        };
        let mut q = heads(&mut b, q, nh)?;
        let mut k = heads(&mut b, k, nkv)?;
        if !gpt2 {
            q = b.rope(q, pos, cfg.rope_layout, cfg.rope_theta, cfg.rot_dims)?;
            k = b.rope(k, pos, cfg.rope_layout, cfg.rope_theta, cfg.rot_dims)?;
        }
        let v = heads(&mut b, v, nkv)?;
        b.output(&format!("k_new.{l}"), k);
        b.output(&format!("v_new.{l}"), v);
        let k = b.concat(&[k_cache, k], 0)?;
        let v = b.concat(&[v_cache, v], 0)?;
        // q: [seq, nkv*group, hd] -> [nkv, group, seq, hd]; k, v: [nkv, past+seq, hd].
        let q = b.reshape(
            q,
            vec![seq.clone(), Dim::from(nkv), Dim::from(group), Dim::from(hd)],
        )?;
        let q = b.permute(q, &[1, 2, 0, 3])?;
        let k = b.permute(k, &[1, 0, 2])?;
        let v = b.permute(v, &[1, 0, 2])?;
        let kv_shape = vec![
            Dim::from(nkv),
            Dim::from(1usize),
            all.clone(),
            Dim::from(hd),
        ];
        let k = b.reshape(k, kv_shape.clone())?;
        let v = b.reshape(v, kv_shape)?;
        let scores = b.matmul_t(q, k, false, true)?; // [nkv, group, seq, past+seq]
        let scores = b.mul(scores, scale)?;
        let scores = b.add(scores, mask)?;
        let probs = b.softmax(scores, 3)?;
        let att = b.matmul(probs, v)?; // [nkv, group, seq, hd]
        let att = b.permute(att, &[2, 0, 1, 3])?;
        let att = b.reshape(att, vec![seq.clone(), Dim::from(nh * hd)])?;
        let o = linear(
            &mut b,
            &mut param,
            att,
            &p("attn_output"),
            (d, nh * hd),
            gpt2,
        )?;
        x = b.add(x, o)?;

        let h = norm(&mut b, &mut param, x, &p("ffn_norm"))?;
        let act = if gpt2 {
            let up = linear(&mut b, &mut param, h, &p("ffn_up"), (cfg.ff, d), true)?;
            b.unary(UnaryOp::GeluTanh, up)?
        } else {
            let gate = linear(&mut b, &mut param, h, &p("ffn_gate"), (cfg.ff, d), false)?;
            let up = linear(&mut b, &mut param, h, &p("ffn_up"), (cfg.ff, d), false)?;
            let act = b.unary(UnaryOp::Silu, gate)?;
            b.mul(act, up)?
        };
        let down = linear(&mut b, &mut param, act, &p("ffn_down"), (d, cfg.ff), gpt2)?;
        x = b.add(x, down)?;
    }
    let x = b.gather(x, logit_rows)?;
    let x = norm(&mut b, &mut param, x, "output_norm")?;
    let head = if cfg.tied_embeddings {
        embd
    } else {
        param(&mut b, "output.weight", &[cfg.vocab, d])?
    };
    let logits = b.matmul_t(x, head, false, true)?;
    b.output("logits", logits);
    Ok(b.finish())
}
