//! Finding the GPU: once per process, without panicking when there is no driver.

use super::capability::Capability;
use cudarc::driver::CudaContext;
use std::sync::{Arc, OnceLock};

#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    pub capability: Capability,
    pub context: Arc<CudaContext>,
    /// The most shared memory a block may have once its kernel opts in (227 KiB on an H100,
    /// 99 KiB on consumer GPUs since sm_86); without opting in, 48 KiB.
    pub shared_optin: u32,
}

/// Device 0, or why there is none (no driver library, no device, a driver error).
pub fn probe() -> Result<Device, String> {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    DEVICE.get_or_init(open).clone()
}

fn open() -> Result<Device, String> {
    // SAFETY: only looks for the library; loads no symbol.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("needs NVIDIA's driver (libcuda.so), which this machine lacks".into());
    }
    // cudarc panics when the driver lacks a symbol it expects (a driver older than CUDA
    // 12.8); that is an unusable driver, not a crash.
    let opened = std::panic::catch_unwind(|| -> Result<Device, String> {
        let n = CudaContext::device_count().map_err(|e| format!("CUDA driver: {e}"))?;
        if n < 1 {
            return Err("finds no CUDA device (the driver reports none)".into());
        }
        let context = CudaContext::new(0).map_err(|e| format!("CUDA device 0: {e}"))?;
        // SAFETY: kiln runs every allocation, copy and launch of a context on its default
        // stream, in order, so the events cudarc would record around each use of a buffer
        // (to order several streams) order nothing, and each costs a driver call per use:
        // a decode step's uploads, downloads and launch parameters made a score of them.
        unsafe { context.disable_event_tracking() };
        let (major, minor) = context
            .compute_capability()
            .map_err(|e| format!("CUDA device 0: {e}"))?;
        let name = context.name().unwrap_or_else(|_| "CUDA device 0".into());
        let optin = cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
        let shared_optin = context
            .attribute(optin)
            .map_or(48 << 10, |b| b.max(0) as u32);
        Ok(Device {
            name,
            capability: (major as u32, minor as u32),
            context,
            shared_optin,
        })
    });
    opened.unwrap_or_else(|_| {
        Err(
            "cannot use the CUDA driver: it lacks functions of CUDA 12.8 (update the driver)"
                .into(),
        )
    })
}
