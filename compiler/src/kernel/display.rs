//! A readable listing of kernels, for `kiln inspect --kernels` and for pass tests that
//! compare a kernel before and after.

use super::ir::*;
use std::fmt::{self, Display, Formatter, Write};

impl Display for Kernel {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {}(", self.name)?;
        for (i, a) in self.args.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            let rw = if a.writes { "mut " } else { "" };
            write!(f, "{sep}{rw}a{i}: {}* {}", a.dtype, a.name)?;
        }
        write!(f, ") grid[")?;
        for (i, g) in self.grid.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            write!(f, "{sep}{g}")?;
        }
        write!(f, "]")?;
        if let Some(t) = self.block_threads {
            write!(f, " threads[{t}]")?;
        }
        writeln!(f, " {{")?;
        for (i, l) in self.locals.iter().enumerate() {
            let kind = if l.shared { "shared" } else { "local" };
            writeln!(f, "  {kind} l{i}: {}[{}]", l.dtype, l.len)?;
        }
        let mut s = String::new();
        write_stmts(&mut s, &self.body, 1)?;
        f.write_str(&s)?;
        writeln!(f, "}}")
    }
}

fn write_stmts(out: &mut String, stmts: &[Stmt], depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth);
    for s in stmts {
        match s {
            Stmt::Let { var, value } => writeln!(out, "{pad}let v{var} = {value}")?,
            Stmt::Decl { var, init } => writeln!(out, "{pad}var v{var} = {init}")?,
            Stmt::Assign { var, value } => writeln!(out, "{pad}v{var} = {value}")?,
            Stmt::Store { buf, index, value } => writeln!(out, "{pad}{buf}[{index}] = {value}")?,
            Stmt::Prefetch { buf, index } => writeln!(out, "{pad}prefetch {buf}[{index}]")?,
            Stmt::Copy {
                dst,
                dst_index,
                src,
                src_index,
                lanes,
            } => writeln!(
                out,
                "{pad}copy {dst}[{dst_index}] <- {src}[{src_index}] x{lanes}"
            )?,
            Stmt::Await { in_flight } => writeln!(out, "{pad}await copies <= {in_flight}")?,
            Stmt::GroupMma { op, products } => {
                writeln!(out, "{pad}group mma m64n{}k16 {} {{", op.n, op.input)?;
                for p in products {
                    writeln!(
                        out,
                        "{pad}  v{} += {}[{}] x {}[{}]",
                        p.acc, p.a, p.a_index, p.b, p.b_index
                    )?;
                }
                writeln!(out, "{pad}}}")?;
            }
            Stmt::GroupWait { accs, pending } => {
                let accs: Vec<String> = accs.iter().map(|v| format!("v{v}")).collect();
                writeln!(out, "{pad}group wait <= {pending} ({})", accs.join(", "))?;
            }
            Stmt::Loop {
                var,
                extent,
                kind,
                vector,
                body,
            } => {
                let v = if *vector > 1 {
                    format!(" x{vector}")
                } else {
                    String::new()
                };
                writeln!(out, "{pad}{kind:?}{v} v{var} in 0..{extent} {{")?;
                write_stmts(out, body, depth + 1)?;
                writeln!(out, "{pad}}}")?;
            }
            Stmt::Reduce {
                acc,
                op,
                var,
                extent,
                value,
                vector,
            } => {
                let v = if *vector > 1 {
                    format!(" x{vector}")
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "{pad}v{acc} = reduce_{op:?}{v} v{var} in 0..{extent}: {value}"
                )?;
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                writeln!(out, "{pad}if {cond} {{")?;
                write_stmts(out, then, depth + 1)?;
                if !otherwise.is_empty() {
                    writeln!(out, "{pad}}} else {{")?;
                    write_stmts(out, otherwise, depth + 1)?;
                }
                writeln!(out, "{pad}}}")?;
            }
        }
    }
    Ok(())
}

impl Display for Buf {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Buf::Arg(i) => write!(f, "a{i}"),
            Buf::Local(i) => write!(f, "l{i}"),
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Lit(Lit::F32(v)) => write!(f, "{v:?}f"),
            Expr::Lit(Lit::I32(v)) => write!(f, "{v}i32"),
            Expr::Lit(Lit::I64(v)) => write!(f, "{v}"),
            Expr::Lit(Lit::Bool(v)) => write!(f, "{v}"),
            Expr::Var(v) => write!(f, "v{v}"),
            Expr::Dim(i) => write!(f, "dim{i}"),
            Expr::GridIdx(i) => write!(f, "g{i}"),
            Expr::Load { buf, index, lanes } if *lanes > 1 => write!(f, "{buf}[{index}]x{lanes}"),
            Expr::Load { buf, index, .. } => write!(f, "{buf}[{index}]"),
            Expr::LoadMatrix { buf, index, count } => write!(f, "ldmatrix{count}({buf}[{index}])"),
            Expr::Splat { value, lanes } => write!(f, "splat{lanes}({value})"),
            Expr::Lanes(v) => {
                let mut s = String::new();
                for (i, x) in v.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    write!(s, "{sep}{x}")?;
                }
                write!(f, "<{s}>")
            }
            Expr::Unary(op, a) => write!(f, "{}({a})", format!("{op:?}").to_lowercase()),
            Expr::Binary(op, a, b) => match op {
                BOp::Add => write!(f, "({a} + {b})"),
                BOp::Sub => write!(f, "({a} - {b})"),
                BOp::Mul => write!(f, "({a} * {b})"),
                BOp::Div => write!(f, "({a} / {b})"),
                BOp::Rem => write!(f, "({a} % {b})"),
                _ => write!(f, "{}({a}, {b})", format!("{op:?}").to_lowercase()),
            },
            Expr::Fma(a, b, c) => write!(f, "fma({a}, {b}, {c})"),
            Expr::DotBytes(a, b, c, None) => write!(f, "dot_bytes({a}, {b}, {c})"),
            Expr::DotBytes(a, b, c, Some(w)) => write!(f, "dot_bytes({a}, {b}, {c}, scaled {w})"),
            Expr::DotSignedBytes(a, b, c) => write!(f, "dot_signed_bytes({a}, {b}, {c})"),
            Expr::Mma(op, a, b, c) => write!(f, "mma<{:?} {}>({a}, {b}, {c})", op.unit, op.input),
            Expr::Lane => write!(f, "lane"),
            Expr::Thread => write!(f, "thread"),
            Expr::Cmp(c, a, b) => write!(f, "{}({a}, {b})", format!("{c:?}").to_lowercase()),
            Expr::Select(c, a, b) => write!(f, "select({c}, {a}, {b})"),
            Expr::Cast(t, a) => write!(f, "cast<{t:?}>({a})"),
            Expr::Bitcast(t, a) => write!(f, "bitcast<{t:?}>({a})"),
            Expr::ReduceLanes(op, a) => write!(f, "reduce_lanes_{op:?}({a})"),
            Expr::LaneSums(v, g) => {
                write!(f, "lane_sums<{g}>(")?;
                for (k, x) in v.iter().enumerate() {
                    write!(f, "{}{x}", if k > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            Expr::Extract { vector, lane } => write!(f, "{vector}.{lane}"),
            Expr::Let { var, value, body } => write!(f, "(let v{var} = {value} in {body})"),
        }
    }
}
