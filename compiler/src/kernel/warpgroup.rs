//! Hopper's warpgroup matrix instruction (`wgmma.mma_async`, `sm_90a` only), as
//! `Stmt::GroupMma`.
//!
//! Four consecutive warps (a *warpgroup*, 128 threads) multiply a 64 x 16 tile of A by a
//! 16 x N tile of B together and add the product to a 64 x N tile of f32 accumulators that
//! stays in their registers, N / 2 of them a thread. Unlike `mma.sync` (`Expr::Mma`) both
//! operands are read by the tensor cores straight from shared memory, through a 64-bit
//! *descriptor* of each tile's address and layout, so no thread holds fragments of A or B:
//! the registers `mma.sync` spends on them go to larger tiles of C, and issue slots to
//! nothing (docs/perf.md, 2026-12-06: `mma.sync` kernels top out near 60% of cuBLAS on an
//! H100 with all 255 registers taken).
//!
//! kiln uses the one layout its staged tiles already have (`lower::matrix::Staged` with
//! steps of 64 halves): rows of 64 halves (128 bytes), each row's 16-byte chunk `c` stored
//! at chunk `c ^ (row % 8)`, which is the instruction's 128-byte swizzle, both operands K
//! major. The descriptor names the tile's first element; the hardware applies the swizzle
//! to address bits (bits 4-6 xor bits 7-9), so a tile's rows must start at a multiple of
//! 1024 bytes from a 1024-byte boundary, and a tile 16 elements further along K starts 32
//! bytes further. [`GroupOp::element`] is that address map; the interpreter reads through
//! it and the code generator builds descriptors from it.

use super::e::*;
use super::{Buf, Expr, VarId};
use kiln_ir::DType;
use serde::{Deserialize, Serialize};

/// Threads of a warpgroup.
pub const GROUP_THREADS: i64 = 128;

/// Rows of A one instruction multiplies.
pub const GROUP_M: i64 = 64;

/// K positions one instruction multiplies.
pub const GROUP_K: i64 = 16;

/// Elements (halves) per staged row: the 128-byte swizzle's width.
pub const ROW_ELEMS: i64 = 64;

/// Bytes from a 1024-byte boundary at which every staged tile must start, and the
/// alignment the code generator gives the shared memory holding them.
pub const TILE_ALIGN: u32 = 1024;

/// `wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{input}.{input}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupOp {
    /// Columns of B and C: a multiple of 8 up to 256.
    pub n: u16,
    /// `F16` or `BF16`, the type of both operands.
    pub input: DType,
}

/// One instruction of a `Stmt::GroupMma`: `acc += A B^T`, A the 64 x 16 tile whose row 0,
/// K 0 is element `a_index` of shared local `a`, B the N x 16 tile at `b_index` of `b`
/// (both in the layout of [`GroupOp::element`]). `acc` is the thread's `n / 2` lanes of C
/// ([`GroupOp::c_elem`]); the indices are the same for every thread of the warpgroup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupProduct {
    pub acc: VarId,
    pub a: Buf,
    pub a_index: Expr,
    pub b: Buf,
    pub b_index: Expr,
}

impl GroupOp {
    /// Accumulator lanes each thread holds.
    pub fn acc_lanes(self) -> u8 {
        (self.n / 2) as u8
    }

    /// Whether `n` is one the instruction has.
    pub fn valid(self) -> bool {
        self.n.is_multiple_of(8)
            && (8..=256).contains(&self.n)
            && matches!(self.input, DType::F16 | DType::BF16)
    }

    /// Row and column of C (within the 64 x N tile) that lane `e` of `thread`'s (index within
    /// the warpgroup) accumulators holds: warp `w` of the group owns rows `16w..16w + 16`,
    /// laid out in columns of 8 as `mma.sync`'s C (`kernel::matrix`).
    pub fn c_elem(self, thread: Expr, e: i64) -> (Expr, Expr) {
        let warp = div(thread.clone(), i(32));
        let lane = rem(thread, i(32));
        let row = add(
            add(mul(warp, i(16)), div(lane.clone(), i(4))),
            i(8 * ((e / 2) % 2)),
        );
        let col = add(mul(rem(lane, i(4)), i(2)), i(8 * (e / 4) + e % 2));
        (row, col)
    }

    /// Where element (`row`, `k`) of a tile starting at element `index` of its local lies
    /// (an element index of the local): row `row` starts `row` staged rows (128 bytes) past
    /// `index`, and the 16-byte chunks of each 128-byte line are swizzled by the line's
    /// position within its 1024 bytes, as the hardware swizzles addresses.
    pub fn element(index: i64, row: i64, k: i64) -> i64 {
        let plain = index + row * ROW_ELEMS + k;
        // Elements are 2 bytes: address bits 4-6 and 7-9 are element bits 3-5 and 6-8.
        plain ^ (((plain >> 6) & 7) << 3)
    }
}
