//! Layout rules: permutes and reshapes that cancel or compose, and transposes folded into
//! matmul's operand flags.
//!
//! Exporters emit a permute for every `x.T`, and a linear layer stored `[out, in]` reads its
//! weight through one; a permute is a full copy of its tensor, while a matmul reads a
//! transposed operand for free (`transpose_a` / `transpose_b`). Chains of reshapes and
//! permutes from view-heavy model code collapse to one op or to nothing.

use super::analysis::TypeAnalysis;
use super::conditions::{is_identity_perm, is_shape_of, swaps_last_two, union_if_same_type, var};
use super::lang::{Attr, Head, KilnLang};
use super::Rule;
use egg::{Applier, EGraph, Id, PatternAst, Subst, Symbol, Var};

pub fn rules() -> Vec<Rule> {
    vec![
        egg::rewrite!("permute-permute"; "(permute (permute ?x ?p) ?q)" => { ComposePerms::new() }),
        rule!("permute-identity"; "(permute ?x ?p)" => "?x" if is_identity_perm("?p")),
        rule!("reshape-reshape"; "(reshape (reshape ?x ?s) ?t)" => "(reshape ?x ?t)"),
        rule!("reshape-own-shape"; "(reshape ?x ?s)" => "?x" if is_shape_of("?s", "?x")),
        // matmul(a^T, b) with the transpose as a permute of the last two axes = the flag.
        rule!("matmul-transpose-a"; "(matmul (permute ?a ?p) ?b 0 ?tb)" => "(matmul ?a ?b 1 ?tb)" if swaps_last_two("?p")),
        rule!("matmul-untranspose-a"; "(matmul (permute ?a ?p) ?b 1 ?tb)" => "(matmul ?a ?b 0 ?tb)" if swaps_last_two("?p")),
        rule!("matmul-transpose-b"; "(matmul ?a (permute ?b ?p) ?ta 0)" => "(matmul ?a ?b ?ta 1)" if swaps_last_two("?p")),
        rule!("matmul-untranspose-b"; "(matmul ?a (permute ?b ?p) ?ta 1)" => "(matmul ?a ?b ?ta 0)" if swaps_last_two("?p")),
    ]
}

/// `permute(permute(x, p), q) = permute(x, r)` with `r[j] = p[q[j]]`: axis `j` of the
/// result is axis `q[j]` of the inner permute, which is axis `p[q[j]]` of `x`.
struct ComposePerms {
    x: Var,
    p: Var,
    q: Var,
}

impl ComposePerms {
    fn new() -> ComposePerms {
        ComposePerms { x: var("?x"), p: var("?p"), q: var("?q") }
    }
}

impl Applier<KilnLang, TypeAnalysis> for ComposePerms {
    fn apply_one(
        &self,
        egraph: &mut EGraph<KilnLang, TypeAnalysis>,
        eclass: Id,
        subst: &Subst,
        _: Option<&PatternAst<KilnLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let list = |v: Var| match egraph[subst[v]].data.attr() {
            Some(Attr::List(l)) => Some(l.clone()),
            _ => None,
        };
        let (Some(p), Some(q)) = (list(self.p), list(self.q)) else { return Vec::new() };
        let Some(r) = q.iter().map(|&j| usize::try_from(j).ok().and_then(|j| p.get(j).copied())).collect::<Option<Vec<i64>>>()
        else {
            return Vec::new();
        };
        let axes = r.into_iter().map(|n| egraph.add(KilnLang::leaf(Head::Int(n)))).collect();
        let perm = egraph.add(KilnLang { head: Head::List, children: axes });
        union_if_same_type(egraph, eclass, KilnLang { head: Head::Permute, children: vec![subst[self.x], perm] })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_same_values, build, op_names, run};
    use super::rules;
    use kiln_ir::{DType, Op};

    #[test]
    fn inverse_permutes_cancel_and_others_compose() {
        let before = build(|b| {
            let x = b.input("x", DType::F32, [2, 3, 4])?;
            let p = b.permute(x, &[1, 2, 0])?;
            let back = b.permute(p, &[2, 0, 1])?;
            let q = b.permute(x, &[0, 2, 1])?;
            let q = b.permute(q, &[1, 0, 2])?;
            b.output("back", back);
            b.output("composed", q);
            Ok(())
        });
        let (after, _) = run(&before, &rules());
        assert_eq!(op_names(&after), ["input", "permute"]);
        let composed = after.node(after.outputs[1].1);
        assert_eq!(composed.op, Op::Permute { perm: vec![2, 0, 1] });
        assert_eq!(after.outputs[0].1, after.inputs_named()[0].1);
        assert_same_values(&before, &after, 0.0);
    }

    #[test]
    fn reshape_chains_collapse() {
        let before = build(|b| {
            let x = b.input("x", DType::F32, [4, 8])?;
            let flat = b.reshape(x, [32])?;
            let y = b.reshape(flat, [8, 4])?;
            let same = b.reshape(x, [4, 8])?;
            let round_trip = b.reshape(flat, [4, 8])?;
            b.output("y", y);
            b.output("same", same);
            b.output("round_trip", round_trip);
            Ok(())
        });
        let (after, _) = run(&before, &rules());
        assert_eq!(op_names(&after), ["input", "reshape"]);
        assert_same_values(&before, &after, 0.0);
    }

    #[test]
    fn transposes_fold_into_matmul_flags() {
        let before = build(|b| {
            let x = b.input("x", DType::F32, [2, 3, 8])?;
            let w = b.param("w", DType::F32, [16, 8])?;
            let wt = b.permute(w, &[1, 0])?;
            let y = b.matmul(x, wt)?; // x @ w^T: a linear layer with [out, in] weights
            let xt = b.permute(x, &[0, 2, 1])?;
            let g = b.matmul_t(xt, xt, true, false)?; // (x^T)^T @ x^T = x @ x^T
            b.output("y", y);
            b.output("g", g);
            Ok(())
        });
        let (after, _) = run(&before, &rules());
        assert!(!op_names(&after).contains(&"permute"), "{:?}", op_names(&after));
        let flags = |name: &str| {
            let id = after.outputs.iter().find(|(n, _)| n == name).unwrap().1;
            after.node(id).op.clone()
        };
        assert_eq!(flags("y"), Op::MatMul { transpose_a: false, transpose_b: true });
        assert_eq!(flags("g"), Op::MatMul { transpose_a: false, transpose_b: true });
        assert_same_values(&before, &after, 0.0);
    }
}
