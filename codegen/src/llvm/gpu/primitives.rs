//! The few operations whose spelling differs between GPU instruction sets: thread and block
//! indices, the block count, the block barrier and the cross-lane exchange. Everything else
//! in the GPU lowering is shared.

use super::super::expr::{Emitter, Fail, V};
use super::{GpuArch, GpuDesc};
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::{Linkage, Module};
use inkwell::values::{FunctionValue, IntValue};
use inkwell::AddressSpace;

fn sreg<'ctx>(em: &mut Emitter<'_, 'ctx>, name: &str) -> Result<IntValue<'ctx>, Fail> {
    let v = em.intrinsic(name, &[], &[])?.into_int_value();
    Ok(em.b.build_int_z_extend(v, em.ctx.i64_type(), "id")?)
}

pub fn thread_index<'ctx>(em: &mut Emitter<'_, 'ctx>, d: &GpuDesc) -> Result<IntValue<'ctx>, Fail> {
    match d.arch {
        GpuArch::Nvptx => sreg(em, "llvm.nvvm.read.ptx.sreg.tid.x"),
        GpuArch::Amdgpu => sreg(em, "llvm.amdgcn.workitem.id.x"),
    }
}

pub fn block_index<'ctx>(em: &mut Emitter<'_, 'ctx>, d: &GpuDesc) -> Result<IntValue<'ctx>, Fail> {
    match d.arch {
        GpuArch::Nvptx => sreg(em, "llvm.nvvm.read.ptx.sreg.ctaid.x"),
        GpuArch::Amdgpu => sreg(em, "llvm.amdgcn.workgroup.id.x"),
    }
}

pub fn block_count<'ctx>(em: &mut Emitter<'_, 'ctx>, d: &GpuDesc) -> Result<IntValue<'ctx>, Fail> {
    match d.arch {
        GpuArch::Nvptx => sreg(em, "llvm.nvvm.read.ptx.sreg.nctaid.x"),
        GpuArch::Amdgpu => {
            // AMDGPU has no register for it: the dispatch packet holds the grid size in
            // work-items (u32 at byte 12) and the workgroup size (u16 at byte 4).
            let packet = em
                .intrinsic("llvm.amdgcn.dispatch.ptr", &[], &[])?
                .into_pointer_value();
            let (i8t, i16t, i32t, i64t) = (
                em.ctx.i8_type(),
                em.ctx.i16_type(),
                em.ctx.i32_type(),
                em.ctx.i64_type(),
            );
            // SAFETY of the generated code: both fields lie inside the HSA dispatch packet.
            let at = |em: &mut Emitter<'_, 'ctx>, off: u64| unsafe {
                em.b.build_in_bounds_gep(i8t, packet, &[i64t.const_int(off, false)], "pk")
            };
            let grid_at = at(em, 12)?;
            let grid = em.b.build_load(i32t, grid_at, "grid")?.into_int_value();
            let wg_at = at(em, 4)?;
            let wg = em.b.build_load(i16t, wg_at, "wg")?.into_int_value();
            let grid = em.b.build_int_z_extend(grid, i64t, "grid")?;
            let wg = em.b.build_int_z_extend(wg, i64t, "wg")?;
            Ok(em.b.build_int_unsigned_div(grid, wg, "blocks")?)
        }
    }
}

pub fn barrier(em: &mut Emitter<'_, '_>, d: &GpuDesc) -> Result<(), Fail> {
    let f = match d.arch {
        GpuArch::Nvptx => inkwell::intrinsics::Intrinsic::find("llvm.nvvm.barrier0")
            .and_then(|i| i.get_declaration(em.module, &[]))
            .ok_or_else(|| Fail::msg("LLVM has no llvm.nvvm.barrier0"))?,
        GpuArch::Amdgpu => amdgpu_barrier(em.module)?,
    };
    em.b.build_call(f, &[], "")?;
    Ok(())
}

/// `s_barrier` orders nothing by itself for the compiler; workgroup-scope fences around it
/// make shared-memory stores before it visible to loads after it. inkwell cannot build a
/// fence with a sync scope, so the helper is written as IR text and linked in once.
fn amdgpu_barrier<'ctx>(module: &Module<'ctx>) -> Result<FunctionValue<'ctx>, Fail> {
    const NAME: &str = "kiln_workgroup_barrier";
    if let Some(f) = module.get_function(NAME) {
        return Ok(f);
    }
    let text = format!(
        "define void @{NAME}() #0 {{\n  fence syncscope(\"workgroup\") release\n  \
         call void @llvm.amdgcn.s.barrier()\n  fence syncscope(\"workgroup\") acquire\n  \
         ret void\n}}\ndeclare void @llvm.amdgcn.s.barrier() #1\n\
         attributes #0 = {{ alwaysinline convergent nounwind }}\n\
         attributes #1 = {{ convergent nounwind }}\n"
    );
    let ctx = module.get_context();
    let buf = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), NAME);
    let helper = ctx
        .create_module_from_ir(buf)
        .map_err(|e| Fail(format!("barrier helper: {e}")))?;
    helper.set_triple(&module.get_triple());
    helper.set_data_layout(&module.get_data_layout());
    module
        .link_in_module(helper)
        .map_err(|e| Fail(format!("linking the barrier helper: {e}")))?;
    let f = module
        .get_function(NAME)
        .ok_or_else(|| Fail::msg("the barrier helper vanished"))?;
    f.set_linkage(Linkage::Internal);
    Ok(f)
}

/// `x` (f32) from lane `lane ^ offset` of the same warp or wave.
pub fn shuffle_xor<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    d: &GpuDesc,
    thread: IntValue<'ctx>,
    x: V<'ctx>,
    offset: u32,
) -> Result<V<'ctx>, Fail> {
    let i32t = em.ctx.i32_type();
    match d.arch {
        GpuArch::Nvptx => {
            let args = [
                i32t.const_all_ones().into(),
                x,
                i32t.const_int(offset as u64, false).into(),
                i32t.const_int(d.warp as u64 - 1, false).into(),
            ];
            em.intrinsic("llvm.nvvm.shfl.sync.bfly.f32", &[], &args)
        }
        GpuArch::Amdgpu => {
            // ds_bpermute reads lane `address / 4` of the wave.
            let t = em.b.build_int_truncate(thread, i32t, "t")?;
            let lane =
                em.b.build_and(t, i32t.const_int(d.warp as u64 - 1, false), "lane")?;
            let partner =
                em.b.build_xor(lane, i32t.const_int(offset as u64, false), "partner")?;
            let addr =
                em.b.build_left_shift(partner, i32t.const_int(2, false), "addr")?;
            let bits = em.b.build_bit_cast(x, i32t, "bits")?;
            let got = em.intrinsic("llvm.amdgcn.ds.bpermute", &[], &[addr.into(), bits])?;
            Ok(em.b.build_bit_cast(got, em.ctx.f32_type(), "f")?)
        }
    }
}

/// Inline assembly without operands or results, kept where it stands (it clobbers memory,
/// so no load or store moves across it).
pub fn asm(em: &mut Emitter<'_, '_>, text: &str) -> Result<(), Fail> {
    let ty = em.ctx.void_type().fn_type(&[], false);
    let asm = em.ctx.create_inline_asm(
        ty,
        text.to_string(),
        "~{memory}".to_string(),
        true,
        false,
        None,
        false,
    );
    em.b.build_indirect_call(ty, asm, &[], "")?;
    Ok(())
}

/// The `i64` at `base + 8 * index`, loaded where it stands in the code. LLVM sinks a plain
/// load to the block of its first use; at a kernel's start that is past the grid's bounds
/// check, which waits for the symbols' load, so the two loads ran one after the other
/// instead of together (a second memory round trip at each kernel's start: 1B F16 decode on
/// one H100, 39 us a step, 2026-12-07). A volatile load stays, but skips the L1 cache: every
/// warp then went to L2 for the same word (30 us a step). On NVPTX the load is inline
/// assembly that LLVM may not move, through the read-only cache (the word does not change
/// while the kernel runs); AMDGPU keeps the plain load until an AMD GPU measures it.
pub fn load_at_start<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    d: &GpuDesc,
    base: inkwell::values::PointerValue<'ctx>,
    index: u64,
) -> Result<IntValue<'ctx>, Fail> {
    let i64t = em.ctx.i64_type();
    if d.arch == GpuArch::Amdgpu {
        // SAFETY of the generated code: the caller's table has the entry.
        let at = unsafe {
            em.b.build_in_bounds_gep(i64t, base, &[i64t.const_int(index, false)], "at")?
        };
        return Ok(em.b.build_load(i64t, at, "word")?.into_int_value());
    }
    let address = em.b.build_ptr_to_int(base, i64t, "table")?;
    let ty = i64t.fn_type(&[i64t.into()], false);
    let asm = em.ctx.create_inline_asm(
        ty,
        format!("ld.global.nc.u64 $0, [$1+{}];", 8 * index),
        "=l,l".into(),
        true,
        false,
        None,
        false,
    );
    let call =
        em.b.build_indirect_call(ty, asm, &[address.into()], "word")?;
    match call.try_as_basic_value() {
        inkwell::values::ValueKind::Basic(v) => Ok(v.into_int_value()),
        _ => Err(Fail::msg("a load returned nothing")),
    }
}

/// A kernel's first statements where `d.waits_for_prior_grids`: nothing below runs until
/// the grids this one depends on have finished and their stores are visible; then the
/// grid after this one may launch (and wait in its turn). Triggering only after the wait
/// keeps the launches one kernel ahead: the next kernel's blocks are scheduled while this
/// one runs, not a whole chain of parked kernels holding the GPU's block slots. Launched
/// without a programmatic dependency, both are no-ops.
pub fn await_prior_grids(em: &mut Emitter<'_, '_>, d: &GpuDesc) -> Result<(), Fail> {
    if d.waits_for_prior_grids {
        asm(em, "griddepcontrol.wait;")?;
        asm(em, "griddepcontrol.launch_dependents;")?;
    }
    Ok(())
}

/// Address space of `desc`'s global memory, as inkwell spells it.
pub fn global(d: &GpuDesc) -> AddressSpace {
    AddressSpace::from(d.global_as)
}
