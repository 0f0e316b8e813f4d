//! `Expr::Mma` -> the target's matrix intrinsic. The kernel IR hands each lane's registers
//! of A, B and C as f32 vectors in the order `kiln_compiler::kernel::matrix` describes;
//! here they are rounded to the input type (f16: to nearest even, which LLVM folds away
//! against the widening of a load from an f16 buffer; bf16: by dropping the low half, exact
//! because the lowering multiplies only bf16 buffers in bf16), packed the way the intrinsic
//! takes them, and the result is returned as an f32 vector again.

use super::super::expr::{Emitter, Fail, V};
use inkwell::values::{BasicValueEnum, IntValue};
use inkwell::AddressSpace;
use kiln_compiler::kernel::matrix::{MatrixOp, MatrixUnit};
use kiln_compiler::kernel::Buf;
use kiln_ir::DType;

/// `Expr::LoadMatrix` -> `ldmatrix` (NVIDIA, sm_75 and newer): the lane's 32-bit
/// registers of `count` matrices, as the widened lanes a load of the same halves gives.
pub fn load_matrix<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    buf: Buf,
    index: IntValue<'ctx>,
    count: u8,
) -> Result<V<'ctx>, Fail> {
    let desc = em
        .gpu
        .ok_or_else(|| Fail::msg("ldmatrix outside a GPU kernel"))?;
    if desc.arch != super::GpuArch::Nvptx {
        return Err(Fail::msg(
            "ldmatrix is NVIDIA's (the lowering emits it only for mma.sync)",
        ));
    }
    let shared = match buf {
        Buf::Local(l) => em.k.locals[l as usize].shared,
        Buf::Arg(_) => false,
    };
    let dtype = em.base(buf).1;
    if !shared || dtype.size_bytes() != 2 || !matches!(count, 1 | 2 | 4) {
        return Err(Fail(format!(
            "ldmatrix of {count} matrices of {dtype} from {buf} (it reads 1, 2 or 4 matrices \
             of 16-bit elements from shared memory)"
        )));
    }
    let (p, _) = em.element_ptr(buf, index)?;
    let ptr_type = em.ctx.ptr_type(AddressSpace::from(desc.shared_as));
    let name = format!("llvm.nvvm.ldmatrix.sync.aligned.m8n8.x{count}.b16");
    let got = em.intrinsic(&name, &[ptr_type.into()], &[p.into()])?;
    let i32t = em.ctx.i32_type();
    let words = if count == 1 {
        vec![got.into_int_value()]
    } else {
        let s = got.into_struct_value();
        (0..count as u32)
            .map(|l| Ok(em.b.build_extract_value(s, l, "w")?.into_int_value()))
            .collect::<Result<Vec<_>, Fail>>()?
    };
    let mut v = i32t.vec_type(count as u32).get_poison();
    for (l, w) in words.into_iter().enumerate() {
        v =
            em.b.build_insert_element(v, w, i32t.const_int(l as u64, false), "w")?;
    }
    let raw =
        em.b.build_bit_cast(v, em.ctx.i16_type().vec_type(2 * count as u32), "pairs")?;
    em.widen_from_storage(raw, dtype)
}

pub fn multiply_accumulate<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    op: MatrixOp,
    a: V<'ctx>,
    b: V<'ctx>,
    c: V<'ctx>,
) -> Result<V<'ctx>, Fail> {
    let (a, b) = (round(em, a, op.input)?, round(em, b, op.input)?);
    let i32t = em.ctx.i32_type();
    let bf16 = op.input == DType::BF16;
    match op.unit {
        MatrixUnit::MmaM16N8K16 => {
            // Registers of two halves each: A four, B two; C and D four f32 scalars.
            let (a, b) = (words(em, a, bf16)?, words(em, b, bf16)?);
            let mut args = a;
            args.extend(b);
            let cv = c.into_vector_value();
            for l in 0..4 {
                args.push(em.b.build_extract_element(cv, i32t.const_int(l, false), "c")?);
            }
            let name = if bf16 {
                "llvm.nvvm.mma.m16n8k16.row.col.bf16"
            } else {
                "llvm.nvvm.mma.m16n8k16.row.col.f32.f32"
            };
            let d = em.intrinsic(name, &[], &args)?.into_struct_value();
            let f32x4 = em.ctx.f32_type().vec_type(4);
            let mut out = f32x4.get_poison();
            for l in 0..4 {
                let x = em.b.build_extract_value(d, l, "d")?;
                out =
                    em.b.build_insert_element(out, x, i32t.const_int(l as u64, false), "d")?;
            }
            Ok(out.into())
        }
        MatrixUnit::Mfma16x16x16 => {
            let name = if bf16 {
                "llvm.amdgcn.mfma.f32.16x16x16bf16.1k"
            } else {
                "llvm.amdgcn.mfma.f32.16x16x16f16"
            };
            // cbsz, abid, blgp: no broadcasting between blocks.
            let zero = i32t.const_zero().into();
            em.intrinsic(name, &[], &[a, b, c, zero, zero, zero])
        }
        MatrixUnit::WmmaGfx11 | MatrixUnit::WmmaGfx12 => {
            let name = if bf16 {
                "llvm.amdgcn.wmma.f32.16x16x16.bf16"
            } else {
                "llvm.amdgcn.wmma.f32.16x16x16.f16"
            };
            em.intrinsic(name, &[c.get_type(), a.get_type()], &[a, b, c])
        }
    }
}

/// f32 lanes -> `<n x half>` (f16) or `<n x i16>` holding bf16 bits (see the module doc).
fn round<'ctx>(em: &mut Emitter<'_, 'ctx>, x: V<'ctx>, input: DType) -> Result<V<'ctx>, Fail> {
    let x = x.into_vector_value();
    let n = x.get_type().get_size();
    Ok(match input {
        DType::F16 => {
            em.b.build_float_trunc(x, em.ctx.f16_type().vec_type(n), "h")?
                .into()
        }
        DType::BF16 => {
            let i32v = em.ctx.i32_type().vec_type(n);
            let bits = em.b.build_bit_cast(x, i32v, "bits")?.into_vector_value();
            let sixteen = em.ctx.i32_type().const_int(16, false);
            let high = em.b.build_right_shift(
                bits,
                inkwell::types::VectorType::const_vector(&vec![sixteen; n as usize]),
                false,
                "hi",
            )?;
            em.b.build_int_truncate(high, em.ctx.i16_type().vec_type(n), "bf")?
                .into()
        }
        other => return Err(Fail(format!("matrix instructions on {other}"))),
    })
}

/// A vector of 16-bit values as the 32-bit registers `mma.sync` takes: `<2 x half>` each
/// for f16, `i32` each for bf16.
fn words<'ctx>(
    em: &mut Emitter<'_, 'ctx>,
    x: V<'ctx>,
    bf16: bool,
) -> Result<Vec<BasicValueEnum<'ctx>>, Fail> {
    let x = x.into_vector_value();
    let n = x.get_type().get_size();
    let i32t = em.ctx.i32_type();
    if bf16 {
        let w =
            em.b.build_bit_cast(x, i32t.vec_type(n / 2), "w")?
                .into_vector_value();
        return (0..n / 2)
            .map(|l| {
                Ok(em
                    .b
                    .build_extract_element(w, i32t.const_int(l as u64, false), "w")?)
            })
            .collect();
    }
    (0..n / 2)
        .map(|l| {
            let pair = inkwell::types::VectorType::const_vector(&[
                i32t.const_int(2 * l as u64, false),
                i32t.const_int(2 * l as u64 + 1, false),
            ]);
            let poison = x.get_type().get_poison();
            Ok(em.b.build_shuffle_vector(x, poison, pair, "pair")?.into())
        })
        .collect()
}
