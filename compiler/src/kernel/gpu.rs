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
//! - **a block per point with explicit threads**: kernels that read `Expr::Thread` (see
//!   [`explicit_threads`]). Every thread runs the whole body and divides the work itself;
//!   the body's `Stmt::Await`s are its barriers, and its shared locals live in the block's
//!   shared memory. The tiled matmul on matrix units is one: a block of warps stages tiles
//!   of A and B through shared memory for all of them, and each warp's lanes meet in its
//!   matrix instructions (`Expr::Mma`, which only such kernels hold; see [`matrix_warp`]).
//!
//! A loop is "reached by every thread" when it sits at the top of the body or inside
//! `Serial` loops and `If`s there: their conditions and extents cannot depend on the thread,
//! so a barrier inside is safe. Inside a shared `Map` loop each thread runs nested loops on
//! its own.

use super::{any_expr, Buf, Expr, LoopKind, Stmt};
use serde::{Deserialize, Serialize};

/// Threads per block for both shapes: eight warps of 32 (or four waves of 64), enough to
/// cover memory latency in reductions without leaving most threads idle on short rows.
pub const BLOCK_THREADS: u32 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuLaunch {
    pub threads: u32,
    /// Grid points one block covers: `threads` (a thread per point) or 1 (a block per point).
    pub points_per_block: u32,
    /// Bytes of shared memory the launch gives each block for the kernel's shared locals
    /// ([`shared_offsets`]): the block's dynamic shared memory, so a kernel may use more
    /// than the 48 KiB CUDA allows a static declaration (the runtime opts in).
    pub shared_bytes: u32,
}

impl GpuLaunch {
    pub fn block_per_point(&self) -> bool {
        self.points_per_block == 1
    }
}

pub fn launch_shape(k: &super::Kernel) -> GpuLaunch {
    GpuLaunch {
        shared_bytes: SharedLayout::of(k).bytes,
        ..shape_of(&k.body, k.block_threads)
    }
}

/// Where each shared local lies in the block's dynamic shared memory.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedLayout {
    /// Each local's offset from the aligned base (`None` for a thread's own locals), a
    /// multiple of `align`.
    pub offsets: Vec<Option<u32>>,
    /// Bytes the launch must give: the locals, plus `align - 16` where the code must round
    /// the base up to `align` itself (the launch guarantees 16).
    pub bytes: u32,
    /// 16, so copies and vector reads of 16 bytes are single instructions, or
    /// `warpgroup::TILE_ALIGN` in kernels of `Stmt::GroupMma`, whose tiles' swizzle is a
    /// function of address bits.
    pub align: u32,
}

impl SharedLayout {
    pub fn of(k: &super::Kernel) -> SharedLayout {
        let align = if has_group_mma(&k.body) {
            super::warpgroup::TILE_ALIGN
        } else {
            16
        };
        Self::with_align(&k.locals, align)
    }

    pub fn with_align(locals: &[super::LocalBuf], align: u32) -> SharedLayout {
        let mut end = 0u32;
        let offsets = locals
            .iter()
            .map(|l| {
                l.shared.then(|| {
                    let at = end.next_multiple_of(align);
                    end = at + l.len * l.dtype.size_bytes() as u32;
                    at
                })
            })
            .collect();
        let bytes = match end {
            0 => 0,
            end => end.next_multiple_of(16) + (align - 16),
        };
        SharedLayout {
            offsets,
            bytes,
            align,
        }
    }
}

/// Whether `body` issues warpgroup matrix instructions (`Stmt::GroupMma`).
pub fn has_group_mma(body: &[Stmt]) -> bool {
    let mut found = false;
    super::visit_stmts(body, &mut |s| found |= matches!(s, Stmt::GroupMma { .. }));
    found
}

/// The launch of a kernel with `body`; `block_threads` (see `Kernel::block_threads`)
/// applies to a block per point.
pub fn shape_of(body: &[Stmt], block_threads: Option<u32>) -> GpuLaunch {
    if explicit_threads(body) {
        return GpuLaunch {
            threads: block_threads.unwrap_or(BLOCK_THREADS),
            points_per_block: 1,
            shared_bytes: 0,
        };
    }
    if body.iter().any(has_shared_loop) {
        return GpuLaunch {
            threads: block_threads.unwrap_or(BLOCK_THREADS),
            points_per_block: 1,
            shared_bytes: 0,
        };
    }
    GpuLaunch {
        threads: BLOCK_THREADS,
        points_per_block: BLOCK_THREADS,
        shared_bytes: 0,
    }
}

/// Whether the kernel runs **a block per point with explicit threads**: its body reads
/// `Expr::Thread`. Such a body must reach every `Stmt::Await` with all threads of the block,
/// so its loops and conditions around one may depend only on the point (the lowering that
/// writes one keeps that rule; the code generators do not check it).
pub fn explicit_threads(body: &[Stmt]) -> bool {
    any_expr(body, &mut |e| matches!(e, Expr::Thread))
}

/// The warp width the kernel's matrix instructions (`Expr::Mma`, and `Expr::LoadMatrix`,
/// NVIDIA's, of a warp of 32) need, if it has any: every lane of a warp executes one
/// together, so they appear only in kernels with explicit threads, reached by every lane;
/// each lane reads its place in the tiles from `Expr::Lane`.
pub fn matrix_warp(body: &[Stmt]) -> Option<u32> {
    let mut warp = None;
    any_expr(body, &mut |e| {
        match e {
            Expr::Mma(op, ..) => warp = Some(op.unit.warp()),
            Expr::LoadMatrix { .. } => warp = Some(32),
            _ => {}
        }
        warp.is_some()
    });
    warp
}

/// Most reductions a block combines at once (see [`reduction_group`]); a block's shared
/// array holds this many partial results per warp.
pub const MAX_BLOCK_REDUCTIONS: usize = 8;

/// Strided steps of a block's reductions each thread loads before it accumulates any
/// (the LLVM GPU code generator's `reduce_strided`; SPIR-V takes one unless
/// `KILN_GPU_UNROLL` says otherwise, see its `reduce_together`): a decode matvec thread
/// otherwise waits one memory round trip per step, and a block with few steps a thread
/// (a 1B llama's down projection: 5.5 of 16 bytes a row) spends its life waiting rather
/// than streaming. The steps still accumulate in order, so results do not change. One
/// H200 (2026-12-07), 1B F16 tg128 on CUDA: 794.5 t/s at 1, 836.3 at 2, 795.7 at 4; Vulkan
/// (NVIDIA's compiler) 421.4, 421.0, 415.1. `KILN_GPU_UNROLL` at compile time replaces it
/// (1 turns it off).
pub const REDUCE_UNROLL: u32 = 2;

/// [`REDUCE_UNROLL`], or `KILN_GPU_UNROLL` where set to a whole number from 1 to 8.
pub fn reduce_unroll() -> u32 {
    reduce_unroll_or(REDUCE_UNROLL)
}

/// `default` steps at a time, or `KILN_GPU_UNROLL` where set to a whole number from 1 to 8
/// (SPIR-V's default is one).
pub fn reduce_unroll_or(default: u32) -> u32 {
    UNROLL.get().unwrap_or_else(|| {
        Some(crate::lower::knob("KILN_GPU_UNROLL", default))
            .filter(|u| (1..=8).contains(u))
            .unwrap_or(default)
    })
}

thread_local! {
    /// Overrides `KILN_GPU_UNROLL` for this thread's compiles (tests run in parallel and
    /// share the environment).
    pub static UNROLL: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// How many `Reduce`s from the start of `stmts` a block runs together: consecutive ones
/// over the same extent, none reading another's result (a matvec's columns, not a norm's
/// mean and variance). One strided loop computes all their partial results, so each
/// thread has the loads of several rows in flight at once, and one pass through shared
/// memory combines them, with two barriers in all rather than two per reduction. 0 when
/// `stmts` does not start with a `Reduce`.
pub fn reduction_group(stmts: &[Stmt]) -> usize {
    let Some(Stmt::Reduce { extent, .. }) = stmts.first() else {
        return 0;
    };
    let mut n = 1;
    while n < stmts.len().min(MAX_BLOCK_REDUCTIONS) {
        let joins = match &stmts[n] {
            Stmt::Reduce {
                extent: e, value, ..
            } => {
                e == extent
                    && stmts[..n].iter().all(|g| match g {
                        Stmt::Reduce { acc, .. } => !super::vectorize::mentions(value, *acc),
                        _ => false,
                    })
            }
            _ => false,
        };
        if !joins {
            break;
        }
        n += 1;
    }
    n
}

/// The largest [`reduction_group`] anywhere in `body`.
pub fn max_reduction_group(body: &[Stmt]) -> usize {
    let mut most = 0;
    for (at, s) in body.iter().enumerate() {
        most = most.max(reduction_group(&body[at..]));
        let inner = match s {
            Stmt::Loop { body, .. } => max_reduction_group(body),
            Stmt::If {
                then, otherwise, ..
            } => max_reduction_group(then).max(max_reduction_group(otherwise)),
            _ => 0,
        };
        most = most.max(inner);
    }
    most
}

/// Whether `s` is, or contains at block-uniform level, a loop the block's threads share.
pub fn has_shared_loop(s: &Stmt) -> bool {
    match s {
        Stmt::Reduce { .. } => true,
        Stmt::Loop { kind, body, .. } => *kind == LoopKind::Map || body.iter().any(has_shared_loop),
        Stmt::If {
            then, otherwise, ..
        } => then.iter().chain(otherwise).any(has_shared_loop),
        Stmt::Let { .. }
        | Stmt::Decl { .. }
        | Stmt::Assign { .. }
        | Stmt::Store { .. }
        | Stmt::Prefetch { .. }
        | Stmt::Copy { .. }
        | Stmt::Await { .. }
        | Stmt::GroupMma { .. }
        | Stmt::GroupWait { .. } => false,
    }
}

/// Whether a select between `a` and `b` chooses between two sources: both load from
/// kernel arguments, no argument from both (decode attention's cached row or the step's
/// new one). GPU code generators branch on such a select, so that only the chosen arm's
/// loads run (SPIR-V's `OpSelect` and LLVM's `select` compute both arms). A select within
/// one binding (a K-quant's scale from one header word or two) keeps both arms: their
/// loads are shared, and its condition changes from lane to lane.
pub fn two_sources(a: &Expr, b: &Expr) -> bool {
    let (x, y) = (arguments_read(a), arguments_read(b));
    !x.is_empty() && !y.is_empty() && x.iter().all(|arg| !y.contains(arg))
}

/// The arguments `e` loads from.
fn arguments_read(e: &Expr) -> Vec<u32> {
    let mut args = Vec::new();
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        if let Expr::Load {
            buf: Buf::Arg(a), ..
        } = e
        {
            args.push(*a);
        }
        stack.extend(e.children());
    }
    args
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
    fn bodies_reading_their_thread_get_a_block_per_point_of_their_size() {
        let copy = Stmt::Copy {
            dst: Buf::Local(0),
            dst_index: Expr::Thread,
            src: Buf::Arg(1),
            src_index: Expr::Thread,
            lanes: 8,
        };
        let body = [copy, Stmt::Await { in_flight: 0 }, store()];
        let l = shape_of(&body, Some(128));
        assert_eq!((l.threads, l.points_per_block), (128, 1));
        assert!(explicit_threads(&body));
        // Without a thread index the same statements would be a thread per point.
        assert!(!explicit_threads(&body[1..]));
    }

    #[test]
    fn shared_locals_get_aligned_places_in_the_launch_shared_memory() {
        let local = |dtype, len, shared| super::super::LocalBuf { dtype, len, shared };
        let locals = [
            local(kiln_ir::DType::F16, 9, true),
            local(kiln_ir::DType::F32, 4, false),
            local(kiln_ir::DType::F32, 3, true),
        ];
        // 18 bytes of halves, then the f32s at the next multiple of 16; the thread's own
        // local takes no shared memory.
        let at = |locals: &[super::super::LocalBuf], align| {
            let l = SharedLayout::with_align(locals, align);
            (l.offsets, l.bytes)
        };
        assert_eq!(at(&locals, 16), (vec![Some(0), None, Some(32)], 48));
        assert_eq!(at(&locals[1..2], 16), (vec![None], 0));
        // Tiles of warpgroup products start at multiples of 1024 bytes from a base the
        // code rounds up, so the launch gives 1008 bytes more.
        assert_eq!(
            at(&locals, 1024),
            (vec![Some(0), None, Some(1024)], 1040 + 1008)
        );
    }

    #[test]
    fn warp_collective_reads_need_a_whole_warp() {
        let read = Stmt::Let {
            var: 1,
            value: Expr::LoadMatrix {
                buf: Buf::Local(0),
                index: Box::new(Expr::Lane),
                count: 4,
            },
        };
        // The code generators refuse it outside kernels of explicit threads, as they do
        // `Expr::Mma`, by this warp.
        assert_eq!(matrix_warp(&[read]), Some(32));
        assert_eq!(matrix_warp(&[store()]), None);
    }

    #[test]
    fn straight_line_bodies_get_a_thread_per_point() {
        let l = shape_of(&[store()], None);
        assert_eq!(l.points_per_block, BLOCK_THREADS);
        assert!(!l.block_per_point());
        // A serial loop of stores is still one thread's work.
        let l = shape_of(&[lp(LoopKind::Serial, vec![store()])], None);
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
        assert!(shape_of(&[red.clone(), store()], None).block_per_point());
        assert!(shape_of(&[lp(LoopKind::Map, vec![store()])], None).block_per_point());
        // Found through uniform control flow too.
        let nested = Stmt::If {
            cond: Expr::Lit(crate::kernel::Lit::Bool(true)),
            then: vec![lp(LoopKind::Serial, vec![red])],
            otherwise: Vec::new(),
        };
        assert!(shape_of(&[nested], None).block_per_point());
    }

    #[test]
    fn independent_reductions_over_one_extent_are_combined_together() {
        let red = |acc, var, extent: i64, value: Expr| Stmt::Reduce {
            acc,
            op: RedOp::Sum,
            var,
            extent: i(extent),
            value,
            vector: 1,
        };
        let cols: Vec<Stmt> = (0..4)
            .map(|c| red(10 + c, 20 + c, 64, var(20 + c)))
            .collect();
        assert_eq!(reduction_group(&cols), 4);
        assert_eq!(reduction_group(&cols[1..]), 3);
        // A different extent, a reader of an earlier result, or another statement ends it.
        let mut mixed = cols[..2].to_vec();
        mixed.push(red(12, 22, 32, var(22)));
        assert_eq!(reduction_group(&mixed), 2);
        let variance = vec![cols[0].clone(), red(11, 21, 64, mul(var(21), var(10)))];
        assert_eq!(reduction_group(&variance), 1);
        assert_eq!(
            reduction_group(&[cols[0].clone(), store(), cols[1].clone()]),
            1
        );
        assert_eq!(reduction_group(&[store()]), 0);
        let many: Vec<Stmt> = (0..12).map(|c| red(40 + c, 60 + c, 64, f(1.0))).collect();
        assert_eq!(reduction_group(&many), MAX_BLOCK_REDUCTIONS);
    }
}
