//! Op attributes as leaf children, both ways: [`KilnLang::encode`] turns a kiln [`Op`]
//! into an e-node whose attributes are `Int`/`Real`/`Ty`/`Shape`/`Layout` leaves and
//! `list`s, and [`KilnLang::decode`] reads an [`Op`] back from an e-node and its
//! attribute values. The analysis decodes every new e-node to type it with the IR's shape
//! rules; graph conversion decodes the extracted ones. Keeping the two directions side by
//! side means a new op or attribute is one edit here, and the round-trip test of the pass
//! (a graph no rule touches comes back identical) catches a direction that was missed.

use super::lang::{ConstTensor, Head, KilnLang, Real, Source};
use egg::Id;
use kiln_ir::{DType, Op, RopeLayout, Shape};
use std::sync::Arc;

/// The value of an attribute e-class, as ops need it back.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Real(f64),
    Ty(DType),
    Shape(Shape),
    Layout(RopeLayout),
    List(Vec<i64>),
}

impl KilnLang {
    /// The tensor operands: every child before the attributes.
    pub fn operands(&self) -> &[Id] {
        &self.children[..self.children.len() - self.head.attrs()]
    }

    fn attr_ids(&self) -> &[Id] {
        &self.children[self.children.len() - self.head.attrs()..]
    }

    /// The attribute value of an attribute leaf or `list`; `child` gives each child's.
    pub fn attr(&self, child: impl Fn(Id) -> Option<Attr>) -> Option<Attr> {
        Some(match &self.head {
            Head::Int(n) => Attr::Int(*n),
            Head::Real(x) => Attr::Real(x.0),
            Head::Ty(d) => Attr::Ty(*d),
            Head::Shape(s) => Attr::Shape(s.clone()),
            Head::Layout(l) => Attr::Layout(*l),
            Head::List => {
                let ints = self.children.iter().map(|&c| match child(c) {
                    Some(Attr::Int(n)) => Some(n),
                    _ => None,
                });
                Attr::List(ints.collect::<Option<_>>()?)
            }
            _ => return None,
        })
    }

    /// Encodes `op` applied to `operands`, adding its attribute leaves through `add`.
    pub fn encode(op: &Op, operands: &[Id], add: &mut impl FnMut(KilnLang) -> Id) -> KilnLang {
        let mut int = |n: i64| add(KilnLang::leaf(Head::Int(n)));
        let (head, attrs): (Head, Vec<Id>) = match op {
            Op::Input { name, dtype, shape } => (
                Head::Source(Source::Input {
                    name: name.clone(),
                    dtype: *dtype,
                    shape: shape.clone(),
                }),
                vec![],
            ),
            Op::Param { name, dtype, shape } => (
                Head::Source(Source::Param {
                    name: name.clone(),
                    dtype: *dtype,
                    shape: shape.clone(),
                }),
                vec![],
            ),
            Op::Const(t) => (
                Head::Source(Source::Const(ConstTensor(Arc::new(t.clone())))),
                vec![],
            ),
            Op::Unary(u) => (Head::Unary(*u), vec![]),
            Op::Binary(b) => (Head::Binary(*b), vec![]),
            Op::Compare(c) => (Head::Compare(*c), vec![]),
            Op::Select => (Head::Select, vec![]),
            Op::Gather => (Head::Gather, vec![]),
            Op::Dequant { format } => (Head::Dequant(*format), vec![]),
            Op::Quantize { format } => (Head::Quantize(*format), vec![]),
            Op::Reduce {
                op,
                axes,
                keep_dims,
            } => {
                let list = axes.iter().map(|&a| int(a as i64)).collect();
                let list = add(KilnLang {
                    head: Head::List,
                    children: list,
                });
                (
                    Head::Reduce(*op),
                    vec![list, add(KilnLang::leaf(Head::Int(*keep_dims as i64)))],
                )
            }
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => (
                Head::MatMul,
                vec![int(*transpose_a as i64), int(*transpose_b as i64)],
            ),
            Op::Softmax { axis } => (Head::Softmax, vec![int(*axis as i64)]),
            Op::RmsNorm { eps } => (
                Head::RmsNorm,
                vec![add(KilnLang::leaf(Head::Real(Real(*eps))))],
            ),
            Op::LayerNorm { eps } => (
                Head::LayerNorm,
                vec![add(KilnLang::leaf(Head::Real(Real(*eps))))],
            ),
            Op::Rope {
                layout,
                theta,
                rot_dims,
            } => {
                let l = add(KilnLang::leaf(Head::Layout(*layout)));
                let t = add(KilnLang::leaf(Head::Real(Real(*theta))));
                (
                    Head::Rope,
                    vec![l, t, add(KilnLang::leaf(Head::Int(*rot_dims as i64)))],
                )
            }
            Op::Reshape { shape } => (
                Head::Reshape,
                vec![add(KilnLang::leaf(Head::Shape(shape.clone())))],
            ),
            Op::Permute { perm } => {
                let list = perm.iter().map(|&p| int(p as i64)).collect();
                (
                    Head::Permute,
                    vec![add(KilnLang {
                        head: Head::List,
                        children: list,
                    })],
                )
            }
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => (
                Head::Slice,
                vec![int(*axis as i64), int(*start), int(*end), int(*step)],
            ),
            Op::Concat { axis } => (Head::Concat, vec![int(*axis as i64)]),
            Op::Cast { dtype } => (Head::Cast, vec![add(KilnLang::leaf(Head::Ty(*dtype)))]),
        };
        KilnLang {
            head,
            children: operands.iter().copied().chain(attrs).collect(),
        }
    }

    /// The kiln op of a source or compute node; `attr` gives each attribute child's value.
    /// Errors say which attribute is missing or malformed.
    pub fn decode(&self, attr: impl Fn(Id) -> Option<Attr>) -> Result<Op, String> {
        let a: Vec<Option<Attr>> = self.attr_ids().iter().map(|&c| attr(c)).collect();
        let bad = |i: usize| format!("{}: attribute {i} is {:?}", self.head, a.get(i));
        let int = |i: usize| match a.get(i) {
            Some(Some(Attr::Int(n))) => Ok(*n),
            _ => Err(bad(i)),
        };
        let index = |i: usize| int(i).and_then(|n| usize::try_from(n).map_err(|_| bad(i)));
        let flag = |i: usize| int(i).map(|n| n != 0);
        let real = |i: usize| match a.get(i) {
            Some(Some(Attr::Real(x))) => Ok(*x),
            _ => Err(bad(i)),
        };
        let list = |i: usize| match a.get(i) {
            Some(Some(Attr::List(v))) => v
                .iter()
                .map(|&n| usize::try_from(n).map_err(|_| bad(i)))
                .collect(),
            _ => Err(bad(i)),
        };
        Ok(match &self.head {
            Head::Source(Source::Input { name, dtype, shape }) => Op::Input {
                name: name.clone(),
                dtype: *dtype,
                shape: shape.clone(),
            },
            Head::Source(Source::Param { name, dtype, shape }) => Op::Param {
                name: name.clone(),
                dtype: *dtype,
                shape: shape.clone(),
            },
            Head::Source(Source::Const(c)) => Op::Const((*c.0).clone()),
            Head::Unary(u) => Op::Unary(*u),
            Head::Binary(b) => Op::Binary(*b),
            Head::Compare(c) => Op::Compare(*c),
            Head::Select => Op::Select,
            Head::Gather => Op::Gather,
            Head::Dequant(format) => Op::Dequant { format: *format },
            Head::Quantize(format) => Op::Quantize { format: *format },
            Head::Reduce(op) => Op::Reduce {
                op: *op,
                axes: list(0)?,
                keep_dims: flag(1)?,
            },
            Head::MatMul => Op::MatMul {
                transpose_a: flag(0)?,
                transpose_b: flag(1)?,
            },
            Head::Softmax => Op::Softmax { axis: index(0)? },
            Head::RmsNorm => Op::RmsNorm { eps: real(0)? },
            Head::LayerNorm => Op::LayerNorm { eps: real(0)? },
            Head::Rope => match a.first() {
                Some(Some(Attr::Layout(layout))) => Op::Rope {
                    layout: *layout,
                    theta: real(1)?,
                    rot_dims: index(2)?,
                },
                _ => return Err(bad(0)),
            },
            Head::Reshape => match a.first() {
                Some(Some(Attr::Shape(shape))) => Op::Reshape {
                    shape: shape.clone(),
                },
                _ => return Err(bad(0)),
            },
            Head::Permute => Op::Permute { perm: list(0)? },
            Head::Slice => Op::Slice {
                axis: index(0)?,
                start: int(1)?,
                end: int(2)?,
                step: int(3)?,
            },
            Head::Concat => Op::Concat { axis: index(0)? },
            Head::Cast => match a.first() {
                Some(Some(Attr::Ty(dtype))) => Op::Cast { dtype: *dtype },
                _ => return Err(bad(0)),
            },
            other => return Err(format!("`{other}` is not a kiln op")),
        })
    }
}
