//! Index arithmetic shared by the op families: row-major strides, NumPy broadcasting
//! (right-aligned; a size-1 dim stretches) and strided walks that turn an output shape into
//! the flat offsets each output element reads. Every op that moves data without arithmetic
//! (broadcast, permute, slice, reduce's accumulator map) is one call to [`strided_offsets`].

/// Row-major strides of `shape`, in elements.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The shape `a` and `b` broadcast to.
pub(super) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| match (dim_at(a, i, rank), dim_at(b, i, rank)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("cannot broadcast {a:?} with {b:?}")),
        })
        .collect()
}

/// Extent of `shape` at axis `i` of a rank-`rank` broadcast, with missing leading axes 1.
fn dim_at(shape: &[usize], i: usize, rank: usize) -> usize {
    if i + shape.len() >= rank {
        shape[i + shape.len() - rank]
    } else {
        1
    }
}

/// For each element of `out` in row-major order, the flat offset of the element of a
/// tensor of shape `shape` that broadcasts to it. `shape` must broadcast to `out`.
pub(super) fn broadcast_offsets(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    debug_assert!(shape.len() <= rank, "operand rank exceeds broadcast rank");
    let s = strides(shape);
    let lead = rank - shape.len();
    let per_axis: Vec<usize> = (0..rank)
        .map(|i| match i.checked_sub(lead) {
            Some(j) if shape[j] != 1 => s[j],
            _ => 0,
        })
        .collect();
    strided_offsets(out, &per_axis, 0)
}

/// For each index of `shape` in row-major order, `base + sum(index[i] * strides[i])`.
pub(super) fn strided_offsets(shape: &[usize], strides: &[usize], base: usize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let mut offsets = Vec::with_capacity(n);
    let mut index = vec![0usize; shape.len()];
    let mut off = base;
    for _ in 0..n {
        offsets.push(off);
        for ax in (0..shape.len()).rev() {
            index[ax] += 1;
            off += strides[ax];
            if index[ax] < shape[ax] {
                break;
            }
            off -= strides[ax] * index[ax];
            index[ax] = 0;
        }
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn shapes_broadcast_right_aligned() {
        assert_eq!(broadcast_shape(&[2, 1, 3], &[4, 1]), Ok(vec![2, 4, 3]));
        assert_eq!(broadcast_shape(&[], &[5]), Ok(vec![5]));
        let err = broadcast_shape(&[2, 3], &[4]).unwrap_err();
        assert!(err.contains("[2, 3]") && err.contains("[4]"), "{err}");
    }

    #[test]
    fn offsets_repeat_size_one_axes() {
        // [2,1] broadcast to [2,3]: each row reads its one element three times.
        assert_eq!(broadcast_offsets(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        // [3] broadcast to [2,3]: both rows read the same three elements.
        assert_eq!(broadcast_offsets(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_offsets(&[], &[2]), vec![0, 0]);
    }

    #[test]
    fn strided_walk_transposes() {
        // Reading a [2,3] tensor as its transpose [3,2].
        assert_eq!(strided_offsets(&[3, 2], &[1, 3], 0), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(strided_offsets(&[0, 2], &[2, 1], 0), Vec::<usize>::new());
    }
}
