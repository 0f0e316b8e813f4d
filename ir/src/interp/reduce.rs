//! Reductions: `reduce_{sum,max,mean}` over a set of axes, and `softmax` along one axis.
//! Accumulation is in f64 in index order; only the final value is rounded to the dtype.

use super::broadcast::{strided_offsets, strides};
use crate::op::ReduceOp;
use crate::tensor::Tensor;

/// Reduces `x` over `axes`. The max of an empty axis is `-inf` (the integer minimum after
/// rounding), its sum 0 and its mean NaN; `max` propagates NaN.
pub(super) fn reduce(
    op: ReduceOp,
    x: &Tensor,
    axes: &[usize],
    keep_dims: bool,
) -> Result<Tensor, String> {
    let rank = x.shape.len();
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank || axes[..i].contains(&a) {
            return Err(format!(
                "bad reduction axes {axes:?} for shape {:?}",
                x.shape
            ));
        }
    }
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    // Walking the input with the kept shape's strides (0 on reduced axes) gives, for each
    // input element, the output element it folds into.
    let ks = strides(&kept);
    let walk: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&i) { 0 } else { ks[i] })
        .collect();
    let init = match op {
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Sum | ReduceOp::Mean => 0.0,
    };
    let mut acc = vec![init; kept.iter().product()];
    for (&o, &v) in strided_offsets(&x.shape, &walk, 0).iter().zip(&x.data) {
        acc[o] = match op {
            ReduceOp::Max if acc[o].is_nan() || v.is_nan() => f64::NAN,
            ReduceOp::Max => acc[o].max(v),
            ReduceOp::Sum | ReduceOp::Mean => acc[o] + v,
        };
    }
    if op == ReduceOp::Mean {
        let count: usize = axes.iter().map(|&a| x.shape[a]).product();
        acc.iter_mut().for_each(|v| *v /= count as f64);
    }
    let shape = if keep_dims {
        kept
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    Ok(Tensor::new(x.dtype, shape, acc))
}

/// `exp(x - max) / sum(exp(x - max))` along `axis`. Subtracting the max changes nothing
/// mathematically and keeps `exp` from overflowing; a slice that is all `-inf` gives NaN.
pub(super) fn softmax(x: &Tensor, axis: usize) -> Result<Tensor, String> {
    if axis >= x.shape.len() {
        return Err(format!("axis {axis} out of range for shape {:?}", x.shape));
    }
    let n = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    let mut out = vec![0.0; x.numel()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let max = (0..n)
                .map(|j| x.data[at(j)])
                .fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for j in 0..n {
                let e = (x.data[at(j)] - max).exp();
                out[at(j)] = e;
                sum += e;
            }
            for j in 0..n {
                out[at(j)] /= sum;
            }
        }
    }
    Ok(Tensor::new(x.dtype, x.shape.clone(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn f32s(shape: &[usize], data: &[f64]) -> Tensor {
        Tensor::new(DType::F32, shape.to_vec(), data.to_vec())
    }

    // [[1, -2, 3], [-4, 5, -6]]
    fn x23() -> Tensor {
        f32s(&[2, 3], &[1.0, -2.0, 3.0, -4.0, 5.0, -6.0])
    }

    #[test]
    fn sum_over_one_axis_with_and_without_keep_dims() {
        let r = reduce(ReduceOp::Sum, &x23(), &[1], false).unwrap();
        assert_eq!((r.shape, r.data), (vec![2], vec![2.0, -5.0]));
        let r = reduce(ReduceOp::Sum, &x23(), &[0], true).unwrap();
        assert_eq!((r.shape, r.data), (vec![1, 3], vec![-3.0, 3.0, -3.0]));
    }

    #[test]
    fn max_and_mean_over_several_axes() {
        let r = reduce(ReduceOp::Max, &x23(), &[1, 0], false).unwrap();
        assert_eq!((r.shape, r.data), (vec![], vec![5.0]));
        let r = reduce(ReduceOp::Max, &x23(), &[1], true).unwrap();
        assert_eq!((r.shape, r.data), (vec![2, 1], vec![3.0, 5.0]));
        let r = reduce(ReduceOp::Mean, &x23(), &[0, 1], true).unwrap();
        assert_eq!(
            (r.shape, r.data),
            (vec![1, 1], vec![DType::F32.round(-0.5)])
        );
        let r = reduce(ReduceOp::Mean, &x23(), &[1], false).unwrap();
        assert_eq!(
            r.data,
            vec![DType::F32.round(2.0 / 3.0), DType::F32.round(-5.0 / 3.0)]
        );
    }

    #[test]
    fn middle_axis_of_rank_three() {
        // x[i, j, k] = 100i + 10j + k over [2, 2, 2]; summing j gives 200i + 10 + 2k.
        let data: Vec<f64> = (0..8)
            .map(|f| (100 * (f / 4) + 10 * ((f / 2) % 2) + f % 2) as f64)
            .collect();
        let r = reduce(ReduceOp::Sum, &f32s(&[2, 2, 2], &data), &[1], false).unwrap();
        assert_eq!(
            (r.shape, r.data),
            (vec![2, 2], vec![10.0, 12.0, 210.0, 212.0])
        );
    }

    #[test]
    fn integer_sum_saturates_and_max_propagates_nan() {
        let i = Tensor::new(DType::I32, vec![3], vec![i32::MAX as f64, 1.0, 5.0]);
        assert_eq!(
            reduce(ReduceOp::Sum, &i, &[0], false).unwrap().data,
            vec![i32::MAX as f64]
        );
        let n = f32s(&[3], &[1.0, f64::NAN, 2.0]);
        assert!(reduce(ReduceOp::Max, &n, &[0], false).unwrap().data[0].is_nan());
        let err = reduce(ReduceOp::Sum, &x23(), &[2], false).unwrap_err();
        assert!(err.contains("[2]") && err.contains("[2, 3]"), "{err}");
    }

    #[test]
    fn bf16_sum_rounds_once_at_the_end() {
        // 256 + 1 + 1 = 258 is a bf16 value; rounding after each add would stick at 256.
        let x = Tensor::new(DType::BF16, vec![3], vec![256.0, 1.0, 1.0]);
        assert_eq!(
            reduce(ReduceOp::Sum, &x, &[0], false).unwrap().data,
            vec![258.0]
        );
        let x = Tensor::new(DType::BF16, vec![2], vec![256.0, 1.0]);
        assert_eq!(
            reduce(ReduceOp::Sum, &x, &[0], false).unwrap().data,
            vec![256.0]
        );
    }

    #[test]
    fn softmax_last_axis_hand_values() {
        let s = softmax(&f32s(&[1, 3], &[1.0, 2.0, 3.0]), 1).unwrap();
        let want = [0.09003057317038046, 0.24472847105479764, 0.6652409557748219];
        assert_eq!(s.data, want.map(|v| DType::F32.round(v)));
        // Large logits do not overflow: the max is subtracted first.
        let s = softmax(&f32s(&[2], &[1000.0, 1001.0]), 0).unwrap();
        let want = [0.2689414213699951, 0.7310585786300049];
        assert_eq!(s.data, want.map(|v| DType::F32.round(v)));
    }

    #[test]
    fn softmax_first_axis_and_bf16_rounding() {
        // Columns of [[0, 1], [0, -1]]: (0.5, 0.5) and (e/(e+1/e), (1/e)/(e+1/e)).
        let s = softmax(&f32s(&[2, 2], &[0.0, 1.0, 0.0, -1.0]), 0).unwrap();
        let want = [0.5, 0.8807970779778824, 0.5, 0.11920292202211755];
        assert_eq!(s.data, want.map(|v| DType::F32.round(v)));
        let b = Tensor::new(DType::BF16, vec![3], vec![1.0, 2.0, 3.0]);
        assert_eq!(
            softmax(&b, 0).unwrap().data,
            vec![0.08984375, 0.2451171875, 0.6640625]
        );
        let err = softmax(&b, 1).unwrap_err();
        assert!(err.contains("axis 1"), "{err}");
    }

    #[test]
    fn softmax_of_all_masked_row_is_nan() {
        let s = softmax(&f32s(&[2], &[f64::NEG_INFINITY, f64::NEG_INFINITY]), 0).unwrap();
        assert!(s.data.iter().all(|v| v.is_nan()));
    }
}
