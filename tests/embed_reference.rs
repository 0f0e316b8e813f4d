//! BERT encoders end to end: the tiny BERT GGUF files (`tests/reference/tiny_models.py`)
//! compiled for the CPU, embedded through `kiln::embed` and `kiln embed`, against the NumPy
//! encoder and Python WordPiece tokenizer of `tests/reference/bert_ref.py`.

mod common;

use common::{reference_available, run_script, vulkan_target};
use kiln::assemble::{BackendChoice, Choices};
use kiln::embed::Embedder;
use kiln_models::gguf::GgufFile;
use kiln_runtime::session::Session;
use std::path::{Path, PathBuf};
use std::process::Command;

const TEXTS: [&str; 4] = [
    "The cat sat on the mat.",
    "Kilns compiled, naïve 123!",
    "a dog and a cat; the models compile",
    "zzz-top's ?!",
];

fn compiled(gguf: &Path, target: &str) -> PathBuf {
    let model = kiln_models::load_gguf(&GgufFile::open(gguf).unwrap()).unwrap();
    let art = gguf.with_extension(format!("{}.kiln", target.replace(':', "-")));
    let t: kiln_compiler::Target = target.parse().unwrap();
    let choices = Choices::new(BackendChoice::Llvm);
    kiln::session::compile_with(&model, std::slice::from_ref(&t), &choices, &art).unwrap();
    art
}

/// (ids, embedding) per text from the reference.
fn reference(gguf: &Path) -> Vec<(Vec<u32>, Vec<f64>)> {
    let mut args = vec![gguf.as_os_str()];
    args.extend(TEXTS.iter().map(std::ffi::OsStr::new));
    run_script("bert_ref.py", &args)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = v["ids"].as_array().unwrap().iter();
            let emb = v["embedding"].as_array().unwrap().iter();
            (
                ids.map(|x| x.as_u64().unwrap() as u32).collect(),
                emb.map(|x| x.as_f64().unwrap()).collect(),
            )
        })
        .collect()
}

fn nmse(got: &[f32], want: &[f64]) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(&a, b)| (a as f64 - b).powi(2))
        .sum();
    err / want.iter().map(|b| b * b).sum::<f64>()
}

fn tiny_models(dir: &Path) {
    run_script("tiny_models.py", &[dir.as_os_str()]);
}

/// Token ids equal the reference's, and the mean-pooled embedding matches it (NMSE <= 1e-5:
/// the reference decodes the same quantized weights, so only rounding differs).
fn embeddings_match_the_reference(target: &str) {
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    for name in ["tiny-bert-F32", "tiny-bert-Q8_0"] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let want = reference(&gguf);
        assert_eq!(want.len(), TEXTS.len());
        let mut e = Embedder::new(Session::new(compiled(&gguf, target), None).unwrap()).unwrap();
        for (text, (ids, emb)) in TEXTS.iter().zip(&want) {
            assert_eq!(
                &e.tokenizer().encode(text).unwrap(),
                ids,
                "{name}: {text:?}"
            );
            let got = e.embed(text, false).unwrap();
            assert_eq!(got.len(), emb.len());
            let err = nmse(&got, emb);
            eprintln!("{name} on {target}: {text:?}: NMSE {err:.2e}");
            assert!(err <= 1e-5, "{name}: {text:?}: NMSE {err:.3e}");
        }
    }
}

#[test]
fn bert_embeddings_match_the_numpy_reference() {
    if reference_available() {
        embeddings_match_the_reference("cpu:x86-64-v3");
    }
}

/// The same through SPIR-V (llvmpipe in CI). Skipped, saying why, without a Vulkan device.
#[test]
fn bert_embeddings_match_the_numpy_reference_on_vulkan() {
    if let (true, Some(gpu)) = (reference_available(), vulkan_target()) {
        embeddings_match_the_reference(&gpu);
    }
}

/// `kiln embed` writes unit vectors (JSON on stdout, or .npy with -o) equal to the library's,
/// and refuses a decoder and an unknown output format by name.
#[test]
fn kiln_embed_writes_normalised_vectors_as_json_and_npy() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    let art = compiled(&dir.path().join("tiny-bert-F32.gguf"), "cpu:x86-64-v3");
    let mut e = Embedder::new(Session::new(&art, None).unwrap()).unwrap();
    let want: Vec<Vec<f32>> = TEXTS[..2]
        .iter()
        .map(|t| e.embed(t, true).unwrap())
        .collect();
    let kiln = |extra: &[&str]| {
        let r = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("embed")
            .arg(&art)
            .args(["-p", TEXTS[0], "-p", TEXTS[1]])
            .args(extra)
            .output()
            .unwrap();
        (
            r.status.success(),
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    };
    let (ok, out, err) = kiln(&[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dims"], 64);
    for (row, want) in v["embeddings"].as_array().unwrap().iter().zip(&want) {
        let got: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(&got, want);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
    let npy = dir.path().join("e.npy");
    let (ok, _, err) = kiln(&["-o", npy.to_str().unwrap()]);
    assert!(ok, "{err}");
    let flat = common::read_npy_f32(&npy);
    assert_eq!(flat, want.concat());
    let (ok, _, err) = kiln(&["-o", dir.path().join("e.txt").to_str().unwrap()]);
    assert!(!ok && err.contains("a .npy or .json file"), "{err}");

    let decoder = compiled(&dir.path().join("tiny-llama-F32.gguf"), "cpu:x86-64-v3");
    let r = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["embed"])
        .arg(&decoder)
        .args(["-p", "hello"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("is not an encoder"),
        "{err}"
    );
}
