//! One kernel -> one Cranelift function with the kernel ABI
//! `(args: *const *mut u8, dims: *const i64, begin: i64, end: i64)`: unpack the buffers,
//! loop over grid points `begin..end`, recover each point's grid index, run the body.

use super::expr::Emitter;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, Function, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use kiln_compiler::kernel::{Kernel, RedOp, Stmt};
use std::collections::HashMap;

pub fn build(
    func: &mut Function,
    k: &Kernel,
    isa: &dyn TargetIsa,
    has_fma: bool,
) -> Result<(), String> {
    let (ptr, call_conv) = (isa.pointer_type(), isa.default_call_conv());
    func.signature.call_conv = call_conv;
    for _ in 0..4 {
        func.signature.params.push(AbiParam::new(types::I64));
    }
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let (args, dims_ptr, begin, end) = (params[0], params[1], params[2], params[3]);
    let flags = MemFlagsData::new().with_notrap();
    let bufs = (0..k.args.len())
        .map(|i| b.ins().load(ptr, flags, args, (i * 8) as i32))
        .collect();
    let dims = (0..k.dims_read() as i32)
        .map(|d| b.ins().load(types::I64, flags, dims_ptr, d * 8))
        .collect();
    let locals = k
        .locals
        .iter()
        .map(|l| {
            b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                l.len * l.dtype.size_bytes() as u32,
                6,
            ))
        })
        .collect();
    let mut em = Emitter {
        b,
        k,
        bufs,
        locals,
        dims,
        grid: Vec::new(),
        lets: HashMap::new(),
        vars: HashMap::new(),
        has_fma,
        ptr,
    };
    let extents = k
        .grid
        .iter()
        .map(|g| em.expr(g))
        .collect::<Result<Vec<_>, _>>()?;
    let count = em.b.ins().isub(end, begin);
    em.counted_loop(count, &mut |em, it| {
        let flat = em.b.ins().iadd(begin, it);
        em.grid = decompose(em, flat, &extents);
        stmts(em, &k.body)
    })?;
    em.b.ins().return_(&[]);
    em.b.seal_all_blocks();
    em.b.finalize(isa.frontend_config());
    Ok(())
}

fn decompose(em: &mut Emitter, flat: Value, extents: &[Value]) -> Vec<Value> {
    let mut idx = vec![flat; extents.len()];
    let mut rest = flat;
    for g in (0..extents.len()).rev() {
        if g == 0 {
            idx[g] = rest;
        } else {
            idx[g] = em.b.ins().srem(rest, extents[g]);
            rest = em.b.ins().sdiv(rest, extents[g]);
        }
    }
    idx
}

fn stmts(em: &mut Emitter, body: &[Stmt]) -> Result<(), String> {
    body.iter().try_for_each(|s| stmt(em, s))
}

fn stmt(em: &mut Emitter, s: &Stmt) -> Result<(), String> {
    match s {
        Stmt::Let { var, value } => {
            let v = em.expr(value)?;
            em.lets.insert(*var, v);
        }
        Stmt::Decl { var, init } => {
            let v = em.expr(init)?;
            em.declare(*var, v);
        }
        Stmt::Assign { var, value } => {
            let v = em.expr(value)?;
            em.assign(*var, v)?;
        }
        Stmt::Store { buf, index, value } => {
            let i = em.expr(index)?;
            let v = em.expr(value)?;
            em.store(*buf, i, v)?;
        }
        // Cranelift has no prefetch instruction; the hint is dropped.
        Stmt::Prefetch { .. } => {}
        Stmt::Copy { .. } | Stmt::Await { .. } => {
            return Err("shared-memory copies are GPU code (CUDA and HIP targets)".to_string())
        }
        Stmt::GroupMma { .. } | Stmt::GroupWait { .. } => {
            return Err("warpgroup matrix instructions are GPU code (cuda:sm_90a)".to_string())
        }
        Stmt::Loop {
            var, extent, body, ..
        } => {
            let n = em.expr(extent)?;
            em.counted_loop(n, &mut |em, it| {
                em.lets.insert(*var, it);
                stmts(em, body)
            })?;
        }
        Stmt::Reduce {
            acc,
            op,
            var,
            extent,
            value,
            ..
        } => {
            let init = match op {
                RedOp::Sum => em.b.ins().f32const(0.0),
                RedOp::Max => em.b.ins().f32const(f32::NEG_INFINITY),
            };
            em.declare(*acc, init);
            let n = em.expr(extent)?;
            em.counted_loop(n, &mut |em, it| {
                em.lets.insert(*var, it);
                let x = em.expr(value)?;
                let a = em.read(*acc)?;
                let r = match op {
                    RedOp::Sum => em.b.ins().fadd(a, x),
                    RedOp::Max => em.b.ins().fmax(a, x),
                };
                em.assign(*acc, r)
            })?;
        }
        Stmt::If {
            cond,
            then,
            otherwise,
        } => {
            let c = em.expr(cond)?;
            let (bt, be, bj) = (
                em.b.create_block(),
                em.b.create_block(),
                em.b.create_block(),
            );
            em.b.ins().brif(c, bt, &[], be, &[]);
            em.b.switch_to_block(bt);
            em.b.seal_block(bt);
            stmts(em, then)?;
            em.b.ins().jump(bj, &[]);
            em.b.switch_to_block(be);
            em.b.seal_block(be);
            stmts(em, otherwise)?;
            em.b.ins().jump(bj, &[]);
            em.b.switch_to_block(bj);
            em.b.seal_block(bj);
        }
    }
    Ok(())
}

impl Emitter<'_, '_> {
    /// `for it in 0..n { body(it) }`; the counter is a frontend variable.
    pub fn counted_loop(
        &mut self,
        n: Value,
        body: &mut dyn FnMut(&mut Self, Value) -> Result<(), String>,
    ) -> Result<(), String> {
        let counter = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(counter, zero);
        let (head, bodyb, exit) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let i = self.b.use_var(counter);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, n);
        self.b.ins().brif(more, bodyb, &[], exit, &[]);
        self.b.switch_to_block(bodyb);
        self.b.seal_block(bodyb);
        body(self, i)?;
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(counter, next);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }
}
