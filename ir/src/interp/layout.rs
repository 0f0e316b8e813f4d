//! Ops that move elements without arithmetic: `reshape`, `permute`, `slice`, `concat` and
//! `gather`. Values are copied exactly (no rounding can occur); each op is an index map,
//! and all tensors are row-major.

use super::broadcast::{strided_offsets, strides};
use crate::tensor::Tensor;

/// The same elements in the same row-major order under a new shape.
pub(super) fn reshape(x: &Tensor, shape: Vec<usize>) -> Result<Tensor, String> {
    if shape.iter().product::<usize>() != x.numel() {
        return Err(format!(
            "cannot reshape {:?} to {shape:?}: element counts differ",
            x.shape
        ));
    }
    Ok(Tensor {
        dtype: x.dtype,
        shape,
        data: x.data.clone(),
    })
}

/// Output axis `j` is input axis `perm[j]`.
pub(super) fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..x.shape.len()).collect::<Vec<_>>() {
        return Err(format!(
            "{perm:?} is not a permutation of the axes of {:?}",
            x.shape
        ));
    }
    let s = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let walk: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let offsets = strided_offsets(&shape, &walk, 0);
    Ok(gather_offsets(x, shape, &offsets))
}

/// Elements `start, start + step, ..` below `end` along `axis`.
pub(super) fn slice(
    x: &Tensor,
    axis: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Tensor, String> {
    let n = *x
        .shape
        .get(axis)
        .ok_or_else(|| format!("axis {axis} out of range for {:?}", x.shape))?;
    if start < 0 || end <= start || step < 1 || end as u64 > n as u64 {
        return Err(format!(
            "bad range {start}..{end} step {step} for axis {axis} of size {n}"
        ));
    }
    let (start, end, step) = (start as usize, end as usize, step as usize);
    let mut shape = x.shape.clone();
    shape[axis] = (end - start).div_ceil(step);
    let s = strides(&x.shape);
    let mut walk = s.clone();
    walk[axis] *= step;
    let offsets = strided_offsets(&shape, &walk, start * s[axis]);
    Ok(gather_offsets(x, shape, &offsets))
}

/// Operands joined along `axis`; every other extent must agree.
pub(super) fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let first = xs[0];
    if axis >= first.shape.len() {
        return Err(format!("axis {axis} out of range for {:?}", first.shape));
    }
    for (i, x) in xs.iter().enumerate() {
        let off_axis_match = x.shape.len() == first.shape.len()
            && x.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(a, (p, q))| a == axis || p == q);
        if x.dtype != first.dtype || !off_axis_match {
            return Err(format!(
                "operand {i} is {}{:?}, which does not match {}{:?} off axis {axis}",
                x.dtype, x.shape, first.dtype, first.shape
            ));
        }
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(xs.iter().map(|x| x.numel()).sum());
    for o in 0..outer {
        for x in xs {
            let chunk = x.shape[axis] * inner;
            data.extend_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
        }
    }
    let mut shape = first.shape.clone();
    shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
    Ok(Tensor {
        dtype: first.dtype,
        shape,
        data,
    })
}

/// `table[ids[..], ..]`: row `ids[i]` of `table` for each id, giving `[ids.., table[1..]]`.
/// An id outside `0..rows` is an error, never a clamp: a backend that reads out of bounds
/// must be caught, and the oracle cannot say what it would have read.
pub(super) fn gather(table: &Tensor, ids: &Tensor) -> Result<Tensor, String> {
    let rows = *table.shape.first().ok_or("table must have rank >= 1")?;
    if !ids.dtype.is_int() {
        return Err(format!("ids must be an integer tensor, got {}", ids.dtype));
    }
    let row_len: usize = table.shape[1..].iter().product();
    let mut data = Vec::with_capacity(ids.numel() * row_len);
    for (i, &id) in ids.data.iter().enumerate() {
        if id < 0.0 || id >= rows as f64 {
            return Err(format!(
                "gather index {id} (ids element {i}) out of range for table of {rows} rows"
            ));
        }
        let r = id as usize;
        data.extend_from_slice(&table.data[r * row_len..(r + 1) * row_len]);
    }
    let shape = ids.shape.iter().chain(&table.shape[1..]).copied().collect();
    Ok(Tensor {
        dtype: table.dtype,
        shape,
        data,
    })
}

/// Decodes each row of block bytes with the format's reference decoder.
pub(super) fn dequant(x: &Tensor, format: crate::QuantFormat) -> Result<Tensor, String> {
    let row_bytes = *x.shape.last().ok_or("dequant needs rank >= 1")?;
    let elems = format.elems_in(row_bytes as i64)? as usize;
    let bytes: Vec<u8> = x.data.iter().map(|&v| v as u8).collect();
    let (bb, be) = (format.block_bytes(), format.block_elems());
    let mut out = vec![0f32; bytes.len() / bb * be];
    for (b, y) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        format.decode_block(b, y);
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank >= 1") = elems;
    Ok(Tensor {
        dtype: crate::DType::F32,
        shape,
        data: out.into_iter().map(f64::from).collect(),
    })
}

/// Encodes each row as `format` blocks (`q8_0` or `q8_k`) with the reference encoders.
pub(super) fn quantize(x: &Tensor, format: crate::QuantFormat) -> Result<Tensor, String> {
    let k = *x.shape.last().ok_or("quantize needs rank >= 1")?;
    let (be, bb) = (format.block_elems(), format.block_bytes());
    if k % be != 0 {
        return Err(format!(
            "quantize: rows of {k} are not whole blocks of {be}"
        ));
    }
    let mut out = Vec::with_capacity(x.data.len() / be * bb);
    for block in x.data.chunks_exact(be) {
        let v: Vec<f32> = block.iter().map(|&v| v as f32).collect();
        match format {
            crate::QuantFormat::Q8_0 => out.extend(crate::quant::quantize_q8_0(&v).map(f64::from)),
            crate::QuantFormat::Q8K => out.extend(crate::quant::quantize_q8_k(&v).map(f64::from)),
            other => return Err(format!("quantize: {other} is not an activation format")),
        }
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank >= 1") = k / be * bb;
    Ok(Tensor {
        dtype: crate::DType::U8,
        shape,
        data: out,
    })
}

fn gather_offsets(x: &Tensor, shape: Vec<usize>, offsets: &[usize]) -> Tensor {
    Tensor {
        dtype: x.dtype,
        shape,
        data: offsets.iter().map(|&o| x.data[o]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    // [[0, 1, 2], [3, 4, 5]]
    fn x23() -> Tensor {
        Tensor::new(DType::F32, vec![2, 3], (0..6).map(f64::from).collect())
    }

    #[test]
    fn reshape_keeps_row_major_order() {
        let r = reshape(&x23(), vec![3, 1, 2]).unwrap();
        assert_eq!((r.shape, r.data), (vec![3, 1, 2], x23().data));
        let err = reshape(&x23(), vec![4]).unwrap_err();
        assert!(err.contains("[2, 3] to [4]"), "{err}");
    }

    #[test]
    fn permute_moves_axes() {
        let p = permute(&x23(), &[1, 0]).unwrap();
        assert_eq!(
            (p.shape, p.data),
            (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0])
        );
        // x[i, j, k] = 4i + 2j + k over [2, 2, 2]; out[a, b, c] = x[b, c, a] = 4b + 2c + a.
        let x = Tensor::new(DType::I32, vec![2, 2, 2], (0..8).map(f64::from).collect());
        let p = permute(&x, &[2, 0, 1]).unwrap();
        assert_eq!(p.data, vec![0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]);
        assert!(permute(&x, &[0, 0, 1])
            .unwrap_err()
            .contains("not a permutation"));
    }

    #[test]
    fn slice_with_step_along_each_axis() {
        let s = slice(&x23(), 1, 0, 3, 2).unwrap();
        assert_eq!((s.shape, s.data), (vec![2, 2], vec![0.0, 2.0, 3.0, 5.0]));
        let s = slice(&x23(), 0, 1, 2, 1).unwrap();
        assert_eq!((s.shape, s.data), (vec![1, 3], vec![3.0, 4.0, 5.0]));
        let s = slice(&x23(), 1, 1, 3, 5).unwrap();
        assert_eq!((s.shape, s.data), (vec![2, 1], vec![1.0, 4.0]));
        let err = slice(&x23(), 1, 1, 4, 1).unwrap_err();
        assert!(err.contains("1..4") && err.contains("size 3"), "{err}");
        assert!(slice(&x23(), 2, 0, 1, 1).unwrap_err().contains("axis 2"));
    }

    #[test]
    fn concat_inner_and_outer_axes() {
        let y = Tensor::new(DType::F32, vec![2, 1], vec![-1.0, -2.0]);
        let c = concat(&[&x23(), &y], 1).unwrap();
        assert_eq!(c.shape, vec![2, 4]);
        assert_eq!(c.data, vec![0.0, 1.0, 2.0, -1.0, 3.0, 4.0, 5.0, -2.0]);
        let c = concat(&[&x23(), &x23()], 0).unwrap();
        assert_eq!(
            (c.shape, c.data),
            (vec![4, 3], [x23().data, x23().data].concat())
        );
        let err = concat(&[&x23(), &y], 0).unwrap_err();
        assert!(err.contains("operand 1 is f32[2, 1]"), "{err}");
    }

    #[test]
    fn gather_rows_by_id_tensor() {
        // table rows: (0, 1, 2), (3, 4, 5); ids [[1, 0], [1, 1]] -> [2, 2, 3].
        let ids = Tensor::new(DType::I64, vec![2, 2], vec![1.0, 0.0, 1.0, 1.0]);
        let g = gather(&x23(), &ids).unwrap();
        assert_eq!(g.shape, vec![2, 2, 3]);
        assert_eq!(
            g.data,
            vec![3.0, 4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 4.0, 5.0]
        );
        let scalar_id = Tensor::new(DType::I32, vec![], vec![1.0]);
        let g = gather(&x23(), &scalar_id).unwrap();
        assert_eq!((g.shape, g.data), (vec![3], vec![3.0, 4.0, 5.0]));
        let bf = Tensor::new(DType::BF16, vec![2], vec![-1.5, 2.5]);
        let g = gather(&bf, &Tensor::new(DType::I32, vec![3], vec![1.0, 1.0, 0.0])).unwrap();
        assert_eq!((g.dtype, g.data), (DType::BF16, vec![2.5, 2.5, -1.5]));
    }

    #[test]
    fn gather_out_of_range_names_index_and_table_size() {
        for bad in [2.0, -1.0] {
            let ids = Tensor::new(DType::I32, vec![2], vec![0.0, bad]);
            let err = gather(&x23(), &ids).unwrap_err();
            assert!(
                err.contains(&format!("gather index {bad} (ids element 1)")),
                "{err}"
            );
            assert!(err.contains("table of 2 rows"), "{err}");
        }
        let err = gather(&x23(), &Tensor::new(DType::F32, vec![1], vec![0.0])).unwrap_err();
        assert!(err.contains("integer"), "{err}");
    }
}
