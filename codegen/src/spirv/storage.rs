//! Buffer elements of every storage dtype, read and written through 32-bit words.
//!
//! Every binding is an array of 32-bit words, whatever the dtype of the kernel argument:
//! that needs no 8- or 16-bit storage features, so one module runs on every Vulkan device,
//! and quantized weights (u8 block bytes) are read as the raw words they are. Narrow
//! elements are shifted out of their word; narrow stores merge into their word with two
//! atomic bit operations, since neighbouring elements of one word may belong to other
//! threads. Half-precision conversions are integer code with the same rounding as the CPU
//! backends (nearest even, NaN stays NaN), never subject to a device's denormal flushing.

use super::builder::{glsl, V};
use super::emitter::Emitter;
use super::groups::GROUP_BYTES;
use super::Fail;
use kiln_compiler::kernel::{half, BOp, Buf, Cmp, Elem, Expr, VType};
use kiln_ir::DType;
use rspirv::spirv::{Op, Scope, StorageClass, Word};

impl Emitter<'_, '_> {
    /// One element of `buf` at element index `i` (an i32 or i64, `Emitter::index`),
    /// widened to its value type.
    pub fn load(&mut self, buf: Buf, i: V) -> Result<V, Fail> {
        let a = match buf {
            Buf::Local(l) => {
                let (ptr, t) = self.local_ptr(l, i)?;
                return self.load_ptr(ptr, t);
            }
            Buf::Arg(a) => a,
        };
        let dtype = self.k.buf_dtype(buf);
        match dtype {
            DType::F32 | DType::I32 => {
                let w = self.load_word(a, i)?;
                let elem = Elem::of_storage(dtype);
                self.s.op_v(Op::Bitcast, VType { elem, lanes: 1 }, &[w])
            }
            DType::I64 => {
                let (lo_at, hi_at) = self.word_pair(i)?;
                let lo = self.load_word(a, lo_at)?;
                let hi = self.load_word(a, hi_at)?;
                let lo = self.s.op_v(Op::SConvert, VType::I64, &[lo])?;
                let mask = self.s.i64(0xffff_ffff);
                let lo = self.binary(BOp::And, lo, mask)?;
                let hi = self.s.op_v(Op::SConvert, VType::I64, &[hi])?;
                let shift = self.s.i64(32);
                let hi = self.binary(BOp::Shl, hi, shift)?;
                self.binary(BOp::Or, lo, hi)
            }
            DType::F16 | DType::BF16 | DType::U8 => {
                let (word, shift) = self.sub_word(i, dtype)?;
                let w = self.load_word(a, word)?;
                let w = self.binary(BOp::Shr, w, shift)?;
                let bits = self.ib(BOp::And, w, narrow_mask(dtype))?;
                match dtype {
                    DType::F16 => self.f16_to_f32(bits),
                    DType::BF16 => {
                        let w = self.ib(BOp::Shl, bits, 16)?;
                        self.s.op_v(Op::Bitcast, VType::F32, &[w])
                    }
                    _ => Ok(bits),
                }
            }
        }
    }

    /// Stores scalar `v` as element `i` of `buf`, narrowed to the buffer's dtype.
    pub fn store(&mut self, buf: Buf, i: V, v: V) -> Result<(), Fail> {
        let a = match buf {
            Buf::Local(l) => {
                let (ptr, _) = self.local_ptr(l, i)?;
                return self.store_ptr(ptr, v.id);
            }
            Buf::Arg(a) => a,
        };
        let dtype = self.k.buf_dtype(buf);
        match dtype {
            DType::F32 | DType::I32 => {
                let bits = self.s.op_v(Op::Bitcast, VType::I32, &[v])?;
                let ptr = self.word_ptr(a, i)?;
                self.store_ptr(ptr, bits.id)
            }
            DType::I64 => {
                let lo = self.s.op_v(Op::SConvert, VType::I32, &[v])?;
                let shift = self.s.i64(32);
                let hi = self.binary(BOp::Shr, v, shift)?;
                let hi = self.s.op_v(Op::SConvert, VType::I32, &[hi])?;
                let (lo_at, hi_at) = self.word_pair(i)?;
                let p = self.word_ptr(a, lo_at)?;
                self.store_ptr(p, lo.id)?;
                let p = self.word_ptr(a, hi_at)?;
                self.store_ptr(p, hi.id)
            }
            DType::F16 | DType::BF16 | DType::U8 => {
                let bits = match dtype {
                    DType::F16 => self.f32_to_f16(v)?,
                    DType::BF16 => self.f32_to_bf16(v)?,
                    _ => v,
                };
                let bits = self.ib(BOp::And, bits, narrow_mask(dtype))?;
                let (word, shift) = self.sub_word(i, dtype)?;
                let bits = self.binary(BOp::Shl, bits, shift)?;
                let mask = self.s.i32(narrow_mask(dtype) as i32);
                let mask = self.binary(BOp::Shl, mask, shift)?;
                let keep = self.ib(BOp::Xor, mask, u32::MAX)?;
                let ptr = self.word_ptr(a, word)?;
                self.atomic(Op::AtomicAnd, ptr, keep)?;
                self.atomic(Op::AtomicOr, ptr, bits)
            }
        }
    }

    /// The two words of i64 element `i` (an index of either width, as every one here).
    fn word_pair(&mut self, i: V) -> Result<(V, V), Fail> {
        let two = self.s.lit(i.t, 2);
        let lo_at = self.s.op_v(Op::IMul, i.t, &[i, two])?;
        let one = self.s.lit(i.t, 1);
        let hi_at = self.s.op_v(Op::IAdd, i.t, &[lo_at, one])?;
        Ok((lo_at, hi_at))
    }

    /// The word holding element `i` of a narrow dtype, and the element's bit offset in it.
    fn sub_word(&mut self, i: V, dtype: DType) -> Result<(V, V), Fail> {
        let per_word = (4 / dtype.size_bytes()) as u64;
        let log = per_word.trailing_zeros() as u64;
        let log_v = self.s.lit(i.t, log);
        let word = self.binary(BOp::Shr, i, log_v)?;
        let sub = self.s.lit(i.t, per_word - 1);
        let sub = self.binary(BOp::And, i, sub)?;
        let sub = self.narrow_i32(sub)?;
        let bits = self.ib(BOp::Mul, sub, 8 * dtype.size_bytes() as u32)?;
        Ok((word, bits))
    }

    fn word_ptr(&mut self, arg: u32, word: V) -> Result<Word, Fail> {
        let var = *self
            .bindings
            .get(arg as usize)
            .ok_or_else(|| Fail(format!("argument {arg} has no binding")))?;
        let i32t = self.s.ty(VType::I32);
        let ptr_t = self.s.ptr(StorageClass::StorageBuffer, i32t);
        let zero = self.s.i32(0);
        let w = self.narrow_i32(word)?;
        let words = self.views[arg as usize] as u32;
        if words == 1 {
            return self.s.access_chain(ptr_t, var, &[zero.id, w.id]);
        }
        // A word of a vector view: its element, then the component within it.
        let element = self.ib(BOp::Shr, w, words.trailing_zeros())?;
        let component = self.ib(BOp::And, w, words - 1)?;
        let ids = [zero.id, element.id, component.id];
        self.s.access_chain(ptr_t, var, &ids)
    }

    /// A run of `lanes` elements of `buf` from element `i` (the value of `index`) as one
    /// load of a vector view's element, decoded; `None` when the binding has no view of
    /// the run's width or `index` is not known to be a multiple of `lanes`.
    pub fn load_run(&mut self, buf: Buf, index: &Expr, i: V, lanes: u8) -> Result<Option<V>, Fail> {
        let Buf::Arg(a) = buf else { return Ok(None) };
        let dtype = self.k.buf_dtype(buf);
        let words = self.views[a as usize];
        let fits = words > 1 && super::kernel::run_words(dtype, lanes) == words;
        if !fits || !self.align.multiple_of(index, lanes as u64) {
            return Ok(None);
        }
        let raw = self.vector_at(a, i, lanes as u64, words)?;
        let out = VType::F32.with_lanes(lanes);
        let v = match dtype {
            DType::F32 => self.s.op_v(Op::Bitcast, out, &[raw])?,
            DType::I32 => raw,
            // Two halves per word, in the converter of the device (an f16 subnormal is an
            // f32 normal, so no flushing of f32 subnormals touches the result).
            DType::F16 | DType::BF16 => {
                let mut pairs = Vec::new();
                for w in 0..words {
                    let w = self.extract(raw, w)?;
                    pairs.push(if dtype == DType::F16 {
                        // The instruction takes an unsigned word (naga insists).
                        let u32t = self.s.u32_ty();
                        let id = self.s.op(Op::Bitcast, u32t, &[w.id])?;
                        let u = V { id, ..w };
                        self.s
                            .glsl(glsl::UNPACK_HALF_2X16, VType::F32.with_lanes(2), &[u])?
                    } else {
                        let lo = self.ib(BOp::Shl, w, 16)?;
                        let hi = self.ib(BOp::And, w, 0xffff_0000)?;
                        let both = self.s.op_v(
                            Op::CompositeConstruct,
                            VType::I32.with_lanes(2),
                            &[lo, hi],
                        )?;
                        self.s
                            .op_v(Op::Bitcast, VType::F32.with_lanes(2), &[both])?
                    });
                }
                let mut lanes_v = Vec::new();
                for p in pairs {
                    lanes_v.push(self.extract(p, 0)?);
                    lanes_v.push(self.extract(p, 1)?);
                }
                self.s.op_v(Op::CompositeConstruct, out, &lanes_v)?
            }
            _ => return Ok(None),
        };
        Ok(Some(v))
    }

    /// A run of `lanes` (2 or more) bytes of a byte buffer from byte `i` (the value of
    /// `index`), as an i32 vector, four bytes at a time from the words covering them
    /// (`bytes_le`). Loading each byte on its own took a word load and its index
    /// arithmetic per byte. `None` for other buffers.
    pub fn load_bytes(
        &mut self,
        buf: Buf,
        index: &Expr,
        i: V,
        lanes: u8,
    ) -> Result<Option<V>, Fail> {
        let Buf::Arg(a) = buf else { return Ok(None) };
        if lanes < 2 || self.k.buf_dtype(buf) != DType::U8 {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(lanes as usize);
        for first in (0..lanes).step_by(4) {
            let count = (lanes - first).min(4);
            let four = self.bytes_le(a, index, i, first, count)?;
            for j in 0..count as u32 {
                let b = match j {
                    0 => four,
                    _ => self.ib(BOp::Shr, four, 8 * j)?,
                };
                bytes.push(if j == 3 {
                    b
                } else {
                    self.ib(BOp::And, b, 255)?
                });
            }
        }
        Ok(Some(self.compose(&bytes)?))
    }

    /// `Expr::word_le` over a byte buffer argument: the `count` (2 to 4) bytes from byte
    /// `index` as one little-endian integer, from the word or two words covering them
    /// rather than a word load, shift and mask per byte. `None` for any other expression.
    pub fn load_word_le(&mut self, e: &Expr) -> Result<Option<V>, Fail> {
        let Some((buf @ Buf::Arg(a), index, count)) = e.word_le() else {
            return Ok(None);
        };
        if count > 4 || self.k.buf_dtype(buf) != DType::U8 {
            return Ok(None);
        }
        let i = self.index(buf, index)?;
        let w = self.bytes_le(a, index, i, 0, count)?;
        Ok(Some(match count {
            4 => w,
            _ => self.ib(BOp::And, w, (1 << (8 * count as u32)) - 1)?,
        }))
    }

    /// An i32 whose low `count` (1 to 4) bytes are bytes `i + first ..` of byte buffer
    /// argument `arg` (`i` the value of `index`; any higher bytes are unspecified unless
    /// `count` is 4). Bytes that `kernel::align` proves within one word take that word's
    /// load (and a shift, unless the run starts the word); others are shifted out of the
    /// two words they straddle, `(w0 >> s) | (w1 << (32 - s))`. Only words holding the
    /// bytes are read (`w1` is that of the last byte), so a run never reads past its buffer.
    fn bytes_le(&mut self, arg: u32, index: &Expr, i: V, first: u8, count: u8) -> Result<V, Fail> {
        let aligned = [4u8, 2, 1]
            .into_iter()
            .find(|&n| self.align.multiple_of(index, n as u64))
            .unwrap_or(1);
        if first.is_multiple_of(aligned) && count <= aligned {
            if let Some(w) = self.wide_word(arg, index, first, count)? {
                return Ok(w);
            }
        }
        let at = match first {
            0 => i,
            _ => {
                let off = self.s.lit(i.t, first as u64);
                self.binary(BOp::Add, i, off)?
            }
        };
        let (word, shift) = self.sub_word(at, DType::U8)?;
        let w0 = self.load_word(arg, word)?;
        if first.is_multiple_of(aligned) && count <= aligned {
            return match aligned {
                4 => Ok(w0),
                _ => self.binary(BOp::Shr, w0, shift),
            };
        }
        // Two or more bytes here (one byte always lies in one word).
        let off = self.s.lit(at.t, count as u64 - 1);
        let last = self.binary(BOp::Add, at, off)?;
        let two = self.s.lit(last.t, 2);
        let last_word = self.binary(BOp::Shr, last, two)?;
        let w1 = self.load_word(arg, last_word)?;
        // `w1 << (32 - s)` as two shifts, which give 0 for s = 0 (one shift by 32 is
        // undefined in SPIR-V).
        let thirty_one = self.s.i32(31);
        let back = self.binary(BOp::Sub, thirty_one, shift)?;
        let lo = self.binary(BOp::Shr, w0, shift)?;
        let hi = self.ib(BOp::Shl, w1, 1)?;
        let hi = self.binary(BOp::Shl, hi, back)?;
        self.binary(BOp::Or, lo, hi)
    }

    /// The word holding bytes `index + first ..` (`count` of them, within one word) of byte
    /// buffer `arg`, shifted so the first is its lowest, out of the 16-byte load of their
    /// group (`groups`); `None` where the bytes take their own load.
    fn wide_word(
        &mut self,
        arg: u32,
        index: &Expr,
        first: u8,
        count: u8,
    ) -> Result<Option<V>, Fail> {
        let Some((start, at)) = self.groups.find(&self.align, arg, DType::U8, index) else {
            return Ok(None);
        };
        let byte = at + first as u64;
        if byte % 4 + count as u64 > 4 || byte >= GROUP_BYTES {
            return Ok(None);
        }
        let word = self.group_word(arg, &start, GROUP_BYTES, byte / 4)?;
        Ok(Some(match byte % 4 {
            0 => word,
            b => self.ib(BOp::Shr, word, 8 * b as u32)?,
        }))
    }

    /// The element at `index` of a byte, f32 or i32 argument out of the 16-byte load of its
    /// group (`groups`), as its value type; `None` where it takes its own load.
    pub fn wide_element(&mut self, buf: Buf, index: &Expr) -> Result<Option<V>, Fail> {
        let Buf::Arg(arg) = buf else { return Ok(None) };
        let dtype = self.k.buf_dtype(buf);
        if dtype == DType::U8 {
            return match self.wide_word(arg, index, 0, 1)? {
                Some(w) => Ok(Some(self.ib(BOp::And, w, 255)?)),
                None => Ok(None),
            };
        }
        let Some((start, byte)) = self.groups.find(&self.align, arg, dtype, index) else {
            return Ok(None);
        };
        let per_group = GROUP_BYTES / dtype.size_bytes() as u64;
        let word = self.group_word(arg, &start, per_group, byte / 4)?;
        let elem = Elem::of_storage(dtype);
        Ok(Some(self.s.op_v(
            Op::Bitcast,
            VType { elem, lanes: 1 },
            &[word],
        )?))
    }

    /// Word `word` of the 16-byte group of binding `arg` that starts at element `start`
    /// (`per_group` elements a group).
    fn group_word(&mut self, arg: u32, start: &Expr, per_group: u64, word: u64) -> Result<V, Fail> {
        let at = self.index(Buf::Arg(arg), start)?;
        let group = self.vector_at(arg, at, per_group, 4)?;
        self.extract(group, word as u8)
    }

    /// The `words`-word vector element of argument `arg`'s binding (a view of that width)
    /// holding elements `i ..` of the argument, `per_vector` (a power of two) of them a
    /// vector, `i` a multiple of it.
    fn vector_at(&mut self, arg: u32, i: V, per_vector: u64, words: u8) -> Result<V, Fail> {
        let log = self.s.lit(i.t, per_vector.trailing_zeros() as u64);
        let element = self.binary(BOp::Shr, i, log)?;
        let element = self.narrow_i32(element)?;
        let t = VType::I32.with_lanes(words);
        let ty = self.s.ty(t);
        let ptr_t = self.s.ptr(StorageClass::StorageBuffer, ty);
        let zero = self.s.i32(0);
        let var = self.bindings[arg as usize];
        let ptr = self.s.access_chain(ptr_t, var, &[zero.id, element.id])?;
        self.load_arg(arg, ptr, t)
    }

    fn load_word(&mut self, arg: u32, word: V) -> Result<V, Fail> {
        let ptr = self.word_ptr(arg, word)?;
        self.load_arg(arg, ptr, VType::I32)
    }

    /// A load through `ptr` into argument `arg`'s binding: numbered by value where the
    /// kernel never writes the argument (`Spv::load_invariant`), so that rows of one block
    /// reading the same activations, and the words of one 16-byte group, share a load and
    /// whatever is computed from it. (Memory planning gives the buffers of one launch
    /// disjoint memory.)
    fn load_arg(&mut self, arg: u32, ptr: Word, t: VType) -> Result<V, Fail> {
        if self.k.args[arg as usize].writes {
            return self.load_ptr(ptr, t);
        }
        let ty = self.s.ty(t);
        Ok(V {
            id: self.s.load_invariant(ty, ptr)?,
            t,
        })
    }

    fn local_ptr(&mut self, l: u32, i: V) -> Result<(Word, VType), Fail> {
        let buf = &self.k.locals[l as usize];
        let t = match buf.dtype {
            DType::F32 => VType::F32,
            DType::I32 => VType::I32,
            other => {
                return Err(Fail(format!(
                    "kernel-local arrays of {other:?}: the SPIR-V backend keeps f32 and i32 only"
                )))
            }
        };
        let (var, class) = self.locals[l as usize];
        let ty = self.s.ty(t);
        let ptr_t = self.s.ptr(class, ty);
        let at = self.narrow_i32(i)?;
        Ok((self.s.access_chain(ptr_t, var, &[at.id])?, t))
    }

    /// An atomic read-modify-write of the word at `ptr` (device scope, relaxed: the two
    /// operations of a narrow store touch disjoint bits, so their order does not matter).
    fn atomic(&mut self, op: Op, ptr: Word, value: V) -> Result<(), Fail> {
        let i32t = self.s.ty(VType::I32);
        let scope = self.s.u32_const(Scope::Device as u32);
        let relaxed = self.s.u32_const(0);
        self.s.op(op, i32t, &[ptr, scope, relaxed, value.id])?;
        Ok(())
    }

    /// Half bits (in the low 16 bits of an i32) -> f32, by the compiler's decoding (exact,
    /// never through f32 subnormals, which drivers may flush).
    fn f16_to_f32(&mut self, h: V) -> Result<V, Fail> {
        let mut next = self.next_var;
        let mut fresh = || {
            next += 1;
            next - 1
        };
        let bits = fresh();
        let e = half::f16_bits_to_f32(Expr::Var(bits), &mut fresh);
        self.next_var = next;
        self.lets.insert(bits, h);
        self.expr(&e)
    }

    /// f32 -> half bits in an i32, rounding to nearest even.
    fn f32_to_f16(&mut self, v: V) -> Result<V, Fail> {
        let bits = self.s.op_v(Op::Bitcast, VType::I32, &[v])?;
        let sign = self.ib(BOp::And, bits, 0x8000_0000)?;
        let a = self.binary(BOp::Xor, bits, sign)?;
        let k = self.s.i32(0x7f80_0000);
        let nan = self.compare(Cmp::Gt, a, k)?;
        let (qnan, inf) = (self.s.i32(0x7e00), self.s.i32(0x7c00));
        let big = self.select(nan, qnan, inf)?;
        // Results below the smallest normal half: let the FPU round by adding 0.5.
        let af = self.s.op_v(Op::Bitcast, VType::F32, &[a])?;
        let half = self.s.f32(0.5);
        let sum = self.binary(BOp::Add, af, half)?;
        let sum = self.s.op_v(Op::Bitcast, VType::I32, &[sum])?;
        let den = self.ib(BOp::Sub, sum, 0x3f00_0000)?;
        // Normal results: rebias, round to nearest even, shift into place.
        let odd = self.ib(BOp::Shr, a, 13)?;
        let odd = self.ib(BOp::And, odd, 1)?;
        let t = self.ib(BOp::Add, a, 0xc800_0fff)?;
        let t = self.binary(BOp::Add, t, odd)?;
        let norm = self.ib(BOp::Shr, t, 13)?;
        let k = self.s.i32(0x4780_0000);
        let is_big = self.compare(Cmp::Ge, a, k)?;
        let k = self.s.i32(0x3880_0000);
        let is_den = self.compare(Cmp::Lt, a, k)?;
        let small = self.select(is_den, den, norm)?;
        let o = self.select(is_big, big, small)?;
        let s16 = self.ib(BOp::Shr, sign, 16)?;
        self.binary(BOp::Or, o, s16)
    }

    /// f32 -> bf16 bits in an i32, rounding to nearest even; NaN stays a (quiet) NaN.
    fn f32_to_bf16(&mut self, v: V) -> Result<V, Fail> {
        let bits = self.s.op_v(Op::Bitcast, VType::I32, &[v])?;
        let high = self.ib(BOp::Shr, bits, 16)?;
        let lsb = self.ib(BOp::And, high, 1)?;
        let biased = self.ib(BOp::Add, bits, 0x7fff)?;
        let rounded = self.binary(BOp::Add, biased, lsb)?;
        let rounded = self.ib(BOp::Shr, rounded, 16)?;
        let quiet = self.ib(BOp::Or, high, 0x40)?;
        let is_nan = self.compare(Cmp::Ne, v, v)?;
        self.select(is_nan, quiet, rounded)
    }
}

fn narrow_mask(d: DType) -> u32 {
    match d.size_bytes() {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}
