//! From compiler output to an artifact: the one place that knows both the compiler's plan
//! types and the runtime's, so the runtime never depends on the compiler (or on LLVM).

use anyhow::{bail, Context, Result};
use kiln_codegen::Backend;
use kiln_compiler::lower::{BufferKind, Lowered};
use kiln_compiler::pipeline::{self, Compiled, Options};
use kiln_compiler::Target;
use kiln_models::Model;
use kiln_runtime::manifest::{Manifest, TensorSpec, Variant};
use kiln_runtime::plan::{BufferRef, GpuBlocks, GridDim, Guard, Launch, Plan, SizeExpr};
use std::collections::BTreeMap;
use std::time::Instant;

/// Which code generator compiles `cpu:` targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// LLVM: the optimising tier (default).
    Llvm,
    /// Cranelift: compiles several times faster, runs slower (128-bit vectors only).
    Cranelift,
}

/// The code generator for `target`: SPIR-V for `vulkan:` targets (the only one that emits
/// them), else the chosen LLVM or Cranelift backend.
pub fn backend_for(choice: BackendChoice, target: &Target) -> Result<Box<dyn Backend>> {
    if let Target::Vulkan(_) = target {
        #[cfg(feature = "spirv")]
        return Ok(Box::new(kiln_codegen::spirv::SpirvBackend));
        #[cfg(not(feature = "spirv"))]
        bail!("this kiln was built without the SPIR-V backend (cargo feature `spirv`)");
    }
    backend(choice)
}

pub fn backend(choice: BackendChoice) -> Result<Box<dyn Backend>> {
    match choice {
        #[cfg(feature = "llvm")]
        BackendChoice::Llvm => Ok(Box::new(kiln_codegen::llvm::LlvmBackend)),
        #[cfg(feature = "cranelift")]
        BackendChoice::Cranelift => Ok(Box::new(kiln_codegen::cranelift::CraneliftBackend)),
        #[allow(unreachable_patterns)]
        other => bail!("this kiln was built without the {other:?} backend"),
    }
}

/// The weights section: every parameter and tensor constant, 64-byte aligned, deduplicated.
#[derive(Default)]
pub struct WeightsLayout {
    pub bytes: Vec<u8>,
    by_key: BTreeMap<String, (u64, u64)>,
}

impl WeightsLayout {
    fn place(&mut self, key: String, data: &[u8]) -> (u64, u64) {
        if let Some(&r) = self.by_key.get(&key) {
            return r;
        }
        while !self.bytes.len().is_multiple_of(64) {
            self.bytes.push(0);
        }
        let r = (self.bytes.len() as u64, data.len() as u64);
        self.bytes.extend_from_slice(data);
        self.by_key.insert(key, r);
        r
    }
}

pub struct TargetReport {
    pub target: String,
    pub kernels: usize,
    pub code_bytes: usize,
    pub compile_ms: u128,
    pub codegen_ms: u128,
    /// The e-graph pass's one-line report.
    pub rewrite: String,
}

/// An artifact ready to write, and what each target's compile did.
pub struct Assembled {
    pub manifest: Manifest,
    pub sections: Vec<(kiln_runtime::manifest::SectionKind, Vec<u8>)>,
    pub reports: Vec<TargetReport>,
}

impl Assembled {
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let data: Vec<kiln_runtime::artifact::SectionData> = self
            .sections
            .iter()
            .map(|(kind, bytes)| kiln_runtime::artifact::SectionData { kind: *kind, bytes })
            .collect();
        kiln_runtime::artifact::write_artifact(path, &self.manifest, &data)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// How to compile: the CPU code generator, whether the e-graph rewrites run, and whether
/// decode's activations are quantized for byte dot products
/// (`pipeline::Options::quantize_activations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choices {
    pub backend: BackendChoice,
    pub rewrite: bool,
    pub quantize_activations: bool,
}

impl Choices {
    /// `backend` with the defaults: rewrites on, f32 activations.
    pub fn new(backend: BackendChoice) -> Choices {
        Choices {
            backend,
            rewrite: true,
            quantize_activations: false,
        }
    }
}

/// The compiler's options for `c`: Cranelift's 128-bit vectors (and no byte dot products),
/// and the host CPU LLVM reports, which is what `cpu:native` is compiled for (the schedule
/// must see the same CPU as the code generator).
pub fn compile_options(c: &Choices) -> Options {
    let cranelift = c.backend == BackendChoice::Cranelift;
    Options {
        vector_bits: cranelift.then_some(128),
        llvm_ops: !cranelift,
        rewrite: c.rewrite,
        quantize_activations: c.quantize_activations,
        host_cpu: host_cpu(),
        ..Options::default()
    }
}

#[cfg(feature = "llvm")]
fn host_cpu() -> Option<(String, String)> {
    Some(kiln_codegen::llvm::host_cpu())
}

#[cfg(not(feature = "llvm"))]
fn host_cpu() -> Option<(String, String)> {
    None
}

/// Compiles `model` for each target; returns the manifest and the sections to write.
pub fn assemble(
    model: &Model,
    targets: &[Target],
    choices: &Choices,
    progress: &dyn Fn(&str),
) -> Result<Assembled> {
    let choice = choices.backend;
    model
        .weights
        .check(&model.graph)
        .with_context(|| format!("model {}", model.name))?;
    // Quantized weights in kiln's regrouped formats (`relayout`), the same bytes for every
    // target; the graph compiled below reads them so. KILN_RELAYOUT=0 keeps the files'
    // formats, to measure what the regrouping is worth.
    let (graph, relaid) = if std::env::var("KILN_RELAYOUT").as_deref() == Ok("0") {
        (model.graph.clone(), Vec::new())
    } else {
        kiln_compiler::relayout::relaid(&model.graph)
            .with_context(|| format!("model {}", model.name))?
    };
    let mut weights = WeightsLayout::default();
    for name in kiln_models::weights::Weights::names_in(&graph) {
        let t = model.weights.get(&name).expect("checked above");
        match relaid.iter().find(|r| r.param == name) {
            Some(r) => {
                let mut bytes = t.bytes().to_vec();
                r.from
                    .relayout(r.to, &mut bytes)
                    .map_err(|e| anyhow::anyhow!("parameter `{name}`: {e}"))?;
                weights.place(format!("param:{name}"), &bytes);
            }
            None => {
                weights.place(format!("param:{name}"), t.bytes());
            }
        }
    }
    let mut variants = Vec::new();
    let mut code = Vec::new();
    let mut reports = Vec::new();
    for (n, target) in targets.iter().enumerate() {
        progress(&format!(
            "[{}/{}] {target}: optimising and lowering",
            n + 1,
            targets.len()
        ));
        let be = backend_for(choice, target)?;
        be.check(target)
            .with_context(|| format!("target {target}"))?;
        let t0 = Instant::now();
        let opts = compile_options(choices);
        let compiled = pipeline::compile(&graph, target, &opts)
            .with_context(|| format!("compiling {} for {target}", model.name))?;
        let compile_ms = t0.elapsed().as_millis();
        progress(&format!(
            "[{}/{}] {target}: generating code for {} kernels ({:?})",
            n + 1,
            targets.len(),
            compiled.kernels().len(),
            choice
        ));
        let t1 = Instant::now();
        let blob = be.compile(compiled.kernels(), target)?;
        let codegen_ms = t1.elapsed().as_millis();
        let rewrite = compiled
            .rewrite
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "off".into());
        reports.push(TargetReport {
            target: target.to_string(),
            kernels: compiled.kernels().len(),
            code_bytes: blob.len(),
            compile_ms,
            codegen_ms,
            rewrite,
        });
        let plan = plan_of(&compiled, &mut weights, !matches!(target, Target::Cpu(_)));
        variants.push(Variant {
            target: target.to_string(),
            code_section: code.len(),
            kernels: compiled.kernels().iter().map(|k| k.name.clone()).collect(),
            plan,
            required_features: required_features(target),
            waits_for_prior_grids: be.waits_for_prior_grids(target),
            counts_own_points: be.counts_own_points(target),
            buffer_offsets: be.reads_buffer_offsets(target),
        });
        code.push(blob);
    }
    let mut sections: Vec<_> = code
        .into_iter()
        .map(|c| (kiln_runtime::manifest::SectionKind::Code, c))
        .collect();
    let weights_section = (!weights.bytes.is_empty()).then(|| {
        sections.push((
            kiln_runtime::manifest::SectionKind::Weights,
            std::mem::take(&mut weights.bytes),
        ));
        sections.len() - 1
    });
    let vocab_section = match &model.vocab {
        None => None,
        Some(v) => {
            sections.push((
                kiln_runtime::manifest::SectionKind::Vocab,
                serde_json::to_vec(v)?,
            ));
            Some(sections.len() - 1)
        }
    };
    let g = &model.graph;
    let inputs = g
        .inputs_named()
        .into_iter()
        .map(|(name, id)| spec(g, name, id))
        .collect();
    let outputs = g
        .outputs
        .iter()
        .map(|(name, id)| spec(g, name.clone(), *id))
        .collect();
    let report = serde_json::json!({
        "targets": reports.iter().map(|r| serde_json::json!({
            "target": r.target, "kernels": r.kernels, "code_bytes": r.code_bytes,
            "compile_ms": r.compile_ms, "codegen_ms": r.codegen_ms, "backend": format!("{choice:?}").to_lowercase(), "rewrite": r.rewrite,
        })).collect::<Vec<_>>(),
        "graph_nodes": g.len(),
        "parameters": parameter_count(g),
    });
    let manifest = Manifest {
        model: model.name.clone(),
        inputs,
        outputs,
        variants,
        weights_section,
        vocab_section,
        compile_report: report,
    };
    Ok(Assembled {
        manifest,
        sections,
        reports,
    })
}

/// Model parameters (weights' elements; quantized weights count what they decode to).
fn parameter_count(g: &kiln_ir::Graph) -> u64 {
    let numel = |id: kiln_ir::NodeId| -> u64 {
        g.node(id)
            .shape
            .iter()
            .map(|d| d.as_known().unwrap_or(0).max(0) as u64)
            .product()
    };
    g.params_named()
        .into_iter()
        .map(|(_, id)| {
            let decoded = g
                .users(id)
                .into_iter()
                .find(|&u| matches!(g.node(u).op, kiln_ir::Op::Dequant { .. }));
            numel(decoded.unwrap_or(id))
        })
        .sum()
}

fn spec(g: &kiln_ir::Graph, name: String, id: kiln_ir::NodeId) -> TensorSpec {
    let n = g.node(id);
    TensorSpec {
        name,
        dtype: n.dtype,
        shape: n.shape.clone(),
    }
}

/// `cpu:native` names no level, so the artifact records what the host's CPU had.
fn required_features(target: &Target) -> Vec<String> {
    #[cfg(feature = "llvm")]
    if matches!(target, Target::Cpu(a) if a == "native") {
        let (_, feats) = kiln_codegen::llvm::host_cpu();
        let detectable = kiln_runtime::cpu::features::X86_DETECTABLE;
        return feats
            .split(',')
            .filter_map(|f| f.strip_prefix('+'))
            .filter(|f| detectable.contains(f))
            .map(str::to_string)
            .collect();
    }
    let _ = target;
    Vec::new()
}

/// Which of `k`'s arguments it moves by an offset (`BufferParam::offset`); empty for none.
fn offset_args(k: &kiln_compiler::kernel::Kernel) -> Vec<bool> {
    let flags: Vec<bool> = k.args.iter().map(|a| a.offset).collect();
    if flags.contains(&true) {
        flags
    } else {
        Vec::new()
    }
}

/// `gpu`: the variant runs on a GPU, so each launch says how its grid maps to blocks.
fn plan_of(c: &Compiled, weights: &mut WeightsLayout, gpu: bool) -> Plan {
    let l: &Lowered = &c.lowered;
    let buffer_ref = |b: usize, weights: &mut WeightsLayout| -> BufferRef {
        match &l.buffers[b].kind {
            BufferKind::Input(i) => BufferRef::Input(*i),
            BufferKind::Output(i) => BufferRef::Output(*i),
            BufferKind::Temp => BufferRef::Slot(c.arena.slot_of[b].expect("temps have slots")),
            BufferKind::Param(name) => {
                let (offset, len) = weights.by_key[&format!("param:{name}")];
                BufferRef::Weight { offset, len }
            }
            BufferKind::Const(t) => {
                let bytes = t.to_bytes();
                let key = format!("const:{:?}:{:?}:{:x?}", t.dtype, t.shape, bytes);
                let (offset, len) = weights.place(key, &bytes);
                BufferRef::Weight { offset, len }
            }
        }
    };
    let launches = l
        .launches
        .iter()
        .map(|launch| Launch {
            kernel: l.kernels[launch.kernel].name.clone(),
            writes: l.kernels[launch.kernel].stored_args(),
            offsets: offset_args(&l.kernels[launch.kernel]),
            args: launch
                .args
                .iter()
                .map(|&b| buffer_ref(b, weights))
                .collect(),
            grid: launch
                .grid
                .iter()
                .map(|g| GridDim {
                    dim: g.dim.clone(),
                    ceil_div: g.ceil_div as u64,
                })
                .collect(),
            min_chunk: l.kernels[launch.kernel].min_chunk,
            guard: launch.guard.as_ref().map(|g| Guard {
                dim: g.dim.clone(),
                max: g.max,
                above: g.above,
            }),
            gpu: gpu.then(|| {
                let shape = kiln_compiler::kernel::gpu::launch_shape(&l.kernels[launch.kernel]);
                GpuBlocks {
                    threads: shape.threads,
                    points_per_block: shape.points_per_block,
                    shared_bytes: shape.shared_bytes,
                }
            }),
        })
        .collect();
    let slots = c
        .arena
        .slots
        .iter()
        .map(|s| {
            s.iter()
                .map(|e| SizeExpr::new(e.bytes_per_elem, e.factors.clone()))
                .collect()
        })
        .collect();
    Plan {
        symbols: l.symbols.clone(),
        slots,
        launches,
    }
}
