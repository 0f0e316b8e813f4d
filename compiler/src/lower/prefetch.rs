//! Software prefetch ahead in a decode row's stream of blocks.
//!
//! A decode dot product reads one weight row after another, a single sequential stream
//! per thread, which a hardware prefetcher should follow. On the 2-vCPU Xeon VM of
//! 2026-12-05 it did not keep up with kernels that spend many instructions per byte: the
//! 1B llama's decode step took 52 ms in its kernels in Q4_K_M and 72 ms in Q8_0, and
//! 31-33 ms and 42-46 ms with each block also fetching the lines 2 KiB ahead (1152 bytes
//! ahead: 32-35 ms and an unsteady 47-79 ms; docs/perf.md). Half and f32 rows, a few
//! instructions per byte, gained nothing measurable (86-92 ms either way), so they are
//! left to the hardware. Past the row's end the fetch lands in the next row, which the
//! same or the next grid point reads; past the matrix's end it is dropped (a prefetch
//! never faults).

use super::inline::value_at;
use super::{Ctx, LowerError};
use crate::kernel::e::*;
use crate::kernel::{Expr, Stmt, VarId};
use kiln_ir::NodeId;

/// How far ahead of the block being read its stream is fetched.
const AHEAD_BYTES: i64 = 2048;

const CACHE_LINE: i64 = 64;

/// Prefetches of the lines `AHEAD_BYTES` past block `blk` (of `bb` bytes) of `row` of
/// `bytes`: one per cache line of a block, at least one per block.
pub(super) fn row_stream(
    ctx: &mut Ctx,
    bytes: NodeId,
    row: &Expr,
    blk: VarId,
    bb: i64,
) -> Result<Vec<Stmt>, LowerError> {
    let mut out = Vec::new();
    for line in (0..bb).step_by(CACHE_LINE as usize) {
        let at = add(mul(var(blk), i(bb)), i(AHEAD_BYTES + line));
        if let Expr::Load { buf, index, .. } = value_at(ctx, bytes, &[row.clone(), at])? {
            out.push(Stmt::Prefetch { buf, index: *index });
        }
    }
    Ok(out)
}
