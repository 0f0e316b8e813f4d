//! Property tests: random well-typed graphs survive `parse(print(g))` node for node, and
//! the reader returns an error, never a panic, on mangled text.
//!
//! Graphs come from a list of random steps interpreted by [`Gen`], which picks operands
//! and makes fresh leaves so that every op it adds fits its shape rule; a step that does
//! not fit would be a bug in the generator, so it fails the test.

use super::{parse, print};
use crate::builder::Builder;
use crate::dim::{Dim, Shape};
use crate::dtype::DType;
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, CmpOp, Op, ReduceOp, RopeLayout, UnaryOp};
use crate::tensor::Tensor;
use crate::verify;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    seed: u64,
    x: f64,
}

fn odd_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6..1e6f64,
        any::<f64>(),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        Just(-0.0),
        Just(5e-324),
        Just(f64::MAX),
        Just(1e-5),
        Just(0.1),
        Just(1e300),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step =
        (any::<u8>(), any::<u64>(), odd_float()).prop_map(|(kind, seed, x)| Step { kind, seed, x });
    prop::collection::vec(step, 1..30)
}

struct Gen {
    b: Builder,
    nodes: Vec<NodeId>,
    state: u64,
    names: usize,
}

impl Gen {
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (self.state ^ (self.state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB) ^ (z >> 31)
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_of<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.pick(xs.len())]
    }

    fn coin(&mut self) -> bool {
        self.pick(2) == 0
    }

    fn dim(&mut self) -> Dim {
        let (seq, past) = (Dim::sym("seq"), Dim::sym("past"));
        match self.pick(10) {
            0 => Dim::sym("batch"),
            1 => seq,
            2 => past.add(&seq),
            3 => seq.scale(2).add(&Dim::known(1)),
            4 => past.sub(&seq).add(&Dim::known(-3)),
            5 => Dim::known(0),
            _ => Dim::known(1 + self.pick(6) as i64),
        }
    }

    fn shape(&mut self, min_rank: usize) -> Shape {
        let rank = min_rank + self.pick(4);
        (0..rank).map(|_| self.dim()).collect()
    }

    /// Dtypes ops compute with (u8 holds raw bytes for `dequant` only).
    fn dtype(&mut self) -> DType {
        self.one_of(&[DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64])
    }

    fn float_dtype(&mut self) -> DType {
        self.one_of(&[DType::F32, DType::F16, DType::BF16])
    }

    /// Unique names, some of them needing escapes.
    fn name(&mut self, prefix: &str) -> String {
        self.names += 1;
        match self.pick(6) {
            0 => format!("{prefix} \"{}\"\\\n\té#%", self.names),
            _ => format!("{prefix}{}", self.names),
        }
    }

    fn leaf(&mut self, dtype: DType, shape: Shape) -> NodeId {
        let name = self.name("t");
        let id = if self.coin() {
            self.b.input(&name, dtype, shape)
        } else {
            self.b.param(&name, dtype, shape)
        };
        id.expect("leaves always type")
    }

    fn any_node(&mut self) -> NodeId {
        if self.nodes.is_empty() {
            let (dt, sh) = (self.dtype(), self.shape(0));
            let id = self.leaf(dt, sh);
            self.nodes.push(id);
        }
        let i = self.pick(self.nodes.len());
        self.nodes[i]
    }

    fn ty(&self, id: NodeId) -> (DType, Shape) {
        let n = self.b.graph.node(id);
        (n.dtype, n.shape.clone())
    }

    fn constant(&mut self, dtype: DType, dims: Vec<usize>, x: f64) -> Op {
        let n: usize = dims.iter().product();
        let data = (0..n)
            .map(|i| [x, -x, i as f64, 0.1 * i as f64][self.pick(4)])
            .collect();
        Op::Const(Tensor::new(dtype, dims, data))
    }

    /// The op for step `s` and its operands; leaves it needs are added on the way.
    fn op(&mut self, s: &Step) -> (Op, Vec<NodeId>) {
        let x = self.any_node();
        let (dt, sh) = self.ty(x);
        let rank = sh.len();
        match s.kind % 17 {
            0 => {
                let (dtype, shape, name) = (self.dtype(), self.shape(0), self.name("in"));
                let op = if self.coin() {
                    Op::Input { name, dtype, shape }
                } else {
                    Op::Param { name, dtype, shape }
                };
                (op, vec![])
            }
            1 => {
                let dims = (0..self.pick(3)).map(|_| self.pick(4)).collect();
                let dtype = self.dtype();
                (self.constant(dtype, dims, s.x), vec![])
            }
            2 if dt.is_float() => (Op::Unary(self.one_of(&UnaryOp::ALL)), vec![x]),
            2 => (
                Op::Unary(self.one_of(&[UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Relu])),
                vec![x],
            ),
            3 => {
                let y = match self.pick(3) {
                    0 => x,
                    1 => self.leaf(dt, sh),
                    _ => {
                        let c = self.constant(dt, vec![], s.x);
                        self.b.op(c, &[]).expect("scalar const")
                    }
                };
                (Op::Binary(self.one_of(&BinaryOp::ALL)), vec![x, y])
            }
            4 => {
                let y = self.leaf(dt, sh);
                let cmp = self.one_of(&CmpOp::ALL);
                let c = self.b.compare(cmp, x, y).expect("compare");
                (Op::Select, vec![c, y, x])
            }
            5 if rank > 0 => {
                let mut axes: Vec<usize> = (0..rank).filter(|_| self.coin()).collect();
                if axes.is_empty() {
                    axes.push(self.pick(rank));
                }
                let turn = self.pick(axes.len());
                axes.rotate_left(turn);
                let ops = if dt.is_float() {
                    &ReduceOp::ALL[..]
                } else {
                    &ReduceOp::ALL[..2]
                };
                (
                    Op::Reduce {
                        op: self.one_of(ops),
                        axes,
                        keep_dims: self.coin(),
                    },
                    vec![x],
                )
            }
            6 if rank >= 2 => {
                let (ta, tb) = (self.coin(), self.coin());
                let k = if ta {
                    sh[rank - 2].clone()
                } else {
                    sh[rank - 1].clone()
                };
                let n = self.dim();
                let mut wsh = if self.coin() {
                    sh[..rank - 2].to_vec()
                } else {
                    vec![]
                };
                wsh.extend(if tb { [n, k] } else { [k, n] });
                let w = self.leaf(dt, wsh);
                (
                    Op::MatMul {
                        transpose_a: ta,
                        transpose_b: tb,
                    },
                    vec![x, w],
                )
            }
            7 if rank > 0 && dt.is_float() => (
                Op::Softmax {
                    axis: self.pick(rank),
                },
                vec![x],
            ),
            8 | 9 if rank > 0 && dt.is_float() => {
                let w = self.leaf(dt, vec![sh[rank - 1].clone()]);
                if s.kind % 17 == 8 {
                    (Op::RmsNorm { eps: s.x }, vec![x, w])
                } else {
                    let bias = self.leaf(dt, vec![sh[rank - 1].clone()]);
                    (Op::LayerNorm { eps: s.x }, vec![x, w, bias])
                }
            }
            10 => {
                let (seq, head) = (self.dim(), 2 * (1 + self.pick(8)));
                let heads = Dim::known(1 + self.pick(3) as i64);
                let dt = self.float_dtype();
                let xr = self.leaf(dt, vec![seq.clone(), heads, Dim::from(head)]);
                let pdt = self.one_of(&[DType::I32, DType::I64]);
                let pos = self.leaf(pdt, vec![seq]);
                let layout = if self.coin() {
                    RopeLayout::Neox
                } else {
                    RopeLayout::Interleaved
                };
                (
                    Op::Rope {
                        layout,
                        theta: s.x,
                        rot_dims: 2 * (1 + self.pick(head / 2)),
                    },
                    vec![xr, pos],
                )
            }
            11 if rank > 0 => {
                let (idt, ish) = (self.one_of(&[DType::I32, DType::I64]), self.shape(0));
                let ids = self.leaf(idt, ish);
                (Op::Gather, vec![x, ids])
            }
            12 => {
                let mut shape = sh.clone();
                if self.coin() {
                    shape.reverse();
                } else {
                    let known: i64 = sh.iter().filter_map(Dim::as_known).product();
                    shape.retain(|d| !d.is_known());
                    shape.insert(self.pick(shape.len() + 1), Dim::known(known));
                }
                (Op::Reshape { shape }, vec![x])
            }
            13 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                for i in (1..rank).rev() {
                    perm.swap(i, self.pick(i + 1));
                }
                (Op::Permute { perm }, vec![x])
            }
            14 if rank > 0 => {
                let axis = self.pick(rank);
                let size = sh[axis].as_known().unwrap_or(6);
                if size == 0 {
                    return (Op::Unary(UnaryOp::Abs), vec![x]);
                }
                let start = self.pick(size as usize) as i64;
                let end = start + 1 + self.pick((size - start) as usize) as i64;
                (
                    Op::Slice {
                        axis,
                        start,
                        end,
                        step: 1 + self.pick(3) as i64,
                    },
                    vec![x],
                )
            }
            15 if rank > 0 => (
                Op::Concat {
                    axis: self.pick(rank),
                },
                vec![x; 1 + self.pick(3)],
            ),
            _ => (
                Op::Cast {
                    dtype: self.dtype(),
                },
                vec![x],
            ),
        }
    }
}

fn build(steps: &[Step]) -> Graph {
    let mut g = Gen {
        b: Builder::new(),
        nodes: Vec::new(),
        state: steps[0].seed,
        names: 0,
    };
    for s in steps {
        g.state ^= s.seed;
        let (op, inputs) = g.op(s);
        let desc = format!("{op:?} on {inputs:?}");
        let id =
            g.b.op(op, &inputs)
                .unwrap_or_else(|e| panic!("generator made an ill-typed node {desc}: {e}"));
        g.nodes.push(id);
    }
    for _ in 0..1 + g.pick(3) {
        let (name, node) = (g.name("out"), g.any_node());
        g.b.output(&name, node);
    }
    g.b.finish()
}

/// Node-by-node equality. Values are compared with `==` and, so that NaN equals NaN and
/// -0.0 differs from 0.0, by their `Debug` form (which spells every f64 exactly).
fn assert_same(a: &Graph, b: &Graph) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (x, y) in a.node_ids().zip(b.node_ids()) {
        let (nx, ny) = (a.node(x), b.node(y));
        let dx = format!("{nx:?}");
        prop_assert_eq!(&dx, &format!("{ny:?}"));
        prop_assert!(dx.contains("NaN") || nx == ny, "{:?} != {:?}", nx, ny);
        prop_assert_eq!(a.inputs(x), b.inputs(y));
    }
    prop_assert_eq!(&a.outputs, &b.outputs);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_then_parse_gives_the_same_graph(steps in steps()) {
        let g = build(&steps);
        let text = print(&g);
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(print(&back), text.clone());
        assert_same(&g, &back)?;
        prop_assert!(verify(&back).is_ok(), "{:?}\n{}", verify(&back), text);
    }

    #[test]
    fn mangled_text_is_an_error_not_a_panic(
        steps in steps(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut chars: Vec<char> = print(&build(&steps)).chars().collect();
        let alphabet: Vec<char> = "%=,[]*+-\"\\#\n 0129ex_.-finaq".chars().collect();
        for (at, c, how) in edits {
            let at = at % (chars.len() + 1);
            let c = alphabet[c as usize % alphabet.len()];
            match how {
                0 => chars.insert(at, c),
                1 if at < chars.len() => { chars.remove(at); }
                _ if at < chars.len() => chars[at] = c,
                _ => {}
            }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(g) = parse(&text) {
            prop_assert_eq!(print(&parse(&print(&g)).expect("printed graphs parse")), print(&g));
        }
    }

    #[test]
    fn arbitrary_text_is_an_error_not_a_panic(text in "kir 1\n[%=,\\[\\]*+\\-\" a-z0-9\\n.]{0,200}") {
        let _ = parse(&text);
    }
}
