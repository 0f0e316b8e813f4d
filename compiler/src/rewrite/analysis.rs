//! What the e-graph knows about each e-class: its type, and its value when it is small and
//! constant.
//!
//! Types come from the IR's own shape rules ([`kiln_ir::infer::infer`]), so a rule can ask
//! "does this rewrite keep the shape?" with the same answer `Graph::add` would give, and an
//! e-class whose members disagree on their type is a broken rule, which the pass reports
//! as an error instead of producing a wrong graph. Constant folding lives here too: an
//! elementwise op (unary, binary, cast) whose operands are all small constants gets its
//! value from the reference interpreter ([`kiln_ir::interp::eval_op`], so the folded
//! value is rounded exactly as the op would round it), and the class gains a `const` leaf.

use super::attrs::Attr;
use super::lang::{ConstTensor, Head, KilnLang, Source};
use egg::{Analysis, DidMerge, EGraph, Id};
use kiln_ir::dim::shape_to_string;
use kiln_ir::infer::infer;
use kiln_ir::{Bindings, DType, Op, Shape, Tensor};
use std::sync::Arc;

/// Constants up to this many elements are folded and visible to rule conditions.
pub const FOLD_LIMIT: usize = 4096;

pub type KilnGraph = EGraph<KilnLang, TypeAnalysis>;

/// The analysis: conflicts found while merging are kept here for the pass to report.
#[derive(Debug, Default)]
pub struct TypeAnalysis {
    pub conflicts: Vec<String>,
}

/// The facts about one e-class.
#[derive(Clone, Debug)]
pub enum Facts {
    /// An attribute leaf or `list`.
    Attr(Attr),
    Tensor(TensorFacts),
    /// The `outputs` root.
    Outputs,
    /// A node the shape rules reject; only a faulty rule can add one.
    Invalid(String),
}

#[derive(Clone, Debug)]
pub struct TensorFacts {
    pub dtype: DType,
    pub shape: Shape,
    /// The value, for constants of at most [`FOLD_LIMIT`] elements.
    pub value: Option<Arc<Tensor>>,
}

impl Facts {
    pub fn tensor(&self) -> Option<&TensorFacts> {
        match self {
            Facts::Tensor(t) => Some(t),
            _ => None,
        }
    }

    pub fn attr(&self) -> Option<&Attr> {
        match self {
            Facts::Attr(a) => Some(a),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Facts::Attr(a) => format!("attribute {a:?}"),
            Facts::Tensor(t) => format!("{}{}", t.dtype, shape_to_string(&t.shape)),
            Facts::Outputs => "outputs".into(),
            Facts::Invalid(msg) => format!("ill-typed ({msg})"),
        }
    }
}

/// The facts of `node` from its children's facts, without folding: the type of a node
/// that is not in the e-graph yet (conditions use this to type a rule's right side).
pub fn derive<'a>(node: &KilnLang, child: impl Fn(Id) -> &'a Facts) -> Facts {
    if let Some(a) = node.attr(|c| child(c).attr().cloned()) {
        return Facts::Attr(a);
    }
    match &node.head {
        Head::Outputs => return Facts::Outputs,
        Head::Source(source) => return source_facts(source),
        _ => {}
    }
    let op = match node.decode(|c| child(c).attr().cloned()) {
        Ok(op) => op,
        Err(msg) => return Facts::Invalid(msg),
    };
    let mut operands = Vec::new();
    for &c in node.operands() {
        match child(c) {
            Facts::Tensor(t) => operands.push((t.dtype, &t.shape)),
            other => return Facts::Invalid(format!("operand is {}", other.describe())),
        }
    }
    match infer(&op, &operands) {
        Ok((dtype, shape)) => Facts::Tensor(TensorFacts {
            dtype,
            shape,
            value: None,
        }),
        Err(msg) => Facts::Invalid(format!("{}: {msg}", op.name())),
    }
}

fn source_facts(source: &Source) -> Facts {
    let (dtype, shape, value) = match source {
        Source::Input { dtype, shape, .. } | Source::Param { dtype, shape, .. } => {
            (*dtype, shape.clone(), None)
        }
        Source::Const(c) => {
            let small = c.0.numel() <= FOLD_LIMIT;
            (
                c.0.dtype,
                c.0.shape.iter().map(|&d| d.into()).collect(),
                small.then(|| c.0.clone()),
            )
        }
    };
    Facts::Tensor(TensorFacts {
        dtype,
        shape,
        value,
    })
}

/// The value of an elementwise op on small constants, computed by the interpreter.
fn fold<'a>(node: &KilnLang, child: impl Fn(Id) -> &'a Facts) -> Option<Arc<Tensor>> {
    if !matches!(node.head, Head::Unary(_) | Head::Binary(_) | Head::Cast) {
        return None;
    }
    let args: Vec<&Tensor> = node
        .operands()
        .iter()
        .map(|&c| child(c).tensor()?.value.as_deref())
        .collect::<Option<_>>()?;
    let op: Op = node.decode(|c| child(c).attr().cloned()).ok()?;
    let t = kiln_ir::interp::eval_op(&op, &args, &Bindings::new()).ok()?;
    (t.numel() <= FOLD_LIMIT).then(|| Arc::new(t))
}

impl Analysis<KilnLang> for TypeAnalysis {
    type Data = Facts;

    fn make(egraph: &mut KilnGraph, enode: &KilnLang, _id: Id) -> Facts {
        let eg: &KilnGraph = egraph;
        let child = move |c: Id| &eg[c].data;
        let mut facts = derive(enode, child);
        if let Facts::Tensor(t) = &mut facts {
            if t.value.is_none() {
                t.value = fold(enode, child);
            }
        }
        facts
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        match (&mut *a, &b) {
            (Facts::Tensor(ta), Facts::Tensor(tb))
                if ta.dtype == tb.dtype && ta.shape == tb.shape =>
            {
                // Folded values of equal expressions can differ in the last bit (a fused op
                // rounds once, its expansion once per step); either is a faithful value.
                match (&ta.value, &tb.value) {
                    (None, Some(v)) => {
                        ta.value = Some(v.clone());
                        DidMerge(true, false)
                    }
                    (Some(_), None) => DidMerge(false, true),
                    _ => DidMerge(false, false),
                }
            }
            (Facts::Attr(x), Facts::Attr(y)) if x == y => DidMerge(false, false),
            (Facts::Outputs, Facts::Outputs) => DidMerge(false, false),
            _ => {
                self.conflicts.push(format!(
                    "an e-class is both {} and {}",
                    a.describe(),
                    b.describe()
                ));
                DidMerge(false, false)
            }
        }
    }

    fn modify(egraph: &mut KilnGraph, id: Id) {
        let Some(value) = egraph[id].data.tensor().and_then(|t| t.value.clone()) else {
            return;
        };
        let has_leaf = egraph[id]
            .nodes
            .iter()
            .any(|n| matches!(n.head, Head::Source(Source::Const(_))));
        if !has_leaf {
            let leaf = egraph.add(KilnLang::leaf(Head::Source(Source::Const(ConstTensor(
                value,
            )))));
            egraph.union(id, leaf);
        }
    }
}
