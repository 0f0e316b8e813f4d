//! The matmul of half matrices on Hopper's warpgroup instruction (`Stmt::GroupMma`,
//! `kernel::warpgroup`), for targets whose schedule has it (`cuda:sm_90a`).
//!
//! The kernel around the products is `lower::matrix`'s (`staged_kernel`: the same staged
//! steps of 64 along K, copied ahead with `cp.async`, the same swizzle, which is the
//! instruction's 128-byte one). What differs is who multiplies: a block is one or two
//! warpgroups, each owning `pieces` tiles of 64 rows by `n` columns of C, and a step is one
//! `Stmt::GroupMma` of four instructions (K 16 each) per piece, read by the tensor cores
//! straight from the staged tiles. No thread holds fragments of A or B, so the registers go
//! to C: 128 accumulators a thread in either plan.

use super::matmul::Operands;
use super::matrix::{staged_kernel, Acc, BlockProducts, Blocking};
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::matrix::MatrixOp;
use crate::kernel::warpgroup::{
    GroupOp, GroupProduct, GROUP_K, GROUP_M, GROUP_THREADS, ROW_ELEMS, TILE_ALIGN,
};
use crate::kernel::{Buf, Expr, Kernel, Stmt};
use kiln_ir::DType;

/// Outputs (all batches) from which a matmul takes the large plan.
const LARGE_OUTPUTS: i64 = 4096 * 4096;

/// Most steps staged at once.
const MAX_STAGES: i64 = 4;

/// A block of `groups` warpgroups stacked along M, each multiplying `pieces` tiles of 64
/// rows by `n` columns per instruction step, `stages` steps of 64 staged at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct GroupPlan {
    groups: i64,
    pieces: i64,
    n: i64,
    stages: i64,
    /// Batches of products left in flight at the end of a step (0 or 1): with 1, a step's
    /// instructions overlap the next step's wait and copies, and the stage they read is
    /// overwritten a step later (`BlockProducts::lag`).
    pending: i64,
}

impl GroupPlan {
    fn block(&self) -> (i64, i64) {
        (self.groups * self.pieces * GROUP_M, self.n)
    }
}

/// The plan for this matmul, if the target has the instruction and the operands fit it:
/// A and B both stored in the instruction's input type (f32 activations take `mma.sync`,
/// which reads them from registers), K a multiple of the staged step.
///
/// - large matmuls: two warpgroups, each 64 x 256 (a 128 x 256 tile), four stages of 48
///   KiB;
/// - otherwise one warpgroup of two 64 x 128 tiles (128 x 128), so mid-sized matmuls still
///   have a block for every SM (512 x 2048 x 5632: 176 blocks where 128 x 256 gives 88).
///
/// Measured on one H100 (2026-12-06, docs/perf.md): 4096^3 f16 at 471 TFLOP/s, where the
/// same call's `mma.sync` kernel ran 378; 512 x 2048 x 5632 equal (258 and 261).
///
/// `KILN_GPU_WGMMA=0` turns it off at compile time; `KILN_GPU_MMA_LARGE=0|1` picks either
/// plan (as for `mma.sync`), and `KILN_GPU_WGMMA_GROUPS`, `_PIECES`, `_N`, `_STAGES` and
/// `_PENDING` ask for others, to compare on a GPU.
pub(super) fn plan(
    ctx: &Ctx,
    op: MatrixOp,
    dtypes: (DType, DType),
    outputs: Option<i64>,
    k: i64,
) -> Option<GroupPlan> {
    let usable = ctx.schedule.group_mma
        && super::knob("KILN_GPU_WGMMA", 1u8) == 1
        && dtypes == (op.input, op.input)
        && k % ROW_ELEMS == 0;
    if !usable {
        return None;
    }
    let large = outputs.is_some_and(|o| o >= LARGE_OUTPUTS);
    let large = super::knob("KILN_GPU_MMA_LARGE", large as u8) == 1;
    let (groups, pieces, n) = if large { (2, 1, 256) } else { (1, 2, 128) };
    let groups: i64 = super::knob("KILN_GPU_WGMMA_GROUPS", groups).clamp(1, 2);
    let pieces: i64 = super::knob("KILN_GPU_WGMMA_PIECES", pieces).clamp(1, 2);
    let n: i64 = super::knob("KILN_GPU_WGMMA_N", n);
    // The block's threads copy whole rows in passes of `threads / 8` rows.
    let n = if n % (2 * groups * 8) == 0 && (16..=256).contains(&n) {
        n
    } else {
        128
    };
    let stage_bytes = (groups * pieces * GROUP_M + n) * ROW_ELEMS * 2;
    let room = ctx.schedule.shared_bytes as i64 - TILE_ALIGN as i64;
    let fit = room / stage_bytes;
    let stages = super::knob("KILN_GPU_WGMMA_STAGES", MAX_STAGES).clamp(2, fit.max(2));
    let pending: i64 = super::knob("KILN_GPU_WGMMA_PENDING", 0).clamp(0, 1);
    #[cfg(test)]
    let pending = PENDING.get().unwrap_or(pending);
    (fit >= 2 + pending).then_some(GroupPlan {
        groups,
        pieces,
        n,
        stages: stages.max(2 + pending),
        pending,
    })
}

/// The matmul on `plan`'s warpgroups: per step, one `Stmt::GroupMma` of the step's four
/// instructions per piece, then a `Stmt::GroupWait` leaving `plan.pending` batches.
pub(super) fn kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    name: String,
    op: MatrixOp,
    dtypes: (DType, DType),
    plan: GroupPlan,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let gop = GroupOp {
        n: plan.n as u16,
        input: op.input,
    };
    let blocking = Blocking {
        block: plan.block(),
        threads: plan.groups * GROUP_THREADS,
        step: ROW_ELEMS,
        stages: plan.stages,
        dtypes,
    };
    let mut head = Vec::new();
    let group = super::matrix::bind(ctx, &mut head, div(Expr::Thread, i(GROUP_THREADS)));
    let in_group = super::matrix::bind(ctx, &mut head, rem(Expr::Thread, i(GROUP_THREADS)));
    // The first row of C of each of the group's pieces, within the block's tile.
    let piece_row = |p: i64| add(mul(var(group), i(plan.pieces * GROUP_M)), i(p * GROUP_M));
    let accs: Vec<Acc> = (0..plan.pieces)
        .map(|p| Acc {
            var: ctx.fresh(),
            pairs: true,
            at: (0..gop.acc_lanes() as i64)
                .map(|e| {
                    let (r, c) = gop.c_elem(var(in_group), e);
                    (add(piece_row(p), r), c)
                })
                .collect(),
        })
        .collect();
    let (sa, sb) = blocking.staged();
    let acc_vars: Vec<_> = accs.iter().map(|a| a.var).collect();
    let mut multiply = |_: &mut Ctx, out: &mut Vec<Stmt>, stage: Expr| {
        let a_stage = mul(stage.clone(), i(sa.stage_len()));
        let b_stage = mul(stage, i(sb.stage_len()));
        // K outermost, so consecutive instructions update different accumulators.
        let products = (0..ROW_ELEMS / GROUP_K)
            .flat_map(|ks| {
                let (a_stage, b_stage) = (a_stage.clone(), b_stage.clone());
                acc_vars
                    .iter()
                    .enumerate()
                    .map(move |(p, &acc)| GroupProduct {
                        acc,
                        a: Buf::Local(0),
                        a_index: add(
                            add(a_stage.clone(), mul(piece_row(p as i64), i(ROW_ELEMS))),
                            i(ks * GROUP_K),
                        ),
                        b: Buf::Local(1),
                        b_index: add(b_stage.clone(), i(ks * GROUP_K)),
                    })
            })
            .collect();
        out.push(Stmt::GroupMma { op: gop, products });
        out.push(Stmt::GroupWait {
            accs: acc_vars.clone(),
            pending: plan.pending as u8,
        });
        Ok(())
    };
    let drain = vec![Stmt::GroupWait {
        accs: accs.iter().map(|a| a.var).collect(),
        pending: 0,
    }];
    let products = BlockProducts {
        head,
        accs,
        multiply: &mut multiply,
        lag: plan.pending,
        drain,
    };
    staged_kernel(ctx, ops, out, name, &blocking, products)
}

#[cfg(test)]
thread_local! {
    /// Overrides `KILN_GPU_WGMMA_PENDING` for tests of this thread (tests run in parallel,
    /// so they cannot set the environment).
    pub(super) static PENDING: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}
