//! The small model the GPU code generators' unit tests compile through the real pipeline: a
//! norm and a softmax (block reductions), a matmul and an activation (thread-per-point
//! kernels), reading f16 and writing bf16 (narrow loads and stores).

use crate::Backend;
use kiln_compiler::kernel::Kernel;
use kiln_compiler::pipeline::{compile, Options};
use kiln_compiler::Target;

pub const MODEL: &str = "kir 1
%x = input \"x\" f32[rows,300]
%w = input \"w\" f32[300]
%h = input \"m\" f16[300,64]
%m = cast %h dtype=f32
%n = rms_norm %x, %w eps=1e-5
%s = softmax %n axis=1
%y = matmul %s, %m transpose_a=false transpose_b=false
%g = silu %y
%o = cast %g dtype=bf16
output \"y\" = %o
";

/// Half matmuls (B stored transposed, M symbolic, N not a multiple of the tile) for the
/// targets' matrix units, in f16 and bf16.
pub const HALF_MATMULS: &str = "kir 1
%a = input \"a\" f16[rows,256]
%b = input \"b\" f16[100,256]
%y = matmul %a, %b transpose_a=false transpose_b=true
output \"y\" = %y
%c = input \"c\" bf16[rows,64]
%d = input \"d\" bf16[72,64]
%z = matmul %c, %d transpose_a=false transpose_b=true
output \"z\" = %z
";

/// A decode matvec of `k` f32 inputs and 1024 rows of `bytes` bytes in `format`.
pub fn matvec(format: &str, k: usize, bytes: usize) -> String {
    format!(
        "kir 1
%x = input \"x\" f32[1,{k}]
%w = input \"w\" u8[1024,{bytes}]
%d = dequant %w format={format}
%y = matmul %x, %d transpose_a=false transpose_b=true
output \"y\" = %y
"
    )
}

/// MODEL's kernels for `target`.
pub fn kernels(target: &str) -> Vec<Kernel> {
    kernels_of(MODEL, target)
}

/// `model`'s kernels for `target`.
pub fn kernels_of(model: &str, target: &str) -> Vec<Kernel> {
    let g = kiln_ir::text::parse(model).unwrap();
    let t: Target = target.parse().unwrap();
    compile(&g, &t, &Options::default())
        .unwrap()
        .kernels()
        .to_vec()
}

/// `be`'s code for MODEL on `target`, and the kernels' names.
pub fn code(be: &dyn Backend, target: &str) -> (Vec<u8>, Vec<String>) {
    code_of(be, MODEL, target)
}

/// `be`'s code for `model` on `target`, and the kernels' names.
pub fn code_of(be: &dyn Backend, model: &str, target: &str) -> (Vec<u8>, Vec<String>) {
    let kernels = kernels_of(model, target);
    let t: Target = target.parse().unwrap();
    let code = be.compile(&kernels, &t).unwrap_or_else(|e| panic!("{e}"));
    (code, kernels.iter().map(|k| k.name.clone()).collect())
}

/// A kernel of 8 points storing `g0 < 4 ? a[g0] : x[g0 - 4]` (x argument `other`: 2 for
/// the second input `b`, 1 for `a` again): a choice between two bindings or within one.
pub fn chooser(other: u32) -> Kernel {
    use kiln_compiler::kernel::{e, Buf, BufferParam, Cmp, Expr, Stmt};
    use kiln_ir::DType;
    let arg = |name: &str, writes| BufferParam {
        name: name.into(),
        dtype: DType::F32,
        writes,
        offset: false,
    };
    let g0 = || Expr::GridIdx(0);
    Kernel {
        name: "choose".into(),
        args: vec![arg("y", true), arg("a", false), arg("b", false)],
        locals: vec![],
        grid: vec![e::i(8)],
        min_chunk: 1,
        block_threads: None,
        body: vec![Stmt::Store {
            buf: Buf::Arg(0),
            index: g0(),
            value: Expr::Select(
                Box::new(Expr::Cmp(Cmp::Lt, Box::new(g0()), Box::new(e::i(4)))),
                Box::new(e::load(Buf::Arg(1), g0())),
                Box::new(e::load(Buf::Arg(other), e::sub(g0(), e::i(4)))),
            ),
        }],
        cost: Default::default(),
        next_var: 0,
    }
}
