//! `kiln run`: run an artifact on this host with inputs from `.npy` files.

use anyhow::{anyhow, bail, Context, Result};
use kiln_ir::{Bindings, Tensor};
use kiln_runtime::session::Session;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The artifact to run, or a .gguf model (compiled for this machine on first use and
    /// cached: see KILN_CACHE_DIR)
    pub artifact: PathBuf,
    /// An input, as NAME=FILE.npy; repeat for each input
    #[arg(short, long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Fill inputs not given with deterministic values, binding symbolic dims from
    /// SYMBOL=N pairs (e.g. --random-inputs batch=8)
    #[arg(long, value_name = "SYMBOL=N", num_args = 0.., value_delimiter = ',')]
    pub random_inputs: Option<Vec<String>>,
    /// Write each output to DIR/<name>.npy
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// CPU threads (default: all)
    #[arg(short, long, value_parser = super::thread_count())]
    pub threads: Option<usize>,
    /// Print each kernel's time (after one untimed run, so weights and code are warm)
    #[arg(long)]
    pub profile: bool,
    /// Generate text after this prompt (a decoder built from a GGUF file with a vocabulary)
    #[arg(short, long, value_name = "TEXT", conflicts_with = "tokens")]
    pub prompt: Option<String>,
    /// Generate from these prompt token ids instead, printing ids
    #[arg(long, value_name = "ID,ID,..", value_delimiter = ',', num_args = 1..)]
    pub tokens: Option<Vec<u32>>,
    /// Tokens to generate after the prompt
    #[arg(short = 'n', long, default_value_t = 64)]
    pub n_predict: usize,
    /// With a .gguf model: compile it with activations quantized for byte dot products
    /// (see `kiln compile --help`); cached apart from the plain build
    #[arg(long)]
    pub quantize_activations: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Sampling for generation; the defaults are greedy decoding.
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Temperature; 0 picks the most likely token every step
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Sample among the K most likely tokens (0: all)
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample among the most likely tokens whose probabilities sum to P
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise recently generated tokens (1: off)
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Recent tokens the repetition penalty considers
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Seed for sampling (the same seed gives the same tokens)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    fn options(&self) -> kiln::sampling::SamplingOptions {
        kiln::sampling::SamplingOptions {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}

/// Generation: the prompt's continuation streamed to stdout as it is produced (text with
/// --prompt, token ids with --tokens), speeds to stderr. Stops at end of sequence.
fn generate(session: Session, a: &Args) -> Result<()> {
    use std::io::Write;
    let opts = a.sampling.options();
    opts.check().map_err(|e| anyhow!(e))?;
    let mut gen = kiln::generate::Generator::new(session)?;
    let tokenizer = match &a.prompt {
        Some(_) => Some(gen.tokenizer()?.ok_or_else(|| {
            anyhow!(
                "{} carries no vocabulary; pass token ids with --tokens",
                a.artifact.display()
            )
        })?),
        None => None,
    };
    let prompt = match (&a.prompt, &tokenizer) {
        (Some(text), Some(t)) => t.encode(text).map_err(anyhow::Error::msg)?,
        _ => a.tokens.clone().unwrap_or_default(),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty and the vocabulary adds no BOS token: nothing to generate from");
    }
    let eos = tokenizer.as_ref().and_then(|t| t.eos());
    let mut sampler = kiln::sampling::Sampler::new(opts);
    let mut out = std::io::stdout().lock();
    let mut text = kiln_models::tokenizer::TextStream::default();
    if let (Some(p), Some(_)) = (&a.prompt, &tokenizer) {
        write!(out, "{p}")?;
    }
    let t = gen.generate(&prompt, a.n_predict, &mut sampler, &mut |tok| {
        if Some(tok) == eos {
            return false;
        }
        let _ = match &tokenizer {
            Some(tk) => write!(out, "{}", text.push(&tk.piece(tok, false))),
            None => write!(out, "{tok} "),
        };
        let _ = out.flush();
        true
    })?;
    write!(out, "{}", text.finish())?;
    writeln!(out)?;
    let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    eprintln!(
        "prompt: {} tokens in {:.1} ms ({:.1} tokens/s); generated: {} tokens in {:.1} ms ({:.1} tokens/s)",
        t.prompt_tokens,
        t.prefill.as_secs_f64() * 1e3,
        rate(t.prompt_tokens, t.prefill),
        t.generated,
        t.decode.as_secs_f64() * 1e3,
        rate(t.generated.saturating_sub(1), t.decode),
    );
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if a.artifact.is_dir() {
        bail!(
            "{0} is a folder: compile a Hugging Face checkpoint first (`kiln compile {0} -o \
             model.kiln`); `kiln run` takes an artifact or a .gguf file",
            a.artifact.display()
        );
    }
    let is_gguf = a.artifact.extension().is_some_and(|e| e == "gguf");
    if a.quantize_activations && !is_gguf {
        bail!(
            "--quantize-activations applies when kiln compiles a .gguf model; {} is compiled \
             already (pass it to `kiln compile` with the flag instead)",
            a.artifact.display()
        );
    }
    let path = if is_gguf {
        kiln::gguf_cache::artifact_for(&a.artifact, a.quantize_activations)?
    } else {
        a.artifact.clone()
    };
    let mut session = Session::new(&path, a.threads)?;
    eprintln!(
        "running {} on {} ({}), {} threads",
        session.manifest().model,
        session.variant().target,
        session.why(),
        session.threads()
    );
    if a.tokens.is_some() || a.prompt.is_some() {
        if !a.inputs.is_empty() || a.random_inputs.is_some() {
            bail!("--prompt and --tokens generate text; they do not combine with --input or --random-inputs");
        }
        return generate(session, &a);
    }
    let mut given: BTreeMap<String, Tensor> = BTreeMap::new();
    for spec in &a.inputs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--input `{spec}`: expected NAME=FILE.npy"))?;
        if !session.manifest().inputs.iter().any(|i| i.name == name) {
            let names: Vec<&str> = session
                .manifest()
                .inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect();
            bail!(
                "--input `{name}`: the model has no such input (inputs: {})",
                names.join(", ")
            );
        }
        given.insert(
            name.to_string(),
            kiln::npy::read(std::path::Path::new(file))?,
        );
    }
    if let Some(binds) = &a.random_inputs {
        let env = parse_bindings(binds)?;
        for (k, spec) in session.manifest().inputs.clone().iter().enumerate() {
            if given.contains_key(&spec.name) {
                continue;
            }
            let shape = kiln_ir::dim::eval_shape(&spec.shape, &env).map_err(|s| {
                anyhow!(
                    "input `{}` has dim `{s}`: bind it with --random-inputs {s}=N",
                    spec.name
                )
            })?;
            given.insert(
                spec.name.clone(),
                Tensor::seeded(spec.dtype, shape, 1 + k as u64, 1.0),
            );
        }
    }
    let inputs = kiln::session::ordered_inputs(&session, &given)
        .context("pass every input with --input NAME=FILE.npy, or --random-inputs")?;
    if a.profile {
        // A first run pages the weights in and warms the caches; profiling it would
        // mostly measure page faults.
        session.run(&inputs)?;
    }
    let t0 = Instant::now();
    let (outputs, timings) = if a.profile {
        session.run_profiled(&inputs).map(|(o, t)| (o, Some(t)))?
    } else {
        (session.run(&inputs)?, None)
    };
    let elapsed = t0.elapsed();
    for (spec, buf) in session.manifest().outputs.iter().zip(&outputs) {
        let t = buf.to_tensor().map_err(|e| anyhow!(e))?;
        let head: Vec<String> = t.data.iter().take(6).map(|v| format!("{v:.5}")).collect();
        println!(
            "{} {}{:?} = [{}{}]",
            spec.name,
            t.dtype,
            t.shape,
            head.join(", "),
            if t.numel() > 6 { ", ..." } else { "" }
        );
        if let Some(dir) = &a.output_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            kiln::npy::write(&dir.join(format!("{}.npy", spec.name)), &t)?;
        }
    }
    eprintln!("ran in {:.3} ms", elapsed.as_secs_f64() * 1e3);
    if let Some(t) = timings {
        for l in t {
            eprintln!(
                "  {:<24} {:>10.3} us",
                l.kernel,
                l.duration.as_secs_f64() * 1e6
            );
        }
    }
    Ok(())
}

fn parse_bindings(list: &[String]) -> Result<Bindings> {
    let mut env = Bindings::new();
    for b in list.iter().filter(|s| !s.is_empty()) {
        let (k, v) = b
            .split_once('=')
            .ok_or_else(|| anyhow!("`{b}`: expected SYMBOL=N"))?;
        let n: i64 = v
            .parse()
            .map_err(|_| anyhow!("`{b}`: {v} is not a whole number"))?;
        if n < 0 {
            bail!("`{b}`: dims cannot be negative");
        }
        env.insert(k.to_string(), n);
    }
    Ok(env)
}
