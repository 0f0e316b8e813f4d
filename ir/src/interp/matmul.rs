//! `matmul`: `[.., m, k] x [.., k, n] -> [.., m, n]` with NumPy-broadcast batch dims. A
//! transposed operand is its stored last two axes read swapped (`transpose_b` takes `b`
//! stored `[.., n, k]`, the usual weight layout). Each dot product accumulates in f64 and
//! is rounded once, so backends may accumulate in any order at f32 or wider.

use super::broadcast::{broadcast_offsets, broadcast_shape};
use crate::tensor::Tensor;

pub(super) fn matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor, String> {
    if a.dtype != b.dtype {
        return Err(format!(
            "operand dtypes differ: {} and {}",
            a.dtype, b.dtype
        ));
    }
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 {
        return Err(format!(
            "operands need rank >= 2, got {:?} and {:?}",
            a.shape, b.shape
        ));
    }
    let (m, k) = last_two(&a.shape, ta);
    let (kb, n) = last_two(&b.shape, tb);
    if k != kb {
        return Err(format!(
            "inner dims differ: {:?} x {:?} (k = {k} vs {kb})",
            a.shape, b.shape
        ));
    }
    let (a_batch, b_batch) = (&a.shape[..ra - 2], &b.shape[..rb - 2]);
    let batch = broadcast_shape(a_batch, b_batch)?;
    // Offset of element (i, p) of op(a) and (p, j) of op(b) within one matrix.
    let a_at = |i: usize, p: usize| if ta { p * m + i } else { i * k + p };
    let b_at = |p: usize, j: usize| if tb { j * k + p } else { p * n + j };
    let mut out = Vec::with_capacity(batch.iter().product::<usize>() * m * n);
    for (&ab, &bb) in broadcast_offsets(a_batch, &batch)
        .iter()
        .zip(&broadcast_offsets(b_batch, &batch))
    {
        let (am, bm) = (&a.data[ab * m * k..], &b.data[bb * k * n..]);
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|p| am[a_at(i, p)] * bm[b_at(p, j)]).sum());
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Ok(Tensor::new(a.dtype, shape, out))
}

/// `(rows, cols)` of the operand as the product reads it.
fn last_two(shape: &[usize], transposed: bool) -> (usize, usize) {
    let (r, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if transposed {
        (c, r)
    } else {
        (r, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn f32s(shape: &[usize], data: &[f64]) -> Tensor {
        Tensor::new(DType::F32, shape.to_vec(), data.to_vec())
    }

    // a = [[1, 2, 3], [4, 5, 6]], b = [[1, -1], [0, 2], [-3, 1]]; a b = [[-8, 6], [-14, 12]].
    const A: [f64; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    const A_T: [f64; 6] = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
    const B: [f64; 6] = [1.0, -1.0, 0.0, 2.0, -3.0, 1.0];
    const B_T: [f64; 6] = [1.0, 0.0, -3.0, -1.0, 2.0, 1.0];
    const AB: [f64; 4] = [-8.0, 6.0, -14.0, 12.0];

    #[test]
    fn plain_product() {
        let c = matmul(&f32s(&[2, 3], &A), &f32s(&[3, 2], &B), false, false).unwrap();
        assert_eq!((c.shape, c.data), (vec![2, 2], AB.to_vec()));
    }

    #[test]
    fn transposed_operands_read_swapped_axes() {
        let (a, at) = (f32s(&[2, 3], &A), f32s(&[3, 2], &A_T));
        let (b, bt) = (f32s(&[3, 2], &B), f32s(&[2, 3], &B_T));
        for (x, y, ta, tb) in [
            (&at, &b, true, false),
            (&a, &bt, false, true),
            (&at, &bt, true, true),
        ] {
            let c = matmul(x, y, ta, tb).unwrap();
            assert_eq!(
                (c.shape, c.data),
                (vec![2, 2], AB.to_vec()),
                "ta={ta} tb={tb}"
            );
        }
    }

    #[test]
    fn batch_dims_broadcast() {
        // a: [2, 1, 1, 2] (two row vectors), b: [3, 2, 1] (three column vectors).
        let a = f32s(&[2, 1, 1, 2], &[1.0, 2.0, -1.0, 3.0]);
        let b = f32s(&[3, 2, 1], &[1.0, 0.0, 0.0, 1.0, 2.0, -2.0]);
        let c = matmul(&a, &b, false, false).unwrap();
        assert_eq!(c.shape, vec![2, 3, 1, 1]);
        // Row (1, 2) against (1,0), (0,1), (2,-2); then row (-1, 3) against the same.
        assert_eq!(c.data, vec![1.0, 2.0, -2.0, -1.0, 3.0, -8.0]);
        // An unbatched weight against a batched activation.
        let x = f32s(&[2, 1, 3], &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let c = matmul(&x, &f32s(&[3, 2], &B), false, false).unwrap();
        assert_eq!(
            (c.shape, c.data),
            (vec![2, 1, 2], vec![1.0, -1.0, -3.0, 1.0])
        );
    }

    #[test]
    fn integer_product() {
        let a = Tensor::new(DType::I32, vec![1, 2], vec![3.0, -4.0]);
        let b = Tensor::new(DType::I32, vec![2, 1], vec![5.0, 6.0]);
        assert_eq!(matmul(&a, &b, false, false).unwrap().data, vec![-9.0]);
    }

    #[test]
    fn f16_accumulates_wide_and_rounds_once() {
        // 2048 + 1 + 1 = 2050 is an f16 value; an f16 running sum would stay at 2048.
        let a = Tensor::new(DType::F16, vec![1, 3], vec![2048.0, 1.0, 1.0]);
        let b = Tensor::new(DType::F16, vec![3, 1], vec![1.0; 3]);
        assert_eq!(matmul(&a, &b, false, false).unwrap().data, vec![2050.0]);
        // f16(0.1) + f16(0.2) = 0.2999267578125, a tie between f16 neighbours: rounds to even.
        let a = Tensor::new(DType::F16, vec![1, 2], vec![1.0, 1.0]);
        let b = Tensor::new(DType::F16, vec![2, 1], vec![0.1, 0.2]);
        assert_eq!(
            matmul(&a, &b, false, false).unwrap().data,
            vec![0.2998046875]
        );
    }

    #[test]
    fn mismatches_are_errors() {
        let err = matmul(&f32s(&[2, 3], &A), &f32s(&[2, 3], &A), false, false).unwrap_err();
        assert!(err.contains("k = 3 vs 2"), "{err}");
        let err = matmul(&f32s(&[3], &[0.0; 3]), &f32s(&[3, 2], &B), false, false).unwrap_err();
        assert!(err.contains("rank >= 2"), "{err}");
        let a = f32s(&[2, 1, 3], &[0.0; 6]);
        let b = f32s(&[3, 3, 1], &[0.0; 9]);
        assert!(matmul(&a, &b, false, false)
            .unwrap_err()
            .contains("cannot broadcast"));
    }
}
