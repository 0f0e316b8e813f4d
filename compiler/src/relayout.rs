//! Weight relayout: quantized weights stored in kiln's regroupings of their formats
//! (`QuantFormat::relaid`), chosen before compiling so that every target of an artifact
//! reads the same weight bytes.
//!
//! A GGUF Q4_K block keeps runs 0 and 1 in the low and high nibbles of the same 32 bytes,
//! so a 512-bit vector of consecutive elements needs two loads and a shuffle; the relaid
//! block keeps 64 consecutive elements in 64 consecutive bytes, and a CPU dot product of
//! 64 bytes covers two runs with one load, one mask and one multiply (Q6_K: its high bits,
//! four runs). The values are unchanged, and every other reader (GPU dot products,
//! gathers, the interpreter) decodes through the same `Layout`, at the same cost.

use kiln_ir::{Graph, IrError, NodeId, Op, QuantFormat};
use std::collections::HashMap;

/// A parameter whose bytes must be rewritten from `from` to `to` blocks
/// (`QuantFormat::relayout`) for the graph `relaid` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relaid {
    pub param: String,
    pub from: QuantFormat,
    pub to: QuantFormat,
}

/// `g` with every parameter that is read only through `dequant` (not as an output) of a
/// format with a regrouping read as that regrouping instead, and the parameters to
/// rewrite. `g` itself (and an empty list) when there is none.
pub fn relaid(g: &Graph) -> Result<(Graph, Vec<Relaid>), IrError> {
    let mut moves = Vec::new();
    let mut to_of: HashMap<NodeId, QuantFormat> = HashMap::new();
    for (name, p) in g.params_named() {
        let formats: Vec<Option<QuantFormat>> = g
            .users(p)
            .into_iter()
            .map(|u| match g.node(u).op {
                Op::Dequant { format } => Some(format),
                _ => None,
            })
            .collect();
        let Some(&Some(from)) = formats.first() else {
            continue;
        };
        let Some(to) = from.relaid() else { continue };
        let is_output = g.is_output(p);
        if is_output || formats.iter().any(|f| *f != Some(from)) {
            continue;
        }
        to_of.insert(p, to);
        moves.push(Relaid {
            param: name,
            from,
            to,
        });
    }
    if moves.is_empty() {
        return Ok((g.clone(), moves));
    }
    let mut out = Graph::new();
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    for id in g.node_ids() {
        let ins: Vec<NodeId> = g.inputs(id).iter().map(|i| map[i]).collect();
        let op = match (
            &g.node(id).op,
            g.inputs(id).first().and_then(|i| to_of.get(i)),
        ) {
            (Op::Dequant { .. }, Some(&format)) => Op::Dequant { format },
            (op, _) => op.clone(),
        };
        map.insert(id, out.add(op, &ins)?);
    }
    for (name, node) in &g.outputs {
        out.set_output(name, map[node]);
    }
    Ok((out, moves))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Builder, DType};

    /// A Q4_K matrix read only by `dequant` is relaid; one also read raw, and a Q8_0
    /// matrix, are not.
    #[test]
    fn parameters_read_only_through_dequant_are_relaid() {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, [1, 256]).unwrap();
        let q4 = b.param("q4", DType::U8, [2, 144]).unwrap();
        let q8 = b.param("q8", DType::U8, [2, 272]).unwrap();
        let raw = b.param("raw", DType::U8, [2, 144]).unwrap();
        let mut sum = None;
        for (p, f) in [
            (q4, QuantFormat::Q4K),
            (q8, QuantFormat::Q8_0),
            (raw, QuantFormat::Q4K),
        ] {
            let w = b.dequant(p, f).unwrap();
            let y = b.matmul_t(x, w, false, true).unwrap();
            sum = Some(match sum {
                None => y,
                Some(s) => b.add(s, y).unwrap(),
            });
        }
        b.output("y", sum.unwrap());
        b.output("raw", raw);
        let g = b.finish();
        let (r, moves) = relaid(&g).unwrap();
        assert_eq!(
            moves,
            vec![Relaid {
                param: "q4".into(),
                from: QuantFormat::Q4K,
                to: QuantFormat::Q4KX
            }]
        );
        let formats: Vec<QuantFormat> = r
            .node_ids()
            .filter_map(|n| match r.node(n).op {
                Op::Dequant { format } => Some(format),
                _ => None,
            })
            .collect();
        assert_eq!(
            formats,
            vec![QuantFormat::Q4KX, QuantFormat::Q8_0, QuantFormat::Q4K]
        );
        assert_eq!(r.len(), g.len());
    }
}
