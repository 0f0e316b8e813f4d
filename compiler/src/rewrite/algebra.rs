//! Algebraic identities: multiplying by one, adding or subtracting zero, dividing by one,
//! double negation.
//!
//! Exporters and hand-built graphs leave these behind (a scale of 1.0, a zero bias), and
//! each costs a memory pass. They hold only where the identity constant does not
//! broadcast `x` to a larger shape (`x: [8]` times ones `[4,8]` is a `[4,8]` tensor, not
//! `x`), which the type guard every rule carries checks. The constants must be exactly 0
//! or 1: an identity is not an approximation.

use super::conditions::{is_exactly, is_float};
use super::Rule;

pub fn rules() -> Vec<Rule> {
    vec![
        rule!("mul-one"; "(mul ?x ?one)" => "?x" if is_exactly("?one", 1.0)),
        rule!("one-mul"; "(mul ?one ?x)" => "?x" if is_exactly("?one", 1.0)),
        rule!("add-zero"; "(add ?x ?zero)" => "?x" if is_exactly("?zero", 0.0)),
        rule!("zero-add"; "(add ?zero ?x)" => "?x" if is_exactly("?zero", 0.0)),
        rule!("sub-zero"; "(sub ?x ?zero)" => "?x" if is_exactly("?zero", 0.0)),
        rule!("div-one"; "(div ?x ?one)" => "?x" if is_exactly("?one", 1.0)),
        // Integer negation saturates (neg(i32::MIN) is i32::MAX), so floats only.
        rule!("neg-neg"; "(neg (neg ?x))" => "?x" if is_float("?x")),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use super::rules;

    #[test]
    fn identities_disappear() {
        let report = check(
            &rules(),
            r#"
            %x    = input "x" f32[4,8]
            %one  = const f32[] [1.0]
            %zero = const f32[] [0.0]
            %a = mul %x, %one
            %b = mul %one, %a
            %c = add %b, %zero
            %d = add %zero, %c
            %e = sub %d, %zero
            %f = div %e, %one
            %g = neg %f
            %h = neg %g
            output "y" = %h
            "#,
            r#"
            %x = input "x" f32[4,8]
            output "y" = %x
            "#,
            0.0,
        );
        assert_eq!((report.nodes_before, report.nodes_after), (11, 1));
        assert_eq!(report.rules_applied.len(), 7, "{:?}", report.rules_applied);
    }

    #[test]
    fn broadcasting_or_inexact_identity_stays() {
        // x * ones([2,1]) broadcasts x: [8] to [2,8]; x + 1e-9 is not x + 0.
        let graph = r#"
            %x    = input "x" f32[8]
            %ones = const f32[2,1] [1.0, 1.0]
            %tiny = const f32[] [1e-9]
            %y = mul %x, %ones
            %z = add %x, %tiny
            output "y" = %y
            output "z" = %z
            "#;
        check(&rules(), graph, graph, 0.0);
    }

    #[test]
    fn integer_double_negation_stays() {
        let graph = r#"
            %x = input "x" i32[4]
            %a = neg %x
            %b = neg %a
            output "y" = %b
            "#;
        check(&rules(), graph, graph, 0.0);
    }
}
