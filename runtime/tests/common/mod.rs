//! Fixtures shared by the runtime's integration tests: small manifests built in code.
#![allow(dead_code)]

use kiln_ir::{DType, Dim};
use kiln_runtime::plan::{BufferRef, Launch, Plan, SizeExpr};
use kiln_runtime::{Manifest, TensorSpec, Variant};

pub fn spec(name: &str, shape: Vec<Dim>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: DType::F32,
        shape,
    }
}

/// A variant with a one-launch plan (`copy` from input 0 to output 0).
pub fn variant(target: &str, code_section: usize) -> Variant {
    let plan = Plan {
        symbols: vec!["n".into()],
        slots: vec![vec![SizeExpr::new(4, vec![Dim::sym("n")])]],
        launches: vec![Launch {
            kernel: "copy".into(),
            args: vec![BufferRef::Input(0), BufferRef::Output(0)],
            writes: vec![false, true],
            offsets: vec![],
            grid: vec![Dim::sym("n").into()],
            min_chunk: 1,
            gpu: None,
            guard: None,
        }],
    };
    Variant {
        target: target.into(),
        code_section,
        plan,
        kernels: vec!["copy".into()],
        required_features: vec![],
        waits_for_prior_grids: false,
        counts_own_points: false,
        buffer_offsets: false,
    }
}

pub fn manifest(variants: Vec<Variant>) -> Manifest {
    Manifest {
        model: "tiny".into(),
        inputs: vec![spec("x", vec![Dim::sym("n")])],
        outputs: vec![spec("y", vec![Dim::sym("n")])],
        variants,
        weights_section: None,
        vocab_section: None,
        compile_report: serde_json::json!({"passes": 3}),
    }
}
