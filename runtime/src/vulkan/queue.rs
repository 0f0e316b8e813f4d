//! A queue to submit work on, with what every submission needs: a command buffer, a fence,
//! a memory allocator and timestamp queries. The executor and the bandwidth probe share it.

use super::device::Gpu;
use crate::error::RuntimeError;
use ash::vk;
use gpu_allocator::vulkan::{
    Allocation, AllocationCreateDesc, AllocationScheme, Allocator, AllocatorCreateDesc,
};
use gpu_allocator::MemoryLocation;
use std::sync::Arc;

/// Bindings cover whole units of this many bytes, and every buffer ends on one: kernels may
/// read a binding as 4-word vectors (`codegen::spirv::kernel::views`).
pub const BINDING_UNIT: u64 = 16;

pub struct Buffer {
    pub buf: vk::Buffer,
    pub alloc: Allocation,
    pub size: u64,
}

pub struct Queue {
    pub target: String,
    pub gpu: Arc<Gpu>,
    alloc: Option<Allocator>,
    pool: vk::CommandPool,
    /// One-off work, and each run's uploads (recorded anew every run).
    pub cmd: vk::CommandBuffer,
    /// A run's dispatches, recorded once and replayed while their bindings stay the same.
    pub main: vk::CommandBuffer,
    /// Each run's downloads and cache appends (recorded anew every run).
    pub post: vk::CommandBuffer,
    fence: vk::Fence,
    pub queries: Option<(vk::QueryPool, u32)>,
}

pub fn vk_err(target: &str, what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Device {
        target: target.into(),
        msg: format!("{what}: {e}"),
    }
}

impl Queue {
    pub fn new(gpu: Arc<Gpu>, target: &str) -> Result<Queue, RuntimeError> {
        let dev = &gpu.device;
        let e = |what: &str, err: vk::Result| vk_err(target, what, err);
        // SAFETY: the create-info structs outlive each call; `pool` was created from `dev`.
        let pool = unsafe {
            dev.create_command_pool(
                &vk::CommandPoolCreateInfo::default()
                    .queue_family_index(gpu.queue_family)
                    .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
                None,
            )
        }
        .map_err(|err| e("creating the command pool", err))?;
        let cmds = unsafe {
            dev.allocate_command_buffers(
                &vk::CommandBufferAllocateInfo::default()
                    .command_pool(pool)
                    .level(vk::CommandBufferLevel::PRIMARY)
                    .command_buffer_count(3),
            )
        }
        .map_err(|err| e("allocating command buffers", err))?;
        let fence = unsafe { dev.create_fence(&vk::FenceCreateInfo::default(), None) }
            .map_err(|err| e("creating a fence", err))?;
        let alloc = Allocator::new(&AllocatorCreateDesc {
            instance: gpu.instance.clone(),
            device: gpu.device.clone(),
            physical_device: gpu.physical,
            debug_settings: Default::default(),
            buffer_device_address: false,
            allocation_sizes: Default::default(),
        })
        .map_err(|err| vk_err(target, "creating the memory allocator", err))?;
        Ok(Queue {
            target: target.into(),
            gpu,
            alloc: Some(alloc),
            pool,
            cmd: cmds[0],
            main: cmds[1],
            post: cmds[2],
            fence,
            queries: None,
        })
    }

    pub fn err(&self, what: &str, e: impl std::fmt::Display) -> RuntimeError {
        vk_err(&self.target, what, e)
    }

    pub fn buffer(
        &mut self,
        size: u64,
        usage: vk::BufferUsageFlags,
        location: MemoryLocation,
        name: &str,
    ) -> Result<Buffer, RuntimeError> {
        let size = size.max(BINDING_UNIT).next_multiple_of(BINDING_UNIT);
        let dev = &self.gpu.device;
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: `info` outlives the call.
        let buf = unsafe { dev.create_buffer(&info, None) }
            .map_err(|e| vk_err(&self.target, &format!("creating the {name} buffer"), e))?;
        // SAFETY: `buf` was just created from `dev`.
        let requirements = unsafe { dev.get_buffer_memory_requirements(buf) };
        let allocator = self.alloc.as_mut().expect("the allocator lives until drop");
        let alloc = allocator
            .allocate(&AllocationCreateDesc {
                name,
                requirements,
                location,
                linear: true,
                allocation_scheme: AllocationScheme::GpuAllocatorManaged,
            })
            .map_err(|e| {
                // SAFETY: `buf` is unused.
                unsafe { dev.destroy_buffer(buf, None) };
                vk_err(
                    &self.target,
                    &format!("allocating {size} bytes for the {name} buffer"),
                    e,
                )
            })?;
        // SAFETY: the allocation satisfies `requirements` and is bound once.
        unsafe { dev.bind_buffer_memory(buf, alloc.memory(), alloc.offset()) }
            .map_err(|e| vk_err(&self.target, "binding buffer memory", e))?;
        Ok(Buffer { buf, alloc, size })
    }

    pub fn free(&mut self, b: Buffer) {
        if let Some(a) = self.alloc.as_mut() {
            let _ = a.free(b.alloc);
        }
        // SAFETY: the queue is idle between runs, so no command uses `b.buf`.
        unsafe { self.gpu.device.destroy_buffer(b.buf, None) };
    }

    /// Starts recording `self.cmd` for one submission.
    pub fn begin(&self) -> Result<(), RuntimeError> {
        self.begin_buffer(self.cmd, true)
    }

    /// Starts recording `cmd`, which is submitted once or (`once` false) replayed.
    pub fn begin_buffer(&self, cmd: vk::CommandBuffer, once: bool) -> Result<(), RuntimeError> {
        let dev = &self.gpu.device;
        let flags = if once {
            vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT
        } else {
            vk::CommandBufferUsageFlags::empty()
        };
        // SAFETY: the command buffer is not in use (every submit is waited for).
        unsafe {
            dev.reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty())
                .map_err(|e| self.err("resetting a command buffer", e))?;
            dev.begin_command_buffer(cmd, &vk::CommandBufferBeginInfo::default().flags(flags))
                .map_err(|e| self.err("recording commands", e))
        }
    }

    /// Ends recording `cmd`.
    pub fn end_buffer(&self, cmd: vk::CommandBuffer) -> Result<(), RuntimeError> {
        // SAFETY: `cmd` is recording.
        unsafe { self.gpu.device.end_command_buffer(cmd) }
            .map_err(|e| self.err("recording commands", e))
    }

    /// Ends `self.cmd`, submits it and waits for it.
    pub fn submit_and_wait(&self) -> Result<(), RuntimeError> {
        self.end_buffer(self.cmd)?;
        self.submit_all(&[self.cmd])
    }

    /// Submits recorded command buffers in order, as one batch, and waits for them.
    pub fn submit_all(&self, cmds: &[vk::CommandBuffer]) -> Result<(), RuntimeError> {
        let dev = &self.gpu.device;
        let submit = [vk::SubmitInfo::default().command_buffers(cmds)];
        // SAFETY: every command buffer is fully recorded; the fence is unsignalled.
        unsafe {
            dev.queue_submit(self.gpu.queue, &submit, self.fence)
                .map_err(|e| self.err("submitting commands", e))?;
            let waited = dev.wait_for_fences(&[self.fence], true, u64::MAX);
            dev.reset_fences(&[self.fence])
                .map_err(|e| self.err("resetting a fence", e))?;
            waited.map_err(|e| self.err("running the kernels", e))
        }
    }

    pub fn ensure_queries(&mut self, n: u32) -> Result<(), RuntimeError> {
        if self.queries.is_some_and(|(_, have)| have >= n) {
            return Ok(());
        }
        let dev = &self.gpu.device;
        // SAFETY: no submitted command uses the old pool (every run is waited for).
        unsafe {
            if let Some((old, _)) = self.queries.take() {
                dev.destroy_query_pool(old, None);
            }
            let pool = dev
                .create_query_pool(
                    &vk::QueryPoolCreateInfo::default()
                        .query_type(vk::QueryType::TIMESTAMP)
                        .query_count(n.max(2)),
                    None,
                )
                .map_err(|e| self.err("creating timestamp queries", e))?;
            self.queries = Some((pool, n.max(2)));
        }
        Ok(())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let dev = &self.gpu.device;
        // SAFETY: after the device is idle nothing uses these objects; each is destroyed once.
        unsafe {
            let _ = dev.device_wait_idle();
            dev.destroy_fence(self.fence, None);
            dev.destroy_command_pool(self.pool, None);
            if let Some((q, _)) = self.queries.take() {
                dev.destroy_query_pool(q, None);
            }
        }
        self.alloc = None;
    }
}

/// The device's buffer-to-buffer copy bandwidth (bytes read plus bytes written per
/// second) over `bytes`, best of several copies, timed by device timestamps where the
/// queue has them (else by the host around each submission).
pub fn copy_bandwidth(bytes: u64) -> Result<f64, String> {
    let gpu = super::device::probe()?;
    let mut q = Queue::new(gpu.clone(), "vulkan").map_err(|e| e.to_string())?;
    let usage = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
    let src = q
        .buffer(bytes, usage, MemoryLocation::GpuOnly, "copy source")
        .map_err(|e| e.to_string())?;
    let dst = q
        .buffer(bytes, usage, MemoryLocation::GpuOnly, "copy destination")
        .map_err(|e| e.to_string())?;
    let timed = gpu.timestamps;
    if timed {
        q.ensure_queries(2).map_err(|e| e.to_string())?;
    }
    let dev = gpu.device.clone();
    let mut best = f64::MAX;
    for _ in 0..6 {
        q.begin().map_err(|e| e.to_string())?;
        let region = [vk::BufferCopy::default().size(bytes)];
        // SAFETY: recording into the queue's command buffer; both buffers are live.
        unsafe {
            if let Some((pool, _)) = q.queries.filter(|_| timed) {
                dev.cmd_reset_query_pool(q.cmd, pool, 0, 2);
                dev.cmd_write_timestamp(q.cmd, vk::PipelineStageFlags::TOP_OF_PIPE, pool, 0);
            }
            dev.cmd_copy_buffer(q.cmd, src.buf, dst.buf, &region);
            if let Some((pool, _)) = q.queries.filter(|_| timed) {
                dev.cmd_write_timestamp(q.cmd, vk::PipelineStageFlags::BOTTOM_OF_PIPE, pool, 1);
            }
        }
        let t0 = std::time::Instant::now();
        q.submit_and_wait().map_err(|e| e.to_string())?;
        let mut secs = t0.elapsed().as_secs_f64();
        if let Some((pool, _)) = q.queries.filter(|_| timed) {
            let mut stamps = [0u64; 2];
            // SAFETY: both queries were written by the submission just waited for.
            unsafe {
                dev.get_query_pool_results(pool, 0, &mut stamps, vk::QueryResultFlags::TYPE_64)
            }
            .map_err(|e| format!("reading timestamps: {e}"))?;
            secs = stamps[1].saturating_sub(stamps[0]) as f64 * gpu.limits.timestamp_period as f64
                / 1e9;
        }
        if secs > 0.0 {
            best = best.min(secs);
        }
    }
    q.free(src);
    q.free(dst);
    Ok(2.0 * bytes as f64 / best)
}
