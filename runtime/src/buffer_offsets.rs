//! The table of buffer offsets GPU launches read (`Variant::buffer_offsets`): one `i64` of
//! bytes per buffer of a launch, added by the kernel to the buffer's address.
//!
//! A decode step writes each layer's new keys and values right after the rows held so far
//! (`crate::carry`), so a carried output's address moved by a row every step, and with it
//! the arguments of every launch that touches it: a replayed CUDA graph updated those
//! nodes each step (22 a step in a 1B llama, 17 us of one H100 host's time, 2026-12-07).
//! Passed as its storage, with the rows held as its offset, the launch's arguments stay
//! put; only the table, uploaded with the symbols, changes.
//!
//! Launches that touch no carried output share one table of zeros at the start; each that
//! does has its own after it.

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
        let zeros = plan
            .launches
            .iter()
            .map(|l| l.args.len())
            .max()
            .unwrap_or(0);
        let mut len = zeros.max(1);
        let mut entries = Vec::new();
        let starts = plan
            .launches
            .iter()
            .map(|l| {
                let moved =
                    |a: &BufferRef| matches!(a, BufferRef::Output(o) if carried.contains(o));
                if !l.args.iter().any(moved) {
                    return 0;
                }
                let start = len;
                for (i, a) in l.args.iter().enumerate() {
                    if let BufferRef::Output(o) = *a {
                        if carried.contains(&o) {
                            entries.push((start + i, o));
                        }
                    }
                }
                len += l.args.len();
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

    fn launch(args: Vec<BufferRef>) -> Launch {
        Launch {
            kernel: "k".into(),
            args,
            writes: vec![],
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

    /// Launches touching a carried output (written or read) get their own entries, in
    /// argument order; the others share the zeros at the start.
    #[test]
    fn carried_outputs_get_their_launches_own_entries() {
        let plan = Plan {
            launches: vec![
                launch(vec![BufferRef::Slot(0), BufferRef::Input(0)]),
                launch(vec![
                    BufferRef::Slot(1),
                    BufferRef::Output(1),
                    BufferRef::Output(0),
                ]),
                launch(vec![BufferRef::Output(2), BufferRef::Output(1)]),
                launch(vec![BufferRef::Output(0)]),
            ],
            symbols: vec![],
            slots: vec![],
        };
        let t = OffsetTables::new(&plan, &[1, 2]);
        assert_eq!((0..4).map(|l| t.start(l)).collect::<Vec<_>>(), [0, 3, 6, 0]);
        let mut bytes = vec![7];
        t.write(|o| 100 * o as u64 + 16, &mut bytes);
        assert_eq!(bytes[0], 7);
        assert_eq!(values(&bytes[1..]), [0, 0, 0, 0, 116, 0, 216, 116]);
        assert!(t.fits(&plan, &[1, 2]));
        assert!(!t.fits(&plan, &[1]));

        // Nothing carried: every launch reads zeros.
        let none = OffsetTables::new(&plan, &[]);
        assert!((0..4).all(|l| none.start(l) == 0));
        let mut bytes = Vec::new();
        none.write(|_| 1, &mut bytes);
        assert_eq!(values(&bytes), [0, 0, 0]);
    }
}
