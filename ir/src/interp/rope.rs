//! Rotary position embedding. `x` is `[.., seq, heads, head_dim]` and `pos` an integer
//! `[seq]`; pair `i` of the first `rot_dims` elements of each head turns by the angle
//! `pos * theta^(-2i / rot_dims)`, as `(a, b) -> (a cos - b sin, a sin + b cos)`, and the
//! elements from `rot_dims` on pass through (partial rotary: GPT-J, Phi, GPT-NeoX).
//! [`RopeLayout`] says which two elements form pair `i`. Angles are computed in f64 from
//! the integer position, so long contexts carry no angle error into the oracle.

use crate::op::RopeLayout;
use crate::tensor::Tensor;

pub(super) fn rope(
    x: &Tensor,
    pos: &Tensor,
    layout: RopeLayout,
    theta: f64,
    rot_dims: usize,
) -> Result<Tensor, String> {
    let rank = x.shape.len();
    if rank < 3 {
        return Err(format!(
            "x must be [.., seq, heads, head_dim], got {:?}",
            x.shape
        ));
    }
    let (seq, heads, head_dim) = (x.shape[rank - 3], x.shape[rank - 2], x.shape[rank - 1]);
    if pos.shape != [seq] || !pos.dtype.is_int() {
        return Err(format!(
            "positions are {}{:?}, expected an integer [{seq}]",
            pos.dtype, pos.shape
        ));
    }
    if rot_dims == 0 || rot_dims % 2 == 1 || rot_dims > head_dim {
        return Err(format!(
            "rot_dims {rot_dims} must be even, > 0 and <= head_dim {head_dim}"
        ));
    }
    let half = rot_dims / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| theta.powf(-2.0 * i as f64 / rot_dims as f64))
        .collect();
    let mut out = x.data.clone();
    // Rows are heads; row r belongs to sequence position (r / heads) % seq.
    for (r, head) in out.chunks_mut(head_dim).enumerate() {
        let p = pos.data[(r / heads) % seq];
        for (i, f) in inv_freq.iter().enumerate() {
            let (ia, ib) = match layout {
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                RopeLayout::Neox => (i, i + half),
            };
            let (sin, cos) = (p * f).sin_cos();
            let (a, b) = (head[ia], head[ib]);
            head[ia] = a * cos - b * sin;
            head[ib] = a * sin + b * cos;
        }
    }
    Ok(Tensor::new(x.dtype, x.shape.clone(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "element {i}: got {g}, want {w}"
            );
        }
    }

    const HEAD: [f64; 6] = [1.0, -2.0, 3.0, 4.0, -5.0, 6.0];

    fn positions(p: &[f64]) -> Tensor {
        Tensor::new(DType::I32, vec![p.len()], p.to_vec())
    }

    #[test]
    fn interleaved_rotates_adjacent_pairs_of_the_first_rot_dims() {
        // x: [batch 2, seq 2, heads 1, head_dim 6], every head (1,-2,3,4,-5,6); pos (0, 1).
        // theta 100, rot_dims 4: pair 0 turns by pos * 1, pair 1 by pos * 100^(-1/2) = pos/10.
        let x = Tensor::new(DType::F32, vec![2, 2, 1, 6], HEAD.repeat(4));
        let y = rope(
            &x,
            &positions(&[0.0, 1.0]),
            RopeLayout::Interleaved,
            100.0,
            4,
        )
        .unwrap();
        // (1,-2) by 1 rad: (cos1 + 2 sin1, sin1 - 2 cos1); (3,4) by 0.1 rad.
        let turned = [
            2.2232442754839328,
            -0.23913362692838303,
            2.585678829246765,
            4.279516911052588,
            -5.0,
            6.0,
        ];
        let want = [HEAD, turned, HEAD, turned].concat();
        assert_close(&y.data, &want);
    }

    #[test]
    fn neox_rotates_the_two_halves_of_the_rot_dims() {
        // x: [seq 2, heads 2, 6]; pos (1, 2). Pairs are (x0, x2) and (x1, x3); x4, x5 pass.
        let x = Tensor::new(DType::F32, vec![2, 2, 6], HEAD.repeat(4));
        let y = rope(&x, &positions(&[1.0, 2.0]), RopeLayout::Neox, 100.0, 4).unwrap();
        // pos 1: (1,3) by 1 rad -> x0, x2; (-2,4) by 0.1 rad -> x1, x3.
        let p1 = [
            -1.9841106485555495,
            -2.3893419971433643,
            2.4623779024123156,
            3.780349827818447,
            -5.0,
            6.0,
        ];
        let p2 = [
            -3.1440391170241875,
            -2.754810478862728,
            -0.33914308281574557,
            3.522927649774844,
            -5.0,
            6.0,
        ];
        assert_close(&y.data, &[p1, p1, p2, p2].concat());
    }

    #[test]
    fn full_rotation_and_negative_positions() {
        // rot_dims = head_dim = 2: pos -1 turns (1, 0) by -1 rad to (cos 1, -sin 1).
        let x = Tensor::new(DType::F32, vec![1, 1, 2], vec![1.0, 0.0]);
        let y = rope(&x, &positions(&[-1.0]), RopeLayout::Neox, 10000.0, 2).unwrap();
        assert_close(&y.data, &[0.5403023058681398, -0.8414709848078965]);
    }

    #[test]
    fn bf16_output_rounds() {
        let x = Tensor::new(DType::BF16, vec![1, 1, 2], vec![1.0, 0.0]);
        let y = rope(&x, &positions(&[1.0]), RopeLayout::Interleaved, 10000.0, 2).unwrap();
        assert_eq!(y.data, vec![0.5390625, 0.83984375]);
    }

    #[test]
    fn bad_positions_and_rot_dims_are_errors() {
        let x = Tensor::new(DType::F32, vec![2, 1, 4], vec![0.0; 8]);
        let err = rope(&x, &positions(&[0.0]), RopeLayout::Neox, 1e4, 4).unwrap_err();
        assert!(err.contains("expected an integer [2]"), "{err}");
        let two = positions(&[0.0, 1.0]);
        for bad in [0, 3, 6] {
            let err = rope(&x, &two, RopeLayout::Neox, 1e4, bad).unwrap_err();
            assert!(err.contains(&format!("rot_dims {bad}")), "{err}");
        }
        let err = rope(
            &Tensor::new(DType::F32, vec![4], vec![0.0; 4]),
            &two,
            RopeLayout::Neox,
            1e4,
            2,
        );
        assert!(err.unwrap_err().contains("[.., seq, heads, head_dim]"));
    }
}
