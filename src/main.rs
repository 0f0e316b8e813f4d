//! The `kiln` command: compile a model for a list of targets into one artifact, run it,
//! inspect it, list targets, benchmark kernels.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Ahead-of-time compiler for neural-network graphs",
    long_about = "kiln compiles a model (a llama-family .gguf file, a .kir graph, or a built-in \
model) for one or more targets into a single .kiln artifact, and runs that artifact on the best \
target the host supports.\n\n\
Targets are spelled <family>:<arch>: cpu:x86-64-v3, cpu:x86-64-v4, cpu:znver4, cpu:aarch64, \
cpu:native, cuda:sm_90 (NVIDIA, PTX), hip:gfx1100 (AMD code objects; compiled, not yet run).\n\
Run `kiln targets` to see what this build can emit and what this host can run."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a model into a .kiln artifact
    Compile(cli::compile::Args),
    /// Run an artifact (or a .gguf model, compiled and cached on first use) on this host
    Run(cli::run::Args),
    /// Sentence embeddings from an encoder (a BERT .gguf or its artifact), as JSON or .npy
    Embed(cli::embed::Args),
    /// Show what an artifact holds: targets, kernels, arena, weights
    Inspect(cli::inspect::Args),
    /// List the targets this build can emit and this host can run
    Targets,
    /// Benchmark kernels against reference libraries and the machine's bandwidth
    Bench(cli::bench::Args),
}

fn main() -> ExitCode {
    // `kiln inspect x.kiln | head` should end quietly when head stops reading, as other
    // command-line tools do, rather than panic on the closed pipe.
    // SAFETY: resetting a signal's disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile(a) => cli::compile::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Embed(a) => cli::embed::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Targets => cli::targets::run(),
        Command::Bench(a) => cli::bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
