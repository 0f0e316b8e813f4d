//! Layout rules: permutes and reshapes that cancel or compose, and transposes folded into
//! matmul's operand flags.
//!
//! Exporters emit a permute for every `x.T`, and a linear layer stored `[out, in]` reads its
//! weight through one; a permute is a full copy of its tensor, while a matmul reads a
//! transposed operand for free (`transpose_a` / `transpose_b`). Chains of reshapes and
//! permutes from view-heavy model code collapse to one op or to nothing.

use super::analysis::TypeAnalysis;
use super::attrs::Attr;
use super::conditions::{is_identity_perm, is_shape_of, swaps_last_two, union_if_same_type, var};
use super::lang::{Head, KilnLang};
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
        ComposePerms {
            x: var("?x"),
            p: var("?p"),
            q: var("?q"),
        }
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
        let (Some(p), Some(q)) = (list(self.p), list(self.q)) else {
            return Vec::new();
        };
        let Some(r) = q
            .iter()
            .map(|&j| usize::try_from(j).ok().and_then(|j| p.get(j).copied()))
            .collect::<Option<Vec<i64>>>()
        else {
            return Vec::new();
        };
        let axes = r
            .into_iter()
            .map(|n| egraph.add(KilnLang::leaf(Head::Int(n))))
            .collect();
        let perm = egraph.add(KilnLang {
            head: Head::List,
            children: axes,
        });
        union_if_same_type(
            egraph,
            eclass,
            KilnLang {
                head: Head::Permute,
                children: vec![subst[self.x], perm],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use super::rules;

    #[test]
    fn inverse_permutes_cancel_and_others_compose() {
        check(
            &rules(),
            r#"
            %x    = input "x" f32[2,3,4]
            %p    = permute %x perm=[1,2,0]
            %back = permute %p perm=[2,0,1]
            %q    = permute %x perm=[0,2,1]
            %qq   = permute %q perm=[1,0,2]
            output "back" = %back
            output "composed" = %qq
            "#,
            r#"
            %x = input "x" f32[2,3,4]
            %r = permute %x perm=[2,0,1]
            output "back" = %x
            output "composed" = %r
            "#,
            0.0,
        );
    }

    #[test]
    fn reshape_chains_collapse() {
        check(
            &rules(),
            r#"
            %x     = input "x" f32[4,8]
            %flat  = reshape %x shape=[32]
            %y     = reshape %flat shape=[8,4]
            %same  = reshape %x shape=[4,8]
            %round = reshape %flat shape=[4,8]
            output "y" = %y
            output "same" = %same
            output "round_trip" = %round
            "#,
            r#"
            %x = input "x" f32[4,8]
            %y = reshape %x shape=[8,4]
            output "y" = %y
            output "same" = %x
            output "round_trip" = %x
            "#,
            0.0,
        );
    }

    #[test]
    fn transposes_fold_into_matmul_flags() {
        // y = x @ w^T (a linear layer with [out, in] weights); g = (x^T)^T @ x^T = x @ x^T.
        check(
            &rules(),
            r#"
            %x  = input "x" f32[2,3,8]
            %w  = param "w" f32[16,8]
            %wt = permute %w perm=[1,0]
            %y  = matmul %x, %wt transpose_a=false transpose_b=false
            %xt = permute %x perm=[0,2,1]
            %g  = matmul %xt, %xt transpose_a=true transpose_b=false
            output "y" = %y
            output "g" = %g
            "#,
            r#"
            %x = input "x" f32[2,3,8]
            %w = param "w" f32[16,8]
            %y = matmul %x, %w transpose_a=false transpose_b=true
            %g = matmul %x, %x transpose_a=false transpose_b=true
            output "y" = %y
            output "g" = %g
            "#,
            0.0,
        );
    }
}
