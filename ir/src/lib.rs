//! kiln's graph IR: the first stage of the data flow (model file -> `Graph` -> compiler).
//!
//! A [`Graph`] is a DAG of typed [`Node`]s; shapes may be symbolic ([`Dim`]). The text form
//! (`.kir`, in [`text`]) prints and parses back to the same graph, and [`interp`] defines
//! what every op means: it is the oracle every backend is tested against.

pub mod builder;
pub mod dim;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod op;
pub mod quant;
pub mod tensor;
pub mod text;
pub mod verify;

pub use builder::Builder;
pub use dim::{Bindings, Dim, Shape};
pub use dtype::DType;
pub use error::IrError;
pub use graph::{Graph, Node, NodeId};
pub use op::{BinaryOp, CmpOp, Op, ReduceOp, RopeLayout, UnaryOp};
pub use quant::QuantFormat;
pub use tensor::Tensor;
pub use verify::verify;
