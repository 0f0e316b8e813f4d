//! BERT sentence encoders from a GGUF file (llama.cpp's `bert` architecture): token,
//! position and token-type embeddings summed and layer-normed, post-norm blocks with
//! bidirectional attention and a GELU (erf) MLP, then the mean over the sequence.
//!
//! The graph takes `tokens`, `pos` and `token_types` (`i32[seq]`, `seq` symbolic) and
//! returns `embedding: f32[1, embd]`, the mean of the last hidden states (unnormalised;
//! `kiln embed` normalises).

use crate::gguf::GgufFile;
use crate::llama::{declare, positive_count, store_tensor, ModelError};
use crate::{Model, Weights};
use kiln_ir::{Builder, DType, Dim, NodeId, ReduceOp, UnaryOp};

#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab: usize,
    pub embd: usize,
    pub layers: usize,
    pub ff: usize,
    pub heads: usize,
    pub context: usize,
    pub token_types: usize,
    pub norm_eps: f64,
}

impl BertConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<BertConfig, ModelError> {
        let path = f.path().display().to_string();
        let count = |k: &str| positive_count(f, &format!("bert.{k}"));
        let rows = |name: &str| -> Result<usize, ModelError> {
            f.tensor(name)
                .map(|t| t.shape()[0])
                .ok_or_else(|| ModelError::MissingTensor {
                    path: path.clone(),
                    name: name.into(),
                })
        };
        let embd = count("embedding_length")?;
        let heads = count("attention.head_count")?;
        if embd % heads != 0 {
            return Err(ModelError::BadKey {
                path,
                key: "bert.attention.head_count".into(),
                value: heads.to_string(),
                want: format!("heads must divide the embedding ({embd})"),
            });
        }
        let layers = count("block_count")?;
        let last = format!("blk.{}.attn_q.weight", layers - 1);
        if f.tensor(&last).is_none() {
            return Err(ModelError::BadKey {
                path,
                key: "bert.block_count".into(),
                value: layers.to_string(),
                want: format!("the file has no `{last}`"),
            });
        }
        let eps = f.get("bert.attention.layer_norm_epsilon");
        let norm_eps = match eps.and_then(|v| v.as_f64()) {
            Some(e) if e.is_finite() && e > 0.0 => e,
            _ => {
                return Err(ModelError::BadKey {
                    path,
                    key: "bert.attention.layer_norm_epsilon".into(),
                    value: eps.map_or("missing".into(), |v| v.to_string()),
                    want: "expected a positive number".into(),
                })
            }
        };
        Ok(BertConfig {
            vocab: rows("token_embd.weight")?,
            token_types: rows("token_types.weight")?,
            context: count("context_length")?,
            embd,
            layers,
            ff: count("feed_forward_length")?,
            heads,
            norm_eps,
        })
    }
}

/// Builds the encoder in `f`: its graph, its weights and its vocabulary.
pub fn load(f: &GgufFile) -> Result<Model, ModelError> {
    let cfg = BertConfig::from_gguf(f)?;
    let mut weights = Weights::default();
    let mut param = |b: &mut Builder, name: &str, shape: &[usize]| {
        let storage = store_tensor(f, &mut weights, name, shape)?;
        declare(b, name, shape, storage)
    };
    let graph = build_graph(&cfg, &mut param)?;
    let vocab = crate::tokenizer::Vocab::from_gguf(f).map_err(|msg| ModelError::Vocab {
        path: f.path().display().to_string(),
        msg,
    })?;
    let name = f
        .get("general.name")
        .and_then(|v| v.as_str())
        .unwrap_or("bert")
        .to_string();
    Ok(Model {
        name,
        graph,
        weights,
        vocab,
    })
}

type ParamFn<'a> = dyn FnMut(&mut Builder, &str, &[usize]) -> Result<NodeId, ModelError> + 'a;

fn build_graph(cfg: &BertConfig, param: &mut ParamFn<'_>) -> Result<kiln_ir::Graph, ModelError> {
    let mut b = Builder::new();
    let (d, nh) = (cfg.embd, cfg.heads);
    let hd = d / nh;
    let seq = Dim::sym("seq");
    let tokens = b.input("tokens", DType::I32, vec![seq.clone()])?;
    let pos = b.input("pos", DType::I32, vec![seq.clone()])?;
    let types = b.input("token_types", DType::I32, vec![seq.clone()])?;
    let mut embed = |b: &mut Builder, name: &str, rows: usize, ids: NodeId| {
        let table = param(b, name, &[rows, d])?;
        Ok::<_, ModelError>(b.gather(table, ids)?)
    };
    let x = embed(&mut b, "token_embd.weight", cfg.vocab, tokens)?;
    let at = embed(&mut b, "position_embd.weight", cfg.context, pos)?;
    let ty = embed(&mut b, "token_types.weight", cfg.token_types, types)?;
    let x = b.add(x, at)?;
    let x = b.add(x, ty)?;
    let eps = cfg.norm_eps;
    let mut x = norm(&mut b, param, x, "token_embd_norm", (d, eps))?;
    let scale = b.scalar(DType::F32, 1.0 / (hd as f64).sqrt())?;
    for l in 0..cfg.layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        // [seq, d] -> [heads, seq, head_dim]
        let heads = |b: &mut Builder, t: NodeId| -> Result<NodeId, ModelError> {
            let t = b.reshape(t, vec![seq.clone(), Dim::from(nh), Dim::from(hd)])?;
            Ok(b.permute(t, &[1, 0, 2])?)
        };
        let q = linear(&mut b, param, x, &p("attn_q"), (d, d))?;
        let k = linear(&mut b, param, x, &p("attn_k"), (d, d))?;
        let v = linear(&mut b, param, x, &p("attn_v"), (d, d))?;
        let (q, k, v) = (heads(&mut b, q)?, heads(&mut b, k)?, heads(&mut b, v)?);
        let scores = b.matmul_t(q, k, false, true)?; // [heads, seq, seq]
        let scores = b.mul(scores, scale)?;
        let probs = b.softmax(scores, 2)?;
        let att = b.matmul(probs, v)?; // [heads, seq, head_dim]
        let att = b.permute(att, &[1, 0, 2])?;
        let att = b.reshape(att, vec![seq.clone(), Dim::from(d)])?;
        let o = linear(&mut b, param, att, &p("attn_output"), (d, d))?;
        let h = b.add(x, o)?;
        let h = norm(&mut b, param, h, &p("attn_output_norm"), (d, eps))?;
        let up = linear(&mut b, param, h, &p("ffn_up"), (cfg.ff, d))?;
        let act = b.unary(UnaryOp::GeluErf, up)?;
        let down = linear(&mut b, param, act, &p("ffn_down"), (d, cfg.ff))?;
        let y = b.add(h, down)?;
        x = norm(&mut b, param, y, &p("layer_output_norm"), (d, eps))?;
    }
    let pooled = b.reduce(ReduceOp::Mean, x, &[0], true)?;
    b.output("embedding", pooled);
    Ok(b.finish())
}

/// `layer_norm(x)` with `{name}.weight` and `{name}.bias` of width `d`.
fn norm(
    b: &mut Builder,
    param: &mut ParamFn<'_>,
    x: NodeId,
    name: &str,
    (d, eps): (usize, f64),
) -> Result<NodeId, ModelError> {
    let w = param(b, &format!("{name}.weight"), &[d])?;
    let bias = param(b, &format!("{name}.bias"), &[d])?;
    Ok(b.layer_norm(x, w, bias, eps)?)
}

/// `x W^T + bias` with `{name}.weight` (`rows` x `cols`) and `{name}.bias`.
fn linear(
    b: &mut Builder,
    param: &mut ParamFn<'_>,
    x: NodeId,
    name: &str,
    (rows, cols): (usize, usize),
) -> Result<NodeId, ModelError> {
    let w = param(b, &format!("{name}.weight"), &[rows, cols])?;
    let bias = param(b, &format!("{name}.bias"), &[rows])?;
    let y = b.matmul_t(x, w, false, true)?;
    Ok(b.add(y, bias)?)
}
