//! `Stmt::GroupMma` -> Hopper's `wgmma.mma_async` (`sm_90a` only), as inline PTX: LLVM 19
//! has no intrinsics for it.
//!
//! A `Stmt::GroupMma` becomes: a proxy fence (the block's copies into shared memory were
//! made by ordinary stores or `cp.async`; the tensor cores read through the *async proxy*,
//! which sees them only after `fence.proxy.async`), `wgmma.fence` (orders the accumulators'
//! earlier register writes before the instructions that read them), one `wgmma.mma_async`
//! per product with a descriptor of each operand's tile, and `wgmma.commit_group`; a
//! `Stmt::GroupWait` becomes `wgmma.wait_group`. The accumulators pass through both fences
//! as tied operands of the inline assembly, so neither LLVM nor `ptxas` can move a read or
//! write of them across one: the instructions run asynchronously, and only a wait makes
//! their results current.

use super::super::expr::{Emitter, Fail, V};
use super::{primitives, GpuArch};
use inkwell::types::BasicTypeEnum;
use inkwell::values::{BasicMetadataValueEnum, FloatValue, IntValue};
use kiln_compiler::kernel::warpgroup::{GroupOp, GroupProduct, ROW_ELEMS};
use kiln_compiler::kernel::{Buf, VarId};
use kiln_ir::DType;

/// The matrix descriptor's constant fields: the leading byte offset (1, unused by
/// swizzled K-major tiles), the stride between groups of 8 rows (8 staged rows of 128
/// bytes, in units of 16 bytes) and the 128-byte swizzle (layout type 1, bits 62-63).
const DESCRIPTOR_FIELDS: u64 = (1 << 16) | ((8 * ROW_ELEMS as u64 * 2 / 16) << 32) | (1 << 62);

pub fn group_mma(
    em: &mut Emitter<'_, '_>,
    op: GroupOp,
    products: &[GroupProduct],
) -> Result<(), Fail> {
    let desc = em
        .gpu
        .ok_or_else(|| Fail::msg("a warpgroup matrix instruction outside a GPU kernel"))?;
    if desc.arch != GpuArch::Nvptx || desc.cpu != "sm_90a" {
        return Err(Fail(format!(
            "warpgroup matrix instructions (wgmma) exist on sm_90a only, not {}",
            desc.cpu
        )));
    }
    if !op.valid() {
        return Err(Fail(format!(
            "no wgmma of shape m64n{}k16 on {} inputs",
            op.n, op.input
        )));
    }
    for p in products {
        for buf in [p.a, p.b] {
            let shared = matches!(buf, Buf::Local(l) if em.k.locals[l as usize].shared);
            if !shared || em.k.buf_dtype(buf) != op.input {
                return Err(Fail(format!(
                    "a wgmma operand in {buf}, which is not a shared local of {}",
                    op.input
                )));
            }
        }
    }
    // Each accumulator once, in order of first use.
    let mut accs: Vec<VarId> = Vec::new();
    for p in products {
        if !accs.contains(&p.acc) {
            accs.push(p.acc);
        }
    }
    let lanes = op.acc_lanes() as usize;
    let mut values = read_accs(em, &accs)?;
    if let Some(v) = values.iter().find(|v| v.len() != lanes) {
        return Err(Fail(format!(
            "an accumulator of {} lanes, where m64n{} takes {lanes}",
            v.len(),
            op.n
        )));
    }

    primitives::asm(em, "fence.proxy.async.shared::cta;")?;
    tie_through(em, "wgmma.fence.sync.aligned;", &mut values)?;
    let t = match op.input {
        DType::BF16 => "bf16",
        _ => "f16",
    };
    // The same text for every product: the accumulators, then both descriptors and the
    // scale of D (1: accumulate).
    let regs = (0..lanes)
        .map(|l| format!("${l}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "{{\n.reg .pred p;\nsetp.ne.b32 p, ${s}, 0;\n\
         wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{t}.{t} {{{regs}}}, ${a}, ${b}, p, 1, 1, 0, 0;\n}}",
        n = op.n,
        a = lanes,
        b = lanes + 1,
        s = lanes + 2,
    );
    let constraints = tied_floats(lanes, &["l", "l", "r"], false);
    for p in products {
        let a = descriptor(em, p.a, &p.a_index)?;
        let b = descriptor(em, p.b, &p.b_index)?;
        let slot = accs.iter().position(|&v| v == p.acc).unwrap_or(0);
        let mut args: Vec<BasicMetadataValueEnum> = vec![
            a.into(),
            b.into(),
            em.ctx.i32_type().const_int(1, false).into(),
        ];
        args.extend(
            values[slot]
                .iter()
                .map(|&f| BasicMetadataValueEnum::from(f)),
        );
        values[slot] = call_floats(em, &text, &constraints, &args, lanes)?;
    }
    primitives::asm(em, "wgmma.commit_group.sync.aligned;")?;
    write_accs(em, &accs, &values)
}

/// `Stmt::GroupWait`: `wgmma.wait_group`, with the accumulators tied through it.
pub fn group_wait(em: &mut Emitter<'_, '_>, accs: &[VarId], pending: u8) -> Result<(), Fail> {
    let mut values = read_accs(em, accs)?;
    tie_through(
        em,
        &format!("wgmma.wait_group.sync.aligned {pending};"),
        &mut values,
    )?;
    write_accs(em, accs, &values)
}

/// Each accumulator's lanes as scalars.
fn read_accs<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    accs: &[VarId],
) -> Result<Vec<Vec<FloatValue<'ctx>>>, Fail> {
    accs.iter()
        .map(|&acc| {
            let v = em.read_var(acc)?.into_vector_value();
            (0..v.get_type().get_size() as u64)
                .map(|l| {
                    let at = em.ctx.i64_type().const_int(l, false);
                    Ok(em.b.build_extract_element(v, at, "acc")?.into_float_value())
                })
                .collect()
        })
        .collect()
}

fn write_accs<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    accs: &[VarId],
    values: &[Vec<FloatValue<'ctx>>],
) -> Result<(), Fail> {
    let f32t = em.ctx.f32_type();
    for (&acc, scalars) in accs.iter().zip(values) {
        let mut v = f32t.vec_type(scalars.len() as u32).get_poison();
        for (l, &x) in scalars.iter().enumerate() {
            let at = em.ctx.i64_type().const_int(l as u64, false);
            v = em.b.build_insert_element(v, x, at, "acc")?;
        }
        em.assign(acc, v.into())?;
    }
    Ok(())
}

/// The descriptor of the tile whose first element is `index` of `buf`: its shared-memory
/// address (bits 0-13, in units of 16 bytes) and the layout's constant fields.
fn descriptor<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    buf: Buf,
    index: &kiln_compiler::kernel::Expr,
) -> Result<IntValue<'ctx>, Fail> {
    let i64t = em.ctx.i64_type();
    let at = em.expr(index)?.into_int_value();
    let (p, _) = em.element_ptr(buf, at)?;
    let address = em.b.build_ptr_to_int(p, i64t, "smem")?;
    let field =
        em.b.build_and(address, i64t.const_int(0x3_FFFF, false), "addr")?;
    let field =
        em.b.build_right_shift(field, i64t.const_int(4, false), false, "addr16")?;
    Ok(em
        .b
        .build_or(field, i64t.const_int(DESCRIPTOR_FIELDS, false), "desc")?)
}

/// `text` with every value of `values` passed through as a tied operand, so the values
/// after it are those the assembly "produced": reads and writes of them stay on their side.
fn tie_through<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    text: &str,
    values: &mut [Vec<FloatValue<'ctx>>],
) -> Result<(), Fail> {
    let all: Vec<FloatValue> = values.iter().flatten().copied().collect();
    let n = all.len();
    let constraints = tied_floats(n, &[], true);
    let args: Vec<BasicMetadataValueEnum> = all.iter().map(|&f| f.into()).collect();
    let mut out = call_floats(em, text, &constraints, &args, n)?.into_iter();
    for v in values.iter_mut().flatten() {
        *v = out
            .next()
            .ok_or_else(|| Fail::msg("inline assembly returned too few values"))?;
    }
    Ok(())
}

/// Inline-assembly constraints of `n` f32 results, then `inputs`, then `n` f32 inputs each
/// tied to its result's register, and a memory clobber where asked.
fn tied_floats(n: usize, inputs: &[&str], clobbers_memory: bool) -> String {
    std::iter::repeat_n("=f".to_string(), n)
        .chain(inputs.iter().map(|c| c.to_string()))
        .chain((0..n).map(|l| l.to_string()))
        .chain(clobbers_memory.then(|| "~{memory}".to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Calls inline assembly `text` returning `outputs` f32 values.
fn call_floats<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    text: &str,
    constraints: &str,
    args: &[BasicMetadataValueEnum<'ctx>],
    outputs: usize,
) -> Result<Vec<FloatValue<'ctx>>, Fail> {
    let f32t = em.ctx.f32_type();
    let params: Vec<_> = args
        .iter()
        .map(|a| match a {
            BasicMetadataValueEnum::IntValue(v) => v.get_type().into(),
            BasicMetadataValueEnum::FloatValue(v) => v.get_type().into(),
            _ => f32t.into(),
        })
        .collect();
    let fields: Vec<BasicTypeEnum> = vec![f32t.into(); outputs];
    let ret = em.ctx.struct_type(&fields, false);
    let ty = if outputs == 1 {
        f32t.fn_type(&params, false)
    } else {
        ret.fn_type(&params, false)
    };
    let asm = em.ctx.create_inline_asm(
        ty,
        text.to_string(),
        constraints.to_string(),
        true,
        false,
        None,
        false,
    );
    let call = em.b.build_indirect_call(ty, asm, args, "wgmma")?;
    let v: V = match call.try_as_basic_value() {
        inkwell::values::ValueKind::Basic(v) => v,
        _ => return Err(Fail::msg("inline assembly returned nothing")),
    };
    if outputs == 1 {
        return Ok(vec![v.into_float_value()]);
    }
    let s = v.into_struct_value();
    (0..outputs as u32)
        .map(|l| Ok(em.b.build_extract_value(s, l, "d")?.into_float_value()))
        .collect()
}
