//! Finding the Vulkan device: once per process, without panicking when there is no loader
//! or no usable device.

use super::choice::{choose, Candidate, Kind};
use ash::vk;
use std::ffi::CStr;
use std::sync::{Arc, OnceLock};

/// An opened device with one compute queue. Lives for the rest of the process.
pub struct Gpu {
    pub entry: ash::Entry,
    pub instance: ash::Instance,
    pub physical: vk::PhysicalDevice,
    pub device: ash::Device,
    pub push: ash::khr::push_descriptor::Device,
    /// `VK_KHR_pipeline_executable_properties`, opened when `KILN_VULKAN_STATS=1` asks for
    /// the driver's statistics of each pipeline (`stats`) and the device has it.
    pub stats: Option<ash::khr::pipeline_executable_properties::Device>,
    pub queue: vk::Queue,
    pub queue_family: u32,
    pub name: String,
    /// `VK_API_VERSION_*` the device supports.
    pub api: u32,
    pub limits: vk::PhysicalDeviceLimits,
    /// A software implementation on the CPU (Mesa's llvmpipe): correct, not fast.
    pub is_cpu: bool,
    /// Whether the queue records timestamps (per-launch profiles).
    pub timestamps: bool,
    /// Features of [`super::bundle`] modules this device runs (subgroup arithmetic in
    /// compute shaders; `KILN_VULKAN_SUBGROUPS=0` withholds it, to run the fallback).
    pub features: u32,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("name", &self.name).finish()
    }
}

/// The device `kiln` runs `vulkan:` variants on, or why there is none.
pub fn probe() -> Result<Arc<Gpu>, String> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    GPU.get_or_init(|| open().map(Arc::new)).clone()
}

fn open() -> Result<Gpu, String> {
    // SAFETY: loads the Vulkan loader library; its initialisation has no preconditions.
    let entry = unsafe { ash::Entry::load() }.map_err(|e| {
        format!("needs a Vulkan loader (libvulkan.so.1), which this machine lacks: {e}")
    })?;
    let app = vk::ApplicationInfo::default()
        .application_name(c"kiln")
        .api_version(vk::API_VERSION_1_3);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: `info` and what it points to outlive the call.
    let instance = unsafe { entry.create_instance(&info, None) }
        .map_err(|e| format!("cannot create a Vulkan instance: {e}"))?;
    // SAFETY: `instance` is valid; the handles returned belong to it.
    let physicals = unsafe { instance.enumerate_physical_devices() }
        .map_err(|e| format!("cannot list Vulkan devices: {e}"))?;
    let mut candidates = Vec::new();
    for &p in &physicals {
        candidates.push(describe(&instance, p));
    }
    let wanted = std::env::var("KILN_VULKAN_DEVICE").ok();
    let i = choose(&candidates, wanted.as_deref())?;
    let c = &candidates[i];
    let physical = physicals[i];
    let family = c
        .compute_family
        .expect("choose() keeps only devices with a compute queue");
    let priorities = [1.0f32];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(family)
        .queue_priorities(&priorities)];
    let features = vk::PhysicalDeviceFeatures::default().shader_int64(true);
    let wanted = super::stats::wanted();
    let stats = c.pipeline_stats && wanted;
    if wanted && !stats {
        eprintln!(
            "vulkan: {} does not report pipeline statistics \
             (VK_KHR_pipeline_executable_properties); KILN_VULKAN_STATS=1 prints none",
            c.name
        );
    }
    let mut extensions = vec![ash::khr::push_descriptor::NAME.as_ptr()];
    let mut executable_info = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default()
        .pipeline_executable_info(true);
    let mut info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_features(&features);
    if stats {
        extensions.push(ash::khr::pipeline_executable_properties::NAME.as_ptr());
        info = info.push_next(&mut executable_info);
    }
    let info = info.enabled_extension_names(&extensions);
    // SAFETY: `physical` belongs to `instance`; `info` outlives the call.
    let device = unsafe { instance.create_device(physical, &info, None) }
        .map_err(|e| format!("cannot open Vulkan device {}: {e}", c.name))?;
    // SAFETY: the queue family and index were requested at device creation.
    let queue = unsafe { device.get_device_queue(family, 0) };
    let push = ash::khr::push_descriptor::Device::new(&instance, &device);
    let stats =
        stats.then(|| ash::khr::pipeline_executable_properties::Device::new(&instance, &device));
    // SAFETY: valid handles.
    let props = unsafe { instance.get_physical_device_properties(physical) };
    let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
    let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
    if c.api >= vk::API_VERSION_1_1 {
        let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut subgroup);
        // SAFETY: valid handles; `props2` chains only `subgroup`, which outlives the call.
        unsafe { instance.get_physical_device_properties2(physical, &mut props2) };
    }
    let arithmetic = subgroup
        .supported_stages
        .contains(vk::ShaderStageFlags::COMPUTE)
        && subgroup
            .supported_operations
            .contains(vk::SubgroupFeatureFlags::ARITHMETIC);
    let withheld = std::env::var("KILN_VULKAN_SUBGROUPS").as_deref() == Ok("0");
    let features = if arithmetic && !withheld {
        super::bundle::SUBGROUP_ARITHMETIC
    } else {
        0
    };
    Ok(Gpu {
        features,
        name: c.name.clone(),
        api: c.api,
        is_cpu: c.kind == super::choice::Kind::Cpu,
        limits: props.limits,
        timestamps: families[family as usize].timestamp_valid_bits > 0
            && props.limits.timestamp_period > 0.0,
        entry,
        instance,
        physical,
        device,
        push,
        stats,
        queue,
        queue_family: family,
    })
}

fn describe(instance: &ash::Instance, p: vk::PhysicalDevice) -> Candidate {
    // SAFETY: `p` was enumerated from `instance`.
    let props = unsafe { instance.get_physical_device_properties(p) };
    let features = unsafe { instance.get_physical_device_features(p) };
    let families = unsafe { instance.get_physical_device_queue_family_properties(p) };
    let extensions =
        unsafe { instance.enumerate_device_extension_properties(p) }.unwrap_or_default();
    let name = props
        .device_name_as_c_str()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unnamed Vulkan device".into());
    let has = |want: &CStr| {
        extensions
            .iter()
            .any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == want))
    };
    Candidate {
        name,
        kind: match props.device_type {
            vk::PhysicalDeviceType::DISCRETE_GPU => Kind::Discrete,
            vk::PhysicalDeviceType::INTEGRATED_GPU => Kind::Integrated,
            vk::PhysicalDeviceType::VIRTUAL_GPU => Kind::Virtual,
            vk::PhysicalDeviceType::CPU => Kind::Cpu,
            _ => Kind::Other,
        },
        api: props.api_version,
        compute_family: families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .map(|i| i as u32),
        int64: features.shader_int64 == vk::TRUE,
        push_descriptors: has(ash::khr::push_descriptor::NAME),
        pipeline_stats: has(ash::khr::pipeline_executable_properties::NAME),
    }
}
