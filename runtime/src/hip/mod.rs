//! `hip:` variants: which code object a device runs (`selection`), how kernel arguments
//! are laid out (`args`), finding the device, the HIP runtime opened at run time (`api`)
//! and the executor.
//!
//! No AMD GPU exists where kiln is developed: the selection, argument and topology logic is
//! unit-tested, the runtime's absence is tested as the reason `kiln run` gives, and the
//! executor has not run on AMD hardware.

pub mod api;
pub mod args;
pub mod executor;
pub mod selection;

use crate::cpu::features::Rank;
use std::path::Path;

/// The AMD GPU this machine has, as its gfx name (`gfx1100`), read from the kernel driver's
/// topology (what `rocminfo` reads), or why there is none.
pub fn device_gfx() -> Result<String, String> {
    device_gfx_in(Path::new("/sys/class/kfd/kfd/topology/nodes"))
}

pub fn device_gfx_in(nodes: &Path) -> Result<String, String> {
    let no = || "finds no AMD GPU (no amdgpu kernel driver topology)".to_string();
    let entries = std::fs::read_dir(nodes).map_err(|_| no())?;
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    for node in names {
        let Ok(props) = std::fs::read_to_string(node.join("properties")) else {
            continue;
        };
        let version = props.lines().find_map(|l| {
            l.strip_prefix("gfx_target_version ")
                .and_then(|v| v.trim().parse::<u32>().ok())
        });
        // CPU nodes report 0.
        if let Some(v) = version.filter(|&v| v > 0) {
            return Ok(selection::gfx_name(v));
        }
    }
    Err(no())
}

/// Whether this process can run `hip:<arch>`: its rank, or why not.
pub fn support(arch: &str) -> Result<Rank, String> {
    selection::parse(arch)?;
    let gfx =
        device_gfx().map_err(|why| format!("needs an AMD GPU with ROCm: this machine {why}"))?;
    let rank = selection::support(arch, &gfx)?;
    api::Hip::open(&api::LIBRARY_NAMES)?;
    Ok(rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gpu_node_of_the_topology_names_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let node = |n: &str, props: &str| {
            let p = dir.path().join(n);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("properties"), props).unwrap();
        };
        node("0", "cpu_cores_count 16\ngfx_target_version 0\n");
        node("1", "simd_count 192\ngfx_target_version 110000\n");
        assert_eq!(device_gfx_in(dir.path()).unwrap(), "gfx1100");
        let none = device_gfx_in(&dir.path().join("absent")).unwrap_err();
        assert!(none.contains("no AMD GPU"), "{none}");
    }
}
