//! The register-tiled matmul kernel (the general form, in the manner of BLIS; the module
//! doc of `matmul` says how it walks C, B's packed panels and A's tiles).

use super::inline::dim_expr;
use super::matmul::{k_dim, Operands};
use super::{Ctx, GridDim, LowerError};
use crate::kernel::e::*;
use crate::kernel::{Buf, Cmp, Expr, Kernel, LocalBuf, LoopKind, Stmt, VarId};
use kiln_ir::DType;

/// The fewest column blocks a tiled matmul is split into when N allows.
const MIN_GRID_POINTS: i64 = 16;

pub(super) fn tiled_kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    name: String,
) -> Result<(Kernel, Vec<usize>), LowerError> {
    let s = ctx.schedule;
    let (w, nr, mr, kc) = (s.lanes as i64, s.nr as i64, s.mr as i64, s.kc as i64);
    // Fewer panels per grid point when N is small, so that the grid keeps enough
    // points to spread over the cores (the grid only splits N and the batch).
    let n_known = ops.out_shape[ops.nb + 1].as_known();
    let panels = n_known.map_or(1, |n| {
        (n / (nr * MIN_GRID_POINTS)).clamp(1, s.panels.max(1) as i64)
    });
    let nb = ops.nb;
    let m = dim_expr(ctx, &ops.out_shape[nb]);
    let n = dim_expr(ctx, &ops.out_shape[nb + 1]);
    let kdim = dim_expr(ctx, &k_dim(ops));
    let mut grid: Vec<GridDim> = ops.out_shape[..nb].iter().map(GridDim::of).collect();
    grid.push(GridDim {
        dim: ops.out_shape[nb + 1].clone(),
        ceil_div: nr * panels,
    });
    let (j0, kb, k0, kn, kk, jj, p, jp) = (
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
        ctx.fresh(),
    );
    // Panel p covers columns jp = j0 + p*nr .. jp + nr and lives at p*kc*nr in the local.
    let panel_start = |p: VarId| Stmt::Let {
        var: jp,
        value: add(var(j0), mul(var(p), i(nr))),
    };
    let panel_base = mul(var(p), i(kc * nr));
    let full = cmp(Cmp::Le, add(var(jp), i(nr)), n.clone());

    // Pack B[k0..k0+kn, jp..jp+nr] into panel p, zero past N.
    let b_full = ops.b_at(ctx, add(var(k0), var(kk)), add(var(jp), var(jj)))?;
    let clamped_col = min(add(var(jp), var(jj)), sub(n.clone(), i(1)));
    let b_edge = ops.b_at(ctx, add(var(k0), var(kk)), clamped_col)?;
    let b_edge = select(
        cmp(Cmp::Lt, add(var(jp), var(jj)), n.clone()),
        b_edge,
        f(0.0),
    );
    let panel_at = add(panel_base.clone(), add(mul(var(kk), i(nr)), var(jj)));
    let pack_row = |value: Expr| Stmt::Loop {
        var: jj,
        extent: i(nr),
        kind: LoopKind::Map,
        vector: w as u8,
        body: vec![Stmt::Store {
            buf: Buf::Local(0),
            index: panel_at.clone(),
            value,
        }],
    };
    let pack = over_panels(
        p,
        panels,
        vec![
            panel_start(p),
            Stmt::Loop {
                var: kk,
                extent: var(kn),
                kind: LoopKind::Serial,
                vector: 1,
                body: vec![Stmt::If {
                    cond: full.clone(),
                    then: vec![pack_row(b_full)],
                    otherwise: vec![pack_row(b_edge)],
                }],
            },
        ],
    );

    let tile = Tile {
        jp,
        panel_base,
        kb,
        k0,
        kn,
        n: n.clone(),
        w,
        nr,
    };
    // Row tiles outside, panels inside: the micro-kernel's rows of A stay in L1 while
    // every panel of B passes over them.
    let row_tiles = |ctx: &mut Ctx, rows: i64, i0: Expr| -> Result<Stmt, LowerError> {
        let mut body = vec![panel_start(p)];
        let kernel = micro_kernel(ctx, ops, out, rows, i0, &tile)?;
        body.push(Stmt::If {
            cond: cmp(Cmp::Lt, var(jp), n.clone()),
            then: kernel,
            otherwise: Vec::new(),
        });
        Ok(over_panels(p, panels, body))
    };
    let tiles = ctx.fresh();
    let rest = ctx.fresh();
    let tile_body = row_tiles(ctx, mr, mul(var(tiles), i(mr)))?;
    let rest_row = add(mul(div(m.clone(), i(mr)), i(mr)), var(rest));
    let rest_body = row_tiles(ctx, 1, rest_row)?;
    let body = vec![
        Stmt::Let {
            var: j0,
            value: mul(Expr::GridIdx(nb as u32), i(nr * panels)),
        },
        Stmt::Loop {
            var: kb,
            extent: div(add(kdim.clone(), i(kc - 1)), i(kc)),
            kind: LoopKind::Serial,
            vector: 1,
            body: vec![
                Stmt::Let {
                    var: k0,
                    value: mul(var(kb), i(kc)),
                },
                Stmt::Let {
                    var: kn,
                    value: min(i(kc), sub(kdim.clone(), var(k0))),
                },
                pack,
                Stmt::Loop {
                    var: tiles,
                    extent: div(m.clone(), i(mr)),
                    kind: LoopKind::Serial,
                    vector: 1,
                    body: vec![tile_body],
                },
                Stmt::Loop {
                    var: rest,
                    extent: rem(m, i(mr)),
                    kind: LoopKind::Serial,
                    vector: 1,
                    body: vec![rest_body],
                },
            ],
        },
    ];
    let (mut kernel, args) = ctx.finish(name, grid, body, 1);
    kernel.locals.push(LocalBuf {
        dtype: DType::F32,
        len: (panels * kc * nr) as u32,
        shared: false,
    });
    Ok((kernel, args))
}

/// A serial loop over the grid point's panels.
fn over_panels(p: VarId, panels: i64, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var: p,
        extent: i(panels),
        kind: LoopKind::Serial,
        vector: 1,
        body,
    }
}

struct Tile {
    /// First column of the panel.
    jp: VarId,
    /// Where the packed panel starts in the local buffer.
    panel_base: Expr,
    kb: VarId,
    k0: VarId,
    kn: VarId,
    n: Expr,
    w: i64,
    nr: i64,
}

/// `rows x nr` outputs starting at row `i0`, column `j0`, for one k block: load the
/// partial sums (after the first block), accumulate `kn` rank-1 updates, store back.
fn micro_kernel(
    ctx: &mut Ctx,
    ops: &Operands,
    out: Buf,
    rows: i64,
    i0: Expr,
    t: &Tile,
) -> Result<Vec<Stmt>, LowerError> {
    let nv = t.nr / t.w;
    let lanes = t.w as u8;
    let row0 = ctx.fresh();
    let acc: Vec<Vec<VarId>> = (0..rows)
        .map(|_| (0..nv).map(|_| ctx.fresh()).collect())
        .collect();
    let full = cmp(Cmp::Le, add(var(t.jp), i(t.nr)), t.n.clone());
    let col = |v: i64, l: i64| add(var(t.jp), i(v * t.w + l));
    let row = |r: i64| add(var(row0), i(r));

    let mut body = vec![Stmt::Let {
        var: row0,
        value: i0,
    }];
    for r in 0..rows {
        for v in 0..nv {
            body.push(Stmt::Decl {
                var: acc[r as usize][v as usize],
                init: splat(f(0.0), lanes),
            });
        }
    }
    // The tile's sums so far (after the first block of K), or the addend (before it).
    let mut start_from = |buf: Buf| -> Stmt {
        let mut load_full = Vec::new();
        let mut load_edge = Vec::new();
        for r in 0..rows {
            for v in 0..nv {
                let at = ops.c_index(ctx, row(r), col(v, 0));
                load_full.push(Stmt::Assign {
                    var: acc[r as usize][v as usize],
                    value: load_vec(buf, at, lanes),
                });
                let lanes_v = (0..t.w)
                    .map(|l| {
                        let clamped = min(col(v, l), sub(t.n.clone(), i(1)));
                        select(
                            cmp(Cmp::Lt, col(v, l), t.n.clone()),
                            load(buf, ops.c_index(ctx, row(r), clamped)),
                            f(0.0),
                        )
                    })
                    .collect();
                load_edge.push(Stmt::Assign {
                    var: acc[r as usize][v as usize],
                    value: Expr::Lanes(lanes_v),
                });
            }
        }
        Stmt::If {
            cond: full.clone(),
            then: load_full,
            otherwise: load_edge,
        }
    };
    let resume = start_from(out);
    let first = ops.addend.map(&mut start_from).into_iter().collect();
    body.push(Stmt::If {
        cond: cmp(Cmp::Ne, var(t.kb), i(0)),
        then: vec![resume],
        otherwise: first,
    });

    let kk = ctx.fresh();
    let mut step = Vec::new();
    let b_vars: Vec<VarId> = (0..nv).map(|_| ctx.fresh()).collect();
    for (v, &bv) in b_vars.iter().enumerate() {
        let at = add(
            t.panel_base.clone(),
            add(mul(var(kk), i(t.nr)), i(v as i64 * t.w)),
        );
        step.push(Stmt::Let {
            var: bv,
            value: load_vec(Buf::Local(0), at, lanes),
        });
    }
    for r in 0..rows {
        let a = ctx.fresh();
        let a_val = ops.a_at(ctx, row(r), add(var(t.k0), var(kk)))?;
        step.push(Stmt::Let {
            var: a,
            value: splat(a_val, lanes),
        });
        for (v, &bv) in b_vars.iter().enumerate() {
            let x = acc[r as usize][v];
            step.push(Stmt::Assign {
                var: x,
                value: fma(var(a), var(bv), var(x)),
            });
        }
    }
    body.push(Stmt::Loop {
        var: kk,
        extent: var(t.kn),
        kind: LoopKind::Serial,
        vector: 1,
        body: step,
    });

    let mut store_full = Vec::new();
    let mut store_edge = Vec::new();
    for r in 0..rows {
        for v in 0..nv {
            let x = acc[r as usize][v as usize];
            store_full.push(Stmt::Store {
                buf: out,
                index: ops.c_index(ctx, row(r), col(v, 0)),
                value: var(x),
            });
            for l in 0..t.w {
                store_edge.push(Stmt::If {
                    cond: cmp(Cmp::Lt, col(v, l), t.n.clone()),
                    then: vec![Stmt::Store {
                        buf: out,
                        index: ops.c_index(ctx, row(r), col(v, l)),
                        value: Expr::Extract {
                            vector: Box::new(var(x)),
                            lane: l as u8,
                        },
                    }],
                    otherwise: Vec::new(),
                });
            }
        }
    }
    body.push(Stmt::If {
        cond: full,
        then: store_full,
        otherwise: store_edge,
    });
    Ok(body)
}
