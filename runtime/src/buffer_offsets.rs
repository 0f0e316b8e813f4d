//! The table of buffer offsets GPU launches read (`Variant::buffer_offsets`): one `i64` of
//! bytes for each argument a launch's kernel offsets (`Launch::offsets`), added by the
//! kernel to that argument's address.
//!
//! A decode step writes each layer's new keys and values right after the rows held so far
//! (`crate::carry`), so a carried output's address moved by a row every step, and with it
//! the arguments of every launch that touches it: a replayed CUDA graph updated those
//! nodes each step (22 a step in a 1B llama, 17 us of one H100 host's time, 2026-12-07).
//! Passed as its storage, with the rows held as its offset, the launch's arguments stay
//! put; only the table, uploaded with the symbols, changes.
//!
//! A launch's entries are one per argument its kernel offsets (`Launch::offsets`: those some
//! launch binds to a model output), in order, packed one launch after another: a decode
//! step's few dozen such launches then read a few cache lines, which stay in L2 from one
//! launch to the next.

use crate::plan::{BufferRef, Plan};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetTables {
    /// The carried outputs the tables were laid out for, and the plan's launch count.
    carried: Vec<usize>,
    launches: usize,
    /// Each launch's first entry.
    starts: Vec<usize>,
    /// `(entry, output)`: the entries holding a carried output's offset.
    entries: Vec<(usize, usize)>,
    len: usize,
}

impl OffsetTables {
    /// Tables for `plan`'s launches when the model outputs `carried` are carried.
    pub fn new(plan: &Plan, carried: &[usize]) -> OffsetTables {
        let mut len = 0;
        let mut entries = Vec::new();
        let starts = plan
            .launches
            .iter()
            .map(|l| {
                let start = len;
                let offset = l.args.iter().zip(&l.offsets).filter(|(_, &o)| o);
                for (a, _) in offset {
                    if let BufferRef::Output(o) = *a {
                        if carried.contains(&o) {
                            entries.push((len, o));
                        }
                    }
                    len += 1;
                }
                start
            })
            .collect();
        OffsetTables {
            carried: carried.to_vec(),
            launches: plan.launches.len(),
            starts,
            entries,
            len,
        }
    }

    /// Whether these are the tables for `plan` with `carried` outputs carried.
    pub fn fits(&self, plan: &Plan, carried: &[usize]) -> bool {
        self.launches == plan.launches.len() && self.carried == carried
    }

    /// The index of launch `launch`'s first entry.
    pub fn start(&self, launch: usize) -> usize {
        self.starts[launch]
    }

    /// The table as little-endian bytes, appended to `out`: output `o`'s entries hold
    /// `offset(o)`, every other entry zero.
    pub fn write(&self, offset: impl Fn(usize) -> u64, out: &mut Vec<u8>) {
        let base = out.len();
        out.resize(base + 8 * self.len, 0);
        for &(entry, o) in &self.entries {
            let at = base + 8 * entry;
            out[at..at + 8].copy_from_slice(&offset(o).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Launch;

    fn launch(args: Vec<BufferRef>, offsets: Vec<bool>) -> Launch {
        Launch {
            kernel: "k".into(),
            args,
            writes: vec![],
            offsets,
            grid: vec![],
            min_chunk: 1,
            gpu: None,
            guard: None,
        }
    }

    fn values(bytes: &[u8]) -> Vec<u64> {
        bytes
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Each launch's offset arguments get an entry, in order, packed one launch after
    /// another; a carried output's entries hold its offset (wherever it is bound), the
    /// rest zero, and launches without offset arguments get none.
    #[test]
    fn offset_arguments_get_packed_entries() {
        use BufferRef::{Input, Output, Slot};
        let plan = Plan {
            launches: vec![
                launch(vec![Slot(0), Input(0)], vec![]),
                launch(vec![Slot(1), Output(1), Output(0)], vec![false, true, true]),
                launch(vec![Output(2), Slot(2)], vec![true, true]),
                launch(vec![Output(1)], vec![true]),
            ],
            symbols: vec![],
            slots: vec![],
        };
        let t = OffsetTables::new(&plan, &[1, 2]);
        assert_eq!((0..4).map(|l| t.start(l)).collect::<Vec<_>>(), [0, 0, 2, 4]);
        let mut bytes = vec![7];
        t.write(|o| 100 * o as u64 + 16, &mut bytes);
        assert_eq!(bytes[0], 7);
        assert_eq!(values(&bytes[1..]), [116, 0, 216, 0, 116]);
        assert!(t.fits(&plan, &[1, 2]));
        assert!(!t.fits(&plan, &[1]));

        // Nothing carried: every entry is zero.
        let none = OffsetTables::new(&plan, &[]);
        let mut bytes = Vec::new();
        none.write(|_| 1, &mut bytes);
        assert_eq!(values(&bytes), [0; 5]);
    }
}
