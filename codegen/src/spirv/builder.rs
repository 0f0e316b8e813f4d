//! A thin layer over `rspirv`'s builder: value types of the kernel IR as SPIR-V types,
//! deduplicated constants, and one generic instruction helper, so the emitters read as a
//! list of operations rather than builder plumbing.
//!
//! Pure instructions are numbered by value: one with the same operation, type and operands
//! as an earlier one that dominates it is that one. The kernel IR is a tree, so the
//! emitters rebuild a shared part (a quantized block's row offset, its scale words) at
//! each use; a Q4_K matvec's module held each of its index computations ten times over,
//! 64-bit divisions included, which the driver's compiler had to find equal again.

use super::Fail;
use kiln_compiler::kernel::{Elem, VType};
use rspirv::dr::{Builder, InsertPoint, Instruction, Operand};
use rspirv::spirv::{Decoration, Op, StorageClass, Word};
use std::collections::HashMap;

/// A value: its id and kernel-IR type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct V {
    pub id: Word,
    pub t: VType,
}

/// A pure instruction by value: its opcode, result type and operands.
type Instr = (u32, Word, Vec<Word>);

pub struct Spv {
    pub b: Builder,
    pub glsl: Word,
    types: HashMap<VType, Word>,
    consts: HashMap<(VType, u64), Word>,
    /// Each constant's bits, by id (`constant`, `value_of`).
    bits_of: HashMap<Word, u64>,
    u32_consts: HashMap<u32, Word>,
    /// Pure instructions by (operation, result type, operands), one map per structured
    /// construct entered (`enter`), innermost last: what an enclosing one computed before
    /// dominates the construct, what a construct computed is forgotten when it is left.
    numbered: Vec<HashMap<Instr, Word>>,
}

impl Spv {
    pub fn new(b: Builder) -> Spv {
        let mut b = b;
        let glsl = b.ext_inst_import("GLSL.std.450");
        Spv {
            b,
            glsl,
            types: HashMap::new(),
            consts: HashMap::new(),
            bits_of: HashMap::new(),
            u32_consts: HashMap::new(),
            numbered: vec![HashMap::new()],
        }
    }

    /// A new function: nothing emitted before is visible in it.
    pub fn begin_numbering(&mut self) {
        self.numbered = vec![HashMap::new()];
    }

    /// Into a block that the current one dominates but that does not dominate what
    /// follows it (a loop's body or continue block, an arm of an if).
    pub fn enter(&mut self) {
        self.numbered.push(HashMap::new());
    }

    /// Out of the innermost block `enter`ed.
    pub fn leave(&mut self) {
        if self.numbered.len() > 1 {
            self.numbered.pop();
        }
    }

    /// The id of an earlier pure instruction `key`, or that of a new one `emit` appends.
    fn numbered(
        &mut self,
        key: Instr,
        emit: impl FnOnce(&mut Spv) -> Result<Word, Fail>,
    ) -> Result<Word, Fail> {
        if let Some(&id) = self.numbered.iter().rev().find_map(|m| m.get(&key)) {
            return Ok(id);
        }
        let id = emit(self)?;
        if let Some(scope) = self.numbered.last_mut() {
            scope.insert(key, id);
        }
        Ok(id)
    }

    /// A load through `ptr` of memory no invocation writes while the kernel runs (a
    /// read-only binding), numbered like a pure instruction: the words of one 16-byte group
    /// share one load (`spirv::groups`).
    pub fn load_invariant(&mut self, ty: Word, ptr: Word) -> Result<Word, Fail> {
        let key = (Op::Load as u32, ty, vec![ptr]);
        self.numbered(key, |s| s.emit_op(Op::Load, ty, &[ptr]))
    }

    /// Lane `lane` of vector `v`, as type `ty`.
    pub fn extract(&mut self, ty: Word, v: Word, lane: u32) -> Result<Word, Fail> {
        let key = (Op::CompositeExtract as u32, ty, vec![v, lane]);
        self.numbered(key, |s| Ok(s.b.composite_extract(ty, None, v, [lane])?))
    }

    /// A pointer of type `ptr` to element `indices` of `base`.
    pub fn access_chain(&mut self, ptr: Word, base: Word, indices: &[Word]) -> Result<Word, Fail> {
        let mut operands = vec![base];
        operands.extend(indices);
        let key = (Op::AccessChain as u32, ptr, operands);
        self.numbered(key, |s| {
            Ok(s.b.access_chain(ptr, None, base, indices.iter().copied())?)
        })
    }

    pub fn ty(&mut self, t: VType) -> Word {
        if let Some(&id) = self.types.get(&t) {
            return id;
        }
        let id = if t.lanes > 1 {
            let e = self.ty(t.with_lanes(1));
            self.b.type_vector(e, t.lanes as u32)
        } else {
            match t.elem {
                Elem::F32 => self.b.type_float(32, None),
                Elem::I32 => self.b.type_int(32, 1),
                Elem::I64 => self.b.type_int(64, 1),
                Elem::Bool => self.b.type_bool(),
            }
        };
        self.types.insert(t, id);
        id
    }

    /// The unsigned integer type of `t`'s width and lanes (for the operations SPIR-V
    /// types as unsigned).
    pub fn unsigned(&mut self, t: VType) -> Word {
        let bits = if t.elem == Elem::I64 { 64 } else { 32 };
        let e = self.b.type_int(bits, 0);
        match t.lanes {
            1 => e,
            n => self.b.type_vector(e, n as u32),
        }
    }

    pub fn u32_ty(&mut self) -> Word {
        self.b.type_int(32, 0)
    }

    pub fn ptr(&mut self, class: StorageClass, pointee: Word) -> Word {
        self.b.type_pointer(None, class, pointee)
    }

    /// A constant of type `t` whose every lane holds `bits` (the value's bit pattern,
    /// truncated to the element's width; for bools, non-zero is true).
    pub fn constant(&mut self, t: VType, bits: u64) -> Word {
        if let Some(&id) = self.consts.get(&(t, bits)) {
            return id;
        }
        let ty = self.ty(t);
        let id = if t.lanes > 1 {
            let lane = self.constant(t.with_lanes(1), bits);
            self.b
                .constant_composite(ty, std::iter::repeat_n(lane, t.lanes as usize))
        } else {
            match t.elem {
                Elem::Bool if bits != 0 => self.b.constant_true(ty),
                Elem::Bool => self.b.constant_false(ty),
                Elem::I64 => self.b.constant_bit64(ty, bits),
                Elem::F32 | Elem::I32 => self.b.constant_bit32(ty, bits as u32),
            }
        };
        self.consts.insert((t, bits), id);
        self.bits_of.insert(id, bits);
        id
    }

    /// The bits of constant `id` (`constant`), if it is one.
    pub fn value_of(&self, id: Word) -> Option<u64> {
        self.bits_of.get(&id).copied()
    }

    pub fn f32(&mut self, v: f32) -> V {
        self.lit(VType::F32, v.to_bits() as u64)
    }

    pub fn i32(&mut self, v: i32) -> V {
        self.lit(VType::I32, v as u32 as u64)
    }

    pub fn i64(&mut self, v: i64) -> V {
        self.lit(VType::I64, v as u64)
    }

    pub fn lit(&mut self, t: VType, bits: u64) -> V {
        V {
            id: self.constant(t, bits),
            t,
        }
    }

    /// An unsigned 32-bit constant: scopes, memory semantics and array lengths.
    pub fn u32_const(&mut self, v: u32) -> Word {
        if let Some(&id) = self.u32_consts.get(&v) {
            return id;
        }
        let ty = self.u32_ty();
        let id = self.b.constant_bit32(ty, v);
        self.u32_consts.insert(v, id);
        id
    }

    /// Appends `op` with result type `ty` and id operands `args`; returns the result id.
    pub fn op(&mut self, op: Op, ty: Word, args: &[Word]) -> Result<Word, Fail> {
        if pure(op) {
            let key = (op as u32, ty, args.to_vec());
            return self.numbered(key, |s| s.emit_op(op, ty, args));
        }
        self.emit_op(op, ty, args)
    }

    fn emit_op(&mut self, op: Op, ty: Word, args: &[Word]) -> Result<Word, Fail> {
        let id = self.b.id();
        let inst = Instruction::new(
            op,
            Some(ty),
            Some(id),
            args.iter().map(|&a| Operand::IdRef(a)).collect(),
        );
        self.b.insert_into_block(InsertPoint::End, inst)?;
        if matches!(op, Op::FAdd | Op::FSub | Op::FMul | Op::FDiv) {
            // Evaluated exactly as written, as on the CPU backends: no fusing into FMAs
            // and no algebraic shortcuts. Without this, drivers may fold the
            // `(x + 1.5 * 2^23) - 1.5 * 2^23` rounding of the exp/log expansions away.
            self.b.decorate(id, Decoration::NoContraction, []);
        }
        Ok(id)
    }

    /// `op` on values of type `t` (the result has type `t` too).
    pub fn op_v(&mut self, op: Op, t: VType, args: &[V]) -> Result<V, Fail> {
        let ty = self.ty(t);
        let ids: Vec<Word> = args.iter().map(|a| a.id).collect();
        Ok(V {
            id: self.op(op, ty, &ids)?,
            t,
        })
    }

    /// A `GLSL.std.450` extended instruction on values, yielding type `t` (every one
    /// kiln uses is pure).
    pub fn glsl(&mut self, inst: u32, t: VType, args: &[V]) -> Result<V, Fail> {
        let ty = self.ty(t);
        let glsl = self.glsl;
        let mut key = vec![inst];
        key.extend(args.iter().map(|a| a.id));
        let id = self.numbered((Op::ExtInst as u32, ty, key), |s| {
            Ok(s.b.ext_inst(
                ty,
                None,
                glsl,
                inst,
                args.iter().map(|a| Operand::IdRef(a.id)),
            )?)
        })?;
        Ok(V { id, t })
    }

    /// A statement with no result (stores, barriers, atomics' side effects).
    pub fn effect(&mut self, op: Op, operands: Vec<Operand>) -> Result<(), Fail> {
        let inst = Instruction::new(op, None, None, operands);
        self.b.insert_into_block(InsertPoint::End, inst)?;
        Ok(())
    }
}

/// Whether `op` computes its result from its operands alone (no memory, no side effects,
/// nothing that depends on other invocations), so equal ones are one value.
pub(super) fn pure(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        IAdd | ISub
            | IMul
            | SDiv
            | UDiv
            | SRem
            | UMod
            | SNegate
            | ShiftLeftLogical
            | ShiftRightLogical
            | ShiftRightArithmetic
            | BitwiseAnd
            | BitwiseOr
            | BitwiseXor
            | Not
            | FAdd
            | FSub
            | FMul
            | FDiv
            | FNegate
            | SConvert
            | UConvert
            | ConvertSToF
            | ConvertFToS
            | Bitcast
            | CompositeConstruct
            | Select
            | IEqual
            | INotEqual
            | SLessThan
            | SLessThanEqual
            | SGreaterThan
            | SGreaterThanEqual
            | FOrdEqual
            | FUnordNotEqual
            | FOrdLessThan
            | FOrdLessThanEqual
            | FOrdGreaterThan
            | FOrdGreaterThanEqual
            | LogicalAnd
            | LogicalOr
            | LogicalNot
            | LogicalEqual
            | LogicalNotEqual
    )
}

/// `GLSL.std.450` instruction numbers (from the extended instruction set's specification).
pub mod glsl {
    pub const F_ABS: u32 = 4;
    pub const S_ABS: u32 = 5;
    pub const SQRT: u32 = 31;
    pub const S_MIN: u32 = 39;
    pub const S_MAX: u32 = 42;
    pub const FMA: u32 = 50;
    pub const UNPACK_HALF_2X16: u32 = 62;
    /// The non-NaN operand when one is NaN (LLVM's `minnum`/`maxnum`, which the CPU
    /// backends use).
    pub const N_MIN: u32 = 79;
    pub const N_MAX: u32 = 80;
}
