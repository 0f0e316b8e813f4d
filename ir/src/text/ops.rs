//! The attribute spelling of every op, both ways: [`attributes`] is what `print` writes
//! after the operands and [`build`] is how `parse` turns `key=value` pairs back into an
//! [`Op`]. Keeping the two side by side means adding an op (or an attribute) is one edit
//! here, and the round-trip tests catch a side that was forgotten.

use super::lex::{err, Cursor, SyntaxError, Tok, Token};
use super::print::f64_to_string;
use super::values::{dtype, number_text, shape};
use crate::dim::{shape_to_string, Shape};
use crate::dtype::DType;
use crate::op::{BinaryOp, CmpOp, Op, ReduceOp, RopeLayout, UnaryOp};

/// Ops whose name is not that of a unary, binary or comparison op.
const NAMED_OPS: [&str; 20] = [
    "input",
    "param",
    "const",
    "select",
    "reduce_sum",
    "reduce_max",
    "reduce_mean",
    "matmul",
    "softmax",
    "rms_norm",
    "layer_norm",
    "rope",
    "gather",
    "dequant",
    "quantize",
    "reshape",
    "permute",
    "slice",
    "concat",
    "cast",
];

const LAYOUTS: [RopeLayout; 2] = [RopeLayout::Interleaved, RopeLayout::Neox];

pub(super) fn is_op(name: &str) -> bool {
    NAMED_OPS.contains(&name) || elementwise(name).is_some()
}

fn elementwise(name: &str) -> Option<Op> {
    let unary = UnaryOp::ALL
        .into_iter()
        .find(|u| u.name() == name)
        .map(Op::Unary);
    let binary = || {
        BinaryOp::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .map(Op::Binary)
    };
    let compare = || {
        CmpOp::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .map(Op::Compare)
    };
    unary.or_else(binary).or_else(compare)
}

/// `key=value` pairs in the op's field order. Input, param and const have none: their
/// name, type and data are written positionally.
pub(super) fn attributes(op: &Op) -> Vec<(&'static str, String)> {
    let list = |xs: &[usize]| {
        let parts: Vec<String> = xs.iter().map(usize::to_string).collect();
        format!("[{}]", parts.join(","))
    };
    match op {
        Op::Reduce {
            axes, keep_dims, ..
        } => vec![("axes", list(axes)), ("keep_dims", keep_dims.to_string())],
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            vec![
                ("transpose_a", transpose_a.to_string()),
                ("transpose_b", transpose_b.to_string()),
            ]
        }
        Op::Softmax { axis } | Op::Concat { axis } => vec![("axis", axis.to_string())],
        Op::RmsNorm { eps } | Op::LayerNorm { eps } => vec![("eps", f64_to_string(*eps))],
        Op::Rope {
            layout,
            theta,
            rot_dims,
        } => vec![
            ("layout", layout.name().to_string()),
            ("theta", f64_to_string(*theta)),
            ("rot_dims", rot_dims.to_string()),
        ],
        Op::Reshape { shape } => vec![("shape", shape_to_string(shape))],
        Op::Permute { perm } => vec![("perm", list(perm))],
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => vec![
            ("axis", axis.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ],
        Op::Cast { dtype } => vec![("dtype", dtype.name().to_string())],
        Op::Dequant { format } | Op::Quantize { format } => {
            vec![("format", format.name().to_string())]
        }
        Op::Input { .. }
        | Op::Param { .. }
        | Op::Const(_)
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Select
        | Op::Gather => Vec::new(),
    }
}

/// The op named `name` (any op but input, param and const) from its attributes.
pub(super) fn build(name: &str, a: &Attrs) -> Result<Op, SyntaxError> {
    if let Some(op) = elementwise(name) {
        a.allow(&[])?;
        return Ok(op);
    }
    let reduce = |op: ReduceOp| -> Result<Op, SyntaxError> {
        a.allow(&["axes", "keep_dims"])?;
        Ok(Op::Reduce {
            op,
            axes: a.usizes("axes")?,
            keep_dims: a.bool("keep_dims")?,
        })
    };
    Ok(match name {
        "select" | "gather" => {
            a.allow(&[])?;
            if name == "select" {
                Op::Select
            } else {
                Op::Gather
            }
        }
        "reduce_sum" => reduce(ReduceOp::Sum)?,
        "reduce_max" => reduce(ReduceOp::Max)?,
        "reduce_mean" => reduce(ReduceOp::Mean)?,
        "matmul" => {
            a.allow(&["transpose_a", "transpose_b"])?;
            Op::MatMul {
                transpose_a: a.bool("transpose_a")?,
                transpose_b: a.bool("transpose_b")?,
            }
        }
        "softmax" | "concat" => {
            a.allow(&["axis"])?;
            let axis = a.usize("axis")?;
            if name == "softmax" {
                Op::Softmax { axis }
            } else {
                Op::Concat { axis }
            }
        }
        "rms_norm" => {
            a.allow(&["eps"])?;
            Op::RmsNorm { eps: a.f64("eps")? }
        }
        "layer_norm" => {
            a.allow(&["eps"])?;
            Op::LayerNorm { eps: a.f64("eps")? }
        }
        "dequant" => {
            a.allow(&["format"])?;
            Op::Dequant {
                format: a.quant_format("format")?,
            }
        }
        "quantize" => {
            a.allow(&["format"])?;
            Op::Quantize {
                format: a.quant_format("format")?,
            }
        }
        "rope" => {
            a.allow(&["layout", "theta", "rot_dims"])?;
            Op::Rope {
                layout: a.layout("layout")?,
                theta: a.f64("theta")?,
                rot_dims: a.usize("rot_dims")?,
            }
        }
        "reshape" => {
            a.allow(&["shape"])?;
            Op::Reshape {
                shape: a.shape("shape")?,
            }
        }
        "permute" => {
            a.allow(&["perm"])?;
            Op::Permute {
                perm: a.usizes("perm")?,
            }
        }
        "slice" => {
            a.allow(&["axis", "start", "end", "step"])?;
            Op::Slice {
                axis: a.usize("axis")?,
                start: a.i64("start")?,
                end: a.i64("end")?,
                step: a.i64("step")?,
            }
        }
        "cast" => {
            a.allow(&["dtype"])?;
            Op::Cast {
                dtype: a.dtype("dtype")?,
            }
        }
        _ => return err(a.op_col, format!("unknown op `{name}`")),
    })
}

struct Entry {
    key: String,
    key_col: usize,
    value_col: usize,
    value: Vec<Token>,
}

/// The `key=value` pairs of one node, values still as tokens.
pub(super) struct Attrs {
    op: String,
    op_col: usize,
    entries: Vec<Entry>,
}

impl Attrs {
    pub fn new(op: &str, op_col: usize) -> Attrs {
        Attrs {
            op: op.to_string(),
            op_col,
            entries: Vec::new(),
        }
    }

    pub fn insert(
        &mut self,
        key: &str,
        key_col: usize,
        value_col: usize,
        value: Vec<Token>,
    ) -> Result<(), SyntaxError> {
        if self.entries.iter().any(|e| e.key == key) {
            return err(
                key_col,
                format!("attribute `{key}` of {} is given twice", self.op),
            );
        }
        self.entries.push(Entry {
            key: key.to_string(),
            key_col,
            value_col,
            value,
        });
        Ok(())
    }

    /// Rejects keys the op does not take, listing the ones it does.
    fn allow(&self, names: &[&str]) -> Result<(), SyntaxError> {
        match self
            .entries
            .iter()
            .find(|e| !names.contains(&e.key.as_str()))
        {
            None => Ok(()),
            Some(e) if names.is_empty() => err(
                e.key_col,
                format!(
                    "unknown attribute `{}`: {} takes no attributes",
                    e.key, self.op
                ),
            ),
            Some(e) => {
                let msg = format!(
                    "unknown attribute `{}` for {} (it takes {})",
                    e.key,
                    self.op,
                    names.join(", ")
                );
                err(e.key_col, msg)
            }
        }
    }

    /// Reads `key`'s value with `read`, which must consume all of it.
    fn get<T>(
        &self,
        key: &str,
        expected: &str,
        read: impl FnOnce(&mut Cursor) -> Result<Option<T>, SyntaxError>,
    ) -> Result<T, SyntaxError> {
        let Some(e) = self.entries.iter().find(|e| e.key == key) else {
            return err(
                self.op_col,
                format!("{} is missing attribute `{key}`", self.op),
            );
        };
        let end_col = e
            .value
            .last()
            .map_or(e.value_col, |t| t.col + t.tok.to_string().chars().count());
        let mut cur = Cursor::new(&e.value, end_col);
        match read(&mut cur)? {
            Some(v) if cur.at_end() => Ok(v),
            _ => {
                let text: String = e.value.iter().map(|t| t.tok.to_string()).collect();
                let msg = format!(
                    "bad value `{text}` for attribute `{key}` of {}: expected {expected}",
                    self.op
                );
                err(e.value_col, msg)
            }
        }
    }

    fn usize(&self, key: &str) -> Result<usize, SyntaxError> {
        self.get(key, "a non-negative integer", |c| Ok(read_usize(c)))
    }

    fn i64(&self, key: &str) -> Result<i64, SyntaxError> {
        self.get(key, "an integer", |c| {
            Ok(number_text(c).and_then(|t| t.parse().ok()))
        })
    }

    fn f64(&self, key: &str) -> Result<f64, SyntaxError> {
        self.get(key, "a number (or inf, -inf, nan)", |c| {
            Ok(number_text(c).and_then(|t| t.parse().ok()))
        })
    }

    fn bool(&self, key: &str) -> Result<bool, SyntaxError> {
        self.get(key, "true or false", |c| {
            Ok(match c.next().map(|t| &t.tok) {
                Some(Tok::Ident(s)) if s == "true" => Some(true),
                Some(Tok::Ident(s)) if s == "false" => Some(false),
                _ => None,
            })
        })
    }

    fn layout(&self, key: &str) -> Result<RopeLayout, SyntaxError> {
        self.get(key, "interleaved or neox", |c| {
            Ok(match c.next().map(|t| &t.tok) {
                Some(Tok::Ident(s)) => LAYOUTS.into_iter().find(|l| l.name() == s),
                _ => None,
            })
        })
    }

    fn quant_format(&self, key: &str) -> Result<crate::QuantFormat, SyntaxError> {
        self.get(key, "a block format (q8_0, q4_0)", |c| {
            Ok(match c.next().map(|t| &t.tok) {
                Some(Tok::Ident(s)) => crate::QuantFormat::from_name(s),
                _ => None,
            })
        })
    }

    fn dtype(&self, key: &str) -> Result<DType, SyntaxError> {
        self.get(key, "a dtype", |c| dtype(c).map(Some))
    }

    fn shape(&self, key: &str) -> Result<Shape, SyntaxError> {
        self.get(key, "a shape", |c| shape(c).map(Some))
    }

    /// `[i, j, ...]` of non-negative integers.
    fn usizes(&self, key: &str) -> Result<Vec<usize>, SyntaxError> {
        self.get(key, "a list of non-negative integers like [0,2]", |c| {
            let mut xs = Vec::new();
            if !c.eat('[') {
                return Ok(None);
            }
            if c.eat(']') {
                return Ok(Some(xs));
            }
            loop {
                let Some(x) = read_usize(c) else {
                    return Ok(None);
                };
                xs.push(x);
                if c.eat(']') {
                    return Ok(Some(xs));
                }
                if !c.eat(',') {
                    return Ok(None);
                }
            }
        })
    }
}

fn read_usize(c: &mut Cursor) -> Option<usize> {
    match c.next().map(|t| &t.tok) {
        Some(Tok::Num(s)) => s.parse().ok(),
        _ => None,
    }
}
