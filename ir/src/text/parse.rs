//! Reads `.kir` text back into a [`Graph`]. Each node goes through `Graph::add`, so the
//! result is typed by the same shape rules as a graph built in Rust; a shape error is
//! reported at the line of the node that caused it. The reader never panics: numbers that
//! would overflow the shape arithmetic are rejected before the shape rules see them.

use super::lex::{err, tokenize, Cursor, SyntaxError, Tok, Token};
use super::ops::{self, Attrs};
use super::values::{constant, ty};
use super::VERSION;
use crate::dim::{Dim, Shape};
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use std::collections::{BTreeMap, HashMap};

/// Parses a whole `.kir` file. Errors are [`IrError::Parse`] with a 1-based line and column.
pub fn parse(src: &str) -> Result<Graph, IrError> {
    let mut p = Parser {
        graph: Graph::new(),
        names: HashMap::new(),
    };
    let mut seen_header = false;
    for (i, text) in src.lines().enumerate() {
        let line = i + 1;
        let at_line = |e: SyntaxError| IrError::Parse {
            line,
            col: e.col,
            msg: e.msg,
        };
        let toks = tokenize(text).map_err(at_line)?;
        if toks.is_empty() {
            continue;
        }
        let mut cur = Cursor::new(&toks, text.chars().count() + 1);
        if seen_header {
            p.statement(&mut cur, line).map_err(at_line)?;
        } else {
            header(&mut cur).map_err(at_line)?;
            seen_header = true;
        }
    }
    if !seen_header {
        let msg = format!("missing `kir {VERSION}` header: the file has no statements");
        return Err(IrError::Parse {
            line: 1,
            col: 1,
            msg,
        });
    }
    Ok(p.graph)
}

fn header(cur: &mut Cursor) -> Result<(), SyntaxError> {
    if cur.peek() != Some(&Tok::Ident("kir".into())) {
        let msg = format!(
            "missing `kir {VERSION}` header: expected it first, found {}",
            cur.found()
        );
        return err(cur.col(), msg);
    }
    cur.next();
    let col = cur.col();
    match cur.next().map(|t| &t.tok) {
        Some(Tok::Num(v)) if v.parse::<u32>() == Ok(VERSION) => {}
        Some(Tok::Num(v)) => {
            let msg = format!("unsupported .kir version {v} (this reader knows version {VERSION})");
            return err(col, msg);
        }
        _ => {
            return err(
                col,
                "malformed header: expected a version number after `kir`",
            )
        }
    }
    cur.expect_end("the header")
}

struct Parser {
    graph: Graph,
    /// Text name (without `%`) to node and the line that defined it.
    names: HashMap<String, (NodeId, usize)>,
}

impl Parser {
    fn statement(&mut self, cur: &mut Cursor, line: usize) -> Result<(), SyntaxError> {
        let col = cur.col();
        let found = cur.found();
        match cur.next().map(|t| &t.tok) {
            Some(Tok::Node(name)) => self.node(cur, name, col, line),
            Some(Tok::Ident(kw)) if kw == "output" => {
                let name = cur.string("an output name")?;
                cur.expect('=', "after the output name")?;
                let id = self.operand(cur)?;
                cur.expect_end("the output")?;
                self.graph.set_output(name, id);
                Ok(())
            }
            Some(Tok::Ident(kw)) if kw == "kir" => err(col, "the `kir` header appears twice"),
            _ => err(
                col,
                format!("expected `%name = op ...` or `output \"name\" = %node`, found {found}"),
            ),
        }
    }

    fn node(
        &mut self,
        cur: &mut Cursor,
        name: &str,
        col: usize,
        line: usize,
    ) -> Result<(), SyntaxError> {
        if let Some((_, first)) = self.names.get(name) {
            return err(
                col,
                format!("duplicate node name %{name} (first defined on line {first})"),
            );
        }
        cur.expect('=', &format!("after %{name}"))?;
        let (op_name, op_col) = cur.ident("an op name")?;
        if !ops::is_op(op_name) {
            return err(op_col, format!("unknown op `{op_name}`"));
        }
        let (op, inputs) = self.read_op(cur, op_name, op_col)?;
        cur.expect_end(&format!("the {op_name} node"))?;
        check_arity(&op, inputs.len(), op_col)?;
        let shapes: Vec<&Shape> = inputs.iter().map(|&i| &self.graph.node(i).shape).collect();
        let wrap = |msg: String| SyntaxError {
            col,
            msg: format!("node %{name} ({op_name}): {msg}"),
        };
        guard_overflow(&op, &shapes).map_err(wrap)?;
        let id = self.graph.add(op, &inputs).map_err(|e| match e {
            IrError::Node { msg, .. } => wrap(msg),
            other => wrap(other.to_string()),
        })?;
        self.names.insert(name.to_string(), (id, line));
        Ok(())
    }

    /// The op and its operands, from after the op name to the end of the line.
    fn read_op(
        &self,
        cur: &mut Cursor,
        op_name: &str,
        op_col: usize,
    ) -> Result<(Op, Vec<NodeId>), SyntaxError> {
        Ok(match op_name {
            "input" | "param" => {
                let name = cur.string(&format!("the {op_name}'s name"))?.to_string();
                let (dtype, shape) = ty(cur)?;
                let op = if op_name == "input" {
                    Op::Input { name, dtype, shape }
                } else {
                    Op::Param { name, dtype, shape }
                };
                (op, Vec::new())
            }
            "const" => (Op::Const(constant(cur)?), Vec::new()),
            _ => {
                let inputs = self.operands(cur)?;
                (
                    ops::build(op_name, &read_attrs(cur, op_name, op_col)?)?,
                    inputs,
                )
            }
        })
    }

    fn operands(&self, cur: &mut Cursor) -> Result<Vec<NodeId>, SyntaxError> {
        let mut ids = Vec::new();
        if matches!(cur.peek(), Some(Tok::Node(_))) {
            loop {
                ids.push(self.operand(cur)?);
                if !cur.eat(',') {
                    break;
                }
            }
        }
        if matches!(cur.peek(), Some(Tok::Node(_))) {
            return err(cur.col(), "expected `,` between operands");
        }
        Ok(ids)
    }

    fn operand(&self, cur: &mut Cursor) -> Result<NodeId, SyntaxError> {
        let col = cur.col();
        match cur.peek() {
            Some(Tok::Node(n)) => {
                cur.next();
                match self.names.get(n) {
                    Some((id, _)) => Ok(*id),
                    None => err(col, format!("undefined node %{n}")),
                }
            }
            _ => err(
                col,
                format!("expected an operand `%name`, found {}", cur.found()),
            ),
        }
    }
}

/// `key=value ...` up to the end of the line; values stay as tokens until the op says
/// what type each one has.
fn read_attrs(cur: &mut Cursor, op: &str, op_col: usize) -> Result<Attrs, SyntaxError> {
    let mut attrs = Attrs::new(op, op_col);
    while !cur.at_end() {
        let (key, key_col) = cur.ident("an attribute `key=value`")?;
        cur.expect('=', &format!("after attribute `{key}`"))?;
        let value_col = cur.col();
        let mut value: Vec<Token> = Vec::new();
        match cur.peek() {
            None => return err(value_col, format!("missing value for attribute `{key}`")),
            Some(Tok::Punct('[')) => loop {
                let Some(t) = cur.next() else {
                    return err(value_col, format!("unclosed `[` in attribute `{key}`"));
                };
                value.push(t.clone());
                if t.tok == Tok::Punct(']') {
                    break;
                }
            },
            Some(Tok::Punct('-' | '+')) => {
                value.extend(cur.next().into_iter().chain(cur.next()).cloned())
            }
            Some(_) => value.extend(cur.next().cloned()),
        }
        attrs.insert(key, key_col, value_col, value)?;
    }
    Ok(attrs)
}

fn check_arity(op: &Op, got: usize, op_col: usize) -> Result<(), SyntaxError> {
    let name = op.name();
    match op.arity() {
        Some(n) if n != got => {
            let s = if n == 1 { "" } else { "s" };
            err(op_col, format!("{name} takes {n} operand{s}, got {got}"))
        }
        None if got == 0 => err(op_col, format!("{name} takes at least 1 operand, got 0")),
        _ => Ok(()),
    }
}

/// Rejects operands whose sizes would overflow the i64 arithmetic of the shape rules
/// (`infer`), which would otherwise panic in debug builds.
fn guard_overflow(op: &Op, shapes: &[&Shape]) -> Result<(), String> {
    let too_big = || "sizes overflow a 64-bit integer".to_string();
    match op {
        Op::Reshape { shape } => {
            for sh in shapes.iter().copied().chain([shape]) {
                sh.iter()
                    .filter_map(Dim::as_known)
                    .try_fold(1i64, i64::checked_mul)
                    .ok_or_else(too_big)?;
            }
        }
        Op::Slice {
            start, end, step, ..
        } if *start >= 0 && end > start && *step >= 1 => {
            (end - start).checked_add(step - 1).ok_or_else(too_big)?;
        }
        Op::Concat { axis } => {
            let mut constant: i64 = 0;
            let mut terms: BTreeMap<&str, i64> = BTreeMap::new();
            for d in shapes.iter().filter_map(|sh| sh.get(*axis)) {
                constant = constant.checked_add(d.constant).ok_or_else(too_big)?;
                for (s, k) in &d.terms {
                    let slot = terms.entry(s).or_insert(0);
                    *slot = slot.checked_add(*k).ok_or_else(too_big)?;
                }
            }
            if constant == i64::MIN || terms.values().any(|k| *k == i64::MIN) {
                return Err(too_big());
            }
        }
        _ => {}
    }
    Ok(())
}
