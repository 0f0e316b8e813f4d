//! Running a launch plan on CPU threads.
//!
//! The last step of the data flow on CPU: the plan's launches run in order; each launch's
//! grid is split into chunks (about four per thread, none smaller than the launch's
//! `min_chunk`) that the pool's threads, kept spinning for the run (`team`), claim and hand
//! to the kernel as `[begin, end)` ranges. Kernels of
//! one launch write disjoint parts of their outputs, so chunks need no synchronisation;
//! launches are ordered by finishing each before the next starts.

use crate::cpu::module::{CpuModule, KernelFn};
use crate::cpu::team::{Job, Team};
use crate::error::RuntimeError;
use crate::plan::{grid_points, BufferRef, Plan};
use kiln_ir::Bindings;
use std::alloc::Layout;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// Alignment of every buffer the runtime allocates (arena, staged inputs and outputs).
pub const BUFFER_ALIGN: usize = 64;

/// How long one launch took (`kiln bench`, `--profile`).
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTiming {
    pub kernel: String,
    pub grid_points: u64,
    pub duration: Duration,
}

/// Executes plans of one loaded CPU module; owns the thread pool and the reusable arena.
#[derive(Debug)]
pub struct CpuExecutor {
    module: CpuModule,
    pool: rayon::ThreadPool,
    threads: usize,
    arena: Option<AlignedBuf>,
    /// Storage of the session's carried inputs (see `crate::carry`), by carry index.
    carried: Vec<AlignedBuf>,
}

/// The buffers of one run, as base pointers.
pub struct RunBuffers<'a> {
    pub inputs: &'a [*mut u8],
    pub outputs: &'a [*mut u8],
    /// Base of the weights section (null when the model has none).
    pub weights: *const u8,
}

impl CpuExecutor {
    /// `threads`: pool size; `None` = the machine's available parallelism.
    pub fn new(module: CpuModule, threads: Option<usize>) -> Result<CpuExecutor, RuntimeError> {
        let threads = threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kiln-cpu-{i}"))
            // Every launch runs on these threads (`execute` installs the plan on the pool).
            .start_handler(|_| crate::cpu::subnormals::flush_to_zero())
            .build()
            .map_err(|e| RuntimeError::Threads {
                threads,
                msg: e.to_string(),
            })?;
        Ok(CpuExecutor {
            module,
            pool,
            threads,
            arena: None,
            carried: Vec::new(),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn module(&self) -> &CpuModule {
        &self.module
    }

    /// The base of each carried input's storage, grown (keeping the rows held) until it
    /// fits what the run appends.
    pub fn carried_storage(
        &mut self,
        runs: &[crate::carry::CarriedRun],
    ) -> Result<Vec<*mut u8>, RuntimeError> {
        self.carried.truncate(runs.len());
        let mut bases = Vec::with_capacity(runs.len());
        for (i, run) in runs.iter().enumerate() {
            if i == self.carried.len() {
                self.carried.push(AlignedBuf::zeroed(0, "a carried input")?);
            }
            let store = &mut self.carried[i];
            if store.len() < run.needed() {
                let cap = crate::carry::grown(store.len(), run.needed());
                let mut bigger = AlignedBuf::zeroed(cap, "a carried input")?;
                let held = run.held.min(store.len());
                // SAFETY: both buffers hold at least `held` bytes and do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(store.as_mut_ptr(), bigger.as_mut_ptr(), held)
                };
                *store = bigger;
            }
            bases.push(store.as_mut_ptr());
        }
        Ok(bases)
    }

    /// Runs every launch of `plan` with the symbols bound by `env`; returns per-launch
    /// timings when `profile` is set (empty otherwise).
    ///
    /// # Safety
    /// Every pointer in `buffers` must be valid for the sizes the plan's kernels access
    /// under `env` (inputs and weights for reads, outputs for writes) for the whole call,
    /// and `plan` must be the one `self`'s module was compiled with.
    pub unsafe fn execute(
        &mut self,
        plan: &Plan,
        env: &Bindings,
        buffers: &RunBuffers<'_>,
        profile: bool,
    ) -> Result<Vec<LaunchTiming>, RuntimeError> {
        let perr = |msg: String| RuntimeError::Plan {
            target: self.module.target().to_string(),
            msg,
        };
        let layout = plan.arena_layout(env).map_err(perr)?;
        let dims = plan.dims_array(env).map_err(perr)?;
        let total = usize::try_from(layout.total)
            .map_err(|_| perr("arena size exceeds the address space".into()))?;
        if self.arena.as_ref().is_none_or(|a| a.len() < total) {
            self.arena = None; // free the old one before allocating the new
            self.arena = Some(AlignedBuf::zeroed(total, "the arena")?);
        }
        let arena = self.arena.as_mut().expect("allocated above").as_mut_ptr();
        // The whole plan runs on a pool thread: a launch then splits its grid from inside the
        // pool, where handing chunks to the other workers is cheap, instead of the caller
        // waking the pool and sleeping until it is done for each of a decode step's hundreds
        // of launches.
        let job = AssertSend((plan, env, buffers, &layout, &dims, arena, profile));
        let this = &*self;
        self.pool.install(move || {
            let (plan, env, buffers, layout, dims, arena, profile) = job.into_inner();
            if this.threads == 1 {
                // SAFETY: forwarded from the caller.
                return unsafe {
                    this.launches(None, plan, env, buffers, (layout, dims, arena), profile)
                };
            }
            // The other threads serve the run's launches until it ends (`team`).
            let team = Team::default();
            rayon::in_place_scope(|s| {
                for _ in 1..this.threads {
                    s.spawn(|_| team.serve());
                }
                // SAFETY: forwarded from the caller.
                let r = unsafe {
                    this.launches(
                        Some(&team),
                        plan,
                        env,
                        buffers,
                        (layout, dims, arena),
                        profile,
                    )
                };
                team.stop();
                r
            })
        })
    }

    /// Runs `plan`'s launches in order, on the pool.
    ///
    /// # Safety
    /// As for [`CpuExecutor::execute`]; `arena` holds `layout.total` bytes.
    unsafe fn launches(
        &self,
        team: Option<&Team>,
        plan: &Plan,
        env: &Bindings,
        buffers: &RunBuffers<'_>,
        (layout, dims, arena): (&crate::plan::ArenaLayout, &[i64], *mut u8),
        profile: bool,
    ) -> Result<Vec<LaunchTiming>, RuntimeError> {
        let perr = |msg: String| RuntimeError::Plan {
            target: self.module.target().to_string(),
            msg,
        };
        let mut timings = Vec::new();
        for launch in &plan.launches {
            if !launch
                .runs(env)
                .map_err(|m| perr(format!("launch {}: {m}", launch.kernel)))?
            {
                continue;
            }
            let kernel =
                self.module
                    .kernel(&launch.kernel)
                    .ok_or_else(|| RuntimeError::MissingKernel {
                        target: self.module.target().to_string(),
                        kernel: launch.kernel.clone(),
                        msg: "not resolved when the code was loaded".into(),
                    })?;
            let args: Vec<*mut u8> = launch
                .args
                .iter()
                .map(|a| match *a {
                    // In bounds: the manifest check and arena_layout cover every index/offset.
                    BufferRef::Slot(i) => arena.wrapping_add(layout.offsets[i] as usize),
                    BufferRef::Input(i) => buffers.inputs[i],
                    BufferRef::Output(i) => buffers.outputs[i],
                    BufferRef::Weight { offset, .. } => {
                        buffers.weights.wrapping_add(offset as usize).cast_mut()
                    }
                })
                .collect();
            let points = grid_points(&launch.grid, env)
                .map_err(|m| perr(format!("launch {}: {m}", launch.kernel)))?;
            if points > i64::MAX as u64 {
                return Err(perr(format!(
                    "launch {}: {points} grid points do not fit the kernel ABI",
                    launch.kernel
                )));
            }
            let start = Instant::now();
            // SAFETY: the caller guarantees the buffers; `args` and `dims` outlive the call.
            unsafe { self.launch(team, kernel, &args, dims, points, launch.min_chunk) };
            if profile {
                timings.push(LaunchTiming {
                    kernel: launch.kernel.clone(),
                    grid_points: points,
                    duration: start.elapsed(),
                });
            }
        }
        Ok(timings)
    }

    /// Calls `kernel` over `[0, points)`: in chunks on the team's threads, or at once.
    ///
    /// # Safety
    /// `args` must hold valid buffers for the kernel; see [`CpuExecutor::execute`].
    unsafe fn launch(
        &self,
        team: Option<&Team>,
        kernel: KernelFn,
        args: &[*mut u8],
        dims: &[i64],
        points: u64,
        min_chunk: u64,
    ) {
        if points == 0 {
            return;
        }
        let (chunk, chunks) = split(points, self.threads, min_chunk);
        match team {
            Some(team) if chunks > 1 => {
                let job = Job {
                    kernel,
                    args: args.as_ptr(),
                    dims: dims.as_ptr(),
                    points,
                    chunk,
                    chunks,
                };
                // SAFETY: as the caller promised; chunks are disjoint grid ranges.
                unsafe { team.run(job) }
            }
            // One chunk, or one thread: one call covers the whole grid.
            // SAFETY: as the caller promised; the signature is the kernel ABI.
            _ => unsafe { kernel(args.as_ptr(), dims.as_ptr(), 0, points as i64) },
        }
    }
}

/// Chunk size and count for `points` grid points on `threads` threads: about four chunks
/// per thread (to even out uneven kernels), each at least `min_chunk` points.
pub fn split(points: u64, threads: usize, min_chunk: u64) -> (u64, u64) {
    let target = (threads as u64).saturating_mul(4).max(1);
    let chunk = points.div_ceil(target).max(min_chunk).max(1);
    (chunk, points.div_ceil(chunk))
}

/// What `execute` hands to the pool thread that runs a plan: raw buffer pointers, valid
/// until `execute` returns, which it does only after the pool thread is done.
struct AssertSend<T>(T);

// SAFETY: see the type's doc; `execute` blocks in `install` for the whole use.
unsafe impl<T> Send for AssertSend<T> {}

impl<T> AssertSend<T> {
    /// A method, so a closure moves the whole wrapper (a pattern would capture its fields).
    fn into_inner(self) -> T {
        self.0
    }
}

/// A zero-initialised heap buffer aligned to [`BUFFER_ALIGN`] bytes.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads, like &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Fails with an error, never aborts, when memory is short.
    pub fn zeroed(len: usize, what: &str) -> Result<AlignedBuf, RuntimeError> {
        let alloc_err = || RuntimeError::Alloc {
            bytes: len as u64,
            what: what.to_string(),
        };
        let layout = Layout::from_size_align(len.max(BUFFER_ALIGN), BUFFER_ALIGN)
            .map_err(|_| alloc_err())?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(alloc_err)?;
        Ok(AlignedBuf { ptr, len, layout })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid and initialised (zeroed) for `len` bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_grid_and_respect_min_chunk() {
        assert_eq!(split(1000, 4, 1), (63, 16));
        assert_eq!(split(1000, 4, 500), (500, 2));
        assert_eq!(split(3, 8, 0), (1, 3));
        assert_eq!(split(10, 1, 100), (100, 1));
        let (chunk, n) = split(u64::MAX / 2, 16, 1);
        assert!(chunk * n >= u64::MAX / 2);
    }

    #[test]
    fn aligned_buffers_are_aligned_and_zeroed() {
        let mut b = AlignedBuf::zeroed(100, "test").unwrap();
        assert_eq!(b.as_mut_ptr() as usize % BUFFER_ALIGN, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        assert!(AlignedBuf::zeroed(usize::MAX - 10, "huge").is_err());
    }
}
