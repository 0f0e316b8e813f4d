//! Memory planning: intermediates share arena slots when their lifetimes do not overlap.
//!
//! Lifetimes are launch intervals (written by one launch, last read by a later one). Sizes
//! are symbolic, so a slot's size is the *maximum* of its buffers' size expressions,
//! evaluated by the runtime once the symbols are bound; the planner prefers a free slot
//! whose buffers have the same size expression, so slots rarely grow.

use crate::lower::{BufferKind, Lowered};
use kiln_ir::Dim;

/// `bytes_per_elem * product(factors)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeExpr {
    pub bytes_per_elem: u64,
    pub factors: Vec<Dim>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ArenaPlan {
    /// Per slot: the sizes of the buffers placed in it (the slot is as large as the max).
    pub slots: Vec<Vec<SizeExpr>>,
    /// Per global buffer: its slot, for `BufferKind::Temp` buffers.
    pub slot_of: Vec<Option<usize>>,
}

pub fn plan(l: &Lowered) -> ArenaPlan {
    let n = l.buffers.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    for (t, launch) in l.launches.iter().enumerate() {
        for &b in &launch.args {
            first[b] = first[b].min(t);
            last[b] = last[b].max(t);
        }
    }
    let mut slots: Vec<Vec<SizeExpr>> = Vec::new();
    let mut busy_until: Vec<usize> = Vec::new();
    let mut slot_of = vec![None; n];
    let mut order: Vec<usize> = (0..n)
        .filter(|&b| l.buffers[b].kind == BufferKind::Temp && first[b] != usize::MAX)
        .collect();
    order.sort_by_key(|&b| first[b]);
    for b in order {
        let buf = &l.buffers[b];
        let size = SizeExpr {
            bytes_per_elem: buf.dtype.size_bytes() as u64,
            factors: buf.shape.clone(),
        };
        let free = |s: usize| busy_until[s] < first[b];
        let slot = (0..slots.len())
            .find(|&s| free(s) && slots[s].contains(&size))
            .or_else(|| (0..slots.len()).find(|&s| free(s)))
            .unwrap_or_else(|| {
                slots.push(Vec::new());
                busy_until.push(0);
                slots.len() - 1
            });
        if !slots[slot].contains(&size) {
            slots[slot].push(size);
        }
        busy_until[slot] = last[b];
        slot_of[b] = Some(slot);
    }
    ArenaPlan { slots, slot_of }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::{BufferInfo, KernelLaunch};
    use kiln_ir::DType;

    fn temp(shape: &[i64]) -> BufferInfo {
        BufferInfo {
            kind: BufferKind::Temp,
            dtype: DType::F32,
            shape: shape.iter().map(|&d| Dim::known(d)).collect(),
        }
    }

    #[test]
    fn disjoint_lifetimes_share_a_slot_and_overlapping_do_not() {
        // a = k0(); b = k1(a); c = k2(b); d = k3(c, a)
        let l = Lowered {
            symbols: vec![],
            buffers: vec![
                temp(&[4]),
                temp(&[4]),
                temp(&[4]),
                BufferInfo {
                    kind: BufferKind::Output(0),
                    ..temp(&[4])
                },
            ],
            kernels: vec![],
            launches: vec![
                KernelLaunch {
                    kernel: 0,
                    args: vec![0],
                    grid: vec![],
                    guard: None,
                },
                KernelLaunch {
                    kernel: 1,
                    args: vec![1, 0],
                    grid: vec![],
                    guard: None,
                },
                KernelLaunch {
                    kernel: 2,
                    args: vec![2, 1],
                    grid: vec![],
                    guard: None,
                },
                KernelLaunch {
                    kernel: 3,
                    args: vec![3, 2, 0],
                    grid: vec![],
                    guard: None,
                },
            ],
        };
        let p = plan(&l);
        let s: Vec<_> = p
            .slot_of
            .iter()
            .map(|s| s.map(|x| x as i64).unwrap_or(-1))
            .collect();
        // a lives 0..=3; b 1..=2; c 2..=3: b and c overlap at launch 2, so three slots.
        assert_eq!(s[3], -1, "outputs are not in the arena");
        assert_ne!(s[0], s[1]);
        assert_ne!(s[1], s[2]);
        assert_ne!(s[0], s[2]);
        let l2 = Lowered {
            launches: vec![
                KernelLaunch {
                    kernel: 0,
                    args: vec![0],
                    grid: vec![],
                    guard: None,
                },
                KernelLaunch {
                    kernel: 1,
                    args: vec![1, 0],
                    grid: vec![],
                    guard: None,
                },
                KernelLaunch {
                    kernel: 2,
                    args: vec![2, 1],
                    grid: vec![],
                    guard: None,
                },
                KernelLaunch {
                    kernel: 3,
                    args: vec![3, 2],
                    grid: vec![],
                    guard: None,
                },
            ],
            ..l
        };
        let p2 = plan(&l2);
        assert_eq!(
            p2.slot_of[0], p2.slot_of[2],
            "a is dead before c is written"
        );
        assert_eq!(p2.slots.len(), 2);
    }
}
