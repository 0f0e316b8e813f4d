//! `kiln bench`: kernel benchmarks as a markdown table, side by side in one run; or, given
//! an artifact, its prompt and generation speeds (`bench_model.rs`).

use anyhow::{Context, Result};
use kiln::assemble::BackendChoice;
use kiln::kernel_bench::{
    copy_bandwidth, default_cases, reference_sgemm, time_interleaved, Prepared, Runner, Work,
};
use kiln_compiler::Target;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// A compiled decoder (.kiln) to measure ppN/tgN tokens per second on; without it,
    /// kernel benchmarks
    pub artifact: Option<PathBuf>,
    /// Prompt tokens processed at once for the pp test (0: skip it)
    #[arg(short = 'p', long, default_value_t = 128)]
    pub prompt: usize,
    /// Tokens generated one by one for the tg test (0: skip it)
    #[arg(short = 'n', long, default_value_t = 64)]
    pub generate: usize,
    /// Repetitions of each model test
    #[arg(short = 'r', long, default_value_t = 5)]
    pub repetitions: usize,
    /// The target to benchmark kernels on
    #[arg(short, long, default_value = "cpu:native")]
    #[arg(short, long, default_value = "cpu:native")]
    pub target: String,
    /// Backends to compare (default: every backend this build has)
    #[arg(long, value_enum)]
    pub backend: Vec<BackendChoice>,
    /// Thread counts to run with (default: 1 and all cores)
    #[arg(long, value_delimiter = ',', value_parser = super::thread_count())]
    pub threads: Vec<usize>,
    /// Seconds to spend timing each case
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Skip the largest cases
    #[arg(long)]
    pub quick: bool,
    /// Only the cases whose op or shape contains this text (e.g. `matmul`, `1024`)
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Also write the results as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(artifact) = &a.artifact {
        let all = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if a.threads.is_empty() {
            vec![all]
        } else {
            a.threads.clone()
        };
        return super::bench_model::run(super::bench_model::ModelBench {
            artifact,
            threads,
            prompt: a.prompt,
            generate: a.generate,
            repetitions: a.repetitions,
            json: a.json.as_deref(),
        });
    }
    let target: Target = a.target.parse()?;
    let gpu = matches!(target, Target::Cuda(_) | Target::Vulkan(_));
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    // GPU kernels run on the device: host threads and the Cranelift CPU tier do not apply.
    let threads = if gpu {
        vec![1]
    } else if a.threads.is_empty() {
        if all > 1 {
            vec![1, all]
        } else {
            vec![1]
        }
    } else {
        a.threads.clone()
    };
    let backends = if gpu {
        vec![BackendChoice::Llvm]
    } else if a.backend.is_empty() {
        available_backends()
    } else {
        a.backend.clone()
    };
    let budget = Duration::from_secs_f64(a.seconds);
    // Bandwidth-bound kernels are judged against a copy run with as many threads as they
    // (on a GPU: a device-to-device copy; on Vulkan the faster of the API's copy and a
    // compute shader's, `kernel_bench::copy_kernel`).
    let copy: std::collections::BTreeMap<usize, f64> = if gpu {
        let cannot = |e: String| anyhow::anyhow!("cannot benchmark {target}: {e}");
        let bw = match target {
            Target::Vulkan(_) => {
                let api = kiln_runtime::vulkan::copy_bandwidth().map_err(cannot)?;
                match shader_copy_bandwidth(&target, budget) {
                    Ok(shader) => api.max(shader),
                    Err(e) => {
                        eprintln!("note: judging against vkCmdCopyBuffer alone ({e:#})");
                        api
                    }
                }
            }
            _ => kiln_runtime::cuda::copy_bandwidth().map_err(cannot)?,
        };
        [(1, bw)].into()
    } else {
        threads.iter().map(|&t| (t, copy_bandwidth(t))).collect()
    };
    let mut rows = Vec::new();
    if gpu {
        let name = match target {
            Target::Vulkan(_) => kiln_runtime::vulkan::device(),
            _ => kiln_runtime::cuda::device().map(|(name, _)| name),
        }
        .map_err(|e| anyhow::anyhow!(e))?;
        println!(
            "device: {name}; device copy bandwidth {:.0} GB/s; target {target}",
            copy[&1] / 1e9
        );
    } else {
        let copy_text: Vec<String> = copy
            .iter()
            .map(|(t, bw)| format!("{:.1} GB/s with {t} thread(s)", bw / 1e9))
            .collect();
        println!(
            "machine: {all} hardware threads; copy bandwidth {}; target {target}",
            copy_text.join(", ")
        );
    }
    println!();
    println!("| op | shape | backend | threads | time | rate | vs reference |");
    println!("|---|---|---|---:|---:|---:|---|");
    let cases = if gpu {
        kiln::kernel_bench::gpu_cases(a.quick)
    } else {
        default_cases(a.quick)
    };
    let selected = cases.into_iter().filter(|c| {
        a.only
            .as_deref()
            .is_none_or(|t| c.name.contains(t) || c.shape.contains(t))
    });
    for case in selected {
        // Every contender of a case is timed in the same interleaved rounds.
        let mut contenders: Vec<(String, usize)> = Vec::new();
        let mut runners: Vec<Runner> = Vec::new();
        let matmul_n = case
            .name
            .starts_with("matmul")
            .then(|| case.shape.split('x').next()?.parse::<usize>().ok())
            .flatten();
        if let (Some(n), false) = (matmul_n, gpu) {
            contenders.push(("matrixmultiply".into(), 1));
            runners.push(reference_sgemm(n));
        }
        for &backend in &backends {
            for &th in &threads {
                let mut p = Prepared::new(&case, &target, backend, th)
                    .with_context(|| format!("{} {}", case.name, case.shape))?;
                let name = match target {
                    Target::Vulkan(_) => "spirv".to_string(),
                    _ => format!("{backend:?}").to_lowercase(),
                };
                contenders.push((name, th));
                runners.push(Box::new(move || p.kernel_time()));
            }
        }
        let total = budget * runners.len() as u32;
        let times = time_interleaved(&mut runners, total)
            .with_context(|| format!("{} {}", case.name, case.shape))?;
        let reference = matmul_n.filter(|_| !gpu).map(|_| times[0].as_secs_f64());
        let mut single: std::collections::HashMap<&str, f64> = Default::default();
        for ((be, th), t) in contenders.iter().zip(&times) {
            let secs = t.as_secs_f64();
            if *th == 1 {
                single.insert(be, secs);
            }
            let (rate, unit, versus) = match case.work {
                Work::Flops(f) => {
                    let mut v = Vec::new();
                    match reference {
                        Some(_) if be == "matrixmultiply" => v.push("reference".to_string()),
                        Some(r) => v.push(format!("{:.2}x matrixmultiply", r / secs)),
                        None => {}
                    }
                    if let (Some(s1), true) = (single.get(be.as_str()), *th > 1) {
                        v.push(format!("{:.2}x own 1-thread", s1 / secs));
                    }
                    (f / secs / 1e9, "GFLOP/s", v.join(", "))
                }
                Work::Bytes(b) => (
                    b / secs / 1e9,
                    "GB/s",
                    format!("{:.0}% of copy bandwidth", 100.0 * b / secs / copy[th]),
                ),
            };
            println!(
                "| {} | {} | {be} | {th} | {:.3} ms | {rate:.1} {unit} | {versus} |",
                case.name,
                case.shape,
                secs * 1e3
            );
            rows.push(serde_json::json!({"op": case.name, "shape": case.shape, "backend": be, "threads": th, "seconds": secs, "rate": rate, "unit": unit, "versus": versus}));
        }
    }
    if let Some(path) = a.json {
        let copy_gbs: serde_json::Map<String, serde_json::Value> = copy
            .iter()
            .map(|(t, bw)| (t.to_string(), serde_json::json!(bw / 1e9)))
            .collect();
        let doc = serde_json::json!({"target": target.to_string(), "copy_bandwidth_gbs_by_threads": copy_gbs, "rows": rows});
        kiln::atomic_file::write(&path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

fn available_backends() -> Vec<BackendChoice> {
    [
        cfg!(feature = "llvm").then_some(BackendChoice::Llvm),
        cfg!(feature = "cranelift").then_some(BackendChoice::Cranelift),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Bytes read plus written per second by `kernel_bench::copy_kernel` over 2 x 128 MiB on
/// `target` (the most every Vulkan device binds at once: llvmpipe's limit), fastest of
/// interleaved rounds lasting about `budget`.
fn shader_copy_bandwidth(target: &Target, budget: Duration) -> anyhow::Result<f64> {
    let n = 32 << 20;
    let case = kiln::kernel_bench::copy_kernel(n);
    let mut p = Prepared::new(&case, target, BackendChoice::Llvm, 1)
        .with_context(|| format!("the copy kernel on {target}"))?;
    let mut runners: Vec<Runner> = vec![Box::new(move || p.kernel_time())];
    let t = time_interleaved(&mut runners, budget)?[0];
    let Work::Bytes(bytes) = case.work else {
        anyhow::bail!("the copy kernel's work is not counted in bytes");
    };
    Ok(bytes / t.as_secs_f64())
}
