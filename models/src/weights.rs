//! Parameter data by name, stored as the artifact stores it: little-endian bytes of each
//! parameter's dtype (raw blocks for quantized matrices). Holding bytes rather than
//! `kiln_ir::Tensor`s (one f64 per element) keeps a model's weights at the size of its
//! file while it compiles. Checked against the graph's declarations before compiling, so a
//! wrong or missing weight is reported with its name, expected and actual shape.

use kiln_ir::{DType, Graph, Op, Tensor};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Weights {
    pub tensors: BTreeMap<String, Weight>,
}

/// One parameter's data: `shape` elements of `dtype`, encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub dtype: DType,
    pub shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Weight {
    /// `bytes` must hold exactly `shape` elements of `dtype`; the error says how many bytes
    /// they should be.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Weight, String> {
        let want = shape
            .iter()
            .try_fold(dtype.size_bytes(), |a, &d| a.checked_mul(d));
        if want != Some(bytes.len()) {
            return Err(format!(
                "{dtype}{shape:?} needs {} bytes, the data has {}",
                want.map_or("more than 2^64".to_string(), |w| w.to_string()),
                bytes.len()
            ));
        }
        Ok(Weight {
            dtype,
            shape,
            bytes,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The values as a tensor (for the interpreter and tests; costs 8 bytes per element).
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_bytes(self.dtype, self.shape.clone(), &self.bytes)
            .expect("a weight's bytes fill its shape")
    }
}

impl From<&Tensor> for Weight {
    fn from(t: &Tensor) -> Weight {
        Weight {
            dtype: t.dtype,
            shape: t.shape.clone(),
            bytes: t.to_bytes(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WeightError {
    #[error("parameter `{0}` has no data")]
    Missing(String),
    #[error("parameter `{name}`: the graph declares {want}, the data is {got}")]
    Mismatch {
        name: String,
        want: String,
        got: String,
    },
    #[error("parameter `{name}` has a symbolic shape {shape}; weights must have known shapes")]
    Symbolic { name: String, shape: String },
}

impl Weights {
    /// Stores `t` encoded in its dtype.
    pub fn insert(&mut self, name: &str, t: Tensor) {
        self.insert_weight(name, Weight::from(&t));
    }

    pub fn insert_weight(&mut self, name: &str, w: Weight) {
        self.tensors.insert(name.to_string(), w);
    }

    pub fn get(&self, name: &str) -> Option<&Weight> {
        self.tensors.get(name)
    }

    /// Deterministic values for every parameter of `g` (for examples and tests): each
    /// gets its own seed from its name, scaled like a fan-in initialisation.
    pub fn seeded_for(g: &Graph, seed: u64) -> Result<Weights, WeightError> {
        let mut w = Weights::default();
        for (name, id) in g.params_named() {
            let n = g.node(id);
            let shape = known(&name, &n.shape)?;
            let fan_in = shape.first().copied().unwrap_or(1).max(1) as f64;
            let h = name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            w.insert(
                &name,
                Tensor::seeded(n.dtype, shape, h, 1.0 / fan_in.sqrt()),
            );
        }
        Ok(w)
    }

    /// Every parameter of `g` has data of its declared dtype and shape.
    pub fn check(&self, g: &Graph) -> Result<(), WeightError> {
        for (name, id) in g.params_named() {
            let n = g.node(id);
            let t = self
                .get(&name)
                .ok_or_else(|| WeightError::Missing(name.clone()))?;
            let shape = known(&name, &n.shape)?;
            if t.dtype != n.dtype || t.shape != shape {
                return Err(WeightError::Mismatch {
                    name,
                    want: format!("{}{:?}", n.dtype, shape),
                    got: format!("{}{:?}", t.dtype, t.shape),
                });
            }
        }
        Ok(())
    }

    /// Parameter names in graph order, for laying weights out in the artifact.
    pub fn names_in(g: &Graph) -> Vec<String> {
        g.node_ids()
            .filter_map(|id| match &g.node(id).op {
                Op::Param { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

fn known(name: &str, shape: &[kiln_ir::Dim]) -> Result<Vec<usize>, WeightError> {
    shape
        .iter()
        .map(|d| d.as_known().map(|v| v as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| WeightError::Symbolic {
            name: name.to_string(),
            shape: kiln_ir::dim::shape_to_string(shape),
        })
}
