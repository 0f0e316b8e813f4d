//! Normalisations over the last axis: `rms_norm` (llama family) and `layer_norm` (GPT-2,
//! BERT). Statistics are computed in f64 from the stored inputs and only the output is
//! rounded, which is what a fused kernel with f32 statistics approximates.

use crate::tensor::Tensor;

/// `x / sqrt(mean(x^2) + eps) * w`, per row of the last axis.
pub(super) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor, String> {
    let d = row_len(x, &[("weight", w)])?;
    let mut out = Vec::with_capacity(x.numel());
    for row in x.data.chunks(d) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let scale = 1.0 / (ms + eps).sqrt();
        out.extend(row.iter().zip(&w.data).map(|(v, wi)| v * scale * wi));
    }
    Ok(Tensor::new(x.dtype, x.shape.clone(), out))
}

/// `(x - mean) / sqrt(var + eps) * w + b`, per row of the last axis; `var` is the biased
/// variance (divided by `d`, not `d - 1`), as in PyTorch's `LayerNorm`.
pub(super) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor, String> {
    let d = row_len(x, &[("weight", w), ("bias", b)])?;
    let mut out = Vec::with_capacity(x.numel());
    for row in x.data.chunks(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let scale = 1.0 / (var + eps).sqrt();
        out.extend(
            row.iter()
                .zip(&w.data)
                .zip(&b.data)
                .map(|((v, wi), bi)| (v - mean) * scale * wi + bi),
        );
    }
    Ok(Tensor::new(x.dtype, x.shape.clone(), out))
}

/// The last-axis length `d`, after checking each vector operand is `[d]` of `x`'s dtype.
fn row_len(x: &Tensor, vectors: &[(&str, &Tensor)]) -> Result<usize, String> {
    let d = *x.shape.last().ok_or("needs an operand of rank >= 1")?;
    for (name, v) in vectors {
        if v.dtype != x.dtype || v.shape != [d] {
            return Err(format!(
                "{name} is {}{:?}, expected {}[{d}] to match x {:?}",
                v.dtype, v.shape, x.dtype, x.shape
            ));
        }
    }
    // `chunks(0)` panics; a row of length 0 has nothing to normalise.
    Ok(d.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn f32s(shape: &[usize], data: &[f64]) -> Tensor {
        Tensor::new(DType::F32, shape.to_vec(), data.to_vec())
    }

    fn assert_close(got: &Tensor, want: &[f64]) {
        for (i, (g, w)) in got.data.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "element {i}: got {g}, want {w}"
            );
        }
        assert_eq!(got.data.len(), want.len());
    }

    #[test]
    fn rms_norm_hand_values() {
        // Row (3, -4): mean square 12.5, rms 3.5355339; row (1, 1): rms 1. eps = 0.
        let x = f32s(&[2, 2], &[3.0, -4.0, 1.0, 1.0]);
        let w = f32s(&[2], &[1.0, 2.0]);
        let r = rms_norm(&x, &w, 0.0).unwrap();
        assert_close(&r, &[0.8485281374238571, -2.262741699796952, 1.0, 2.0]);
        // eps enters under the root: (1, 1) with eps = 3 is scaled by 1/2.
        let r = rms_norm(&f32s(&[2], &[1.0, 1.0]), &w, 3.0).unwrap();
        assert_eq!(r.data, vec![0.5, 1.0]);
    }

    #[test]
    fn layer_norm_uses_biased_variance() {
        // Row (1, 2, 3, 6): mean 3, biased var (4 + 1 + 0 + 9) / 4 = 3.5.
        let x = f32s(&[1, 4], &[1.0, 2.0, 3.0, 6.0]);
        let w = f32s(&[4], &[1.0, 1.0, 2.0, -1.0]);
        let b = f32s(&[4], &[0.0, 0.5, 0.0, 1.0]);
        let s = 1.0 / 3.5f64.sqrt();
        let r = layer_norm(&x, &w, &b, 0.0).unwrap();
        assert_close(&r, &[-2.0 * s, -s + 0.5, 0.0, -3.0 * s + 1.0]);
        // A constant row normalises to the bias (var 0, eps keeps it finite).
        let r = layer_norm(&f32s(&[4], &[5.0; 4]), &w, &b, 1e-5).unwrap();
        assert_eq!(r.data, vec![0.0, 0.5, 0.0, 1.0]);
    }

    #[test]
    fn half_precision_output_rounds() {
        // Row (1, 2): rms = sqrt(2.5) = 1.5811388; outputs 0.6324555, 1.2649111.
        let x = Tensor::new(DType::BF16, vec![2], vec![1.0, 2.0]);
        let w = Tensor::new(DType::BF16, vec![2], vec![1.0, 1.0]);
        assert_eq!(
            rms_norm(&x, &w, 0.0).unwrap().data,
            vec![0.6328125, 1.265625]
        );
        let x = Tensor::new(DType::F16, vec![2], vec![1.0, 2.0]);
        let w = Tensor::new(DType::F16, vec![2], vec![1.0, 1.0]);
        assert_eq!(
            rms_norm(&x, &w, 0.0).unwrap().data,
            vec![0.63232421875, 1.2646484375]
        );
    }

    #[test]
    fn weight_shape_mismatch_is_an_error() {
        let err = rms_norm(&f32s(&[2, 3], &[0.0; 6]), &f32s(&[2], &[0.0; 2]), 1e-6).unwrap_err();
        assert!(err.contains("weight is f32[2], expected f32[3]"), "{err}");
        let w = f32s(&[3], &[0.0; 3]);
        let b = Tensor::new(DType::F16, vec![3], vec![0.0; 3]);
        let err = layer_norm(&f32s(&[3], &[0.0; 3]), &w, &b, 1e-6).unwrap_err();
        assert!(err.contains("bias is f16[3]"), "{err}");
    }
}
