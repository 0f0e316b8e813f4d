//! Shape and dtype rules, one per op. `Graph::add` runs these on every node, so they are
//! also the verifier's core. Errors are plain sentences; the caller adds the node and op.

use crate::dim::{shape_to_string as s, Dim, Shape};
use crate::dtype::DType;
use crate::op::{Op, ReduceOp, UnaryOp};

type Operand<'a> = (DType, &'a Shape);

/// `u8` tensors hold raw bytes (quantized blocks): they are decoded by `dequant`, moved by
/// layout ops and gathered, read by casts to wider types, and never computed with or
/// produced by arithmetic (whose overflow rules would differ between the interpreter and
/// the backends).
fn raw_bytes_rule(op: &Op, ins: &[Operand]) -> Result<(), String> {
    let moves_bytes = matches!(
        op,
        Op::Dequant { .. }
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Gather
            | Op::Cast { .. }
    );
    if let Op::Cast { dtype: DType::U8 } = op {
        return Err("casts to u8 are not supported: u8 tensors hold raw block bytes".into());
    }
    if !moves_bytes && ins.iter().any(|(d, _)| *d == DType::U8) {
        return Err(format!(
            "{} does not take u8 operands: u8 tensors hold raw block bytes (dequant decodes them)",
            op.name()
        ));
    }
    Ok(())
}

pub fn infer(op: &Op, ins: &[Operand]) -> Result<(DType, Shape), String> {
    if let Some(n) = op.arity() {
        if ins.len() != n {
            return Err(format!("takes {n} operand(s), got {}", ins.len()));
        }
    } else if ins.is_empty() {
        return Err("takes at least one operand".into());
    }
    raw_bytes_rule(op, ins)?;
    match op {
        Op::Input { dtype, shape, .. } | Op::Param { dtype, shape, .. } => {
            Ok((*dtype, shape.clone()))
        }
        Op::Const(t) => Ok((t.dtype, t.shape.iter().map(|&d| Dim::from(d)).collect())),
        Op::Unary(u) => {
            let (dt, sh) = ins[0];
            let int_ok = matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu);
            if !int_ok && !dt.is_float() {
                return Err(format!("needs a float operand, got {dt}"));
            }
            Ok((dt, sh.clone()))
        }
        Op::Binary(_) | Op::Compare(_) => {
            let dt = same_dtype(ins)?;
            Ok((dt, broadcast(ins[0].1, ins[1].1)?))
        }
        Op::Select => {
            let dt = same_dtype(&ins[1..])?;
            let sh = broadcast(&broadcast(ins[0].1, ins[1].1)?, ins[2].1)?;
            Ok((dt, sh))
        }
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => {
            let (dt, sh) = ins[0];
            if *op == ReduceOp::Mean && !dt.is_float() {
                return Err(format!("mean needs a float operand, got {dt}"));
            }
            check_axes(axes, sh.len())?;
            let out = sh
                .iter()
                .enumerate()
                .filter_map(|(i, d)| match (axes.contains(&i), keep_dims) {
                    (false, _) => Some(d.clone()),
                    (true, true) => Some(Dim::known(1)),
                    (true, false) => None,
                })
                .collect();
            Ok((dt, out))
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul(ins, *transpose_a, *transpose_b),
        Op::Softmax { axis } => {
            let (dt, sh) = ins[0];
            float(dt)?;
            if *axis >= sh.len() {
                return Err(format!("axis {axis} out of range for {}", s(sh)));
            }
            Ok((dt, sh.clone()))
        }
        Op::RmsNorm { .. } | Op::LayerNorm { .. } => {
            let (dt, sh) = ins[0];
            float(dt)?;
            let last = sh.last().ok_or("needs an operand of rank >= 1")?;
            for (i, (wdt, wsh)) in ins[1..].iter().enumerate() {
                if *wdt != dt {
                    return Err(format!("operand {} is {wdt}, expected {dt}", i + 1));
                }
                if wsh.len() != 1 || &wsh[0] != last {
                    return Err(format!(
                        "operand {} has shape {}, expected [{last}]",
                        i + 1,
                        s(wsh)
                    ));
                }
            }
            Ok((dt, sh.clone()))
        }
        Op::Rope { rot_dims, .. } => {
            let (dt, sh) = ins[0];
            let (pdt, psh) = ins[1];
            float(dt)?;
            if sh.len() < 3 {
                return Err(format!(
                    "x must be [.., seq, heads, head_dim], got {}",
                    s(sh)
                ));
            }
            if !pdt.is_int() {
                return Err(format!("positions must be an integer tensor, got {pdt}"));
            }
            let seq = &sh[sh.len() - 3];
            if psh.len() != 1 || &psh[0] != seq {
                return Err(format!("positions have shape {}, expected [{seq}]", s(psh)));
            }
            let head = &sh[sh.len() - 1];
            if *rot_dims == 0
                || rot_dims % 2 != 0
                || head.as_known().is_some_and(|h| *rot_dims as i64 > h)
            {
                return Err(format!(
                    "rot_dims {rot_dims} must be even, > 0 and <= head_dim {head}"
                ));
            }
            Ok((dt, sh.clone()))
        }
        Op::Dequant { format } => {
            let (dt, sh) = ins[0];
            if dt != DType::U8 {
                return Err(format!("dequant reads u8 block bytes, got {dt}"));
            }
            let last = sh
                .last()
                .ok_or_else(|| "dequant needs rank >= 1".to_string())?;
            let bytes = last
                .as_known()
                .ok_or_else(|| format!("dequant's last axis must be known, got {last}"))?;
            let elems = format.elems_in(bytes)?;
            let mut out = sh.clone();
            *out.last_mut().expect("rank >= 1") = Dim::from(elems);
            Ok((DType::F32, out))
        }
        Op::Quantize { format } => {
            let (dt, sh) = ins[0];
            if !crate::QuantFormat::ACTIVATIONS.contains(format) {
                return Err(format!(
                    "quantize writes q8_0 or q8_k blocks (activations), not {format}"
                ));
            }
            if dt != DType::F32 {
                return Err(format!("quantize reads f32, got {dt}"));
            }
            let last = sh
                .last()
                .ok_or_else(|| "quantize needs rank >= 1".to_string())?;
            let be = format.block_elems() as i64;
            let elems = last.as_known().filter(|k| k % be == 0).ok_or_else(|| {
                format!("quantize's last axis must be a known multiple of {be}, got {last}")
            })?;
            let mut out = sh.clone();
            *out.last_mut().expect("rank >= 1") =
                Dim::from(elems / be * format.block_bytes() as i64);
            Ok((DType::U8, out))
        }
        Op::Gather => {
            let (tdt, tsh) = ins[0];
            let (idt, ish) = ins[1];
            if tsh.is_empty() {
                return Err("table must have rank >= 1".into());
            }
            if !idt.is_int() {
                return Err(format!("ids must be an integer tensor, got {idt}"));
            }
            Ok((tdt, ish.iter().chain(&tsh[1..]).cloned().collect()))
        }
        Op::Reshape { shape } => {
            let (dt, sh) = ins[0];
            if numel_key(sh) != numel_key(shape) {
                return Err(format!(
                    "cannot reshape {} to {}: element counts differ",
                    s(sh),
                    s(shape)
                ));
            }
            Ok((dt, shape.clone()))
        }
        Op::Permute { perm } => {
            let (dt, sh) = ins[0];
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..sh.len()).collect::<Vec<_>>() {
                return Err(format!(
                    "{perm:?} is not a permutation of the {} axes of {}",
                    sh.len(),
                    s(sh)
                ));
            }
            Ok((dt, perm.iter().map(|&p| sh[p].clone()).collect()))
        }
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => {
            let (dt, sh) = ins[0];
            let d = sh
                .get(*axis)
                .ok_or_else(|| format!("axis {axis} out of range for {}", s(sh)))?;
            if *start < 0 || end <= start || *step < 1 {
                return Err(format!("bad range {start}..{end} step {step}"));
            }
            if let Some(n) = d.as_known() {
                if *end > n {
                    return Err(format!("end {end} beyond axis {axis} of size {n}"));
                }
            }
            let mut out = sh.clone();
            out[*axis] = Dim::known((end - start + step - 1) / step);
            Ok((dt, out))
        }
        Op::Concat { axis } => {
            let dt = same_dtype(ins)?;
            let first = ins[0].1;
            if *axis >= first.len() {
                return Err(format!("axis {axis} out of range for {}", s(first)));
            }
            let mut total = Dim::known(0);
            for (i, (_, sh)) in ins.iter().enumerate() {
                let other_axes_match = sh.len() == first.len()
                    && sh
                        .iter()
                        .zip(first.iter())
                        .enumerate()
                        .all(|(a, (x, y))| a == *axis || x == y);
                if !other_axes_match {
                    return Err(format!(
                        "operand {i} has shape {}, which does not match {} off axis {axis}",
                        s(sh),
                        s(first)
                    ));
                }
                total = total.add(&sh[*axis]);
            }
            let mut out = first.clone();
            out[*axis] = total;
            Ok((dt, out))
        }
        Op::Cast { dtype } => Ok((*dtype, ins[0].1.clone())),
    }
}

fn float(dt: DType) -> Result<(), String> {
    if dt.is_float() {
        Ok(())
    } else {
        Err(format!("needs a float operand, got {dt}"))
    }
}

fn same_dtype(ins: &[Operand]) -> Result<DType, String> {
    let dt = ins[0].0;
    match ins.iter().find(|(d, _)| *d != dt) {
        Some((d, _)) => Err(format!("operand dtypes differ: {dt} and {d}")),
        None => Ok(dt),
    }
}

fn check_axes(axes: &[usize], rank: usize) -> Result<(), String> {
    if axes.is_empty() {
        return Err("needs at least one axis".into());
    }
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank {
            return Err(format!("axis {a} out of range for rank {rank}"));
        }
        if axes[..i].contains(&a) {
            return Err(format!("axis {a} listed twice"));
        }
    }
    Ok(())
}

/// NumPy broadcasting, right-aligned; a dim broadcasts only when it is known to be 1.
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.len().max(b.len());
    let one = Dim::known(1);
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                &a[i + a.len() - rank]
            } else {
                &one
            };
            let db = if i + b.len() >= rank {
                &b[i + b.len() - rank]
            } else {
                &one
            };
            if da == db || *db == one {
                Ok(da.clone())
            } else if *da == one {
                Ok(db.clone())
            } else {
                Err(format!("cannot broadcast {} with {}", s(a), s(b)))
            }
        })
        .collect()
}

fn matmul(ins: &[Operand], ta: bool, tb: bool) -> Result<(DType, Shape), String> {
    let dt = same_dtype(ins)?;
    let (a, b) = (ins[0].1, ins[1].1);
    if a.len() < 2 || b.len() < 2 {
        return Err(format!(
            "operands need rank >= 2, got {} and {}",
            s(a),
            s(b)
        ));
    }
    let (m, ka) = last_two(a, ta);
    let (kb, n) = last_two(b, tb);
    if ka != kb {
        return Err(format!(
            "inner dims differ: {} x {} (k = {ka} vs {kb})",
            s(a),
            s(b)
        ));
    }
    let batch = broadcast(&a[..a.len() - 2].to_vec(), &b[..b.len() - 2].to_vec())?;
    let mut out = batch;
    out.push(m.clone());
    out.push(n.clone());
    Ok((dt, out))
}

fn last_two(sh: &Shape, transposed: bool) -> (&Dim, &Dim) {
    let (r, c) = (&sh[sh.len() - 2], &sh[sh.len() - 1]);
    if transposed {
        (c, r)
    } else {
        (r, c)
    }
}

/// Element count as (known factor, sorted symbolic factors): equal keys mean equal counts
/// for every binding, which is what reshape must guarantee.
fn numel_key(sh: &Shape) -> (i64, Vec<Dim>) {
    let mut k = 1;
    let mut syms: Vec<Dim> = Vec::new();
    for d in sh {
        match d.as_known() {
            Some(n) => k *= n,
            None => syms.push(d.clone()),
        }
    }
    syms.sort();
    if k == 0 {
        syms.clear();
    }
    (k, syms)
}
