//! The driver's compiled pipelines, kept on disk between runs (`VkPipelineCache` data).
//! Building a model's pipelines compiles every kernel for the GPU, which takes seconds to
//! minutes; with the cache a second `kiln run` of the same artifact on the same device and
//! driver skips it.
//!
//! The file is named by what decides whether its contents apply: the SPIR-V module and the
//! device's pipeline-cache UUID, vendor, device and driver version. Drivers check the data's
//! header themselves and ignore data that is not theirs, so a stale or foreign file costs a
//! recompile, never a wrong pipeline. Failing to read or write the cache is not an error.

use super::device::Gpu;
use ash::vk;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The cache file for `spirv` on `gpu`, if there is a cache directory.
pub fn path_for(gpu: &Gpu, spirv: &[u8]) -> Option<PathBuf> {
    // SAFETY: `physical` was enumerated from `instance`.
    let props = unsafe { gpu.instance.get_physical_device_properties(gpu.physical) };
    let mut h = Sha256::new();
    h.update(spirv);
    h.update(props.pipeline_cache_uuid);
    for v in [props.vendor_id, props.device_id, props.driver_version] {
        h.update(v.to_le_bytes());
    }
    let key: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = crate::cache_dir::cache_dir().ok()?;
    Some(dir.join("vulkan").join(format!("{key}.pipelines")))
}

/// What a previous run left, or nothing.
pub fn load(path: Option<&PathBuf>) -> Vec<u8> {
    path.and_then(|p| std::fs::read(p).ok()).unwrap_or_default()
}

/// Saves `cache`'s data when it holds more than was loaded (new pipelines were compiled).
pub fn save(gpu: &Gpu, cache: vk::PipelineCache, path: Option<&PathBuf>, loaded: usize) {
    let Some(path) = path else { return };
    // SAFETY: `cache` was created from `gpu.device` and is not in use by another thread.
    let Ok(data) = (unsafe { gpu.device.get_pipeline_cache_data(cache) }) else {
        return;
    };
    if data.len() > loaded {
        let _ = crate::cache_dir::write_atomically(path, &data);
    }
}
