//! Binary element-wise ops with NumPy broadcasting: arithmetic, comparisons and `select`.
//! Each output element is a scalar function of the f64 operand elements it broadcasts from.

use super::broadcast::{broadcast_offsets, broadcast_shape};
use crate::dtype::DType;
use crate::op::{BinaryOp, CmpOp};
use crate::tensor::Tensor;

pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    same_dtype(a, b)?;
    let int = a.dtype.is_int();
    zip_broadcast(a.dtype, a, b, |x, y| binary_scalar(op, x, y, int))
}

/// One element of a binary op. Integer `div` truncates toward zero and `x / 0` is 0 (there
/// is no integer infinity, and trapping would make every backend guard the divisor); other
/// integer results, `pow` included, are computed in f64 and truncated by the output.
fn binary_scalar(op: BinaryOp, x: f64, y: f64, int: bool) -> f64 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div if int => {
            if y == 0.0 {
                0.0
            } else {
                (x / y).trunc()
            }
        }
        BinaryOp::Div => x / y,
        BinaryOp::Max if x.is_nan() || y.is_nan() => f64::NAN,
        BinaryOp::Max => x.max(y),
        BinaryOp::Min if x.is_nan() || y.is_nan() => f64::NAN,
        BinaryOp::Min => x.min(y),
        BinaryOp::Pow => x.powf(y),
    }
}

/// Comparisons give 1 or 0 in the operands' dtype; any comparison with NaN is false except
/// `ne`, as in IEEE 754.
pub(super) fn compare(op: CmpOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    same_dtype(a, b)?;
    zip_broadcast(a.dtype, a, b, |x, y| {
        let holds = match op {
            CmpOp::Eq => x == y,
            CmpOp::Ne => x != y,
            CmpOp::Lt => x < y,
            CmpOp::Le => x <= y,
            CmpOp::Gt => x > y,
            CmpOp::Ge => x >= y,
        };
        if holds {
            1.0
        } else {
            0.0
        }
    })
}

/// `a` where `cond != 0`, else `b`; all three broadcast. A NaN condition counts as true.
pub(super) fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    same_dtype(a, b)?;
    let shape = broadcast_shape(&broadcast_shape(&cond.shape, &a.shape)?, &b.shape)?;
    let (oc, oa, ob) = (
        broadcast_offsets(&cond.shape, &shape),
        broadcast_offsets(&a.shape, &shape),
        broadcast_offsets(&b.shape, &shape),
    );
    let data = (0..oc.len())
        .map(|i| {
            if cond.data[oc[i]] != 0.0 {
                a.data[oa[i]]
            } else {
                b.data[ob[i]]
            }
        })
        .collect();
    Ok(Tensor::new(a.dtype, shape, data))
}

fn zip_broadcast(
    dtype: DType,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f64, f64) -> f64,
) -> Result<Tensor, String> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let oa = broadcast_offsets(&a.shape, &shape);
    let ob = broadcast_offsets(&b.shape, &shape);
    let data = oa
        .iter()
        .zip(&ob)
        .map(|(&i, &j)| f(a.data[i], b.data[j]))
        .collect();
    Ok(Tensor::new(dtype, shape, data))
}

fn same_dtype(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        Err(format!(
            "operand dtypes differ: {} and {}",
            a.dtype, b.dtype
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(dtype: DType, shape: &[usize], data: &[f64]) -> Tensor {
        Tensor::new(dtype, shape.to_vec(), data.to_vec())
    }

    fn f32s(shape: &[usize], data: &[f64]) -> Tensor {
        t(DType::F32, shape, data)
    }

    #[test]
    fn binary_broadcasts_row_and_column() {
        let col = f32s(&[2, 1], &[10.0, 20.0]);
        let row = f32s(&[3], &[1.0, -2.0, 3.0]);
        let sum = binary(BinaryOp::Add, &col, &row).unwrap();
        assert_eq!(sum.shape, vec![2, 3]);
        assert_eq!(sum.data, vec![11.0, 8.0, 13.0, 21.0, 18.0, 23.0]);
        let b = |op| binary(op, &col, &row).unwrap().data;
        assert_eq!(b(BinaryOp::Sub), vec![9.0, 12.0, 7.0, 19.0, 22.0, 17.0]);
        assert_eq!(b(BinaryOp::Mul), vec![10.0, -20.0, 30.0, 20.0, -40.0, 60.0]);
        assert_eq!(b(BinaryOp::Max), vec![10.0, 10.0, 10.0, 20.0, 20.0, 20.0]);
        assert_eq!(b(BinaryOp::Min), vec![1.0, -2.0, 3.0, 1.0, -2.0, 3.0]);
        assert_eq!(
            b(BinaryOp::Pow),
            [10.0, 0.01, 1000.0, 20.0, 0.0025, 8000.0].map(|v| DType::F32.round(v))
        );
        assert_eq!(
            b(BinaryOp::Div),
            [10.0, -5.0, 10.0 / 3.0, 20.0, -10.0, 20.0 / 3.0].map(|v| DType::F32.round(v))
        );
        let scalar = f32s(&[], &[2.0]);
        assert_eq!(
            binary(BinaryOp::Mul, &scalar, &row).unwrap().data,
            vec![2.0, -4.0, 6.0]
        );
    }

    #[test]
    fn binary_rejects_mismatched_operands() {
        let err = binary(
            BinaryOp::Add,
            &f32s(&[2, 3], &[0.0; 6]),
            &f32s(&[2], &[0.0; 2]),
        )
        .unwrap_err();
        assert!(err.contains("cannot broadcast [2, 3] with [2]"), "{err}");
        let err = binary(
            BinaryOp::Add,
            &f32s(&[1], &[0.0]),
            &t(DType::I32, &[1], &[0.0]),
        )
        .unwrap_err();
        assert!(err.contains("f32 and i32"), "{err}");
    }

    #[test]
    fn max_min_propagate_nan() {
        let a = f32s(&[2], &[f64::NAN, 1.0]);
        let b = f32s(&[2], &[0.0, f64::NAN]);
        assert!(binary(BinaryOp::Max, &a, &b)
            .unwrap()
            .data
            .iter()
            .all(|v| v.is_nan()));
        assert!(binary(BinaryOp::Min, &a, &b)
            .unwrap()
            .data
            .iter()
            .all(|v| v.is_nan()));
    }

    #[test]
    fn integer_division_truncates_and_zero_divisor_gives_zero() {
        let a = t(DType::I32, &[5], &[7.0, -7.0, 7.0, -7.0, 5.0]);
        let b = t(DType::I32, &[5], &[2.0, 2.0, -2.0, -2.0, 0.0]);
        assert_eq!(
            binary(BinaryOp::Div, &a, &b).unwrap().data,
            vec![3.0, -3.0, -3.0, 3.0, 0.0]
        );
        let big = t(DType::I32, &[1], &[i32::MAX as f64]);
        assert_eq!(
            binary(BinaryOp::Add, &big, &big).unwrap().data,
            vec![i32::MAX as f64]
        );
        let p = binary(
            BinaryOp::Pow,
            &t(DType::I64, &[2], &[3.0, 2.0]),
            &t(DType::I64, &[2], &[4.0, -1.0]),
        );
        assert_eq!(p.unwrap().data, vec![81.0, 0.0]);
    }

    #[test]
    fn bf16_addition_rounds_visibly() {
        // 1 + 1/256 is not a bf16 value (spacing at 1 is 1/128): rounds to even, back to 1.
        let a = t(DType::BF16, &[1], &[1.0]);
        let b = t(DType::BF16, &[1], &[1.0 / 256.0]);
        assert_eq!(binary(BinaryOp::Add, &a, &b).unwrap().data, vec![1.0]);
        let a = t(DType::F32, &[1], &[1.0]);
        let b = t(DType::F32, &[1], &[1.0 / 256.0]);
        assert_eq!(
            binary(BinaryOp::Add, &a, &b).unwrap().data,
            vec![1.00390625]
        );
    }

    #[test]
    fn comparisons_give_one_or_zero_in_operand_dtype() {
        let a = f32s(&[3], &[1.0, 2.0, f64::NAN]);
        let b = f32s(&[1], &[2.0]);
        let c = |op| compare(op, &a, &b).unwrap().data;
        assert_eq!(c(CmpOp::Eq), vec![0.0, 1.0, 0.0]);
        assert_eq!(c(CmpOp::Ne), vec![1.0, 0.0, 1.0]);
        assert_eq!(c(CmpOp::Lt), vec![1.0, 0.0, 0.0]);
        assert_eq!(c(CmpOp::Le), vec![1.0, 1.0, 0.0]);
        assert_eq!(c(CmpOp::Gt), vec![0.0, 0.0, 0.0]);
        assert_eq!(c(CmpOp::Ge), vec![0.0, 1.0, 0.0]);
        let i = compare(
            CmpOp::Gt,
            &t(DType::I64, &[2], &[-3.0, 4.0]),
            &t(DType::I64, &[], &[0.0]),
        )
        .unwrap();
        assert_eq!((i.dtype, i.data), (DType::I64, vec![0.0, 1.0]));
    }

    #[test]
    fn select_broadcasts_all_three() {
        let cond = f32s(&[2, 1], &[1.0, 0.0]);
        let a = f32s(&[3], &[1.0, 2.0, 3.0]);
        let b = f32s(&[], &[-1.0]);
        let s = select(&cond, &a, &b).unwrap();
        assert_eq!(s.shape, vec![2, 3]);
        assert_eq!(s.data, vec![1.0, 2.0, 3.0, -1.0, -1.0, -1.0]);
        let int_cond = t(DType::I32, &[3], &[0.0, -4.0, 0.0]);
        assert_eq!(
            select(&int_cond, &a, &b).unwrap().data,
            vec![-1.0, 2.0, -1.0]
        );
    }
}
