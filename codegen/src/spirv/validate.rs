//! Checking emitted modules with naga (its SPIR-V front end, then its validator) before
//! they go into an artifact.

use naga::valid::{
    Capabilities, SubgroupOperationSet, ValidationError, ValidationFlags, Validator,
};

/// `Err((kernel, why))` when naga rejects `words`; the kernel is the entry point naga
/// names, or `(module)` when the failure is not tied to one.
pub fn validate(words: &[u32]) -> Result<(), (String, String)> {
    let opts = naga::front::spv::Options {
        adjust_coordinate_space: false,
        strict_capabilities: true,
        block_ctx_dump_prefix: None,
    };
    let module = naga::front::spv::Frontend::new(words.iter().copied(), &opts)
        .parse()
        .map_err(|e| {
            (
                "(module)".to_string(),
                format!("naga cannot read the SPIR-V: {e}"),
            )
        })?;
    // Subgroup arithmetic in compute shaders is allowed: the modules that use it are the
    // flavour for devices that have it (see `bundle.rs`). Unpacking halves from a word
    // (GLSL.std.450 UnpackHalf2x16) is core Vulkan; naga gates it for other APIs.
    let caps = Capabilities::SHADER_INT64
        | Capabilities::IMMEDIATES
        | Capabilities::SUBGROUP
        | Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::BASIC | SubgroupOperationSet::ARITHMETIC)
        .validate(&module)
        .map(|_| ())
        .map_err(|e| {
            let kernel = match e.as_inner() {
                ValidationError::EntryPoint { name, .. }
                | ValidationError::Function { name, .. } => {
                    name.strip_prefix("kiln_").unwrap_or(name).to_string()
                }
                _ => "(module)".into(),
            };
            let mut why = format!("naga rejected the SPIR-V: {e}");
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e.as_inner());
            while let Some(s) = src {
                why += &format!(": {s}");
                src = s.source();
            }
            (kernel, why)
        })
}
