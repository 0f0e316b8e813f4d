//! `kiln bench m.kiln`: a compiled decoder's prompt processing (ppN) and token generation
//! (tgN) speeds, as a table in the manner of llama.cpp's llama-bench, so the two tools'
//! figures line up: mean tokens per second with the standard deviation over repetitions.

use anyhow::{bail, Result};
use kiln::generate::Generator;
use kiln::sampling::argmax;
use kiln_runtime::session::Session;
use std::path::Path;
use std::time::Instant;

pub struct ModelBench<'a> {
    pub artifact: &'a Path,
    pub threads: Vec<usize>,
    pub prompt: usize,
    pub generate: usize,
    pub repetitions: usize,
    pub json: Option<&'a Path>,
}

/// Token ids for the prompt: spread over the vocabulary, the same every run.
fn prompt_tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

pub fn run(b: ModelBench<'_>) -> Result<()> {
    if b.repetitions == 0 || (b.prompt == 0 && b.generate == 0) {
        bail!("nothing to measure: give --repetitions and --prompt or --generate above 0");
    }
    let mut rows = Vec::new();
    println!("| model | size | params | target | threads | test | t/s |");
    println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
    for &threads in &b.threads {
        let session = Session::new(b.artifact, Some(threads))?;
        let m = session.manifest();
        let size = session.artifact().weights()?.map_or(0, |w| w.len());
        let params = m.compile_report["parameters"].as_u64().unwrap_or(0);
        let (model, target) = (m.model.clone(), session.variant().target.clone());
        let threads_used = session.threads();
        let mut gen = Generator::new(session)?;
        let vocab = gen.vocab();
        let mut tests = Vec::new();
        if b.prompt > 0 {
            let prompt = prompt_tokens(b.prompt, vocab);
            gen.feed(&prompt)?; // warm-up: first-run costs stay out of the figures
            let speeds = (0..b.repetitions)
                .map(|_| {
                    gen.reset();
                    let t = Instant::now();
                    gen.feed(&prompt)?;
                    Ok(b.prompt as f64 / t.elapsed().as_secs_f64())
                })
                .collect::<Result<Vec<f64>>>()?;
            tests.push((format!("pp{}", b.prompt), speeds));
        }
        if b.generate > 0 {
            let speeds = (0..b.repetitions)
                .map(|_| {
                    gen.reset();
                    let mut next = argmax(gen.feed(&[1])?);
                    let t = Instant::now();
                    for _ in 0..b.generate {
                        next = argmax(gen.feed(&[next])?);
                    }
                    Ok(b.generate as f64 / t.elapsed().as_secs_f64())
                })
                .collect::<Result<Vec<f64>>>()?;
            tests.push((format!("tg{}", b.generate), speeds));
        }
        for (test, speeds) in tests {
            let (mean, sd) = mean_sd(&speeds);
            println!(
                "| {model} | {:.2} MiB | {:.2} M | {target} | {threads_used} | {test} | {mean:.2} ± {sd:.2} |",
                size as f64 / (1 << 20) as f64,
                params as f64 / 1e6,
            );
            rows.push(serde_json::json!({
                "model": model, "size_bytes": size, "params": params, "target": target,
                "threads": threads_used, "test": test, "tokens_per_second": mean,
                "stddev": sd, "samples": speeds,
            }));
        }
    }
    if let Some(path) = b.json {
        let doc = serde_json::json!({"artifact": b.artifact.display().to_string(), "rows": rows});
        kiln::atomic_file::write(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}
