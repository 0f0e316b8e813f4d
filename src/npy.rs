//! `.npy` files <-> host buffers, through the `npyz` crate.

use anyhow::{bail, Context, Result};
use kiln_ir::{DType, Tensor};
use npyz::WriterBuilder;
use std::path::Path;

pub fn read(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() != npyz::Order::C {
        bail!(
            "{}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
            path.display()
        );
    }
    let descr = npy.dtype().descr().trim_matches('\'').to_string();
    let (dtype, data) = match descr.as_str() {
        "<f4" => (DType::F32, read_as(npy, path, |v: f32| f64::from(v))?),
        "<f2" => (DType::F16, read_as(npy, path, |v: half::f16| v.to_f64())?),
        "<i4" => (DType::I32, read_as(npy, path, |v: i32| f64::from(v))?),
        "<i8" => (DType::I64, read_as(npy, path, |v: i64| v as f64)?),
        // Quantized weights (GGUF blocks) are bytes; NumPy writes `|u1` for them.
        "|u1" | "<u1" => (DType::U8, read_as(npy, path, |v: u8| f64::from(v))?),
        other => bail!(
            "{}: element type `{other}` is not supported (f32, f16, i32, i64, u8)",
            path.display()
        ),
    };
    if data.len() != shape.iter().product::<usize>() {
        bail!("{}: truncated data", path.display());
    }
    Ok(Tensor::new(dtype, shape, data))
}

/// The elements of `npy` (read from `path`), read as `T` (its dtype, checked by the
/// caller) and converted.
fn read_as<T: npyz::Deserialize>(
    npy: npyz::NpyFile<&[u8]>,
    path: &Path,
    convert: impl Fn(T) -> f64,
) -> Result<Vec<f64>> {
    let values = npy
        .into_vec::<T>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(values.into_iter().map(convert).collect())
}

/// Writes `t` as a `.npy` of its dtype (bf16, which NumPy lacks, as f32); whole or not at all.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    crate::atomic_file::write_with(path, |w| match t.dtype {
        DType::F32 | DType::BF16 => write_as(w, t, |v| v as f32),
        DType::F16 => write_as(w, t, half::f16::from_f64),
        DType::I32 => write_as(w, t, |v| v as i32),
        DType::I64 => write_as(w, t, |v| v as i64),
        DType::U8 => write_as(w, t, |v| v as u8),
    })
}

fn write_as<T: npyz::AutoSerialize>(
    w: &mut dyn std::io::Write,
    t: &Tensor,
    convert: impl Fn(f64) -> T,
) -> Result<()> {
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let mut out = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(w)
        .begin_nd()?;
    out.extend(t.data.iter().map(|&v| convert(v)))?;
    out.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dtype kiln writes reads back as itself, bytes included (quantized weights
    /// passed as inputs).
    #[test]
    fn each_dtype_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [DType::F32, DType::F16, DType::I32, DType::I64, DType::U8] {
            let t = Tensor::new(dtype, vec![2, 3], vec![0.0, 1.0, 2.0, 7.0, 100.0, 255.0]);
            let path = dir.path().join(format!("{dtype}.npy"));
            write(&path, &t).unwrap();
            let back = read(&path).unwrap();
            assert_eq!(back.dtype, dtype);
            assert_eq!(back.shape, t.shape);
            assert_eq!(back.data, t.data, "{dtype}");
        }
    }
}
