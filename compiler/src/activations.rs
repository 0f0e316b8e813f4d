//! Activation quantization: the graph pass that lets decode multiply bytes by bytes.
//!
//! A matmul of f32 activations by quantized weights becomes a matmul of
//! `dequant(quantize(x))` by them, so its dot-product kernel can read both operands as
//! bytes (`lower::int_dot`). The activations are encoded as `q8_0` once per matmul input,
//! shared by every matmul that reads it (an LLM's Q, K and V projections read one normed
//! row). That changes the numbers by the activations' quantization error (about 0.4% of
//! each block's largest value), as llama.cpp's CPU backend does for every quantized type,
//! which is why it is an option (`Options::quantize_activations`, `--quantize-activations`).

use crate::lower::{byte_dot_lanes, gpu_byte_dot_applies, q8k_dot_applies};
use crate::schedule::Schedule;
use kiln_ir::{DType, Graph, IrError, NodeId, Op, QuantFormat};
use std::collections::HashMap;

/// `g` with the activations of every eligible matmul quantized (see the module doc), for
/// `schedule`; the graph unchanged when none is eligible.
pub fn quantize_activations(g: &Graph, schedule: &Schedule) -> Result<Graph, IrError> {
    let mut out = Graph::new();
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let mut quantized: HashMap<(NodeId, QuantFormat), NodeId> = HashMap::new();
    for id in g.node_ids() {
        let mut ins: Vec<NodeId> = g.inputs(id).iter().map(|i| map[i]).collect();
        if let Some(format) = activation_format(g, id, schedule) {
            let a = g.inputs(id)[0];
            let q = match quantized.get(&(a, format)) {
                Some(&q) => q,
                None => {
                    let bytes = out.add(Op::Quantize { format }, &[map[&a]])?;
                    let q = out.add(Op::Dequant { format }, &[bytes])?;
                    quantized.insert((a, format), q);
                    q
                }
            };
            ins[0] = q;
        }
        map.insert(id, out.add(g.node(id).op.clone(), &ins)?);
    }
    for (name, node) in &g.outputs {
        out.set_output(name, map[node]);
    }
    Ok(out)
}

/// The activation format for a matmul that would read quantized weight rows with byte dot
/// products, given quantized activations (the dot-product form for few rows, its tiles for
/// many): `q8_k` for the K-quants (one scale per 256 elements, so their runs sum in
/// integers; see `lower::k_dot`), `q8_0` for the others; on GPUs `q8_0` for every format
/// whose runs tile its blocks (`lower::gpu_byte_dot`).
fn activation_format(g: &Graph, id: NodeId, schedule: &Schedule) -> Option<QuantFormat> {
    let lanes = schedule.lanes;
    let n = g.node(id);
    let Op::MatMul {
        transpose_a: false,
        transpose_b: true,
    } = n.op
    else {
        return None;
    };
    let ins = g.inputs(id);
    let (a, b) = (g.node(ins[0]), g.node(ins[1]));
    let k = a.shape.last().and_then(|k| k.as_known())?;
    let Op::Dequant { format } = b.op else {
        return None;
    };
    if b.shape.len() != 2 || a.dtype != DType::F32 {
        return None;
    }
    let whole = |f: QuantFormat| k % f.block_elems() as i64 == 0;
    if schedule.gpu {
        (gpu_byte_dot_applies(format) && whole(QuantFormat::Q8_0)).then_some(QuantFormat::Q8_0)
    } else if q8k_dot_applies(format, lanes) && whole(QuantFormat::Q8K) {
        Some(QuantFormat::Q8K)
    } else {
        (byte_dot_lanes(format, lanes).is_some() && whole(QuantFormat::Q8_0))
            .then_some(QuantFormat::Q8_0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Builder, Dim};

    /// Three projections of one row share one quantize; a matmul of many known rows gets
    /// its own (its tiles multiply bytes too); one over f32 weights is left as it was.
    #[test]
    fn projections_of_one_row_share_one_quantize() {
        let mut b = Builder::new();
        let x = b
            .input("x", DType::F32, vec![Dim::sym("seq"), Dim::from(64i64)])
            .unwrap();
        let many = b.input("m", DType::F32, [9, 64]).unwrap();
        let mut outs = Vec::new();
        for n in ["q", "k", "v"] {
            let raw = b.param(n, DType::U8, [16, 36]).unwrap();
            let w = b.dequant(raw, QuantFormat::Q4_0).unwrap();
            outs.push(b.matmul_t(x, w, false, true).unwrap());
        }
        let raw = b.param("o", DType::U8, [16, 36]).unwrap();
        let w = b.dequant(raw, QuantFormat::Q4_0).unwrap();
        outs.push(b.matmul_t(many, w, false, true).unwrap());
        let f = b.param("f", DType::F32, [16, 64]).unwrap();
        outs.push(b.matmul_t(x, f, false, true).unwrap());
        for (i, o) in outs.into_iter().enumerate() {
            b.output(&format!("y{i}"), o);
        }
        let g = quantize_activations(&b.finish(), &Schedule::for_vector_bits(256)).unwrap();
        let ops: Vec<&Op> = g.node_ids().map(|id| &g.node(id).op).collect();
        let quantizes = ops
            .iter()
            .filter(|o| matches!(o, Op::Quantize { .. }))
            .count();
        assert_eq!(quantizes, 2);
        let reads_quantized = |out: usize| {
            let mm = g.outputs[out].1;
            matches!(g.node(g.inputs(mm)[0]).op, Op::Dequant { .. })
        };
        assert!((0..4).all(reads_quantized));
        assert!(!reads_quantized(4));
        kiln_ir::verify(&g).unwrap();
    }

    /// K-quant weights take q8_k activations on CPUs (one scale per 256 elements) and
    /// q8_0 on GPUs (`lower::gpu_byte_dot`, 32-element steps' blocks).
    #[test]
    fn gpus_quantize_every_format_to_q8_0() {
        let graph = || {
            let mut b = Builder::new();
            let x = b.input("x", DType::F32, [1, 256]).unwrap();
            let raw = b.param("w", DType::U8, [8, 144]).unwrap();
            let w = b.dequant(raw, QuantFormat::Q4K).unwrap();
            let y = b.matmul_t(x, w, false, true).unwrap();
            b.output("y", y);
            b.finish()
        };
        let gpu = Schedule {
            byte_dot: true,
            ..Schedule::gpu()
        };
        for (schedule, want) in [
            (Schedule::for_vector_bits(256), QuantFormat::Q8K),
            (gpu, QuantFormat::Q8_0),
        ] {
            let g = quantize_activations(&graph(), &schedule).unwrap();
            let formats: Vec<QuantFormat> = g
                .node_ids()
                .filter_map(|id| match g.node(id).op {
                    Op::Quantize { format } => Some(format),
                    _ => None,
                })
                .collect();
            assert_eq!(formats, [want], "gpu: {}", schedule.gpu);
        }
    }
}
