//! Reads the values `.kir` statements are built from: dtypes, shapes and their affine
//! dims, numbers (with `inf` and `nan`) and const data. Attributes reuse these readers, so
//! a shape reads the same in `input "x" f32[seq,64]` as in `reshape %x shape=[seq,64]`.

use super::lex::{err, tokenize, Cursor, SyntaxError, Tok};
use crate::dim::{shape_to_string, Dim, Shape};
use crate::dtype::DType;
use crate::error::IrError;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Parses one dim such as `2*seq+1` (for command lines and tests).
pub fn parse_dim(src: &str) -> Result<Dim, IrError> {
    fragment(src, dim)
}

/// Parses a type such as `f32[batch,64]`.
pub fn parse_type(src: &str) -> Result<(DType, Shape), IrError> {
    fragment(src, ty)
}

fn fragment<T>(
    src: &str,
    read: impl FnOnce(&mut Cursor) -> Result<T, SyntaxError>,
) -> Result<T, IrError> {
    let to_ir = |e: SyntaxError| IrError::Parse {
        line: 1,
        col: e.col,
        msg: e.msg,
    };
    let toks = tokenize(src).map_err(to_ir)?;
    let mut cur = Cursor::new(&toks, src.chars().count() + 1);
    let v = read(&mut cur).map_err(to_ir)?;
    cur.expect_end("the end of the value").map_err(to_ir)?;
    Ok(v)
}

/// `dtype[dims]`.
pub(super) fn ty(cur: &mut Cursor) -> Result<(DType, Shape), SyntaxError> {
    let dtype = dtype(cur)?;
    Ok((dtype, shape(cur)?))
}

pub(super) fn dtype(cur: &mut Cursor) -> Result<DType, SyntaxError> {
    let (name, col) = cur.ident("a dtype")?;
    DType::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
        SyntaxError {
            col,
            msg: format!(
                "unknown dtype `{name}` (expected one of {})",
                known.join(", ")
            ),
        }
    })
}

/// `[d, d, ...]`; known dims must be >= 0.
pub(super) fn shape(cur: &mut Cursor) -> Result<Shape, SyntaxError> {
    let prefix = |e: SyntaxError| SyntaxError {
        col: e.col,
        msg: format!("malformed shape: {}", e.msg),
    };
    cur.expect('[', "to open the shape").map_err(prefix)?;
    let mut dims = Vec::new();
    if cur.eat(']') {
        return Ok(dims);
    }
    loop {
        let col = cur.col();
        let d = dim(cur).map_err(prefix)?;
        if let Some(n) = d.as_known().filter(|n| *n < 0) {
            return err(col, format!("malformed shape: dim {n} is negative"));
        }
        dims.push(d);
        if cur.eat(']') {
            return Ok(dims);
        }
        cur.expect(',', "between dims").map_err(prefix)?;
    }
}

/// An affine dim: terms `k`, `sym`, `k*sym` or `sym*k` joined by `+` and `-`.
fn dim(cur: &mut Cursor) -> Result<Dim, SyntaxError> {
    let col = cur.col();
    let overflow = || SyntaxError {
        col,
        msg: "dim overflows a 64-bit integer".into(),
    };
    let mut constant: i64 = 0;
    let mut terms: BTreeMap<String, i64> = BTreeMap::new();
    let mut negative = cur.eat('-');
    if !negative {
        cur.eat('+');
    }
    loop {
        let (k, sym) = dim_term(cur)?;
        let k = if negative { -k } else { k };
        let slot = match sym {
            Some(s) => terms.entry(s.to_string()).or_insert(0),
            None => &mut constant,
        };
        *slot = slot.checked_add(k).ok_or_else(overflow)?;
        if cur.eat('+') {
            negative = false;
        } else if cur.eat('-') {
            negative = true;
        } else {
            break;
        }
    }
    let terms: Vec<(String, i64)> = terms.into_iter().filter(|(_, c)| *c != 0).collect();
    // `Dim`'s Display negates coefficients, so i64::MIN could not be printed.
    if constant == i64::MIN || terms.iter().any(|(_, c)| *c == i64::MIN) {
        return Err(overflow());
    }
    Ok(Dim { constant, terms })
}

/// One term as (coefficient >= 0, symbol).
fn dim_term<'a>(cur: &mut Cursor<'a>) -> Result<(i64, Option<&'a str>), SyntaxError> {
    let col = cur.col();
    let found = cur.found();
    match cur.next().map(|t| &t.tok) {
        Some(Tok::Num(n)) => {
            let k = dim_int(n, col)?;
            if cur.eat('*') {
                Ok((k, Some(cur.ident("a symbol after `*`")?.0)))
            } else {
                Ok((k, None))
            }
        }
        Some(Tok::Ident(s)) => {
            if !cur.eat('*') {
                return Ok((1, Some(s)));
            }
            let col = cur.col();
            match cur.next().map(|t| &t.tok) {
                Some(Tok::Num(n)) => Ok((dim_int(n, col)?, Some(s))),
                _ => err(col, "expected an integer after `*`"),
            }
        }
        _ => err(
            col,
            format!("expected a dim (an integer or a symbol), found {found}"),
        ),
    }
}

fn dim_int(n: &str, col: usize) -> Result<i64, SyntaxError> {
    n.parse::<i64>().or_else(|_| {
        err(
            col,
            format!("`{n}` is not a dim: expected an integer in range"),
        )
    })
}

/// Text of `[-+]? (number | inf | nan)` in the spelling Rust's float parsers read, or
/// `None` (having consumed at most a sign) when the next tokens are not a number.
pub(super) fn number_text(cur: &mut Cursor) -> Option<String> {
    let negative = cur.eat('-');
    if !negative {
        cur.eat('+');
    }
    let body = match cur.peek()? {
        Tok::Num(s) => s.clone(),
        Tok::Ident(s) if s == "inf" || s == "nan" => s.clone(),
        _ => return None,
    };
    cur.next();
    Some(if negative { format!("-{body}") } else { body })
}

/// `dtype[known dims] [v, v, ...]`.
pub(super) fn constant(cur: &mut Cursor) -> Result<Tensor, SyntaxError> {
    let col = cur.col();
    let (dtype, shape) = ty(cur)?;
    let dims: Option<Vec<usize>> = shape
        .iter()
        .map(|d| d.as_known().and_then(|n| usize::try_from(n).ok()))
        .collect();
    let Some(dims) = dims else {
        let msg = format!(
            "malformed shape: a const's shape must be known, got {}",
            shape_to_string(&shape)
        );
        return err(col, msg);
    };
    let Some(numel) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return err(col, "malformed shape: element count overflows");
    };
    cur.expect('[', "to open the const data")?;
    let mut data = Vec::new();
    if !cur.eat(']') {
        loop {
            data.push(const_value(cur, dtype)?);
            if cur.eat(']') {
                break;
            }
            cur.expect(',', "between const values")?;
        }
    }
    if data.len() != numel {
        let msg = format!(
            "const data has {} value(s) but shape {} needs {numel}",
            data.len(),
            shape_to_string(&shape)
        );
        return err(col, msg);
    }
    Ok(Tensor::new(dtype, dims, data))
}

/// Float values are read at f32 precision (every f16/bf16 value is an f32, and `print`
/// writes the shortest f32 spelling); integer values must be integers in range.
fn const_value(cur: &mut Cursor, dtype: DType) -> Result<f64, SyntaxError> {
    let (col, found) = (cur.col(), cur.found());
    let bad = |why: &str| err(col, format!("bad const value {found} for {dtype}: {why}"));
    let Some(text) = number_text(cur) else {
        return bad("expected a number");
    };
    if dtype.is_float() {
        return match text.parse::<f32>() {
            Ok(v) => Ok(f64::from(v)),
            Err(_) => bad("not a number"),
        };
    }
    let Ok(v) = text.parse::<f64>() else {
        return bad("not a number");
    };
    let (lo, hi) = match dtype {
        DType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        _ => (i64::MIN as f64, i64::MAX as f64),
    };
    if v.fract() != 0.0 || !(lo..=hi).contains(&v) {
        return bad("expected an integer in range");
    }
    Ok(v)
}
