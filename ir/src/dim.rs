//! Symbolic dimensions. A dim is an affine expression over named symbols (`seq`, `batch`,
//! `2*seq+1`): enough for the shapes LLM graphs need (prompt length, KV length = past + seq)
//! while staying closed under the arithmetic shape rules do (add, subtract, scale), so two
//! shapes can be compared for equality without a solver.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// `constant + sum(coeff * symbol)`, kept normalised: terms sorted by name, no zero coeffs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dim {
    pub constant: i64,
    pub terms: Vec<(String, i64)>,
}

/// Values of the symbols at run time.
pub type Bindings = BTreeMap<String, i64>;

impl Dim {
    pub fn known(n: i64) -> Dim {
        Dim {
            constant: n,
            terms: Vec::new(),
        }
    }

    pub fn sym(name: &str) -> Dim {
        Dim {
            constant: 0,
            terms: vec![(name.to_string(), 1)],
        }
    }

    pub fn as_known(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.constant)
    }

    pub fn is_known(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|(s, _)| s.as_str())
    }

    pub fn add(&self, other: &Dim) -> Dim {
        let mut map: BTreeMap<String, i64> = self.terms.iter().cloned().collect();
        for (s, c) in &other.terms {
            *map.entry(s.clone()).or_insert(0) += c;
        }
        Dim {
            constant: self.constant + other.constant,
            terms: normalise(map),
        }
    }

    pub fn scale(&self, k: i64) -> Dim {
        let map = self.terms.iter().map(|(s, c)| (s.clone(), c * k)).collect();
        Dim {
            constant: self.constant * k,
            terms: normalise(map),
        }
    }

    pub fn sub(&self, other: &Dim) -> Dim {
        self.add(&other.scale(-1))
    }

    /// Value at run time; `None` names the first unbound symbol.
    pub fn eval(&self, env: &Bindings) -> Result<i64, String> {
        let mut v = self.constant;
        for (s, c) in &self.terms {
            let x = env.get(s).ok_or_else(|| s.clone())?;
            v += c * x;
        }
        Ok(v)
    }
}

fn normalise(map: BTreeMap<String, i64>) -> Vec<(String, i64)> {
    map.into_iter().filter(|(_, c)| *c != 0).collect()
}

impl From<i64> for Dim {
    fn from(n: i64) -> Dim {
        Dim::known(n)
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::known(n as i64)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::sym(s)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "{}", self.constant);
        }
        for (i, (s, c)) in self.terms.iter().enumerate() {
            let sign = if *c < 0 {
                "-"
            } else if i > 0 {
                "+"
            } else {
                ""
            };
            let mag = c.abs();
            if mag == 1 {
                write!(f, "{sign}{s}")?;
            } else {
                write!(f, "{sign}{mag}*{s}")?;
            }
        }
        match self.constant.cmp(&0) {
            std::cmp::Ordering::Greater => write!(f, "+{}", self.constant),
            std::cmp::Ordering::Less => write!(f, "-{}", -self.constant),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }
}

/// A tensor shape: one [`Dim`] per axis, outermost first, row-major.
pub type Shape = Vec<Dim>;

/// Shapes print as `[2,seq,64]`.
pub fn shape_to_string(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Concrete extents of a shape under `env`.
pub fn eval_shape(shape: &[Dim], env: &Bindings) -> Result<Vec<usize>, String> {
    shape
        .iter()
        .map(|d| {
            let v = d.eval(env)?;
            usize::try_from(v).map_err(|_| format!("dim {d} evaluates to negative {v}"))
        })
        .collect()
}

pub fn known_shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::from(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_arithmetic_normalises() {
        let seq = Dim::sym("seq");
        let past = Dim::sym("past");
        let kv = past.add(&seq);
        assert_eq!(kv.to_string(), "past+seq");
        assert_eq!(kv.sub(&seq), past);
        assert_eq!(seq.scale(2).add(&Dim::known(-1)).to_string(), "2*seq-1");
        assert_eq!(seq.sub(&seq), Dim::known(0));
    }

    #[test]
    fn eval_reports_unbound_symbol() {
        let mut env = Bindings::new();
        env.insert("seq".into(), 7);
        assert_eq!(Dim::sym("seq").scale(3).eval(&env), Ok(21));
        assert_eq!(Dim::sym("batch").eval(&env), Err("batch".to_string()));
    }
}
