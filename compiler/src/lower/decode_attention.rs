//! GPU decode attention in one kernel: a block per head and query row computes each score
//! once, keeps a chunk of them in shared memory, and folds the chunk into a running softmax
//! and its weighted sum of V (the online softmax: a new maximum rescales what came before).
//!
//! Without it a decode step's attention is two launches on the layer's critical path:
//! Q.K^T, whose 64-long reductions leave most of each block idle, then probabilities x V
//! computing the softmax's maximum and sum again in each of the 32 blocks of a head (13.8 us
//! a layer on one H100, the two together, at contexts below 128; perf.md, 2026-12-06).
//! Here the scores are computed where they are read (`inline::compute_at` of the scores'
//! matmul, which `partition::scores_in_place_on_gpu` leaves out of decode), once per
//! position, by the thread the position falls to.
//!
//! Each of the `THREADS` threads takes one position of a chunk of `THREADS`; the chunk's
//! maximum and sum are read back from shared memory by every thread, and the block's
//! `THREADS / D` groups of `D` threads (`D` the head's width) each sum their share of the
//! chunk's positions into one output element. A chunk costs three barriers; the whole
//! context runs in one block, so a long context is a long loop (splitting it across blocks
//! and combining their partial softmaxes is the next step for contexts of thousands).
//! GPU targets (CUDA, HIP and Vulkan alike: every GPU code generator runs kernels of
//! explicit threads) take this form when `KILN_DECODE_ATTENTION=1` (`partition::decode_attention`: off until a GPU shows it
//! faster than the two kernels); CPUs keep the scores' kernel.

use super::inline::{dim_expr, value_at};
use super::matmul::{k_dim, Operands};
use super::{Ctx, GridDim, LowerError};
use crate::kernel::e::*;
use crate::kernel::{BOp, Buf, Cmp, Expr, Kernel, LocalBuf, RedOp, Stmt, UOp};
use kiln_ir::{DType, Op};

/// Threads of a block, and positions of a chunk (one each).
pub(super) const THREADS: i64 = 128;

/// Whether the few-row form of `ops` (probabilities x V) is this kernel: A a softmax along
/// the last axis that the kernel reads in place, whose scores' matmul is computed in place
/// too (`partition::scores_in_place_on_gpu`), V not transposed, and the head's width known
/// and dividing `THREADS`.
pub(super) fn applies(ctx: &Ctx, ops: &Operands) -> bool {
    let g = ctx.graph;
    let softmax_last = matches!(g.node(ops.a).op,
        Op::Softmax { axis } if axis + 1 == ops.a_shape.len());
    let width = ops.out_shape[ops.nb + 1].as_known();
    ctx.schedule.gpu
        && !ops.ta
        && !ops.tb
        && softmax_last
        && ctx.reads_in_place(ops.a)
        && super::partition::scores_in_place_on_gpu(g, ops.a)
            .iter()
            .any(|m| ctx.few_rows_in_place.contains(m))
        && width.is_some_and(|d| d > 0 && THREADS % d == 0)
}

/// Elements of a chunk each step of its maximum or sum reads: independent pairs shorten
/// the chain of dependent operations every thread runs over the chunk four times.
const TREE: i64 = 4;

/// Pushes onto `body` the reduction `op` of the chunk in shared local `buf` (every one of
/// its `THREADS` elements), as every thread computes it; returns the variable it binds.
fn whole_chunk(ctx: &mut Ctx, body: &mut Vec<Stmt>, op: RedOp, buf: Buf) -> crate::kernel::VarId {
    let (acc, j) = (ctx.fresh(), ctx.fresh());
    let combine = match op {
        RedOp::Sum => BOp::Add,
        RedOp::Max => BOp::Max,
    };
    let mut level: Vec<Expr> = (0..TREE)
        .map(|r| load(buf, add(mul(var(j), i(TREE)), i(r))))
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| bin(combine, p[0].clone(), p[1].clone()))
            .collect();
    }
    body.push(Stmt::Reduce {
        acc,
        op,
        var: j,
        extent: i(THREADS / TREE),
        value: level.pop().expect("a step reads elements"),
        vector: 1,
    });
    acc
}

/// The kernel of `ops` (see the module doc), writing `out`.
pub(super) fn kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let nb = ops.nb;
    let width = ops.out_shape[nb + 1]
        .as_known()
        .ok_or_else(|| LowerError::Internal("decode attention over an unknown width".into()))?;
    let groups = THREADS / width;
    let share = THREADS / groups;
    let mut grid: Vec<GridDim> = ops.out_shape[..nb].iter().map(GridDim::of).collect();
    grid.push(GridDim::of(&ops.out_shape[nb]));
    let row = Expr::GridIdx(nb as u32);
    let n = dim_expr(ctx, &k_dim(ops));
    let (scores, probs, partial) = (Buf::Local(0), Buf::Local(1), Buf::Local(2));
    let input = ctx.graph.inputs(ops.a)[0];
    let mut a_index = Operands::batch_index(&ops.a_shape, nb);
    a_index.push(row.clone());

    let mut body = Vec::new();
    let bind = |ctx: &mut Ctx, body: &mut Vec<Stmt>, value: Expr| {
        let v = ctx.fresh();
        body.push(Stmt::Let { var: v, value });
        var(v)
    };
    let (max_so_far, sum_so_far, acc) = (ctx.fresh(), ctx.fresh(), ctx.fresh());
    for (v, init) in [
        (max_so_far, f(f32::NEG_INFINITY)),
        (sum_so_far, f(0.0)),
        (acc, f(0.0)),
    ] {
        body.push(Stmt::Decl { var: v, init });
    }
    let group = bind(ctx, &mut body, div(Expr::Thread, i(width)));
    let column = bind(ctx, &mut body, rem(Expr::Thread, i(width)));

    let chunk = ctx.fresh();
    let mut step = Vec::new();
    let base = bind(ctx, &mut step, mul(var(chunk), i(THREADS)));
    // This thread's score, -inf past the context, where its probability is stored as 0: the
    // chunk's reductions then run over all of it, `TREE` elements a step.
    let score = ctx.fresh();
    step.push(Stmt::Decl {
        var: score,
        init: f(f32::NEG_INFINITY),
    });
    let position = add(base.clone(), Expr::Thread);
    let inside = cmp(Cmp::Lt, position.clone(), n.clone());
    let mut at = a_index.clone();
    at.push(position);
    step.push(Stmt::If {
        cond: inside.clone(),
        then: vec![Stmt::Assign {
            var: score,
            value: value_at(ctx, input, &at)?,
        }],
        otherwise: Vec::new(),
    });
    step.push(Stmt::Store {
        buf: scores,
        index: Expr::Thread,
        value: var(score),
    });
    step.push(Stmt::Await { in_flight: 0 });
    let chunk_max = whole_chunk(ctx, &mut step, RedOp::Max, scores);
    let new_max = bind(ctx, &mut step, max(var(max_so_far), var(chunk_max)));
    step.push(Stmt::Store {
        buf: probs,
        index: Expr::Thread,
        value: select(
            inside,
            un(UOp::Exp, bin(BOp::Sub, var(score), new_max.clone())),
            f(0.0),
        ),
    });
    step.push(Stmt::Await { in_flight: 0 });
    let chunk_sum = whole_chunk(ctx, &mut step, RedOp::Sum, probs);
    // This group's share of the chunk's positions, weighted by V's column: unrolled, so
    // every V load is issued before the first product waits (a loop over them waited a
    // memory round trip per position: 12 us a layer at a context of 64 on one H100).
    // Positions past the context have probability 0 and read the last row.
    let first = bind(ctx, &mut step, mul(group.clone(), i(share)));
    let last = bind(ctx, &mut step, sub(n.clone(), i(1)));
    let mut weighted = None;
    for j in 0..share {
        let within = add(first.clone(), i(j));
        let row = min(add(base.clone(), within.clone()), last.clone());
        let v = ops.b_at(ctx, row, column.clone())?;
        let p = load(probs, within);
        weighted = Some(match weighted {
            None => mul(p, v),
            Some(sum) => fma(p, v, sum),
        });
    }
    let weighted = bind(ctx, &mut step, weighted.expect("a group has positions"));
    let rescale = bind(
        ctx,
        &mut step,
        un(UOp::Exp, bin(BOp::Sub, var(max_so_far), new_max.clone())),
    );
    step.push(Stmt::Assign {
        var: sum_so_far,
        value: fma(var(sum_so_far), rescale.clone(), var(chunk_sum)),
    });
    step.push(Stmt::Assign {
        var: acc,
        value: fma(var(acc), rescale, weighted),
    });
    step.push(Stmt::Assign {
        var: max_so_far,
        value: new_max,
    });
    // Every thread has read this chunk's scores and probabilities before the next stores.
    step.push(Stmt::Await { in_flight: 0 });
    body.push(Stmt::Loop {
        var: chunk,
        extent: div(add(n, i(THREADS - 1)), i(THREADS)),
        kind: crate::kernel::LoopKind::Serial,
        vector: 1,
        body: step,
    });

    // The groups' sums of each column meet in shared memory.
    body.push(Stmt::Store {
        buf: partial,
        index: Expr::Thread,
        value: var(acc),
    });
    body.push(Stmt::Await { in_flight: 0 });
    let total = (1..groups).fold(load(partial, column.clone()), |s, g| {
        add(s, load(partial, add(column.clone(), i(g * width))))
    });
    let index = ops.c_index(ctx, row, column);
    body.push(Stmt::If {
        cond: cmp(Cmp::Lt, Expr::Thread, i(width)),
        then: vec![Stmt::Store {
            buf: out,
            value: ops.result(bin(BOp::Div, total, var(sum_so_far)), &index),
            index,
        }],
        otherwise: Vec::new(),
    });
    let (mut kernel, args) = ctx.finish(name, grid, body, 1);
    kernel.locals = vec![
        LocalBuf {
            dtype: DType::F32,
            len: THREADS as u32,
            shared: true,
        };
        3
    ];
    kernel.block_threads = Some(THREADS as u32);
    Ok((kernel, args))
}

#[cfg(test)]
mod tests {
    use super::super::{lower, BufferKind};
    use crate::kernel::lockstep;

    /// Scaled, masked attention over a cache of `past` rows, `seq` query rows.
    const GRAPH: &str = "kir 1
%q = input \"q\" f32[4,seq,64]
%k = input \"k\" f32[4,past,64]
%s = matmul %q, %k transpose_a=false transpose_b=true
%m = input \"m\" f32[seq,past]
%c = const f32[] [0.125]
%scaled = mul %s, %c
%masked = add %scaled, %m
%p = softmax %masked axis=2
%v = input \"v\" f32[4,past,64]
%y = matmul %p, %v transpose_a=false transpose_b=false
output \"y\" = %y
";

    /// GRAPH lowered for `target`, decode attention on.
    fn lowered_for(target: &str) -> super::super::Lowered {
        let g = kiln_ir::text::parse(GRAPH).unwrap();
        let t: crate::Target = target.parse().unwrap();
        let schedule = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
        super::super::partition::ATTENTION.set(Some(true));
        let l = lower(&g, schedule).unwrap();
        super::super::partition::ATTENTION.set(None);
        l
    }

    /// A GPU decode step runs attention as one kernel of explicit threads, and nothing
    /// else: the scores' kernel and the softmax's run only above the few-row bound. The
    /// lockstep interpreter runs it (every barrier, every thread) at contexts within one
    /// chunk, of exactly one, and over several, with a masked position and one to four rows,
    /// against the softmax-weighted sum computed in f64.
    #[test]
    fn decode_attention_is_one_kernel_computing_the_weighted_sum() {
        for target in ["cuda:sm_90", "vulkan:spv1.3"] {
            check_decode_attention(target);
        }
    }

    fn check_decode_attention(target: &str) {
        let l = lowered_for(target);
        let decode: Vec<_> = l
            .launches
            .iter()
            .filter(|x| x.guard.as_ref().is_none_or(|g| !g.above))
            .collect();
        let names: Vec<_> = l.kernels.iter().map(|k| &k.name).collect();
        assert_eq!(decode.len(), 1, "{target}: {names:?}");
        let kernel = &l.kernels[decode[0].kernel];
        assert!(
            crate::kernel::gpu::explicit_threads(&kernel.body),
            "{kernel}"
        );
        let symbol = |name: &str| l.symbols.iter().position(|s| s == name).unwrap();
        let value = |seed: i64, at: usize| ((at as i64 * 7919 + seed) % 1001 - 500) as f32 / 250.0;
        for (seq, past) in [(1, 1), (1, 37), (1, 128), (2, 129), (4, 300), (1, 513)] {
            let mut dims = vec![0; l.symbols.len()];
            dims[symbol("seq")] = seq;
            dims[symbol("past")] = past;
            let (seq, past) = (seq as usize, past as usize);
            let q: Vec<f32> = (0..4 * seq * 64).map(|x| value(1, x)).collect();
            let k: Vec<f32> = (0..4 * past * 64).map(|x| value(2, x)).collect();
            let v: Vec<f32> = (0..4 * past * 64).map(|x| value(3, x)).collect();
            // Position 3 masked for every row, where the context has one.
            let m: Vec<f32> = (0..seq * past)
                .map(|x| {
                    if x % past == 3 {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut args: Vec<Vec<f32>> = decode[0]
                .args
                .iter()
                .map(|&b| match l.buffers[b].kind {
                    BufferKind::Input(0) => q.clone(),
                    BufferKind::Input(1) => k.clone(),
                    BufferKind::Input(2) => m.clone(),
                    BufferKind::Input(3) => v.clone(),
                    BufferKind::Output(0) => vec![f32::NAN; 4 * seq * 64],
                    ref other => panic!("argument {other:?}"),
                })
                .collect();
            let points: Vec<Vec<i64>> = (0..4)
                .flat_map(|h| (0..seq as i64).map(move |r| vec![h, r]))
                .collect();
            let threads = kernel.block_threads.unwrap() as usize;
            lockstep::run(kernel, (threads, 32), &dims, &mut args, &points)
                .unwrap_or_else(|e| panic!("{target}, seq {seq}, past {past}: {e}"));
            let out = decode[0]
                .args
                .iter()
                .position(|&b| matches!(l.buffers[b].kind, BufferKind::Output(0)))
                .unwrap();
            for h in 0..4 {
                for r in 0..seq {
                    let scores: Vec<f64> = (0..past)
                        .map(|t| {
                            let dot: f64 = (0..64)
                                .map(|d| {
                                    q[(h * seq + r) * 64 + d] as f64
                                        * k[(h * past + t) * 64 + d] as f64
                                })
                                .sum();
                            dot * 0.125 + m[r * past + t] as f64
                        })
                        .collect();
                    let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for d in 0..64 {
                        let want: f64 = (0..past)
                            .map(|t| e[t] * v[(h * past + t) * 64 + d] as f64)
                            .sum::<f64>()
                            / total;
                        let got = args[out][(h * seq + r) * 64 + d] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{target}, seq {seq}, past {past}: y[{h}][{r}][{d}] = {got}, want {want}"
                        );
                    }
                }
            }
        }
    }

    /// CPUs keep the scores', softmax's and product's kernels, none of explicit threads.
    #[test]
    fn cpus_keep_the_scores_kernel() {
        let l = lowered_for("cpu:x86-64-v3");
        let explicit = l
            .kernels
            .iter()
            .filter(|k| crate::kernel::gpu::explicit_threads(&k.body))
            .count();
        assert_eq!(explicit, 0);
        let decode = l
            .launches
            .iter()
            .filter(|x| x.guard.as_ref().is_none_or(|g| !g.above))
            .count();
        assert_eq!(decode, 3, "{:?}", l.launches);
    }
}
