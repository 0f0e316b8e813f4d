//! `kiln compile`: model + targets -> one artifact.

use anyhow::Result;
use kiln::assemble::{assemble, BackendChoice};
use kiln_compiler::Target;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The model: a .gguf file (llama, mistral, qwen2, gpt2, bert), a Hugging Face checkpoint
    /// folder (config.json + safetensors: llama, mistral, qwen2), a .kir graph, or a built-in
    /// model (builtin:mlp)
    pub model: String,
    /// A target to compile for; repeat or separate with commas for several (default: this build's default targets,
    /// or cpu:native)
    #[arg(short, long = "target", value_name = "TARGET", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Where to write the artifact (default: <model name>.kiln)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Code generator for cpu: targets
    #[arg(long, value_enum, default_value = "llvm")]
    pub backend: BackendChoice,
    /// Parameter data for a .kir model
    #[arg(long, value_name = "FILE.safetensors")]
    pub weights: Option<PathBuf>,
    /// Deterministic test values for a .kir model's parameters
    #[arg(long, value_name = "N", conflicts_with = "weights")]
    pub seed: Option<u64>,
    /// Print the kernels (kernel IR) of each target
    #[arg(long)]
    pub emit_kernels: bool,
    /// Skip the e-graph rewrite pass (compile the graph as written)
    #[arg(long)]
    pub no_rewrite: bool,
    /// Quantize activations (q8_0 blocks; q8_k for K-quants on CPUs) where a matmul reads
    /// quantized weights, so decode multiplies bytes by bytes (as llama.cpp does): byte dot
    /// products on LLVM cpu: targets, dp4a on cuda: targets; results move by the
    /// activations' rounding. Vulkan, HIP and Cranelift ignore it
    #[arg(long)]
    pub quantize_activations: bool,
    /// Print nothing but errors
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn parse_targets(list: &[String]) -> Result<Vec<Target>> {
    let list = if list.is_empty() {
        super::default_targets()
    } else {
        list.to_vec()
    };
    let mut targets: Vec<Target> = Vec::new();
    for t in &list {
        let parsed: Target = t.parse()?;
        if !targets.contains(&parsed) {
            targets.push(parsed);
        }
    }
    Ok(targets)
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    let targets = parse_targets(&a.targets)?;
    let model = kiln::model_source::load(&a.model, a.weights.as_deref(), a.seed)?;
    let out = a.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}.kiln",
            model.name.trim_start_matches("builtin:")
        ))
    });
    let quiet = a.quiet;
    let progress = |msg: &str| {
        if !quiet {
            eprintln!("{msg}");
        }
    };
    let choices = kiln::assemble::Choices {
        backend: a.backend,
        rewrite: !a.no_rewrite,
        quantize_activations: a.quantize_activations,
    };
    if a.emit_kernels {
        // The graph as assembling compiles it (quantized weights relaid).
        let (graph, _) = kiln_compiler::relayout::relaid(&model.graph)?;
        for t in &targets {
            let opts = kiln::assemble::compile_options(&choices);
            let c = kiln_compiler::pipeline::compile(&graph, t, &opts)?;
            println!("# {t}");
            for k in c.kernels() {
                println!("{k}");
            }
        }
    }
    let built = assemble(&model, &targets, &choices, &progress)?;
    built.write(&out)?;
    let reports = &built.reports;
    if !quiet {
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        for r in reports {
            eprintln!(
                "  {}: {} kernels, {} KiB of code (rewrite+lowering {} ms, codegen {} ms)",
                r.target,
                r.kernels,
                r.code_bytes / 1024,
                r.compile_ms,
                r.codegen_ms
            );
            eprintln!("    {}", r.rewrite);
        }
        eprintln!(
            "wrote {} ({} KiB, {} target{}) in {:.2} s",
            out.display(),
            size / 1024,
            targets.len(),
            if targets.len() == 1 { "" } else { "s" },
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
