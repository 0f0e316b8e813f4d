//! Which launches must wait for which: the ordering a GPU executor has to keep, and no more.
//!
//! A plan lists its launches in an order that is correct when each waits for the one before.
//! GPUs pay for that wait: every Vulkan barrier drains the device before the next dispatch
//! starts, and a chain of CUDA graph nodes runs a decode's independent projections (Q, K
//! and V; gate and up) one after another on a GPU that one of them cannot fill. Launch `b`
//! must follow an earlier launch `a` only when both touch one buffer and one of them writes
//! it (read after write, write after read, write after write).
//!
//! Buffers are told apart by their plan reference, not their addresses: distinct slots never
//! overlap in the arena (each has its own offset), weights are only read, and a carried
//! input and its output are disjoint rows of one allocation. So the answer depends on the
//! plan and on which launches run, never on a run's layout, and a recording or graph built
//! from it stays valid while sizes and addresses change.

use crate::plan::{BufferRef, Launch};
use std::collections::HashMap;

/// [`dependencies`], or with `KILN_GPU_ORDER=serial` each launch waiting for the one before
/// it (what the executors did before; to rule ordering out when results look wrong, and to
/// measure what running independent launches together saves).
pub fn ordering(launches: &[&Launch]) -> Vec<Vec<usize>> {
    if std::env::var("KILN_GPU_ORDER").as_deref() == Ok("serial") {
        return (0..launches.len())
            .map(|n| n.checked_sub(1).into_iter().collect())
            .collect();
    }
    dependencies(launches)
}

/// For each launch of `launches` (the ones that run, in plan order), the positions in
/// `launches` of the earlier ones it must wait for, ascending. Waiting for those, directly or
/// through others, orders every pair that conflicts.
pub fn dependencies(launches: &[&Launch]) -> Vec<Vec<usize>> {
    #[derive(Default)]
    struct Use {
        writer: Option<usize>,
        /// Launches that read the buffer since its last write.
        readers: Vec<usize>,
    }
    let mut uses: HashMap<Key, Use> = HashMap::new();
    let mut deps = Vec::with_capacity(launches.len());
    for (n, launch) in launches.iter().enumerate() {
        let mut wait = Vec::new();
        let touched: Vec<(Key, bool)> = launch
            .args
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((Key::of(a)?, launch.may_write(i))))
            .collect();
        for (key, writes) in &touched {
            let u = uses.entry(*key).or_default();
            wait.extend(u.writer);
            if *writes {
                wait.extend(u.readers.iter().copied());
            }
        }
        for (key, writes) in touched {
            let u = uses.entry(key).or_default();
            if writes {
                u.writer = Some(n);
                u.readers.clear();
            } else {
                u.readers.push(n);
            }
        }
        wait.retain(|&w| w != n);
        wait.sort_unstable();
        wait.dedup();
        deps.push(wait);
    }
    deps
}

/// Which launches start a new wave: launch `n` needs a barrier before it when it waits for a
/// launch issued since the last barrier (so launches between two barriers are independent).
pub fn barriers(deps: &[Vec<usize>]) -> Vec<bool> {
    let mut since = 0;
    deps.iter()
        .enumerate()
        .map(|(n, wait)| {
            let needed = wait.iter().any(|&w| w >= since);
            if needed {
                since = n;
            }
            needed
        })
        .collect()
}

/// A buffer as the plan names it; weights are only read, so they never order anything.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Slot(usize),
    Input(usize),
    Output(usize),
}

impl Key {
    fn of(b: &BufferRef) -> Option<Key> {
        match *b {
            BufferRef::Slot(i) => Some(Key::Slot(i)),
            BufferRef::Input(i) => Some(Key::Input(i)),
            BufferRef::Output(i) => Some(Key::Output(i)),
            BufferRef::Weight { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BufferRef::{Input, Output, Slot, Weight};

    fn launch(args: Vec<BufferRef>, writes: Vec<bool>) -> Launch {
        Launch {
            kernel: "k".into(),
            args,
            writes,
            offsets: vec![],
            grid: vec![],
            min_chunk: 1,
            gpu: None,
            guard: None,
        }
    }

    fn w() -> BufferRef {
        Weight { offset: 0, len: 64 }
    }

    /// A decode layer's shape: a norm, three projections reading it, one launch reading two
    /// of them, then a slot reused for another value while a reader of its old value runs.
    #[test]
    fn independent_launches_share_a_wave() {
        let l = [
            launch(vec![Slot(0), Input(0), w()], vec![true, false, false]),
            launch(vec![Slot(1), Slot(0), w()], vec![true, false, false]),
            launch(vec![Slot(2), Slot(0), w()], vec![true, false, false]),
            launch(vec![Slot(3), Slot(0), w()], vec![true, false, false]),
            launch(vec![Output(0), Slot(1), Slot(2)], vec![true, false, false]),
            // Writes slot 0, which launches 1..=3 read: waits for them (write after read).
            launch(vec![Slot(0), Slot(3)], vec![true, false]),
        ];
        let refs: Vec<&Launch> = l.iter().collect();
        let deps = dependencies(&refs);
        assert_eq!(
            deps,
            vec![
                vec![],
                vec![0],
                vec![0],
                vec![0],
                vec![1, 2],
                vec![0, 1, 2, 3]
            ]
        );
        assert_eq!(
            barriers(&deps),
            vec![false, true, false, false, true, false],
            "the projections share one wave; launch 5 waits only for launches issued before \
             the barrier in front of launch 4"
        );
    }

    #[test]
    fn write_after_write_and_unknown_writes_order_launches() {
        let l = [
            launch(vec![Slot(0)], vec![true]),
            launch(vec![Slot(0)], vec![true]),
            // No write list (an artifact from before plans carried one): every argument may
            // be written, so it waits for both the writer and the reader of slot 0.
            launch(vec![Slot(1), Slot(0)], vec![]),
            launch(vec![Slot(0)], vec![false]),
        ];
        let refs: Vec<&Launch> = l.iter().collect();
        let deps = dependencies(&refs);
        assert_eq!(deps, [vec![], vec![0], vec![1], vec![2]]);
        assert_eq!(barriers(&deps), vec![false, true, true, true]);
    }

    /// On many pseudo-random plans: every pair of launches that conflict is ordered through
    /// the dependencies (directly or transitively), every dependency is a conflict, and no two
    /// launches in one wave (between barriers) conflict.
    #[test]
    fn every_conflict_is_ordered_and_every_wait_is_a_conflict() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..200 {
            let launches: Vec<Launch> = (0..24)
                .map(|_| {
                    let args: Vec<BufferRef> = (0..1 + next(4))
                        .map(|_| match next(4) {
                            0 => Input(next(2) as usize),
                            1 => Output(next(2) as usize),
                            2 => w(),
                            _ => Slot(next(4) as usize),
                        })
                        .collect();
                    let writes = args.iter().map(|_| next(3) == 0).collect();
                    launch(args, writes)
                })
                .collect();
            let refs: Vec<&Launch> = launches.iter().collect();
            let deps = dependencies(&refs);
            let conflict = |a: usize, b: usize| {
                let (la, lb) = (&launches[a], &launches[b]);
                la.args.iter().enumerate().any(|(i, x)| {
                    lb.args.iter().enumerate().any(|(j, y)| {
                        Key::of(x).is_some()
                            && Key::of(x) == Key::of(y)
                            && (la.may_write(i) || lb.may_write(j))
                    })
                })
            };
            // after[b][a]: whether launch b waits for launch a, directly or not.
            let mut after: Vec<Vec<bool>> = Vec::new();
            for (b, waits) in deps.iter().enumerate() {
                let mut mine = vec![false; refs.len()];
                for &a in waits {
                    assert!(
                        a < b && conflict(a, b),
                        "launch {b} waits for {a} needlessly"
                    );
                    mine[a] = true;
                    for (m, &t) in mine.iter_mut().zip(&after[a]) {
                        *m |= t;
                    }
                }
                after.push(mine);
            }
            let waves = barriers(&deps);
            let mut wave_start = 0;
            for (b, &barrier) in waves.iter().enumerate() {
                if barrier {
                    wave_start = b;
                }
                for a in (0..b).filter(|&a| conflict(a, b)) {
                    assert!(
                        after[b][a],
                        "launches {a} and {b} conflict but are not ordered"
                    );
                    assert!(a < wave_start, "launches {a} and {b} conflict in one wave");
                }
            }
        }
    }

    #[test]
    fn weights_never_order_launches() {
        let l = [
            launch(vec![Slot(0), w()], vec![true, false]),
            launch(vec![Slot(1), w()], vec![true, false]),
        ];
        let refs: Vec<&Launch> = l.iter().collect();
        assert!(dependencies(&refs).iter().all(Vec::is_empty));
        assert_eq!(barriers(&dependencies(&refs)), vec![false, false]);
    }
}
