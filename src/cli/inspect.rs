//! `kiln inspect`: what an artifact holds.

use anyhow::Result;
use kiln_ir::dim::shape_to_string;
use kiln_runtime::artifact::Artifact;
use kiln_runtime::plan::BufferRef;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    pub artifact: PathBuf,
    /// List every kernel launch with its buffers and grid
    #[arg(long)]
    pub kernels: bool,
}

pub fn run(a: Args) -> Result<()> {
    let art = Artifact::open(&a.artifact)?;
    art.verify_all()?;
    let m = art.manifest();
    println!("model    {}", m.model);
    for (kind, specs) in [("input ", &m.inputs), ("output", &m.outputs)] {
        for s in specs {
            println!(
                "{kind}   {} {}{}",
                s.name,
                s.dtype,
                shape_to_string(&s.shape)
            );
        }
    }
    let weights = art.weights()?.map_or(0, |w| w.len());
    println!("weights  {} bytes", weights);
    if let Some(bytes) = art.vocab()? {
        let v: kiln_models::tokenizer::Vocab = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("{}: vocabulary section: {e}", a.artifact.display()))?;
        println!("vocab    {} tokens ({} tokenizer)", v.tokens.len(), v.model);
    }
    println!("targets  {}", m.variants.len());
    for (i, v) in m.variants.iter().enumerate() {
        let code = art.code(i)?.len();
        let slots: Vec<String> = v
            .plan
            .slots
            .iter()
            .map(|s| {
                s.iter()
                    .map(|e| format!("{}*{}", e.bytes_per_elem, shape_to_string(&e.factors)))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        println!(
            "  {:<18} {} kernels, {} bytes of code, {} arena slots",
            v.target,
            v.kernels.len(),
            code,
            slots.len()
        );
        println!(
            "  {:<18} arena slots (bytes): {}",
            "",
            if slots.is_empty() {
                "none".into()
            } else {
                slots.join(", ")
            }
        );
        if a.kernels {
            for l in &v.plan.launches {
                let args: Vec<String> = l
                    .args
                    .iter()
                    .map(|b| match b {
                        BufferRef::Slot(s) => format!("slot{s}"),
                        BufferRef::Input(i) => format!("in:{}", m.inputs[*i].name),
                        BufferRef::Output(i) => format!("out:{}", m.outputs[*i].name),
                        BufferRef::Weight { offset, len } => format!("w@{offset}+{len}"),
                    })
                    .collect();
                let grid: Vec<String> = l
                    .grid
                    .iter()
                    .map(|g| {
                        if g.ceil_div == 1 {
                            g.dim.to_string()
                        } else {
                            format!("ceil({}/{})", g.dim, g.ceil_div)
                        }
                    })
                    .collect();
                println!(
                    "    {:<22} grid [{}] ({})",
                    l.kernel,
                    grid.join(", "),
                    args.join(", ")
                );
            }
        }
    }
    if !m.compile_report.is_null() {
        println!("compile  {}", m.compile_report);
    }
    Ok(())
}
