//! A plan's launch sizes with every symbol resolved to its place in the dims array, once
//! per executor. A GPU executor sizes each launch of a decode step every run (its guard,
//! its grid's points and blocks); through [`Launch::on_device`] each dim looks its symbols
//! up by name, and a 1B llama's plan of some five hundred launches then spent about 30 us
//! of a step's host time on it (one H100's host, 2026-12-07). Here the same arithmetic
//! reads the values by position; `Launch::on_device` stays the definition, and the tests
//! hold the two to the same answers.

use crate::plan::{block_count, DeviceLaunch, GpuBlocks, Plan};
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
        let overflow = || format!("dim {} overflows", self.text);
        let mut v = self.constant;
        for &(i, c) in &self.terms {
            v = c
                .checked_mul(dims[i])
                .and_then(|t| v.checked_add(t))
                .ok_or_else(overflow)?;
        }
        u64::try_from(v).map_err(|_| format!("dim {} evaluates to negative {v}", self.text))
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
    /// symbol values `dims`, or with `roomy` (the values with room, `plan::with_room`)
    /// [`Launch::on_device_with_room`](crate::plan::Launch::on_device_with_room).
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
        let blocks = l.blocks.ok_or_else(|| at("no GPU block shape".into()))?;
        blocks.check().map_err(at)?;
        let points = grid_points(&l.grid, dims).map_err(at)?;
        if points == 0 {
            return Ok(None);
        }
        if i64::try_from(points).is_err() {
            return Err(at("too many grid points".into()));
        }
        let points = match roomy.map(|r| grid_points(&l.grid, r)) {
            Some(Ok(p)) if p > points && i64::try_from(p).is_ok() => p,
            _ => points,
        };
        Ok(Some(DeviceLaunch {
            blocks,
            points,
            block_count: block_count(points, blocks, max_blocks),
        }))
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
    use crate::plan::{with_room_bindings, GridDim, Guard, Launch};
    use kiln_ir::Bindings;

    fn launch(grid: Vec<GridDim>, guard: Option<Guard>, points_per_block: u32) -> Launch {
        Launch {
            kernel: "k".into(),
            args: vec![],
            writes: vec![],
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
            let roomy = with_room_bindings(&env);
            let dims = plan.dims_array(&env).unwrap();
            let roomy_dims = plan.dims_array(&roomy).unwrap();
            for (i, l) in plan.launches.iter().enumerate() {
                let want = l.on_device(&env, 1 << 20);
                assert_eq!(
                    sizes.on_device(i, &dims, None, 1 << 20),
                    want,
                    "{i} {env:?}"
                );
                let want = l.on_device_with_room(&env, &roomy, 1 << 20);
                let got = sizes.on_device(i, &dims, Some(&roomy_dims), 1 << 20);
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
}
