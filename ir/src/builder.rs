//! A typed front door for code that builds graphs (model builders, tests). Each method is
//! one op; composites that the compiler also recognises from primitives are spelled here
//! as their named op.

use crate::dim::{Dim, Shape};
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, CmpOp, Op, ReduceOp, RopeLayout, UnaryOp};
use crate::tensor::Tensor;

#[derive(Default)]
pub struct Builder {
    pub graph: Graph,
}

type R = Result<NodeId, IrError>;

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    pub fn finish(self) -> Graph {
        self.graph
    }

    pub fn op(&mut self, op: Op, inputs: &[NodeId]) -> R {
        self.graph.add(op, inputs)
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: impl IntoShape) -> R {
        self.op(
            Op::Input {
                name: name.into(),
                dtype,
                shape: shape.into_shape(),
            },
            &[],
        )
    }

    pub fn param(&mut self, name: &str, dtype: DType, shape: impl IntoShape) -> R {
        self.op(
            Op::Param {
                name: name.into(),
                dtype,
                shape: shape.into_shape(),
            },
            &[],
        )
    }

    pub fn constant(&mut self, t: Tensor) -> R {
        self.op(Op::Const(t), &[])
    }

    pub fn scalar(&mut self, dtype: DType, v: f64) -> R {
        self.constant(Tensor::scalar(dtype, v))
    }

    pub fn unary(&mut self, u: UnaryOp, x: NodeId) -> R {
        self.op(Op::Unary(u), &[x])
    }

    pub fn binary(&mut self, b: BinaryOp, x: NodeId, y: NodeId) -> R {
        self.op(Op::Binary(b), &[x, y])
    }

    pub fn add(&mut self, x: NodeId, y: NodeId) -> R {
        self.binary(BinaryOp::Add, x, y)
    }

    pub fn mul(&mut self, x: NodeId, y: NodeId) -> R {
        self.binary(BinaryOp::Mul, x, y)
    }

    pub fn compare(&mut self, c: CmpOp, x: NodeId, y: NodeId) -> R {
        self.op(Op::Compare(c), &[x, y])
    }

    pub fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> R {
        self.op(Op::Select, &[cond, a, b])
    }

    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axes: &[usize], keep_dims: bool) -> R {
        self.op(
            Op::Reduce {
                op,
                axes: axes.to_vec(),
                keep_dims,
            },
            &[x],
        )
    }

    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> R {
        self.op(
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            &[a, b],
        )
    }

    pub fn matmul_t(&mut self, a: NodeId, b: NodeId, transpose_a: bool, transpose_b: bool) -> R {
        self.op(
            Op::MatMul {
                transpose_a,
                transpose_b,
            },
            &[a, b],
        )
    }

    pub fn softmax(&mut self, x: NodeId, axis: usize) -> R {
        self.op(Op::Softmax { axis }, &[x])
    }

    pub fn rms_norm(&mut self, x: NodeId, weight: NodeId, eps: f64) -> R {
        self.op(Op::RmsNorm { eps }, &[x, weight])
    }

    pub fn layer_norm(&mut self, x: NodeId, weight: NodeId, bias: NodeId, eps: f64) -> R {
        self.op(Op::LayerNorm { eps }, &[x, weight, bias])
    }

    pub fn rope(
        &mut self,
        x: NodeId,
        pos: NodeId,
        layout: RopeLayout,
        theta: f64,
        rot_dims: usize,
    ) -> R {
        self.op(
            Op::Rope {
                layout,
                theta,
                rot_dims,
            },
            &[x, pos],
        )
    }

    /// Block-quantized bytes `u8[.., B]` decoded to f32.
    pub fn dequant(&mut self, bytes: NodeId, format: crate::QuantFormat) -> R {
        self.op(Op::Dequant { format }, &[bytes])
    }

    pub fn gather(&mut self, table: NodeId, ids: NodeId) -> R {
        self.op(Op::Gather, &[table, ids])
    }

    pub fn reshape(&mut self, x: NodeId, shape: impl IntoShape) -> R {
        self.op(
            Op::Reshape {
                shape: shape.into_shape(),
            },
            &[x],
        )
    }

    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> R {
        self.op(
            Op::Permute {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }

    pub fn slice(&mut self, x: NodeId, axis: usize, start: i64, end: i64, step: i64) -> R {
        self.op(
            Op::Slice {
                axis,
                start,
                end,
                step,
            },
            &[x],
        )
    }

    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> R {
        self.op(Op::Concat { axis }, xs)
    }

    pub fn cast(&mut self, x: NodeId, dtype: DType) -> R {
        self.op(Op::Cast { dtype }, &[x])
    }

    pub fn output(&mut self, name: &str, x: NodeId) {
        self.graph.set_output(name, x);
    }
}

/// Lets builder calls take `[4, 8]`, `vec![Dim::sym("seq"), 64.into()]` or a `Shape`.
pub trait IntoShape {
    fn into_shape(self) -> Shape;
}

impl IntoShape for Shape {
    fn into_shape(self) -> Shape {
        self
    }
}

impl<const N: usize> IntoShape for [usize; N] {
    fn into_shape(self) -> Shape {
        self.iter().map(|&d| Dim::from(d)).collect()
    }
}

impl IntoShape for &[usize] {
    fn into_shape(self) -> Shape {
        self.iter().map(|&d| Dim::from(d)).collect()
    }
}

impl<const N: usize> IntoShape for [Dim; N] {
    fn into_shape(self) -> Shape {
        self.to_vec()
    }
}
