//! `Stmt::Copy` and `Stmt::Await`: staging global memory into a block's shared memory.
//!
//! On NVIDIA GPUs from sm_80 a 16-byte copy is `cp.async.cg` (global to shared without
//! passing through registers or L1, so a thread can start the next tile's copies and go
//! on computing on this one), its batches are `cp.async` commit groups, and an await is
//! `cp.async.wait_group` then the block barrier. Elsewhere a copy is a load and a store,
//! already done when the next statement runs, and an await is the barrier alone: the same
//! meaning, without the overlap.

use super::super::expr::{storage_type, vec_of, Emitter, Fail};
use super::{primitives, GpuArch, GpuDesc};
use inkwell::intrinsics::Intrinsic;
use inkwell::values::{BasicMetadataValueEnum, BasicValue, IntValue};
use kiln_compiler::kernel::Buf;

/// Bytes one background copy moves (`cp.async.cg` takes only 16).
const ASYNC_BYTES: u32 = 16;

pub fn copy<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    dst: Buf,
    to: IntValue<'ctx>,
    src: Buf,
    from: IntValue<'ctx>,
    lanes: u8,
) -> Result<(), Fail> {
    let dtype = em.k.buf_dtype(src);
    if em.k.buf_dtype(dst) != dtype {
        return Err(Fail(format!(
            "a copy from {dtype} into {} (copies do not convert)",
            em.k.buf_dtype(dst)
        )));
    }
    let (to_ptr, _) = em.element_ptr(dst, to)?;
    let (from_ptr, _) = em.element_ptr(src, from)?;
    let bytes = lanes as u32 * dtype.size_bytes() as u32;
    let background = em.gpu.is_some_and(has_async_copy)
        && bytes == ASYNC_BYTES
        && matches!(src, Buf::Arg(_))
        && matches!(dst, Buf::Local(l) if em.k.locals[l as usize].shared);
    if background {
        return call(
            em,
            "llvm.nvvm.cp.async.cg.shared.global.16",
            &[to_ptr.into(), from_ptr.into()],
        );
    }
    let elem = storage_type(em.ctx, dtype);
    let ty = if lanes > 1 {
        vec_of(elem, lanes as u32)
    } else {
        elem
    };
    let v = em.b.build_load(ty, from_ptr, "cp")?;
    let st = em.b.build_store(to_ptr, v)?;
    let align = dtype.size_bytes() as u32;
    if let Some(inst) = v.as_instruction_value() {
        inst.set_alignment(align).map_err(Fail::msg)?;
    }
    st.set_alignment(align).map_err(Fail::msg)?;
    Ok(())
}

pub fn await_copies(em: &mut Emitter<'_, '_>, in_flight: u8) -> Result<(), Fail> {
    let gpu = em
        .gpu
        .ok_or_else(|| Fail::msg("a block barrier outside a GPU kernel"))?;
    if has_async_copy(gpu) {
        call(em, "llvm.nvvm.cp.async.commit.group", &[])?;
        let n = em.ctx.i32_type().const_int(in_flight as u64, false);
        call(em, "llvm.nvvm.cp.async.wait.group", &[n.into()])?;
    }
    primitives::barrier(em, gpu)
}

/// `cp.async` exists from sm_80 (PTX ISA 7.0).
fn has_async_copy(d: &GpuDesc) -> bool {
    let digits: String = d
        .cpu
        .trim_start_matches("sm_")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    d.arch == GpuArch::Nvptx && digits.parse::<u32>().is_ok_and(|sm| sm >= 80)
}

fn call(em: &mut Emitter<'_, '_>, name: &str, args: &[BasicMetadataValueEnum]) -> Result<(), Fail> {
    let f = Intrinsic::find(name)
        .and_then(|i| i.get_declaration(em.module, &[]))
        .ok_or_else(|| Fail(format!("LLVM has no intrinsic {name}")))?;
    em.b.build_call(f, args, "")?;
    Ok(())
}
