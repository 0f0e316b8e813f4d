//! Which Vulkan device runs kernels, and which SPIR-V versions a device accepts: plain
//! logic over device descriptions, so it is tested without a driver.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Discrete,
    Integrated,
    Virtual,
    Cpu,
    Other,
}

#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub kind: Kind,
    /// `VK_API_VERSION` the device supports.
    pub api: u32,
    /// A queue family with compute, if any.
    pub compute_family: Option<u32>,
    pub int64: bool,
    pub push_descriptors: bool,
    /// `VK_KHR_pipeline_executable_properties` (the driver's statistics of a pipeline).
    pub pipeline_stats: bool,
}

impl Candidate {
    /// Why kiln's kernels cannot run on this device, if they cannot.
    fn unusable(&self) -> Option<String> {
        let (major, minor) = (api_major(self.api), api_minor(self.api));
        if (major, minor) < (1, 1) {
            Some(format!("supports Vulkan {major}.{minor}; kiln needs 1.1"))
        } else if self.compute_family.is_none() {
            Some("has no compute queue".into())
        } else if !self.int64 {
            Some("lacks 64-bit integers in shaders (shaderInt64)".into())
        } else if !self.push_descriptors {
            Some("lacks VK_KHR_push_descriptor".into())
        } else {
            None
        }
    }
}

pub fn api_major(v: u32) -> u32 {
    (v >> 22) & 0x7f
}

pub fn api_minor(v: u32) -> u32 {
    (v >> 12) & 0x3ff
}

/// The device to use: `wanted` (an index, or part of a name, case-insensitive) if given,
/// else the first usable device of the best kind (discrete > integrated > virtual > CPU).
pub fn choose(devices: &[Candidate], wanted: Option<&str>) -> Result<usize, String> {
    if devices.is_empty() {
        return Err("finds no Vulkan device (the loader reports none)".into());
    }
    let list = || {
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{i}: {}", d.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(w) = wanted.map(str::trim).filter(|w| !w.is_empty()) {
        let i = match w.parse::<usize>() {
            Ok(i) if i < devices.len() => i,
            Ok(_) => {
                return Err(format!(
                    "KILN_VULKAN_DEVICE={w}: no such device ({})",
                    list()
                ))
            }
            Err(_) => devices
                .iter()
                .position(|d| d.name.to_lowercase().contains(&w.to_lowercase()))
                .ok_or_else(|| {
                    format!(
                        "KILN_VULKAN_DEVICE={w}: no device name contains it ({})",
                        list()
                    )
                })?,
        };
        return match devices[i].unusable() {
            None => Ok(i),
            Some(why) => Err(format!("KILN_VULKAN_DEVICE={w}: {} {why}", devices[i].name)),
        };
    }
    devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.unusable().is_none())
        .min_by_key(|(i, d)| (d.kind, *i))
        .map(|(i, _)| i)
        .ok_or_else(|| {
            let why: Vec<String> = devices
                .iter()
                .map(|d| format!("{} {}", d.name, d.unusable().unwrap_or_default()))
                .collect();
            format!("finds no usable Vulkan device: {}", why.join("; "))
        })
}

/// The Vulkan version a `vulkan:spv1.N` module needs (SPIR-V 1.3 came with Vulkan 1.1,
/// 1.4 and 1.5 with 1.2, 1.6 with 1.3).
pub fn vulkan_for_spirv(arch: &str) -> Result<(u32, u32), String> {
    match arch {
        "spv1.3" => Ok((1, 1)),
        "spv1.4" | "spv1.5" => Ok((1, 2)),
        "spv1.6" => Ok((1, 3)),
        other => Err(format!(
            "`{other}` is not a SPIR-V version kiln emits (spv1.3 .. spv1.6)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, kind: Kind) -> Candidate {
        Candidate {
            name: name.into(),
            kind,
            api: (1 << 22) | (3 << 12),
            compute_family: Some(0),
            int64: true,
            push_descriptors: true,
            pipeline_stats: false,
        }
    }

    #[test]
    fn discrete_beats_integrated_beats_cpu() {
        let d = [
            dev("llvmpipe", Kind::Cpu),
            dev("Intel UHD", Kind::Integrated),
            dev("NVIDIA H100", Kind::Discrete),
        ];
        assert_eq!(choose(&d, None), Ok(2));
        assert_eq!(choose(&d[..2], None), Ok(1));
        assert_eq!(choose(&d[..1], None), Ok(0));
    }

    #[test]
    fn unusable_devices_are_skipped_and_explained() {
        let mut gpu = dev("Old GPU", Kind::Discrete);
        gpu.int64 = false;
        let d = [gpu.clone(), dev("llvmpipe", Kind::Cpu)];
        assert_eq!(choose(&d, None), Ok(1));
        let e = choose(&d[..1], None).unwrap_err();
        assert!(e.contains("Old GPU") && e.contains("shaderInt64"), "{e}");
        let mut old = dev("Vulkan 1.0 GPU", Kind::Discrete);
        old.api = 1 << 22;
        assert!(choose(&[old], None).unwrap_err().contains("needs 1.1"));
        assert!(choose(&[], None).unwrap_err().contains("no Vulkan device"));
    }

    #[test]
    fn the_override_takes_an_index_or_a_name() {
        let d = [
            dev("llvmpipe", Kind::Cpu),
            dev("NVIDIA H100", Kind::Discrete),
        ];
        assert_eq!(choose(&d, Some("0")), Ok(0));
        assert_eq!(choose(&d, Some("LLVMpipe")), Ok(0));
        assert_eq!(choose(&d, Some(" ")), Ok(1));
        let e = choose(&d, Some("7")).unwrap_err();
        assert!(
            e.contains("no such device") && e.contains("1: NVIDIA H100"),
            "{e}"
        );
        let e = choose(&d, Some("radeon")).unwrap_err();
        assert!(e.contains("no device name contains it"), "{e}");
        let mut nopush = dev("Weird", Kind::Discrete);
        nopush.push_descriptors = false;
        let e = choose(&[nopush], Some("weird")).unwrap_err();
        assert!(e.contains("VK_KHR_push_descriptor"), "{e}");
    }

    #[test]
    fn spirv_versions_map_to_vulkan_versions() {
        assert_eq!(vulkan_for_spirv("spv1.3"), Ok((1, 1)));
        assert_eq!(vulkan_for_spirv("spv1.5"), Ok((1, 2)));
        assert_eq!(vulkan_for_spirv("spv1.6"), Ok((1, 3)));
        assert!(vulkan_for_spirv("spv2.0").is_err());
        assert_eq!(api_major((1 << 22) | (2 << 12) | 5), 1);
        assert_eq!(api_minor((1 << 22) | (2 << 12) | 5), 2);
    }
}
