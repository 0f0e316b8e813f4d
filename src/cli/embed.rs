//! `kiln embed`: sentence embeddings from an encoder (a BERT GGUF, or its compiled artifact).

use anyhow::{bail, Result};
use kiln_runtime::session::Session;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The encoder: a compiled .kiln artifact, or a BERT .gguf (compiled for this machine on
    /// first use and cached: see KILN_CACHE_DIR)
    pub model: PathBuf,
    /// A text to embed; repeat for several (one embedding each, in order)
    #[arg(short, long = "prompt", value_name = "TEXT", required = true)]
    pub prompts: Vec<String>,
    /// Write the embeddings to FILE: .npy (f32 [texts, dims]) or .json; default: JSON on
    /// stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Keep the mean-pooled vectors as they are instead of scaling them to unit length
    #[arg(long)]
    pub no_normalize: bool,
    /// CPU threads (default: all)
    #[arg(short, long, value_parser = super::thread_count())]
    pub threads: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    let path = if a.model.extension().is_some_and(|e| e == "gguf") {
        kiln::gguf_cache::artifact_for(&a.model, false)?
    } else {
        a.model.clone()
    };
    let mut e = kiln::embed::Embedder::new(Session::new(&path, a.threads)?)?;
    let mut rows = Vec::new();
    for p in &a.prompts {
        rows.push(e.embed(p, !a.no_normalize)?);
    }
    let dims = rows[0].len();
    let json = || {
        serde_json::json!({
            "model": a.model.display().to_string(),
            "dims": dims,
            "normalized": !a.no_normalize,
            "embeddings": rows,
        })
    };
    match a
        .output
        .as_ref()
        .map(|o| (o, o.extension().and_then(|e| e.to_str())))
    {
        None => println!("{}", json()),
        Some((o, Some("json"))) => kiln::atomic_file::write_with(o, |w| {
            serde_json::to_writer(&mut *w, &json())?;
            Ok(writeln!(w)?)
        })?,
        Some((o, Some("npy"))) => {
            let data = rows.iter().flatten().map(|&x| f64::from(x)).collect();
            let t = kiln_ir::Tensor::new(kiln_ir::DType::F32, vec![rows.len(), dims], data);
            kiln::npy::write(o, &t)?
        }
        Some((o, _)) => bail!("{}: write embeddings to a .npy or .json file", o.display()),
    }
    Ok(())
}
