//! Carried inputs (`Session::carry`) on every executor here: a model whose output `new`
//! extends its input `cache` is run in chunks long enough that the carried storage must
//! grow (moving the rows it holds), and each run's view of the whole cache is compared
//! with the rows fed so far. A module of the `llama_reference` test binary (the KV cache is
//! what carrying is for), which keeps the GPU machine's set of test binaries small.

use super::common::{cuda_target, vulkan_target};
use kiln::assemble::BackendChoice;
use kiln_models::{Model, Weights};
use kiln_runtime::session::{HostBuffer, Session};
use kiln_runtime::RuntimeError;

const MODEL: &str = r#"kir 1
%c   = input "cache" f32[past,64]
%x   = input "x" f32[seq,64]
%new = add %x, %x
%all = concat %c, %new axis=0
output "new" = %new
output "all" = %all
"#;

const ROW: usize = 64;

fn session(target: &str) -> (tempfile::TempDir, Session) {
    let graph = kiln_ir::text::parse(MODEL).expect("the test model parses");
    let model = Model {
        name: "carry".into(),
        graph,
        weights: Weights::default(),
        vocab: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("carry.kiln");
    let target = target.parse().unwrap();
    kiln::session::compile_to(&model, &[target], BackendChoice::Llvm, &path).unwrap();
    let session = Session::new(&path, Some(2)).unwrap();
    (dir, session)
}

/// Rows `start..start+n`, each value distinct enough that a misplaced row shows.
fn rows(start: usize, n: usize) -> Vec<f32> {
    (start * ROW..(start + n) * ROW)
        .map(|i| ((i * 7919) % 1009) as f32 - 504.0)
        .collect()
}

fn check_carrying(target: &str) {
    let (_dir, mut s) = session(target);
    s.carry(&[("cache", "new")]).unwrap();
    let (cache, x) = (0, 1);
    assert_eq!(s.manifest().inputs[cache].name, "cache");
    let output = |name: &str| s.manifest().outputs.iter().position(|o| o.name == name);
    let (all, new) = (output("all").unwrap(), output("new").unwrap());
    // 64 KiB of first storage holds 256 rows of 256 bytes: the 300-row chunk grows it.
    let mut fed = 0;
    for chunk in [3, 1, 300, 1, 200, 5] {
        let mut inputs = vec![None, None];
        inputs[x] = Some(HostBuffer::from_f32(vec![chunk, ROW], &rows(fed, chunk)));
        let (outs, _) = s.run_carrying(&inputs, false).unwrap();
        assert!(
            outs[new].is_none(),
            "{target}: a carried output came back to the host"
        );
        let got = outs[all].as_ref().unwrap().to_f32().unwrap();
        let want: Vec<f32> = rows(0, fed + chunk).iter().map(|v| 2.0 * v).collect();
        let (ours, theirs) = (&got[..fed * ROW], &want[..fed * ROW]);
        // The held rows are what earlier runs appended (doubled once, by those runs).
        assert_eq!(ours, theirs, "{target}: held rows after {fed} rows");
        assert_eq!(got, want, "{target}: rows after a chunk of {chunk}");
        fed += chunk;
    }
    s.reset_carried();
    let inputs = vec![None, Some(HostBuffer::from_f32(vec![2, ROW], &rows(0, 2)))];
    let (outs, _) = s.run_carrying(&inputs, false).unwrap();
    let got = outs[all].as_ref().unwrap();
    assert_eq!(
        got.shape,
        vec![2, ROW],
        "{target}: reset did not empty the cache"
    );
}

#[test]
fn carried_inputs_grow_and_keep_their_rows_on_the_cpu() {
    check_carrying("cpu:x86-64-v3");
}

#[test]
fn carried_inputs_grow_and_keep_their_rows_on_vulkan() {
    if let Some(t) = vulkan_target() {
        check_carrying(&t);
    }
}

#[test]
fn carried_inputs_grow_and_keep_their_rows_on_cuda() {
    if let Some(t) = cuda_target() {
        check_carrying(&t);
    }
}

#[test]
fn carrying_refuses_what_cannot_be_carried() {
    let (_dir, mut s) = session("cpu:x86-64-v3");
    let err = |r: Result<(), RuntimeError>| r.unwrap_err().to_string();
    let e = err(s.carry(&[("cache", "nope")]));
    assert!(e.contains("no such output"), "{e}");
    let e = err(s.carry(&[("cache", "new"), ("cache", "all")]));
    assert!(e.contains("already in another pair"), "{e}");
    s.carry(&[("cache", "new")]).unwrap();
    // The session holds the cache now: a caller's buffer for it is refused.
    let x = HostBuffer::from_f32(vec![1, ROW], &rows(0, 1));
    let cache = HostBuffer::from_f32(vec![0, ROW], &[]);
    let e = s.run(&[cache, x.clone()]).unwrap_err().to_string();
    assert!(e.contains("the session carries this input"), "{e}");
    let e = s
        .run_carrying(&[None, None], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`x`"), "{e}");
}
