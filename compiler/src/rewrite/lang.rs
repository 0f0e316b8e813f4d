//! The e-graph's language: kiln ops as egg e-nodes.
//!
//! egg matches patterns on children, so every attribute that a rule may need to read or
//! bind (reduce axes, a permutation, matmul flags, a reshape target, an epsilon) is a leaf
//! child rather than data hidden inside the op. An e-node is a [`Head`] plus children in a
//! fixed order: tensor operands first, then attribute leaves. Rules then read as the
//! math they state, e.g. `(matmul (permute ?a ?p) ?b 0 ?tb)` or
//! `(reduce_max ?x (list ?axis) 1)`, and op names are the `.kir` spellings
//! (`kiln_ir::Op::name`). Graph inputs, params and constants are leaves that carry their
//! identity ([`Source`]), so converting back rebuilds exactly the same sources.

use egg::{FromOp, Id, Language};
use kiln_ir::dim::shape_to_string;
use kiln_ir::{BinaryOp, CmpOp, DType, Dim, ReduceOp, RopeLayout, Shape, Tensor, UnaryOp};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// One e-node: what it computes (`head`) and its children, operands before attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KilnLang {
    pub head: Head,
    pub children: Vec<Id>,
}

/// The operator of an e-node. Attribute leaves come first, then graph sources, then one
/// head per kiln op (unary/binary/compare/reduce carry their sub-op), then `outputs`, the
/// root that holds a graph's results in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Head {
    Int(i64),
    Real(Real),
    Ty(DType),
    Shape(Shape),
    Layout(RopeLayout),
    /// `(list 0 2 1)`: reduce axes or a permutation, each child an `Int`.
    List,
    Source(Source),
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CmpOp),
    Select,
    Reduce(ReduceOp),
    MatMul,
    Softmax,
    RmsNorm,
    LayerNorm,
    Rope,
    Gather,
    /// Dequantization; the format is part of the head (no pattern rewrites it).
    Dequant(kiln_ir::QuantFormat),
    /// Activation quantization (see `kiln_ir::Op::Quantize`).
    Quantize(kiln_ir::QuantFormat),
    Reshape,
    Permute,
    Slice,
    Concat,
    Cast,
    Outputs,
}

/// A graph leaf with the identity it had in the input graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Input {
        name: String,
        dtype: DType,
        shape: Shape,
    },
    Param {
        name: String,
        dtype: DType,
        shape: Shape,
    },
    Const(ConstTensor),
}

/// A constant compared and hashed by its bits, so equal literals share one e-class.
#[derive(Clone, Debug)]
pub struct ConstTensor(pub Arc<Tensor>);

/// An f64 attribute (epsilon, rope theta) compared by its bits.
#[derive(Clone, Copy, Debug)]
pub struct Real(pub f64);

impl ConstTensor {
    fn key(&self) -> (DType, &[usize], impl Iterator<Item = u64> + '_) {
        (
            self.0.dtype,
            &self.0.shape,
            self.0.data.iter().map(|v| v.to_bits()),
        )
    }
}

impl PartialEq for ConstTensor {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ConstTensor {}
impl PartialOrd for ConstTensor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ConstTensor {
    fn cmp(&self, other: &Self) -> Ordering {
        let (da, sa, va) = self.key();
        let (db, sb, vb) = other.key();
        da.cmp(&db)
            .then_with(|| sa.cmp(sb))
            .then_with(|| va.cmp(vb))
    }
}
impl Hash for ConstTensor {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (d, s, v) = self.key();
        d.hash(state);
        s.hash(state);
        v.for_each(|b| b.hash(state));
    }
}

impl PartialEq for Real {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Real {}
impl PartialOrd for Real {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Real {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl Hash for Real {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl Head {
    /// Tensor operands the head takes; `None` for variadic (`concat`, `list`, `outputs`).
    fn operands(&self) -> Option<usize> {
        Some(match self {
            Head::Int(_)
            | Head::Real(_)
            | Head::Ty(_)
            | Head::Shape(_)
            | Head::Layout(_)
            | Head::Source(_) => 0,
            Head::List | Head::Concat | Head::Outputs => return None,
            Head::Unary(_)
            | Head::Reduce(_)
            | Head::Softmax
            | Head::Reshape
            | Head::Permute
            | Head::Slice
            | Head::Dequant(_)
            | Head::Quantize(_)
            | Head::Cast => 1,
            Head::Binary(_)
            | Head::Compare(_)
            | Head::MatMul
            | Head::RmsNorm
            | Head::Rope
            | Head::Gather => 2,
            Head::Select | Head::LayerNorm => 3,
        })
    }

    /// Attribute children that follow the operands.
    pub(super) fn attrs(&self) -> usize {
        match self {
            Head::Reduce(_) | Head::MatMul => 2,
            Head::Softmax | Head::RmsNorm | Head::LayerNorm | Head::Reshape | Head::Permute => 1,
            Head::Concat | Head::Cast => 1,
            Head::Rope => 3,
            Head::Slice => 4,
            _ => 0,
        }
    }

    fn accepts(&self, n: usize) -> bool {
        match self.operands() {
            Some(k) => n == k + self.attrs(),
            None => n > self.attrs(),
        }
    }

    /// The heads written by name in patterns (every compute op, `list`, `outputs`).
    fn named() -> impl Iterator<Item = Head> {
        let fixed = [
            Head::Select,
            Head::MatMul,
            Head::Softmax,
            Head::RmsNorm,
            Head::LayerNorm,
            Head::Rope,
            Head::Gather,
            Head::Reshape,
            Head::Permute,
            Head::Slice,
            Head::Concat,
            Head::Cast,
            Head::List,
            Head::Outputs,
        ];
        UnaryOp::ALL
            .into_iter()
            .map(Head::Unary)
            .chain(BinaryOp::ALL.into_iter().map(Head::Binary))
            .chain(CmpOp::ALL.into_iter().map(Head::Compare))
            .chain(ReduceOp::ALL.into_iter().map(Head::Reduce))
            .chain(fixed)
    }

    /// The `.kir` spelling of a compute head; `None` for leaves.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            Head::Unary(u) => u.name(),
            Head::Binary(b) => b.name(),
            Head::Compare(c) => c.name(),
            Head::Reduce(ReduceOp::Sum) => "reduce_sum",
            Head::Reduce(ReduceOp::Max) => "reduce_max",
            Head::Reduce(ReduceOp::Mean) => "reduce_mean",
            Head::Select => "select",
            Head::MatMul => "matmul",
            Head::Softmax => "softmax",
            Head::RmsNorm => "rms_norm",
            Head::LayerNorm => "layer_norm",
            Head::Rope => "rope",
            Head::Gather => "gather",
            Head::Dequant(_) => "dequant",
            Head::Quantize(_) => "quantize",
            Head::Reshape => "reshape",
            Head::Permute => "permute",
            Head::Slice => "slice",
            Head::Concat => "concat",
            Head::Cast => "cast",
            Head::List => "list",
            Head::Outputs => "outputs",
            _ => return None,
        })
    }

    fn parse(s: &str) -> Option<Head> {
        if let Some(h) = Head::named().find(|h| h.name() == Some(s)) {
            return Some(h);
        }
        if let Ok(n) = s.parse::<i64>() {
            return Some(Head::Int(n));
        }
        if s.contains(['.', 'e']) {
            if let Ok(x) = s.parse::<f64>() {
                return Some(Head::Real(Real(x)));
            }
        }
        if let Some(d) = DType::from_name(s) {
            return Some(Head::Ty(d));
        }
        if let Some(l) = [RopeLayout::Interleaved, RopeLayout::Neox]
            .into_iter()
            .find(|l| l.name() == s)
        {
            return Some(Head::Layout(l));
        }
        parse_shape(s).map(Head::Shape)
    }
}

/// `[2,seq,64]`: known extents and single symbols (what patterns and dumps need).
fn parse_shape(s: &str) -> Option<Shape> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|d| match d.parse::<i64>() {
            Ok(n) => Some(Dim::known(n)),
            Err(_) if d.chars().all(|c| c.is_alphanumeric() || c == '_') => Some(Dim::sym(d)),
            Err(_) => None,
        })
        .collect()
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.name() {
            return f.write_str(name);
        }
        match self {
            Head::Int(n) => write!(f, "{n}"),
            Head::Real(x) => write!(f, "{:?}", x.0),
            Head::Ty(d) => write!(f, "{d}"),
            Head::Shape(s) => f.write_str(&shape_to_string(s)),
            Head::Layout(l) => f.write_str(l.name()),
            Head::Source(Source::Input { name, .. }) => write!(f, "input:{name}"),
            Head::Source(Source::Param { name, .. }) => write!(f, "param:{name}"),
            Head::Source(Source::Const(c)) => write!(f, "const:{}{:?}", c.0.dtype, c.0.shape),
            _ => unreachable!("named heads are printed above"),
        }
    }
}

impl fmt::Display for KilnLang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.head.fmt(f)
    }
}

impl Language for KilnLang {
    type Discriminant = Head;

    fn discriminant(&self) -> Head {
        self.head.clone()
    }

    fn matches(&self, other: &Self) -> bool {
        self.head == other.head && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl FromOp for KilnLang {
    type Error = String;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, String> {
        let head = Head::parse(op).ok_or_else(|| format!("unknown operator `{op}`"))?;
        if !head.accepts(children.len()) {
            return Err(format!("`{op}` does not take {} children", children.len()));
        }
        Ok(KilnLang { head, children })
    }
}

impl KilnLang {
    /// A node without children: an attribute or a source.
    pub fn leaf(head: Head) -> KilnLang {
        KilnLang {
            head,
            children: Vec::new(),
        }
    }
}
