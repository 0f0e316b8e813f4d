//! Executing a launch plan on the GPU: one module per variant (PTX, compiled by the driver
//! for the device on load), weights uploaded once, one device arena sized by the plan,
//! launches on one stream.
//!
//! Kernel arguments follow the GPU ABI of `kiln-codegen` (`llvm/gpu`): the buffers' device
//! addresses, the address of the symbol values, the grid's point count. Block shapes come
//! from the plan (`Launch::gpu`), which the compiler wrote.

use super::device::{probe, Device};
use super::graph::{KernelCall, LaunchGraph};
use crate::buffer_offsets::OffsetTables;
use crate::carry;
use crate::cpu::executor::LaunchTiming;
use crate::device::{DeviceExecutor, Recordings};
use crate::error::RuntimeError;
use crate::hazards;
use crate::host_times::{self, HostTimes};
use crate::launch_sizes::LaunchSizes;
use crate::plan::{self, HostIo, Launch, Plan};
use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError,
    LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use kiln_ir::Bindings;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct CudaExecutor {
    target: String,
    device: Device,
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    /// Kernels allowed more than 48 KiB of dynamic shared memory (`opt_in`), and how much.
    opted_in: HashMap<String, u32>,
    weights: Option<CudaSlice<u8>>,
    arena: Option<CudaSlice<u8>>,
    /// Device storage of the outputs; reused while large enough, and grown at least
    /// twofold.
    io: Vec<CudaSlice<u8>>,
    /// The symbols and inputs on the device and in page-locked host memory, moved up in
    /// one copy a run, and page-locked memory the outputs land in (see [`Staging`]).
    staging: Staging,
    /// Storage of the session's carried inputs (see `crate::carry`), by carry index.
    carried: Vec<CudaSlice<u8>>,
    /// Whether runs replay a CUDA graph (`KILN_CUDA_GRAPHS=0` launches one by one, to
    /// compare); profiled runs always launch one by one, to time each kernel.
    graphs: bool,
    /// Whether a graph's kernels may launch before the kernels they follow finish: the
    /// variant's code waits for them itself (`Variant::waits_for_prior_grids`, compiled
    /// under `KILN_CUDA_EARLY_LAUNCH=1`), unless `KILN_CUDA_EARLY_LAUNCH=0` at run time asks
    /// for plain edges, to compare.
    early_launch: bool,
    /// Whether the code's kernels count their own points (`Variant::counts_own_points`):
    /// replayed launches then get blocks for the symbols with room, and keep their
    /// arguments while a decode's position grows within it.
    counts_own_points: bool,
    /// Whether the code's kernels add offsets from a table to their buffers
    /// (`Variant::buffer_offsets`): carried outputs are then passed as their storage, and
    /// a decode step's launches keep their arguments.
    buffer_offsets: bool,
    /// The plan's launches, ready to size each run (made at the first run of a plan).
    sizes: Option<LaunchSizes>,
    /// Where each launch's offsets lie (laid out again when the carried outputs change).
    tables: Option<OffsetTables>,
    /// What the kept graph's calls were made from (see [`CudaExecutor::execute`]); empty
    /// when there is no graph to trust.
    made_from: Vec<u64>,
    /// Kernels left out of every run (`KILN_CUDA_SKIP_KERNELS`, see [`skipped_kernels`]).
    skip: Vec<String>,
    graph: Option<LaunchGraph>,
    recordings: Recordings,
    /// `KILN_HOST_TIMES=1`: the host's time in each phase of a run (a measuring aid), and
    /// events around the run's kernels (see [`CudaExecutor::mark`]).
    times: Option<HostTimes>,
    marks: Vec<CudaEvent>,
}

/// A measuring aid, not a mode to run models in: `KILN_CUDA_SKIP_KERNELS=a+b` (or `a,b`)
/// leaves out every launch of the kernels named `a` and `b` (`kiln inspect --kernels`
/// names them), so a benchmark's change says what those kernels cost inside a replayed
/// step (launch gaps and overlap included, which kernels timed one by one cannot say);
/// `all` leaves out every kernel, which leaves the host's share of a step. The outputs are
/// then garbage, and a notice says so.
fn skipped_kernels() -> Vec<String> {
    let skip = kernel_names(&std::env::var("KILN_CUDA_SKIP_KERNELS").unwrap_or_default());
    if !skip.is_empty() {
        eprintln!(
            "cuda: KILN_CUDA_SKIP_KERNELS leaves out the kernels {skip:?}: \
             the outputs are not valid (a measuring aid)"
        );
    }
    skip
}

/// The kernel names in `list`, separated by `+` or `,`.
fn kernel_names(list: &str) -> Vec<String> {
    list.split([',', '+'])
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

impl std::fmt::Debug for CudaExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaExecutor")
            .field("target", &self.target)
            .field("device", &self.device.name)
            .finish()
    }
}

impl CudaExecutor {
    /// Loads `ptx` (the variant's code section), resolves `kernels` and uploads `weights`.
    /// `waits_for_prior_grids`: the variant's kernels wait for their predecessors
    /// themselves, so graphs may launch them early.
    pub fn new(
        target: &str,
        ptx: &[u8],
        kernels: &[String],
        weights: Option<&[u8]>,
        waits_for_prior_grids: bool,
        counts_own_points: bool,
        buffer_offsets: bool,
    ) -> Result<CudaExecutor, RuntimeError> {
        let device = probe().map_err(|msg| RuntimeError::Device {
            target: target.into(),
            msg,
        })?;
        let derr = |what: &str, e: DriverError| RuntimeError::Device {
            target: target.into(),
            msg: format!("{what}: {e}"),
        };
        let text = std::str::from_utf8(ptx).map_err(|e| RuntimeError::CodeLoad {
            target: target.into(),
            msg: format!("the PTX is not text: {e}"),
        })?;
        if text.contains('\0') {
            return Err(RuntimeError::CodeLoad {
                target: target.into(),
                msg: "the PTX contains a NUL byte".into(),
            });
        }
        let ctx = device.context.clone();
        let module = ctx
            .load_module(Ptx::from_src(text))
            .map_err(|e| RuntimeError::CodeLoad {
                target: target.into(),
                msg: format!("the driver rejected the PTX: {e}"),
            })?;
        let mut functions = HashMap::new();
        for k in kernels {
            let f = module.load_function(&format!("kiln_{k}")).map_err(|e| {
                RuntimeError::MissingKernel {
                    target: target.into(),
                    kernel: k.clone(),
                    msg: e.to_string(),
                }
            })?;
            functions.insert(k.clone(), f);
        }
        let stream = ctx.default_stream();
        let times = HostTimes::from_env(
            "cuda",
            &["prepare", "upload", "calls", "update", "submit", "wait"],
            &["kernels"],
        );
        let weights = match weights {
            Some(w) if !w.is_empty() => Some(
                stream
                    .clone_htod(w)
                    .map_err(|e| derr("uploading the weights", e))?,
            ),
            _ => None,
        };
        Ok(CudaExecutor {
            target: target.into(),
            device,
            stream,
            functions,
            opted_in: HashMap::new(),
            weights,
            arena: None,
            io: Vec::new(),
            staging: Staging::default(),
            carried: Vec::new(),
            graphs: std::env::var("KILN_CUDA_GRAPHS").as_deref() != Ok("0"),
            early_launch: waits_for_prior_grids
                && std::env::var("KILN_CUDA_EARLY_LAUNCH").as_deref() != Ok("0"),
            counts_own_points,
            buffer_offsets,
            sizes: None,
            tables: None,
            made_from: Vec::new(),
            skip: skipped_kernels(),
            graph: None,
            recordings: Recordings::default(),
            marks: match times {
                Some(_) => (0..2)
                    .map(|_| ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)))
                    .collect::<Result<_, _>>()
                    .map_err(|e| derr("creating events", e))?,
                None => Vec::new(),
            },
            times,
        })
    }

    /// With `KILN_HOST_TIMES=1`, records event `i` of a run on the stream: 0 before the
    /// kernels, 1 after them; the run's end reads the time between.
    fn mark(&self, i: usize) -> Result<(), DriverError> {
        self.marks.get(i).map_or(Ok(()), |m| m.record(&self.stream))
    }

    /// Runs `calls` as the kept graph, updated in place, or as a new one when the graph
    /// holds other launches.
    fn replay(&mut self, plan: &Plan, calls: &[KernelCall]) -> Result<(), DriverError> {
        self.device.context.bind_to_thread()?;
        let reused = match self.graph.as_mut() {
            Some(g) => g.update(calls)?,
            None => false,
        };
        self.recordings.runs += 1;
        if !reused {
            self.recordings.recorded += 1;
            self.graph = None;
            let running: Vec<&Launch> = calls.iter().map(|c| &plan.launches[c.launch]).collect();
            let deps = hazards::ordering(&running);
            let graph = match LaunchGraph::build(calls, &deps, self.early_launch) {
                // A driver that refuses programmatic edges still runs the code: its
                // kernels' waits are no-ops under plain edges.
                Err(e) if self.early_launch => {
                    eprintln!(
                        "cuda: the driver refused early launches ({e}); launching each kernel \
                         after the ones it follows"
                    );
                    self.early_launch = false;
                    LaunchGraph::build(calls, &deps, false)?
                }
                built => built?,
            };
            self.graph = Some(graph);
        }
        host_times::lap(&mut self.times);
        self.launch_graph()
    }

    /// Queues the kept graph, between the events of `KILN_HOST_TIMES`' first mark. The
    /// context must be current.
    fn launch_graph(&self) -> Result<(), DriverError> {
        self.mark(0)?;
        let graph = self.graph.as_ref().expect("a graph is kept");
        graph.launch(&self.stream)
    }
}

impl DeviceExecutor for CudaExecutor {
    fn recordings(&self) -> Option<Recordings> {
        self.graphs.then_some(self.recordings)
    }

    fn device_name(&self) -> &str {
        &self.device.name
    }

    /// Runs `plan` under `env`: uploads inputs, launches every kernel, downloads outputs.
    /// Timings (with `profile`) come from device events around each launch.
    fn execute(
        &mut self,
        plan: &Plan,
        env: &Bindings,
        io: HostIo<'_>,
        profile: bool,
    ) -> Result<Vec<LaunchTiming>, RuntimeError> {
        let target = self.target.clone();
        let perr = |msg: String| RuntimeError::Plan {
            target: target.clone(),
            msg,
        };
        let derr = |what: &str, e: DriverError| RuntimeError::Device {
            target: target.clone(),
            msg: format!("{what}: {e}"),
        };
        host_times::start(&mut self.times);
        // Offsets that stay put while a decode's position grows keep the graph's nodes as
        // they are (see `Plan::arena_layout_with_room`).
        let layout = if self.graphs {
            plan.arena_layout_with_room(env)
        } else {
            plan.arena_layout(env)
        }
        .map_err(perr)?;
        let dims = plan.dims_array(env).map_err(perr)?;
        let total = usize::try_from(layout.total)
            .map_err(|_| perr("arena size exceeds the address space".into()))?;
        let s = self.stream.clone();
        if self.arena.as_ref().is_none_or(|a| a.len() < total) {
            self.arena = None;
            self.arena = Some(
                s.alloc_zeros::<u8>(total.max(1))
                    .map_err(|e| derr("allocating the arena", e))?,
            );
        }
        let sizes: Vec<usize> = io.outputs.iter().map(|b| b.len()).collect();
        self.io.truncate(sizes.len());
        for (i, &n) in sizes.iter().enumerate() {
            if i >= self.io.len() {
                self.io.push(
                    s.alloc_zeros::<u8>(n.max(1))
                        .map_err(|e| derr("allocating an output", e))?,
                );
            } else if self.io[i].len() < n {
                self.io[i] = s
                    .alloc_zeros::<u8>(carry::grown(self.io[i].len(), n))
                    .map_err(|e| derr("allocating an output", e))?;
            }
        }
        host_times::lap(&mut self.times);
        // The symbols and the buffers' offsets, then each input (carried ones are empty
        // here), in one copy.
        let mut dims_bytes: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        let carried_outputs: Vec<usize> = io.carried.iter().map(|r| r.output).collect();
        if self.buffer_offsets {
            if self
                .tables
                .as_ref()
                .is_none_or(|t| !t.fits(plan, &carried_outputs))
            {
                self.tables = Some(OffsetTables::new(plan, &carried_outputs));
            }
            let mut held = vec![0u64; io.outputs.len()];
            for run in io.carried {
                held[run.output] = run.held as u64;
            }
            let tables = self.tables.as_ref().expect("laid out above");
            tables.write(|o| held[o], &mut dims_bytes);
        }
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(io.inputs.len() + 1);
        pieces.push(&dims_bytes);
        pieces.extend(io.inputs.iter().copied());
        let uploaded = self
            .staging
            .upload(&self.device.context, &s, &pieces)
            .map_err(|e| derr("uploading the inputs", e))?;
        host_times::lap(&mut self.times);
        self.carried.truncate(io.carried.len());
        for (i, run) in io.carried.iter().enumerate() {
            let len = self.carried.get(i).map_or(0, |c| c.len());
            if len >= run.needed() {
                continue;
            }
            let mut bigger = s
                .alloc_zeros::<u8>(carry::grown(len, run.needed()))
                .map_err(|e| derr("allocating a carried input", e))?;
            if let Some(old) = self.carried.get(i) {
                let held = run.held.min(len);
                if held > 0 {
                    s.memcpy_dtod(&old.slice(..held), &mut bigger.slice_mut(..held))
                        .map_err(|e| derr("moving a carried input", e))?;
                }
                self.carried[i] = bigger;
            } else {
                self.carried.push(bigger);
            }
        }
        let addr = |b: &CudaSlice<u8>| -> u64 { b.device_ptr(&s).0 };
        let arena = addr(self.arena.as_ref().expect("allocated above"));
        let weights = self.weights.as_ref().map_or(0, addr);
        let dims_addr = uploaded[0];
        let n_in = io.inputs.len();
        let mut io_addrs: Vec<u64> = uploaded[1..]
            .iter()
            .copied()
            .chain(self.io.iter().map(addr))
            .collect();
        for (run, store) in io.carried.iter().zip(&self.carried) {
            io_addrs[run.input] = addr(store);
            // With offsets, the kernels add the rows held themselves.
            let moved = if self.buffer_offsets { 0 } else { run.held };
            io_addrs[n_in + run.output] = addr(store) + moved as u64;
        }
        let tables_addr = dims_addr + 8 * dims.len() as u64;

        let replayed = self.graphs && !profile;
        let roomy: Option<Vec<i64>> = (replayed && self.counts_own_points)
            .then(|| dims.iter().map(|&v| plan::with_room(v)).collect());
        // Everything a run's kernel calls are made from: while it repeats, so do the calls,
        // which the kept graph holds already (a decode's steps within their room, with
        // offsets). The plan is the session's one, named by its place and launch count.
        let plan_id = [plan as *const Plan as u64, plan.launches.len() as u64];
        let made_from: Vec<u64> = (plan_id.into_iter())
            .chain([arena, weights, dims_addr])
            .chain(layout.offsets.iter().copied())
            .chain(io_addrs.iter().copied())
            .chain(roomy.as_ref().unwrap_or(&dims).iter().map(|&v| v as u64))
            .chain(carried_outputs.iter().map(|&o| o as u64))
            .collect();
        if replayed && self.graph.is_some() && made_from == self.made_from {
            self.recordings.runs += 1;
            host_times::lap(&mut self.times);
            host_times::lap(&mut self.times);
            (self.device.context.bind_to_thread())
                .and_then(|()| self.launch_graph())
                .map_err(|e| derr("running the launch graph", e))?;
            self.mark(1).map_err(|e| derr("recording an event", e))?;
            host_times::lap(&mut self.times);
            return self.finish(io.outputs, Vec::new());
        }
        self.made_from.clear();

        let mut calls = Vec::with_capacity(plan.launches.len());
        let mut names = Vec::with_capacity(plan.launches.len());
        if self.sizes.as_ref().is_none_or(|z| !z.fits(plan)) {
            self.sizes = Some(LaunchSizes::new(plan).map_err(perr)?);
        }
        let sizes = self.sizes.as_ref().expect("made above");
        for (index, launch) in plan.launches.iter().enumerate() {
            let size = sizes.on_device(index, &dims, roomy.as_deref(), i32::MAX as u64);
            let Some(size) = size.map_err(perr)? else {
                continue;
            };
            if self.skip.iter().any(|k| k == "all" || *k == launch.kernel) {
                continue;
            }
            let f =
                self.functions
                    .get(&launch.kernel)
                    .ok_or_else(|| RuntimeError::MissingKernel {
                        target: target.clone(),
                        kernel: launch.kernel.clone(),
                        msg: "not resolved when the code was loaded".into(),
                    })?;
            let mut params: Vec<u64> = launch
                .args
                .iter()
                .map(|a| a.address(arena, &layout.offsets, &io_addrs, n_in, weights))
                .collect();
            let last = match &self.tables {
                Some(t) if self.buffer_offsets => tables_addr + 8 * t.start(index) as u64,
                _ => size.points,
            };
            params.extend([dims_addr, last]);
            let shared_bytes = size.blocks.shared_bytes;
            opt_in(
                &mut self.opted_in,
                &self.device,
                &launch.kernel,
                f,
                shared_bytes,
            )
            .map_err(|msg| RuntimeError::Device {
                target: target.clone(),
                msg,
            })?;
            calls.push(KernelCall {
                launch: index,
                function: f.cu_function(),
                blocks: size.block_count,
                threads: size.blocks.threads,
                shared_bytes,
                params,
            });
            names.push((launch.kernel.as_str(), f, size.points));
        }
        host_times::lap(&mut self.times);
        let mut events = Vec::new();
        if replayed && !calls.is_empty() {
            self.replay(plan, &calls)
                .map_err(|e| derr("running the launch graph", e))?;
            self.made_from = made_from;
        } else {
            host_times::lap(&mut self.times);
            self.mark(0).map_err(|e| derr("recording an event", e))?;
            for (call, (kernel, f, points)) in calls.iter().zip(names) {
                let cfg = LaunchConfig {
                    grid_dim: (call.blocks, 1, 1),
                    block_dim: (call.threads, 1, 1),
                    shared_mem_bytes: call.shared_bytes,
                };
                let mut b = s.launch_builder(f);
                for p in &call.params {
                    b.arg(p);
                }
                if profile {
                    b.record_kernel_launch(sys::CUevent_flags::CU_EVENT_DEFAULT);
                }
                // SAFETY: the argument list matches the kernel ABI (one device address per
                // buffer, the dims address, the point count); every address lies in an
                // allocation sized by the same plan and bindings the kernel indexes with.
                let ev = unsafe { b.launch(cfg) }
                    .map_err(|e| derr(&format!("launching {kernel}"), e))?;
                if let Some(ev) = ev {
                    events.push((kernel.to_string(), points, ev));
                }
            }
        }
        self.mark(1).map_err(|e| derr("recording an event", e))?;
        host_times::lap(&mut self.times);
        self.finish(io.outputs, events)
    }
}

impl CudaExecutor {
    /// Downloads the outputs once the run's kernels finish, and reads the events' times.
    fn finish(
        &mut self,
        outputs: &mut [&mut [u8]],
        events: Vec<(String, u64, (CudaEvent, CudaEvent))>,
    ) -> Result<Vec<LaunchTiming>, RuntimeError> {
        let target = self.target.clone();
        let derr = |what: &str, e: DriverError| RuntimeError::Device {
            target: target.clone(),
            msg: format!("{what}: {e}"),
        };
        let s = self.stream.clone();
        let downloads: Vec<u64> = (0..outputs.len())
            .map(|i| self.io[i].device_ptr(&s).0)
            .collect();
        let mut outs: Vec<(&mut [u8], u64)> = outputs
            .iter_mut()
            .zip(downloads)
            .filter(|(out, _)| !out.is_empty())
            .map(|(out, at)| (&mut **out, at))
            .collect();
        self.staging
            .download(&self.device.context, &s, &mut outs)
            .map_err(|e| derr("running the kernels and downloading the outputs", e))?;
        if let (Some(times), [start, end, ..]) = (self.times.as_mut(), &self.marks[..]) {
            let ms = start
                .elapsed_ms(end)
                .map_err(|e| derr("reading event times", e))?;
            times.device(vec![Duration::from_secs_f64(ms as f64 / 1e3)]);
        }
        host_times::lap(&mut self.times);
        let mut timings = Vec::with_capacity(events.len());
        for (kernel, grid_points, (start, end)) in events {
            let ms = start
                .elapsed_ms(&end)
                .map_err(|e| derr("reading event times", e))?;
            timings.push(LaunchTiming {
                kernel,
                grid_points,
                duration: Duration::from_secs_f64(ms as f64 / 1e3),
            });
        }
        Ok(timings)
    }
}

/// Page-locked host buffers for a run's uploads and downloads, grown as runs need, and the
/// uploads' device block. From pageable memory the driver copies through a page-locked
/// buffer of its own before (or, for downloads, after) each transfer; a decode step moves
/// a few small inputs up and the logits down every run, so those extra copies, and one
/// driver call per input, are a share of each step.
#[derive(Default)]
struct Staging {
    up: Option<PinnedHostSlice<u8>>,
    /// The uploads' device copy, and the room each piece has in it (see `upload`).
    up_device: Option<CudaSlice<u8>>,
    up_room: Vec<usize>,
    down: Option<PinnedHostSlice<u8>>,
}

/// Each staged piece starts at a multiple of this many bytes.
const STAGING_ALIGN: usize = 64;

/// Where each of `lens` starts in one staging buffer, and the bytes it needs.
fn staged_offsets(lens: impl Iterator<Item = usize>) -> (Vec<usize>, usize) {
    let mut at = 0;
    let offsets = lens
        .map(|n| {
            let start = at;
            at += n.div_ceil(STAGING_ALIGN) * STAGING_ALIGN;
            start
        })
        .collect();
    (offsets, at)
}

/// Gives each of `lens` room in `room` (one entry per piece, kept between runs; reset when
/// the number of pieces changes): a piece that no longer fits gets twice its old room or
/// its length, whichever is more, in multiples of `STAGING_ALIGN`; the others keep theirs.
fn make_room(room: &mut Vec<usize>, lens: impl ExactSizeIterator<Item = usize>) {
    if room.len() != lens.len() {
        *room = vec![0; lens.len()];
    }
    for (r, n) in room.iter_mut().zip(lens) {
        if *r < n.max(1) {
            *r = n.max(1).max(*r * 2).next_multiple_of(STAGING_ALIGN);
        }
    }
}

/// `slot`, grown (its contents dropped) to hold at least `bytes`; `flags` as the driver
/// takes them for page-locked allocations.
fn pinned<'a>(
    slot: &'a mut Option<PinnedHostSlice<u8>>,
    ctx: &Arc<CudaContext>,
    bytes: usize,
    flags: u32,
) -> Result<&'a mut PinnedHostSlice<u8>, DriverError> {
    if slot.as_ref().is_none_or(|p| p.len() < bytes) {
        let len = carry::grown(slot.as_ref().map_or(0, |p| p.len()), bytes);
        *slot = None;
        // SAFETY: the memory is written before any byte of it is read (`upload` and
        // `download` copy into it first).
        *slot = Some(unsafe { ctx.alloc_pinned_with_flags::<u8>(len, flags)? });
    }
    Ok(slot.as_mut().expect("allocated above"))
}

impl Staging {
    /// Moves `pieces` to the device in one copy, through page-locked memory, and returns
    /// where each landed. Each piece keeps its place from run to run while it fits the
    /// room it had (a decode's past positions grow by one each step), so the kernels'
    /// addresses stay the same; one that outgrows its room gets twice as much. The
    /// previous run's copy has finished (every run ends synchronised).
    fn upload(
        &mut self,
        ctx: &Arc<CudaContext>,
        s: &Arc<CudaStream>,
        pieces: &[&[u8]],
    ) -> Result<Vec<u64>, DriverError> {
        make_room(&mut self.up_room, pieces.iter().map(|p| p.len()));
        let (offsets, total) = staged_offsets(self.up_room.iter().copied());
        if self.up_device.as_ref().is_none_or(|d| d.len() < total) {
            // Twice what is needed, so that pieces outgrowing their room move within it.
            self.up_device = None;
            self.up_device = Some(s.alloc_zeros::<u8>(2 * total)?);
        }
        let base = self
            .up_device
            .as_ref()
            .expect("allocated above")
            .device_ptr(s)
            .0;
        // Write-combined: the host only writes it, and the device reads it faster.
        let buf = pinned(&mut self.up, ctx, total, sys::CU_MEMHOSTALLOC_WRITECOMBINED)?;
        let host = buf.as_mut_slice()?;
        for (bytes, &start) in pieces.iter().zip(&offsets) {
            host[start..start + bytes.len()].copy_from_slice(bytes);
        }
        let end = offsets
            .last()
            .zip(pieces.last())
            .map_or(0, |(o, p)| o + p.len());
        if end > 0 {
            // SAFETY: the device block holds `total >= end` bytes, and the staged bytes stay
            // allocated and unwritten until the stream is synchronised at the end of the
            // run.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(base, &host[..end], s.cu_stream())?
            };
        }
        Ok(offsets.iter().map(|&o| base + o as u64).collect())
    }

    /// Queues the copy of each `(destination, device address)` into page-locked memory,
    /// waits for the stream (the run's kernels and these copies) and moves the bytes to
    /// their destinations.
    fn download(
        &mut self,
        ctx: &Arc<CudaContext>,
        s: &Arc<CudaStream>,
        pieces: &mut [(&mut [u8], u64)],
    ) -> Result<(), DriverError> {
        let (offsets, total) = staged_offsets(pieces.iter().map(|(b, _)| b.len()));
        if total == 0 {
            return s.synchronize();
        }
        let buf = pinned(&mut self.down, ctx, total, 0)?;
        let host = buf.as_mut_slice()?;
        for ((out, at), &start) in pieces.iter().zip(&offsets) {
            let staged = &mut host[start..start + out.len()];
            // SAFETY: `at` holds at least `out.len()` bytes of this run's output, and
            // `staged` is read only after the synchronisation below.
            unsafe { cudarc::driver::result::memcpy_dtoh_async(staged, *at, s.cu_stream())? };
        }
        s.synchronize()?;
        for ((out, _), &start) in pieces.iter_mut().zip(&offsets) {
            let n = out.len();
            out.copy_from_slice(&host[start..start + n]);
        }
        Ok(())
    }
}

/// See [`super::copy_bandwidth`].
pub fn copy_bandwidth(bytes: usize) -> Result<f64, String> {
    let dev = probe()?;
    let s = dev.context.default_stream();
    let e = |e: DriverError| format!("measuring copy bandwidth: {e}");
    let src = s.alloc_zeros::<u8>(bytes).map_err(e)?;
    let mut dst = s.alloc_zeros::<u8>(bytes).map_err(e)?;
    let mut best = f64::MAX;
    for _ in 0..6 {
        let start = dev
            .context
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(e)?;
        let end = dev
            .context
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(e)?;
        start.record(&s).map_err(e)?;
        s.memcpy_dtod(&src, &mut dst).map_err(e)?;
        end.record(&s).map_err(e)?;
        end.synchronize().map_err(e)?;
        best = best.min(start.elapsed_ms(&end).map_err(e)? as f64 / 1e3);
    }
    Ok(2.0 * bytes as f64 / best)
}

/// Lets `f` launch with `bytes` of dynamic shared memory: up to 48 KiB every kernel may;
/// beyond that each kernel must opt in, up to the device's limit (once per kernel).
fn opt_in(
    opted_in: &mut HashMap<String, u32>,
    device: &Device,
    kernel: &str,
    f: &CudaFunction,
    bytes: u32,
) -> Result<(), String> {
    if bytes <= 48 << 10 || opted_in.get(kernel).is_some_and(|&b| b >= bytes) {
        return Ok(());
    }
    if bytes > device.shared_optin {
        return Err(format!(
            "kernel {kernel} needs {bytes} bytes of shared memory a block; {} allows {} \
             (compile for this GPU's capability, sm_{}{})",
            device.name, device.shared_optin, device.capability.0, device.capability.1
        ));
    }
    let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
    f.set_attribute(attr, bytes as i32)
        .map_err(|e| format!("allowing kernel {kernel} {bytes} bytes of shared memory: {e}"))?;
    opted_in.insert(kernel.to_string(), bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Staged pieces start on 64-byte boundaries, in order, and the total covers the last.
    #[test]
    fn staged_pieces_are_aligned_and_apart() {
        let (offsets, total) = staged_offsets([8, 0, 65, 128, 1].into_iter());
        assert_eq!(offsets, vec![0, 64, 64, 192, 320]);
        assert_eq!(total, 384);
        assert_eq!(staged_offsets(std::iter::empty()), (vec![], 0));
    }

    /// A growing piece keeps its room (and the pieces after it their places) until it
    /// outgrows it, then doubles; a new number of pieces starts over.
    #[test]
    fn uploads_keep_their_places_while_they_fit() {
        let mut room = Vec::new();
        make_room(&mut room, [56, 4, 0].into_iter());
        assert_eq!(room, [64, 64, 64]);
        make_room(&mut room, [56, 64, 0].into_iter());
        assert_eq!(room, [64, 64, 64]);
        make_room(&mut room, [56, 68, 0].into_iter());
        assert_eq!(room, [64, 128, 64]);
        make_room(&mut room, [56, 300, 0].into_iter());
        assert_eq!(room, [64, 320, 64]);
        make_room(&mut room, [8].into_iter());
        assert_eq!(room, [64]);
    }

    #[test]
    fn skipped_kernels_are_listed_by_plus_or_comma() {
        assert_eq!(
            kernel_names("k13_matmul+k16_matmul"),
            ["k13_matmul", "k16_matmul"]
        );
        assert_eq!(kernel_names("all,"), ["all"]);
        assert!(kernel_names("").is_empty());
    }
}
