//! Unary element-wise ops and `cast`: a scalar function of f64 applied per element, the
//! output rounded to the dtype. The formulas here are the definitions the kernel-IR
//! expansions (`kiln_compiler::kernel::math`) approximate in f32.

use super::erf::erfc;
use crate::dtype::DType;
use crate::op::UnaryOp;
use crate::tensor::Tensor;
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_PI};

pub(super) fn unary(op: UnaryOp, x: &Tensor) -> Tensor {
    let data = x.data.iter().map(|&v| unary_scalar(op, v)).collect();
    Tensor::new(x.dtype, x.shape.clone(), data)
}

/// One element of a unary op. Integer operands (only `neg`, `abs`, `relu` accept them)
/// use the same formulas; the output rounding saturates `neg(i32::MIN)` to `i32::MAX`.
fn unary_scalar(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Silu => x * sigmoid(x),
        UnaryOp::GeluTanh => {
            let inner = FRAC_2_PI.sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + inner.tanh())
        }
        // 0.5x(1 + erf(x/sqrt2)), written with erfc so the negative tail keeps its digits.
        UnaryOp::GeluErf => 0.5 * x * erfc(-x * FRAC_1_SQRT_2),
        // NaN passes through (`NaN < 0` is false), as in PyTorch.
        UnaryOp::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        UnaryOp::Recip => 1.0 / x,
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Rounding to the target type is the whole op: float -> int truncates toward zero and
/// saturates (NaN becomes 0), float -> narrower float rounds to nearest even.
pub(super) fn cast(x: &Tensor, dtype: DType) -> Tensor {
    Tensor::new(dtype, x.shape.clone(), x.data.clone())
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

    fn assert_close(got: &Tensor, want: &[f64], tol: f64) {
        assert_eq!(got.data.len(), want.len(), "{got:?}");
        for (i, (g, w)) in got.data.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "element {i}: got {g}, want {w}"
            );
        }
    }

    #[test]
    fn unary_math_on_hand_values() {
        let x = f32s(&[4], &[-2.0, -0.5, 0.0, 1.0]);
        let u = |op| unary(op, &x);
        assert_eq!(u(UnaryOp::Neg).data, vec![2.0, 0.5, 0.0, -1.0]);
        assert_eq!(u(UnaryOp::Abs).data, vec![2.0, 0.5, 0.0, 1.0]);
        assert_eq!(u(UnaryOp::Relu).data, vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(u(UnaryOp::Recip).data, vec![-0.5, -2.0, f64::INFINITY, 1.0]);
        let tol = 1e-7;
        assert_close(
            &u(UnaryOp::Exp),
            &[
                0.1353352832366127,
                0.6065306597126334,
                1.0,
                std::f64::consts::E,
            ],
            tol,
        );
        assert_close(
            &u(UnaryOp::Tanh),
            &[
                -0.9640275800758169,
                -0.46211715726000974,
                0.0,
                0.7615941559557649,
            ],
            tol,
        );
        assert_close(
            &u(UnaryOp::Sigmoid),
            &[
                0.11920292202211755,
                0.3775406687981454,
                0.5,
                0.7310585786300049,
            ],
            tol,
        );
        assert_close(
            &u(UnaryOp::Silu),
            &[
                -0.2384058440442351,
                -0.1887703343990727,
                0.0,
                0.7310585786300049,
            ],
            tol,
        );
        // gelu_tanh(1) = 0.5(1 + tanh(sqrt(2/pi) * 1.044715)); gelu_erf(1) = 0.5(1 + erf(1/sqrt2)).
        assert_close(
            &u(UnaryOp::GeluTanh),
            &[
                -0.04540230591222498,
                -0.1542859901748561,
                0.0,
                0.8411919906082767,
            ],
            tol,
        );
        assert_close(
            &u(UnaryOp::GeluErf),
            &[
                -0.04550026389635842,
                -0.15426876936299347,
                0.0,
                0.8413447460685429,
            ],
            tol,
        );
        let p = f32s(&[3], &[4.0, 0.25, -1.0]);
        assert_eq!(unary(UnaryOp::Sqrt, &p).data[..2], [2.0, 0.5]);
        assert!(unary(UnaryOp::Sqrt, &p).data[2].is_nan());
        assert_eq!(unary(UnaryOp::Rsqrt, &p).data[..2], [0.5, 2.0]);
        let log = unary(UnaryOp::Log, &p);
        assert_close(
            &Tensor::new(DType::F32, vec![2], log.data[..2].to_vec()),
            &[1.3862943611198906, -1.3862943611198906],
            tol,
        );
        assert!(log.data[2].is_nan());
    }

    #[test]
    fn gelu_erf_keeps_its_negative_tail() {
        // 0.5 * -10 * erfc(10/sqrt2) = -7.619853024160527e-23; 1 + erf(..) would give 0.
        let v = unary_scalar(UnaryOp::GeluErf, -10.0);
        assert!((v / -7.619853024160527e-23 - 1.0).abs() < 1e-12, "{v:e}");
    }

    #[test]
    fn unary_output_rounds_to_half_types() {
        // exp(1) = 2.71828..: f16 (spacing 1/512 at 2) and bf16 (spacing 1/64) both store
        // 2.71875; sqrt(2) = 1.41421.. becomes 1.4140625 in both.
        assert_eq!(
            unary(UnaryOp::Exp, &t(DType::F16, &[1], &[1.0])).data,
            vec![2.71875]
        );
        assert_eq!(
            unary(UnaryOp::Exp, &t(DType::BF16, &[1], &[1.0])).data,
            vec![2.71875]
        );
        assert_eq!(
            unary(UnaryOp::Sqrt, &t(DType::BF16, &[1], &[2.0])).data,
            vec![1.4140625]
        );
        assert_eq!(
            unary(UnaryOp::Sqrt, &t(DType::F16, &[1], &[2.0])).data,
            vec![1.4140625]
        );
    }

    #[test]
    fn integer_unary_ops_saturate() {
        let x = t(DType::I32, &[3], &[-5.0, 7.0, i32::MIN as f64]);
        assert_eq!(
            unary(UnaryOp::Neg, &x).data,
            vec![5.0, -7.0, i32::MAX as f64]
        );
        assert_eq!(
            unary(UnaryOp::Abs, &x).data,
            vec![5.0, 7.0, i32::MAX as f64]
        );
        assert_eq!(unary(UnaryOp::Relu, &x).data, vec![0.0, 7.0, 0.0]);
    }

    #[test]
    fn cast_truncates_saturates_and_rounds() {
        let x = f32s(&[5], &[2.7, -2.7, 1e10, f64::NAN, -1e10]);
        let i = cast(&x, DType::I32);
        assert_eq!(
            (i.dtype, i.data),
            (
                DType::I32,
                vec![2.0, -2.0, i32::MAX as f64, 0.0, i32::MIN as f64]
            )
        );
        let h = cast(&f32s(&[2], &[1.0 + 1.0 / 4096.0, 70000.0]), DType::F16);
        assert_eq!(h.data, vec![1.0, f64::INFINITY]);
        let f = cast(&t(DType::I64, &[1], &[16777217.0]), DType::F32);
        assert_eq!(f.data, vec![16777216.0]);
    }
}
