//! Parameter data by name. Checked against the graph's declarations before compiling, so
//! a wrong or missing weight is reported with its name, expected and actual shape.

use kiln_ir::{Graph, Op, Tensor};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Weights {
    pub tensors: BTreeMap<String, Tensor>,
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
    pub fn insert(&mut self, name: &str, t: Tensor) {
        self.tensors.insert(name.to_string(), t);
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
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
