//! `Stmt::Warm` where kernels wait for the grids before them (`GpuDesc::waits_for_prior_grids`):
//! before that wait, each block's threads fetch the bytes its first point will read of the
//! weights into L2, one 128-byte line a thread at a time. A decode step's matvecs then
//! stream their weights while the kernel ahead of them drains, instead of after it.
//! A fetch is only a hint and L2 is coherent across the GPU, so its timing never changes
//! what a load returns.

use super::super::expr::{Emitter, Fail};
use super::super::function::decompose;
use inkwell::values::IntValue;
use inkwell::IntPredicate;
use kiln_compiler::kernel::{Buf, Expr, Stmt};

/// L2's line: what one `prefetch.global.L2` brings in.
const LINE: u64 = 128;

/// The block's point `block` (when the grid has it) and the `Stmt::Warm`s leading `body`:
/// thread `thread` of `threads` fetches lines `thread, thread + threads, ...` of each range.
pub(super) fn first_point<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    body: &[Stmt],
    (block, thread, threads): (IntValue<'ctx>, IntValue<'ctx>, u32),
    points: IntValue<'ctx>,
    extents: &[IntValue<'ctx>],
) -> Result<(), Fail> {
    let ranges: Vec<(Buf, &Expr, &Expr)> = body
        .iter()
        .map_while(|s| match s {
            Stmt::Warm { buf, start, len } => Some((*buf, start, len)),
            _ => None,
        })
        .collect();
    if ranges.is_empty() {
        return Ok(());
    }
    let i64t = em.ctx.i64_type();
    let one = i64t.const_int(1, false);
    // At most one iteration: the block's first point, if the grid has that many.
    let next = em.b.build_int_add(block, one, "next")?;
    let inside =
        em.b.build_int_compare(IntPredicate::SLT, next, points, "inside")?;
    let end =
        em.b.build_select(inside, next, points, "end")?
            .into_int_value();
    em.strided_loop(block, end, one, &mut |em, p| {
        em.grid = decompose(em, p, extents)?;
        for &(buf, start, len) in &ranges {
            let (base, dtype) = em.base(buf);
            let size = i64t.const_int(dtype.size_bytes() as u64, false);
            let start = em.expr(start)?.into_int_value();
            let len = em.expr(len)?.into_int_value();
            let from = em.b.build_int_mul(start, size, "from")?;
            let bytes = em.b.build_int_mul(len, size, "bytes")?;
            let line = i64t.const_int(LINE, false);
            let first = em.b.build_int_mul(thread, line, "first")?;
            let step = i64t.const_int(LINE * threads as u64, false);
            let address = em.b.build_ptr_to_int(base, i64t, "base")?;
            let address = em.b.build_int_add(address, from, "at")?;
            em.strided_loop(first, bytes, step, &mut |em, off| {
                let at = em.b.build_int_add(address, off, "line")?;
                fetch_line(em, at)
            })?;
        }
        Ok(())
    })
}

/// `prefetch.global.L2 [at]`.
fn fetch_line<'ctx>(em: &mut Emitter<'_, 'ctx>, at: IntValue<'ctx>) -> Result<(), Fail> {
    let i64t = em.ctx.i64_type();
    let ty = em.ctx.void_type().fn_type(&[i64t.into()], false);
    let asm = em.ctx.create_inline_asm(
        ty,
        "prefetch.global.L2 [$0];".to_string(),
        "l".to_string(),
        true,
        false,
        None,
        false,
    );
    em.b.build_indirect_call(ty, asm, &[at.into()], "")?;
    Ok(())
}
