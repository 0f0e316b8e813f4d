//! The op set. Ops are few and primitive where a composite can be recognised by the
//! compiler (softmax, rms_norm and gelu also exist as primitive patterns that the rewrite
//! pass folds into these named ops, which lower to better kernels).
//!
//! An op's meaning is defined by `crate::interp`, its shape rule by `crate::infer`, and its
//! lowering by `kiln_compiler::lower`; the text spelling is `Op::name` plus attributes.

use crate::dim::Shape;
use crate::dtype::DType;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Tanh,
    Sigmoid,
    Silu,
    GeluTanh,
    GeluErf,
    Relu,
    Recip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

/// Comparisons produce 1 or 0 in the dtype of their operands; `select` treats non-zero
/// as true. (A boolean dtype would have to be carried through every backend's storage
/// rules for no gain on the graphs kiln compiles.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReduceOp {
    Sum,
    Max,
    Mean,
}

/// How rotary embedding pairs the elements of a head: adjacent pairs (GPT-J, GGUF llama
/// files) or the two halves of the head (GPT-NeoX, Hugging Face llama checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RopeLayout {
    Interleaved,
    Neox,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A graph input supplied at run time.
    Input {
        name: String,
        dtype: DType,
        shape: Shape,
    },
    /// A weight: data lives in the model's weight store, not in the graph.
    Param {
        name: String,
        dtype: DType,
        shape: Shape,
    },
    /// A small literal tensor carried in the graph.
    Const(Tensor),
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CmpOp),
    /// `select(cond, a, b)`: `a` where `cond != 0`, else `b`, with broadcasting.
    Select,
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// `[.., m, k] x [.., k, n] -> [.., m, n]`; batch dims broadcast. A transposed operand
    /// is read as its last two axes swapped.
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    Softmax {
        axis: usize,
    },
    /// Normalises over the last axis: `x / sqrt(mean(x^2) + eps) * weight`.
    RmsNorm {
        eps: f64,
    },
    /// Normalises over the last axis: `(x - mean) / sqrt(var + eps) * weight + bias`.
    LayerNorm {
        eps: f64,
    },
    /// Rotary embedding of `x: [.., seq, heads, head_dim]` at positions `pos: [seq]`
    /// (an integer tensor), rotating pairs by `pos * theta^(-2i/rot_dims)`.
    Rope {
        layout: RopeLayout,
        theta: f64,
        rot_dims: usize,
    },
    /// `gather(table: [rows, ..], ids: int[..]) -> [ids.., ..]`: embedding lookup on axis 0.
    Gather,
    /// `dequant(bytes: u8[.., B]) -> f32[.., B / block_bytes * block_elems]`: decodes
    /// block-quantized weights (see [`crate::quant`]).
    Dequant {
        format: crate::quant::QuantFormat,
    },
    /// `quantize(x: f32[.., K]) -> u8[.., K / 32 * 34]`: encodes activations as `q8_0`
    /// blocks (see [`crate::quant::quantize_q8_0`]), or `q8_k` blocks of 256 (`K / 256 *
    /// 292` bytes, [`crate::quant::quantize_q8_k`]), so a matmul over quantized weights can
    /// multiply bytes by bytes. Those two are the activation formats.
    Quantize {
        format: crate::quant::QuantFormat,
    },
    Reshape {
        shape: Shape,
    },
    Permute {
        perm: Vec<usize>,
    },
    /// `start..end` by `step` along `axis`; `end` is exclusive and known.
    Slice {
        axis: usize,
        start: i64,
        end: i64,
        step: i64,
    },
    Concat {
        axis: usize,
    },
    Cast {
        dtype: DType,
    },
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 13] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Silu,
        UnaryOp::GeluTanh,
        UnaryOp::GeluErf,
        UnaryOp::Relu,
        UnaryOp::Recip,
    ];
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Silu => "silu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::GeluErf => "gelu_erf",
            UnaryOp::Relu => "relu",
            UnaryOp::Recip => "recip",
        }
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 7] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Pow,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Pow => "pow",
        }
    }
}

impl CmpOp {
    pub const ALL: [CmpOp; 6] = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Mean];
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Mean => "mean",
        }
    }
}

impl RopeLayout {
    pub fn name(self) -> &'static str {
        match self {
            RopeLayout::Interleaved => "interleaved",
            RopeLayout::Neox => "neox",
        }
    }
}

impl Op {
    /// The op's spelling in `.kir` text and in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Const(_) => "const",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Select => "select",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Sum => "reduce_sum",
                ReduceOp::Max => "reduce_max",
                ReduceOp::Mean => "reduce_mean",
            },
            Op::MatMul { .. } => "matmul",
            Op::Softmax { .. } => "softmax",
            Op::RmsNorm { .. } => "rms_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Rope { .. } => "rope",
            Op::Gather => "gather",
            Op::Dequant { .. } => "dequant",
            Op::Quantize { .. } => "quantize",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Cast { .. } => "cast",
        }
    }

    /// How many operands the op takes; `None` for variadic (concat takes one or more).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input { .. } | Op::Param { .. } | Op::Const(_) => 0,
            Op::Unary(_)
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Slice { .. }
            | Op::Dequant { .. }
            | Op::Quantize { .. }
            | Op::Cast { .. } => 1,
            Op::Binary(_)
            | Op::Compare(_)
            | Op::MatMul { .. }
            | Op::RmsNorm { .. }
            | Op::Rope { .. }
            | Op::Gather => 2,
            Op::Select | Op::LayerNorm { .. } => 3,
            Op::Concat { .. } => return None,
        })
    }

    /// True for ops whose output element is a pure function of input elements at computed
    /// indices (no reduction): the compiler inlines these into their consumers.
    pub fn is_injective(&self) -> bool {
        matches!(
            self,
            Op::Unary(_)
                | Op::Binary(_)
                | Op::Compare(_)
                | Op::Select
                | Op::Reshape { .. }
                | Op::Permute { .. }
                | Op::Slice { .. }
                | Op::Concat { .. }
                | Op::Cast { .. }
                | Op::Gather
                | Op::Dequant { .. }
                | Op::Rope { .. }
        )
    }
}
