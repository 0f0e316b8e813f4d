//! Bad input gets a clear message naming the problem and a non-zero exit, never a panic:
//! malformed .kir, wrong shapes, unknown targets, damaged artifacts, wrong .npy inputs.

use object::Object;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    kiln_with(args, &[])
}

/// Runs kiln with extra environment variables.
fn kiln_with(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .output()
        .expect("the kiln binary runs")
}

/// Runs kiln expecting failure; returns stderr after checking it is an error, not a panic.
fn fails(args: &[&str]) -> String {
    fails_with(args, &[])
}

fn fails_with(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> String {
    let out = kiln_with(args, env);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "kiln {args:?} succeeded; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "kiln {args:?} panicked: {err}");
    assert_eq!(out.status.code(), Some(1), "kiln {args:?}: {err}");
    err
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = "kir 1\n%x = input \"x\" f32[n,8]\n%y = relu %x\noutput \"y\" = %y\n";

fn compiled(dir: &Path) -> PathBuf {
    compiled_for(dir, "cpu:x86-64")
}

/// The GOOD model compiled for `targets` into `dir`; returns the artifact's path.
fn compiled_for(dir: &Path, targets: &str) -> PathBuf {
    let src = write(dir, "good.kir", GOOD);
    let out = dir.join("good.kiln");
    let r = kiln(&[
        "compile",
        src.to_str().unwrap(),
        "-t",
        targets,
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

#[test]
fn malformed_kir_names_line_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        ("%x = input \"x\" f32[2]\n", "kir 1"),
        (
            "kir 1\n%x = input \"x\" f99[2]\noutput \"y\" = %x\n",
            "line 2",
        ),
        (
            "kir 1\n%x = input \"x\" f32[2]\n%y = frobnicate %x\noutput \"y\" = %y\n",
            "frobnicate",
        ),
        (
            "kir 1\n%x = input \"x\" f32[2]\n%y = relu %zz\noutput \"y\" = %y\n",
            "%zz",
        ),
    ] {
        let p = write(dir.path(), "bad.kir", text);
        let err = fails(&[
            "compile",
            p.to_str().unwrap(),
            "-t",
            "cpu:x86-64",
            "-o",
            dir.path().join("o.kiln").to_str().unwrap(),
        ]);
        assert!(
            err.contains("bad.kir") && err.contains(want),
            "want `{want}` in: {err}"
        );
    }
    assert!(
        !dir.path().join("o.kiln").exists(),
        "nothing is written for a failed compile"
    );
}

#[test]
fn wrong_shapes_name_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "shape.kir", "kir 1\n%a = input \"a\" f32[3,4]\n%b = input \"b\" f32[5,6]\n%c = matmul %a, %b transpose_a=false transpose_b=false\noutput \"c\" = %c\n");
    let err = fails(&["compile", p.to_str().unwrap(), "-t", "cpu:x86-64"]);
    assert!(
        err.contains("matmul") && err.contains("inner dims differ"),
        "{err}"
    );
}

#[test]
fn unknown_targets_and_models_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "good.kir", GOOD);
    let err = fails(&["compile", p.to_str().unwrap(), "-t", "gpu:fast"]);
    assert!(
        err.contains("unknown target `gpu:fast`") && err.contains("cpu:x86-64-v3"),
        "{err}"
    );
    let err = fails(&["compile", p.to_str().unwrap(), "-t", "cpu:notacpu"]);
    assert!(err.contains("notacpu"), "{err}");
    let err = fails(&["compile", "builtin:nope"]);
    assert!(
        err.contains("unknown built-in model") && err.contains("builtin:mlp"),
        "{err}"
    );
    let err = fails(&["compile", dir.path().join("missing.kir").to_str().unwrap()]);
    assert!(err.contains("missing.kir"), "{err}");
    let err = fails(&["compile", "model.onnx"]);
    assert!(err.contains("unsupported model format `.onnx`"), "{err}");
}

#[test]
fn bad_gguf_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "text.gguf", "hello");
    let err = fails(&["compile", text.to_str().unwrap()]);
    assert!(err.contains("not a GGUF file"), "{err}");
    // A valid, empty GGUF v3 file: no architecture.
    let mut empty = b"GGUF".to_vec();
    empty.extend(3u32.to_le_bytes());
    empty.extend(0u64.to_le_bytes());
    empty.extend(0u64.to_le_bytes());
    let p = dir.path().join("empty.gguf");
    std::fs::write(&p, &empty).unwrap();
    let err = fails(&["compile", p.to_str().unwrap()]);
    assert!(err.contains("`general.architecture` is missing"), "{err}");
    let truncated = dir.path().join("cut.gguf");
    std::fs::write(&truncated, &empty[..10]).unwrap();
    let err = fails(&["compile", truncated.to_str().unwrap()]);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn zero_threads_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let art = compiled(dir.path());
    // Usage errors exit with clap's status 2, before anything runs.
    for args in [
        vec![
            "run",
            art.to_str().unwrap(),
            "--random-inputs",
            "n=2",
            "-t",
            "0",
        ],
        vec!["bench", "--threads", "1,0"],
    ] {
        let out = kiln(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "kiln {args:?}: {err}");
        assert!(err.contains("invalid value '0' for '--threads"), "{err}");
    }
}

#[test]
fn params_without_data_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "p.kir", "kir 1\n%x = input \"x\" f32[2]\n%w = param \"w\" f32[2]\n%y = add %x, %w\noutput \"y\" = %y\n");
    let err = fails(&["compile", p.to_str().unwrap(), "-t", "cpu:x86-64"]);
    assert!(
        err.contains("declares parameters (w)") && err.contains("--seed"),
        "{err}"
    );
}

#[test]
fn damaged_artifacts_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let art = compiled(dir.path());
    let bytes = std::fs::read(&art).unwrap();
    let case = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        let err = fails(&["run", p.to_str().unwrap(), "--random-inputs", "n=2"]);
        let err2 = fails(&["inspect", p.to_str().unwrap()]);
        (err, err2)
    };
    for cut in [4, 20, 100, bytes.len() / 2, bytes.len() - 1] {
        let (e, e2) = case("cut.kiln", &bytes[..cut]);
        assert!(
            e.contains("cut.kiln") && e2.contains("cut.kiln"),
            "truncated at {cut}: {e} / {e2}"
        );
    }
    let mut foreign = bytes.clone();
    foreign[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    let (e, _) = case("foreign.kiln", &foreign);
    assert!(e.contains("not a kiln artifact"), "{e}");
    let mut flipped = bytes.clone();
    let at = bytes.len() - 40;
    flipped[at] ^= 0x55;
    let (e, _) = case("flipped.kiln", &flipped);
    assert!(e.contains("corrupted"), "{e}");
    let (e, _) = case("empty.kiln", b"");
    assert!(e.contains("empty.kiln"), "{e}");
}

/// Folders (Hugging Face checkpoints) are compiled, not run; a bad one is named.
#[test]
fn folders_are_compiled_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let err = fails(&["run", d]);
    assert!(
        err.contains("is a folder") && err.contains("kiln compile"),
        "{err}"
    );
    let err = fails(&["compile", d, "-q"]);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn missing_and_mismatched_inputs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let art = compiled(dir.path());
    let a = art.to_str().unwrap();
    let err = fails(&["run", a]);
    assert!(err.contains("missing input `x`"), "{err}");
    let err = fails(&["run", a, "--input", "nope=x.npy"]);
    assert!(err.contains("no such input") && err.contains("x"), "{err}");
    let err = fails(&["run", a, "--input", "x"]);
    assert!(err.contains("NAME=FILE.npy"), "{err}");
    let err = fails(&[
        "run",
        a,
        "--input",
        &format!("x={}", dir.path().join("absent.npy").display()),
    ]);
    assert!(err.contains("absent.npy"), "{err}");
    let junk = write(dir.path(), "junk.npy", "this is not numpy");
    let err = fails(&["run", a, "--input", &format!("x={}", junk.display())]);
    assert!(
        err.contains("junk.npy") && err.contains("not a valid .npy"),
        "{err}"
    );
    // Right file format, wrong shape: last dim must be 8.
    let t = kiln_ir::Tensor::seeded(kiln_ir::DType::F32, vec![2, 5], 1, 1.0);
    let wrong = dir.path().join("wrong.npy");
    kiln::npy::write(&wrong, &t).unwrap();
    let err = fails(&["run", a, "--input", &format!("x={}", wrong.display())]);
    assert!(
        err.contains("x") && err.contains("8") && err.contains("5"),
        "{err}"
    );
    let t = kiln_ir::Tensor::seeded(kiln_ir::DType::I32, vec![2, 8], 1, 1.0);
    kiln::npy::write(&wrong, &t).unwrap();
    let err = fails(&["run", a, "--input", &format!("x={}", wrong.display())]);
    assert!(err.contains("i32") && err.contains("f32"), "{err}");
    let err = fails(&["run", a, "--random-inputs"]);
    assert!(err.contains("n=N"), "{err}");
}

#[test]
fn a_good_run_writes_npy_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let art = compiled(dir.path());
    let x = kiln_ir::Tensor::new(
        kiln_ir::DType::F32,
        vec![1, 8],
        vec![-1.0, 2.0, -3.0, 4.0, 0.5, -0.5, 0.0, 7.0],
    );
    let xp = dir.path().join("x.npy");
    kiln::npy::write(&xp, &x).unwrap();
    let outdir = dir.path().join("out");
    let r = kiln(&[
        "run",
        art.to_str().unwrap(),
        "--input",
        &format!("x={}", xp.display()),
        "-o",
        outdir.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let y = kiln::npy::read(&outdir.join("y.npy")).unwrap();
    assert_eq!(y.data, vec![0.0, 2.0, 0.0, 4.0, 0.5, 0.0, 0.0, 7.0]);
}

#[test]
fn aarch64_artifacts_hold_valid_aarch64_objects() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("arm.kiln");
    let r = kiln(&[
        "compile",
        "builtin:mlp",
        "-t",
        "cpu:aarch64",
        "-t",
        "cpu:neoverse-v1",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let art = kiln_runtime::artifact::Artifact::open(&out).unwrap();
    for (i, v) in art.manifest().variants.iter().enumerate() {
        let code = art.code(i).unwrap();
        let file = object::File::parse(code).unwrap_or_else(|e| panic!("{}: {e}", v.target));
        assert_eq!(
            file.architecture(),
            object::Architecture::Aarch64,
            "{}",
            v.target
        );
        assert_eq!(file.kind(), object::ObjectKind::Dynamic, "{}", v.target);
        let exported: Vec<String> = file
            .exports()
            .unwrap()
            .iter()
            .map(|e| String::from_utf8_lossy(e.name()).to_string())
            .collect();
        for k in &v.kernels {
            assert!(
                exported.contains(&format!("kiln_{k}")),
                "{}: kiln_{k} not exported ({exported:?})",
                v.target
            );
        }
    }
    // This x86-64 host cannot run it, and says why.
    let err = fails(&["run", out.to_str().unwrap(), "--random-inputs", "batch=1"]);
    assert!(err.contains("aarch64"), "{err}");
}

/// A CUDA-only artifact on a machine without a usable GPU: the run says why and exits 1.
/// (On the GPU machine the same artifact runs; scripts/gpu-check.sh covers that.)
#[test]
fn cuda_artifacts_without_a_gpu_say_why() {
    if let Ok((name, _)) = kiln_runtime::cuda::device() {
        eprintln!("skipped: this machine has a CUDA device ({name}), so the artifact would run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let art = compiled_for(dir.path(), "cuda:sm_90");
    let err = fails(&["run", art.to_str().unwrap()]);
    assert!(
        err.contains("no variant of model") && err.contains("cuda:sm_90 needs "),
        "{err}"
    );
}

/// A HIP artifact compiles here (code objects for AMD GPUs), and `kiln run` says plainly why
/// it cannot run it.
#[test]
fn hip_artifacts_compile_and_say_why_they_do_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let art = compiled_for(dir.path(), "hip:gfx1100,hip:gfx90a:xnack-");
    let err = fails(&["run", art.to_str().unwrap()]);
    assert!(
        err.contains("hip:gfx1100 needs an AMD GPU with ROCm"),
        "{err}"
    );
}

/// A Vulkan artifact where the loader finds no driver: the run says why and exits 1.
#[test]
fn vulkan_artifacts_without_a_driver_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let art = compiled_for(dir.path(), "vulkan:spv1.3");
    let none = dir.path().join("no-such-icd.json");
    let none = none.as_os_str();
    let err = fails_with(
        &["run", art.to_str().unwrap()],
        &[("VK_ICD_FILENAMES", none), ("VK_DRIVER_FILES", none)],
    );
    assert!(
        err.contains("no variant of model")
            && err.contains("vulkan:spv1.3 ")
            && err.contains("Vulkan"),
        "{err}"
    );
}

/// The driver's compiled pipelines are kept under the cache directory, so a second run of
/// the same artifact reuses them, and produces the same outputs.
#[test]
fn vulkan_pipelines_are_cached_on_disk() {
    if let Err(why) = kiln_runtime::vulkan::device() {
        assert!(
            std::env::var("KILN_REQUIRE_VULKAN").as_deref() != Ok("1"),
            "KILN_REQUIRE_VULKAN=1 but there is no usable Vulkan device: {why}"
        );
        eprintln!("skipped: no Vulkan device: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let art = compiled_for(dir.path(), "vulkan:spv1.3");
    let cache = dir.path().join("cache");
    let run = || {
        let r = kiln_with(
            &["run", art.to_str().unwrap(), "--random-inputs", "n=3"],
            &[("KILN_CACHE_DIR", cache.as_os_str())],
        );
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).to_string()
    };
    let first = run();
    let files: Vec<PathBuf> = std::fs::read_dir(cache.join("vulkan"))
        .expect("the first run writes a pipeline cache")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 0);
    assert_eq!(
        run(),
        first,
        "a run with the cached pipelines computes the same"
    );
}
