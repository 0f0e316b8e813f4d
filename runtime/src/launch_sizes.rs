//! A plan's launch sizes with every symbol resolved to its place in the dims array, once
//! per executor. A GPU executor sizes each launch of a decode step every run (its guard,
//! its grid's points and blocks); through [`Launch::on_device`] each dim looks its symbols
//! up by name, and a 1B llama's plan of some five hundred launches then spent about 30 us
//! of a step's host time on it (one H100's host, 2026-12-07). Here the dims read their
//! values by position; both size through the same rule (`plan::device_launch`), and the
//! tests hold the two to the same answers.

use crate::plan::{affine_extent, device_launch, DeviceLaunch, GpuBlocks, Plan};
use kiln_ir::Dim;

/// `constant + sum(coeff * dims[index])`.
#[derive(Clone, Debug)]
struct IndexedDim {
    constant: i64,
    terms: Vec<(usize, i64)>,
    /// The dim as written, for messages.
    text: String,
}

impl IndexedDim {
    fn new(dim: &Dim, symbols: &[String]) -> Result<IndexedDim, String> {
        let terms = dim
            .terms
            .iter()
            .map(|(s, c)| {
                let at = symbols.iter().position(|x| x == s);
                at.map(|i| (i, *c))
                    .ok_or_else(|| format!("symbol `{s}` is not bound"))
            })
            .collect::<Result<_, _>>()?;
        Ok(IndexedDim {
            constant: dim.constant,
            terms,
            text: dim.to_string(),
        })
    }

    /// The dim's value as a non-negative extent, as `plan::eval_extent` computes it.
    fn extent(&self, dims: &[i64]) -> Result<u64, String> {
        let values = self.terms.iter().map(|&(i, c)| Ok((dims[i], c)));
        affine_extent(self.constant, values, &self.text)
    }
}

#[derive(Clone, Debug)]
struct Sizing {
    kernel: String,
    /// `dim <= max` must hold, or must not with `above`.
    guard: Option<(IndexedDim, i64, bool)>,
    grid: Vec<(IndexedDim, u64)>,
    blocks: Option<GpuBlocks>,
}

/// Every launch of one plan, ready to size against dims arrays (`Plan::dims_array`).
#[derive(Clone, Debug)]
pub struct LaunchSizes {
    launches: Vec<Sizing>,
    symbols: usize,
}

impl LaunchSizes {
    /// Fails when a launch names a symbol the plan does not list (a malformed manifest).
    pub fn new(plan: &Plan) -> Result<LaunchSizes, String> {
        let s = &plan.symbols;
        let launches = plan
            .launches
            .iter()
            .map(|l| {
                let at = |m: String| format!("launch {}: {m}", l.kernel);
                let guard = match &l.guard {
                    Some(g) => Some((IndexedDim::new(&g.dim, s).map_err(at)?, g.max, g.above)),
                    None => None,
                };
                let grid = (l.grid.iter())
                    .map(|g| Ok((IndexedDim::new(&g.dim, s).map_err(at)?, g.ceil_div)))
                    .collect::<Result<_, String>>()?;
                Ok(Sizing {
                    kernel: l.kernel.clone(),
                    guard,
                    grid,
                    blocks: l.gpu,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(LaunchSizes {
            launches,
            symbols: s.len(),
        })
    }

    /// Whether these are `plan`'s sizes (the same launches over the same symbols).
    pub fn fits(&self, plan: &Plan) -> bool {
        self.launches.len() == plan.launches.len() && self.symbols == plan.symbols.len()
    }

    /// [`Launch::on_device`](crate::plan::Launch::on_device) of launch `i` under the
    /// symbol values `dims`; with `roomy` (the values with room, `plan::with_room`) as
    /// many blocks as the grid needs under those, where they are more (for code whose
    /// kernels count their own points, `Variant::counts_own_points`: the extra blocks find
    /// no points, and the launch stays the same while the symbols grow within their room).
    pub fn on_device(
        &self,
        i: usize,
        dims: &[i64],
        roomy: Option<&[i64]>,
        max_blocks: u64,
    ) -> Result<Option<DeviceLaunch>, String> {
        let l = &self.launches[i];
        let at = |m: String| format!("launch {}: {m}", l.kernel);
        if dims.len() != self.symbols || roomy.is_some_and(|r| r.len() != self.symbols) {
            return Err(at("the symbol values do not match the plan".into()));
        }
        if let Some((dim, max, above)) = &l.guard {
            let v = dim.extent(dims).map_err(at)?;
            let at_most = i64::try_from(v).is_ok_and(|v| v <= *max);
            if at_most == *above {
                return Ok(None);
            }
        }
        let points = || grid_points(&l.grid, dims);
        let roomy = roomy.map(|r| move || grid_points(&l.grid, r));
        device_launch(l.blocks, points, roomy, max_blocks).map_err(at)
    }
}

fn grid_points(grid: &[(IndexedDim, u64)], dims: &[i64]) -> Result<u64, String> {
    grid.iter().try_fold(1u64, |acc, (dim, ceil_div)| {
        if *ceil_div == 0 {
            return Err(format!("grid axis {} divides by zero", dim.text));
        }
        let n = dim.extent(dims)?.div_ceil(*ceil_div);
        acc.checked_mul(n)
            .ok_or_else(|| "grid size overflows u64".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{grid_points, with_room, GridDim, Guard, Launch};
    use kiln_ir::Bindings;

    fn launch(grid: Vec<GridDim>, guard: Option<Guard>, points_per_block: u32) -> Launch {
        Launch {
            kernel: "k".into(),
            args: vec![],
            writes: vec![],
            offsets: vec![],
            grid,
            min_chunk: 1,
            gpu: Some(GpuBlocks {
                threads: 128,
                points_per_block,
                shared_bytes: 0,
            }),
            guard,
        }
    }

    /// Over a range of values, with and without room, every launch sizes as
    /// `Launch::on_device` sizes it: the same guards, points, blocks and errors.
    #[test]
    fn sizes_agree_with_the_launches_own() {
        let (past, seq) = (Dim::sym("past"), Dim::sym("seq"));
        let kv = past.add(&seq);
        let grid = |d: &Dim, c: u64| GridDim {
            dim: d.clone(),
            ceil_div: c,
        };
        let guard = |above| {
            Some(Guard {
                dim: seq.clone(),
                max: 1,
                above,
            })
        };
        let plan = Plan {
            symbols: vec!["past".into(), "picked".into(), "seq".into()],
            slots: vec![],
            launches: vec![
                launch(vec![grid(&seq, 1), grid(&Dim::known(768), 1)], None, 1),
                launch(
                    vec![grid(&Dim::known(12), 1), grid(&kv, 4)],
                    guard(false),
                    1,
                ),
                launch(vec![grid(&kv, 1), grid(&seq, 128)], guard(true), 128),
                launch(vec![grid(&seq.add(&Dim::known(-3)), 1)], None, 1),
                launch(vec![grid(&Dim::known(5), 0)], None, 1),
            ],
        };
        let sizes = LaunchSizes::new(&plan).unwrap();
        assert!(sizes.fits(&plan));
        for (p, s) in [
            (0, 1),
            (1, 1),
            (17, 1),
            (63, 1),
            (64, 1),
            (65, 1),
            (200, 1),
            (0, 9),
        ] {
            let env: Bindings = [("past", p), ("picked", 1), ("seq", s)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let dims = plan.dims_array(&env).unwrap();
            let roomy: Vec<i64> = dims.iter().map(|&v| with_room(v)).collect();
            for (i, l) in plan.launches.iter().enumerate() {
                let want = l.on_device(&env, 1 << 20);
                assert_eq!(
                    sizes.on_device(i, &dims, None, 1 << 20),
                    want,
                    "{i} {env:?}"
                );
                // With room: the same launch, with blocks for the grid under the values
                // with room where that grid is larger.
                let room_env: Bindings = env
                    .iter()
                    .map(|(k, &v)| (k.clone(), with_room(v)))
                    .collect();
                let want = want.map(|o| {
                    o.map(|w| match grid_points(&l.grid, &room_env) {
                        Ok(p) if p > w.points => DeviceLaunch {
                            points: p,
                            block_count: p.div_ceil(w.blocks.points_per_block as u64) as u32,
                            ..w
                        },
                        _ => w,
                    })
                });
                let got = sizes.on_device(i, &dims, Some(&roomy), 1 << 20);
                assert_eq!(got, want, "{i} {env:?} with room");
            }
        }
        let mut unknown = plan.clone();
        unknown.symbols.pop();
        assert!(LaunchSizes::new(&unknown)
            .unwrap_err()
            .contains("symbol `seq` is not bound"));
        assert!(sizes.on_device(0, &[1, 1], None, 8).is_err());
    }

    /// With room, a launch keeps its blocks while its symbol grows inside the room (the
    /// guard still reads the exact value), and never gets fewer than the exact grid needs.
    #[test]
    fn launches_with_room_keep_their_blocks_while_the_symbol_grows() {
        let grid = vec![GridDim {
            dim: Dim::sym("past").add(&Dim::known(1)),
            ceil_div: 4,
        }];
        let guard = Some(Guard {
            dim: Dim::sym("past"),
            max: 100,
            above: false,
        });
        let plan = Plan {
            symbols: vec!["past".into()],
            slots: vec![],
            launches: vec![launch(grid, guard, 1)],
        };
        let sizes = LaunchSizes::new(&plan).unwrap();
        let sized = |past: i64| {
            let roomy = [with_room(past)];
            sizes.on_device(0, &[past], Some(&roomy), 1 << 20).unwrap()
        };
        // past 65..=72 rounds up to 72: 73 positions, 19 blocks of 4.
        let at_65 = sized(65).unwrap();
        assert_eq!((at_65.points, at_65.block_count), (19, 19));
        for past in 66..=72 {
            assert_eq!(sized(past), Some(at_65), "past = {past}");
        }
        assert!(sized(73).unwrap().block_count > 19);
        // Below 16 the room is none: exact.
        assert_eq!(sized(9), sizes.on_device(0, &[9], None, 1 << 20).unwrap());
        // The guard reads the exact value (101 would round up past it, 100 does not).
        assert!(sized(100).is_some());
        assert_eq!(sized(101), None);
    }
}
