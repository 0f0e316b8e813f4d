//! Writes a [`Graph`] as `.kir` text. Nodes are named `%<index>` in graph order (a
//! topological order), every attribute is written, and floats use their shortest exact
//! spelling, so `parse` rebuilds the graph bit for bit and two prints of equal graphs are
//! equal strings (which is what filetests compare).

use super::ops::attributes;
use super::VERSION;
use crate::dim::{shape_to_string, Dim};
use crate::dtype::DType;
use crate::graph::Graph;
use crate::op::Op;
use crate::tensor::Tensor;
use std::fmt::Write;

pub fn print(g: &Graph) -> String {
    let mut out = format!("kir {VERSION}\n");
    for id in g.node_ids() {
        let node = g.node(id);
        // Writing to a String cannot fail.
        let _ = write!(out, "%{} = {}", id.index(), node.op.name());
        match &node.op {
            Op::Input { name, dtype, shape } | Op::Param { name, dtype, shape } => {
                let _ = write!(out, " {name:?} {}", type_to_string(*dtype, shape));
            }
            Op::Const(t) => out.push_str(&const_to_string(t)),
            op => {
                let operands: Vec<String> = g
                    .inputs(id)
                    .iter()
                    .map(|i| format!("%{}", i.index()))
                    .collect();
                if !operands.is_empty() {
                    let _ = write!(out, " {}", operands.join(", "));
                }
                for (key, value) in attributes(op) {
                    let _ = write!(out, " {key}={value}");
                }
            }
        }
        out.push('\n');
    }
    for (name, id) in &g.outputs {
        let _ = writeln!(out, "output {name:?} = %{}", id.index());
    }
    out
}

/// `f32[batch,64]`.
pub fn type_to_string(dtype: DType, shape: &[Dim]) -> String {
    format!("{dtype}{}", shape_to_string(shape))
}

/// ` f32[2,2] [1.0, -2.5, inf, nan]`, with a leading space.
fn const_to_string(t: &Tensor) -> String {
    let dims: Vec<String> = t.shape.iter().map(usize::to_string).collect();
    let values: Vec<String> = t.data.iter().map(|&v| const_value(t.dtype, v)).collect();
    format!(" {}[{}] [{}]", t.dtype, dims.join(","), values.join(", "))
}

/// A float attribute: Rust's shortest round-trip spelling, with NaN as `nan`.
pub(super) fn f64_to_string(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else {
        format!("{v:?}")
    }
}

/// Tensor values are stored as f64 already rounded to the dtype, so a float value is
/// written with the shortest spelling at f32 precision (`0.1`, not `0.10000000149011612`)
/// and an integer value as an integer. A value that is not rounded to its dtype
/// (a hand-built tensor) falls back to the f64 spelling.
fn const_value(dtype: DType, v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if dtype.is_int() && v.is_finite() && v.fract() == 0.0 {
        // Exact digits (`{v}` would spell 2^63 as 9223372036854776000); `as` saturates
        // 2^63, which is where `DType::round` puts i64::MAX, back to i64::MAX. Zero keeps
        // its sign.
        if v == 0.0 {
            format!("{v}")
        } else {
            (v as i64).to_string()
        }
    } else if dtype.is_float() && f64::from(v as f32) == v {
        format!("{:?}", v as f32)
    } else {
        f64_to_string(v)
    }
}
