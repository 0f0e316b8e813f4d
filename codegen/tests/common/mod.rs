//! Running kernels compiled by a CPU backend, shared by the codegen tests.

use kiln_codegen::Backend;
use kiln_compiler::kernel::{BOp, Expr, Kernel, Lit};
use kiln_compiler::Target;

type KernelFn = unsafe extern "C" fn(*const *mut u8, *const i64, i64, i64);

/// A grid extent with the kernel's symbols bound to `dims`.
pub fn eval_index(e: &Expr, dims: &[i64]) -> i64 {
    match e {
        Expr::Lit(Lit::I64(v)) => *v,
        Expr::Dim(d) => dims[*d as usize],
        Expr::Binary(op, a, b) => {
            let (x, y) = (eval_index(a, dims), eval_index(b, dims));
            match op {
                BOp::Add => x + y,
                BOp::Sub => x - y,
                BOp::Mul => x * y,
                BOp::Div => x / y,
                other => panic!("grid op {other:?}"),
            }
        }
        other => panic!("grid expr {other}"),
    }
}

/// Compiles `k` with `backend` for `target`, runs every grid point (in two calls, as the
/// runtime splits a grid among threads) over `bufs`, one per argument, and returns them.
pub fn run_compiled(
    backend: &dyn Backend,
    target: &str,
    k: &Kernel,
    mut bufs: Vec<Vec<u8>>,
    dims: &[i64],
) -> Vec<Vec<u8>> {
    let target: Target = target.parse().unwrap();
    let so = backend
        .compile(std::slice::from_ref(k), &target)
        .unwrap_or_else(|e| panic!("{e}\n{k}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.so");
    std::fs::write(&path, so).unwrap();
    // SAFETY: the object was just produced by our backend; the kernel's ABI is `KernelFn`,
    // and the caller sizes every buffer for the indices the kernel touches.
    unsafe {
        let lib = libloading::Library::new(&path).unwrap();
        let f: libloading::Symbol<KernelFn> = lib
            .get(kiln_codegen::symbol_name(&k.name).as_bytes())
            .unwrap();
        let total: i64 = k.grid.iter().map(|g| eval_index(g, dims)).product();
        let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let half = total / 2;
        f(ptrs.as_ptr(), dims.as_ptr(), 0, half);
        f(ptrs.as_ptr(), dims.as_ptr(), half, total);
    }
    bufs
}
