//! `Expr::LaneSums`: integer sums of several vectors' lanes at once. Prefill's byte dot
//! products make one per weight row and run, a token per vector (`lower::byte_tiles`).
//! Reduced one by one, each sum is a chain of shuffles and adds; together they are a tree
//! of pairwise horizontal adds within groups of four lanes (x86 `phaddd`, whose shuffles
//! LLVM matches), then one fold of the groups: four sums of eight lanes in five
//! instructions instead of twenty.

use super::expr::{Emitter, Fail, V};
use inkwell::values::{BasicValueEnum, VectorValue};

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// Lane `g * vs.len() + k` of the result is the sum of run `g` (of `groups` equal runs
    /// of lanes) of `vs[k]`.
    pub(super) fn lane_sums(&mut self, vs: &[V<'ctx>], groups: u32) -> Result<V<'ctx>, Fail> {
        let vectors = vs
            .iter()
            .map(|v| match v {
                BasicValueEnum::VectorValue(x) if x.get_type().get_element_type().is_int_type() => {
                    Ok(*x)
                }
                other => Err(Fail(format!(
                    "lane sums of {}: integer vectors wanted",
                    other.get_type()
                ))),
            })
            .collect::<Result<Vec<VectorValue<'ctx>>, Fail>>()?;
        let Some(&first) = vectors.first() else {
            return Err(Fail::msg("lane sums of no vectors"));
        };
        let lanes = first.get_type().get_size();
        if groups == 0
            || lanes % groups != 0
            || vectors.iter().any(|v| v.get_type() != first.get_type())
        {
            return Err(Fail(format!(
                "lane sums of {} vectors of {} in {groups} runs",
                vectors.len(),
                first.get_type()
            )));
        }
        let part = lanes / groups;
        if matches!(vectors.len(), 4 | 8) && part.is_multiple_of(4) {
            return Ok(self.sum_tree(vectors, groups)?.into());
        }
        // Any other shape: each run reduced on its own (one sum is a scalar, as one-lane
        // values are everywhere in the code generator).
        let n = vectors.len() as u32;
        if n * groups == 1 {
            return self.intrinsic(
                "llvm.vector.reduce.add",
                &[first.get_type().into()],
                &[first.into()],
            );
        }
        let out_t = first
            .get_type()
            .get_element_type()
            .into_int_type()
            .vec_type(n * groups);
        let mut out = out_t.get_poison();
        for (k, v) in vectors.iter().enumerate() {
            for g in 0..groups {
                let run = self.take(*v, *v, g * part..(g + 1) * part)?;
                let sum = self.intrinsic(
                    "llvm.vector.reduce.add",
                    &[run.get_type().into()],
                    &[run.into()],
                )?;
                let at = self
                    .ctx
                    .i32_type()
                    .const_int((g * n + k as u32) as u64, false);
                out = self.b.build_insert_element(out, sum, at, "ls")?;
            }
        }
        Ok(out.into())
    }

    /// Four or eight vectors whose runs are whole groups of four lanes.
    fn sum_tree(
        &mut self,
        mut level: Vec<VectorValue<'ctx>>,
        groups: u32,
    ) -> Result<VectorValue<'ctx>, Fail> {
        let lanes = level[0].get_type().get_size();
        // Two levels of pairwise adds leave, in each group of four lanes, that group's share
        // of four vectors' sums.
        for _ in 0..2 {
            level = level
                .chunks(2)
                .map(|p| self.pair_add(p[0], p[1]))
                .collect::<Result<_, _>>()?;
        }
        // Then each run's groups are added together, halving the runs until each is one
        // group.
        let mut folded = Vec::new();
        for mut v in level {
            let mut run = lanes / groups;
            while run > 4 {
                let half = run / 2;
                let lo: Vec<u32> = (0..groups).flat_map(|g| g * run..g * run + half).collect();
                let hi: Vec<u32> = lo.iter().map(|l| l + half).collect();
                let (a, b) = (self.shuffle(v, v, &lo)?, self.shuffle(v, v, &hi)?);
                v = self.b.build_int_add(a, b, "fold")?;
                run = half;
            }
            folded.push(v);
        }
        Ok(match folded[..] {
            [v] => v,
            // Run g of the result is group g of the first, then group g of the second.
            [a, b] => {
                let width = 4 * groups;
                let idx: Vec<u32> = (0..groups)
                    .flat_map(|g| (4 * g..4 * g + 4).chain(width + 4 * g..width + 4 * g + 4))
                    .collect();
                self.shuffle(a, b, &idx)?
            }
            _ => return Err(Fail::msg("lane sums of an unexpected count")),
        })
    }

    /// Within each group of four lanes: `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`.
    fn pair_add(
        &mut self,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, Fail> {
        let n = a.get_type().get_size();
        let pick = |odd: u32| -> Vec<u32> {
            (0..n / 4)
                .flat_map(|g| {
                    let base = 4 * g + odd;
                    [base, base + 2, n + base, n + base + 2]
                })
                .collect()
        };
        let even = self.shuffle(a, b, &pick(0))?;
        let odd = self.shuffle(a, b, &pick(1))?;
        Ok(self.b.build_int_add(even, odd, "hadd")?)
    }

    /// Lanes `range` of the concatenation of `a` and `b`.
    pub(super) fn take(
        &mut self,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
        range: std::ops::Range<u32>,
    ) -> Result<VectorValue<'ctx>, Fail> {
        let idx: Vec<u32> = range.collect();
        self.shuffle(a, b, &idx)
    }

    fn shuffle(
        &mut self,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
        idx: &[u32],
    ) -> Result<VectorValue<'ctx>, Fail> {
        let i32t = self.ctx.i32_type();
        let mask: Vec<_> = idx
            .iter()
            .map(|&k| i32t.const_int(k as u64, false))
            .collect();
        let mask = inkwell::types::VectorType::const_vector(&mask);
        Ok(self.b.build_shuffle_vector(a, b, mask, "ls")?)
    }
}
