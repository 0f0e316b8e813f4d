//! The launch plan: what the runtime executes for one target variant.
//!
//! The compiler plans memory and kernels ahead of time; the root crate converts its plan
//! into these plain types, which travel in the artifact manifest as JSON. The runtime only
//! evaluates them: slot sizes and grid extents are expressions of the model's symbols
//! (`batch`, `seq`), bound at run time from the inputs' extents.

use kiln_ir::{Bindings, Dim};
use serde::{Deserialize, Serialize};

/// Every slot, and so the arena itself, starts at a multiple of this many bytes.
pub const ARENA_ALIGN: u64 = 64;

/// One per target variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Order of the `dims` array passed to kernels (e.g. `["batch", "seq"]`).
    pub symbols: Vec<String>,
    /// Arena slots. A slot's size is the largest of its expressions (several buffers that
    /// never live at the same time share it, and symbolic sizes have no closed-form max).
    pub slots: Vec<Vec<SizeExpr>>,
    pub launches: Vec<Launch>,
}

/// One kernel call over a parallel grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// Kernel name; the code exports it as `kiln_<kernel>`.
    pub kernel: String,
    /// Buffers passed to the kernel, in its parameter order.
    pub args: Vec<BufferRef>,
    /// Whether the kernel may write each argument (empty: unknown, every one may be;
    /// artifacts from before plans carried it). GPU executors order launches by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<bool>,
    /// Which arguments the kernel moves by an offset from the launch's table, one entry
    /// each, in order (`Variant::buffer_offsets`, `crate::buffer_offsets`); empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<bool>,
    /// Parallel extents; the runtime runs flattened indices `0..product` over threads.
    pub grid: Vec<GridDim>,
    /// Smallest number of grid points per thread task.
    pub min_chunk: u64,
    /// GPU variants: how the grid maps to blocks (absent for CPU variants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuBlocks>,
    /// The launch runs only when this holds (absent: always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
}

/// `dim <= max`, or `dim > max` with `above`: one of a node's kernels per range of a
/// symbol (a matmul's one-row decode form and its many-row form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub dim: Dim,
    pub max: i64,
    pub above: bool,
}

impl Launch {
    /// Whether the kernel may write argument `i`.
    pub fn may_write(&self, i: usize) -> bool {
        self.writes.get(i).copied().unwrap_or(true)
    }

    /// Whether this launch runs under `env`.
    pub fn runs(&self, env: &Bindings) -> Result<bool, String> {
        let Some(g) = &self.guard else {
            return Ok(true);
        };
        let v = eval_extent(&g.dim, env)?;
        let at_most = i64::try_from(v).is_ok_and(|v| v <= g.max);
        Ok(at_most != g.above)
    }
}

/// Threads per block, and grid points per block: `threads` (a thread per point) or 1 (a
/// block per point, its threads sharing the point's loops or dividing its work by their
/// index); older artifacts may hold the block's warp count (a warp per point, for matrix
/// instructions). The compiler decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuBlocks {
    pub threads: u32,
    pub points_per_block: u32,
    /// Dynamic shared memory each block gets, in bytes (the kernel's shared locals; absent
    /// in artifacts whose kernels declared all their shared memory statically).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_bytes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl GpuBlocks {
    /// Whether a GPU executor can launch this shape: 1..=1024 threads, and a block covering
    /// a whole number of points that splits its threads evenly (one point, one per warp, one
    /// per thread: the shapes the compiler emits).
    pub fn check(&self) -> Result<(), String> {
        if self.threads == 0 || self.threads > 1024 {
            return Err(format!("{} threads per block (1..=1024)", self.threads));
        }
        if self.points_per_block == 0 || !self.threads.is_multiple_of(self.points_per_block) {
            return Err(format!(
                "{} points per block (must divide the {} threads)",
                self.points_per_block, self.threads
            ));
        }
        Ok(())
    }
}

/// How a GPU executor launches one launch: its block shape, its grid's point count, and the
/// number of blocks (capped at `max_blocks`: the kernels stride over points, so a capped
/// grid is still complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLaunch {
    pub blocks: GpuBlocks,
    /// The grid's point count (with room, `LaunchSizes::on_device`: the count its blocks
    /// were sized for, at least the grid's).
    pub points: u64,
    pub block_count: u32,
}

impl Launch {
    /// The launch's size on a GPU under `env`, or `None` when its guard fails or its grid is
    /// empty (nothing to launch).
    pub fn on_device(
        &self,
        env: &Bindings,
        max_blocks: u64,
    ) -> Result<Option<DeviceLaunch>, String> {
        let at = |m: String| format!("launch {}: {m}", self.kernel);
        if !self.runs(env).map_err(at)? {
            return Ok(None);
        }
        let points = || grid_points(&self.grid, env);
        device_launch(
            self.gpu,
            points,
            None::<fn() -> Result<u64, String>>,
            max_blocks,
        )
        .map_err(at)
    }
}

/// The launch of a grid of `points` grid points in blocks of `blocks`, or `None` for an
/// empty grid; with `roomy` (the grid's points under the symbols with room,
/// `crate::launch_sizes`) as many blocks as those need, where they are more: kernels that
/// count their own points find none in the extra blocks. The one sizing rule of every GPU
/// launch, whether its dims look their symbols up by name or by position.
pub(crate) fn device_launch(
    blocks: Option<GpuBlocks>,
    points: impl FnOnce() -> Result<u64, String>,
    roomy: Option<impl FnOnce() -> Result<u64, String>>,
    max_blocks: u64,
) -> Result<Option<DeviceLaunch>, String> {
    let blocks = blocks.ok_or("no GPU block shape")?;
    blocks.check()?;
    let exact = points()?;
    if exact == 0 {
        return Ok(None);
    }
    if i64::try_from(exact).is_err() {
        return Err("too many grid points".into());
    }
    let points = match roomy.map(|r| r()) {
        Some(Ok(p)) if p > exact && i64::try_from(p).is_ok() => p,
        _ => exact,
    };
    Ok(Some(DeviceLaunch {
        blocks,
        points,
        block_count: block_count(points, blocks, max_blocks),
    }))
}

/// Blocks of shape `blocks` for `points` grid points, at most `max_blocks` (the kernels
/// stride over points, so a capped grid is still complete).
fn block_count(points: u64, blocks: GpuBlocks, max_blocks: u64) -> u32 {
    points
        .div_ceil(blocks.points_per_block as u64)
        .min(max_blocks)
        .min(u32::MAX as u64) as u32
}

impl BufferRef {
    /// The device address of this buffer, for executors that pass addresses: arena slots at
    /// `offsets` from `arena`, inputs then outputs at `io`, weight ranges from `weights`.
    pub fn address(
        &self,
        arena: u64,
        offsets: &[u64],
        io: &[u64],
        inputs: usize,
        weights: u64,
    ) -> u64 {
        match *self {
            BufferRef::Slot(i) => arena + offsets[i],
            BufferRef::Input(i) => io[i],
            BufferRef::Output(i) => io[inputs + i],
            BufferRef::Weight { offset, .. } => weights + offset,
        }
    }
}

/// Host data of one run on a device with its own memory: inputs to upload, outputs to fill.
/// Carried inputs and outputs are empty here: they live in the executor's carried storage.
pub struct HostIo<'a> {
    pub inputs: &'a [&'a [u8]],
    pub outputs: &'a mut [&'a mut [u8]],
    pub carried: &'a [crate::carry::CarriedRun],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BufferRef {
    Slot(usize),
    Input(usize),
    Output(usize),
    /// A byte range of the weights section. Kernels must only read it: it is mapped read-only.
    Weight {
        offset: u64,
        len: u64,
    },
}

/// `bytes_per_elem * product(factors)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeExpr {
    pub bytes_per_elem: u64,
    pub factors: Vec<Dim>,
}

impl SizeExpr {
    pub fn new(bytes_per_elem: u64, factors: Vec<Dim>) -> SizeExpr {
        SizeExpr {
            bytes_per_elem,
            factors,
        }
    }

    /// Byte size under `env`; errors name an unbound symbol, a negative factor or overflow.
    pub fn eval(&self, env: &Bindings) -> Result<u64, String> {
        let mut size = self.bytes_per_elem;
        for f in &self.factors {
            let n = eval_extent(f, env)?;
            size = size
                .checked_mul(n)
                .ok_or_else(|| format!("size {} overflows u64", self.display()))?;
        }
        Ok(size)
    }

    fn display(&self) -> String {
        let parts: Vec<String> = self.factors.iter().map(|d| format!("({d})")).collect();
        format!("{}*{}", self.bytes_per_elem, parts.join("*"))
    }
}

/// A dim's value as a non-negative extent. Arithmetic is checked: dims come from the
/// manifest, which is untrusted input.
pub fn eval_extent(dim: &Dim, env: &Bindings) -> Result<u64, String> {
    let values = dim.terms.iter().map(|(s, c)| {
        let x = env
            .get(s)
            .ok_or_else(|| format!("symbol `{s}` is not bound"))?;
        Ok((*x, *c))
    });
    affine_extent(dim.constant, values, dim)
}

/// `constant + sum(coeff * value)` over `terms` (`(value, coeff)`, or why a value is
/// missing) as a non-negative extent, in checked arithmetic; errors name `dim`.
pub(crate) fn affine_extent(
    constant: i64,
    terms: impl IntoIterator<Item = Result<(i64, i64), String>>,
    dim: &dyn std::fmt::Display,
) -> Result<u64, String> {
    let mut v = constant;
    for term in terms {
        let (x, c) = term?;
        v = c
            .checked_mul(x)
            .and_then(|t| v.checked_add(t))
            .ok_or_else(|| format!("dim {dim} overflows"))?;
    }
    u64::try_from(v).map_err(|_| format!("dim {dim} evaluates to negative {v}"))
}

/// One grid axis: `ceil(dim / ceil_div)` points (tiled kernels cover `ceil_div` elements
/// of `dim` per point, so their grids are not affine in the symbols).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridDim {
    pub dim: Dim,
    pub ceil_div: u64,
}

impl GridDim {
    pub fn eval(&self, env: &Bindings) -> Result<u64, String> {
        if self.ceil_div == 0 {
            return Err(format!("grid axis {} divides by zero", self.dim));
        }
        Ok(eval_extent(&self.dim, env)?.div_ceil(self.ceil_div))
    }
}

impl From<Dim> for GridDim {
    fn from(dim: Dim) -> GridDim {
        GridDim { dim, ceil_div: 1 }
    }
}

/// Number of grid points of `grid` (1 for an empty grid: one call, one point).
pub fn grid_points(grid: &[GridDim], env: &Bindings) -> Result<u64, String> {
    grid.iter().try_fold(1u64, |acc, d| {
        let n = d.eval(env)?;
        acc.checked_mul(n)
            .ok_or_else(|| "grid size overflows u64".to_string())
    })
}

/// Where each slot lives in the arena, for one set of symbol values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaLayout {
    pub offsets: Vec<u64>,
    /// Evaluated size of each slot, before rounding.
    pub sizes: Vec<u64>,
    pub total: u64,
}

impl Plan {
    /// Lays out the arena: slot `i` starts where slot `i-1` ends, rounded up to 64 bytes.
    pub fn arena_layout(&self, env: &Bindings) -> Result<ArenaLayout, String> {
        let mut offsets = Vec::with_capacity(self.slots.len());
        let mut sizes = Vec::with_capacity(self.slots.len());
        let mut total = 0u64;
        for (i, slot) in self.slots.iter().enumerate() {
            let mut size = 0u64;
            for e in slot {
                size = size.max(e.eval(env).map_err(|m| format!("slot {i}: {m}"))?);
            }
            offsets.push(total);
            sizes.push(size);
            let rounded =
                round_up(size).ok_or_else(|| format!("slot {i}: arena size overflows u64"))?;
            total = total
                .checked_add(rounded)
                .ok_or_else(|| format!("slot {i}: arena size overflows u64"))?;
        }
        Ok(ArenaLayout {
            offsets,
            sizes,
            total,
        })
    }

    /// A layout whose offsets stay the same while the symbols grow a little, for executors
    /// that keep launch parameters between runs (a decode step moves `past` by one each
    /// time): each symbol is rounded up to one of eight steps per power of two, at most
    /// 12.5% more, unless that leaves some slot smaller than `env` needs (a size that
    /// shrinks as a symbol grows), where `env`'s own layout is returned.
    pub fn arena_layout_with_room(&self, env: &Bindings) -> Result<ArenaLayout, String> {
        let exact = self.arena_layout(env)?;
        let roomy: Bindings = env
            .iter()
            .map(|(s, &v)| (s.clone(), with_room(v)))
            .collect();
        match self.arena_layout(&roomy) {
            Ok(big) if big.sizes.iter().zip(&exact.sizes).all(|(b, e)| b >= e) => Ok(big),
            _ => Ok(exact),
        }
    }

    /// The symbol values in `symbols` order, as kernels receive them.
    pub fn dims_array(&self, env: &Bindings) -> Result<Vec<i64>, String> {
        self.symbols
            .iter()
            .map(|s| {
                env.get(s)
                    .copied()
                    .ok_or_else(|| format!("symbol `{s}` is not bound"))
            })
            .collect()
    }
}

/// `v` rounded up to a multiple of an eighth of its power of two (16 and below as they are).
pub(crate) fn with_room(v: i64) -> i64 {
    if v <= 16 {
        return v;
    }
    let step = 1i64 << (63 - v.leading_zeros() - 3);
    v.checked_add(step - 1).map_or(v, |r| r / step * step)
}

fn round_up(n: u64) -> Option<u64> {
    Some(n.checked_add(ARENA_ALIGN - 1)? / ARENA_ALIGN * ARENA_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_launches_size_their_grid_and_skip_empty_or_guarded_ones() {
        let launch = |rows: Dim, guard: Option<Guard>| Launch {
            kernel: "k".into(),
            writes: vec![],
            offsets: vec![],
            args: vec![
                BufferRef::Slot(1),
                BufferRef::Output(0),
                BufferRef::Weight { offset: 64, len: 8 },
            ],
            grid: vec![GridDim {
                dim: rows,
                ceil_div: 1,
            }],
            min_chunk: 1,
            gpu: Some(GpuBlocks {
                threads: 256,
                points_per_block: 8,
                shared_bytes: 0,
            }),
            guard,
        };
        let seq = Dim::sym("seq");
        let l = launch(seq.clone(), None);
        let size = l
            .on_device(&env(&[("seq", 100)]), 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!((size.points, size.block_count), (100, 13));
        // Capped: the kernels stride over the rest.
        assert_eq!(
            l.on_device(&env(&[("seq", 100)]), 4)
                .unwrap()
                .unwrap()
                .block_count,
            4
        );
        assert_eq!(l.on_device(&env(&[("seq", 0)]), 4).unwrap(), None);
        let guarded = launch(
            seq.clone(),
            Some(Guard {
                dim: seq,
                max: 4,
                above: false,
            }),
        );
        assert_eq!(guarded.on_device(&env(&[("seq", 5)]), 4).unwrap(), None);
        let mut cpu = launch(Dim::from(3usize), None);
        cpu.gpu = None;
        assert!(cpu
            .on_device(&env(&[]), 4)
            .unwrap_err()
            .contains("launch k: no GPU block shape"));
        let addrs: Vec<u64> = l
            .args
            .iter()
            .map(|a| a.address(0x1000, &[0, 128], &[0x9000, 0xa000], 1, 0x5000))
            .collect();
        assert_eq!(addrs, [0x1080, 0xa000, 0x5040]);
    }

    #[test]
    fn gpu_blocks_cover_points_that_split_their_threads() {
        let b = |threads, points_per_block| GpuBlocks {
            threads,
            points_per_block,
            shared_bytes: 0,
        };
        for ok in [b(256, 1), b(256, 8), b(256, 4), b(256, 256)] {
            assert!(ok.check().is_ok(), "{ok:?}");
        }
        for bad in [b(256, 0), b(256, 3), b(0, 1), b(2048, 1)] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    fn env(pairs: &[(&str, i64)]) -> Bindings {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn slots_are_max_of_sizes_rounded_to_64() {
        let plan = Plan {
            symbols: vec!["seq".into()],
            slots: vec![
                vec![
                    SizeExpr::new(4, vec![Dim::sym("seq")]),
                    SizeExpr::new(2, vec![Dim::known(3)]),
                ],
                vec![SizeExpr::new(4, vec![Dim::known(16)])],
                vec![],
            ],
            launches: vec![],
        };
        let layout = plan.arena_layout(&env(&[("seq", 5)])).unwrap();
        assert_eq!(layout.sizes, vec![20, 64, 0]);
        assert_eq!(layout.offsets, vec![0, 64, 128]);
        assert_eq!(layout.total, 128);
    }

    #[test]
    fn layouts_with_room_keep_offsets_while_symbols_grow_a_little() {
        assert_eq!(
            [1, 16, 17, 18, 20, 100, 128, 129, 513].map(with_room),
            [1, 16, 18, 18, 20, 104, 128, 144, 576]
        );
        let plan = |grows_down: bool| Plan {
            symbols: vec!["past".into()],
            slots: vec![
                vec![SizeExpr::new(4, vec![Dim::sym("past").scale(64)])],
                vec![SizeExpr::new(
                    4,
                    vec![if grows_down {
                        Dim::known(10_000).sub(&Dim::sym("past"))
                    } else {
                        Dim::known(8)
                    }],
                )],
            ],
            launches: vec![],
        };
        let grows = plan(false);
        let at = |p: &Plan, past| p.arena_layout_with_room(&env(&[("past", past)])).unwrap();
        assert_eq!(at(&grows, 100).offsets, at(&grows, 104).offsets);
        assert_eq!(at(&grows, 100).offsets[1], 104 * 256);
        // A slot that would shrink under the rounded value: the exact layout.
        let shrinks = plan(true);
        assert_eq!(
            at(&shrinks, 100),
            shrinks.arena_layout(&env(&[("past", 100)])).unwrap()
        );
    }

    #[test]
    fn bad_sizes_are_errors() {
        let e = SizeExpr::new(4, vec![Dim::sym("seq")]);
        assert!(e.eval(&env(&[])).unwrap_err().contains("seq"));
        assert!(e
            .eval(&env(&[("seq", -1)]))
            .unwrap_err()
            .contains("negative"));
        let big = SizeExpr::new(u64::MAX, vec![Dim::known(2)]);
        assert!(big.eval(&env(&[])).unwrap_err().contains("overflow"));
        assert_eq!(grid_points(&[], &env(&[])), Ok(1));
        let tiled = GridDim {
            dim: Dim::sym("seq"),
            ceil_div: 4,
        };
        assert_eq!(
            grid_points(&[tiled.clone(), Dim::known(3).into()], &env(&[("seq", 9)])),
            Ok(9)
        );
        assert!(GridDim {
            ceil_div: 0,
            ..tiled
        }
        .eval(&env(&[("seq", 1)]))
        .unwrap_err()
        .contains("by zero"));
        let huge = Dim {
            constant: 1,
            terms: vec![("seq".into(), i64::MAX)],
        };
        assert!(eval_extent(&huge, &env(&[("seq", 3)]))
            .unwrap_err()
            .contains("overflows"));
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn guards_pick_a_launch_by_a_symbol() {
        let launch = |above| Launch {
            kernel: "k".into(),
            writes: vec![],
            offsets: vec![],
            args: vec![],
            grid: vec![],
            min_chunk: 1,
            gpu: None,
            guard: Some(Guard {
                dim: Dim::sym("seq"),
                max: 4,
                above,
            }),
        };
        let env = |n: i64| Bindings::from([("seq".to_string(), n)]);
        for n in [1, 4] {
            assert_eq!(launch(false).runs(&env(n)), Ok(true));
            assert_eq!(launch(true).runs(&env(n)), Ok(false));
        }
        assert_eq!(launch(false).runs(&env(5)), Ok(false));
        assert_eq!(launch(true).runs(&env(128)), Ok(true));
        assert!(
            launch(true).runs(&Bindings::new()).is_err(),
            "unbound symbol"
        );
    }
}
