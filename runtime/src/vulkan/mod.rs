//! Running `vulkan:` variants: device choice, variant support and the executor.
//!
//! The choice logic is plain code (`choice`); everything that talks to Vulkan needs the
//! `vulkan` feature, and even then opens the loader only when a Vulkan variant is
//! considered, so a build with the feature runs everywhere.

pub mod bundle;
pub mod choice;
#[cfg(feature = "vulkan")]
pub mod device;
#[cfg(feature = "vulkan")]
pub mod executor;
#[cfg(feature = "vulkan")]
mod pipeline_cache;
#[cfg(feature = "vulkan")]
mod queue;
#[cfg(feature = "vulkan")]
mod stats;

use crate::cpu::features::Rank;

/// Whether this process can run `vulkan:<arch>`: its rank, or why not. A device that is
/// really a CPU (Mesa's llvmpipe) ranks below every native CPU variant; a GPU ranks above
/// them, and below CUDA variants (NVIDIA's own API is the faster path there).
pub fn support(arch: &str) -> Result<Rank, String> {
    let need = choice::vulkan_for_spirv(arch)?;
    #[cfg(feature = "vulkan")]
    {
        let gpu = device::probe()?;
        let has = (choice::api_major(gpu.api), choice::api_minor(gpu.api));
        if has < need {
            return Err(format!(
                "needs Vulkan {}.{}; {} supports {}.{}",
                need.0, need.1, gpu.name, has.0, has.1
            ));
        }
        Ok(Rank {
            level: if gpu.is_cpu { 0 } else { 90 },
            extra: 0,
        })
    }
    #[cfg(not(feature = "vulkan"))]
    {
        let _ = need;
        Err(
            "needs the Vulkan runtime, which this kiln was built without (cargo feature `vulkan`)"
                .into(),
        )
    }
}

/// The device this process would run `vulkan:` variants on, or why there is none; with
/// the reductions its modules will use.
pub fn device() -> Result<String, String> {
    #[cfg(feature = "vulkan")]
    {
        device::probe().map(|g| {
            let how = if g.features & bundle::SUBGROUP_ARITHMETIC != 0 {
                "subgroup reductions"
            } else {
                "workgroup-memory reductions"
            };
            format!("{}, {how}", g.name)
        })
    }
    #[cfg(not(feature = "vulkan"))]
    {
        Err("this kiln was built without the Vulkan runtime (cargo feature `vulkan`)".into())
    }
}

/// The Vulkan device's copy bandwidth in bytes per second (read plus written), over
/// 2 x 512 MiB: the ceiling of bandwidth-bound kernels there.
pub fn copy_bandwidth() -> Result<f64, String> {
    #[cfg(feature = "vulkan")]
    {
        queue::copy_bandwidth(512 << 20)
    }
    #[cfg(not(feature = "vulkan"))]
    {
        Err("this kiln was built without the Vulkan runtime (cargo feature `vulkan`)".into())
    }
}
