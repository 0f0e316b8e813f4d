//! Executing a launch plan through Vulkan: one shader module per variant (every kernel an
//! entry point), one compute pipeline per kernel, weights uploaded once through a staging
//! buffer, one device arena laid out by the plan.
//!
//! A run is three command buffers submitted together and waited on with a fence: the
//! uploads (inputs, and each launch's parameters and workgroup count), the dispatches, and
//! the downloads. The dispatches read everything that changes between runs from memory
//! (parameters through binding 0, workgroup counts through indirect dispatch; a launch whose
//! guard fails gets zero workgroups), so their command buffer is recorded once and replayed
//! for as long as every binding stays the same buffer range: a decode step, which moves
//! `past` by one, only rewrites a few hundred bytes. The arena is laid out with room for
//! growing symbols and inputs, outputs and carried storage are bound whole, which is what
//! keeps those ranges fixed; any buffer allocated anew drops the recording.
//!
//! Bindings follow the SPIR-V ABI of `kiln-codegen` (`spirv/mod.rs`): set 0, binding 0 = the
//! launch's parameters, binding `i + 1` = kernel argument `i`, each a byte range of a buffer
//! pushed per dispatch (push descriptors, so nothing is pooled or freed).

use super::device::{probe, Gpu};
use super::queue::{vk_err, Buffer, Queue, BINDING_UNIT};
use crate::carry::{self, CarriedRun};
use crate::cpu::executor::LaunchTiming;
use crate::device::{DeviceExecutor, Recordings};
use crate::error::RuntimeError;
use crate::hazards;
use crate::host_times::{self, HostTimes};
use crate::plan::{ArenaLayout, BufferRef, DeviceLaunch, GpuBlocks, HostIo, Launch, Plan};
use ash::vk;
use gpu_allocator::MemoryLocation;
use kiln_ir::Bindings;
use std::collections::HashMap;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

/// Slots and weights start at multiples of this (the plan's and the assembler's
/// alignment); a device that needs coarser storage-buffer offsets cannot bind them.
const PLAN_ALIGN: u64 = 64;

/// One input or output: the device buffer kernels bind, and its host-visible twin.
struct Io {
    device: Buffer,
    staging: Buffer,
}

pub struct VulkanExecutor {
    target: String,
    gpu: Arc<Gpu>,
    q: Queue,
    module: vk::ShaderModule,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    cache: vk::PipelineCache,
    pipelines: HashMap<String, vk::Pipeline>,
    bindings: u32,
    /// Bytes between two launches' parameter blocks (`points`, then the symbols), a
    /// multiple of `PLAN_ALIGN` so each block is a legal binding offset.
    param_stride: u64,
    /// Every launch's parameter block, then its indirect workgroup count (3 x u32).
    params: Option<Io>,
    /// The dispatches' command buffer (`Queue::main`) as last recorded, if it may be replayed.
    recorded: Option<Recording>,
    /// Whether a recording may be replayed (`KILN_VULKAN_REPLAY=0` records every run, to
    /// measure what replaying saves).
    replay: bool,
    /// Whether dispatches take their workgroup counts from the recording rather than from
    /// the parameter buffer (`KILN_VULKAN_DISPATCH=direct`; a recording then lasts only
    /// while every count stays the same), to measure what indirect dispatch costs.
    direct: bool,
    recordings: Recordings,
    /// `KILN_HOST_TIMES=1`: the host's time in each phase of a run (a measuring aid).
    times: Option<HostTimes>,
    weights: Option<Buffer>,
    arena: Option<Buffer>,
    io: Vec<Io>,
    /// Storage of the session's carried inputs (see `crate::carry`), by carry index. A
    /// run's new rows land in the output's own buffer and are copied after the held ones
    /// (a copy has no offset alignment to meet; a binding at any row would).
    carried: Vec<Buffer>,
}

/// What the recorded dispatches bind, launch by launch: when a run would bind the same, the
/// recording is replayed.
#[derive(PartialEq)]
struct Recording {
    /// The launches that run (their guards hold and their grids are not empty), in plan
    /// order: only those are dispatched.
    runs: Vec<usize>,
    /// Each running launch's workgroup count, where dispatches are direct (else empty).
    groups: Vec<u32>,
    bindings: Vec<Vec<Binding>>,
}

/// One descriptor: a byte range of a buffer.
#[derive(Clone, Copy, PartialEq)]
struct Binding {
    buf: vk::Buffer,
    offset: u64,
    range: u64,
}

impl std::fmt::Debug for VulkanExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VulkanExecutor")
            .field("target", &self.target)
            .field("device", &self.gpu.name)
            .finish()
    }
}

impl VulkanExecutor {
    /// Loads `spirv` (the variant's code section), creates a pipeline per kernel of `plan`
    /// and uploads `weights`.
    pub fn new(
        target: &str,
        spirv: &[u8],
        plan: &Plan,
        weights: Option<&[u8]>,
    ) -> Result<VulkanExecutor, RuntimeError> {
        let gpu = probe().map_err(|msg| RuntimeError::Device {
            target: target.into(),
            msg,
        })?;
        let code_err = |msg: String| RuntimeError::CodeLoad {
            target: target.into(),
            msg,
        };
        let (_, spirv) = super::bundle::pick(spirv, gpu.features).map_err(&code_err)?;
        if spirv.len() < 20 || !spirv.len().is_multiple_of(4) {
            return Err(code_err(format!(
                "{} bytes is not a SPIR-V module (a whole number of 32-bit words, 5 or more)",
                spirv.len()
            )));
        }
        let words: Vec<u32> = spirv
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if words[0] != 0x0723_0203 {
            return Err(code_err(format!("bad SPIR-V magic {:#010x}", words[0])));
        }
        let limits = gpu.limits;
        if limits.min_storage_buffer_offset_alignment > PLAN_ALIGN {
            return Err(vk_err(
                target,
                "device limits",
                format!(
                    "{} needs storage-buffer offsets aligned to {} bytes; kiln aligns to {PLAN_ALIGN}",
                    gpu.name, limits.min_storage_buffer_offset_alignment
                ),
            ));
        }
        let bindings = plan
            .launches
            .iter()
            .map(|l| l.args.len())
            .max()
            .unwrap_or(0) as u32
            + 1;
        // Merged sibling launches (a layer's q, k and v) bind a dozen buffers; devices
        // with fewer per shader stage (the spec's minimum is 4) cannot run the plan.
        if bindings > limits.max_per_stage_descriptor_storage_buffers {
            return Err(vk_err(
                target,
                "device limits",
                format!(
                    "{} binds at most {} storage buffers per shader; this plan's kernels bind up to {bindings}",
                    gpu.name, limits.max_per_stage_descriptor_storage_buffers
                ),
            ));
        }
        let dev = &gpu.device;
        let e = |what: &str, err: vk::Result| vk_err(target, what, err);
        // SAFETY (every call on `dev` below): the create-info structs and the slices they
        // point to outlive each call; handles passed in were created from `dev`.
        let module = unsafe {
            dev.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)
        }
        .map_err(|err| code_err(format!("the driver rejected the SPIR-V module: {err}")))?;
        let binding_info: Vec<vk::DescriptorSetLayoutBinding> = (0..bindings)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let set_layout = unsafe {
            dev.create_descriptor_set_layout(
                &vk::DescriptorSetLayoutCreateInfo::default()
                    .flags(vk::DescriptorSetLayoutCreateFlags::PUSH_DESCRIPTOR_KHR)
                    .bindings(&binding_info),
                None,
            )
        }
        .map_err(|err| e("creating the descriptor layout", err))?;
        let set_layouts = [set_layout];
        let layout = unsafe {
            dev.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
                None,
            )
        }
        .map_err(|err| e("creating the pipeline layout", err))?;
        let cache_file = super::pipeline_cache::path_for(&gpu, spirv);
        let initial = super::pipeline_cache::load(cache_file.as_ref());
        let cache = unsafe {
            dev.create_pipeline_cache(
                &vk::PipelineCacheCreateInfo::default().initial_data(&initial),
                None,
            )
        }
        .map_err(|err| e("creating the pipeline cache", err))?;
        let mut pipelines = HashMap::new();
        // The driver compiles each pipeline on this thread, which can take a while on a first
        // run; KILN_VULKAN_TRACE=1 names each with the time it took.
        let trace = tracing();
        for l in &plan.launches {
            if pipelines.contains_key(&l.kernel) {
                continue;
            }
            let started = std::time::Instant::now();
            if trace {
                eprintln!("vulkan: building the pipeline of {}", l.kernel);
            }
            let name = CString::new(format!("kiln_{}", l.kernel))
                .map_err(|_| code_err(format!("kernel name {:?} has a NUL byte", l.kernel)))?;
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(&name);
            let flags = match gpu.stats {
                Some(_) => vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR,
                None => vk::PipelineCreateFlags::empty(),
            };
            let info = [vk::ComputePipelineCreateInfo::default()
                .flags(flags)
                .stage(stage)
                .layout(layout)];
            let p = unsafe { dev.create_compute_pipelines(cache, &info, None) }.map_err(
                |(_, err)| RuntimeError::MissingKernel {
                    target: target.into(),
                    kernel: l.kernel.clone(),
                    msg: format!("the driver could not build its pipeline: {err}"),
                },
            )?;
            if trace {
                eprintln!("vulkan: {} built in {:.1?}", l.kernel, started.elapsed());
            }
            for line in super::stats::of(&gpu, p[0], &l.kernel) {
                eprintln!("{line}");
            }
            pipelines.insert(l.kernel.clone(), p[0]);
        }
        super::pipeline_cache::save(&gpu, cache, cache_file.as_ref(), initial.len());
        let q = Queue::new(gpu.clone(), target)?;
        let mut ex = VulkanExecutor {
            target: target.into(),
            gpu: gpu.clone(),
            q,
            module,
            set_layout,
            layout,
            cache,
            pipelines,
            bindings,
            param_stride: (8 + 8 * plan.symbols.len().max(1) as u64).next_multiple_of(PLAN_ALIGN),
            params: None,
            recorded: None,
            replay: std::env::var("KILN_VULKAN_REPLAY").as_deref() != Ok("0"),
            direct: std::env::var("KILN_VULKAN_DISPATCH").as_deref() == Ok("direct"),
            recordings: Recordings::default(),
            times: HostTimes::from_env(
                "vulkan",
                &["prepare", "record", "submit+wait", "download"],
                &[],
            ),
            weights: None,
            arena: None,
            io: Vec::new(),
            carried: Vec::new(),
        };
        if let Some(w) = weights.filter(|w| !w.is_empty()) {
            ex.upload_weights(w)?;
        }
        Ok(ex)
    }

    fn upload_weights(&mut self, w: &[u8]) -> Result<(), RuntimeError> {
        let size = (w.len() as u64).next_multiple_of(PLAN_ALIGN) + PLAN_ALIGN;
        let device = self.q.buffer(
            size,
            vk::BufferUsageFlags::STORAGE_BUFFER | vk::BufferUsageFlags::TRANSFER_DST,
            MemoryLocation::GpuOnly,
            "weights",
        )?;
        let mut staging = self.q.buffer(
            w.len() as u64,
            vk::BufferUsageFlags::TRANSFER_SRC,
            MemoryLocation::CpuToGpu,
            "weights staging",
        )?;
        let mapped = staging.alloc.mapped_slice_mut();
        let mapped = mapped.ok_or_else(|| {
            vk_err(
                &self.target,
                "mapping the weights staging buffer",
                "not host-visible",
            )
        })?;
        mapped[..w.len()].copy_from_slice(w);
        let (cmd, dev) = (self.q.cmd, self.gpu.device.clone());
        self.q.begin()?;
        let region = [vk::BufferCopy::default().size(w.len() as u64)];
        // SAFETY: recording into our command buffer; both buffers are live.
        unsafe { dev.cmd_copy_buffer(cmd, staging.buf, device.buf, &region) };
        self.q.submit_and_wait()?;
        self.q.free(staging);
        self.weights = Some(device);
        Ok(())
    }

    /// Makes each carried input's storage large enough for its run; returns the storage
    /// replaced, the index of its replacement and the bytes to copy across (recorded at the
    /// start of the run, freed after it).
    fn grow_carried(
        &mut self,
        runs: &[CarriedRun],
    ) -> Result<Vec<(Buffer, usize, u64)>, RuntimeError> {
        for old in self.carried.split_off(runs.len().min(self.carried.len())) {
            self.release(old);
        }
        let mut moves = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            let size = self.carried.get(i).map_or(0, |b| b.size);
            if size >= run.needed() as u64 {
                continue;
            }
            let usage = vk::BufferUsageFlags::STORAGE_BUFFER
                | vk::BufferUsageFlags::TRANSFER_SRC
                | vk::BufferUsageFlags::TRANSFER_DST;
            let cap = carry::grown(size as usize, run.needed()) as u64;
            let bigger = self.buffer(cap, usage, MemoryLocation::GpuOnly, "carried input")?;
            match self.carried.get_mut(i) {
                Some(old) => {
                    let old = std::mem::replace(old, bigger);
                    let held = (run.held as u64).min(size);
                    if held > 0 {
                        moves.push((old, i, held));
                    } else {
                        self.release(old);
                    }
                }
                None => self.carried.push(bigger),
            }
        }
        Ok(moves)
    }

    /// Makes sure `io[i]` holds at least `size` bytes. One that grew before at least
    /// doubles (an output that grows with `past` would otherwise be new every step, and
    /// with it the recording).
    fn ensure_io(&mut self, i: usize, size: u64, input: bool) -> Result<(), RuntimeError> {
        let mut size = size.max(4).next_multiple_of(4);
        if self.io.get(i).is_some_and(|b| b.device.size >= size) {
            return Ok(());
        }
        if i < self.io.len() {
            size = size.max(2 * self.io[i].device.size);
            let old = self.io.remove(i);
            self.release(old.device);
            self.release(old.staging);
        }
        let usage = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
        let device = self.buffer(
            size,
            usage | vk::BufferUsageFlags::STORAGE_BUFFER,
            MemoryLocation::GpuOnly,
            "input/output",
        )?;
        let location = if input {
            MemoryLocation::CpuToGpu
        } else {
            MemoryLocation::GpuToCpu
        };
        let staging = self.buffer(size, usage, location, "input/output staging")?;
        self.io.insert(i.min(self.io.len()), Io { device, staging });
        Ok(())
    }
}

impl DeviceExecutor for VulkanExecutor {
    fn recordings(&self) -> Option<Recordings> {
        Some(self.recordings)
    }

    fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// Runs `plan` under `env`: uploads inputs, dispatches every kernel, downloads outputs.
    /// Timings (with `profile`, where the queue has timestamps) come from the device.
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
        host_times::start(&mut self.times);
        // Offsets that stay put while a decode's position grows keep the recording valid.
        let layout = plan.arena_layout_with_room(env).map_err(perr)?;
        let dims = plan.dims_array(env).map_err(perr)?;
        let arena_size = layout.total.max(PLAN_ALIGN);
        if self.arena.as_ref().is_none_or(|a| a.size < arena_size) {
            if let Some(old) = self.arena.take() {
                self.release(old);
            }
            let a = self.buffer(
                arena_size,
                vk::BufferUsageFlags::STORAGE_BUFFER,
                MemoryLocation::GpuOnly,
                "arena",
            )?;
            self.arena = Some(a);
        }
        let n_in = io.inputs.len();
        for (i, b) in io.inputs.iter().enumerate() {
            self.ensure_io(i, b.len() as u64, true)?;
        }
        // Carried outputs are as long as the rows they append; carried inputs bind their
        // storage.
        let mut out_len: Vec<u64> = io.outputs.iter().map(|o| o.len() as u64).collect();
        let mut carried_in = vec![None; n_in];
        for (c, run) in io.carried.iter().enumerate() {
            out_len[run.output] = run.appended as u64;
            carried_in[run.input] = Some(c);
        }
        for (i, &n) in out_len.iter().enumerate() {
            self.ensure_io(n_in + i, n, false)?;
        }
        let moves = self.grow_carried(io.carried)?;
        self.ensure_params(plan.launches.len())?;
        for (i, data) in io.inputs.iter().enumerate() {
            let target = &self.target;
            let slice = self.io[i]
                .staging
                .alloc
                .mapped_slice_mut()
                .ok_or_else(|| vk_err(target, "mapping an input", "not host-visible"))?;
            slice[..data.len()].copy_from_slice(data);
        }
        let sizes = self.write_params(plan, env, &dims)?;
        host_times::lap(&mut self.times);

        let runs: Vec<usize> = (0..plan.launches.len())
            .filter(|&n| sizes[n].is_some())
            .collect();
        let mut recording = self.bindings_of(plan, runs, &layout, &carried_in, n_in)?;
        if self.direct {
            recording.groups = (recording.runs.iter())
                .map(|&n| sizes[n].map_or(0, |s| s.block_count))
                .collect();
        }
        let timed = profile && self.gpu.timestamps;
        if timed {
            self.q.ensure_queries(2 * plan.launches.len() as u32)?;
        }
        self.recordings.runs += 1;
        if timed || self.recorded.as_ref() != Some(&recording) {
            self.recordings.recorded += 1;
            self.recorded = None;
            self.record_dispatches(plan, &recording, timed)?;
            // A timed recording writes timestamps; the next untimed run records its own.
            if !timed && self.replay {
                self.recorded = Some(recording);
            }
        }

        let dev = self.gpu.device.clone();
        let (pre, post) = (self.q.cmd, self.q.post);
        self.q.begin_buffer(pre, true)?;
        // SAFETY (every command below): recording into our own command buffers; every
        // buffer is live until the run has been waited for.
        unsafe {
            for (old, new, held) in &moves {
                let r = [vk::BufferCopy::default().size(*held)];
                dev.cmd_copy_buffer(pre, old.buf, self.carried[*new].buf, &r);
            }
            for (i, data) in io.inputs.iter().enumerate() {
                if !data.is_empty() {
                    let r = [vk::BufferCopy::default().size(data.len() as u64)];
                    dev.cmd_copy_buffer(pre, self.io[i].staging.buf, self.io[i].device.buf, &r);
                }
            }
            let p = self.params.as_ref().expect("allocated above");
            let r = [vk::BufferCopy::default().size(p.device.size)];
            dev.cmd_copy_buffer(pre, p.staging.buf, p.device.buf, &r);
            if let (true, Some((pool, n))) = (timed, self.q.queries) {
                dev.cmd_reset_query_pool(pre, pool, 0, n);
            }
            barrier(
                &dev,
                pre,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            );
        }
        self.q.end_buffer(pre)?;
        self.q.begin_buffer(post, true)?;
        // SAFETY: as above.
        unsafe {
            for (i, out) in io.outputs.iter().enumerate() {
                if !out.is_empty() {
                    let r = [vk::BufferCopy::default().size(out.len() as u64)];
                    let b = &self.io[n_in + i];
                    dev.cmd_copy_buffer(post, b.device.buf, b.staging.buf, &r);
                }
            }
            for (c, run) in io.carried.iter().enumerate() {
                if run.appended > 0 {
                    let r = [vk::BufferCopy::default()
                        .dst_offset(run.held as u64)
                        .size(run.appended as u64)];
                    let from = self.io[n_in + run.output].device.buf;
                    dev.cmd_copy_buffer(post, from, self.carried[c].buf, &r);
                }
            }
            // The next run's kernels read the rows just appended.
            barrier(
                &dev,
                post,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            );
            memory_barrier(
                &dev,
                post,
                (
                    vk::PipelineStageFlags::TRANSFER,
                    vk::AccessFlags::TRANSFER_WRITE,
                ),
                (vk::PipelineStageFlags::HOST, vk::AccessFlags::HOST_READ),
            );
        }
        self.q.end_buffer(post)?;
        host_times::lap(&mut self.times);
        let ran = self.q.submit_all(&[pre, self.q.main, post]);
        if timed {
            self.recorded = None;
        }
        for (old, _, _) in moves {
            self.q.free(old);
        }
        ran?;
        host_times::lap(&mut self.times);
        for (i, out) in io.outputs.iter_mut().enumerate() {
            let n = out.len();
            let slice = self.io[n_in + i]
                .staging
                .alloc
                .mapped_slice()
                .ok_or_else(|| self.q.err("mapping an output", "not host-visible"))?;
            out.copy_from_slice(&slice[..n]);
        }
        host_times::lap(&mut self.times);
        let mut timings = Vec::new();
        if let (true, Some((pool, _))) = (timed, self.q.queries) {
            let period = self.gpu.limits.timestamp_period as f64;
            for (n, (launch, size)) in plan.launches.iter().zip(&sizes).enumerate() {
                let Some(size) = size else { continue };
                // Only the launches that ran wrote their pair of queries; the others stay
                // unavailable, so each pair is read on its own (read together, the first
                // launch skipped, such as prefill's in a decode step, failed the read).
                let mut stamps = [0u64; 2];
                // SAFETY: this launch's queries were written by the run just waited for.
                unsafe {
                    dev.get_query_pool_results(
                        pool,
                        2 * n as u32,
                        &mut stamps,
                        vk::QueryResultFlags::TYPE_64,
                    )
                }
                .map_err(|e| self.q.err("reading timestamps", e))?;
                let ticks = stamps[1].saturating_sub(stamps[0]);
                timings.push(LaunchTiming {
                    kernel: launch.kernel.clone(),
                    grid_points: size.points,
                    duration: Duration::from_secs_f64(ticks as f64 * period / 1e9),
                });
            }
        }
        Ok(timings)
    }
}

impl VulkanExecutor {
    /// A new buffer. Every allocation (and release) drops the recorded dispatches: a freed
    /// handle may come back for a different buffer, so equal handles prove nothing after one.
    fn buffer(
        &mut self,
        size: u64,
        usage: vk::BufferUsageFlags,
        location: MemoryLocation,
        name: &str,
    ) -> Result<Buffer, RuntimeError> {
        self.recorded = None;
        self.q.buffer(size, usage, location, name)
    }

    fn release(&mut self, b: Buffer) {
        self.recorded = None;
        self.q.free(b);
    }

    /// What every launch of `plan` binds this run: its parameter block, then each argument
    /// (arena slots by `layout`; inputs, outputs and carried storage whole, so the ranges
    /// stay put while they grow within their buffers). `carried_in[i]`: the carry whose
    /// storage input `i` is; `n_in`: the number of inputs.
    fn bindings_of(
        &self,
        plan: &Plan,
        runs: Vec<usize>,
        layout: &ArenaLayout,
        carried_in: &[Option<usize>],
        n_in: usize,
    ) -> Result<Recording, RuntimeError> {
        let perr = |msg: String| RuntimeError::Plan {
            target: self.target.clone(),
            msg,
        };
        let arena = self.arena.as_ref().expect("allocated by execute").buf;
        let weights = self.weights.as_ref().map(|w| w.buf);
        let params = self
            .params
            .as_ref()
            .expect("allocated by execute")
            .device
            .buf;
        let mut bindings = Vec::with_capacity(plan.launches.len());
        for (n, launch) in plan.launches.iter().enumerate() {
            if launch.args.len() >= self.bindings as usize {
                return Err(perr(format!(
                    "launch {} has too many arguments",
                    launch.kernel
                )));
            }
            let mut b = Vec::with_capacity(launch.args.len() + 1);
            b.push(Binding {
                buf: params,
                offset: n as u64 * self.param_stride,
                range: self.param_stride,
            });
            for a in &launch.args {
                let (buf, offset, len) = match *a {
                    BufferRef::Slot(i) => (arena, layout.offsets[i], layout.sizes[i]),
                    BufferRef::Input(i) => match carried_in[i] {
                        Some(c) => (self.carried[c].buf, 0, self.carried[c].size),
                        None => (self.io[i].device.buf, 0, self.io[i].device.size),
                    },
                    BufferRef::Output(i) => {
                        let b = &self.io[n_in + i].device;
                        (b.buf, 0, b.size)
                    }
                    BufferRef::Weight { offset, len } => (
                        weights.ok_or_else(|| {
                            perr("a launch reads weights, but the artifact has none".into())
                        })?,
                        offset,
                        len,
                    ),
                };
                let range = len.max(BINDING_UNIT).next_multiple_of(BINDING_UNIT);
                if range > self.gpu.limits.max_storage_buffer_range as u64 {
                    return Err(self.q.err(
                        &format!("launch {}", launch.kernel),
                        format!(
                            "binds {range} bytes; {} allows {} per buffer binding",
                            self.gpu.name, self.gpu.limits.max_storage_buffer_range
                        ),
                    ));
                }
                b.push(Binding { buf, offset, range });
            }
            bindings.push(b);
        }
        Ok(Recording {
            runs,
            groups: Vec::new(),
            bindings,
        })
    }

    /// Makes the parameter buffer hold `launches` parameter blocks and indirect counts.
    fn ensure_params(&mut self, launches: usize) -> Result<(), RuntimeError> {
        let size = (launches.max(1) as u64) * (self.param_stride + INDIRECT_BYTES);
        if self.params.as_ref().is_some_and(|p| p.device.size >= size) {
            return Ok(());
        }
        if let Some(old) = self.params.take() {
            self.release(old.device);
            self.release(old.staging);
        }
        let usage = vk::BufferUsageFlags::STORAGE_BUFFER
            | vk::BufferUsageFlags::INDIRECT_BUFFER
            | vk::BufferUsageFlags::TRANSFER_DST;
        let device = self.buffer(size, usage, MemoryLocation::GpuOnly, "launch parameters")?;
        let staging = self.buffer(
            size,
            vk::BufferUsageFlags::TRANSFER_SRC,
            MemoryLocation::CpuToGpu,
            "launch parameters staging",
        )?;
        self.params = Some(Io { device, staging });
        Ok(())
    }

    /// Writes each launch's parameter block (`points`, then `dims`) and workgroup count for
    /// this run into the parameter staging buffer; returns each launch's size, `None` for a
    /// launch that does not run (zero workgroups).
    fn write_params(
        &mut self,
        plan: &Plan,
        env: &Bindings,
        dims: &[i64],
    ) -> Result<Vec<Option<DeviceLaunch>>, RuntimeError> {
        let perr = |msg: String| RuntimeError::Plan {
            target: self.target.clone(),
            msg,
        };
        let max_groups = self.gpu.limits.max_compute_work_group_count[0] as u64;
        let stride = self.param_stride as usize;
        let indirect_at = plan.launches.len() * stride;
        let p = self.params.as_mut().expect("allocated by ensure_params");
        let bytes = p.staging.alloc.mapped_slice_mut().ok_or_else(|| {
            vk_err(
                &self.target,
                "mapping launch parameters",
                "not host-visible",
            )
        })?;
        let mut sizes = Vec::with_capacity(plan.launches.len());
        for (n, l) in plan.launches.iter().enumerate() {
            let size = l.on_device(env, max_groups).map_err(perr)?;
            if let Some(size) = &size {
                check_threads(&size.blocks)
                    .map_err(|m| perr(format!("launch {}: {m}", l.kernel)))?;
            }
            let block = &mut bytes[n * stride..(n + 1) * stride];
            let points = size.map_or(0, |s| s.points as i64);
            block[..8].copy_from_slice(&points.to_le_bytes());
            for (d, v) in dims.iter().enumerate() {
                block[8 + 8 * d..16 + 8 * d].copy_from_slice(&v.to_le_bytes());
            }
            let groups = size.map_or(0, |s| s.block_count);
            let at = indirect_at + n * INDIRECT_BYTES as usize;
            for (k, g) in [groups, 1, 1].iter().enumerate() {
                bytes[at + 4 * k..at + 4 * k + 4].copy_from_slice(&g.to_le_bytes());
            }
            sizes.push(size);
        }
        Ok(sizes)
    }

    /// Records the launches of `plan` that run into `Queue::main` with `rec`'s bindings: an
    /// indirect dispatch each (its workgroup count from the parameter buffer), a
    /// compute-to-compute barrier before each that waits for a launch since the last barrier
    /// (`crate::hazards`: independent launches, such as a layer's Q, K and V projections, run
    /// together), a barrier for the transfers after the last, and timestamps around each if
    /// `timed`.
    fn record_dispatches(
        &mut self,
        plan: &Plan,
        rec: &Recording,
        timed: bool,
    ) -> Result<(), RuntimeError> {
        let dev = self.gpu.device.clone();
        let cmd = self.q.main;
        let params = self
            .params
            .as_ref()
            .expect("allocated by ensure_params")
            .device
            .buf;
        let indirect_at = plan.launches.len() as u64 * self.param_stride;
        let running: Vec<&Launch> = rec.runs.iter().map(|&n| &plan.launches[n]).collect();
        let barriers = hazards::barriers(&hazards::ordering(&running));
        if tracing() {
            eprintln!(
                "vulkan: recording {} dispatches (of the plan's {} launches, the ones that run) with {} barriers",
                running.len(),
                plan.launches.len(),
                barriers.iter().filter(|&&b| b).count()
            );
        }
        self.q.begin_buffer(cmd, false)?;
        for (k, (&n, needs_barrier)) in rec.runs.iter().zip(barriers).enumerate() {
            let (launch, binds) = (&plan.launches[n], &rec.bindings[n]);
            let pipeline =
                *self
                    .pipelines
                    .get(&launch.kernel)
                    .ok_or_else(|| RuntimeError::MissingKernel {
                        target: self.target.clone(),
                        kernel: launch.kernel.clone(),
                        msg: "not created when the code was loaded".into(),
                    })?;
            let infos: Vec<[vk::DescriptorBufferInfo; 1]> = binds
                .iter()
                .map(|b| {
                    [vk::DescriptorBufferInfo::default()
                        .buffer(b.buf)
                        .offset(b.offset)
                        .range(b.range)]
                })
                .collect();
            let writes: Vec<vk::WriteDescriptorSet> = infos
                .iter()
                .enumerate()
                .map(|(b, info)| {
                    vk::WriteDescriptorSet::default()
                        .dst_binding(b as u32)
                        .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                        .buffer_info(info)
                })
                .collect();
            // SAFETY: recording into our own command buffer; every buffer, pipeline and
            // layout lives until the recording is dropped (any release drops it first), and
            // each descriptor range lies inside its buffer.
            unsafe {
                if needs_barrier {
                    compute_barrier(&dev, cmd);
                }
                dev.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipeline);
                self.gpu.push.cmd_push_descriptor_set(
                    cmd,
                    vk::PipelineBindPoint::COMPUTE,
                    self.layout,
                    0,
                    &writes,
                );
                if let (true, Some((pool, _))) = (timed, self.q.queries) {
                    dev.cmd_write_timestamp(
                        cmd,
                        vk::PipelineStageFlags::TOP_OF_PIPE,
                        pool,
                        2 * n as u32,
                    );
                }
                match rec.groups.get(k) {
                    Some(&groups) => dev.cmd_dispatch(cmd, groups, 1, 1),
                    None => dev.cmd_dispatch_indirect(
                        cmd,
                        params,
                        indirect_at + n as u64 * INDIRECT_BYTES,
                    ),
                }
                if let (true, Some((pool, _))) = (timed, self.q.queries) {
                    dev.cmd_write_timestamp(
                        cmd,
                        vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                        pool,
                        2 * n as u32 + 1,
                    );
                }
            }
        }
        // After the last: the downloads and cache appends (`Queue::post`).
        // SAFETY: as above.
        unsafe {
            barrier(
                &dev,
                cmd,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::AccessFlags::SHADER_WRITE,
            )
        };
        self.q.end_buffer(cmd)
    }
}

/// `KILN_VULKAN_TRACE=1`: say what the driver spends time on (pipeline builds, recordings).
fn tracing() -> bool {
    std::env::var("KILN_VULKAN_TRACE").as_deref() == Ok("1")
}

/// Bytes of one launch's indirect workgroup count (`VkDispatchIndirectCommand`).
const INDIRECT_BYTES: u64 = 12;

/// Makes the writes of the dispatches before it visible to the dispatches after it, and only
/// to them: the workgroup counts and parameters the dispatches read were written before the
/// first (`Queue::cmd`), so no barrier between dispatches waits on indirect-command reads or
/// transfers, which would keep the driver from fetching the next dispatch early.
///
/// # Safety
/// `cmd` must be recording.
unsafe fn compute_barrier(dev: &ash::Device, cmd: vk::CommandBuffer) {
    let compute = vk::PipelineStageFlags::COMPUTE_SHADER;
    let read_write = vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE;
    memory_barrier(
        dev,
        cmd,
        (compute, vk::AccessFlags::SHADER_WRITE),
        (compute, read_write),
    );
}

/// Makes writes by `stage` visible to the compute shaders, indirect dispatches and transfers
/// that follow.
///
/// # Safety
/// `cmd` must be recording.
unsafe fn barrier(
    dev: &ash::Device,
    cmd: vk::CommandBuffer,
    stage: vk::PipelineStageFlags,
    access: vk::AccessFlags,
) {
    let stages = vk::PipelineStageFlags::COMPUTE_SHADER
        | vk::PipelineStageFlags::TRANSFER
        | vk::PipelineStageFlags::DRAW_INDIRECT;
    let reads = vk::AccessFlags::SHADER_READ
        | vk::AccessFlags::SHADER_WRITE
        | vk::AccessFlags::TRANSFER_READ
        | vk::AccessFlags::INDIRECT_COMMAND_READ;
    memory_barrier(dev, cmd, (stage, access), (stages, reads));
}

/// One global memory barrier: `src`'s accesses made visible to `dst`'s (stages, accesses).
///
/// # Safety
/// `cmd` must be recording.
unsafe fn memory_barrier(
    dev: &ash::Device,
    cmd: vk::CommandBuffer,
    src: (vk::PipelineStageFlags, vk::AccessFlags),
    dst: (vk::PipelineStageFlags, vk::AccessFlags),
) {
    let m = vk::MemoryBarrier::default()
        .src_access_mask(src.1)
        .dst_access_mask(dst.1);
    dev.cmd_pipeline_barrier(
        cmd,
        src.0,
        dst.0,
        vk::DependencyFlags::empty(),
        &[m],
        &[],
        &[],
    );
}

/// [`GpuBlocks::check`], and the workgroup size the SPIR-V modules declare.
/// The plan's block size against the workgroup size the modules declare (the shape itself
/// is checked by `Launch::on_device`).
fn check_threads(b: &GpuBlocks) -> Result<(), String> {
    if b.threads > MAX_MODULE_THREADS || !b.threads.is_power_of_two() {
        return Err(format!(
            "{} threads per block; the SPIR-V kernels take a power of two up to \
             {MAX_MODULE_THREADS}",
            b.threads
        ));
    }
    Ok(())
}

/// The largest workgroup size a module's kernel declares
/// (`kiln_compiler::kernel::gpu::BLOCK_THREADS`; the runtime does not depend on the
/// compiler, so the plan's value is checked against it). Vulkan guarantees 128 invocations
/// a workgroup; every GPU kiln has met allows 1024.
const MAX_MODULE_THREADS: u32 = 256;

impl Drop for VulkanExecutor {
    fn drop(&mut self) {
        let dev = self.gpu.device.clone();
        // SAFETY: after the device is idle nothing uses these objects; each is destroyed once.
        unsafe {
            let _ = dev.device_wait_idle();
            for (_, p) in self.pipelines.drain() {
                dev.destroy_pipeline(p, None);
            }
            dev.destroy_pipeline_cache(self.cache, None);
            dev.destroy_pipeline_layout(self.layout, None);
            dev.destroy_descriptor_set_layout(self.set_layout, None);
            dev.destroy_shader_module(self.module, None);
        }
        let mut buffers: Vec<Buffer> = self
            .weights
            .take()
            .into_iter()
            .chain(self.arena.take())
            .collect();
        for io in std::mem::take(&mut self.io)
            .into_iter()
            .chain(self.params.take())
        {
            buffers.push(io.device);
            buffers.push(io.staging);
        }
        buffers.append(&mut self.carried);
        for b in buffers {
            self.q.free(b);
        }
    }
}
