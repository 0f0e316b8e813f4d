use kiln_ir::DType;
use serde::{Deserialize, Serialize};

/// Value element types. Storage-only types (f16, bf16) never appear here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Elem {
    F32,
    I32,
    I64,
    Bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VType {
    pub elem: Elem,
    pub lanes: u8,
}

impl VType {
    pub const F32: VType = VType {
        elem: Elem::F32,
        lanes: 1,
    };
    pub const I32: VType = VType {
        elem: Elem::I32,
        lanes: 1,
    };
    pub const I64: VType = VType {
        elem: Elem::I64,
        lanes: 1,
    };
    pub const BOOL: VType = VType {
        elem: Elem::Bool,
        lanes: 1,
    };

    pub fn with_lanes(self, lanes: u8) -> VType {
        VType { lanes, ..self }
    }
}

impl Elem {
    /// The value type a load from a buffer of `d` produces.
    pub fn of_storage(d: DType) -> Elem {
        match d {
            DType::F32 | DType::F16 | DType::BF16 => Elem::F32,
            // Bytes load zero-extended.
            DType::I32 | DType::U8 => Elem::I32,
            DType::I64 => Elem::I64,
        }
    }
}

pub type VarId = u32;

/// A buffer a kernel reads or writes: a kernel argument (arena slot, input, output,
/// weight) or a kernel-local scratch array (stack on CPU, shared memory on GPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Buf {
    Arg(u32),
    Local(u32),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferParam {
    pub name: String,
    pub dtype: DType,
    pub writes: bool,
    /// Some launch passes a model output here, which a session may carry (a decode's new
    /// keys and values): a GPU kernel then adds the offset the runtime gives this buffer
    /// (`kiln_runtime::buffer_offsets`). Set by `offsets::mark_offset_buffers`.
    #[serde(default)]
    pub offset: bool,
}

/// Scratch memory private to one grid point, of a length known at compile time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalBuf {
    pub dtype: DType,
    pub len: u32,
    /// One array per GPU block, in its shared memory, that every thread of the block reads
    /// and writes (kernels with explicit threads, see [`Expr::Thread`]); otherwise each
    /// thread (or CPU task) has its own.
    #[serde(default)]
    pub shared: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Lit {
    F32(f32),
    I32(i32),
    I64(i64),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UOp {
    Neg,
    Abs,
    Sqrt,
    /// IEEE half bits (an i32 in 0..=0xffff) to f32: one instruction where the target
    /// converts halves (F16C, AArch64), emitted only for those (`Schedule::half_bits`);
    /// elsewhere `kernel::half::f16_bits_to_f32` spells it out.
    HalfBits,
    /// The transcendental ops below are rewritten into arithmetic by [`super::math`]
    /// before codegen, so backends need no math library and every target computes
    /// them with the same polynomials.
    Exp,
    Log,
    Tanh,
    Erf,
    Sin,
    Cos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// Integer remainder (truncating); integer ops below act on bits.
    Rem,
    Shl,
    /// Logical (zero-filling) right shift.
    Shr,
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RedOp {
    Sum,
    Max,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Lit(Lit),
    Var(VarId),
    /// The value of symbol `i` of the plan's symbol list (an i64).
    Dim(u32),
    /// This point's index along grid axis `i` (an i64).
    GridIdx(u32),
    /// `lanes` consecutive elements starting at `index` (in elements).
    Load {
        buf: Buf,
        index: Box<Expr>,
        lanes: u8,
    },
    Splat {
        value: Box<Expr>,
        lanes: u8,
    },
    /// A vector built lane by lane from scalars (gathers, strided reads).
    Lanes(Vec<Expr>),
    Unary(UOp, Box<Expr>),
    Binary(BOp, Box<Expr>, Box<Expr>),
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `DotBytes(acc, a, b)`: lane `i` of the i32 vector `acc` plus the sum of the four
    /// products `a[4i + j] * b[4i + j]`, where `a` and `b` are i32 vectors of four times as
    /// many lanes holding bytes: `a` unsigned (0..=255), `b` signed (-128..=127), and each
    /// adjacent pair of products summing within i16. That contract is what the byte dot
    /// instructions share (x86 `pmaddubsw` + `pmaddwd`, `vpdpbusd`; Arm `udot`/`usdot`;
    /// PTX `dp4a`); a backend without them widens and multiplies.
    ///
    /// With a fourth operand `w` (an i32 vector like `acc`, values within i16), lane `i`
    /// adds `w[i]` times its sum instead: x86's second step multiplies the byte pairs' sums
    /// by `w` rather than by ones (`pmaddwd`, `vpdpwssd`), so a quantized block's runs sum
    /// in integers, each scaled by its run's multiplier (`lower::int_dot`).
    DotBytes(Box<Expr>, Box<Expr>, Box<Expr>, Option<Box<Expr>>),
    /// `DotSignedBytes(acc, a, b)`: as `DotBytes` without weights, both operands' lanes
    /// signed bytes (-128..=127) and the sums exact in i32: PTX `dp4a.s32.s32`, which
    /// multiplies a q8_0 weight by a q8_0 activation as they are. Other targets widen.
    DotSignedBytes(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `Mma(op, a, b, c)`: the warp's tiles of A and B (each lane's f32 registers of them,
    /// rounded to `op.input`) multiplied and added to the tile of C; each lane gets its
    /// registers of the result. Every lane of the warp must reach it together, so it
    /// appears only in kernels with explicit threads (see [`Expr::Thread`]); the layouts
    /// are in `kernel::matrix`. Emitted only for targets whose schedule has a matrix unit.
    Mma(super::matrix::MatrixOp, Box<Expr>, Box<Expr>, Box<Expr>),
    /// NVIDIA's `ldmatrix`: the warp reads `count` (1, 2 or 4) matrices of 8 x 8 16-bit
    /// elements from shared local `buf`, lane `8j + r` naming in `index` the first element
    /// of row `r` of matrix `j` (8 consecutive elements, 16-byte aligned); each lane gets,
    /// of every matrix in turn, the two elements of row `lane / 4` at columns `2 (lane %
    /// 4)` and the next: `2 * count` lanes, widened as a load's. That is `mma.sync`'s
    /// register layout, so one read gives a whole fragment, where lanes reading for
    /// themselves would gather it from two rows. In kernels with explicit threads only,
    /// where the warp reaches it together.
    LoadMatrix {
        buf: Buf,
        index: Box<Expr>,
        count: u8,
    },
    /// This thread's lane within its warp (an i64), in kernels with explicit threads.
    Lane,
    /// This thread's index within its block (an i64). A kernel that reads it runs a block
    /// per grid point with **explicit threads**: every thread runs the whole body, dividing
    /// the work by this index itself, and meets the others at `Stmt::Await`s (`kernel::gpu`).
    Thread,
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Numeric conversion (float <-> int truncating toward zero, int widening/narrowing).
    Cast(Elem, Box<Expr>),
    /// Reinterpret bits between f32 and i32 of the same lane count.
    Bitcast(Elem, Box<Expr>),
    /// One lane of a vector.
    Extract {
        vector: Box<Expr>,
        lane: u8,
    },
    /// Horizontal reduction of a vector to a scalar of its element type. Float sums are
    /// ordered (lane 0 first), integer sums are exact in any order.
    ReduceLanes(RedOp, Box<Expr>),
    /// `LaneSums(vectors, groups)`: integer sums of several vectors' lanes at once. Each of
    /// the `n` vectors (i32, equal widths) is cut into `groups` equal runs of consecutive
    /// lanes; lane `g * n + k` of the result is the sum of run `g` of vector `k`. One value
    /// per vector (or per half) from one tree of pairwise adds (x86 `phaddd`), where
    /// `ReduceLanes` of each would take a chain per vector: prefill's byte dot products
    /// (`lower::byte_tiles`) make one sum per token this way.
    LaneSums(Vec<Expr>, u8),
    /// `let var = value in body`: names a value used several times in `body` (the
    /// expansions of transcendental ops read their argument more than once).
    Let {
        var: VarId,
        value: Box<Expr>,
        body: Box<Expr>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoopKind {
    /// Iterations are independent: may be vectorised or spread over threads.
    Map,
    /// Iterations run in order (they carry state through mutable variables).
    Serial,
    /// Like `Serial`, but the backend fully unrolls it (the extent is a literal).
    Unroll,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stmt {
    /// Binds an immutable value.
    Let {
        var: VarId,
        value: Expr,
    },
    /// Declares a mutable variable.
    Decl {
        var: VarId,
        init: Expr,
    },
    Assign {
        var: VarId,
        value: Expr,
    },
    Store {
        buf: Buf,
        index: Expr,
        value: Expr,
    },
    /// `for var in 0..extent` (i64 induction variable).
    Loop {
        var: VarId,
        extent: Expr,
        kind: LoopKind,
        vector: u8,
        body: Vec<Stmt>,
    },
    /// `acc = op over var in 0..extent of value`, an f32 scalar visible after the statement.
    /// `vector` is the lane count the CPU schedule asks for (1 = scalar).
    Reduce {
        acc: VarId,
        op: RedOp,
        var: VarId,
        extent: Expr,
        value: Expr,
        vector: u8,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
    },
    /// Copies `lanes` consecutive elements of `src` from `src_index` into `dst` (a shared
    /// local) at `dst_index`, possibly in the background (NVIDIA's `cp.async`): the copy is
    /// done, for every thread of the block, only after an `Await` that waits for its batch.
    /// Only in kernels with explicit threads.
    Copy {
        dst: Buf,
        dst_index: Expr,
        src: Buf,
        src_index: Expr,
        lanes: u8,
    },
    /// Closes the batch of `Copy`s this thread started since its previous `Await`, waits
    /// until at most `in_flight` of its batches are still under way, then waits for every
    /// thread of the block (a barrier): after it, what any thread stored to a shared local
    /// or copied in a finished batch is visible to all. Reached by every thread together;
    /// only in kernels with explicit threads.
    Await {
        in_flight: u8,
    },
    /// Hopper's warpgroup matrix instruction (`kernel::warpgroup`): each warpgroup of the
    /// block issues `products` in order as one batch, reading A and B from shared locals
    /// that an `Await` has made visible. They run in the background: the accumulators are
    /// current, and the shared tiles free to overwrite, only after a `GroupWait` that
    /// leaves no batch in flight. Reached by every thread of the block together; only in
    /// kernels with explicit threads, and only for targets whose schedule has it.
    GroupMma {
        op: super::warpgroup::GroupOp,
        products: Vec<super::warpgroup::GroupProduct>,
    },
    /// Waits until at most `pending` of the warpgroup's `GroupMma` batches are in flight;
    /// `accs` are the accumulators they write (read only after a wait that leaves none).
    GroupWait {
        accs: Vec<VarId>,
        pending: u8,
    },
    /// A hint that element `index` of `buf` will be read soon: the LLVM CPU backend fetches
    /// its cache line ahead (`index` may lie past the buffer; the fetch never faults);
    /// other backends ignore it.
    Prefetch {
        buf: Buf,
        index: Expr,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub name: String,
    pub args: Vec<BufferParam>,
    pub locals: Vec<LocalBuf>,
    pub grid: Vec<Expr>,
    /// Smallest useful number of grid points per thread task (CPU); keeps tiny points
    /// from being scheduled one by one.
    pub min_chunk: u64,
    /// Threads per block where the lowering chose other than
    /// [`BLOCK_THREADS`](super::gpu::BLOCK_THREADS) for a block-per-point kernel (GPU decode
    /// dot products over short rows, `lower::gpu_dot::block_threads`).
    #[serde(default)]
    pub block_threads: Option<u32>,
    pub body: Vec<Stmt>,
    /// Work counted for benchmarks and profiles, as functions of the symbols.
    pub cost: Cost,
    /// Variable ids below this are taken; passes allocate new ones with [`Kernel::fresh`].
    pub next_var: VarId,
}

/// Floating-point operations and bytes moved by one launch, for GFLOP/s and GB/s figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub flops: Vec<Vec<kiln_ir::Dim>>,
    pub bytes: Vec<Vec<kiln_ir::Dim>>,
}

impl Kernel {
    pub fn fresh(&mut self) -> VarId {
        self.next_var += 1;
        self.next_var - 1
    }

    /// Whether the body stores to each argument: what the kernel really writes, whatever
    /// the arguments declare. GPU executors run launches at the same time unless one writes
    /// what another touches, so the plan takes this, not the declaration.
    pub fn stored_args(&self) -> Vec<bool> {
        let mut stored = vec![false; self.args.len()];
        visit_stmts(&self.body, &mut |s| {
            if let Stmt::Store {
                buf: Buf::Arg(a), ..
            }
            | Stmt::Copy {
                dst: Buf::Arg(a), ..
            } = s
            {
                if let Some(w) = stored.get_mut(*a as usize) {
                    *w = true;
                }
            }
        });
        stored
    }

    /// How many of the plan's symbols the kernel reads: one more than the highest
    /// `Expr::Dim` index in its grid and body, 0 when it reads none. GPU entry points load
    /// only these.
    pub fn dims_read(&self) -> u32 {
        fn walk(e: &Expr, m: &mut u32) {
            if let Expr::Dim(d) = e {
                *m = (*m).max(d + 1);
            }
            for c in e.children() {
                walk(c, m);
            }
        }
        let mut m = 0;
        for g in &self.grid {
            walk(g, &mut m);
        }
        visit_stmts(&self.body, &mut |s| {
            for e in s.exprs() {
                walk(e, &mut m);
            }
        });
        m
    }

    pub fn buf_dtype(&self, b: Buf) -> DType {
        match b {
            Buf::Arg(i) => self.args[i as usize].dtype,
            Buf::Local(i) => self.locals[i as usize].dtype,
        }
    }
}

impl Stmt {
    /// The statement's own expressions (not those of nested bodies).
    pub fn exprs(&self) -> Vec<&Expr> {
        match self {
            Stmt::Let { value, .. }
            | Stmt::Decl { init: value, .. }
            | Stmt::Assign { value, .. } => {
                vec![value]
            }
            Stmt::Store { index, value, .. } => vec![index, value],
            Stmt::Prefetch { index, .. } => vec![index],
            Stmt::Copy {
                dst_index,
                src_index,
                ..
            } => vec![dst_index, src_index],
            Stmt::Await { .. } | Stmt::GroupWait { .. } => Vec::new(),
            Stmt::GroupMma { products, .. } => products
                .iter()
                .flat_map(|p| [&p.a_index, &p.b_index])
                .collect(),
            Stmt::Loop { extent, .. } => vec![extent],
            Stmt::Reduce { extent, value, .. } => vec![extent, value],
            Stmt::If { cond, .. } => vec![cond],
        }
    }
}

/// Whether any expression in `stmts` (nested bodies included) has a node for which `f`
/// holds.
pub fn any_expr(stmts: &[Stmt], f: &mut impl FnMut(&Expr) -> bool) -> bool {
    fn walk(e: &Expr, f: &mut impl FnMut(&Expr) -> bool) -> bool {
        f(e) || e.children().into_iter().any(|c| walk(c, f))
    }
    let mut found = false;
    visit_stmts(stmts, &mut |s| {
        found = found || s.exprs().into_iter().any(|e| walk(e, f));
    });
    found
}

/// Pre-order walk over statements, nested bodies included (`f` may keep the references).
pub fn visit_stmts<'a>(stmts: &'a [Stmt], f: &mut impl FnMut(&'a Stmt)) {
    for s in stmts {
        f(s);
        match s {
            Stmt::Loop { body, .. } => visit_stmts(body, f),
            Stmt::If {
                then, otherwise, ..
            } => {
                visit_stmts(then, f);
                visit_stmts(otherwise, f);
            }
            _ => {}
        }
    }
}

/// Rewrites every expression in `stmts` (bottom-up is up to `f`), nested bodies included.
pub fn map_exprs(stmts: &mut [Stmt], f: &mut impl FnMut(Expr) -> Expr) {
    let take = |x: &mut Expr, f: &mut dyn FnMut(Expr) -> Expr| {
        let old = std::mem::replace(x, Expr::Lit(Lit::Bool(false)));
        *x = f(old);
    };
    for s in stmts {
        match s {
            Stmt::Let { value, .. }
            | Stmt::Decl { init: value, .. }
            | Stmt::Assign { value, .. } => take(value, f),
            Stmt::Store { index, value, .. } => {
                take(index, f);
                take(value, f);
            }
            Stmt::Prefetch { index, .. } => take(index, f),
            Stmt::Copy {
                dst_index,
                src_index,
                ..
            } => {
                take(dst_index, f);
                take(src_index, f);
            }
            Stmt::Await { .. } | Stmt::GroupWait { .. } => {}
            Stmt::GroupMma { products, .. } => {
                for p in products {
                    take(&mut p.a_index, f);
                    take(&mut p.b_index, f);
                }
            }
            Stmt::Loop { extent, body, .. } => {
                take(extent, f);
                map_exprs(body, f);
            }
            Stmt::Reduce { extent, value, .. } => {
                take(extent, f);
                take(value, f);
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                take(cond, f);
                map_exprs(then, f);
                map_exprs(otherwise, f);
            }
        }
    }
}

/// Applies `f` to every node of `e`, children first.
pub fn rewrite_bottom_up(e: Expr, f: &mut impl FnMut(Expr) -> Expr) -> Expr {
    let r = |x: Box<Expr>, f: &mut dyn FnMut(Expr) -> Expr| Box::new(rewrite_dyn(*x, f));
    let e = match e {
        Expr::Load { buf, index, lanes } => Expr::Load {
            buf,
            index: r(index, f),
            lanes,
        },
        Expr::Splat { value, lanes } => Expr::Splat {
            value: r(value, f),
            lanes,
        },
        Expr::Lanes(v) => Expr::Lanes(v.into_iter().map(|x| rewrite_dyn(x, f)).collect()),
        Expr::LaneSums(v, g) => {
            Expr::LaneSums(v.into_iter().map(|x| rewrite_dyn(x, f)).collect(), g)
        }
        Expr::Unary(op, a) => Expr::Unary(op, r(a, f)),
        Expr::Binary(op, a, b) => Expr::Binary(op, r(a, f), r(b, f)),
        Expr::Fma(a, b, c) => Expr::Fma(r(a, f), r(b, f), r(c, f)),
        Expr::DotBytes(a, b, c, w) => Expr::DotBytes(r(a, f), r(b, f), r(c, f), w.map(|w| r(w, f))),
        Expr::DotSignedBytes(a, b, c) => Expr::DotSignedBytes(r(a, f), r(b, f), r(c, f)),
        Expr::Mma(op, a, b, c) => Expr::Mma(op, r(a, f), r(b, f), r(c, f)),
        Expr::LoadMatrix { buf, index, count } => Expr::LoadMatrix {
            buf,
            index: r(index, f),
            count,
        },
        Expr::Cmp(c, a, b) => Expr::Cmp(c, r(a, f), r(b, f)),
        Expr::Select(c, a, b) => Expr::Select(r(c, f), r(a, f), r(b, f)),
        Expr::Cast(t, a) => Expr::Cast(t, r(a, f)),
        Expr::Bitcast(t, a) => Expr::Bitcast(t, r(a, f)),
        Expr::ReduceLanes(op, a) => Expr::ReduceLanes(op, r(a, f)),
        Expr::Extract { vector, lane } => Expr::Extract {
            vector: r(vector, f),
            lane,
        },
        Expr::Let { var, value, body } => Expr::Let {
            var,
            value: r(value, f),
            body: r(body, f),
        },
        leaf @ (Expr::Lit(_)
        | Expr::Var(_)
        | Expr::Dim(_)
        | Expr::GridIdx(_)
        | Expr::Lane
        | Expr::Thread) => leaf,
    };
    f(e)
}

impl Expr {
    /// `(buf, index, count)` where this is `e::word_le(buf, index, count)` with `count` of
    /// 2 or more (the form is matched exactly, as that builder writes it).
    pub fn word_le(&self) -> Option<(Buf, &Expr, u8)> {
        let mut terms = Vec::new();
        let mut e = self;
        while let Expr::Binary(BOp::Or, rest, top) = e {
            terms.push(&**top);
            e = rest;
        }
        let Expr::Load {
            buf,
            index,
            lanes: 1,
        } = e
        else {
            return None;
        };
        for (k, t) in terms.iter().rev().enumerate() {
            let k = k as i64 + 1;
            let Expr::Binary(BOp::Shl, byte, shift) = t else {
                return None;
            };
            let Expr::Load {
                buf: b,
                index: at,
                lanes: 1,
            } = &**byte
            else {
                return None;
            };
            let next = matches!(&**at, Expr::Binary(BOp::Add, base, off)
                if **base == **index && **off == Expr::Lit(Lit::I64(k)));
            if b != buf || !next || **shift != Expr::Lit(Lit::I32(8 * k as i32)) {
                return None;
            }
        }
        (!terms.is_empty()).then_some((*buf, &**index, terms.len() as u8 + 1))
    }

    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Load { index: a, .. }
            | Expr::LoadMatrix { index: a, .. }
            | Expr::Splat { value: a, .. }
            | Expr::Unary(_, a)
            | Expr::Cast(_, a)
            | Expr::Bitcast(_, a)
            | Expr::ReduceLanes(_, a)
            | Expr::Extract { vector: a, .. } => vec![a],
            Expr::Lanes(v) | Expr::LaneSums(v, _) => v.iter().collect(),
            Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => vec![a, b],
            Expr::Let { value, body, .. } => vec![value, body],
            Expr::DotBytes(a, b, c, w) => [a, b, c].into_iter().chain(w).map(|x| &**x).collect(),
            Expr::Fma(a, b, c)
            | Expr::Mma(_, a, b, c)
            | Expr::Select(a, b, c)
            | Expr::DotSignedBytes(a, b, c) => {
                vec![a, b, c]
            }
            Expr::Lit(_)
            | Expr::Var(_)
            | Expr::Dim(_)
            | Expr::GridIdx(_)
            | Expr::Lane
            | Expr::Thread => Vec::new(),
        }
    }

    /// Nodes in the tree: a rough measure of the work an expression does.
    pub fn node_count(&self) -> usize {
        1 + self
            .children()
            .iter()
            .map(|c| c.node_count())
            .sum::<usize>()
    }
}

fn rewrite_dyn(e: Expr, f: &mut dyn FnMut(Expr) -> Expr) -> Expr {
    rewrite_bottom_up(e, &mut |x| f(x))
}

/// Shorthand constructors: lowering code builds many expressions.
pub mod e {
    use super::*;

    pub fn f(v: f32) -> Expr {
        Expr::Lit(Lit::F32(v))
    }
    pub fn i(v: i64) -> Expr {
        Expr::Lit(Lit::I64(v))
    }
    pub fn i32(v: i32) -> Expr {
        Expr::Lit(Lit::I32(v))
    }
    pub fn var(v: VarId) -> Expr {
        Expr::Var(v)
    }
    pub fn bin(op: BOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }
    pub fn add(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Lit(Lit::I64(0)), _) => b,
            (_, Expr::Lit(Lit::I64(0))) => a,
            (Expr::Lit(Lit::I64(x)), Expr::Lit(Lit::I64(y))) => i(x + y),
            _ => bin(BOp::Add, a, b),
        }
    }
    pub fn sub(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (_, Expr::Lit(Lit::I64(0))) => a,
            (Expr::Lit(Lit::I64(x)), Expr::Lit(Lit::I64(y))) => i(x - y),
            _ => bin(BOp::Sub, a, b),
        }
    }
    pub fn mul(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Lit(Lit::I64(1)), _) => b,
            (_, Expr::Lit(Lit::I64(1))) => a,
            (Expr::Lit(Lit::I64(0)), _) | (_, Expr::Lit(Lit::I64(0))) => i(0),
            (Expr::Lit(Lit::I64(x)), Expr::Lit(Lit::I64(y))) => i(x * y),
            _ => bin(BOp::Mul, a, b),
        }
    }
    pub fn div(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (_, Expr::Lit(Lit::I64(1))) => a,
            (Expr::Lit(Lit::I64(x)), Expr::Lit(Lit::I64(y))) if *y != 0 => i(x / y),
            _ => bin(BOp::Div, a, b),
        }
    }
    pub fn rem(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (_, Expr::Lit(Lit::I64(1))) => i(0),
            (Expr::Lit(Lit::I64(x)), Expr::Lit(Lit::I64(y))) if *y != 0 => i(x % y),
            _ => bin(BOp::Rem, a, b),
        }
    }
    pub fn min(a: Expr, b: Expr) -> Expr {
        bin(BOp::Min, a, b)
    }
    pub fn max(a: Expr, b: Expr) -> Expr {
        bin(BOp::Max, a, b)
    }
    pub fn un(op: UOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
    pub fn cmp(c: Cmp, a: Expr, b: Expr) -> Expr {
        Expr::Cmp(c, Box::new(a), Box::new(b))
    }
    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(c), Box::new(a), Box::new(b))
    }
    pub fn cast(to: Elem, a: Expr) -> Expr {
        Expr::Cast(to, Box::new(a))
    }
    pub fn bitcast(to: Elem, a: Expr) -> Expr {
        Expr::Bitcast(to, Box::new(a))
    }
    pub fn dot_bytes(acc: Expr, a: Expr, b: Expr) -> Expr {
        Expr::DotBytes(Box::new(acc), Box::new(a), Box::new(b), None)
    }
    pub fn dot_signed_bytes(acc: Expr, a: Expr, b: Expr) -> Expr {
        Expr::DotSignedBytes(Box::new(acc), Box::new(a), Box::new(b))
    }
    /// `dot_bytes` with each lane's sum multiplied by `w`'s lane (see `Expr::DotBytes`).
    pub fn dot_bytes_scaled(acc: Expr, a: Expr, b: Expr, w: Expr) -> Expr {
        Expr::DotBytes(Box::new(acc), Box::new(a), Box::new(b), Some(Box::new(w)))
    }
    pub fn mma(op: crate::kernel::matrix::MatrixOp, a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Mma(op, Box::new(a), Box::new(b), Box::new(c))
    }
    pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
    }
    /// The sum over `pairs` and their `lanes` of `a * b`, as one chain of FMAs in order
    /// (pair by pair, lane by lane): `reduce_lanes(sum(a * b))` for GPUs, whose vectors
    /// are registers anyway, and where a product and then an add per lane would issue twice
    /// the instructions. Vector operands are named once (`fresh`) and read lane by lane.
    pub fn fma_chain(
        pairs: Vec<(Expr, Expr)>,
        lanes: u8,
        fresh: &mut impl FnMut() -> VarId,
    ) -> Expr {
        let mut names = Vec::new();
        let mut terms = Vec::new();
        for (a, b) in pairs {
            if lanes == 1 {
                terms.push((a, b));
                continue;
            }
            let (va, vb) = (fresh(), fresh());
            names.extend([(va, a), (vb, b)]);
            for lane in 0..lanes {
                let at = |v| Expr::Extract {
                    vector: Box::new(var(v)),
                    lane,
                };
                terms.push((at(va), at(vb)));
            }
        }
        let mut terms = terms.into_iter();
        let (a, b) = terms.next().expect("a chain has terms");
        let chain = terms.fold(bin(BOp::Mul, a, b), |acc, (a, b)| fma(a, b, acc));
        names
            .into_iter()
            .rev()
            .fold(chain, |body, (v, value)| let_in(v, value, body))
    }
    pub fn load(buf: Buf, index: Expr) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
            lanes: 1,
        }
    }
    /// The little-endian integer in `count` bytes of a byte buffer from `index`: byte `k`
    /// loaded at `index + k` and shifted left by `8 k`, the shifted bytes or-ed in order.
    /// Every backend can compute it so; code generators that can read a misaligned word
    /// recognise this exact form (`Expr::word_le`) and load it at once, which spares a
    /// vector of such words (a tile's activation scales, a lane per token) a byte insert
    /// per byte.
    pub fn word_le(buf: Buf, index: Expr, count: u8) -> Expr {
        (1..count as i64).fold(load(buf, index.clone()), |w, k| {
            let byte = load(buf, bin(BOp::Add, index.clone(), i(k)));
            bin(BOp::Or, w, bin(BOp::Shl, byte, i32(8 * k as i32)))
        })
    }
    pub fn load_vec(buf: Buf, index: Expr, lanes: u8) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
            lanes,
        }
    }
    pub fn let_in(var: VarId, value: Expr, body: Expr) -> Expr {
        Expr::Let {
            var,
            value: Box::new(value),
            body: Box::new(body),
        }
    }
    pub fn splat(value: Expr, lanes: u8) -> Expr {
        if lanes == 1 {
            value
        } else {
            Expr::Splat {
                value: Box::new(value),
                lanes,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::e::*;
    use super::*;

    /// The matcher finds exactly what the builder writes, and nothing that reads other
    /// bytes, another buffer or shifts them elsewhere.
    #[test]
    fn word_loads_are_recognised_only_in_their_own_form() {
        let at = add(var(3), i(8));
        for count in [2u8, 4] {
            let w = word_le(Buf::Arg(1), at.clone(), count);
            let (buf, index, n) = w.word_le().expect("a word");
            assert_eq!((buf, index, n), (Buf::Arg(1), &at, count));
        }
        assert_eq!(load(Buf::Arg(1), at.clone()).word_le(), None, "one byte");
        let shifted = |buf: Buf, k: i64, by: i32| {
            bin(
                BOp::Or,
                load(Buf::Arg(1), at.clone()),
                bin(
                    BOp::Shl,
                    load(buf, bin(BOp::Add, at.clone(), i(k))),
                    i32(by),
                ),
            )
        };
        assert!(shifted(Buf::Arg(1), 1, 8).word_le().is_some());
        assert_eq!(shifted(Buf::Arg(2), 1, 8).word_le(), None, "another buffer");
        assert_eq!(shifted(Buf::Arg(1), 2, 8).word_le(), None, "a byte skipped");
        assert_eq!(
            shifted(Buf::Arg(1), 1, 16).word_le(),
            None,
            "shifted too far"
        );
    }
}
