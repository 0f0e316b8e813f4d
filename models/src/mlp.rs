//! Multi-layer perceptrons: `x -> (matmul, bias, activation)* -> matmul, bias`.

use crate::{Model, Weights};
use kiln_ir::{Builder, DType, Dim, IrError, UnaryOp};

#[derive(Clone, Debug)]
pub struct MlpConfig {
    /// Widths from input to output: `[64, 256, 10]` is one hidden layer of 256.
    pub widths: Vec<usize>,
    pub activation: UnaryOp,
    pub dtype: DType,
    /// Append a softmax over the outputs.
    pub softmax: bool,
}

/// The graph of an MLP with a symbolic `batch` dimension, and its parameter names.
pub fn build(cfg: &MlpConfig) -> Result<kiln_ir::Graph, IrError> {
    let mut b = Builder::new();
    let w = &cfg.widths;
    let mut x = b.input("x", cfg.dtype, vec![Dim::sym("batch"), Dim::from(w[0])])?;
    for layer in 0..w.len() - 1 {
        let weight = b.param(
            &format!("layer{layer}.weight"),
            cfg.dtype,
            [w[layer], w[layer + 1]],
        )?;
        let bias = b.param(&format!("layer{layer}.bias"), cfg.dtype, [w[layer + 1]])?;
        x = b.matmul(x, weight)?;
        x = b.add(x, bias)?;
        if layer + 2 < w.len() {
            x = b.unary(cfg.activation, x)?;
        }
    }
    if cfg.softmax {
        x = b.softmax(x, 1)?;
    }
    b.output("y", x);
    Ok(b.finish())
}

/// The built-in demo model: a 256-512-512-10 classifier with gelu and deterministic weights.
pub fn demo() -> Model {
    let cfg = MlpConfig {
        widths: vec![256, 512, 512, 10],
        activation: UnaryOp::GeluTanh,
        dtype: DType::F32,
        softmax: true,
    };
    let graph = build(&cfg).expect("the demo MLP is well-typed");
    let weights = Weights::seeded_for(&graph, 2024).expect("the demo MLP has known weight shapes");
    Model {
        name: "builtin:mlp".into(),
        graph,
        weights,
        vocab: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_model_is_complete_and_verifies() {
        let m = demo();
        kiln_ir::verify(&m.graph).unwrap();
        m.weights.check(&m.graph).unwrap();
        assert_eq!(m.graph.params_named().len(), 6);
        assert_eq!(m.graph.symbols(), vec!["batch".to_string()]);
    }

    #[test]
    fn weight_check_names_the_problem() {
        let m = demo();
        let mut w = m.weights.clone();
        w.tensors.remove("layer1.bias");
        assert_eq!(
            w.check(&m.graph).unwrap_err().to_string(),
            "parameter `layer1.bias` has no data"
        );
        let mut w = m.weights.clone();
        w.insert("layer0.bias", kiln_ir::Tensor::zeros(DType::F32, vec![3]));
        let e = w.check(&m.graph).unwrap_err().to_string();
        assert!(
            e.contains("declares f32[512]") && e.contains("data is f32[3]"),
            "{e}"
        );
    }
}
