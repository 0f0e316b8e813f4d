//! Which of the equivalent graphs in the e-graph to keep.
//!
//! The cost is a rough count of memory passes: an elementwise op is one, a reduction or a
//! layout copy about two, a matmul much more. Named composites (softmax, rms_norm,
//! gelu_tanh, silu, sigmoid) cost about one pass, so they always beat the five or more
//! primitives they replace, and a matmul reading an operand transposed through its flag
//! costs nothing extra, so flags beat an explicit permute. Attributes cost nothing.
//!
//! A node costs its own price plus its children's, with every tensor op priced above zero,
//! so the cost is strictly monotone, as egg's extractor requires (and a self-loop such as
//! `x = mul(x, 1)` is never chosen).

use super::lang::{Head, KilnLang};
use egg::{CostFunction, Id};

/// The cost model used by [`super::rewrite`].
#[derive(Clone, Copy, Debug, Default)]
pub struct KilnCost;

impl KilnCost {
    /// The price of the node itself, children excluded.
    pub fn own(head: &Head) -> f64 {
        match head {
            Head::Int(_)
            | Head::Real(_)
            | Head::Ty(_)
            | Head::Shape(_)
            | Head::Layout(_)
            | Head::List => 0.0,
            Head::Outputs => 0.0,
            Head::Source(_) => 1.0,
            Head::Reshape => 0.5,
            Head::Unary(_) | Head::Binary(_) | Head::Compare(_) | Head::Select | Head::Cast => 1.0,
            Head::Slice | Head::Concat => 1.0,
            Head::Softmax | Head::RmsNorm => 2.0,
            Head::LayerNorm => 2.5,
            Head::Reduce(_) | Head::Permute | Head::Gather | Head::Dequant(_) => 2.0,
            Head::Quantize(_) => 3.0,
            Head::Rope => 3.0,
            Head::MatMul => 8.0,
        }
    }
}

impl CostFunction<KilnLang> for KilnCost {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &KilnLang, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        enode
            .children
            .iter()
            .fold(KilnCost::own(&enode.head), |sum, &c| sum + costs(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egg::RecExpr;

    fn cost(s: &str) -> f64 {
        let e: RecExpr<KilnLang> = s.parse().unwrap();
        KilnCost.cost_rec(&e)
    }

    #[test]
    fn fused_ops_beat_their_expansions() {
        let softmax = "(div (exp (sub ?x (reduce_max ?x (list 1) 1))) (reduce_sum (exp (sub ?x (reduce_max ?x (list 1) 1))) (list 1) 1))";
        let x = "(reshape 0 [1])"; // any tensor-valued subterm stands in for ?x
        assert!(cost("(softmax (reshape 0 [1]) 1)") < cost(&softmax.replace("?x", x)));
        assert!(
            cost("(matmul (reshape 0 [1]) (reshape 0 [1]) 1 0)")
                < cost("(matmul (permute (reshape 0 [1]) (list 1 0)) (reshape 0 [1]) 0 0)")
        );
        assert!(
            cost("(silu (reshape 0 [1]))")
                < cost("(mul (reshape 0 [1]) (sigmoid (reshape 0 [1])))")
        );
    }

    #[test]
    fn cost_is_monotone() {
        let e: RecExpr<KilnLang> = "(add (mul (reshape 0 [1]) 3) (neg 2))".parse().unwrap();
        let mut costs = Vec::new();
        for node in e.as_ref() {
            let c = KilnCost.cost(node, |i| costs[usize::from(i)]);
            for &child in &node.children {
                assert!(
                    c >= costs[usize::from(child)],
                    "{node} costs less than a child"
                );
            }
            costs.push(c);
        }
    }
}
