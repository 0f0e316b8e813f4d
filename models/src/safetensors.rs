//! Parameter data from a safetensors file, matched to a graph's parameters by name.

use crate::weights::Weight;
use crate::Weights;
use kiln_ir::{DType, Graph};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{path}: tensor `{name}` has type {dtype}, which kiln does not read")]
    Dtype {
        path: String,
        name: String,
        dtype: String,
    },
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightError),
}

fn dtype_of(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        _ => return None,
    })
}

/// Loads the tensors the graph's parameters name (others in the file are ignored) and
/// checks each against its declaration.
pub fn load(path: &Path, g: &Graph) -> Result<Weights, SafetensorsError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| SafetensorsError::File {
        path: p.clone(),
        msg: e.to_string(),
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| SafetensorsError::File {
        path: p.clone(),
        msg: format!("not a valid safetensors file: {e}"),
    })?;
    let mut w = Weights::default();
    for (name, _) in g.params_named() {
        let Ok(view) = st.tensor(&name) else { continue };
        let dtype = dtype_of(view.dtype()).ok_or_else(|| SafetensorsError::Dtype {
            path: p.clone(),
            name: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let t = Weight::from_bytes(dtype, view.shape().to_vec(), view.data().to_vec()).map_err(
            |msg| SafetensorsError::File {
                path: p.clone(),
                msg: format!("tensor `{name}`: {msg}"),
            },
        )?;
        w.insert_weight(&name, t);
    }
    w.check(g)?;
    Ok(w)
}
