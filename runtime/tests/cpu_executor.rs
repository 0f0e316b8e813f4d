//! End to end on the CPU: an artifact whose code is a shared object built here with `cc`
//! from C source, run through `Session` with symbolic dims, several thread chunks, a slot
//! at a non-zero arena offset and a weights range. Skipped, saying why, without `cc`.

use kiln_ir::{DType, Dim};
use kiln_runtime::plan::{BufferRef, GridDim, Launch, Plan, SizeExpr};
use kiln_runtime::{
    write_artifact, HostBuffer, Manifest, RuntimeError, SectionData, SectionKind, Session,
    TensorSpec, Variant,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNELS_C: &str = r#"
#include <stdint.h>
/* args: a, b, t (slot); t = a + b over the flattened grid */
void kiln_add(uint8_t *const *args, const int64_t *dims, int64_t begin, int64_t end) {
    const float *a = (const float *)args[0], *b = (const float *)args[1];
    float *t = (float *)args[2];
    for (int64_t i = begin; i < end; i++) t[i] = a[i] + b[i];
}
/* args: t (slot), w (4 weights), y (output); dims: batch, seq */
void kiln_bias(uint8_t *const *args, const int64_t *dims, int64_t begin, int64_t end) {
    const float *t = (const float *)args[0], *w = (const float *)args[1];
    float *y = (float *)args[2];
    int64_t n = dims[0] * dims[1] * 4;
    for (int64_t i = begin; i < end; i++) y[i] = i < n ? t[i] + w[i % 4] : -1.0f;
}
"#;

/// Builds the kernels' shared object, or says why it cannot.
fn build_so(dir: &Path) -> Option<Vec<u8>> {
    build_so_from(dir, KERNELS_C)
}

/// Builds a shared object from `source`, or says why it cannot.
fn build_so_from(dir: &Path, source: &str) -> Option<Vec<u8>> {
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("skipped: no `cc` on this machine to build the test kernels");
        return None;
    }
    let src = dir.join("kernels.c");
    let so = dir.join("kernels.so");
    std::fs::write(&src, source).unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read(so).unwrap())
}

fn host_target() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "cpu:aarch64"
    } else {
        "cpu:x86-64"
    }
}

fn manifest(kernels: &[&str]) -> Manifest {
    let grid: Vec<GridDim> = vec![Dim::sym("batch").into(), Dim::sym("seq").scale(4).into()];
    let bsq = vec![Dim::sym("batch"), Dim::sym("seq"), Dim::known(4)];
    let f32_spec = |name: &str| TensorSpec {
        name: name.into(),
        dtype: DType::F32,
        shape: bsq.clone(),
    };
    let plan = Plan {
        symbols: vec!["batch".into(), "seq".into()],
        // Slot 0 is unused space so that slot 1 starts at a non-zero offset.
        slots: vec![
            vec![SizeExpr::new(4, vec![Dim::sym("seq")])],
            vec![SizeExpr::new(4, bsq.clone())],
        ],
        launches: vec![
            Launch {
                kernel: "add".into(),
                args: vec![BufferRef::Input(0), BufferRef::Input(1), BufferRef::Slot(1)],
                writes: vec![false, false, true],
                offsets: vec![],
                grid: grid.clone(),
                min_chunk: 1,
                gpu: None,
                guard: None,
            },
            Launch {
                kernel: "bias".into(),
                args: vec![
                    BufferRef::Slot(1),
                    BufferRef::Weight {
                        offset: 64,
                        len: 16,
                    },
                    BufferRef::Output(0),
                ],
                writes: vec![false, false, true],
                offsets: vec![],
                grid,
                min_chunk: 7,
                gpu: None,
                guard: None,
            },
        ],
    };
    let variant = Variant {
        target: host_target().into(),
        code_section: 0,
        plan,
        kernels: kernels.iter().map(|k| k.to_string()).collect(),
        required_features: vec![],
        waits_for_prior_grids: false,
        counts_own_points: false,
        buffer_offsets: false,
    };
    Manifest {
        model: "add-bias".into(),
        inputs: vec![f32_spec("a"), f32_spec("b")],
        outputs: vec![f32_spec("y")],
        variants: vec![variant],
        weights_section: Some(1),
        vocab_section: None,
        compile_report: serde_json::Value::Null,
    }
}

fn write(dir: &Path, so: &[u8], kernels: &[&str]) -> PathBuf {
    let mut weights = vec![0xAAu8; 64];
    weights.extend(
        [10f32, 20.0, 30.0, 40.0]
            .iter()
            .flat_map(|v| v.to_le_bytes()),
    );
    let path = dir.join("add-bias.kiln");
    let sections = [
        SectionData {
            kind: SectionKind::Code,
            bytes: so,
        },
        SectionData {
            kind: SectionKind::Weights,
            bytes: &weights,
        },
    ];
    write_artifact(&path, &manifest(kernels), &sections).unwrap();
    path
}

fn inputs(batch: usize, seq: usize) -> Vec<HostBuffer> {
    let n = batch * seq * 4;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
    vec![
        HostBuffer::from_f32(vec![batch, seq, 4], &a),
        HostBuffer::from_f32(vec![batch, seq, 4], &b),
    ]
}

fn expected(batch: usize, seq: usize) -> Vec<f32> {
    (0..batch * seq * 4)
        .map(|i| 1.5 * i as f32 + [10.0, 20.0, 30.0, 40.0][i % 4])
        .collect()
}

#[test]
fn two_launches_with_symbolic_dims() {
    let dir = tempfile::tempdir().unwrap();
    let Some(so) = build_so(dir.path()) else {
        return;
    };
    let path = write(dir.path(), &so, &["add", "bias"]);
    let mut session = Session::new(&path, Some(3)).unwrap();
    assert_eq!(session.threads(), 3);
    assert_eq!(session.variant().target, host_target());
    for (batch, seq) in [(2, 3), (3, 50), (1, 1), (2, 3)] {
        let out = session.run(&inputs(batch, seq)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].shape, vec![batch, seq, 4]);
        assert_eq!(
            out[0].to_f32().unwrap(),
            expected(batch, seq),
            "batch={batch} seq={seq}"
        );
    }
    let (out, timings) = session.run_profiled(&inputs(4, 7)).unwrap();
    assert_eq!(out[0].to_f32().unwrap(), expected(4, 7));
    let names: Vec<&str> = timings.iter().map(|t| t.kernel.as_str()).collect();
    assert_eq!(names, ["add", "bias"]);
    assert_eq!(timings[0].grid_points, 4 * 7 * 4);
    // Empty grids run nothing and give empty outputs.
    let out = session.run(&inputs(0, 5)).unwrap();
    assert_eq!(out[0].shape, vec![0, 5, 4]);
    assert!(out[0].bytes.is_empty());
}

/// Kernels run with subnormal floats flushed to zero (`cpu::subnormals`): here `add` scales
/// `a` by 2^100 and `bias` copies it out, so an input of 2^-140 (subnormal) comes out as 0
/// where the runtime set flush-to-zero and as 2^-40 where it did not.
#[test]
fn kernels_read_subnormals_as_zero() {
    const SCALE_C: &str = r#"
#include <stdint.h>
void kiln_add(uint8_t *const *args, const int64_t *dims, int64_t begin, int64_t end) {
    const float *a = (const float *)args[0];
    float *t = (float *)args[2];
    for (int64_t i = begin; i < end; i++) t[i] = a[i] * 0x1p100f;
}
void kiln_bias(uint8_t *const *args, const int64_t *dims, int64_t begin, int64_t end) {
    const float *t = (const float *)args[0];
    float *y = (float *)args[2];
    for (int64_t i = begin; i < end; i++) y[i] = t[i];
}
"#;
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        eprintln!("skipped: kiln sets no subnormal mode on this architecture");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(so) = build_so_from(dir.path(), SCALE_C) else {
        return;
    };
    let path = write(dir.path(), &so, &["add", "bias"]);
    // One thread and many: every pool thread flushes.
    for threads in [1, 3] {
        let mut session = Session::new(&path, Some(threads)).unwrap();
        let tiny = f32::from_bits(1 << 9); // 2^-140
        let normal = 1.0f32;
        let a: Vec<f32> = (0..2 * 25 * 4)
            .map(|i| if i % 2 == 0 { tiny } else { normal })
            .collect();
        let ins = vec![
            HostBuffer::from_f32(vec![2, 25, 4], &a),
            HostBuffer::from_f32(vec![2, 25, 4], &a),
        ];
        let out = session.run(&ins).unwrap()[0].to_f32().unwrap();
        for (i, y) in out.iter().enumerate() {
            let want = if i % 2 == 0 { 0.0 } else { 2f32.powi(100) };
            assert_eq!(*y, want, "element {i} with {threads} threads");
        }
    }
}

#[test]
fn inputs_that_do_not_fit_the_spec_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let Some(so) = build_so(dir.path()) else {
        return;
    };
    let path = write(dir.path(), &so, &["add", "bias"]);
    let mut session = Session::new(&path, Some(2)).unwrap();

    let err = session.run(&inputs(2, 3)[..1]).unwrap_err().to_string();
    assert_eq!(err, "the model takes 2 inputs, got 1");
    let mut ins = inputs(2, 3);
    ins[1] = inputs(2, 4).remove(1);
    let err = session.run(&ins).unwrap_err().to_string();
    assert_eq!(
        err,
        "input 1 `b`: expected shape [batch,seq,4] with batch=2, seq=3, got shape [2, 4, 4]"
    );
    let mut ins = inputs(2, 3);
    ins[0].dtype = DType::I32;
    let err = session.run(&ins).unwrap_err().to_string();
    assert_eq!(err, "input 0 `a`: expected dtype f32, got dtype i32");
    let mut ins = inputs(2, 3);
    ins[0].shape = vec![6, 4];
    let err = session.run(&ins).unwrap_err().to_string();
    assert!(
        err.starts_with("input 0 `a`: expected rank 3 [batch,seq,4], got rank 2"),
        "{err}"
    );
    let mut ins = inputs(2, 3);
    ins[0].bytes.pop();
    let err = session.run(&ins).unwrap_err().to_string();
    assert_eq!(err, "input 0 `a`: expected 96 bytes, got 95 bytes");
    // The session still works after refusing bad inputs.
    assert_eq!(
        session.run(&inputs(2, 3)).unwrap()[0].to_f32().unwrap(),
        expected(2, 3)
    );
}

#[test]
fn a_missing_kernel_is_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let Some(so) = build_so(dir.path()) else {
        return;
    };
    let path = write(dir.path(), &so, &["add", "bias", "softmax"]);
    let err = Session::new(&path, None).unwrap_err();
    assert!(matches!(err, RuntimeError::MissingKernel { .. }));
    let msg = err.to_string();
    let want = format!(
        "the code for {} has no kernel `softmax` (symbol kiln_softmax)",
        host_target()
    );
    assert!(msg.starts_with(&want), "{msg}");
}
