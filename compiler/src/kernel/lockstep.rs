//! A lockstep interpreter of kernels with explicit threads (`Expr::Thread`), for tests on
//! machines without a GPU: every thread of a block runs each statement before any runs the
//! next, as the barriers of `Stmt::Await` make them agree to, with a mask of the threads an
//! `If` leaves running. A `Stmt::Copy` lands only at the `Await` that must wait for it, so a
//! pipeline that reads a stage too early reads stale values. `Expr::Mma` is computed for a
//! warp at once from the layouts of `kernel::matrix`, `Stmt::GroupMma` for a warpgroup
//! through `kernel::warpgroup`'s address map, so a lowering's tiles, copies and lane layouts
//! are checked end to end. It evaluates scalar and lane-wise arithmetic (transcendental
//! ops with the host's `f32` functions, not `kernel::math`'s polynomials), and reports
//! anything else as an error.

use super::e::i;
use super::matrix::MatrixOp;
use super::warpgroup::{GroupOp, GroupProduct, GROUP_K, GROUP_M, GROUP_THREADS};
use super::{BOp, Buf, Cmp, Elem, Expr, Kernel, Lit, RedOp, Stmt, UOp, VarId};
use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Val {
    I(i64),
    F(f32),
    B(bool),
    V(Vec<f32>),
}

impl Val {
    fn int(&self) -> Result<i64, String> {
        match self {
            Val::I(v) => Ok(*v),
            other => Err(format!("{other:?} where an integer was expected")),
        }
    }

    fn floats(&self) -> Result<Vec<f32>, String> {
        match self {
            Val::F(v) => Ok(vec![*v]),
            Val::V(v) => Ok(v.clone()),
            other => Err(format!("{other:?} where floats were expected")),
        }
    }
}

/// One block of threads running a kernel's body for one grid point.
struct Block<'k> {
    grid: Vec<i64>,
    /// The plan's symbol values, for `Expr::Dim`.
    dims: &'k [i64],
    threads: usize,
    warp: usize,
    env: Vec<HashMap<VarId, Val>>,
    args: &'k mut [Vec<f32>],
    locals: Vec<Vec<f32>>,
    /// The run's timing of background work (see [`run`]): copies land when issued and
    /// warpgroup products read their tiles when retired (`true`), or copies land at the
    /// `Await` that must wait for them and products read when issued (`false`).
    early: bool,
    /// Per thread, its copies since its last `Await`, then its closed batches still in
    /// flight (oldest first).
    open: Vec<Vec<Landing>>,
    in_flight: Vec<std::collections::VecDeque<Vec<Landing>>>,
    /// Per warpgroup, its batches of `Stmt::GroupMma` not yet retired by a `GroupWait`.
    group_batches: Vec<std::collections::VecDeque<Vec<Issued>>>,
}

/// A warpgroup instruction as issued: its tiles as (local, first element).
struct Issued {
    op: GroupOp,
    acc: VarId,
    a: (Buf, i64),
    b: (Buf, i64),
}

/// A copy's values and where they land: (local, index, values).
type Landing = (usize, usize, Vec<f32>);

/// Runs `kernel` (explicit threads, `threads` a block) over the grid points `points` (each a
/// list of grid indices), buffers as f32 values (halves already rounded) per argument.
///
/// Background work runs at both ends of what a GPU may do: once with each copy landing
/// the latest it may (at the `Await` that waits for it) and warpgroup products reading
/// their tiles the earliest (when issued), once the other way round. A kernel that reads a
/// stage before its copies are waited for reads stale values in the first; one that
/// overwrites a stage products may still be reading changes their result in the second;
/// either way the two runs differ, which is an error.
pub fn run(
    kernel: &Kernel,
    (threads, warp): (usize, usize),
    dims: &[i64],
    args: &mut [Vec<f32>],
    points: &[Vec<i64>],
) -> Result<(), String> {
    let mut late = args.to_vec();
    run_timed(kernel, (threads, warp), dims, &mut late, points, false)?;
    run_timed(kernel, (threads, warp), dims, args, points, true)?;
    let same = late
        .iter()
        .zip(args.iter())
        .all(|(x, y)| x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()));
    if !same {
        return Err(
            "results depend on when background copies and products run (a race \
                    between a stage's copies and its readers)"
                .into(),
        );
    }
    Ok(())
}

fn run_timed(
    kernel: &Kernel,
    (threads, warp): (usize, usize),
    dims: &[i64],
    args: &mut [Vec<f32>],
    points: &[Vec<i64>],
    early: bool,
) -> Result<(), String> {
    for p in points {
        let mut b = Block {
            early,
            grid: p.clone(),
            dims,
            threads,
            warp,
            env: vec![HashMap::new(); threads],
            args: &mut *args,
            locals: kernel
                .locals
                .iter()
                .map(|l| vec![0.0; l.len as usize])
                .collect(),
            open: vec![Vec::new(); threads],
            in_flight: vec![Default::default(); threads],
            group_batches: (0..threads.div_ceil(GROUP_THREADS as usize))
                .map(|_| Default::default())
                .collect(),
        };
        b.stmts(&kernel.body, &vec![true; threads])?;
        if b.group_batches.iter().any(|q| !q.is_empty()) {
            return Err("warpgroup instructions never waited for".into());
        }
    }
    Ok(())
}

impl Block<'_> {
    fn stmts(&mut self, body: &[Stmt], active: &[bool]) -> Result<(), String> {
        for s in body {
            self.stmt(s, active)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt, active: &[bool]) -> Result<(), String> {
        let live: Vec<usize> = (0..self.threads).filter(|&t| active[t]).collect();
        match s {
            Stmt::Let { var, value }
            | Stmt::Decl { var, init: value }
            | Stmt::Assign { var, value } => {
                let vals = match value {
                    Expr::Mma(op, a, b, c) => self.mma(*op, a, b, c, &live)?,
                    Expr::LoadMatrix { buf, index, count } => {
                        self.load_matrix(*buf, index, *count, &live)?
                    }
                    _ => live
                        .iter()
                        .map(|&t| self.eval(value, t))
                        .collect::<Result<_, _>>()?,
                };
                for (&t, v) in live.iter().zip(vals) {
                    self.env[t].insert(*var, v);
                }
            }
            Stmt::Store { buf, index, value } => {
                for &t in &live {
                    let at = self.eval(index, t)?.int()? as usize;
                    let v = self.eval(value, t)?.floats()?;
                    let dst = match buf {
                        Buf::Arg(a) => &mut self.args[*a as usize],
                        Buf::Local(l) => &mut self.locals[*l as usize],
                    };
                    let n = dst.len();
                    dst.get_mut(at..at + v.len())
                        .ok_or_else(|| format!("store at {at} past {n}"))?
                        .copy_from_slice(&v);
                }
            }
            Stmt::Copy {
                dst: Buf::Local(l),
                dst_index,
                src: Buf::Arg(a),
                src_index,
                lanes,
            } => {
                for &t in &live {
                    let to = self.eval(dst_index, t)?.int()? as usize;
                    let from = self.eval(src_index, t)?.int()? as usize;
                    let n = *lanes as usize;
                    let src = self.args[*a as usize]
                        .get(from..from + n)
                        .ok_or_else(|| format!("copy from {from} past the buffer"))?
                        .to_vec();
                    let len = self.locals[*l as usize].len();
                    if to + n > len {
                        return Err(format!("copy to {to} past {len}"));
                    }
                    if self.early {
                        self.locals[*l as usize][to..to + n].copy_from_slice(&src);
                    } else {
                        self.open[t].push((*l as usize, to, src));
                    }
                }
            }
            Stmt::Await { in_flight } => {
                for &t in &live {
                    let batch = std::mem::take(&mut self.open[t]);
                    self.in_flight[t].push_back(batch);
                    while self.in_flight[t].len() > *in_flight as usize {
                        let landed = self.in_flight[t].pop_front().unwrap_or_default();
                        for (l, to, values) in landed {
                            self.locals[l][to..to + values.len()].copy_from_slice(&values);
                        }
                    }
                }
            }
            Stmt::GroupMma { op, products } => self.issue_group(*op, products, &live)?,
            Stmt::GroupWait { pending, .. } => self.retire_groups(*pending as usize)?,
            Stmt::Loop {
                var, extent, body, ..
            } => {
                let first = *live.first().ok_or("a loop no thread reaches")?;
                let n = self.eval(extent, first)?.int()?;
                for it in 0..n {
                    for &t in &live {
                        self.env[t].insert(*var, Val::I(it));
                    }
                    self.stmts(body, active)?;
                }
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let mut yes = vec![false; self.threads];
                for &t in &live {
                    yes[t] = matches!(self.eval(cond, t)?, Val::B(true));
                }
                let no: Vec<bool> = (0..self.threads).map(|t| active[t] && !yes[t]).collect();
                self.stmts(then, &yes)?;
                self.stmts(otherwise, &no)?;
            }
            Stmt::Reduce {
                acc,
                op,
                var,
                extent,
                value,
                ..
            } => {
                for &t in &live {
                    let n = self.eval(extent, t)?.int()?;
                    let mut total = match op {
                        RedOp::Sum => 0.0f32,
                        RedOp::Max => f32::NEG_INFINITY,
                    };
                    for it in 0..n {
                        self.env[t].insert(*var, Val::I(it));
                        let x = self.eval(value, t)?.floats()?;
                        let [x] = x[..] else {
                            return Err(
                                "a vector reduction (vectorised away before codegen)".into()
                            );
                        };
                        total = match op {
                            RedOp::Sum => total + x,
                            RedOp::Max => total.max(x),
                        };
                    }
                    self.env[t].insert(*acc, Val::F(total));
                }
            }
            other => return Err(format!("the lockstep interpreter does not run {other:?}")),
        }
        Ok(())
    }

    /// `Mma` for every warp with a live thread (all its lanes must be live).
    /// `Expr::LoadMatrix` for every warp of `live` at once (see its doc).
    fn load_matrix(
        &self,
        buf: Buf,
        index: &Expr,
        count: u8,
        live: &[usize],
    ) -> Result<Vec<Val>, String> {
        let Buf::Local(l) = buf else {
            return Err("ldmatrix from a buffer that is not shared".into());
        };
        let src = &self.locals[l as usize];
        let mut out = Vec::with_capacity(live.len());
        for &t in live {
            let warp = t / self.warp;
            let lane = t % self.warp;
            let mut v = Vec::with_capacity(2 * count as usize);
            for j in 0..count as usize {
                let namer = warp * self.warp + 8 * j + lane / 4;
                if !live.contains(&namer) {
                    return Err("an ldmatrix some lanes of the warp skip".into());
                }
                let row = self.eval(index, namer)?.int()? as usize;
                if !row.is_multiple_of(8) {
                    return Err(format!("ldmatrix row at {row}, not 16-byte aligned"));
                }
                let at = row + 2 * (lane % 4);
                let pair = src
                    .get(at..at + 2)
                    .ok_or_else(|| format!("ldmatrix at {at} past {}", src.len()))?;
                v.extend_from_slice(pair);
            }
            out.push(Val::V(v));
        }
        Ok(out)
    }

    /// Issues a batch of warpgroup instructions for every warpgroup of the block: their
    /// tiles' indices are taken now (each the same for all threads of a group), their
    /// products now or, in the early-copies run, at the `GroupWait` that retires the batch
    /// (the latest a GPU may read the tiles).
    fn issue_group(
        &mut self,
        op: GroupOp,
        products: &[GroupProduct],
        live: &[usize],
    ) -> Result<(), String> {
        let group = GROUP_THREADS as usize;
        if live.len() != self.threads || !self.threads.is_multiple_of(group) {
            return Err("a warpgroup instruction some threads of the block skip".into());
        }
        for g in 0..self.threads / group {
            let threads: Vec<usize> = (g * group..(g + 1) * group).collect();
            let uniform = |this: &Self, e: &Expr| -> Result<i64, String> {
                let first = this.eval(e, threads[0])?.int()?;
                for &t in &threads {
                    if this.eval(e, t)?.int()? != first {
                        return Err(format!("warpgroup tile index {e} differs between threads"));
                    }
                }
                Ok(first)
            };
            let batch = products
                .iter()
                .map(|p| {
                    Ok(Issued {
                        op,
                        acc: p.acc,
                        a: (p.a, uniform(self, &p.a_index)?),
                        b: (p.b, uniform(self, &p.b_index)?),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            if self.early {
                self.group_batches[g].push_back(batch);
            } else {
                for issued in &batch {
                    self.group_product(g, issued)?;
                }
                self.group_batches[g].push_back(Vec::new());
            }
        }
        Ok(())
    }

    /// `Stmt::GroupWait`: retires each warpgroup's batches beyond `pending`, oldest first.
    fn retire_groups(&mut self, pending: usize) -> Result<(), String> {
        for g in 0..self.group_batches.len() {
            while self.group_batches[g].len() > pending {
                let batch = self.group_batches[g].pop_front().unwrap_or_default();
                for issued in batch {
                    self.group_product(g, &issued)?;
                }
            }
        }
        Ok(())
    }

    /// One instruction of warpgroup `g`, reading A and B through the swizzled address map
    /// of `warpgroup::GroupOp::element`.
    fn group_product(&mut self, g: usize, p: &Issued) -> Result<(), String> {
        let op = p.op;
        let round = |x: f32| match op.input {
            kiln_ir::DType::BF16 => half::bf16::from_f32(x).to_f32(),
            _ => half::f16::from_f32(x).to_f32(),
        };
        let tile =
            |this: &Self, (buf, at): (Buf, i64), rows: i64| -> Result<Vec<Vec<f64>>, String> {
                let Buf::Local(l) = buf else {
                    return Err("a warpgroup operand outside shared memory".into());
                };
                let local = &this.locals[l as usize];
                (0..rows)
                    .map(|r| {
                        (0..GROUP_K)
                            .map(|k| {
                                let e = GroupOp::element(at, r, k) as usize;
                                local.get(e).map(|&x| round(x) as f64).ok_or_else(|| {
                                    format!("warpgroup read at {e} past {}", local.len())
                                })
                            })
                            .collect()
                    })
                    .collect()
            };
        let a = tile(self, p.a, GROUP_M)?;
        let b = tile(self, p.b, op.n as i64)?;
        let group = GROUP_THREADS as usize;
        for t_in in 0..group {
            let t = g * group + t_in;
            let mut c = self.env[t]
                .get(&p.acc)
                .ok_or_else(|| format!("warpgroup accumulator v{} unset", p.acc))?
                .floats()?;
            if c.len() != op.acc_lanes() as usize {
                return Err(format!("{} accumulators for m64n{}", c.len(), op.n));
            }
            for (e, x) in c.iter_mut().enumerate() {
                let (r, col) = op.c_elem(i(t_in as i64), e as i64);
                let (r, col) = (constant(&r)? as usize, constant(&col)? as usize);
                let dot: f64 = (0..GROUP_K as usize).map(|k| a[r][k] * b[col][k]).sum();
                *x = (*x as f64 + dot) as f32;
            }
            self.env[t].insert(p.acc, Val::V(c));
        }
        Ok(())
    }

    fn mma(
        &self,
        op: MatrixOp,
        a: &Expr,
        b: &Expr,
        c: &Expr,
        live: &[usize],
    ) -> Result<Vec<Val>, String> {
        let unit = op.unit;
        let (m, n, k) = unit.shape();
        let (a_len, b_len, c_len) = unit.fragment_lanes();
        let round = |x: f32| half::f16::from_f32(x).to_f32();
        let mut out = HashMap::new();
        for warp in live
            .iter()
            .map(|&t| t / self.warp)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let lanes: Vec<usize> = (warp * self.warp..(warp + 1) * self.warp).collect();
            if !lanes.iter().all(|t| live.contains(t)) {
                return Err("a matrix instruction some lanes of the warp skip".into());
            }
            let mut ta = vec![vec![0.0f64; k as usize]; m as usize];
            let mut tb = vec![vec![0.0f64; k as usize]; n as usize];
            let mut tc = vec![vec![0.0f64; n as usize]; m as usize];
            for (lane, &t) in lanes.iter().enumerate() {
                let l = lane as i64;
                let group = constant(&unit.k_group(i(l)))? * unit.k_per_lane();
                let av = self.eval(a, t)?.floats()?;
                let bv = self.eval(b, t)?.floats()?;
                let cv = self.eval(c, t)?.floats()?;
                for e in 0..a_len as i64 {
                    let (off, local) = unit.a_elem(e);
                    let row = constant(&unit.a_row(i(l)))? + off;
                    ta[row as usize][(group + local) as usize] = round(av[e as usize]) as f64;
                }
                for e in 0..b_len as i64 {
                    let col = constant(&unit.b_col(i(l)))?;
                    tb[col as usize][(group + unit.b_elem(e)) as usize] =
                        round(bv[e as usize]) as f64;
                }
                for e in 0..c_len as i64 {
                    let (r, col) = unit.c_elem(i(l), e);
                    tc[constant(&r)? as usize][constant(&col)? as usize] = cv[e as usize] as f64;
                }
            }
            for (lane, &t) in lanes.iter().enumerate() {
                let l = lane as i64;
                let mut d = Vec::with_capacity(c_len as usize);
                for e in 0..c_len as i64 {
                    let (r, col) = unit.c_elem(i(l), e);
                    let (r, col) = (constant(&r)? as usize, constant(&col)? as usize);
                    let dot: f64 = (0..k as usize).map(|kk| ta[r][kk] * tb[col][kk]).sum();
                    d.push((tc[r][col] + dot) as f32);
                }
                out.insert(t, Val::V(d));
            }
        }
        live.iter()
            .map(|t| {
                out.remove(t)
                    .ok_or_else(|| "a lane without a result".to_string())
            })
            .collect()
    }

    fn eval(&self, e: &Expr, t: usize) -> Result<Val, String> {
        self.eval_in(&mut Vec::new(), e, t)
    }

    /// `e` for thread `t`, with `scope` the bindings of the `Expr::Let`s around it.
    fn eval_in(&self, scope: &mut Vec<(VarId, Val)>, e: &Expr, t: usize) -> Result<Val, String> {
        Ok(match e {
            Expr::Lit(Lit::I64(v)) => Val::I(*v),
            Expr::Lit(Lit::I32(v)) => Val::I(*v as i64),
            Expr::Lit(Lit::F32(v)) => Val::F(*v),
            Expr::Lit(Lit::Bool(v)) => Val::B(*v),
            Expr::Var(v) => match scope.iter().rev().find(|(s, _)| s == v) {
                Some((_, x)) => x.clone(),
                None => self.env[t]
                    .get(v)
                    .cloned()
                    .ok_or_else(|| format!("v{v} read before it is set"))?,
            },
            Expr::GridIdx(d) => Val::I(self.grid[*d as usize]),
            Expr::Thread => Val::I(t as i64),
            Expr::Lane => Val::I((t % self.warp) as i64),
            Expr::Load { buf, index, lanes } => {
                let at = self.eval_in(scope, index, t)?.int()? as usize;
                let src = match buf {
                    Buf::Arg(a) => &self.args[*a as usize],
                    Buf::Local(l) => &self.locals[*l as usize],
                };
                let v = src
                    .get(at..at + *lanes as usize)
                    .ok_or_else(|| format!("load at {at} past {}", src.len()))?;
                if *lanes == 1 {
                    Val::F(v[0])
                } else {
                    Val::V(v.to_vec())
                }
            }
            Expr::Splat { value, lanes } => {
                let x = self.eval_in(scope, value, t)?.floats()?[0];
                Val::V(vec![x; *lanes as usize])
            }
            Expr::Lanes(xs) => Val::V(
                xs.iter()
                    .map(|x| Ok(self.eval_in(scope, x, t)?.floats()?[0]))
                    .collect::<Result<_, String>>()?,
            ),
            Expr::Extract { vector, lane } => {
                Val::F(self.eval_in(scope, vector, t)?.floats()?[*lane as usize])
            }
            Expr::Dim(d) => Val::I(
                *self
                    .dims
                    .get(*d as usize)
                    .ok_or_else(|| format!("symbol {d} without a value"))?,
            ),
            Expr::Cmp(c, a, b) => match (self.eval_in(scope, a, t)?, self.eval_in(scope, b, t)?) {
                (Val::I(a), Val::I(b)) => Val::B(compare(*c, a, b)),
                (a, b) => Val::B(compare(*c, a.floats()?[0], b.floats()?[0])),
            },
            Expr::Select(c, a, b) => match self.eval_in(scope, c, t)? {
                Val::B(true) => self.eval_in(scope, a, t)?,
                Val::B(false) => self.eval_in(scope, b, t)?,
                other => return Err(format!("{other:?} as a condition")),
            },
            Expr::Binary(BOp::And, a, b) => {
                match (self.eval_in(scope, a, t)?, self.eval_in(scope, b, t)?) {
                    (Val::B(x), Val::B(y)) => Val::B(x && y),
                    (x, y) => Val::I(x.int()? & y.int()?),
                }
            }
            Expr::Binary(op, a, b) => {
                match (self.eval_in(scope, a, t)?, self.eval_in(scope, b, t)?) {
                    (Val::I(a), Val::I(b)) => Val::I(int_op(*op, a, b)?),
                    (a, b) => lanes(&[a, b], |x| float_op(*op, x[0], x[1]))?,
                }
            }
            Expr::Fma(a, b, c) => {
                let xs = [
                    self.eval_in(scope, a, t)?,
                    self.eval_in(scope, b, t)?,
                    self.eval_in(scope, c, t)?,
                ];
                lanes(&xs, |x| Ok(x[0].mul_add(x[1], x[2])))?
            }
            Expr::Unary(UOp::HalfBits, a) => {
                let bits = self.eval_in(scope, a, t)?.int()?;
                Val::F(half::f16::from_bits(bits as u16).to_f32())
            }
            Expr::Unary(op, a) => {
                let x = self.eval_in(scope, a, t)?;
                lanes(std::slice::from_ref(&x), |x| unary(*op, x[0]))?
            }
            Expr::Cast(Elem::F32, a) => match self.eval_in(scope, a, t)? {
                Val::I(v) => Val::F(v as f32),
                other => other,
            },
            Expr::Cast(Elem::I64 | Elem::I32, a) => match self.eval_in(scope, a, t)? {
                Val::F(v) => Val::I(v as i64),
                other => other,
            },
            Expr::Let { var, value, body } => {
                let v = self.eval_in(scope, value, t)?;
                scope.push((*var, v));
                let result = self.eval_in(scope, body, t);
                scope.pop();
                result?
            }
            other => {
                return Err(format!(
                    "the lockstep interpreter does not evaluate {other}"
                ))
            }
        })
    }
}

/// `f` of `xs` lane by lane, scalars broadcast: a scalar result where every operand is one.
fn lanes(xs: &[Val], f: impl Fn(&[f32]) -> Result<f32, String>) -> Result<Val, String> {
    let vs = xs.iter().map(Val::floats).collect::<Result<Vec<_>, _>>()?;
    let width = vs.iter().map(Vec::len).max().unwrap_or(1);
    let out = (0..width)
        .map(|l| {
            let args: Vec<f32> = vs
                .iter()
                .map(|v| v[if v.len() == 1 { 0 } else { l }])
                .collect();
            f(&args)
        })
        .collect::<Result<Vec<f32>, String>>()?;
    Ok(if xs.iter().all(|x| !matches!(x, Val::V(_))) {
        Val::F(out[0])
    } else {
        Val::V(out)
    })
}

fn compare<T: PartialOrd>(c: Cmp, a: T, b: T) -> bool {
    match c {
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
    }
}

fn float_op(op: BOp, a: f32, b: f32) -> Result<f32, String> {
    Ok(match op {
        BOp::Add => a + b,
        BOp::Sub => a - b,
        BOp::Mul => a * b,
        BOp::Div => a / b,
        BOp::Max => a.max(b),
        BOp::Min => a.min(b),
        other => return Err(format!("{other:?} on floats")),
    })
}

fn unary(op: UOp, x: f32) -> Result<f32, String> {
    Ok(match op {
        UOp::Neg => -x,
        UOp::Abs => x.abs(),
        UOp::Sqrt => x.sqrt(),
        UOp::Exp => x.exp(),
        UOp::Log => x.ln(),
        UOp::Tanh => x.tanh(),
        UOp::Sin => x.sin(),
        UOp::Cos => x.cos(),
        UOp::HalfBits => return Err("half bits of a float".into()),
        UOp::Erf => return Err("erf (no host function)".into()),
    })
}

/// `a op b` on integers.
pub(crate) fn int_op(op: BOp, a: i64, b: i64) -> Result<i64, String> {
    Ok(match op {
        BOp::Add => a + b,
        BOp::Sub => a - b,
        BOp::Mul => a * b,
        BOp::Div => a / b,
        BOp::Rem => a % b,
        BOp::Min => a.min(b),
        BOp::Max => a.max(b),
        BOp::Xor => a ^ b,
        BOp::Or => a | b,
        BOp::And => a & b,
        BOp::Shl => a << b,
        BOp::Shr => ((a as u64) >> b) as i64,
    })
}

/// A layout's expression for a given lane: literals and integer arithmetic only.
pub(crate) fn constant(e: &Expr) -> Result<i64, String> {
    match e {
        Expr::Lit(Lit::I64(v)) => Ok(*v),
        Expr::Binary(op, a, b) => int_op(*op, constant(a)?, constant(b)?),
        other => Err(format!("{other} in a layout")),
    }
}
