//! Per-kernel emission state and structured control flow.
//!
//! SPIR-V for Vulkan needs structured control flow: every loop names its merge and continue
//! blocks, every branch its merge block. The kernel IR is structured already (counted
//! loops and two-armed ifs), so each construct maps to one fixed block pattern here.
//! Mutable state (declared variables, loop counters) lives in function-scope variables;
//! drivers promote them to registers.

use super::builder::{Spv, V};
use super::groups::Groups;
use super::Fail;
use kiln_compiler::kernel::align::Alignment;
use kiln_compiler::kernel::ranges::Ranges;
use kiln_compiler::kernel::{Expr, Kernel, VType, VarId};
use rspirv::dr::{InsertPoint, Instruction, Operand};
use rspirv::spirv::{LoopControl, Op, SelectionControl, StorageClass, Word};
use std::collections::HashMap;

/// The module-wide interface every entry point shares (see the module doc of `spirv`).
pub struct Abi {
    /// Pointer types of a binding: a block holding a runtime array of 32-bit words, of
    /// 2-word vectors, of 4-word vectors (indexed by log2 of the words per element).
    pub buffer_ptr: [Word; 3],
    /// `{ i64 points; i64 dims[..] }`, a read-only storage buffer at binding 0: a buffer,
    /// not push constants, so that a recorded command buffer can be replayed with new values
    /// (a decode step moves `past`).
    pub params: Word,
    /// The subgroup built-ins, in modules built for devices with subgroup arithmetic.
    pub subgroups: Option<Subgroups>,
    pub local_id: Word,
    pub group_id: Word,
    pub group_count: Word,
    /// The block-reduction array in workgroup memory (one f32 per thread).
    pub partials: Word,
}

/// `SubgroupLocalInvocationId`, `SubgroupId` and `NumSubgroups` (u32 inputs).
#[derive(Clone, Copy)]
pub struct Subgroups {
    pub lane: Word,
    pub id: Word,
    pub count: Word,
}

pub struct Emitter<'s, 'k> {
    pub s: &'s mut Spv,
    pub abi: &'s Abi,
    pub k: &'k Kernel,
    /// The kernel's storage-buffer variables, one per argument (binding = position + 1).
    pub bindings: Vec<Word>,
    /// Words per array element of each binding (1, 2 or 4; `kernel::views`).
    pub views: Vec<u8>,
    /// What the kernel's indices are known to be multiples of.
    pub align: Alignment<'k>,
    /// The 16-byte groups of the read-only bindings that two or more reads share.
    pub groups: Groups,
    /// The arrays backing the kernel's local buffers, and their storage class: function
    /// scope for a thread's own, workgroup memory for the shared locals of a kernel of
    /// explicit threads.
    pub locals: Vec<(Word, StorageClass)>,
    /// This invocation's index in its workgroup (`Expr::Thread`), in kernels of explicit
    /// threads.
    pub thread: Option<V>,
    pub dims: Vec<V>,
    pub grid: Vec<V>,
    pub lets: HashMap<VarId, V>,
    /// What the loops and lets bound so far show of the kernel's index values (`index`).
    pub ranges: Ranges<'k>,
    /// The i32 twin of an i64 value known to lie within i32 (a loop counted in 32 bits, a
    /// built-in index): narrowing the i64 gives the twin rather than a conversion.
    pub narrowed: HashMap<Word, V>,
    pub vars: HashMap<VarId, (Word, VType)>,
    /// Variable ids at and above this are free for expressions the backend builds itself.
    pub next_var: VarId,
    /// `OpVariable`s, which SPIR-V requires at the top of the entry block; placed there
    /// when the function is finished.
    pub fn_vars: Vec<Instruction>,
}

pub type Body<'f, 's, 'k> = dyn FnMut(&mut Emitter<'s, 'k>, V) -> Result<(), Fail> + 'f;

impl<'s, 'k> Emitter<'s, 'k> {
    /// A new function-scope variable holding a `pointee`.
    pub fn function_var(&mut self, pointee: Word) -> Word {
        let ptr = self.s.ptr(StorageClass::Function, pointee);
        let id = self.s.b.id();
        self.fn_vars.push(Instruction::new(
            Op::Variable,
            Some(ptr),
            Some(id),
            vec![Operand::StorageClass(StorageClass::Function)],
        ));
        id
    }

    /// Moves the collected variables into the entry block (block 0 of the function).
    pub fn place_vars(&mut self) -> Result<(), Fail> {
        self.s.b.select_block(Some(0))?;
        for v in self.fn_vars.drain(..).rev() {
            self.s.b.insert_into_block(InsertPoint::Begin, v)?;
        }
        self.s.b.select_block(None)?;
        Ok(())
    }

    pub fn store_ptr(&mut self, ptr: Word, v: Word) -> Result<(), Fail> {
        self.s
            .effect(Op::Store, vec![Operand::IdRef(ptr), Operand::IdRef(v)])
    }

    pub fn load_ptr(&mut self, ptr: Word, t: VType) -> Result<V, Fail> {
        let ty = self.s.ty(t);
        Ok(V {
            id: self.s.op(Op::Load, ty, &[ptr])?,
            t,
        })
    }

    pub fn declare(&mut self, var: VarId, v: V) -> Result<(), Fail> {
        self.ranges.forget(var);
        let ptr = match self.vars.get(&var) {
            Some(&(p, t)) if t == v.t => p,
            _ => {
                let ty = self.s.ty(v.t);
                let p = self.function_var(ty);
                self.vars.insert(var, (p, v.t));
                p
            }
        };
        self.store_ptr(ptr, v.id)
    }

    pub fn assign(&mut self, var: VarId, v: V) -> Result<(), Fail> {
        let &(ptr, _) = self
            .vars
            .get(&var)
            .ok_or_else(|| Fail(format!("assignment to undeclared variable v{var}")))?;
        self.store_ptr(ptr, v.id)
    }

    /// Binds `var` to `v`, the value of `value`.
    pub fn bind_let(&mut self, var: VarId, v: V, value: &Expr) {
        self.lets.insert(var, v);
        self.ranges.bind_value(var, value);
    }

    /// Binds `var` to `it`, the index of a loop over `extent`.
    pub fn bind_index(&mut self, var: VarId, it: V, extent: &Expr) {
        self.lets.insert(var, it);
        self.ranges.bind_index(var, extent);
    }

    pub fn read_var(&mut self, var: VarId) -> Result<V, Fail> {
        if let Some(&v) = self.lets.get(&var) {
            return Ok(v);
        }
        let &(ptr, t) = self
            .vars
            .get(&var)
            .ok_or_else(|| Fail(format!("read of unbound variable v{var}")))?;
        self.load_ptr(ptr, t)
    }

    /// `for i = start; i < end; i += step { body(i) }` over i64 values; returns `i` as the
    /// loop leaves it (the first value not below `end`, or `start`). With `narrow` (the
    /// caller's ranges show `end + step` within i32) the counter is an i32, which GPUs step
    /// and compare in one instruction each where an i64 takes several; the body still sees
    /// an i64, whose narrowing is the counter itself (`narrowed`).
    pub fn strided_loop(
        &mut self,
        start: V,
        end: V,
        step: V,
        narrow: bool,
        body: &mut Body<'_, 's, 'k>,
    ) -> Result<V, Fail> {
        let (start, end, step) = match narrow {
            true => (
                self.narrow_i32(start)?,
                self.narrow_i32(end)?,
                self.narrow_i32(step)?,
            ),
            false => (start, end, step),
        };
        let t = start.t;
        let ty = self.s.ty(t);
        let bool_t = self.s.ty(VType::BOOL);
        let counter = self.function_var(ty);
        self.store_ptr(counter, start.id)?;
        let b = &mut self.s.b;
        let (header, cond, inner, cont, merge) = (b.id(), b.id(), b.id(), b.id(), b.id());
        b.branch(header)?;
        b.begin_block(Some(header))?;
        b.loop_merge(merge, cont, LoopControl::NONE, [])?;
        b.branch(cond)?;
        b.begin_block(Some(cond))?;
        let i = self.load_ptr(counter, t)?;
        let more = self.s.op(Op::SLessThan, bool_t, &[i.id, end.id])?;
        self.s.b.branch_conditional(more, inner, merge, [])?;
        self.s.b.begin_block(Some(inner))?;
        self.s.enter();
        let wide = self.widen(i)?;
        body(self, wide)?;
        self.s.leave();
        self.s.b.branch(cont)?;
        self.s.b.begin_block(Some(cont))?;
        self.s.enter();
        let next = self.s.op(Op::IAdd, ty, &[i.id, step.id])?;
        self.s.leave();
        self.store_ptr(counter, next)?;
        self.s.b.branch(header)?;
        self.s.b.begin_block(Some(merge))?;
        let last = self.load_ptr(counter, t)?;
        self.widen(last)
    }

    /// `x` as an i64: itself if it is one, else sign-extended, remembered as the i64's
    /// twin.
    pub fn widen(&mut self, x: V) -> Result<V, Fail> {
        if x.t == VType::I64 {
            return Ok(x);
        }
        if let Some(bits) = self.s.value_of(x.id) {
            return Ok(self.s.i64(bits as u32 as i32 as i64));
        }
        let wide = self.s.op_v(Op::SConvert, VType::I64, &[x])?;
        self.narrowed.insert(wide.id, x);
        Ok(wide)
    }

    pub fn counted_loop(
        &mut self,
        n: V,
        narrow: bool,
        body: &mut Body<'_, 's, 'k>,
    ) -> Result<(), Fail> {
        let (zero, one) = (self.s.i64(0), self.s.i64(1));
        self.strided_loop(zero, n, one, narrow, body)?;
        Ok(())
    }

    /// The value of a loop's `extent`, and whether a loop over it from a non-negative start
    /// by steps of at most `step` can count in i32: every value it takes, and the first past
    /// the end, lies within i32.
    pub fn loop_extent(&mut self, extent: &Expr, step: u64) -> Result<(V, bool), Fail> {
        let hi = self.ranges.of(extent).and_then(|r| r.hi);
        let narrow = hi
            .and_then(|h| h.checked_add(step as i64))
            .is_some_and(|v| v <= i32::MAX as i64);
        Ok((self.expr(extent)?, narrow))
    }

    /// `a op b` (an integer `IAdd`, `ISub` or `IMul`) for i64 values `a` and `b`, in 32 bits
    /// (then widened) where `narrow` says the result lies within i32.
    pub fn index_op(&mut self, op: Op, a: V, b: V, narrow: bool) -> Result<V, Fail> {
        if !narrow {
            return self.s.op_v(op, VType::I64, &[a, b]);
        }
        let (x, y) = (self.narrow_i32(a)?, self.narrow_i32(b)?);
        let r = self.s.op_v(op, VType::I32, &[x, y])?;
        self.widen(r)
    }

    /// `if c { then() } else { otherwise() }`.
    pub fn if_else(
        &mut self,
        c: V,
        then: &mut dyn FnMut(&mut Emitter<'s, 'k>) -> Result<(), Fail>,
        otherwise: &mut dyn FnMut(&mut Emitter<'s, 'k>) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        let b = &mut self.s.b;
        let (t, e, join) = (b.id(), b.id(), b.id());
        b.selection_merge(join, SelectionControl::NONE)?;
        b.branch_conditional(c.id, t, e, [])?;
        b.begin_block(Some(t))?;
        self.s.enter();
        then(self)?;
        self.s.leave();
        self.s.b.branch(join)?;
        self.s.b.begin_block(Some(e))?;
        self.s.enter();
        otherwise(self)?;
        self.s.leave();
        self.s.b.branch(join)?;
        self.s.b.begin_block(Some(join))?;
        Ok(())
    }
}
