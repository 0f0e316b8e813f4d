//! Identical kernels, compiled once: an LLM's layers lower to the same kernels over
//! different weights (a 1B llama's 22 layers give some 440 kernels of about 20 kinds), and
//! every code generator, and every driver that compiles code at load time (PTX, SPIR-V
//! pipelines), would otherwise do the same work once per layer.
//!
//! Two kernels are the same when they are equal but for their names and the numbering of
//! their variables (lowering draws variable ids from one counter for the whole graph). The
//! launches of a duplicate launch the first such kernel instead; the launch keeps its own
//! buffers, grid and guard.

use crate::kernel::{map_exprs, rewrite_bottom_up, Expr, Kernel, Stmt, VarId};
use crate::lower::Lowered;
use std::collections::HashMap;

/// Drops kernels equal to an earlier one and points their launches at it.
pub fn share_identical_kernels(lowered: &mut Lowered) {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut kept = Vec::new();
    let mut new_index = Vec::with_capacity(lowered.kernels.len());
    for k in std::mem::take(&mut lowered.kernels) {
        let at = *first.entry(key(&k)).or_insert_with(|| {
            kept.push(k);
            kept.len() - 1
        });
        new_index.push(at);
    }
    lowered.kernels = kept;
    for l in &mut lowered.launches {
        l.kernel = new_index[l.kernel];
    }
}

/// `k` without its name and its arguments' names, its variables numbered in the order a
/// fixed walk meets them.
fn key(k: &Kernel) -> String {
    let mut c = k.clone();
    c.name.clear();
    for a in &mut c.args {
        a.name.clear();
    }
    let mut ids: HashMap<VarId, VarId> = HashMap::new();
    rename_vars(&mut c.body, &mut |v| {
        let next = ids.len() as VarId;
        *ids.entry(v).or_insert(next)
    });
    c.next_var = 0;
    format!("{c:?}")
}

/// Replaces every variable id `v` in `body`, bound or read, by `f(v)`.
pub(crate) fn rename_vars(body: &mut [Stmt], f: &mut dyn FnMut(VarId) -> VarId) {
    map_exprs(body, &mut |e| {
        rewrite_bottom_up(e, &mut |e| match e {
            Expr::Var(v) => Expr::Var(f(v)),
            Expr::Let { var, value, body } => Expr::Let {
                var: f(var),
                value,
                body,
            },
            other => other,
        })
    });
    statement_vars(body, f);
}

fn statement_vars(body: &mut [Stmt], f: &mut dyn FnMut(VarId) -> VarId) {
    for s in body {
        match s {
            Stmt::Let { var, .. } | Stmt::Decl { var, .. } | Stmt::Assign { var, .. } => {
                *var = f(*var);
            }
            Stmt::Loop { var, body, .. } => {
                *var = f(*var);
                statement_vars(body, f);
            }
            Stmt::Reduce { acc, var, .. } => {
                *acc = f(*acc);
                *var = f(*var);
            }
            Stmt::If {
                then, otherwise, ..
            } => {
                statement_vars(then, f);
                statement_vars(otherwise, f);
            }
            Stmt::GroupMma { products, .. } => {
                for p in products {
                    p.acc = f(p.acc);
                }
            }
            Stmt::GroupWait { accs, .. } => {
                for v in accs {
                    *v = f(*v);
                }
            }
            Stmt::Store { .. } | Stmt::Prefetch { .. } | Stmt::Copy { .. } | Stmt::Await { .. } => {
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lowered(src: &str) -> Lowered {
        crate::pipeline::finished_kernels(src, "cuda:sm_90")
    }

    /// Two layers of the same shape over different weights share their kernels; a layer
    /// of another width does not.
    #[test]
    fn layers_of_one_shape_share_kernels_and_keep_their_buffers() {
        let mut l = lowered(
            "kir 1
%x = input \"x\" f32[4,64]
%w1 = input \"w1\" f32[64,64]
%w2 = input \"w2\" f32[64,64]
%w3 = input \"w3\" f32[64,32]
%a = matmul %x, %w1 transpose_a=false transpose_b=false
%b = silu %a
%c = matmul %b, %w2 transpose_a=false transpose_b=false
%d = silu %c
%e = matmul %d, %w3 transpose_a=false transpose_b=false
output \"y\" = %e
",
        );
        assert_eq!(l.kernels.len(), 5);
        let before: Vec<Vec<usize>> = l.launches.iter().map(|l| l.args.clone()).collect();
        share_identical_kernels(&mut l);
        let kernel_of: Vec<usize> = l.launches.iter().map(|l| l.kernel).collect();
        assert_eq!(kernel_of, [0, 1, 0, 1, 2], "{kernel_of:?}");
        assert_eq!(l.kernels.len(), 3);
        let after: Vec<Vec<usize>> = l.launches.iter().map(|l| l.args.clone()).collect();
        assert_eq!(before, after, "each launch keeps its own buffers");
        assert_ne!(before[0], before[2]);
    }

    /// The key ignores variable numbering and names, and nothing else: a literal changed
    /// anywhere makes another kernel.
    #[test]
    fn keys_see_through_variable_ids_but_not_values() {
        let l = lowered(
            "kir 1
%x = input \"x\" f32[4,64]
%s = softmax %x axis=1
output \"y\" = %s
",
        );
        let k = &l.kernels[0];
        let mut shifted = k.clone();
        shifted.name = "other".into();
        shifted.args[0].name = "b7".into();
        rename_vars(&mut shifted.body, &mut |v| v + 1000);
        assert_ne!(format!("{k:?}"), format!("{shifted:?}"));
        assert_eq!(key(k), key(&shifted));
        let mut changed = k.clone();
        map_exprs(&mut changed.body, &mut |e| {
            rewrite_bottom_up(e, &mut |e| match e {
                Expr::Lit(crate::kernel::Lit::I64(64)) => Expr::Lit(crate::kernel::Lit::I64(65)),
                other => other,
            })
        });
        assert_ne!(
            format!("{k:?}"),
            format!("{changed:?}"),
            "the kernel has a 64"
        );
        assert_ne!(key(k), key(&changed));
    }
}
