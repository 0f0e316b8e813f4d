//! The pool's threads during one plan run: they wait for each launch by spinning, not
//! sleeping.
//!
//! A decode step is hundreds of launches of tens of microseconds; handing each to rayon
//! (`into_par_iter` per launch) let the other workers go to sleep between launches and paid
//! their wake-up in every one. For the length of a plan run the other threads instead spin
//! on a launch counter (`epoch`), and every thread, the leader included, claims chunks of
//! the current launch from one counter until none are left.
//!
//! The launch's description lives in atomics that the leader rewrites only after every
//! chunk of the previous launch has finished. A thread may read a description while it
//! changes (it read the counter late); it acts on it only through a claim tagged with the
//! launch it saw, and a claim of a finished launch fails, so a torn read is never run.

use super::module::KernelFn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

/// `epoch` when the run is over.
const STOP: u64 = u64::MAX;

/// Spins between looks at the counter before a thread also yields its core (only matters
/// when the machine has fewer free cores than the pool has threads).
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

/// One launch: the kernel, its argument arrays and how its grid is cut.
#[derive(Clone, Copy)]
pub(super) struct Job {
    pub kernel: KernelFn,
    pub args: *const *mut u8,
    pub dims: *const i64,
    pub points: u64,
    pub chunk: u64,
    pub chunks: u64,
}

#[derive(Default)]
pub(super) struct Team {
    /// The launch being run, counted from 1; `STOP` ends the run.
    epoch: AtomicU64,
    /// The launch's number (low 32 bits) above its next unclaimed chunk.
    claim: AtomicU64,
    /// Chunks of the current launch finished.
    done: AtomicU64,
    kernel: AtomicUsize,
    args: AtomicUsize,
    dims: AtomicUsize,
    points: AtomicU64,
    chunk: AtomicU64,
    chunks: AtomicU64,
}

impl Team {
    /// Runs `job` on every thread that serves the team and on the caller, the team's only
    /// leader; returns when every chunk has finished.
    ///
    /// # Safety
    /// As for calling the kernel over `[0, job.points)`: `args` and `dims` valid, and the
    /// chunks' grid ranges writing disjoint data.
    pub unsafe fn run(&self, job: Job) {
        let epoch = self.epoch.load(SeqCst) + 1;
        self.kernel.store(job.kernel as usize, SeqCst);
        self.args.store(job.args as usize, SeqCst);
        self.dims.store(job.dims as usize, SeqCst);
        self.points.store(job.points, SeqCst);
        self.chunk.store(job.chunk, SeqCst);
        self.chunks.store(job.chunks, SeqCst);
        self.done.store(0, SeqCst);
        self.claim.store(tag(epoch), SeqCst);
        self.epoch.store(epoch, SeqCst);
        // SAFETY: forwarded from the caller.
        unsafe { self.work(epoch, &job) };
        while self.done.load(SeqCst) < job.chunks {
            std::hint::spin_loop();
        }
    }

    /// Ends the run: every serving thread returns from `serve`.
    pub fn stop(&self) {
        self.epoch.store(STOP, SeqCst);
    }

    /// A helper thread's part of the run: the chunks it claims of each launch, until
    /// `stop`.
    pub fn serve(&self) {
        let mut seen = 0;
        loop {
            let mut spins = 0u32;
            let epoch = loop {
                let e = self.epoch.load(SeqCst);
                if e != seen {
                    break e;
                }
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                    std::thread::yield_now();
                }
            };
            if epoch == STOP {
                return;
            }
            seen = epoch;
            // Possibly a later launch's fields (see the module doc): `work` runs a chunk only
            // through a claim tagged `epoch`, which cannot succeed once `epoch` is over.
            let job = Job {
                // SAFETY: every value `kernel` holds was stored from a `KernelFn`; a stale
                // one is never called (the claim fails).
                kernel: unsafe { std::mem::transmute::<usize, KernelFn>(self.kernel.load(SeqCst)) },
                args: self.args.load(SeqCst) as *const *mut u8,
                dims: self.dims.load(SeqCst) as *const i64,
                points: self.points.load(SeqCst),
                chunk: self.chunk.load(SeqCst),
                chunks: self.chunks.load(SeqCst),
            };
            // SAFETY: a chunk runs only while launch `epoch` is unfinished, when `job` is the
            // one the leader published with the guarantees of `run`.
            unsafe { self.work(epoch, &job) };
        }
    }

    /// Claims and runs chunks of launch `epoch` until none are left.
    unsafe fn work(&self, epoch: u64, job: &Job) {
        loop {
            let c = self.claim.load(SeqCst);
            let next = c & 0xffff_ffff;
            if c & !0xffff_ffff != tag(epoch) || next >= job.chunks {
                return;
            }
            if self
                .claim
                .compare_exchange(c, c + 1, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            let begin = next * job.chunk;
            let end = (begin + job.chunk).min(job.points);
            // SAFETY: chunk `next` of a launch still running, claimed by this thread alone.
            unsafe { (job.kernel)(job.args, job.dims, begin as i64, end as i64) };
            self.done.fetch_add(1, SeqCst);
        }
    }
}

/// `epoch` in the claim counter's upper half.
fn tag(epoch: u64) -> u64 {
    (epoch & 0xffff_ffff) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds one to each of its grid points' counters (`args[0]`), and checks that the
    /// previous launch finished first: every counter of its range already holds the
    /// launch's number (`dims[0]`).
    unsafe extern "C" fn count(args: *const *mut u8, dims: *const i64, begin: i64, end: i64) {
        // SAFETY: the test passes one array of counters and one dim.
        let (counters, launch) = unsafe { (*args as *const AtomicU64, *dims as u64) };
        for p in begin..end {
            // SAFETY: `p` is within the test's array.
            let c = unsafe { &*counters.add(p as usize) };
            let before = c.fetch_add(1, SeqCst);
            assert_eq!(before, launch, "point {p} ran out of order or twice");
        }
    }

    /// Many short launches of uneven chunking on four threads: every point of every launch
    /// runs exactly once, and each launch after the one before.
    #[test]
    fn every_chunk_runs_once_and_launches_stay_in_order() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let points = 97u64;
        let counters: Vec<AtomicU64> = (0..points).map(|_| AtomicU64::new(0)).collect();
        let launches = 2000u64;
        pool.install(|| {
            let team = Team::default();
            rayon::in_place_scope(|s| {
                for _ in 1..4 {
                    s.spawn(|_| team.serve());
                }
                let mut args = [counters.as_ptr() as *mut u8];
                for launch in 0..launches {
                    let dims = [launch as i64];
                    let chunk = 1 + launch % 13;
                    let job = Job {
                        kernel: count,
                        args: args.as_mut_ptr(),
                        dims: dims.as_ptr(),
                        points,
                        chunk,
                        chunks: points.div_ceil(chunk),
                    };
                    // SAFETY: `count` reads one array and one dim, both alive here.
                    unsafe { team.run(job) };
                }
                team.stop();
            });
        });
        assert!(counters.iter().all(|c| c.load(SeqCst) == launches));
    }
}
