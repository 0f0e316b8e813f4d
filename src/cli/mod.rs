//! One module per subcommand.

pub mod bench;
pub mod bench_model;
pub mod compile;
pub mod embed;
pub mod inspect;
pub mod run;
pub mod targets;

/// Targets compiled in as defaults (the Nix package sets `KILN_DEFAULT_TARGETS`), else the host.
pub fn default_targets() -> Vec<String> {
    match option_env!("KILN_DEFAULT_TARGETS") {
        Some(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => vec!["cpu:native".to_string()],
    }
}

/// `--threads` values: at least one thread.
pub fn thread_count() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}
