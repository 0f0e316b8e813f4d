//! Running the Python reference scripts of tests/reference from end-to-end tests.
//!
//! They need a Python with `gguf` and `numpy`: `$KILN_PYTHON` (scripts/install-deps.sh
//! makes one in target/pyref and scripts/env.sh names it), else `python3`. Without them a
//! test says so and skips, unless KILN_REQUIRE_PYTHON_REFERENCE is set (CI sets it), when
//! their absence is a failure.
#![allow(dead_code)] // each test file uses its own subset

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn python() -> String {
    std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the reference can run here; prints why not (or panics where it must run).
pub fn reference_available() -> bool {
    let why = match Command::new(python())
        .args(["-c", "import gguf, numpy, regex"])
        .output()
    {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "{} lacks gguf/numpy: {}",
            python(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("{} cannot be run: {e}", python()),
    };
    if std::env::var_os("KILN_REQUIRE_PYTHON_REFERENCE").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// The source tree: where the test was built, unless `KILN_SOURCE_DIR` says otherwise
/// (scripts/gpu-check.sh runs test binaries built on another machine).
pub fn source_dir() -> PathBuf {
    std::env::var_os("KILN_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn script(name: &str) -> PathBuf {
    source_dir().join("tests/reference").join(name)
}

/// The `cuda:` target of this machine's GPU (or `KILN_CUDA_TARGET`, to test PTX of an older
/// capability that the driver compiles for the GPU), or `None` after printing why there is
/// no GPU. With `KILN_REQUIRE_CUDA=1` (scripts/gpu-check.sh) a missing GPU fails instead.
pub fn cuda_target() -> Option<String> {
    match kiln_runtime::cuda::device() {
        Ok((name, (major, minor))) => {
            eprintln!("CUDA device: {name}");
            let own = format!("cuda:sm_{major}{minor}");
            Some(std::env::var("KILN_CUDA_TARGET").unwrap_or(own))
        }
        Err(why) => {
            assert!(
                std::env::var("KILN_REQUIRE_CUDA").as_deref() != Ok("1"),
                "KILN_REQUIRE_CUDA=1 but there is no usable CUDA device: {why}"
            );
            eprintln!("skipped: no CUDA device: {why}");
            None
        }
    }
}

/// The `vulkan:` target the Vulkan tests compile for (`KILN_VULKAN_TARGET`, default
/// `vulkan:spv1.3`), or `None`, saying why, when no Vulkan device is usable here.
/// `KILN_REQUIRE_VULKAN=1` (set by CI, which installs Mesa's llvmpipe) makes that a failure.
pub fn vulkan_target() -> Option<String> {
    match kiln_runtime::vulkan::device() {
        Ok(name) => {
            eprintln!("Vulkan device: {name}");
            Some(std::env::var("KILN_VULKAN_TARGET").unwrap_or_else(|_| "vulkan:spv1.3".into()))
        }
        Err(why) => {
            assert!(
                std::env::var("KILN_REQUIRE_VULKAN").as_deref() != Ok("1"),
                "KILN_REQUIRE_VULKAN=1 but there is no usable Vulkan device: {why}"
            );
            eprintln!("skipped: no Vulkan device: {why}");
            None
        }
    }
}

/// Runs `script` with `args`; returns its standard output.
pub fn run_script(name: &str, args: &[&OsStr]) -> String {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn read_npy_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    npy.into_vec::<f32>().unwrap()
}
