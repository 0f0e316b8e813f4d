//! Matrix instructions: one warp (or wave) multiplies a small tile of A by a tile of B and
//! adds the product to a tile of accumulators, each lane holding a few elements of each
//! tile in registers (`Expr::Mma`). NVIDIA's `mma.sync`, AMD's MFMA (CDNA) and WMMA (RDNA
//! 3/4) all have this shape and differ only in tile sizes and in which lane holds which
//! element. That difference is data, described here once per instruction, so one matmul
//! lowering (`lower::matrix`) serves every GPU with a matrix unit, and each code generator
//! only maps `Expr::Mma` to its intrinsic.
//!
//! Layouts name rows of A and C, columns of B and C, and a *position along K*. The
//! hardware pairs the K positions of A and B by register: lane `l`'s register `i` of A
//! meets the same K index as the matching register of B in the lanes that share `l`'s
//! K group. Since a sum over K does not care in which order K is visited, kiln relabels
//! K so that each lane's elements are consecutive in memory (`k_group * k_per_lane +
//! local`): one vector load fetches them. The relabelling is the same for A and B, so
//! the product is unchanged (`layouts_cover_each_tile_once` checks the bijections; the
//! conformance suite checks products on the GPU).

use super::e::*;
use super::Expr;
use kiln_ir::DType;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatrixUnit {
    /// NVIDIA `mma.sync.aligned.m16n8k16.row.col` (sm_80 and newer), a warp of 32.
    MmaM16N8K16,
    /// AMD CDNA `v_mfma_f32_16x16x16` (gfx908, gfx90a, gfx94x), a wave of 64.
    Mfma16x16x16,
    /// AMD RDNA3 `v_wmma_f32_16x16x16` in wave32: every lane holds a whole row of A (lanes
    /// 16-31 repeat lanes 0-15) and eight accumulators.
    WmmaGfx11,
    /// AMD RDNA4's `v_wmma_f32_16x16x16`: lanes 16-31 hold the upper half of K instead.
    WmmaGfx12,
}

/// One matrix instruction with its input type (f32 accumulators always).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MatrixOp {
    pub unit: MatrixUnit,
    /// `F16` or `BF16`: A and B are rounded to this type (to nearest even; a no-op for
    /// values loaded from buffers of it, which is all bf16 operands ever are).
    pub input: DType,
}

impl MatrixUnit {
    /// The matrix unit of a GPU target (`cuda:sm_90a`, `hip:gfx90a:xnack+`), if it has one
    /// kiln uses.
    pub fn for_gpu(api: &str, arch: &str) -> Option<MatrixUnit> {
        let arch = arch.split(':').next().unwrap_or(arch);
        match api {
            "cuda" => {
                let digits: String = arch
                    .trim_start_matches("sm_")
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let sm: u32 = digits.parse().ok()?;
                (sm >= 80).then_some(MatrixUnit::MmaM16N8K16)
            }
            "hip" => match arch {
                "gfx908" | "gfx90a" | "gfx940" | "gfx941" | "gfx942" | "gfx950" => {
                    Some(MatrixUnit::Mfma16x16x16)
                }
                a if a.starts_with("gfx11") => Some(MatrixUnit::WmmaGfx11),
                a if a.starts_with("gfx12") => Some(MatrixUnit::WmmaGfx12),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the unit multiplies `input` (f16 everywhere; bf16 from gfx90a on AMD CDNA,
    /// whose gfx908 has only a narrower bf16 instruction kiln does not use).
    pub fn takes(self, input: DType, arch: &str) -> bool {
        match input {
            DType::F16 => true,
            DType::BF16 => !(self == MatrixUnit::Mfma16x16x16 && arch.starts_with("gfx908")),
            _ => false,
        }
    }

    /// (M, N, K) of one instruction's tile.
    pub fn shape(self) -> (i64, i64, i64) {
        match self {
            MatrixUnit::MmaM16N8K16 => (16, 8, 16),
            _ => (16, 16, 16),
        }
    }

    /// Lanes that execute one instruction together.
    pub fn warp(self) -> u32 {
        match self {
            MatrixUnit::Mfma16x16x16 => 64,
            _ => 32,
        }
    }

    /// Elements of A, B and C each lane holds.
    pub fn fragment_lanes(self) -> (u8, u8, u8) {
        match self {
            MatrixUnit::MmaM16N8K16 => (8, 4, 4),
            MatrixUnit::Mfma16x16x16 => (4, 4, 4),
            MatrixUnit::WmmaGfx11 => (16, 16, 8),
            MatrixUnit::WmmaGfx12 => (8, 8, 8),
        }
    }

    /// Consecutive K positions each lane holds per row of A (and per column of B).
    pub fn k_per_lane(self) -> i64 {
        match self {
            MatrixUnit::MmaM16N8K16 | MatrixUnit::Mfma16x16x16 => 4,
            MatrixUnit::WmmaGfx11 => 16,
            MatrixUnit::WmmaGfx12 => 8,
        }
    }

    /// Which group of `k_per_lane` K positions `lane` holds.
    pub fn k_group(self, lane: Expr) -> Expr {
        match self {
            MatrixUnit::MmaM16N8K16 => rem(lane, i(4)),
            MatrixUnit::Mfma16x16x16 | MatrixUnit::WmmaGfx12 => div(lane, i(16)),
            MatrixUnit::WmmaGfx11 => i(0),
        }
    }

    /// The instruction's own K index of element `local` of `lane`'s group (without the
    /// relabelling above): where a lane must read when its fragment is assembled from
    /// short reads instead of one run. On `mma.sync` a lane's four hold 2t, 2t + 1, 2t + 8
    /// and 2t + 9 (t = lane % 4); the AMD units' are consecutive. It is
    /// [`MatrixUnit::k_lane`] plus [`MatrixUnit::k_offset`].
    pub fn k_position(self, lane: Expr, local: i64) -> Expr {
        add(self.k_lane(lane), i(self.k_offset(local)))
    }

    /// The part of [`MatrixUnit::k_position`] that depends on the lane.
    pub fn k_lane(self, lane: Expr) -> Expr {
        match self {
            MatrixUnit::MmaM16N8K16 => mul(rem(lane, i(4)), i(2)),
            _ => mul(self.k_group(lane), i(self.k_per_lane())),
        }
    }

    /// The part of [`MatrixUnit::k_position`] that depends on the element: a multiple of
    /// 8 at the start of each [`MatrixUnit::k_piece`].
    pub fn k_offset(self, local: i64) -> i64 {
        match self {
            MatrixUnit::MmaM16N8K16 => (local & 1) + 8 * (local >> 1),
            _ => local,
        }
    }

    /// Consecutive elements of a lane's group that [`MatrixUnit::k_position`] puts at
    /// consecutive K indices: the widest read of the instruction's own order.
    pub fn k_piece(self) -> i64 {
        match self {
            MatrixUnit::MmaM16N8K16 => 2,
            _ => self.k_per_lane(),
        }
    }

    /// The row of A `lane` holds (its first, for `mma.sync`'s two).
    pub fn a_row(self, lane: Expr) -> Expr {
        match self {
            MatrixUnit::MmaM16N8K16 => div(lane, i(4)),
            _ => rem(lane, i(16)),
        }
    }

    /// Register `i` of A: (rows past `a_row`, position within the lane's K group).
    pub fn a_elem(self, e: i64) -> (i64, i64) {
        match self {
            // a0 a1: row g, k 2t, 2t+1; a2 a3: row g+8; a4..a7 the same at k 2t+8, 2t+9.
            MatrixUnit::MmaM16N8K16 => (8 * ((e >> 1) & 1), (e & 1) + 2 * (e >> 2)),
            _ => (0, e),
        }
    }

    /// The column of B `lane` holds.
    pub fn b_col(self, lane: Expr) -> Expr {
        self.a_row(lane)
    }

    /// Register `i` of B: its position within the lane's K group (b0 b1: k 2t, 2t+1; b2 b3:
    /// 2t+8, 2t+9 on `mma.sync`, which pair with a0 a1 and a4 a5).
    pub fn b_elem(self, e: i64) -> i64 {
        e
    }

    /// Register `i` of C: (row, column) within the tile.
    pub fn c_elem(self, lane: Expr, e: i64) -> (Expr, Expr) {
        match self {
            MatrixUnit::MmaM16N8K16 => (
                add(div(lane.clone(), i(4)), i(8 * (e >> 1))),
                add(mul(rem(lane, i(4)), i(2)), i(e & 1)),
            ),
            MatrixUnit::Mfma16x16x16 => (
                add(mul(div(lane.clone(), i(16)), i(4)), i(e)),
                rem(lane, i(16)),
            ),
            MatrixUnit::WmmaGfx11 => (add(div(lane.clone(), i(16)), i(2 * e)), rem(lane, i(16))),
            MatrixUnit::WmmaGfx12 => (
                add(mul(div(lane.clone(), i(16)), i(8)), i(e)),
                rem(lane, i(16)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const UNITS: [MatrixUnit; 4] = [
        MatrixUnit::MmaM16N8K16,
        MatrixUnit::Mfma16x16x16,
        MatrixUnit::WmmaGfx11,
        MatrixUnit::WmmaGfx12,
    ];

    fn eval(e: &Expr) -> i64 {
        crate::kernel::lockstep::constant(e).unwrap()
    }

    /// How many times each (row or column, K) pair of A or B is held: every pair of the
    /// tile must be held, by the same number of lanes (RDNA3 repeats each twice).
    /// How often each (row or column, K) of A's or B's tile is held, with K relabelled or
    /// (`hardware`) in the instruction's own order.
    fn coverage(unit: MatrixUnit, b: bool, hardware: bool) -> HashMap<(i64, i64), usize> {
        let (m, n, k) = unit.shape();
        let (a_len, b_len, _) = unit.fragment_lanes();
        let mut held = HashMap::new();
        for lane in 0..unit.warp() as i64 {
            let len = if b { b_len } else { a_len };
            for e in 0..len as i64 {
                let (off, local) = if b {
                    (0, unit.b_elem(e))
                } else {
                    unit.a_elem(e)
                };
                let line = if b {
                    eval(&unit.b_col(i(lane)))
                } else {
                    eval(&unit.a_row(i(lane))) + off
                };
                let kk = if hardware {
                    let kk = eval(&unit.k_position(i(lane), local));
                    let first = local - local % unit.k_piece();
                    let piece = eval(&unit.k_position(i(lane), first));
                    assert_eq!(
                        kk,
                        piece + local - first,
                        "{unit:?}: pieces are consecutive"
                    );
                    kk
                } else {
                    eval(&unit.k_group(i(lane))) * unit.k_per_lane() + local
                };
                assert!(
                    line < if b { n } else { m } && kk < k,
                    "{unit:?} out of tile"
                );
                *held.entry((line, kk)).or_insert(0) += 1;
            }
        }
        held
    }

    #[test]
    fn layouts_cover_each_tile_once() {
        for unit in UNITS {
            let (m, n, k) = unit.shape();
            for hardware in [false, true] {
                let a = coverage(unit, false, hardware);
                let b = coverage(unit, true, hardware);
                assert_eq!(a.len() as i64, m * k, "{unit:?} A");
                assert_eq!(b.len() as i64, n * k, "{unit:?} B");
                let copies = |h: &HashMap<_, usize>| h.values().copied().collect::<Vec<_>>();
                let (ca, cb) = (copies(&a), copies(&b));
                assert!(ca.iter().all(|&c| c == ca[0]) && cb.iter().all(|&c| c == cb[0]));
            }
            let mut c = HashMap::new();
            let (_, _, c_len) = unit.fragment_lanes();
            for lane in 0..unit.warp() as i64 {
                for e in 0..c_len as i64 {
                    let (r, col) = unit.c_elem(i(lane), e);
                    *c.entry((eval(&r), eval(&col))).or_insert(0) += 1;
                }
            }
            assert_eq!(c.len() as i64, m * n, "{unit:?} C");
            assert!(c.values().all(|&x| x == 1), "{unit:?}: C held once");
        }
    }

    #[test]
    fn targets_with_matrix_units() {
        assert_eq!(
            MatrixUnit::for_gpu("cuda", "sm_90a"),
            Some(MatrixUnit::MmaM16N8K16)
        );
        assert_eq!(MatrixUnit::for_gpu("cuda", "sm_75"), None);
        assert_eq!(
            MatrixUnit::for_gpu("hip", "gfx90a:xnack+"),
            Some(MatrixUnit::Mfma16x16x16)
        );
        assert_eq!(
            MatrixUnit::for_gpu("hip", "gfx1101"),
            Some(MatrixUnit::WmmaGfx11)
        );
        assert_eq!(
            MatrixUnit::for_gpu("hip", "gfx1201"),
            Some(MatrixUnit::WmmaGfx12)
        );
        assert_eq!(MatrixUnit::for_gpu("hip", "gfx1030"), None);
        assert_eq!(MatrixUnit::for_gpu("hip", "gfx906"), None);
        assert!(!MatrixUnit::Mfma16x16x16.takes(DType::BF16, "gfx908"));
        assert!(MatrixUnit::Mfma16x16x16.takes(DType::BF16, "gfx942"));
    }
}
