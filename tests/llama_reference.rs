//! Tiny llama-family GGUF models (written by tests/reference/tiny_models.py with the `gguf`
//! package) compiled by kiln and run, against the NumPy reference implementation in
//! tests/reference/llama_ref.py: logits for every position of a prompt within the NMSE
//! bound of f32 models (1e-5). Quantized files are compared on their dequantized weights,
//! which is what both sides compute with.
//!
//! Needs a Python with `gguf` and `numpy` (`$KILN_PYTHON`, else `python3`); skips with the
//! reason otherwise, unless KILN_REQUIRE_PYTHON_REFERENCE is set (CI sets it).

use kiln::assemble::BackendChoice;
use kiln_compiler::Target;
use kiln_ir::{DType, Tensor};
use kiln_models::gguf::GgufFile;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const TOKENS: [i64; 7] = [1, 17, 42, 5, 95, 0, 63];

fn python() -> String {
    std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn reference_available() -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", "import gguf, numpy"])
        .output()
        .map_err(|e| format!("{} cannot be run: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} lacks gguf/numpy", python()))
    }
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(name)
}

fn run_python(args: &[&std::ffi::OsStr]) {
    let out = Command::new(python()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {:?}: {}",
        python(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_npy(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    npy.into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// ggml's normalised mean squared error: sum((a - b)^2) / sum(b^2).
fn nmse(got: &[f64], want: &[f64]) -> f64 {
    let err: f64 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
    let norm: f64 = want.iter().map(|b| b * b).sum();
    err / norm
}

#[test]
fn tiny_llama_family_logits_match_the_numpy_reference() {
    if let Err(why) = reference_available() {
        if std::env::var_os("KILN_REQUIRE_PYTHON_REFERENCE").is_some() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_python(&[script("tiny_models.py").as_os_str(), dir.path().as_os_str()]);
    let seq = TOKENS.len();
    let target: Target = "cpu:x86-64-v3".parse().unwrap();
    let mut report = Vec::new();
    for name in [
        "tiny-llama-F32",
        "tiny-llama-F16",
        "tiny-llama-Q8_0",
        "tiny-llama-Q4_0",
        "tiny-llama-Q5_1",
        "tiny-qwen2-F32",
    ] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let want_path = dir.path().join(format!("{name}.npy"));
        let mut args = vec![
            script("llama_ref.py").into_os_string(),
            gguf.clone().into_os_string(),
            want_path.clone().into_os_string(),
        ];
        args.extend(TOKENS.iter().map(|t| t.to_string().into()));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_python(&refs);
        let want = read_npy(&want_path);

        let file = GgufFile::open(&gguf).unwrap();
        let model = kiln_models::llama::load(&file).unwrap();
        let cfg = kiln_models::llama::LlamaConfig::from_gguf(&file).unwrap();
        let inputs = step_inputs(&cfg, &TOKENS, 0, &Caches::empty(&cfg));
        let outs = kiln::session::run_model(&model, &target, BackendChoice::Llvm, &inputs)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let logits = &outs["logits"];
        assert_eq!(logits.shape, vec![seq, 96], "{name}");
        let e = nmse(&logits.data, &want);
        report.push(format!("{name}: NMSE {e:.2e}"));
        assert!(
            e <= 1e-5,
            "{name}: logits NMSE {e:.3e} > 1e-5\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// Host-side KV caches: per layer, keys and values as [rows, kv_heads, head_dim].
struct Caches {
    k: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    rows: usize,
}

impl Caches {
    fn empty(cfg: &kiln_models::llama::LlamaConfig) -> Caches {
        Caches {
            k: vec![Vec::new(); cfg.layers],
            v: vec![Vec::new(); cfg.layers],
            rows: 0,
        }
    }

    fn append(&mut self, outs: &BTreeMap<String, Tensor>, rows: usize) {
        for l in 0..self.k.len() {
            self.k[l].extend_from_slice(&outs[&format!("k_new.{l}")].data);
            self.v[l].extend_from_slice(&outs[&format!("v_new.{l}")].data);
        }
        self.rows += rows;
    }
}

/// Inputs for running `tokens` at positions `start..` after the cached rows.
fn step_inputs(
    cfg: &kiln_models::llama::LlamaConfig,
    tokens: &[i64],
    start: usize,
    caches: &Caches,
) -> BTreeMap<String, Tensor> {
    let seq = tokens.len();
    let ints = |v: Vec<f64>| Tensor::new(DType::I32, vec![v.len()], v);
    let mut m = BTreeMap::from([
        (
            "tokens".to_string(),
            ints(tokens.iter().map(|&t| t as f64).collect()),
        ),
        (
            "pos".to_string(),
            ints((start..start + seq).map(|p| p as f64).collect()),
        ),
        (
            "past_pos".to_string(),
            ints((0..caches.rows).map(|p| p as f64).collect()),
        ),
    ]);
    let shape = vec![caches.rows, cfg.kv_heads, cfg.head_dim];
    for l in 0..cfg.layers {
        m.insert(
            format!("k_cache.{l}"),
            Tensor::new(DType::F32, shape.clone(), caches.k[l].clone()),
        );
        m.insert(
            format!("v_cache.{l}"),
            Tensor::new(DType::F32, shape.clone(), caches.v[l].clone()),
        );
    }
    m
}

#[test]
fn decoding_with_the_kv_cache_matches_the_whole_sequence() {
    if let Err(why) = reference_available() {
        if std::env::var_os("KILN_REQUIRE_PYTHON_REFERENCE").is_some() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_python(&[script("tiny_models.py").as_os_str(), dir.path().as_os_str()]);
    let target: Target = "cpu:x86-64-v3".parse().unwrap();
    for name in ["tiny-llama-Q8_0", "tiny-qwen2-F32"] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let want_path = dir.path().join(format!("{name}.npy"));
        let mut args = vec![
            script("llama_ref.py").into_os_string(),
            gguf.clone().into_os_string(),
            want_path.clone().into_os_string(),
        ];
        args.extend(TOKENS.iter().map(|t| t.to_string().into()));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_python(&refs);
        let want = read_npy(&want_path);
        let file = GgufFile::open(&gguf).unwrap();
        let cfg = kiln_models::llama::LlamaConfig::from_gguf(&file).unwrap();
        let model = kiln_models::llama::load(&file).unwrap();
        let art = dir.path().join(format!("{name}.kiln"));
        kiln::session::compile_to(
            &model,
            std::slice::from_ref(&target),
            BackendChoice::Llvm,
            &art,
        )
        .unwrap();
        let mut session = kiln_runtime::session::Session::new(&art, None).unwrap();
        let mut run = |inputs: &BTreeMap<String, Tensor>| -> BTreeMap<String, Tensor> {
            let ins = kiln::session::ordered_inputs(&session, inputs).unwrap();
            let outs = session.run(&ins).unwrap_or_else(|e| panic!("{name}: {e}"));
            let names = session.manifest().outputs.iter().map(|o| o.name.clone());
            names
                .zip(outs)
                .map(|(n, b)| (n, b.to_tensor().unwrap()))
                .collect()
        };
        // Prefill four tokens, then decode the other three one at a time.
        let mut caches = Caches::empty(&cfg);
        let mut logits = Vec::new();
        let outs = run(&step_inputs(&cfg, &TOKENS[..4], 0, &caches));
        logits.extend_from_slice(&outs["logits"].data);
        caches.append(&outs, 4);
        for (p, &t) in TOKENS.iter().enumerate().skip(4) {
            let outs = run(&step_inputs(&cfg, &[t], p, &caches));
            assert_eq!(outs["logits"].shape, vec![1, cfg.vocab]);
            logits.extend_from_slice(&outs["logits"].data);
            caches.append(&outs, 1);
        }
        let e = nmse(&logits, &want);
        eprintln!("{name}: prefill 4 + 3 decode steps, NMSE {e:.2e}");
        assert!(e <= 1e-5, "{name}: NMSE {e:.3e} > 1e-5 with the KV cache");
    }
}

#[test]
fn greedy_generation_matches_the_reference_for_32_tokens() {
    if let Err(why) = reference_available() {
        if std::env::var_os("KILN_REQUIRE_PYTHON_REFERENCE").is_some() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_python(&[script("tiny_models.py").as_os_str(), dir.path().as_os_str()]);
    let prompt: [u32; 3] = [1, 17, 42];
    for name in ["tiny-llama-Q8_0", "tiny-qwen2-F32"] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let mut cmd = Command::new(python());
        cmd.arg(script("llama_ref.py"))
            .arg(&gguf)
            .args(["--greedy", "32"]);
        cmd.args(prompt.iter().map(|t| t.to_string()));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: Vec<u32> = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(want.len(), 32);

        let file = GgufFile::open(&gguf).unwrap();
        let model = kiln_models::llama::load(&file).unwrap();
        let art = dir.path().join(format!("{name}.kiln"));
        let target: Target = "cpu:x86-64-v3".parse().unwrap();
        kiln::session::compile_to(
            &model,
            std::slice::from_ref(&target),
            BackendChoice::Llvm,
            &art,
        )
        .unwrap();
        let session = kiln_runtime::session::Session::new(&art, None).unwrap();
        let mut gen = kiln::generate::Generator::new(session).unwrap();
        let mut sampler = kiln::sampling::Sampler::new(Default::default());
        let mut got = Vec::new();
        gen.generate(&prompt, 32, &mut sampler, &mut |t| {
            got.push(t);
            true
        })
        .unwrap();
        assert_eq!(got, want, "{name}: greedy tokens differ from the reference");
        eprintln!("{name}: 32 greedy tokens identical: {got:?}");

        // The command line: compile the GGUF file, generate 8 tokens.
        let kiln = env!("CARGO_BIN_EXE_kiln");
        let art = dir.path().join(format!("{name}-cli.kiln"));
        let c = Command::new(kiln)
            .arg("compile")
            .arg(&gguf)
            .args(["-t", "cpu:x86-64-v3", "-q", "-o"])
            .arg(&art)
            .output()
            .unwrap();
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
        let r = Command::new(kiln)
            .arg("run")
            .arg(&art)
            .args(["--tokens", "1,17,42", "-n", "8"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{err}");
        let printed: Vec<u32> = String::from_utf8_lossy(&r.stdout)
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(printed, want[..8], "{name}: kiln run --tokens");
        assert!(err.contains("tokens/s"), "speeds are reported: {err}");
    }
}
