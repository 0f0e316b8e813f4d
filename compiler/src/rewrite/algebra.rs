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
    use super::super::testing::{assert_same_values, build, op_names, run};
    use super::rules;
    use kiln_ir::{DType, Tensor, UnaryOp};

    #[test]
    fn identities_disappear() {
        let before = build(|b| {
            let x = b.input("x", DType::F32, [4, 8])?;
            let one = b.scalar(DType::F32, 1.0)?;
            let zero = b.scalar(DType::F32, 0.0)?;
            let y = b.mul(x, one)?;
            let y = b.mul(one, y)?;
            let y = b.add(y, zero)?;
            let y = b.add(zero, y)?;
            let y = b.binary(kiln_ir::BinaryOp::Sub, y, zero)?;
            let y = b.binary(kiln_ir::BinaryOp::Div, y, one)?;
            let y = b.unary(UnaryOp::Neg, y)?;
            let y = b.unary(UnaryOp::Neg, y)?;
            b.output("y", y);
            Ok(())
        });
        let (after, report) = run(&before, &rules());
        assert_eq!(op_names(&after), ["input"]);
        assert_eq!(after.outputs[0].1, after.inputs_named()[0].1);
        assert_eq!(report.nodes_before, 11);
        assert_eq!(report.nodes_after, 1);
        assert_same_values(&before, &after, 0.0);
    }

    #[test]
    fn broadcasting_identity_stays() {
        // x * ones([4,8]) broadcasts x: [8] to [4,8]; x + 0.5 is no identity.
        let before = build(|b| {
            let x = b.input("x", DType::F32, [8])?;
            let ones = b.constant(Tensor::new(DType::F32, vec![4, 8], vec![1.0; 32]))?;
            let half = b.scalar(DType::F32, 0.5)?;
            let y = b.mul(x, ones)?;
            let z = b.add(x, half)?;
            b.output("y", y);
            b.output("z", z);
            Ok(())
        });
        let (after, _) = run(&before, &rules());
        assert_eq!(op_names(&after), ["input", "const", "const", "mul", "add"]);
        assert_same_values(&before, &after, 0.0);
    }

    #[test]
    fn integer_double_negation_stays() {
        let before = build(|b| {
            let x = b.input("x", DType::I32, [4])?;
            let y = b.unary(UnaryOp::Neg, x)?;
            let y = b.unary(UnaryOp::Neg, y)?;
            b.output("y", y);
            Ok(())
        });
        let (after, _) = run(&before, &rules());
        assert_eq!(op_names(&after), ["input", "neg", "neg"]);
    }
}
