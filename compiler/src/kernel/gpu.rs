//! How a kernel's grid maps onto GPU blocks and threads: one decision, made here, that every
//! GPU code generator follows and the runtime launches by (through the plan's `gpu` field).
//!
//! Three shapes:
//! - **a thread per point**: kernels whose body is straight-line work (elementwise chains,
//!   which the GPU schedule lowers with every axis in the grid). Neighbouring threads take
//!   neighbouring points, so their loads and stores coalesce.
//! - **a block per point**: kernels with a `Map` loop or a `Reduce` that every thread of the
//!   block reaches (softmax and norm rows, reductions, dot products). The block's threads
//!   share those loops' iterations; a `Reduce` combines its partial results across the
//!   block (warp shuffles, then shared memory), so every thread sees the total.
//! - **a warp per point**: kernels built on matrix instructions (`Expr::Mma`, see
//!   [`warp_per_point`]); a block holds `threads / warp` points.
//!
//! A loop is "reached by every thread" when it sits at the top of the body or inside
//! `Serial` loops and `If`s there: their conditions and extents cannot depend on the thread,
//! so a barrier inside is safe. Inside a shared `Map` loop each thread runs nested loops on
//! its own.

use super::{any_expr, Expr, LoopKind, Stmt};
use serde::{Deserialize, Serialize};

/// Threads per block for both shapes: eight warps of 32 (or four waves of 64), enough to
/// cover memory latency in reductions without leaving most threads idle on short rows.
pub const BLOCK_THREADS: u32 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuLaunch {
    pub threads: u32,
    /// Grid points one block covers: `threads` (a thread per point) or 1 (a block per point).
    pub points_per_block: u32,
}

impl GpuLaunch {
    pub fn block_per_point(&self) -> bool {
        self.points_per_block == 1
    }
}

pub fn launch_shape(body: &[Stmt]) -> GpuLaunch {
    let points_per_block = if let Some(warp) = warp_per_point(body) {
        BLOCK_THREADS / warp
    } else if body.iter().any(has_shared_loop) {
        1
    } else {
        BLOCK_THREADS
    };
    GpuLaunch {
        threads: BLOCK_THREADS,
        points_per_block,
    }
}

/// The warp width, for kernels that run **a warp per point**: those using matrix
/// instructions (`Expr::Mma`), which every lane of a warp executes together. Their bodies
/// are straight-line code and `Serial` loops over block-uniform extents, so a warp's lanes
/// never diverge before an `Mma`; each lane reads its place in the tiles from `Expr::Lane`.
pub fn warp_per_point(body: &[Stmt]) -> Option<u32> {
    let mut warp = None;
    any_expr(body, &mut |e| {
        if let Expr::Mma(op, ..) = e {
            warp = Some(op.unit.warp());
        }
        warp.is_some()
    });
    warp
}

/// Whether `s` is, or contains at block-uniform level, a loop the block's threads share.
pub fn has_shared_loop(s: &Stmt) -> bool {
    match s {
        Stmt::Reduce { .. } => true,
        Stmt::Loop { kind, body, .. } => *kind == LoopKind::Map || body.iter().any(has_shared_loop),
        Stmt::If {
            then, otherwise, ..
        } => then.iter().chain(otherwise).any(has_shared_loop),
        Stmt::Let { .. } | Stmt::Decl { .. } | Stmt::Assign { .. } | Stmt::Store { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::e::*;
    use crate::kernel::{Buf, RedOp};

    fn store() -> Stmt {
        Stmt::Store {
            buf: Buf::Arg(0),
            index: i(0),
            value: f(1.0),
        }
    }

    fn lp(kind: LoopKind, body: Vec<Stmt>) -> Stmt {
        Stmt::Loop {
            var: 0,
            extent: i(8),
            kind,
            vector: 1,
            body,
        }
    }

    #[test]
    fn straight_line_bodies_get_a_thread_per_point() {
        let l = launch_shape(&[store()]);
        assert_eq!(l.points_per_block, BLOCK_THREADS);
        assert!(!l.block_per_point());
        // A serial loop of stores is still one thread's work.
        let l = launch_shape(&[lp(LoopKind::Serial, vec![store()])]);
        assert!(!l.block_per_point());
    }

    #[test]
    fn reductions_and_map_loops_get_a_block_per_point() {
        let red = Stmt::Reduce {
            acc: 1,
            op: RedOp::Sum,
            var: 2,
            extent: i(64),
            value: f(1.0),
            vector: 1,
        };
        assert!(launch_shape(&[red.clone(), store()]).block_per_point());
        assert!(launch_shape(&[lp(LoopKind::Map, vec![store()])]).block_per_point());
        // Found through uniform control flow too.
        let nested = Stmt::If {
            cond: Expr::Lit(crate::kernel::Lit::Bool(true)),
            then: vec![lp(LoopKind::Serial, vec![red])],
            otherwise: Vec::new(),
        };
        assert!(launch_shape(&[nested]).block_per_point());
    }
}
