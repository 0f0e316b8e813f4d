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
        // Quantized weights of a .kir graph (`dequant` of a u8 parameter).
        Dtype::U8 => DType::U8,
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

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::Builder;
    use safetensors::tensor::TensorView;

    fn file_with(dir: &Path, dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> std::path::PathBuf {
        let view = TensorView::new(dtype, shape, data).unwrap();
        let bytes = safetensors::serialize([("w", view)], None).unwrap();
        let path = dir.join("w.safetensors");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn graph_with(dtype: DType, shape: [usize; 2]) -> Graph {
        let mut b = Builder::new();
        let w = b.param("w", dtype, shape).unwrap();
        b.output("w", w);
        b.finish()
    }

    /// A .kir graph's quantized weights are a u8 parameter: its bytes load as they are.
    #[test]
    fn byte_tensors_load_as_u8_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..=255).chain(0..=255).collect();
        let path = file_with(dir.path(), Dtype::U8, vec![2, 256], &data);
        let w = load(&path, &graph_with(DType::U8, [2, 256])).unwrap();
        assert_eq!(w.get("w").unwrap().bytes(), &data[..]);
    }

    #[test]
    fn unread_types_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), Dtype::I8, vec![1, 4], &[1, 2, 3, 4]);
        let e = load(&path, &graph_with(DType::U8, [1, 4])).unwrap_err();
        assert!(e.to_string().contains("tensor `w` has type I8"), "{e}");
    }
}
