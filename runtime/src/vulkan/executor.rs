//! Executing a launch plan through Vulkan: one shader module per variant (every kernel an
//! entry point), one compute pipeline per kernel, weights uploaded once through a staging
//! buffer, one device arena laid out by the plan, and one command buffer per run that
//! uploads the inputs, dispatches every launch and downloads the outputs, waited on with
//! a fence.
//!
//! Bindings follow the SPIR-V ABI of `kiln-codegen` (`spirv/mod.rs`): set 0, binding `i` =
//! kernel argument `i` as a byte range of a buffer, pushed per dispatch (push
//! descriptors, so nothing is pooled or freed); push constants = the point count and the
//! plan's symbol values as i64s.

use super::device::{probe, Gpu};
use super::queue::{vk_err, Buffer, Queue};
use crate::carry::{self, CarriedRun};
use crate::cpu::executor::LaunchTiming;
use crate::device::DeviceExecutor;
use crate::error::RuntimeError;
use crate::plan::{BufferRef, GpuBlocks, HostIo, Plan};
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
    push_bytes: u32,
    weights: Option<Buffer>,
    arena: Option<Buffer>,
    io: Vec<Io>,
    /// Storage of the session's carried inputs (see `crate::carry`), by carry index. A
    /// run's new rows land in the output's own buffer and are copied after the held ones
    /// (a copy has no offset alignment to meet; a binding at any row would).
    carried: Vec<Buffer>,
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
        let push_bytes = 8 + 8 * plan.symbols.len().max(1) as u32;
        if push_bytes > limits.max_push_constants_size {
            return Err(vk_err(
                target,
                "device limits",
                format!(
                    "{} symbols need {push_bytes} bytes of push constants; {} allows {}",
                    plan.symbols.len(),
                    gpu.name,
                    limits.max_push_constants_size
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
        let bindings = plan
            .launches
            .iter()
            .map(|l| l.args.len())
            .max()
            .unwrap_or(0)
            .max(1) as u32;
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
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(push_bytes)];
        let set_layouts = [set_layout];
        let layout = unsafe {
            dev.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default()
                    .set_layouts(&set_layouts)
                    .push_constant_ranges(&ranges),
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
        for l in &plan.launches {
            if pipelines.contains_key(&l.kernel) {
                continue;
            }
            let name = CString::new(format!("kiln_{}", l.kernel))
                .map_err(|_| code_err(format!("kernel name {:?} has a NUL byte", l.kernel)))?;
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(&name);
            let info = [vk::ComputePipelineCreateInfo::default()
                .stage(stage)
                .layout(layout)];
            let p = unsafe { dev.create_compute_pipelines(cache, &info, None) }.map_err(
                |(_, err)| RuntimeError::MissingKernel {
                    target: target.into(),
                    kernel: l.kernel.clone(),
                    msg: format!("the driver could not build its pipeline: {err}"),
                },
            )?;
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
            push_bytes,
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
            self.q.free(old);
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
            let bigger = self
                .q
                .buffer(cap, usage, MemoryLocation::GpuOnly, "carried input")?;
            match self.carried.get_mut(i) {
                Some(old) => {
                    let old = std::mem::replace(old, bigger);
                    let held = (run.held as u64).min(size);
                    if held > 0 {
                        moves.push((old, i, held));
                    } else {
                        self.q.free(old);
                    }
                }
                None => self.carried.push(bigger),
            }
        }
        Ok(moves)
    }

    /// Makes sure `io[i]` holds at least `size` bytes.
    fn ensure_io(&mut self, i: usize, size: u64, input: bool) -> Result<(), RuntimeError> {
        let size = size.max(4).next_multiple_of(4);
        if self.io.get(i).is_some_and(|b| b.device.size >= size) {
            return Ok(());
        }
        if i < self.io.len() {
            let old = self.io.remove(i);
            self.q.free(old.device);
            self.q.free(old.staging);
        }
        let usage = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
        let device = self.q.buffer(
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
        let staging = self
            .q
            .buffer(size, usage, location, "input/output staging")?;
        self.io.insert(i.min(self.io.len()), Io { device, staging });
        Ok(())
    }
}

impl DeviceExecutor for VulkanExecutor {
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
        let layout = plan.arena_layout(env).map_err(perr)?;
        let dims = plan.dims_array(env).map_err(perr)?;
        let arena_size = layout.total.max(PLAN_ALIGN);
        if self.arena.as_ref().is_none_or(|a| a.size < arena_size) {
            if let Some(old) = self.arena.take() {
                self.q.free(old);
            }
            let a = self.q.buffer(
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
        // storage (looked up once here, not per binding of every dispatch).
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
        for (i, data) in io.inputs.iter().enumerate() {
            let target = &self.target;
            let slice = self.io[i]
                .staging
                .alloc
                .mapped_slice_mut()
                .ok_or_else(|| vk_err(target, "mapping an input", "not host-visible"))?;
            slice[..data.len()].copy_from_slice(data);
        }
        let max_groups = self.gpu.limits.max_compute_work_group_count[0] as u64;
        let mut launches = Vec::new();
        for l in &plan.launches {
            if let Some(size) = l.on_device(env, max_groups).map_err(perr)? {
                launches.push((l, size));
            }
        }
        let timed = profile && self.gpu.timestamps;
        if timed {
            self.q.ensure_queries(2 * launches.len() as u32)?;
        }

        let dev = self.gpu.device.clone();
        let cmd = self.q.cmd;
        self.q.begin()?;
        // SAFETY (every command below): recording into our own command buffer; every
        // buffer, pipeline and layout is live until the run has been waited for, and each
        // descriptor range lies inside its buffer (sizes from the same plan and bindings).
        unsafe {
            for (old, new, held) in &moves {
                let r = [vk::BufferCopy::default().size(*held)];
                dev.cmd_copy_buffer(cmd, old.buf, self.carried[*new].buf, &r);
            }
            for (i, data) in io.inputs.iter().enumerate() {
                if !data.is_empty() {
                    let r = [vk::BufferCopy::default().size(data.len() as u64)];
                    dev.cmd_copy_buffer(cmd, self.io[i].staging.buf, self.io[i].device.buf, &r);
                }
            }
            barrier(
                &dev,
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            );
            if let (true, Some((pool, n))) = (timed, self.q.queries) {
                dev.cmd_reset_query_pool(cmd, pool, 0, n);
            }
            let arena = self.arena.as_ref().expect("allocated above").buf;
            for (n, (launch, size)) in launches.iter().enumerate() {
                let pipeline = *self.pipelines.get(&launch.kernel).ok_or_else(|| {
                    RuntimeError::MissingKernel {
                        target: target.clone(),
                        kernel: launch.kernel.clone(),
                        msg: "not created when the code was loaded".into(),
                    }
                })?;
                check_threads(&size.blocks)
                    .map_err(|m| perr(format!("launch {}: {m}", launch.kernel)))?;
                if launch.args.len() > self.bindings as usize {
                    return Err(perr(format!(
                        "launch {} has too many arguments",
                        launch.kernel
                    )));
                }
                let mut infos = Vec::with_capacity(launch.args.len());
                for a in &launch.args {
                    let (buf, offset, len) = match *a {
                        BufferRef::Slot(i) => (arena, layout.offsets[i], layout.sizes[i]),
                        BufferRef::Input(i) => match carried_in[i] {
                            Some(c) => (self.carried[c].buf, 0, io.carried[c].held as u64),
                            None => (self.io[i].device.buf, 0, io.inputs[i].len() as u64),
                        },
                        BufferRef::Output(i) => (self.io[n_in + i].device.buf, 0, out_len[i]),
                        BufferRef::Weight { offset, len } => (
                            self.weights
                                .as_ref()
                                .ok_or_else(|| {
                                    perr("a launch reads weights, but the artifact has none".into())
                                })?
                                .buf,
                            offset,
                            len,
                        ),
                    };
                    let range = len.max(4).next_multiple_of(4);
                    if range > self.gpu.limits.max_storage_buffer_range as u64 {
                        return Err(self.q.err(
                            &format!("launch {}", launch.kernel),
                            format!(
                                "binds {range} bytes; {} allows {} per buffer binding",
                                self.gpu.name, self.gpu.limits.max_storage_buffer_range
                            ),
                        ));
                    }
                    infos.push([vk::DescriptorBufferInfo::default()
                        .buffer(buf)
                        .offset(offset)
                        .range(range)]);
                }
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
                let mut push = Vec::with_capacity(self.push_bytes as usize);
                push.extend_from_slice(&(size.points as i64).to_le_bytes());
                for d in &dims {
                    push.extend_from_slice(&d.to_le_bytes());
                }
                push.resize(self.push_bytes as usize, 0);
                dev.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipeline);
                self.gpu.push.cmd_push_descriptor_set(
                    cmd,
                    vk::PipelineBindPoint::COMPUTE,
                    self.layout,
                    0,
                    &writes,
                );
                dev.cmd_push_constants(cmd, self.layout, vk::ShaderStageFlags::COMPUTE, 0, &push);
                let groups = size.block_count;
                if let (true, Some((pool, _))) = (timed, self.q.queries) {
                    dev.cmd_write_timestamp(
                        cmd,
                        vk::PipelineStageFlags::TOP_OF_PIPE,
                        pool,
                        2 * n as u32,
                    );
                }
                dev.cmd_dispatch(cmd, groups, 1, 1);
                if let (true, Some((pool, _))) = (timed, self.q.queries) {
                    dev.cmd_write_timestamp(
                        cmd,
                        vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                        pool,
                        2 * n as u32 + 1,
                    );
                }
                barrier(
                    &dev,
                    cmd,
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::AccessFlags::SHADER_WRITE,
                );
            }
            for (i, out) in io.outputs.iter().enumerate() {
                if !out.is_empty() {
                    let r = [vk::BufferCopy::default().size(out.len() as u64)];
                    let b = &self.io[n_in + i];
                    dev.cmd_copy_buffer(cmd, b.device.buf, b.staging.buf, &r);
                }
            }
            for (c, run) in io.carried.iter().enumerate() {
                if run.appended > 0 {
                    let r = [vk::BufferCopy::default()
                        .dst_offset(run.held as u64)
                        .size(run.appended as u64)];
                    let from = self.io[n_in + run.output].device.buf;
                    dev.cmd_copy_buffer(cmd, from, self.carried[c].buf, &r);
                }
            }
            // The next run's kernels read the rows just appended.
            barrier(
                &dev,
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            );
            let host = vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(vk::AccessFlags::HOST_READ);
            dev.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[host],
                &[],
                &[],
            );
        }
        let ran = self.q.submit_and_wait();
        for (old, _, _) in moves {
            self.q.free(old);
        }
        ran?;
        for (i, out) in io.outputs.iter_mut().enumerate() {
            let n = out.len();
            let slice = self.io[n_in + i]
                .staging
                .alloc
                .mapped_slice()
                .ok_or_else(|| self.q.err("mapping an output", "not host-visible"))?;
            out.copy_from_slice(&slice[..n]);
        }
        let mut timings = Vec::new();
        if let (true, Some((pool, _))) = (timed, self.q.queries) {
            let mut stamps = vec![0u64; 2 * launches.len()];
            // SAFETY: the queries were written by the run just waited for.
            unsafe {
                dev.get_query_pool_results(pool, 0, &mut stamps, vk::QueryResultFlags::TYPE_64)
            }
            .map_err(|e| self.q.err("reading timestamps", e))?;
            let period = self.gpu.limits.timestamp_period as f64;
            for (n, (launch, size)) in launches.iter().enumerate() {
                let ticks = stamps[2 * n + 1].saturating_sub(stamps[2 * n]);
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

/// Makes writes by `stage` visible to the compute shaders and transfers that follow.
///
/// # Safety
/// `cmd` must be recording.
unsafe fn barrier(
    dev: &ash::Device,
    cmd: vk::CommandBuffer,
    stage: vk::PipelineStageFlags,
    access: vk::AccessFlags,
) {
    let m = vk::MemoryBarrier::default()
        .src_access_mask(access)
        .dst_access_mask(
            vk::AccessFlags::SHADER_READ
                | vk::AccessFlags::SHADER_WRITE
                | vk::AccessFlags::TRANSFER_READ,
        );
    dev.cmd_pipeline_barrier(
        cmd,
        stage,
        vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
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
    if b.threads != MODULE_THREADS {
        return Err(format!(
            "{} threads per block; the SPIR-V modules are built for {MODULE_THREADS}",
            b.threads
        ));
    }
    Ok(())
}

/// The workgroup size every module declares (`kiln_compiler::kernel::gpu::BLOCK_THREADS`;
/// the runtime does not depend on the compiler, so the plan's value is checked against it).
const MODULE_THREADS: u32 = 256;

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
        for io in std::mem::take(&mut self.io) {
            buffers.push(io.device);
            buffers.push(io.staging);
        }
        buffers.append(&mut self.carried);
        for b in buffers {
            self.q.free(b);
        }
    }
}
