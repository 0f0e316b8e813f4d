//! Carried inputs (`Session::carry`) on every executor here: a model whose output `new`
//! extends its input `cache` is run in chunks long enough that the carried storage must
//! grow (moving the rows it holds), and each run's view of the whole cache is compared
//! with the rows fed so far; two arena slots whose sizes follow the cache's length (`%tw`,
//! `%th`, both read by one kernel) check, through column sums, that what kernels read between runs is placed for
//! this run. A module of the `llama_reference` test binary (the KV cache is
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
%tw  = add %all, %all
%th  = add %tw, %all
%u   = max %th, %tw
%s2  = reduce_sum %tw axes=[0] keep_dims=false
%s1  = reduce_sum %u axes=[0] keep_dims=false
%m3  = reduce_max %th axes=[0] keep_dims=false
output "new" = %new
output "all" = %all
output "s2" = %s2
output "s1" = %s1
output "m3" = %m3
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

/// Feeds rows `fed..fed+chunk` and checks every output against the rows fed so far.
fn feed(s: &mut Session, target: &str, fed: usize, chunk: usize) {
    let output = |name: &str| {
        let m = s.manifest();
        m.outputs.iter().position(|o| o.name == name).unwrap()
    };
    let [all, new, s1, s2, m3] = ["all", "new", "s1", "s2", "m3"].map(output);
    let inputs = vec![
        None,
        Some(HostBuffer::from_f32(vec![chunk, ROW], &rows(fed, chunk))),
    ];
    let (outs, _) = s.run_carrying(&inputs, false).unwrap();
    assert!(
        outs[new].is_none(),
        "{target}: a carried output came back to the host"
    );
    let f32s = |i: usize| outs[i].as_ref().unwrap().to_f32().unwrap();
    let got = f32s(all);
    let want: Vec<f32> = rows(0, fed + chunk).iter().map(|v| 2.0 * v).collect();
    // The held rows are what earlier runs appended (doubled once, by those runs).
    let (ours, theirs) = (&got[..fed * ROW], &want[..fed * ROW]);
    assert_eq!(ours, theirs, "{target}: held rows after {fed} rows");
    assert_eq!(
        got, want,
        "{target}: rows after a chunk of {chunk} at {fed}"
    );
    // Column sums of 2a and of max(3a, 2a), read from both slots by one kernel after both are
    // written (integers below 2^24 at every step: exact in any order), and the maximum of
    // 3a: a row missing, misplaced or overwritten in either slot shows.
    let column = |f: fn(f32) -> f32, max: bool| -> Vec<f32> {
        (0..ROW)
            .map(|c| {
                let col = want.iter().skip(c).step_by(ROW).map(|&a| f(a));
                if max {
                    col.fold(f32::MIN, f32::max)
                } else {
                    col.sum()
                }
            })
            .collect()
    };
    let sum2 = column(|a| 2.0 * a, false);
    assert_eq!(f32s(s2), sum2, "{target}: sum of 2a at {fed} + {chunk}");
    let sum_max = column(|a| (3.0 * a).max(2.0 * a), false);
    assert_eq!(
        f32s(s1),
        sum_max,
        "{target}: sum of max(3a, 2a) at {fed} + {chunk}"
    );
    let max3 = column(|a| 3.0 * a, true);
    assert_eq!(f32s(m3), max3, "{target}: max of 3a at {fed} + {chunk}");
}

fn check_carrying(target: &str) {
    let (_dir, mut s) = session(target);
    s.carry(&[("cache", "new")]).unwrap();
    assert_eq!(s.manifest().inputs[0].name, "cache");
    // 64 KiB of first storage holds 256 rows of 256 bytes: the 300-row chunk grows it.
    let mut fed = 0;
    for chunk in [3, 1, 300, 1, 200, 5] {
        feed(&mut s, target, fed, chunk);
        fed += chunk;
    }
    // Decode-like steps, one row each, after a long run left the arena larger than they
    // need: devices that record a run's launches replay them, recording anew only where
    // storage grows or the arena's layout moves (at 513 rows, past the room left for 512),
    // which also moves the second slot within an arena that is already large enough.
    s.reset_carried();
    feed(&mut s, target, 0, 700);
    s.reset_carried();
    feed(&mut s, target, 0, 500);
    let before = s.recordings();
    let steps = 24;
    for fed in 500..500 + steps {
        feed(&mut s, target, fed, 1);
    }
    if !target.starts_with("cpu:") {
        let (b, a) = (before.unwrap(), s.recordings().unwrap());
        assert_eq!(a.runs - b.runs, steps as u64, "{target}: runs counted");
        let recorded = a.recorded - b.recorded;
        assert!(
            recorded <= steps as u64 / 4,
            "{target}: {recorded} of {steps} one-row steps recorded their launches anew"
        );
        // Vulkan binds slots by offset and range: the first step (513 rows of room, the
        // chunk before had 512) and the step to 514 (577) must record anew, though no
        // buffer is new. (CUDA updates a graph's addresses in place; that is no recording.)
        if target.starts_with("vulkan:") {
            assert!(
                recorded >= 2,
                "{target}: the arena layout moved twice, yet {recorded} recordings"
            );
        }
    }
    s.reset_carried();
    let inputs = vec![None, Some(HostBuffer::from_f32(vec![2, ROW], &rows(0, 2)))];
    let (outs, _) = s.run_carrying(&inputs, false).unwrap();
    let all = s
        .manifest()
        .outputs
        .iter()
        .position(|o| o.name == "all")
        .unwrap();
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
