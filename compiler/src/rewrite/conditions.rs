//! Side conditions of the rules: the facts a pattern cannot state by shape alone (a
//! constant's value, an axis being the last one, a permutation's form), and the guard
//! every rule carries, [`keeps_type`], which types the right-hand side with the IR's shape
//! rules and lets the rewrite fire only when that type is the matched class's own. The
//! guard is what makes `(mul ?x ?one) => ?x` safe when `?one` broadcasts `x` to a larger
//! shape, and what keeps a rule from ever putting an ill-typed node into the e-graph.

use super::analysis::{derive, Facts, KilnGraph, TensorFacts};
use super::attrs::Attr;
use super::lang::KilnLang;
use egg::{ENodeOrVar, Id, Pattern, Subst, Var};

/// Constants match a target within this absolute tolerance, or when they equal the
/// target rounded to their dtype (a bf16 graph stores 0.044715 as 0.04468).
pub const TOLERANCE: f64 = 1e-6;

pub fn var(name: &str) -> Var {
    name.parse()
        .unwrap_or_else(|e| panic!("bad pattern variable {name}: {e}"))
}

fn tensor<'a>(egraph: &'a KilnGraph, subst: &Subst, v: Var) -> Option<&'a TensorFacts> {
    egraph[subst[v]].data.tensor()
}

fn attr<'a>(egraph: &'a KilnGraph, subst: &Subst, v: Var) -> Option<&'a Attr> {
    egraph[subst[v]].data.attr()
}

/// A constant whose every element is `target` within [`TOLERANCE`]: for the constants of
/// composite formulas (0.044715, sqrt(2/pi)), which model files write to a few digits.
pub fn is_near(name: &str, target: f64) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let v = var(name);
    move |egraph, _, subst| {
        let Some(t) = tensor(egraph, subst, v) else {
            return false;
        };
        let close = |x: f64| (x - target).abs() <= TOLERANCE || x == t.dtype.round(target);
        t.value
            .as_ref()
            .is_some_and(|val| val.data.iter().all(|&x| close(x)))
    }
}

/// A constant whose every element is exactly `target`: for identities (`x * 1 = x`),
/// where any other value would change the result.
pub fn is_exactly(name: &str, target: f64) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let v = var(name);
    move |egraph, _, subst| {
        let value = tensor(egraph, subst, v).and_then(|t| t.value.as_ref());
        value.is_some_and(|val| val.data.iter().all(|&x| x == target))
    }
}

/// `name` is a float tensor (integer arithmetic saturates, so some identities fail).
pub fn is_float(name: &str) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let v = var(name);
    move |egraph, _, subst| tensor(egraph, subst, v).is_some_and(|t| t.dtype.is_float())
}

/// The value of a uniform constant (every element equal), for rules that read one.
pub fn uniform_value(facts: &Facts) -> Option<f64> {
    let value = facts.tensor()?.value.as_ref()?;
    let first = *value.data.first()?;
    value
        .data
        .iter()
        .all(|&x| x.to_bits() == first.to_bits())
        .then_some(first)
}

/// `name` is a constant with one value in every element.
pub fn is_uniform(name: &str) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let v = var(name);
    move |egraph, _, subst| uniform_value(&egraph[subst[v]].data).is_some()
}

/// The integer `axis` is the last axis of `x`.
pub fn is_last_axis(axis: &str, x: &str) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let (a, x) = (var(axis), var(x));
    move |egraph, _, subst| match (attr(egraph, subst, a), tensor(egraph, subst, x)) {
        (Some(Attr::Int(n)), Some(t)) => !t.shape.is_empty() && *n == t.shape.len() as i64 - 1,
        _ => false,
    }
}

/// The permutation `perm` leaves every axis in place.
pub fn is_identity_perm(perm: &str) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let p = var(perm);
    move |egraph, _, subst| match attr(egraph, subst, p) {
        Some(Attr::List(l)) => l.iter().enumerate().all(|(i, &n)| n == i as i64),
        _ => false,
    }
}

/// The permutation `perm` swaps the last two axes and nothing else.
pub fn swaps_last_two(perm: &str) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let p = var(perm);
    move |egraph, _, subst| match attr(egraph, subst, p) {
        Some(Attr::List(l)) if l.len() >= 2 => {
            let n = l.len() as i64;
            let expected = (0..n - 2).chain([n - 1, n - 2]);
            l.iter().copied().eq(expected)
        }
        _ => false,
    }
}

/// The reshape target `shape` is `x`'s own shape.
pub fn is_shape_of(shape: &str, x: &str) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let (s, x) = (var(shape), var(x));
    move |egraph, _, subst| match (attr(egraph, subst, s), tensor(egraph, subst, x)) {
        (Some(Attr::Shape(s)), Some(t)) => *s == t.shape,
        _ => false,
    }
}

/// The guard on every rule: `rhs`, instantiated with the match, has exactly the dtype and
/// shape of the matched e-class.
pub fn keeps_type(rhs: &str) -> impl Fn(&mut KilnGraph, Id, &Subst) -> bool {
    let pattern: Pattern<KilnLang> = rhs
        .parse()
        .unwrap_or_else(|e| panic!("bad pattern {rhs}: {e}"));
    move |egraph, eclass, subst| {
        let facts = pattern_facts(egraph, &pattern, subst);
        same_type(&egraph[eclass].data, &facts)
    }
}

/// Whether two facts describe tensors of one dtype and shape.
pub fn same_type(a: &Facts, b: &Facts) -> bool {
    match (a.tensor(), b.tensor()) {
        (Some(a), Some(b)) => a.dtype == b.dtype && a.shape == b.shape,
        _ => false,
    }
}

/// The facts `pattern` would have once added under `subst`, computed without adding it.
pub fn pattern_facts(egraph: &KilnGraph, pattern: &Pattern<KilnLang>, subst: &Subst) -> Facts {
    let mut facts: Vec<Facts> = Vec::with_capacity(pattern.ast.len());
    for node in pattern.ast.as_ref() {
        let f = match node {
            ENodeOrVar::Var(v) => egraph[subst[*v]].data.clone(),
            ENodeOrVar::ENode(n) => derive(n, |c| &facts[usize::from(c)]),
        };
        facts.push(f);
    }
    facts
        .pop()
        .unwrap_or(Facts::Invalid("empty pattern".into()))
}

/// The guard for appliers that build their node by hand: adds `node` and merges it into
/// `eclass` only if it has the class's type. Returns what egg's `apply_one` returns.
pub fn union_if_same_type(egraph: &mut KilnGraph, eclass: Id, node: KilnLang) -> Vec<Id> {
    let facts = derive(&node, |c| &egraph[c].data);
    if !same_type(&egraph[eclass].data, &facts) {
        return Vec::new();
    }
    let id = egraph.add(node);
    if egraph.union(eclass, id) {
        vec![eclass]
    } else {
        Vec::new()
    }
}
