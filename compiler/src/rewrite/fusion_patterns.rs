//! Recognising composites written as primitives: softmax, rms_norm, gelu (tanh form),
//! silu and sigmoid.
//!
//! ONNX exports and hand-written model code spell these as chains of elementwise ops and
//! reductions; the named ops lower to one kernel each (a single pass over a row for
//! softmax and rms_norm, one transcendental for gelu) instead of five to twelve. Each
//! pattern is the textbook formula; constants must match their exact value within
//! [`super::conditions::TOLERANCE`] (or rounded to the graph's dtype), and the reductions
//! must run over the last axis with kept dims, as the fused ops do. The epsilon of
//! rms_norm is read from the graph's constant.

use super::analysis::TypeAnalysis;
use super::conditions::{
    is_exactly, is_last_axis, is_near, is_uniform, pattern_facts, same_type, uniform_value, var,
};
use super::lang::{Head, KilnLang, Real};
use super::Rule;
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Subst, Symbol, Var};

const GELU_K: f64 = 0.044715;

pub fn rules() -> Vec<Rule> {
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
    vec![
        // softmax(x) = exp(x - max(x)) / sum(exp(x - max(x)))
        rule!("softmax";
            "(div (exp (sub ?x (reduce_max ?x (list ?a) 1)))
                  (reduce_sum (exp (sub ?x (reduce_max ?x (list ?a) 1))) (list ?a) 1))"
            => "(softmax ?x ?a)"
            if is_last_axis("?a", "?x")),
        // rms_norm(x, w) = x * rsqrt(mean(x^2) + eps) * w
        egg::rewrite!("rms-norm";
            "(mul (mul ?x (rsqrt (add (reduce_mean (mul ?x ?x) (list ?a) 1) ?eps))) ?w)"
            => { WithRealOf::new("?eps", "(rms_norm ?x ?w ?e)") }
            if is_last_axis("?a", "?x") if is_uniform("?eps")),
        egg::rewrite!("rms-norm-pow";
            "(mul (mul ?x (rsqrt (add (reduce_mean (pow ?x ?two) (list ?a) 1) ?eps))) ?w)"
            => { WithRealOf::new("?eps", "(rms_norm ?x ?w ?e)") }
            if is_exactly("?two", 2.0) if is_last_axis("?a", "?x") if is_uniform("?eps")),
        // gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        rule!("gelu-tanh";
            "(mul (mul ?half ?x) (add ?one (tanh (mul ?c (add ?x (mul ?k (mul (mul ?x ?x) ?x)))))))"
            => "(gelu_tanh ?x)"
            if is_near("?half", 0.5) if is_near("?one", 1.0)
            if is_near("?c", sqrt_2_over_pi) if is_near("?k", GELU_K)),
        rule!("gelu-tanh-pow";
            "(mul (mul ?half ?x) (add ?one (tanh (mul ?c (add ?x (mul ?k (pow ?x ?three)))))))"
            => "(gelu_tanh ?x)"
            if is_exactly("?three", 3.0) if is_near("?half", 0.5) if is_near("?one", 1.0)
            if is_near("?c", sqrt_2_over_pi) if is_near("?k", GELU_K)),
        // silu(x) = x * sigmoid(x)
        rule!("silu"; "(mul ?x (sigmoid ?x))" => "(silu ?x)"),
        rule!("silu-rev"; "(mul (sigmoid ?x) ?x)" => "(silu ?x)"),
        // sigmoid(x) = 1 / (1 + exp(-x))
        rule!("sigmoid"; "(div ?one (add ?one2 (exp (neg ?x))))" => "(sigmoid ?x)"
            if is_near("?one", 1.0) if is_near("?one2", 1.0)),
        rule!("sigmoid-recip"; "(recip (add ?one (exp (neg ?x))))" => "(sigmoid ?x)"
            if is_near("?one", 1.0)),
    ]
}

/// Instantiates `rhs` with `?e` bound to a `Real` attribute holding the value of the
/// uniform constant `from` (how rms_norm's epsilon moves from a tensor to an attribute).
struct WithRealOf {
    from: Var,
    into: Var,
    rhs: Pattern<KilnLang>,
}

impl WithRealOf {
    fn new(from: &str, rhs: &str) -> WithRealOf {
        let rhs = rhs
            .parse()
            .unwrap_or_else(|e| panic!("bad pattern {rhs}: {e}"));
        WithRealOf {
            from: var(from),
            into: var("?e"),
            rhs,
        }
    }
}

impl Applier<KilnLang, TypeAnalysis> for WithRealOf {
    fn apply_one(
        &self,
        egraph: &mut EGraph<KilnLang, TypeAnalysis>,
        eclass: Id,
        subst: &Subst,
        _: Option<&PatternAst<KilnLang>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let Some(value) = uniform_value(&egraph[subst[self.from]].data) else {
            return Vec::new();
        };
        let mut subst = subst.clone();
        subst.insert(
            self.into,
            egraph.add(KilnLang::leaf(Head::Real(Real(value)))),
        );
        if !same_type(
            &egraph[eclass].data,
            &pattern_facts(egraph, &self.rhs, &subst),
        ) {
            return Vec::new();
        }
        self.rhs.apply_one(egraph, eclass, &subst, None, rule)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, kir, run};
    use super::rules;

    #[test]
    fn softmax_over_the_last_axis_fuses() {
        let report = check(
            &rules(),
            r#"
            %x  = input "x" f32[3,16]
            %m  = reduce_max %x axes=[1] keep_dims=true
            %d  = sub %x, %m
            %e  = exp %d
            %s  = reduce_sum %e axes=[1] keep_dims=true
            %y  = div %e, %s
            %m0 = reduce_max %x axes=[0] keep_dims=true
            %d0 = sub %x, %m0
            %e0 = exp %d0
            %s0 = reduce_sum %e0 axes=[0] keep_dims=true
            %y0 = div %e0, %s0
            output "last" = %y
            output "first" = %y0
            "#,
            r#"
            %x  = input "x" f32[3,16]
            %y  = softmax %x axis=1
            %m0 = reduce_max %x axes=[0] keep_dims=true
            %d0 = sub %x, %m0
            %e0 = exp %d0
            %s0 = reduce_sum %e0 axes=[0] keep_dims=true
            %y0 = div %e0, %s0
            output "last" = %y
            output "first" = %y0
            "#,
            1e-6,
        );
        assert_eq!(report.rules_applied, [("softmax".to_string(), 1)]);
    }

    #[test]
    fn rms_norm_fuses_with_eps_from_the_constant() {
        let expansion = r#"
            %x   = input "x" f32[4,32]
            %w   = param "w" f32[32]
            %eps = const f32[] [1e-5]
            %sq  = SQUARE
            %ms  = reduce_mean %sq axes=[1] keep_dims=true
            %v   = add %ms, %eps
            %r   = rsqrt %v
            %n   = mul %x, %r
            %y   = mul %n, %w
            output "y" = %y
            "#;
        // eps is the f32 constant's value, 1e-5 rounded to f32.
        let fused = r#"
            %x = input "x" f32[4,32]
            %w = param "w" f32[32]
            %y = rms_norm %x, %w eps=9.999999747378752e-6
            output "y" = %y
            "#;
        check(
            &rules(),
            &expansion.replace("SQUARE", "mul %x, %x"),
            fused,
            1e-5,
        );
        let pow = expansion.replace(
            "%sq  = SQUARE",
            "%two = const f32[] [2.0]\n%sq = pow %x, %two",
        );
        check(&rules(), &pow, fused, 1e-5);
    }

    const GELU: &str = r#"
        %x    = input "x" f32[4,16]
        %half = const f32[] [0.5]
        %one  = const f32[] [1.0]
        %c    = const f32[] [0.7978845608]
        %k    = const f32[] [0.044715]
        CUBE
        %kc   = mul %k, %cube
        %in   = add %x, %kc
        %s    = mul %c, %in
        %t    = tanh %s
        %t1   = add %one, %t
        %hx   = mul %half, %x
        %y    = mul %hx, %t1
        output "y" = %y
        "#;
    const MUL_CUBE: &str = "%sq = mul %x, %x\n%cube = mul %sq, %x";
    const POW_CUBE: &str = "%three = const f32[] [3.0]\n%cube = pow %x, %three";

    #[test]
    fn gelu_tanh_fuses_from_either_cube() {
        let fused = r#"
            %x = input "x" f32[4,16]
            %y = gelu_tanh %x
            output "y" = %y
            "#;
        check(&rules(), &GELU.replace("CUBE", MUL_CUBE), fused, 1e-5);
        check(&rules(), &GELU.replace("CUBE", POW_CUBE), fused, 1e-5);
    }

    #[test]
    fn gelu_tanh_fuses_in_bf16_with_rounded_constants() {
        let fused = r#"
            %x = input "x" bf16[4,16]
            %y = gelu_tanh %x
            output "y" = %y
            "#;
        check(
            &rules(),
            &GELU.replace("CUBE", MUL_CUBE).replace("f32", "bf16"),
            fused,
            3e-2,
        );
    }

    #[test]
    fn gelu_with_a_wrong_constant_stays() {
        let before = GELU
            .replace("CUBE", MUL_CUBE)
            .replace("0.7978845608", "0.79");
        let (_, report) = run(&kir(&before), &rules());
        assert!(
            report.rules_applied.is_empty(),
            "{:?}",
            report.rules_applied
        );
    }

    #[test]
    fn sigmoid_then_silu_fuse() {
        check(
            &rules(),
            r#"
            %x   = input "x" f32[2,8]
            %one = const f32[] [1.0]
            %n   = neg %x
            %e   = exp %n
            %d   = add %one, %e
            %s   = div %one, %d
            %y   = mul %x, %s
            %r   = recip %d
            output "silu" = %y
            output "sigmoid" = %r
            "#,
            r#"
            %x = input "x" f32[2,8]
            %s = sigmoid %x
            %y = silu %x
            output "silu" = %y
            output "sigmoid" = %s
            "#,
            1e-6,
        );
    }
}
