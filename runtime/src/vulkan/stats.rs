//! `KILN_VULKAN_STATS=1`: what the driver's compiler made of each kernel, through
//! `VK_KHR_pipeline_executable_properties` — on NVIDIA's driver the registers a thread takes
//! and the memory it spills, which set how many blocks share a multiprocessor. There is no
//! profiler for Vulkan compute on the GPU machine, and these are what `ptxas -v` tells of
//! the CUDA kernels beside them.

use super::device::Gpu;
use ash::vk;

/// Whether the statistics were asked for (`KILN_VULKAN_STATS=1`).
pub fn wanted() -> bool {
    std::env::var("KILN_VULKAN_STATS").as_deref() == Ok("1")
}

/// The statistics of each executable of `pipeline` (kernel `kernel`), one line each, as
/// `name value` pairs; empty where the device did not capture them.
pub fn of(gpu: &Gpu, pipeline: vk::Pipeline, kernel: &str) -> Vec<String> {
    let Some(ext) = &gpu.stats else {
        return Vec::new();
    };
    let info = vk::PipelineInfoKHR::default().pipeline(pipeline);
    // SAFETY: `pipeline` was created on this device with statistics captured, and lives
    // for the call.
    let executables = match unsafe { ext.get_pipeline_executable_properties(&info) } {
        Ok(e) => e,
        Err(e) => return vec![format!("vulkan: {kernel}: no statistics ({e})")],
    };
    let mut lines = Vec::new();
    for (i, exe) in executables.iter().enumerate() {
        let which = vk::PipelineExecutableInfoKHR::default()
            .pipeline(pipeline)
            .executable_index(i as u32);
        // SAFETY: as above; `i` is one of the pipeline's executables.
        let Ok(stats) = (unsafe { ext.get_pipeline_executable_statistics(&which) }) else {
            continue;
        };
        let fields: Vec<String> = stats
            .iter()
            .map(|s| {
                let name = s
                    .name_as_c_str()
                    .map_or("?".into(), |n| n.to_string_lossy());
                format!("{name} {}", value(s))
            })
            .collect();
        let exe_name = exe
            .name_as_c_str()
            .map_or("?".into(), |n| n.to_string_lossy());
        lines.push(format!(
            "vulkan: {kernel} ({exe_name}): {}",
            fields.join(", ")
        ));
    }
    lines
}

fn value(s: &vk::PipelineExecutableStatisticKHR) -> String {
    // SAFETY: `format` says which member of the union the driver wrote.
    unsafe {
        match s.format {
            vk::PipelineExecutableStatisticFormatKHR::BOOL32 => (s.value.b32 != 0).to_string(),
            vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => s.value.f64.to_string(),
            _ => "?".into(),
        }
    }
}
