//! Finding the GPU: once per process, without panicking when there is no driver.

use super::capability::Capability;
use cudarc::driver::CudaContext;
use std::sync::{Arc, OnceLock};

#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    pub capability: Capability,
    pub context: Arc<CudaContext>,
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
        let (major, minor) = context
            .compute_capability()
            .map_err(|e| format!("CUDA device 0: {e}"))?;
        let name = context.name().unwrap_or_else(|_| "CUDA device 0".into());
        Ok(Device {
            name,
            capability: (major as u32, minor as u32),
            context,
        })
    });
    opened.unwrap_or_else(|_| {
        Err(
            "cannot use the CUDA driver: it lacks functions of CUDA 12.8 (update the driver)"
                .into(),
        )
    })
}
