//! Tiny llama-family GGUF models (written by tests/reference/tiny_models.py with the `gguf`
//! package) compiled by kiln and run, against the NumPy reference implementation in
//! tests/reference/llama_ref.py: logits within the NMSE bound of f32 models (1e-5), with
//! and without the KV cache, and greedy generation token for token. Quantized files are
//! compared on their dequantized weights, which is what both sides compute with.
//!
//! Needs the Python reference packages (see `common`).

mod carry;
mod common;

use common::{cuda_target, read_npy_f32, reference_available, run_script, vulkan_target};
use kiln::assemble::BackendChoice;
use kiln_compiler::Target;
use kiln_ir::{DType, Tensor};
use kiln_models::gguf::GgufFile;
use kiln_models::llama::LlamaConfig;
use kiln_models::tokenizer::{Tokenizer, Vocab};
use kiln_runtime::session::Session;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKENS: [i64; 7] = [1, 17, 42, 5, 95, 0, 63];
const TARGET: &str = "cpu:x86-64-v3";

/// The tiny models, written once per test into `dir`.
fn tiny_models(dir: &Path) {
    run_script("tiny_models.py", &[dir.as_os_str()]);
}

/// The reference's logits for `TOKENS` on `gguf`, [seq, vocab] flattened.
fn reference_logits(gguf: &Path) -> Vec<f64> {
    reference_logits_with(gguf, &[])
}

/// `reference_logits` with the reference's `flags` first.
fn reference_logits_with(gguf: &Path, flags: &[&str]) -> Vec<f64> {
    let out = gguf.with_extension("npy");
    let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
    args.extend([gguf.into(), out.clone().into()]);
    args.extend(TOKENS.iter().map(|t| t.to_string().into()));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run_script("llama_ref.py", &refs);
    read_npy_f32(&out).into_iter().map(f64::from).collect()
}

/// `gguf` compiled for the test target into an artifact beside it.
fn compiled(gguf: &Path) -> (LlamaConfig, PathBuf) {
    compiled_for(gguf, TARGET)
}

fn compiled_for(gguf: &Path, target: &str) -> (LlamaConfig, PathBuf) {
    compiled_with(
        gguf,
        target,
        &kiln::assemble::Choices::new(BackendChoice::Llvm),
    )
}

/// `gguf` compiled for `target` with `choices`; artifacts with quantized activations are
/// named apart.
fn compiled_with(
    gguf: &Path,
    target: &str,
    choices: &kiln::assemble::Choices,
) -> (LlamaConfig, PathBuf) {
    let file = GgufFile::open(gguf).unwrap();
    let cfg = LlamaConfig::from_gguf(&file).unwrap();
    let model = kiln_models::llama::load(&file).unwrap();
    let tag = if choices.quantize_activations {
        ".q8"
    } else {
        ""
    };
    let art = gguf.with_extension(format!("{}{tag}.kiln", target.replace(':', "-")));
    let target: Target = target.parse().unwrap();
    kiln::session::compile_with(&model, std::slice::from_ref(&target), choices, &art).unwrap();
    (cfg, art)
}

/// ggml's normalised mean squared error: sum((a - b)^2) / sum(b^2).
fn nmse(got: &[f64], want: &[f64]) -> f64 {
    let err: f64 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
    let norm: f64 = want.iter().map(|b| b * b).sum();
    err / norm
}

/// Host-side KV caches: per layer, keys and values as [rows, kv_heads, head_dim].
struct Caches {
    k: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    rows: usize,
}

impl Caches {
    fn empty(cfg: &LlamaConfig) -> Caches {
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

    /// Inputs for running `tokens` at positions `start..` after the cached rows.
    fn inputs(&self, cfg: &LlamaConfig, tokens: &[i64], start: usize) -> BTreeMap<String, Tensor> {
        let ints = |v: Vec<f64>| Tensor::new(DType::I32, vec![v.len()], v);
        let mut m = BTreeMap::from([
            (
                "tokens".to_string(),
                ints(tokens.iter().map(|&t| t as f64).collect()),
            ),
            (
                "pos".to_string(),
                ints((start..start + tokens.len()).map(|p| p as f64).collect()),
            ),
            (
                "past_pos".to_string(),
                ints((0..self.rows).map(|p| p as f64).collect()),
            ),
            // Every row's logits, to compare each position with the reference.
            (
                "logit_rows".to_string(),
                ints((0..tokens.len()).map(|r| r as f64).collect()),
            ),
        ]);
        let shape = vec![self.rows, cfg.kv_heads, cfg.head_dim];
        for l in 0..cfg.layers {
            let t = |d: &Vec<f64>| Tensor::new(DType::F32, shape.clone(), d.clone());
            m.insert(format!("k_cache.{l}"), t(&self.k[l]));
            m.insert(format!("v_cache.{l}"), t(&self.v[l]));
        }
        m
    }
}

fn run(session: &mut Session, inputs: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let ins = kiln::session::ordered_inputs(session, inputs).unwrap();
    let outs = session.run(&ins).unwrap();
    let names = session.manifest().outputs.iter().map(|o| o.name.clone());
    names
        .zip(outs)
        .map(|(n, b)| (n, b.to_tensor().unwrap()))
        .collect()
}

#[test]
fn tiny_llama_family_logits_match_the_numpy_reference() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    let mut report = Vec::new();
    for name in [
        "tiny-llama-F32",
        "tiny-llama-F16",
        "tiny-llama-Q8_0",
        "tiny-llama-Q4_0",
        "tiny-llama-Q4_1",
        "tiny-llama-Q5_0",
        "tiny-llama-Q5_1",
        "tiny-llama-Q4_K_M",
        "tiny-llama-Q5_K_M",
        "tiny-qwen2-F32",
        "tiny-gpt2-F32",
        "tiny-gpt2-Q8_0",
    ] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let want = reference_logits(&gguf);
        let (cfg, art) = compiled(&gguf);
        let mut session = Session::new(&art, None).unwrap();
        let outs = run(&mut session, &Caches::empty(&cfg).inputs(&cfg, &TOKENS, 0));
        let logits = &outs["logits"];
        assert_eq!(logits.shape, vec![TOKENS.len(), cfg.vocab], "{name}");
        let e = nmse(&logits.data, &want);
        report.push(format!("{name}: NMSE {e:.2e}"));
        assert!(e <= 1e-5, "{name}: logits NMSE {e:.3e} > 1e-5");
    }
    eprintln!("{}", report.join("\n"));
}

/// Hugging Face checkpoint folders, written from the tiny GGUF files by `hf_checkpoint.py`
/// (Q/K rows back in rotate_half order, F32 or F16 matrices, one file or shards, qwen2's
/// vocabulary as a tokenizer.json), give the NumPy reference's logits for the GGUF file.
#[test]
fn hugging_face_checkpoints_match_the_numpy_reference() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    for (name, kind, shards, tolerance) in [
        ("tiny-llama-F32", "F32", "1", 1e-5),
        ("tiny-qwen2-F32", "F32", "2", 1e-5),
        ("tiny-llama-F32", "F16", "1", 1e-3),
    ] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let folder = dir.path().join(format!("{name}-hf-{kind}-{shards}"));
        run_script(
            "hf_checkpoint.py",
            &[
                gguf.as_os_str(),
                folder.as_os_str(),
                kind.as_ref(),
                shards.as_ref(),
            ],
        );
        let cfg = LlamaConfig::from_gguf(&GgufFile::open(&gguf).unwrap()).unwrap();
        let model = kiln_models::hf::load_dir(&folder).unwrap();
        if name == "tiny-qwen2-F32" {
            // Its tokenizer.json (the same BPE) encodes and decodes as the GGUF vocabulary.
            let from_gguf = Vocab::from_gguf(&GgufFile::open(&gguf).unwrap()).unwrap();
            let gguf_tok = Tokenizer::new(from_gguf.unwrap()).unwrap();
            let hf_tok = Tokenizer::new(model.vocab.clone().expect("tokenizer.json")).unwrap();
            for text in ["the cat sat", "<|im_start|>naïve 日本 12345<|im_end|>\n"] {
                let ids = hf_tok.encode(text).unwrap();
                assert_eq!(ids, gguf_tok.encode(text).unwrap(), "{text:?}");
                assert_eq!(hf_tok.decode(&ids), gguf_tok.decode(&ids));
            }
            assert_eq!(hf_tok.eos(), gguf_tok.eos());
        }
        let art = folder.with_extension("kiln");
        let target: Target = TARGET.parse().unwrap();
        let choices = kiln::assemble::Choices::new(BackendChoice::Llvm);
        kiln::session::compile_with(&model, std::slice::from_ref(&target), &choices, &art).unwrap();
        let mut session = Session::new(&art, None).unwrap();
        let outs = run(&mut session, &Caches::empty(&cfg).inputs(&cfg, &TOKENS, 0));
        let e = nmse(&outs["logits"].data, &reference_logits(&gguf));
        eprintln!("{name} as a {kind} checkpoint in {shards} file(s): NMSE {e:.2e}");
        assert!(e <= tolerance, "{name} ({kind}, {shards}): NMSE {e:.3e}");
    }
}

/// Weights keep the file's narrow storage: half matrices stay f16, the block types the
/// kernels decode stay raw blocks (every block type), only norms become f32.
#[test]
fn weights_keep_their_narrow_storage() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    let dtype = |file: &str, tensor: &str| {
        let f = GgufFile::open(&dir.path().join(file)).unwrap();
        let model = kiln_models::llama::load(&f).unwrap();
        model.weights.get(tensor).unwrap().dtype
    };
    assert_eq!(
        dtype("tiny-llama-F16.gguf", "blk.0.ffn_up.weight"),
        DType::F16
    );
    assert_eq!(
        dtype("tiny-llama-F16.gguf", "token_embd.weight"),
        DType::F16
    );
    assert_eq!(
        dtype("tiny-llama-F16.gguf", "blk.0.ffn_norm.weight"),
        DType::F32
    );
    assert_eq!(
        dtype("tiny-llama-Q4_K_M.gguf", "blk.0.ffn_up.weight"),
        DType::U8
    );
    assert_eq!(dtype("tiny-llama-Q4_K_M.gguf", "output.weight"), DType::U8);
    assert_eq!(
        dtype("tiny-llama-Q4_1.gguf", "blk.1.attn_q.weight"),
        DType::U8
    );
    assert_eq!(
        dtype("tiny-llama-Q5_1.gguf", "blk.1.attn_q.weight"),
        DType::U8
    );
}

/// `TOKENS` through `art` with the KV cache: four tokens prefilled, then the other three
/// decoded one at a time; every position's logits, [seq, vocab] flattened.
fn prefill_four_then_decode(art: &Path, cfg: &LlamaConfig) -> Vec<f64> {
    let mut session = Session::new(art, None).unwrap();
    let mut caches = Caches::empty(cfg);
    let outs = run(&mut session, &caches.inputs(cfg, &TOKENS[..4], 0));
    let mut logits = outs["logits"].data.clone();
    caches.append(&outs, 4);
    for (p, &t) in TOKENS.iter().enumerate().skip(4) {
        let outs = run(&mut session, &caches.inputs(cfg, &[t], p));
        assert_eq!(outs["logits"].shape, vec![1, cfg.vocab]);
        logits.extend_from_slice(&outs["logits"].data);
        caches.append(&outs, 1);
    }
    logits
}

#[test]
fn decoding_with_the_kv_cache_matches_the_whole_sequence() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    for name in [
        "tiny-llama-Q8_0",
        "tiny-llama-Q4_K_M",
        "tiny-qwen2-F32",
        "tiny-gpt2-Q8_0",
    ] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let want = reference_logits(&gguf);
        let (cfg, art) = compiled(&gguf);
        let logits = prefill_four_then_decode(&art, &cfg);
        let e = nmse(&logits, &want);
        eprintln!("{name}: prefill 4 + 3 decode steps, NMSE {e:.2e}");
        assert!(e <= 1e-5, "{name}: NMSE {e:.3e} > 1e-5 with the KV cache");
    }
}

/// `--quantize-activations`: matmuls over block-quantized weights multiply q8_0 activations,
/// one row at a time (decode) or in tiles of rows (prefill). Against the reference rounding
/// the same way (`--q8-activations`), a 4-token prefill and 3 decode steps, and the 7 tokens
/// in one call (a whole tile and a partial one), give logits within the f32 bound, and greedy
/// generation the same 32 tokens; against the plain reference they differ, so the option
/// took effect.
#[test]
fn quantized_activations_match_the_reference_rounding_the_same_way() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let choices = quantizing();
    for (name, gguf, want, plain) in quantized_cases(dir.path(), "--q8-activations") {
        // The host's own target too where it differs: 512-bit vectors multiply 64 bytes a
        // step (the relaid K-quants' two runs at once), 256-bit ones 32.
        let wide = kiln_runtime::cpu::features::HostCpu::detect().has("avx512bw");
        for target in std::iter::once(TARGET).chain(wide.then_some("cpu:native")) {
            let (cfg, art) = compiled_with(&gguf, target, &choices);
            let mut session = Session::new(&art, None).unwrap();
            let whole = run(&mut session, &Caches::empty(&cfg).inputs(&cfg, &TOKENS, 0));
            let e_whole = nmse(&whole["logits"].data, &want);
            eprintln!("{name} on {target}: q8 activations, 7 tokens at once, NMSE {e_whole:.2e}");
            assert!(
                e_whole <= 1e-5,
                "{name} on {target}: NMSE {e_whole:.3e} > 1e-5 against the q8 reference, 7 tokens at once"
            );
            check_quantized_decode(name, target, (&art, &cfg), &want, &plain);
        }
        let (_, art) = compiled_with(&gguf, TARGET, &choices);

        let mut args: Vec<OsString> = vec!["--q8-activations".into(), gguf.clone().into()];
        args.extend(["--greedy", "32", "1", "17", "42"].map(OsString::from));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let want: Vec<u32> = run_script("llama_ref.py", &refs)
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        let mut gen = kiln::generate::Generator::new(Session::new(&art, None).unwrap()).unwrap();
        let mut sampler = kiln::sampling::Sampler::new(Default::default());
        let mut got = Vec::new();
        gen.generate(&[1, 17, 42], 32, &mut sampler, &mut |t| {
            got.push(t);
            true
        })
        .unwrap();
        assert_eq!(
            got, want,
            "{name}: greedy tokens differ from the q8 reference"
        );
    }
}

/// On CUDA, `--quantize-activations` multiplies bytes by bytes (`dp4a`, `lower::gpu_byte_dot`)
/// with q8_0 activations for every format, K-quants included: the tiny models, prefilled
/// four tokens then decoded one at a time, match the reference rounding the same way.
/// Skipped, saying why, without a CUDA device.
#[test]
fn cuda_quantized_activations_match_the_reference_rounding_the_same_way() {
    let Some(gpu) = cuda_target() else {
        return;
    };
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let choices = quantizing();
    for (name, gguf, want, plain) in quantized_cases(dir.path(), "--q8-0-activations") {
        let (cfg, art) = compiled_with(&gguf, &gpu, &choices);
        check_quantized_decode(name, &gpu, (&art, &cfg), &want, &plain);
    }
}

/// The quantized tiny models, written into `dir`: each one's name, file, the reference's
/// logits with `flag` (how it rounds activations) and without.
fn quantized_cases(dir: &Path, flag: &str) -> Vec<(&'static str, PathBuf, Vec<f64>, Vec<f64>)> {
    tiny_models(dir);
    [
        "tiny-llama-Q8_0",
        "tiny-llama-Q4_0",
        "tiny-llama-Q5_1",
        "tiny-llama-Q4_K_M",
    ]
    .into_iter()
    .map(|name| {
        let gguf = dir.join(format!("{name}.gguf"));
        let want = reference_logits_with(&gguf, &[flag]);
        let plain = reference_logits(&gguf);
        (name, gguf, want, plain)
    })
    .collect()
}

/// Compile choices with activations quantized.
fn quantizing() -> kiln::assemble::Choices {
    kiln::assemble::Choices {
        quantize_activations: true,
        ..kiln::assemble::Choices::new(BackendChoice::Llvm)
    }
}

/// `art` (quantized activations), prefilled four tokens then decoded one at a time: within
/// NMSE 1e-5 of `want` (the reference rounding the same way), and ten times further from
/// `plain` (f32 activations), so the option took effect.
fn check_quantized_decode(
    name: &str,
    target: &str,
    (art, cfg): (&Path, &LlamaConfig),
    want: &[f64],
    plain: &[f64],
) {
    let logits = prefill_four_then_decode(art, cfg);
    let (e, e_plain) = (nmse(&logits, want), nmse(&logits, plain));
    eprintln!(
        "{name} on {target}: quantized activations, NMSE {e:.2e} (against f32 activations {e_plain:.2e})"
    );
    assert!(
        e <= 1e-5,
        "{name} on {target}: NMSE {e:.3e} > 1e-5 against the reference rounding the same way"
    );
    assert!(
        e_plain > 10.0 * e,
        "{name} on {target}: the activations were not quantized"
    );
}

#[test]
fn greedy_generation_matches_the_reference_for_32_tokens() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    let prompt: [u32; 3] = [1, 17, 42];
    for name in [
        "tiny-llama-Q8_0",
        "tiny-llama-Q4_K_M",
        "tiny-qwen2-F32",
        "tiny-gpt2-Q8_0",
    ] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let mut args: Vec<OsString> = vec![gguf.clone().into(), "--greedy".into(), "32".into()];
        args.extend(prompt.iter().map(|t| t.to_string().into()));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let want: Vec<u32> = run_script("llama_ref.py", &refs)
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(want.len(), 32);

        let (_, art) = compiled(&gguf);
        let mut gen = kiln::generate::Generator::new(Session::new(&art, None).unwrap()).unwrap();
        let mut sampler = kiln::sampling::Sampler::new(Default::default());
        let mut got = Vec::new();
        gen.generate(&prompt, 32, &mut sampler, &mut |t| {
            got.push(t);
            true
        })
        .unwrap();
        assert_eq!(got, want, "{name}: greedy tokens differ from the reference");
        eprintln!("{name}: 32 greedy tokens identical: {got:?}");

        // The command line generates the same tokens.
        let r = Command::new(env!("CARGO_BIN_EXE_kiln"))
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

#[test]
fn kiln_compile_reads_gguf_files() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    let gguf = dir.path().join("tiny-llama-Q4_0.gguf");
    let art = dir.path().join("cli.kiln");
    let c = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("compile")
        .arg(&gguf)
        .args(["-t", TARGET, "-q", "-o"])
        .arg(&art)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let i = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("inspect")
        .arg(&art)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&i.stdout);
    assert!(
        text.contains("tokens i32[seq]")
            && text.contains("logit_rows i32[picked]")
            && text.contains("logits f32[picked,300]"),
        "{text}"
    );
    // `kiln bench` on it: both tests, as a table and as JSON.
    let json = dir.path().join("bench.json");
    let b = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("bench")
        .arg(&art)
        .args(["-p", "4", "-n", "3", "-r", "2", "--threads", "1", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let out = String::from_utf8_lossy(&b.stdout);
    assert!(out.contains("| pp4 |") && out.contains("| tg3 |"), "{out}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{doc}");
    assert!(rows
        .iter()
        .all(|r| r["tokens_per_second"].as_f64().unwrap() > 0.0));
}

#[test]
fn a_text_prompt_generates_the_reference_continuation() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    let ids = prompt_continues_as_the_reference(
        &dir.path().join("tiny-llama-F32.gguf"),
        "the cat sat on the mat",
    );
    assert_eq!(ids[0], 1, "BOS first");
}

/// qwen2's byte-level BPE vocabulary: kiln's tokenizer (the `tokenizers` crate) against the
/// independent Python encoder (tests/reference/bpe_ref.py) on texts that exercise the
/// pre-tokenizer, the byte spelling and special tokens; then a prompt through `kiln run -p`.
#[test]
fn byte_level_bpe_prompts_match_the_reference_encoder() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    for (file, pre) in [("tiny-qwen2-F32", "qwen2"), ("tiny-gpt2-F32", "gpt2")] {
        let gguf = dir.path().join(format!("{file}.gguf"));
        bpe_matches_the_reference(&gguf, pre);
        prompt_continues_as_the_reference(&gguf, "the dog and the cat");
    }
}

/// The tokenizer of `gguf` (a byte-level BPE vocabulary with pre-tokenizer `pre`) encodes
/// as `bpe_ref.py` does, and decodes back.
fn bpe_matches_the_reference(gguf: &Path, pre: &str) {
    let texts = [
        "the cat sat on the mat",
        "It's the end, isn't it? THE END'S near",
        "<|im_start|>user\nhello 12345 naïve 日本 😀<|im_end|>\n",
        "  spaces\tand\nnewlines\n\n  ",
        "Numbers: 3.14159 and 1,000,000!",
    ];
    let vocab = Vocab::from_gguf(&GgufFile::open(gguf).unwrap())
        .unwrap()
        .expect("the tiny model carries a vocabulary");
    assert_eq!(
        (vocab.model.as_str(), vocab.pre.as_deref()),
        ("gpt2", Some(pre))
    );
    let tok = Tokenizer::new(vocab).unwrap();
    let mut args: Vec<&std::ffi::OsStr> = vec![gguf.as_os_str()];
    args.extend(texts.iter().map(std::ffi::OsStr::new));
    let want = run_script("bpe_ref.py", &args);
    assert_eq!(want.lines().count(), texts.len());
    for (text, line) in texts.iter().zip(want.lines()) {
        let want: Vec<u32> = line
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, want, "{pre}: {text:?}");
        // Control tokens (all three of the specials) print as nothing.
        let shown = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s, ""));
        assert_eq!(tok.decode(&ids), shown, "{pre}: round trip");
    }
}

/// `kiln run -p prompt -n 12` on `gguf` compiled prints the prompt and the reference's
/// greedy continuation (up to EOS); returns the prompt's token ids.
fn prompt_continues_as_the_reference(gguf: &Path, prompt: &str) -> Vec<u32> {
    let (_, art) = compiled(gguf);
    let gen = kiln::generate::Generator::new(Session::new(&art, None).unwrap()).unwrap();
    let tok = gen
        .tokenizer()
        .unwrap()
        .expect("the artifact carries the vocabulary");
    let ids = tok.encode(prompt).unwrap();
    assert_eq!(tok.decode(&ids), prompt, "encoding round-trips");

    let mut args: Vec<OsString> = vec![gguf.into(), "--greedy".into(), "12".into()];
    args.extend(ids.iter().map(|t| t.to_string().into()));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let want_ids: Vec<u32> = run_script("llama_ref.py", &refs)
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    // The reference does not stop at EOS; the command line does.
    let until_eos: Vec<u32> = want_ids
        .iter()
        .copied()
        .take_while(|&t| Some(t) != tok.eos())
        .collect();
    let mut bytes = Vec::new();
    for &t in &until_eos {
        bytes.extend(tok.piece(t, false));
    }
    let want = format!("{prompt}{}", String::from_utf8_lossy(&bytes));

    let r = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("run")
        .arg(&art)
        .args(["-p", prompt, "-n", "12"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim_end(),
        want.trim_end()
    );
    ids
}

/// The tiny models on CUDA against the CPU backend (see [`matches_the_cpu_backend`]).
/// Skipped, saying why, without a CUDA device.
#[test]
fn cuda_matches_the_cpu_backend() {
    if let Some(gpu) = cuda_target() {
        matches_the_cpu_backend(&gpu);
    }
}

/// The tiny models through SPIR-V on a Vulkan device (llvmpipe in CI) against the CPU
/// backend. Skipped, saying why, without a Vulkan device.
#[test]
fn vulkan_matches_the_cpu_backend() {
    if let Some(gpu) = vulkan_target() {
        matches_the_cpu_backend(&gpu);
    }
}

/// The tiny models on a GPU target against the CPU backend: logits within NMSE 1e-4 (f32
/// arithmetic on both, summed in different orders), prefill and decode, and 32 greedy
/// tokens identical for the F16 model.
fn matches_the_cpu_backend(gpu: &str) {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    // Every model is checked before the test fails, so one run shows which disagree.
    let mut failed = Vec::new();
    for name in [
        "tiny-llama-F32",
        "tiny-llama-F16",
        "tiny-llama-Q8_0",
        "tiny-llama-Q4_K_M",
        "tiny-qwen2-F32",
        "tiny-gpt2-Q8_0",
    ] {
        let gguf = dir.path().join(format!("{name}.gguf"));
        let (cfg, cpu_art) = compiled_for(&gguf, TARGET);
        let (_, gpu_art) = compiled_for(&gguf, gpu);
        let mut cpu = Session::new(&cpu_art, None).unwrap();
        let mut dev = Session::new(&gpu_art, None).unwrap();
        assert_eq!(dev.variant().target, gpu, "the GPU variant runs");
        // Prefill four tokens, then decode the rest one at a time, on both.
        let (mut cpu_cache, mut dev_cache) = (Caches::empty(&cfg), Caches::empty(&cfg));
        let (mut want, mut got) = (Vec::new(), Vec::new());
        let mut per_call = Vec::new();
        let mut start = 0;
        for chunk in [&TOKENS[..4], &TOKENS[4..5], &TOKENS[5..6], &TOKENS[6..]] {
            let a = run(&mut cpu, &cpu_cache.inputs(&cfg, chunk, start));
            let b = run(&mut dev, &dev_cache.inputs(&cfg, chunk, start));
            want.extend_from_slice(&a["logits"].data);
            got.extend_from_slice(&b["logits"].data);
            per_call.push(format!(
                "{} token(s): {:.1e}",
                chunk.len(),
                nmse(&b["logits"].data, &a["logits"].data)
            ));
            cpu_cache.append(&a, chunk.len());
            dev_cache.append(&b, chunk.len());
            start += chunk.len();
        }
        let e = nmse(&got, &want);
        eprintln!("{name}: {gpu} vs {TARGET} logits NMSE {e:.2e}");
        if e > 1e-4 {
            eprintln!("{name}: NMSE per call, {}", per_call.join(", "));
            failed.push(format!("{name}: GPU logits NMSE {e:.3e} > 1e-4"));
            continue;
        }

        // A decode step timed launch by launch, as `kiln run --profile` does: the launches
        // only prefill needs do not run, and their timings must not be asked for.
        let step = dev_cache.inputs(&cfg, &TOKENS[..1], start);
        let ins = kiln::session::ordered_inputs(&dev, &step).unwrap();
        let (_, timings) = dev
            .run_profiled(&ins)
            .unwrap_or_else(|e| panic!("{name}: a profiled decode step on {gpu}: {e}"));
        assert!(!timings.is_empty(), "{name}: no launch timings on {gpu}");

        if name == "tiny-llama-F16" {
            let tokens = |art: &Path| {
                let mut gen =
                    kiln::generate::Generator::new(Session::new(art, None).unwrap()).unwrap();
                let mut sampler = kiln::sampling::Sampler::new(Default::default());
                let mut out = Vec::new();
                gen.generate(&[1, 17, 42], 32, &mut sampler, &mut |t| {
                    out.push(t);
                    true
                })
                .unwrap();
                out
            };
            let (a, b) = (tokens(&cpu_art), tokens(&gpu_art));
            assert_eq!(
                b, a,
                "{name}: greedy tokens on the GPU differ from the CPU's"
            );
            eprintln!("{name}: 32 greedy tokens identical on {gpu} and {TARGET}");
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("; "));
}

/// Generation starts from an empty KV cache, and no kernel reads outside its buffers then:
/// with every allocation of 4 KiB or more in a mapping of its own (glibc's malloc
/// tunable), a read before or past one faults. The concatenation of an empty cache and the
/// new rows once read row -1 of the cache (an index clamped to `len - 1`), which crashed
/// `kiln bench -p 64` on a 125m model whose cache storage was mapped on its own.
#[test]
fn generation_from_an_empty_cache_stays_inside_its_buffers() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    for name in [
        "tiny-llama-F32",
        "tiny-llama-Q8_0",
        "tiny-qwen2-F32",
        "tiny-gpt2-Q8_0",
    ] {
        let (_, art) = compiled(&dir.path().join(format!("{name}.gguf")));
        let r = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("run")
            .arg(&art)
            .args(["--tokens", "1,17,42,5,9,11,30,2", "-n", "4"])
            .env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{name}: {:?} {err}", r.status);
    }
}

/// `kiln run model.gguf` compiles for this machine once, caches the artifact, and generates
/// what the compiled artifact generates.
#[test]
fn running_a_gguf_file_compiles_once_and_caches() {
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    let gguf = dir.path().join("tiny-llama-Q8_0.gguf");
    let cache = dir.path().join("cache");
    let run_with = |flags: &[&str]| {
        let r = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("run")
            .arg(&gguf)
            .args(["--tokens", "1,17,42", "-n", "8"])
            .args(flags)
            .env("KILN_CACHE_DIR", &cache)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr).to_string();
        assert!(r.status.success(), "{err}");
        (String::from_utf8_lossy(&r.stdout).to_string(), err)
    };
    let run = || run_with(&[]);
    let (first, err1) = run();
    assert!(err1.contains("compiling"), "{err1}");
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(cached.len(), 1, "one artifact in the cache");
    let (second, err2) = run();
    assert!(
        err2.contains("using") && !err2.contains("compiling"),
        "{err2}"
    );
    assert_eq!(first, second);
    let (_, art) = compiled(&gguf);
    let r = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("run")
        .arg(&art)
        .args(["--tokens", "1,17,42", "-n", "8"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        first,
        "same tokens as the artifact"
    );

    // Quantized activations are a build of their own, cached beside the plain one; an
    // artifact is compiled already, so the flag is refused there.
    let (_, err3) = run_with(&["--quantize-activations"]);
    assert!(err3.contains("compiling"), "{err3}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
    let r = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("run")
        .arg(&art)
        .args(["--tokens", "1", "--quantize-activations"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("compiled"), "{err}");
}

/// The tiny llama (f32 and Q8_0 weights, so byte loads too) compiles for every AMD target
/// the HIP issue lists into one artifact: per variant an AMDGPU ELF for that gfx with a
/// kernel descriptor for every kernel. (Nothing runs them: there is no AMD GPU here.)
#[cfg(feature = "llvm")]
#[test]
fn tiny_llama_compiles_for_every_listed_amd_target() {
    use object::{Object, ObjectSymbol};
    if !reference_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tiny_models(dir.path());
    let mach = kiln_codegen::llvm::gpu::amdgpu::TESTED;
    let targets: Vec<Target> = mach
        .iter()
        .map(|(g, _)| format!("hip:{g}").parse().unwrap())
        .collect();
    for name in ["tiny-llama-F32", "tiny-llama-Q8_0"] {
        let file = GgufFile::open(&dir.path().join(format!("{name}.gguf"))).unwrap();
        let model = kiln_models::llama::load(&file).unwrap();
        let art = dir.path().join(format!("{name}.amd.kiln"));
        kiln::session::compile_to(&model, &targets, BackendChoice::Llvm, &art).unwrap();
        let art = kiln_runtime::artifact::Artifact::open(&art).unwrap();
        for (i, v) in art.manifest().variants.iter().enumerate() {
            let want = mach[i];
            assert_eq!(v.target, format!("hip:{}", want.0));
            let code = art.code(i).unwrap();
            let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(code)
                .unwrap_or_else(|e| panic!("{name} {}: {e}", v.target));
            let e = elf.endian();
            assert_eq!(elf.elf_header().e_machine.get(e), object::elf::EM_AMDGPU);
            assert_eq!(
                elf.elf_header().e_flags.get(e) & 0xff,
                want.1,
                "{}",
                v.target
            );
            let symbols: Vec<String> = elf
                .symbols()
                .filter_map(|s| s.name().ok().map(String::from))
                .collect();
            for k in &v.kernels {
                assert!(
                    symbols.contains(&format!("kiln_{k}.kd")),
                    "{name} {}: no kernel descriptor for {k}",
                    v.target
                );
            }
        }
        eprintln!("{name}: code objects for {} AMD targets", targets.len());
    }
}
