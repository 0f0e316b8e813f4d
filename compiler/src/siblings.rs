//! Sibling launches as one: a decode step's matrix-vector products that read the same
//! activations and none of each other's results (a layer's query, key and value
//! projections; its gate and up projections) run as one kernel whose blocks take the
//! first's outputs, then the second's, and so on.
//!
//! Each launch is a few microseconds of a GPU's time that moves no weights: a 1B llama's
//! decode step was 202 launches for 1.4 ms, nine a layer, where k and v (1 MiB of weights
//! each) took as long one by one as launches that read nothing. The merged kernel's blocks
//! are the members' blocks side by side; a block asks which member it belongs to (one
//! comparison of its grid index, the same for all its threads, so the reductions and
//! barriers inside stay uniform) and runs that member's body, its grid index shifted to
//! start at 0. Nothing else changes: each member keeps its own weights, epilogue (rope,
//! residual) and output buffer, so the weights are not concatenated and an artifact's
//! targets still share one copy of them.
//!
//! Only kernels of a block per grid point, without explicit threads or locals, merge
//! (decode's dot products, norms): there each point is a block, so the grids add up
//! exactly, and no shared memory or warp-level matrix read needs renumbering. Launches
//! merge when their guards are equal and nothing between them in the launch order runs in
//! the same step (launches whose guard excludes theirs: the prefill forms of the same
//! matmuls), their grids agree but for the last axis, whose extents are known, and neither
//! touches what the other writes.

use crate::kernel::gpu::{explicit_threads, launch_shape};
use crate::kernel::{map_exprs, rewrite_bottom_up, Buf, Expr, Kernel, Lit, Stmt};
use crate::lower::{GridDim, Guard, KernelLaunch, Lowered};
use kiln_ir::Dim;

/// Most launches one kernel takes: a layer's q, k and v (gate and up are two).
const MAX_MEMBERS: usize = 4;

/// Merges sibling launches (see the module doc) and drops kernels no launch uses.
pub fn merge_sibling_launches(lowered: &mut Lowered) {
    let mut launches = std::mem::take(&mut lowered.launches);
    let mut members = vec![1usize; launches.len()];
    let mut at = 0;
    while at < launches.len() {
        let Some(next) = next_sibling(&launches, at) else {
            at += 1;
            continue;
        };
        if members[at] + members[next] > MAX_MEMBERS {
            at += 1;
            continue;
        }
        let first = &launches[at];
        let second = &launches[next];
        let merged = merge_pair(
            &lowered.kernels[first.kernel],
            &lowered.kernels[second.kernel],
            first,
            second,
        );
        let Some((kernel, launch)) = merged else {
            at += 1;
            continue;
        };
        lowered.kernels.push(kernel);
        launches[at] = KernelLaunch {
            kernel: lowered.kernels.len() - 1,
            ..launch
        };
        members[at] += members[next];
        launches.remove(next);
        members.remove(next);
    }
    lowered.launches = launches;
    drop_unused_kernels(lowered);
}

/// The first launch after `at` that may run in the same step as it, if it is mergeable
/// in kind (a block per point, equal guard); launches between that never run with it
/// (the opposite guard) are passed over, since moving a launch across them changes
/// nothing.
fn next_sibling(launches: &[KernelLaunch], at: usize) -> Option<usize> {
    let first = &launches[at];
    let next = (at + 1..launches.len()).find(|&j| !excludes(&launches[j].guard, &first.guard))?;
    (launches[next].guard == first.guard).then_some(next)
}

/// Whether launches guarded by `a` and `b` never run in the same step.
fn excludes(a: &Option<Guard>, b: &Option<Guard>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.dim == b.dim && a.max == b.max && a.above != b.above,
        _ => false,
    }
}

/// One kernel and launch doing the work of `ka` launched by `la`, then `kb` by `lb`; `None`
/// where they are not siblings.
fn merge_pair(
    ka: &Kernel,
    kb: &Kernel,
    la: &KernelLaunch,
    lb: &KernelLaunch,
) -> Option<(Kernel, KernelLaunch)> {
    let axis = la.grid.len().checked_sub(1)?;
    let mergeable = |k: &Kernel| {
        launch_shape(k).block_per_point() && !explicit_threads(&k.body) && k.locals.is_empty()
    };
    if !mergeable(ka)
        || !mergeable(kb)
        || ka.block_threads != kb.block_threads
        || ka.grid.len() != la.grid.len()
        || kb.grid.len() != lb.grid.len()
        || la.grid.len() != lb.grid.len()
        || la.grid[..axis] != lb.grid[..axis]
        || ka.grid[..axis] != kb.grid[..axis]
        || touches_what_the_other_writes(ka, kb, la, lb)
    {
        return None;
    }
    let (na, nb) = (la.grid[axis].known_points()?, lb.grid[axis].known_points()?);

    // The merged arguments: the first's, then those of the second it does not share.
    let mut args = la.args.clone();
    let mut params = ka.args.clone();
    let mut arg_of_b = Vec::with_capacity(lb.args.len());
    for (global, param) in lb.args.iter().zip(&kb.args) {
        let at = match args.iter().position(|g| g == global) {
            Some(at) => {
                params[at].writes |= param.writes;
                at
            }
            None => {
                args.push(*global);
                params.push(param.clone());
                args.len() - 1
            }
        };
        arg_of_b.push(at as u32);
    }

    let mut second = kb.body.clone();
    crate::share::rename_vars(&mut second, &mut |v| v + ka.next_var);
    let shift = axis as u32;
    map_exprs(&mut second, &mut |e| {
        rewrite_bottom_up(e, &mut |e| match e {
            Expr::GridIdx(g) if g == shift => Expr::Binary(
                crate::kernel::BOp::Sub,
                Box::new(Expr::GridIdx(g)),
                Box::new(Expr::Lit(Lit::I64(na))),
            ),
            Expr::Load { buf, index, lanes } => Expr::Load {
                buf: renumbered(buf, &arg_of_b),
                index,
                lanes,
            },
            other => other,
        })
    });
    renumber_statement_bufs(&mut second, &arg_of_b);
    let body = vec![Stmt::If {
        cond: Expr::Cmp(
            crate::kernel::Cmp::Lt,
            Box::new(Expr::GridIdx(shift)),
            Box::new(Expr::Lit(Lit::I64(na))),
        ),
        then: ka.body.clone(),
        otherwise: second,
    }];

    let mut grid = ka.grid.clone();
    grid[axis] = Expr::Lit(Lit::I64(na + nb));
    let mut cost = ka.cost.clone();
    cost.flops.extend(kb.cost.flops.iter().cloned());
    cost.bytes.extend(kb.cost.bytes.iter().cloned());
    let kernel = Kernel {
        name: format!("{}_{}", ka.name, kb.name),
        args: params,
        locals: Vec::new(),
        grid,
        min_chunk: ka.min_chunk,
        block_threads: ka.block_threads,
        body,
        cost,
        next_var: ka.next_var + kb.next_var,
    };
    let mut launch_grid = la.grid.clone();
    launch_grid[axis] = GridDim::of(&Dim::known(na + nb));
    let launch = KernelLaunch {
        kernel: usize::MAX,
        args,
        grid: launch_grid,
        guard: la.guard.clone(),
    };
    Some((kernel, launch))
}

/// Whether either launch reads or writes a buffer the other writes: then they are not
/// independent, and one kernel could not run both in any order.
fn touches_what_the_other_writes(
    ka: &Kernel,
    kb: &Kernel,
    la: &KernelLaunch,
    lb: &KernelLaunch,
) -> bool {
    stored_globals(ka, la).iter().any(|g| lb.args.contains(g))
        || stored_globals(kb, lb).iter().any(|g| la.args.contains(g))
}

/// The global buffers `k`, launched by `l`, stores to.
fn stored_globals(k: &Kernel, l: &KernelLaunch) -> Vec<usize> {
    k.stored_args()
        .iter()
        .zip(&l.args)
        .filter(|(w, _)| **w)
        .map(|(_, g)| *g)
        .collect()
}

fn renumbered(buf: Buf, arg_of: &[u32]) -> Buf {
    match buf {
        Buf::Arg(a) => Buf::Arg(arg_of[a as usize]),
        local => local,
    }
}

/// Points the buffers statements name (stores, hints) at the merged arguments.
fn renumber_statement_bufs(body: &mut [Stmt], arg_of: &[u32]) {
    for s in body {
        match s {
            Stmt::Store { buf, .. } | Stmt::Prefetch { buf, .. } => {
                *buf = renumbered(*buf, arg_of);
            }
            Stmt::Copy { dst, src, .. } => {
                *dst = renumbered(*dst, arg_of);
                *src = renumbered(*src, arg_of);
            }
            Stmt::Loop { body, .. } => renumber_statement_bufs(body, arg_of),
            Stmt::If {
                then, otherwise, ..
            } => {
                renumber_statement_bufs(then, arg_of);
                renumber_statement_bufs(otherwise, arg_of);
            }
            Stmt::Let { .. }
            | Stmt::Decl { .. }
            | Stmt::Assign { .. }
            | Stmt::Reduce { .. }
            | Stmt::Await { .. }
            | Stmt::GroupMma { .. }
            | Stmt::GroupWait { .. } => {}
        }
    }
}

/// Keeps only the kernels some launch runs, in their order.
fn drop_unused_kernels(lowered: &mut Lowered) {
    let mut new_index = vec![None; lowered.kernels.len()];
    let mut kept = Vec::new();
    for l in &mut lowered.launches {
        let at = *new_index[l.kernel].get_or_insert_with(|| {
            kept.push(lowered.kernels[l.kernel].clone());
            kept.len() - 1
        });
        l.kernel = at;
    }
    lowered.kernels = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::visit_stmts;

    fn lowered(src: &str) -> Lowered {
        crate::pipeline::finished_kernels(src, "cuda:sm_90")
    }

    fn decode(l: &Lowered) -> Vec<&KernelLaunch> {
        let few_rows = |g: &Option<Guard>| g.as_ref().is_some_and(|g| !g.above);
        l.launches.iter().filter(|x| few_rows(&x.guard)).collect()
    }

    fn prefill(l: &Lowered) -> Vec<(String, Vec<usize>)> {
        l.launches
            .iter()
            .filter(|x| x.guard.as_ref().is_some_and(|g| g.above))
            .map(|x| (format!("{:?}", l.kernels[x.kernel].body), x.args.clone()))
            .collect()
    }

    /// The global buffers a launch stores to, in order.
    fn stored(l: &Lowered, x: &KernelLaunch) -> Vec<usize> {
        let mut out = stored_globals(&l.kernels[x.kernel], x);
        out.sort();
        out
    }

    fn points(x: &KernelLaunch) -> i64 {
        x.grid.last().unwrap().known_points().unwrap()
    }

    /// A layer's q, k and v projections of one input: their decode forms become one launch
    /// over all their blocks, storing all three outputs; the prefill forms stay as they were.
    #[test]
    fn projections_of_one_input_decode_in_one_launch() {
        let mut l = lowered(
            "kir 1
%x = input \"x\" f32[seq,64]
%wq = input \"wq\" f32[48,64]
%wk = input \"wk\" f32[16,64]
%wv = input \"wv\" f32[16,64]
%q = matmul %x, %wq transpose_a=false transpose_b=true
%k = matmul %x, %wk transpose_a=false transpose_b=true
%v = matmul %x, %wv transpose_a=false transpose_b=true
output \"q\" = %q
output \"k\" = %k
output \"v\" = %v
",
        );
        let before: Vec<KernelLaunch> = decode(&l).into_iter().cloned().collect();
        assert_eq!(before.len(), 3);
        let outputs: Vec<usize> = before.iter().flat_map(|x| stored(&l, x)).collect();
        let blocks: i64 = before.iter().map(points).sum();
        let prefill_before = prefill(&l);

        merge_sibling_launches(&mut l);
        let after = decode(&l);
        assert_eq!(after.len(), 1, "{:?}", l.launches);
        let merged = after[0];
        assert_eq!(points(merged), blocks);
        let mut want = outputs.clone();
        want.sort();
        assert_eq!(stored(&l, merged), want);
        // Every input of the three, each once.
        for x in &before {
            for g in &x.args {
                assert_eq!(merged.args.iter().filter(|a| *a == g).count(), 1);
            }
        }
        // A block picks its member by its grid index: the first's blocks come first.
        let k = &l.kernels[merged.kernel];
        let Stmt::If { cond, .. } = &k.body[0] else {
            panic!("{k}")
        };
        let first = points(&before[0]);
        assert!(
            k.to_string().contains(&format!("lt(g1, {first})")),
            "{cond:?}\n{k}"
        );
        assert_eq!(prefill(&l), prefill_before);
        assert_eq!(
            l.launches.iter().filter(|x| x.guard.is_none()).count(),
            0,
            "{:?}",
            l.launches
        );
    }

    /// The second member's statements read and write its own buffers under the merged
    /// numbering, and its variables do not collide with the first's.
    #[test]
    fn the_second_member_keeps_its_buffers_and_variables() {
        let mut l = lowered(
            "kir 1
%x = input \"x\" f32[seq,64]
%wg = input \"wg\" f32[32,64]
%wu = input \"wu\" f32[32,64]
%g = matmul %x, %wg transpose_a=false transpose_b=true
%u = matmul %x, %wu transpose_a=false transpose_b=true
output \"g\" = %g
output \"u\" = %u
",
        );
        let before: Vec<KernelLaunch> = decode(&l).into_iter().cloned().collect();
        let second_out = stored(&l, &before[1]);
        let second_weights = before[1].args.clone();
        merge_sibling_launches(&mut l);
        let merged = decode(&l)[0].clone();
        let k = &l.kernels[merged.kernel];
        let Stmt::If {
            then, otherwise, ..
        } = &k.body[0]
        else {
            panic!("{k}")
        };
        let mut stores = Vec::new();
        visit_stmts(otherwise, &mut |s| {
            if let Stmt::Store {
                buf: Buf::Arg(a), ..
            } = s
            {
                stores.push(merged.args[*a as usize]);
            }
        });
        stores.dedup();
        assert_eq!(stores, second_out);
        let mut read = Vec::new();
        crate::kernel::any_expr(otherwise, &mut |e| {
            if let Expr::Load {
                buf: Buf::Arg(a), ..
            } = e
            {
                read.push(merged.args[*a as usize]);
            }
            false
        });
        assert!(read.iter().all(|g| second_weights.contains(g)), "{read:?}");
        let bound = |body: &[Stmt]| {
            let mut vars = std::collections::BTreeSet::new();
            visit_stmts(body, &mut |s| {
                if let Stmt::Reduce { acc, var, .. } = s {
                    vars.insert(*acc);
                    vars.insert(*var);
                }
            });
            vars
        };
        let (a, b) = (bound(then), bound(otherwise));
        assert!(!a.is_empty() && a.is_disjoint(&b), "{a:?} {b:?}");
    }

    /// A matmul of another's result waits for it, so the two stay two launches.
    #[test]
    fn a_matmul_of_anothers_result_stays_apart() {
        let mut l = lowered(
            "kir 1
%x = input \"x\" f32[seq,64]
%w1 = input \"w1\" f32[64,64]
%w2 = input \"w2\" f32[32,64]
%y = matmul %x, %w1 transpose_a=false transpose_b=true
%z = matmul %y, %w2 transpose_a=false transpose_b=true
output \"z\" = %z
",
        );
        let before = l.launches.clone();
        merge_sibling_launches(&mut l);
        assert_eq!(decode(&l).len(), 2, "{:?}", l.launches);
        assert_eq!(l.launches, before);
    }
}
