//! Runs of bytes that start two bytes into a word (Q8_0's quants: 34-byte blocks, the
//! quants after a 2-byte scale), read as aligned 32-bit words and shifted into place by byte
//! permutes on NVPTX.
//!
//! LLVM reads such a run with a load per two bytes: eight for a step's sixteen quant bytes,
//! each spanning as many cache lines across the warp as one wide load would. Profiled on an
//! H100 (docs/perf.md, 2026-12-06), the decode matvecs were bound by L1's data path, not by
//! instructions or DRAM. Here the run's words are read whole (one more than the run holds,
//! never past the word of its last byte) and each pair joined by one byte permute (`prmt`,
//! selecting bytes `offset..offset + 4` of the pair; LLVM expands a funnel shift by a
//! variable amount into six instructions).
//!
//! Other runs of 16 bytes or more load in pieces no wider than their index's proven
//! alignment: LLVM 19's NVPTX backend lowers a `<16 x i8>` load to one `ld.v4.u32` whatever
//! the load's alignment (Q5_1's quants, 8 bytes into 24-byte blocks, faulted with a
//! misaligned address on an H100), and folds a wider-typed load's bitcast back into one.

use super::super::expr::{Emitter, Fail, V};
use inkwell::values::{BasicValue, VectorValue};
use kiln_compiler::kernel::{Buf, Expr};
use kiln_ir::DType;

/// Bytes a run has at least to take either form here: the shortest run LLVM 19 loads as
/// one 16-byte load, and the shortest worth reading as words (the extra word and the address
/// arithmetic cost about as many instructions as an 8-byte run's four 2-byte loads save:
/// PTX of the q8_0 matvec over f32 activations, whose steps are two such runs, 325 -> 350
/// instructions a loop, unmeasured on a GPU; the steps over quantized activations read 32
/// bytes a run, 202 instructions for 128 weights where 2-byte loads took 147 for 64).
const MIN_RUN: u8 = 16;

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// `lanes` bytes of byte buffer `buf` from `index` (widened to i32 lanes, as `load`
    /// gives them), where the run is `MIN_RUN` bytes or more: read as words where the index
    /// is even but not provably a multiple of four (`byte_permute`), else in pieces no
    /// wider than its proven alignment (`split_byte_runs`); `None` where neither applies.
    pub(in crate::llvm) fn byte_run(
        &mut self,
        buf: Buf,
        index: &Expr,
        lanes: u8,
    ) -> Result<Option<V<'ctx>>, Fail> {
        if lanes < MIN_RUN || self.base(buf).1 != DType::U8 {
            return Ok(None);
        }
        let proven = [16u8, 8, 4, 2]
            .into_iter()
            .find(|&n| self.alignment.multiple_of(index, n as u64))
            .unwrap_or(1);
        if self.byte_permute && proven == 2 && lanes.is_multiple_of(4) {
            return self.word_run(buf, index, lanes).map(Some);
        }
        if self.split_byte_runs && lanes.is_power_of_two() {
            return self.aligned_byte_run(buf, index, lanes, proven).map(Some);
        }
        Ok(None)
    }

    /// The run as words joined by byte permutes (`byte_run`).
    fn word_run(&mut self, buf: Buf, index: &Expr, lanes: u8) -> Result<V<'ctx>, Fail> {
        let (i64t, i32t) = (self.ctx.i64_type(), self.ctx.i32_type());
        let at = self.expr(index)?.into_int_value();
        let first = self.b.build_and(at, i64t.const_int(!3u64, false), "w0")?;
        let offset = self.b.build_and(at, i64t.const_int(3, false), "off")?;
        let offset = self.b.build_int_truncate(offset, i32t, "off32")?;
        // Result byte k is byte k + offset of the pair (the first word's bytes are 0..3).
        let step = self
            .b
            .build_int_mul(offset, i32t.const_int(0x1111, false), "sel")?;
        let selector = self
            .b
            .build_int_add(step, i32t.const_int(0x3210, false), "selector")?;
        let words = lanes as u64 / 4;
        let mut loaded = Vec::with_capacity(words as usize + 1);
        for j in 0..=words {
            // The last word is the one holding the run's last byte: the run's own last
            // word again where the run starts on a word.
            let byte = if j < words {
                self.b
                    .build_int_add(first, i64t.const_int(4 * j, false), "wj")?
            } else {
                let last =
                    self.b
                        .build_int_add(at, i64t.const_int(lanes as u64 - 1, false), "lb")?;
                self.b.build_and(last, i64t.const_int(!3u64, false), "wl")?
            };
            let (p, _) = self.element_ptr(buf, byte)?;
            let w = self.b.build_load(i32t, p, "word")?;
            if let Some(inst) = w.as_instruction_value() {
                inst.set_alignment(4).map_err(Fail::msg)?;
            }
            loaded.push(w);
        }
        let mut out = i32t.vec_type(words as u32).get_poison();
        for j in 0..words as usize {
            let joined = self.intrinsic(
                "llvm.nvvm.prmt",
                &[],
                &[loaded[j], loaded[j + 1], selector.into()],
            )?;
            out =
                self.b
                    .build_insert_element(out, joined, i32t.const_int(j as u64, false), "run")?;
        }
        let bytes =
            self.b
                .build_bit_cast(out, self.ctx.i8_type().vec_type(lanes as u32), "bytes")?;
        self.widen_from_storage(bytes, DType::U8)
    }

    /// The run in pieces no wider than `proven`, the index's proven alignment in bytes (8
    /// bytes a piece below 16; `byte_run`).
    fn aligned_byte_run(
        &mut self,
        buf: Buf,
        index: &Expr,
        lanes: u8,
        proven: u8,
    ) -> Result<V<'ctx>, Fail> {
        let piece = if proven >= 16 { lanes } else { 8 };
        let i64t = self.ctx.i64_type();
        let at = self.expr(index)?.into_int_value();
        let mut pieces: Vec<VectorValue<'ctx>> = Vec::new();
        for c in 0..(lanes / piece) as u64 {
            let byte = self
                .b
                .build_int_add(at, i64t.const_int(c * piece as u64, false), "at")?;
            let (p, _) = self.element_ptr(buf, byte)?;
            let ty = self.ctx.i8_type().vec_type(piece as u32);
            let v = self.b.build_load(ty, p, "ld")?;
            if let Some(inst) = v.as_instruction_value() {
                inst.set_alignment(proven as u32).map_err(Fail::msg)?;
            }
            pieces.push(v.into_vector_value());
        }
        while pieces.len() > 1 {
            let mut joined = Vec::with_capacity(pieces.len() / 2);
            for pair in pieces.chunks(2) {
                let n = pair[0].get_type().get_size();
                joined.push(self.take(pair[0], pair[1], 0..2 * n)?);
            }
            pieces = joined;
        }
        self.widen_from_storage(pieces[0].into(), DType::U8)
    }
}
