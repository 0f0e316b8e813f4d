//! Executing a launch plan through HIP: the variant's code object loaded from memory,
//! weights uploaded once, one device arena laid out by the plan (as the CUDA executor's),
//! launches on the null stream with the argument block of `args.rs`.
//!
//! Written to the HIP API and checked here only as far as a machine without an AMD GPU
//! allows (the library's absence is a reason, not a crash); it has not run on AMD hardware.

use super::api::{DevicePtr, Function, Hip, Module};
use crate::buffer_offsets::OffsetTables;
use crate::carry::{self, CarriedRun};
use crate::cpu::executor::LaunchTiming;
use crate::device::DeviceExecutor;
use crate::error::RuntimeError;
use crate::plan::{HostIo, Plan};
use kiln_ir::Bindings;
use std::collections::HashMap;
use std::time::Duration;

/// A device allocation (freed by the executor that made it).
struct DeviceBuf {
    ptr: DevicePtr,
    len: usize,
}

pub struct HipExecutor {
    target: String,
    device: String,
    hip: Hip,
    module: Module,
    functions: HashMap<String, Function>,
    weights: Option<DeviceBuf>,
    /// Buffers reused from run to run while large enough: the arena ([`ARENA`]), the symbol
    /// values ([`DIMS`]), then the device copies of the inputs and outputs (from [`IO`]).
    scratch: Vec<Option<DeviceBuf>>,
    /// Storage of the session's carried inputs (see `crate::carry`), by carry index.
    carried: Vec<DeviceBuf>,
    /// Whether the kernels take the address of their buffers' offsets where older ones
    /// took a point count (`Variant::buffer_offsets`). Launches here are not replayed, so
    /// every offset is zero and carried outputs are passed at their own addresses.
    buffer_offsets: bool,
}

const ARENA: usize = 0;
const DIMS: usize = 1;
const IO: usize = 2;

impl std::fmt::Debug for HipExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HipExecutor")
            .field("target", &self.target)
            .field("device", &self.device)
            .finish()
    }
}

impl HipExecutor {
    /// Loads `code` (the variant's code object), resolves `kernels` and uploads `weights`.
    pub fn new(
        target: &str,
        code: &[u8],
        kernels: &[String],
        weights: Option<&[u8]>,
        buffer_offsets: bool,
    ) -> Result<HipExecutor, RuntimeError> {
        let dev = |msg: String| RuntimeError::Device {
            target: target.into(),
            msg,
        };
        let hip = Hip::open(&super::api::LIBRARY_NAMES).map_err(dev)?;
        let device = hip.device_name().map_err(dev)?;
        let module = hip
            .load_module(code)
            .map_err(|msg| RuntimeError::CodeLoad {
                target: target.into(),
                msg,
            })?;
        let mut exec = HipExecutor {
            target: target.into(),
            device,
            hip,
            module,
            functions: HashMap::new(),
            weights: None,
            scratch: Vec::new(),
            carried: Vec::new(),
            buffer_offsets,
        };
        for k in kernels {
            let f = exec
                .hip
                .function(module, &format!("kiln_{k}"))
                .map_err(|msg| RuntimeError::MissingKernel {
                    target: target.into(),
                    kernel: k.clone(),
                    msg,
                })?;
            exec.functions.insert(k.clone(), f);
        }
        if let Some(w) = weights.filter(|w| !w.is_empty()) {
            let buf = exec.alloc(w.len()).map_err(dev)?;
            // SAFETY: `buf` holds `w.len()` bytes.
            unsafe { exec.hip.upload(buf.ptr, w) }.map_err(dev)?;
            exec.weights = Some(buf);
        }
        Ok(exec)
    }

    fn alloc(&self, len: usize) -> Result<DeviceBuf, String> {
        Ok(DeviceBuf {
            ptr: self.hip.alloc_zeroed(len)?,
            len,
        })
    }

    /// Scratch buffer `slot`, holding at least `len` bytes (reallocated when smaller).
    fn ensure(&mut self, slot: usize, len: usize) -> Result<DevicePtr, String> {
        if self.scratch.len() <= slot {
            self.scratch.resize_with(slot + 1, || None);
        }
        if self.scratch[slot].as_ref().is_none_or(|b| b.len < len) {
            let buf = self.alloc(len)?;
            if let Some(old) = self.scratch[slot].replace(buf) {
                self.hip.free(old.ptr);
            }
        }
        Ok(self.scratch[slot].as_ref().expect("allocated above").ptr)
    }

    /// Grows each carried input's storage (keeping the rows held) until it fits what the
    /// run appends.
    fn grow_carried(&mut self, runs: &[CarriedRun]) -> Result<(), String> {
        for old in self.carried.drain(runs.len().min(self.carried.len())..) {
            self.hip.free(old.ptr);
        }
        for (i, run) in runs.iter().enumerate() {
            let len = self.carried.get(i).map_or(0, |c| c.len);
            if len >= run.needed() {
                continue;
            }
            let bigger = self.alloc(carry::grown(len, run.needed()))?;
            match self.carried.get_mut(i) {
                Some(old) => {
                    let held = run.held.min(len);
                    // SAFETY: both allocations hold at least `held` bytes.
                    if let Err(e) = unsafe { self.hip.copy(bigger.ptr, old.ptr, held) } {
                        // The held rows stay where they are; only the new storage goes.
                        self.hip.free(bigger.ptr);
                        return Err(e);
                    }
                    let old = std::mem::replace(old, bigger);
                    self.hip.free(old.ptr);
                }
                None => self.carried.push(bigger),
            }
        }
        Ok(())
    }
}

impl DeviceExecutor for HipExecutor {
    fn device_name(&self) -> &str {
        &self.device
    }

    /// Runs `plan` under `env`: uploads inputs, launches every kernel, downloads outputs.
    /// Timings (with `profile`) come from events around each launch.
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
        let derr = |msg: String| RuntimeError::Device {
            target: target.clone(),
            msg,
        };
        let layout = plan.arena_layout(env).map_err(perr)?;
        let total = usize::try_from(layout.total)
            .map_err(|_| perr("arena size exceeds the address space".into()))?;
        let arena = self.ensure(ARENA, total).map_err(derr)?.addr();
        let dims = plan.dims_array(env).map_err(perr)?;
        let mut dims_bytes: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        let tables = self.buffer_offsets.then(|| OffsetTables::new(plan, &[]));
        if let Some(t) = &tables {
            t.write(|_| 0, &mut dims_bytes);
        }
        let dims_ptr = self.ensure(DIMS, dims_bytes.len()).map_err(derr)?;
        // SAFETY: the dims buffer holds at least `dims_bytes.len()` bytes.
        unsafe { self.hip.upload(dims_ptr, &dims_bytes) }.map_err(derr)?;
        let n_in = io.inputs.len();
        let mut io_addrs = Vec::new();
        for (i, n) in io
            .inputs
            .iter()
            .map(|b| b.len())
            .chain(io.outputs.iter().map(|b| b.len()))
            .enumerate()
        {
            let p = self.ensure(IO + i, n).map_err(derr)?;
            if let Some(data) = io.inputs.get(i).filter(|d| !d.is_empty()) {
                // SAFETY: `p` holds at least `data.len()` bytes.
                unsafe { self.hip.upload(p, data) }.map_err(derr)?;
            }
            io_addrs.push(p.addr());
        }
        self.grow_carried(io.carried).map_err(derr)?;
        for (run, store) in io.carried.iter().zip(&self.carried) {
            io_addrs[run.input] = store.ptr.addr();
            io_addrs[n_in + run.output] = store.ptr.addr() + run.held as u64;
        }
        let weights = self.weights.as_ref().map_or(0, |w| w.ptr.addr());

        let mut events = Vec::new();
        for (index, launch) in plan.launches.iter().enumerate() {
            let Some(size) = launch.on_device(env, i32::MAX as u64).map_err(perr)? else {
                continue;
            };
            let f =
                *self
                    .functions
                    .get(&launch.kernel)
                    .ok_or_else(|| RuntimeError::MissingKernel {
                        target: target.clone(),
                        kernel: launch.kernel.clone(),
                        msg: "not resolved when the code was loaded".into(),
                    })?;
            let buffers: Vec<u64> = launch
                .args
                .iter()
                .map(|a| a.address(arena, &layout.offsets, &io_addrs, n_in, weights))
                .collect();
            let points = size.points as i64;
            let last = match &tables {
                // The launch's entries (zeros) after the symbols.
                Some(t) => (dims_ptr.addr() + 8 * (dims.len() + t.start(index)) as u64) as i64,
                None => points,
            };
            let mut block = super::args::pack(&buffers, dims_ptr.addr(), last);
            let (grid, threads) = (size.block_count, size.blocks.threads);
            let start = profile
                .then(|| self.hip.record())
                .transpose()
                .map_err(derr)?;
            // SAFETY: the block matches the kernel ABI (one device address per buffer, the
            // dims address, the point count); every address lies in an allocation sized
            // by the same plan and bindings the kernel indexes with.
            let shared = size.blocks.shared_bytes;
            unsafe { self.hip.launch(f, grid, threads, shared, &mut block) }
                .map_err(|m| derr(format!("launching {}: {m}", launch.kernel)))?;
            if let Some(start) = start {
                let end = self.hip.record().map_err(derr)?;
                events.push((launch.kernel.clone(), points as u64, start, end));
            }
        }
        self.hip
            .synchronize()
            .map_err(|m| derr(format!("running the kernels: {m}")))?;
        for (i, out) in io.outputs.iter_mut().enumerate() {
            if !out.is_empty() {
                let src = self.scratch[IO + n_in + i]
                    .as_ref()
                    .expect("sized above")
                    .ptr;
                // SAFETY: the output's device copy was sized to at least `out.len()`.
                unsafe { self.hip.download(out, src) }.map_err(derr)?;
            }
        }
        let mut timings = Vec::with_capacity(events.len());
        for (kernel, grid_points, start, end) in events {
            let ms = self.hip.elapsed_ms(start, end).map_err(derr)?;
            timings.push(LaunchTiming {
                kernel,
                grid_points,
                duration: Duration::from_secs_f64(ms as f64 / 1e3),
            });
        }
        Ok(timings)
    }
}

impl Drop for HipExecutor {
    fn drop(&mut self) {
        let mut bufs: Vec<DeviceBuf> = self.scratch.drain(..).flatten().collect();
        bufs.append(&mut self.carried);
        bufs.extend(self.weights.take());
        for b in bufs {
            self.hip.free(b.ptr);
        }
        self.hip.unload(self.module);
    }
}
