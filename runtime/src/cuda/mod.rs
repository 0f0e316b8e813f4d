//! Running `cuda:` variants: the device probe, variant support and the executor.
//!
//! The capability logic is plain code (`capability`); everything that talks to the driver
//! needs the `cuda` feature, and even then opens `libcuda` only when a CUDA variant is
//! considered, so a CUDA-enabled build runs CPU variants on machines without NVIDIA's
//! driver.

pub mod capability;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod executor;
#[cfg(feature = "cuda")]
pub mod graph;

use crate::cpu::features::Rank;

/// Whether this process can run `cuda:<arch>`: its rank, or why not.
pub fn support(arch: &str) -> Result<Rank, String> {
    #[cfg(feature = "cuda")]
    {
        let dev = device::probe()?;
        capability::support(arch, dev.capability, &dev.name)
    }
    #[cfg(not(feature = "cuda"))]
    {
        capability::parse(arch)?;
        Err(
            "needs the CUDA runtime, which this kiln was built without (cargo feature `cuda`)"
                .into(),
        )
    }
}

/// The GPU this process would run `cuda:` variants on: its name and capability, or why
/// there is none.
pub fn device() -> Result<(String, capability::Capability), String> {
    #[cfg(feature = "cuda")]
    {
        device::probe().map(|d| (d.name, d.capability))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this kiln was built without the CUDA runtime (cargo feature `cuda`)".into())
    }
}

/// The GPU's device-to-device copy bandwidth in bytes per second (bytes read plus bytes
/// written), over 2 x 512 MiB, best of several copies: the ceiling of bandwidth-bound
/// kernels, measured rather than taken from a datasheet.
pub fn copy_bandwidth() -> Result<f64, String> {
    #[cfg(feature = "cuda")]
    {
        executor::copy_bandwidth(512 << 20)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this kiln was built without the CUDA runtime (cargo feature `cuda`)".into())
    }
}
