//! Compile-and-run in one call, for tests and benchmarks: the same path `kiln compile`
//! then `kiln run` take (artifact on disk, runtime session), without the command line.

use crate::assemble::{assemble, BackendChoice, Choices};
use anyhow::{anyhow, Result};
use kiln_compiler::Target;
use kiln_ir::Tensor;
use kiln_models::Model;
use kiln_runtime::session::{HostBuffer, Session};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes `model` compiled for `targets` to `path`.
pub fn compile_to(
    model: &Model,
    targets: &[Target],
    backend: BackendChoice,
    path: &Path,
) -> Result<()> {
    compile_with(model, targets, &Choices::new(backend), path)
}

/// Writes `model` compiled for `targets` with `choices` to `path`.
pub fn compile_with(
    model: &Model,
    targets: &[Target],
    choices: &Choices,
    path: &Path,
) -> Result<()> {
    assemble(model, targets, choices, &|_| {})?.write(path)
}

/// Inputs by name, in the order the artifact declares them.
pub fn ordered_inputs(
    session: &Session,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<HostBuffer>> {
    session
        .manifest()
        .inputs
        .iter()
        .map(|spec| {
            inputs
                .get(&spec.name)
                .map(HostBuffer::from)
                .ok_or_else(|| anyhow!("missing input `{}`", spec.name))
        })
        .collect()
}

/// Compiles `model` for one target, runs it once on `inputs`, returns outputs by name.
pub fn run_model(
    model: &Model,
    target: &Target,
    backend: BackendChoice,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.kiln");
    compile_to(model, std::slice::from_ref(target), backend, &path)?;
    let mut session = Session::new(&path, None)?;
    let ins = ordered_inputs(&session, inputs)?;
    let outs = session.run(&ins)?;
    let names = session.manifest().outputs.iter().map(|o| o.name.clone());
    names
        .zip(outs)
        .map(|(n, b)| Ok((n, b.to_tensor().map_err(|e| anyhow!(e))?)))
        .collect()
}
