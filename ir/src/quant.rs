//! Block-quantized weight formats (ggml's), which graphs carry as raw bytes (`u8` tensors
//! whose last axis holds whole blocks) and decode with the `dequant` op. The compiler
//! inlines `dequant` into its consumers, so a matmul reads the blocks directly and no f32
//! copy of the weights exists.
//!
//! Each format is described once, as data (`Layout`): a block is a sequence of equal
//! *runs* of consecutive elements that share one multiplier and offset and whose quant bits
//! sit in consecutive bytes. Every field of run `r` (which byte, which shift, which scale
//! byte) is an affine function of the bits of `r`, so the same description serves the
//! reference decoder here, the compiler's decode of one element at a computed index (GPU
//! kernels, gathers) and its vectorised decode of whole runs (CPU dot products).
//!
//! The reference decoder follows ggml's element order and f32 operations bit for bit (the
//! GGUF tests compare it with the `gguf` package's).

use half::f16;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuantFormat {
    /// 32 elements: f16 scale `d`, 32 signed bytes `q`; `x = q * d`.
    Q8_0,
    /// 32 elements: f16 scale `d`, 16 bytes of nibbles (element j is the low nibble of
    /// byte j, element j + 16 the high nibble); `x = (q - 8) * d`.
    Q4_0,
    /// As Q4_0 with an f16 offset `m` after `d` and no centring: `x = q * d + m`.
    Q4_1,
    /// As Q4_0 with a fifth bit per element: f16 `d`, a 32-bit mask `qh` (bit j belongs
    /// to element j), 16 bytes of nibbles; `x = (q - 16) * d`.
    Q5_0,
    /// As Q5_0 with an f16 offset `m` after `d` and no centring: `x = q * d + m`.
    Q5_1,
    /// 256 elements in 8 runs of 32: f16 `d`, `dmin`, 12 bytes of packed 6-bit scales and
    /// mins, 128 bytes of nibbles (each 32 bytes hold two runs: low then high nibbles);
    /// `x = d * sc[r] * q - dmin * m[r]`.
    Q4K,
    /// As Q4_K plus a fifth bit per element: 32 bytes `qh` whose bit `r` of byte `t` belongs
    /// to element `t` of run `r`.
    Q5K,
    /// 256 elements in 16 runs of 16: 128 bytes of low nibbles, 64 bytes of 2-bit high
    /// parts, 16 signed 8-bit scales, f16 `d` last; `x = d * sc[r] * (q - 32)`.
    Q6K,
    /// Q4_K with its nibbles regrouped (never in files; see `QuantFormat::relaid`): in each
    /// half of the block, byte `p` of 64 holds element `p` in its low nibble and element
    /// `64 + p` in its high one, so 64 consecutive elements sit in 64 consecutive bytes at
    /// one shift (one 512-bit load and mask for two runs).
    Q4KX,
    /// Q6_K with its 2-bit high parts regrouped (never in files; see `QuantFormat::relaid`):
    /// byte `p` of the 64 holds bits 4..6 of elements `p`, `64 + p`, `128 + p`, `192 + p`,
    /// so, as the low nibbles already are, 64 consecutive elements' bits sit in 64
    /// consecutive bytes at one shift.
    Q6KX,
    /// An activation format (never in files; see `quantize_q8_k`), after ggml's `q8_K`: 256
    /// elements, an f32 scale `d`, 256 signed bytes `q`, then the sums of each 16
    /// consecutive `q` as i16, their low bytes (16) before their high bytes (16);
    /// `x = q * d`. One scale per 256 elements lets a dot product with a K-quant's block
    /// sum all its runs in integers, and the sums give the K-quants' mins and centres
    /// without adding up the activations again.
    Q8K,
}

/// `base + sum of coef[b] * (bit b of the run index)`: where a run's bytes and bits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affine {
    pub base: i64,
    pub coef: [i64; 4],
}

impl Affine {
    pub const fn of(base: i64, coef: [i64; 4]) -> Affine {
        Affine { base, coef }
    }

    pub const fn constant(base: i64) -> Affine {
        Affine::of(base, [0; 4])
    }

    pub fn at(&self, run: usize) -> i64 {
        let bits = self.coef.iter().enumerate();
        self.base + bits.map(|(b, c)| c * ((run as i64 >> b) & 1)).sum::<i64>()
    }
}

/// Where element `t` of a run keeps its bits: `width` bits from bit `shift` of byte
/// `byte + t` (one byte per element), or, for a `packed` field (`width` 1), bit
/// `shift + t` of the little-endian bit string from byte `byte` (Q5_0's and Q5_1's fifth
/// bits: one 32-bit mask per block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitField {
    pub byte: Affine,
    pub shift: Affine,
    pub width: u32,
    pub packed: bool,
}

impl BitField {
    /// Byte index and shift of element `t` of run `run`.
    pub fn locate(&self, run: usize, t: usize) -> (usize, u32) {
        let (byte, shift) = (self.byte.at(run) as usize, self.shift.at(run) as usize);
        if self.packed {
            (byte + (shift + t) / 8, ((shift + t) % 8) as u32)
        } else {
            (byte + t, shift as u32)
        }
    }
}

/// A run's multiplier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// The f16 at byte `at`.
    Half { at: usize },
    /// `d` (f16 at 0) times the run's 6-bit scale packed in bytes 4..16 (Q4_K, Q5_K).
    Packed6,
    /// `d` (f16 at `d_at`) times the signed byte at `at` (Q6_K).
    SignedByte { at: Affine, d_at: usize },
    /// The f32 at byte `at` (Q8_K).
    Single { at: usize },
}

/// What a run adds after multiplying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    None,
    /// `+ m`, the f16 at byte `at` (Q4_1).
    Half {
        at: usize,
    },
    /// `- dmin * m[r]`: `dmin` the f16 at 2, `m[r]` the run's packed 6-bit min (Q4_K, Q5_K).
    Packed6,
}

/// How a format's block decodes: element `t` of run `r` (element `r * run_len + t`) is
/// `q * scale(r) + offset(r)`, where `q` is the `low` field, with the `high` field above
/// it, then read as a signed byte or minus `center`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub run_len: usize,
    pub low: BitField,
    pub high: Option<BitField>,
    pub signed: bool,
    pub center: i32,
    pub scale: Scale,
    pub offset: Offset,
}

impl Layout {
    /// Bits of one quant: the low field's and the high field's.
    pub fn quant_bits(&self) -> usize {
        self.low.width as usize + self.high.as_ref().map_or(0, |h| h.width as usize)
    }

    /// How many elements after each element of a run its nibble partner sits: the
    /// element whose quant shares its byte, in the byte's other half (Q4_0: 16, Q4_K: 32,
    /// Q4_K relaid: 64). `None` where every byte holds one element (Q8_0) or none of the
    /// low field's nibbles pair up this way. A GPU step that reads a run's bytes uses the
    /// other half too if it takes the partner's elements with them (`split` steps).
    pub fn nibble_partner(&self) -> Option<usize> {
        let f = &self.low;
        if f.packed || f.width != 4 {
            return None;
        }
        let bit = (0..4).find(|&b| f.byte.coef[b] == 0 && f.shift.coef[b] == 4)?;
        Some((1 << bit) * self.run_len)
    }

    /// The 6-bit scale and min of run `j` (0..8) from the 12 packed bytes `s`: the first
    /// four are the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); the last four take
    /// their low nibbles from bytes 8..12 and their top two bits from bytes 0..8's spare
    /// top bits. Written over `a = s[j % 4]`, `b = s[j % 4 + 4]`, `c = s[j % 4 + 8]`, as the
    /// compiler's decode at a computed `j` reads it.
    pub fn packed6(j: usize, s: &[u8]) -> (u8, u8) {
        let (a, b, c) = (s[j % 4], s[j % 4 + 4], s[j % 4 + 8]);
        if j < 4 {
            (a & 63, b & 63)
        } else {
            ((c & 0xF) | ((a >> 6) << 4), (c >> 4) | ((b >> 6) << 4))
        }
    }

    /// The run's `(scale, offset)` as f32, with ggml's rounding.
    pub fn run_scale(&self, b: &[u8], run: usize) -> (f32, f32) {
        let half = |at: usize| f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32();
        let packed = || Layout::packed6(run, &b[4..16]);
        let scale = match self.scale {
            Scale::Half { at } => half(at),
            Scale::Packed6 => half(0) * f32::from(packed().0),
            Scale::SignedByte { at, d_at } => half(d_at) * f32::from(b[at.at(run) as usize] as i8),
            Scale::Single { at } => f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]),
        };
        let offset = match self.offset {
            Offset::None => 0.0,
            Offset::Half { at } => half(at),
            Offset::Packed6 => -(half(2) * f32::from(packed().1)),
        };
        (scale, offset)
    }

    /// The integer quant value of element `t` of run `r`.
    pub fn quant(&self, b: &[u8], run: usize, t: usize) -> i32 {
        let field = |f: &BitField| {
            let (byte, shift) = f.locate(run, t);
            (b[byte] as u32 >> shift) & ((1 << f.width) - 1)
        };
        let mut q = field(&self.low);
        if let Some(h) = &self.high {
            q |= field(h) << self.low.width;
        }
        if self.signed {
            q as u8 as i8 as i32
        } else {
            q as i32 - self.center
        }
    }
}

impl QuantFormat {
    /// The weight formats (what GGUF files hold).
    pub const ALL: [QuantFormat; 8] = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q5_1,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
    ];

    /// kiln's regroupings of weight formats (`relaid`): the same values and block sizes,
    /// the quant bits moved so that wide vectors read more runs at once.
    pub const RELAID: [QuantFormat; 2] = [QuantFormat::Q4KX, QuantFormat::Q6KX];

    /// The formats `quantize` writes (activations for byte dot products).
    pub const ACTIVATIONS: [QuantFormat; 2] = [QuantFormat::Q8_0, QuantFormat::Q8K];

    pub fn block_elems(self) -> usize {
        match self {
            QuantFormat::Q8_0
            | QuantFormat::Q4_0
            | QuantFormat::Q4_1
            | QuantFormat::Q5_0
            | QuantFormat::Q5_1 => 32,
            QuantFormat::Q4K
            | QuantFormat::Q5K
            | QuantFormat::Q6K
            | QuantFormat::Q4KX
            | QuantFormat::Q6KX
            | QuantFormat::Q8K => 256,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4_0 => 18,
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q5_0 => 22,
            QuantFormat::Q5_1 => 24,
            QuantFormat::Q4K | QuantFormat::Q4KX => 144,
            QuantFormat::Q5K => 176,
            QuantFormat::Q6K | QuantFormat::Q6KX => 210,
            QuantFormat::Q8K => 292,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::Q5_0 => "q5_0",
            QuantFormat::Q5_1 => "q5_1",
            QuantFormat::Q4K => "q4_k",
            QuantFormat::Q5K => "q5_k",
            QuantFormat::Q6K => "q6_k",
            QuantFormat::Q4KX => "q4_kx",
            QuantFormat::Q6KX => "q6_kx",
            QuantFormat::Q8K => "q8_k",
        }
    }

    pub fn from_name(s: &str) -> Option<QuantFormat> {
        QuantFormat::ALL
            .into_iter()
            .chain(QuantFormat::RELAID)
            .chain([QuantFormat::Q8K])
            .find(|f| f.name() == s)
    }

    /// Byte offsets of `Q8K`'s i16 sums of 16 elements: low bytes, then high bytes.
    pub const Q8K_SUMS: (usize, usize) = (260, 276);

    /// Byte offsets of the block's f16 fields (scales and mins).
    pub fn half_fields(self) -> &'static [usize] {
        match self {
            QuantFormat::Q8_0 | QuantFormat::Q4_0 | QuantFormat::Q5_0 => &[0],
            QuantFormat::Q4_1
            | QuantFormat::Q5_1
            | QuantFormat::Q4K
            | QuantFormat::Q5K
            | QuantFormat::Q4KX => &[0, 2],
            QuantFormat::Q6K | QuantFormat::Q6KX => &[208],
            QuantFormat::Q8K => &[],
        }
    }

    pub fn layout(self) -> Layout {
        const fn field(byte: Affine, shift: Affine, width: u32) -> BitField {
            BitField {
                byte,
                shift,
                width,
                packed: false,
            }
        }
        let c = Affine::constant;
        // Formats whose block is two runs of 16: low nibbles, then high nibbles; Q5_0's and
        // Q5_1's fifth bits are bits 16r.. of the mask at `at`.
        let nibbles = |at: i64| field(c(at), Affine::of(0, [4, 0, 0, 0]), 4);
        let mask_bits = |at: i64| BitField {
            byte: Affine::of(at, [2, 0, 0, 0]),
            shift: c(0),
            width: 1,
            packed: true,
        };
        match self {
            QuantFormat::Q8_0 => Layout {
                run_len: 32,
                low: field(c(2), c(0), 8),
                high: None,
                signed: true,
                center: 0,
                scale: Scale::Half { at: 0 },
                offset: Offset::None,
            },
            QuantFormat::Q4_0 => Layout {
                run_len: 16,
                low: nibbles(2),
                high: None,
                signed: false,
                center: 8,
                scale: Scale::Half { at: 0 },
                offset: Offset::None,
            },
            QuantFormat::Q4_1 => Layout {
                run_len: 16,
                low: nibbles(4),
                high: None,
                signed: false,
                center: 0,
                scale: Scale::Half { at: 0 },
                offset: Offset::Half { at: 2 },
            },
            QuantFormat::Q5_0 => Layout {
                run_len: 16,
                low: nibbles(6),
                high: Some(mask_bits(2)),
                signed: false,
                center: 16,
                scale: Scale::Half { at: 0 },
                offset: Offset::None,
            },
            QuantFormat::Q5_1 => Layout {
                run_len: 16,
                low: nibbles(8),
                high: Some(mask_bits(4)),
                signed: false,
                center: 0,
                scale: Scale::Half { at: 0 },
                offset: Offset::Half { at: 2 },
            },
            // Run r = 2g + h: bytes 32g.. of qs, nibble h.
            QuantFormat::Q4K => Layout {
                run_len: 32,
                low: field(
                    Affine::of(16, [0, 32, 64, 0]),
                    Affine::of(0, [4, 0, 0, 0]),
                    4,
                ),
                high: None,
                signed: false,
                center: 0,
                scale: Scale::Packed6,
                offset: Offset::Packed6,
            },
            QuantFormat::Q5K => Layout {
                run_len: 32,
                low: field(
                    Affine::of(48, [0, 32, 64, 0]),
                    Affine::of(0, [4, 0, 0, 0]),
                    4,
                ),
                high: Some(field(c(16), Affine::of(0, [1, 2, 4, 0]), 1)),
                signed: false,
                center: 0,
                scale: Scale::Packed6,
                offset: Offset::Packed6,
            },
            // Run r = 8 half + 4 hi + 2 lo + sub: elements 128 half + 32 (2 hi + lo) + 16 sub;
            // ql bytes 64 half + 32 lo + 16 sub, nibble hi; qh bytes 128 + 32 half + 16 sub,
            // bits 2 (2 hi + lo); the scale is byte 192 + r.
            QuantFormat::Q6K => Layout {
                run_len: 16,
                low: field(
                    Affine::of(0, [16, 32, 0, 64]),
                    Affine::of(0, [0, 0, 4, 0]),
                    4,
                ),
                high: Some(field(
                    Affine::of(128, [16, 0, 0, 32]),
                    Affine::of(0, [0, 2, 4, 0]),
                    2,
                )),
                signed: false,
                center: 32,
                scale: Scale::SignedByte {
                    at: Affine::of(192, [1, 2, 4, 8]),
                    d_at: 208,
                },
                offset: Offset::None,
            },
            // Run r = 4 half + 2 hi + lo: bytes 16 + 64 half + 32 lo, nibble hi.
            QuantFormat::Q4KX => Layout {
                low: field(
                    Affine::of(16, [32, 0, 64, 0]),
                    Affine::of(0, [0, 4, 0, 0]),
                    4,
                ),
                ..QuantFormat::Q4K.layout()
            },
            // As Q6_K (r = 8 half + 4 hi + 2 lo + sub), the high parts at bytes 128 + 32 lo
            // + 16 sub, bits 2 (2 half + hi).
            QuantFormat::Q6KX => Layout {
                high: Some(field(
                    Affine::of(128, [16, 32, 0, 0]),
                    Affine::of(0, [0, 0, 2, 4]),
                    2,
                )),
                ..QuantFormat::Q6K.layout()
            },
            QuantFormat::Q8K => Layout {
                run_len: 256,
                low: field(c(4), c(0), 8),
                high: None,
                signed: true,
                center: 0,
                scale: Scale::Single { at: 0 },
                offset: Offset::None,
            },
        }
    }

    /// The regrouping kiln stores this weight format as (`RELAID`), if any.
    pub fn relaid(self) -> Option<QuantFormat> {
        match self {
            QuantFormat::Q4K => Some(QuantFormat::Q4KX),
            QuantFormat::Q6K => Some(QuantFormat::Q6KX),
            _ => None,
        }
    }

    /// Rewrites `bytes` (whole blocks of `self`) in place as blocks of `to`, a format with
    /// the same values whose quant bits sit elsewhere (`relaid`): every element's bits move
    /// from where `self`'s layout puts them to where `to`'s does; the other bytes (scales,
    /// mins) stay.
    pub fn relayout(self, to: QuantFormat, bytes: &mut [u8]) -> Result<(), String> {
        let (from_l, to_l) = (self.layout(), to.layout());
        let same = |a: Layout, b: Layout| {
            Layout {
                low: a.low,
                high: a.high,
                ..b
            } == a
        };
        if self.block_bytes() != to.block_bytes()
            || self.block_elems() != to.block_elems()
            || !same(from_l, to_l)
        {
            return Err(format!("{self} blocks cannot be rewritten as {to}"));
        }
        let bb = self.block_bytes();
        if !bytes.len().is_multiple_of(bb) {
            return Err(format!(
                "{self}: {} bytes are not whole blocks of {bb} bytes",
                bytes.len()
            ));
        }
        let fields = |l: Layout| [Some(l.low), l.high].into_iter().flatten();
        let runs = self.block_elems() / from_l.run_len;
        let mut out = vec![0u8; bb];
        for block in bytes.chunks_exact_mut(bb) {
            out.copy_from_slice(block);
            // Clear every byte holding quant bits; each bit is then written once.
            for f in fields(to_l) {
                for run in 0..runs {
                    for t in 0..from_l.run_len {
                        let (byte, shift) = f.locate(run, t);
                        out[byte] &= !(((1u32 << f.width) - 1) << shift) as u8;
                    }
                }
            }
            for (src, dst) in fields(from_l).zip(fields(to_l)) {
                for run in 0..runs {
                    for t in 0..from_l.run_len {
                        let (sb, ss) = src.locate(run, t);
                        let (db, ds) = dst.locate(run, t);
                        let v = (block[sb] as u32 >> ss) & ((1 << src.width) - 1);
                        out[db] |= (v << ds) as u8;
                    }
                }
            }
            block.copy_from_slice(&out);
        }
        Ok(())
    }

    /// Decodes one block (`block_bytes()` bytes) into `block_elems()` values.
    pub fn decode_block(self, b: &[u8], y: &mut [f32]) {
        let l = self.layout();
        for (run, y) in y[..self.block_elems()]
            .chunks_exact_mut(l.run_len)
            .enumerate()
        {
            let (scale, offset) = l.run_scale(b, run);
            for (t, y) in y.iter_mut().enumerate() {
                let q = l.quant(b, run, t) as f32;
                // ggml adds Q4_1's offset and subtracts the K-quants' min; `x + (-m)` is
                // `x - m` exactly, and no offset leaves the product untouched.
                *y = match l.offset {
                    Offset::None => q * scale,
                    _ => q * scale + offset,
                };
            }
        }
    }

    /// Elements held by `bytes` bytes of whole blocks, or why they are not whole blocks.
    pub fn elems_in(self, bytes: i64) -> Result<i64, String> {
        let bb = self.block_bytes() as i64;
        if bytes % bb != 0 {
            return Err(format!(
                "{self}: {bytes} bytes are not whole blocks of {bb} bytes"
            ));
        }
        Ok(bytes / bb * self.block_elems() as i64)
    }
}

/// The f16 nearest `d` toward zero, as bits, for finite `d >= 0`; values above the largest
/// f16 give the largest. A few integer operations in a kernel (no F16C needed).
pub fn f16_bits_toward_zero(d: f32) -> u16 {
    let bits = d.to_bits();
    let (e, m) = (bits >> 23, bits & 0x7f_ffff);
    if e >= 143 {
        0x7bff
    } else if e >= 113 {
        (((e - 112) << 10) | (m >> 13)) as u16
    } else {
        ((m | 0x80_0000) >> (126 - e).min(31)) as u16
    }
}

/// The f16 at or above `d` nearest it, as bits (`d` finite, `>= 0`; at most the largest f16).
pub fn f16_bits_up(d: f32) -> u16 {
    let h = f16_bits_toward_zero(d);
    if f16::from_bits(h).to_f32() < d && h < 0x7bff {
        h + 1
    } else {
        h
    }
}

/// Encodes 32 activations as one `q8_0` block, the way kiln's quantize kernels do, step for
/// step in f32 (so compiled and interpreted graphs agree bit for bit): the scale is
/// `max |x| / 127` stored as the f16 at or above it, so no value exceeds 127 steps even when
/// the scale is an f16 subnormal; each `x` becomes `round(clamp(x / scale, -127, 127))`,
/// rounding halves away from zero, as `trunc(v +- 0.5)`.
pub fn quantize_q8_0(x: &[f32]) -> [u8; 34] {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let h = f16_bits_up(amax / 127.0);
    let d = f16::from_bits(h).to_f32();
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut out = [0u8; 34];
    out[..2].copy_from_slice(&h.to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = round_q8(v, id);
    }
    out
}

/// `v / scale` (`id` its inverse) as a signed byte: clamped to +-127, halves rounded away
/// from zero as `trunc(v +- 0.5)`, in f32 as the quantize kernels compute it.
fn round_q8(v: f32, id: f32) -> u8 {
    let v = (v * id).clamp(-127.0, 127.0);
    (v + if v < 0.0 { -0.5 } else { 0.5 }).trunc() as i32 as i8 as u8
}

/// Encodes 256 activations as one `q8_k` block (see `QuantFormat::Q8K`), step for step as
/// kiln's quantize kernels do: the scale is `max |x| / 127` in f32; each `x` becomes
/// `round(clamp(x / scale, -127, 127))`, halves away from zero, as `trunc(v +- 0.5)`; then
/// the sums of each 16.
pub fn quantize_q8_k(x: &[f32]) -> [u8; 292] {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut out = [0u8; 292];
    out[..4].copy_from_slice(&d.to_le_bytes());
    for (o, &v) in out[4..260].iter_mut().zip(x) {
        *o = round_q8(v, id);
    }
    let (lo, hi) = QuantFormat::Q8K_SUMS;
    for g in 0..16 {
        let sum: i32 = out[4 + 16 * g..4 + 16 * (g + 1)]
            .iter()
            .map(|&q| q as i8 as i32)
            .sum();
        let [l, h] = (sum as i16).to_le_bytes();
        (out[lo + g], out[hi + g]) = (l, h);
    }
    out
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Toward zero means: the f16 is at most `d`, and the next f16 up is above it.
    #[test]
    fn f16_bits_toward_zero_is_the_largest_f16_not_above() {
        let mut d = 1e-9f32;
        while d < 1e6 {
            let h = f16_bits_toward_zero(d);
            let below = f16::from_bits(h).to_f32();
            assert!(below <= d, "{d}: {below}");
            if h < 0x7bff {
                assert!(f16::from_bits(h + 1).to_f32() > d, "{d}: {h:#x}");
            }
            d *= 1.013;
        }
        assert_eq!(f16_bits_toward_zero(0.0), 0);
        assert_eq!(f16_bits_up(0.0), 0);
        assert_eq!(f16_bits_up(1.0), 0x3c00);
        assert_eq!(f16_bits_up(1.0001), 0x3c01);
        assert_eq!(f16_bits_toward_zero(1e9), 0x7bff);
    }

    /// Decoding an encoded block gives each value back within half a step.
    #[test]
    fn q8_0_activations_decode_within_half_a_step() {
        for scale in [1e-9f32, 1e-6, 0.01, 1.0, 300.0] {
            let x: Vec<f32> = (0..32)
                .map(|i| ((i * 37 % 19) as f32 - 9.3) * scale)
                .collect();
            let block = quantize_q8_0(&x);
            let mut y = [0f32; 32];
            QuantFormat::Q8_0.decode_block(&block, &mut y);
            let d = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
            assert!(d > 0.0);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= d * 0.5001, "{scale}: {a} vs {b} (d {d})");
            }
        }
        assert_eq!(quantize_q8_0(&[0.0; 32])[2..], [0u8; 32]);
    }

    /// A `q8_k` block decodes within half a step of each value, and its sums are the sums
    /// of its quants.
    #[test]
    fn q8_k_activations_decode_within_half_a_step_and_carry_their_sums() {
        for scale in [1e-9f32, 0.01, 1.0, 300.0] {
            let x: Vec<f32> = (0..256)
                .map(|i| ((i * 37 % 19) as f32 - 9.3) * scale)
                .collect();
            let block = quantize_q8_k(&x);
            let mut y = [0f32; 256];
            QuantFormat::Q8K.decode_block(&block, &mut y);
            let d = f32::from_le_bytes(block[..4].try_into().unwrap());
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= d * 0.5001, "{scale}: {a} vs {b} (d {d})");
            }
            let (lo, hi) = QuantFormat::Q8K_SUMS;
            for g in 0..16 {
                let q: i32 = block[4 + 16 * g..20 + 16 * g]
                    .iter()
                    .map(|&q| q as i8 as i32)
                    .sum();
                assert_eq!(i16::from_le_bytes([block[lo + g], block[hi + g]]) as i32, q);
            }
        }
        assert_eq!(quantize_q8_k(&[0.0; 256]), [0u8; 292]);
    }

    /// A relaid block decodes to the same values as the block it was written from, and
    /// 64 consecutive elements' bits sit in 64 consecutive bytes at one shift.
    /// Each element of a run with a nibble partner shares its byte with the element that
    /// many places on, in the other nibble; formats of whole bytes have none.
    #[test]
    fn nibble_partners_share_a_byte() {
        for format in QuantFormat::ALL.into_iter().chain(QuantFormat::RELAID) {
            let l = format.layout();
            let Some(d) = l.nibble_partner() else {
                assert!(
                    matches!(format, QuantFormat::Q8_0 | QuantFormat::Q8K),
                    "{format:?}"
                );
                continue;
            };
            let want = match format {
                QuantFormat::Q4KX | QuantFormat::Q6K | QuantFormat::Q6KX => 64,
                QuantFormat::Q4K | QuantFormat::Q5K => 32,
                _ => 16,
            };
            assert_eq!(d, want, "{format:?}");
            let runs = format.block_elems() / l.run_len;
            let mut paired = 0;
            for e in 0..format.block_elems() {
                let p = e + d;
                if (e / d) % 2 == 1 {
                    continue;
                }
                assert!(
                    p < format.block_elems(),
                    "{format:?}: {e} + {d} leaves the block"
                );
                let (r, t) = (e / l.run_len, e % l.run_len);
                let (pr, pt) = (p / l.run_len, p % l.run_len);
                assert!(r < runs && pr < runs);
                let (a, b) = (l.low.locate(r, t), l.low.locate(pr, pt));
                assert_eq!(
                    a.0, b.0,
                    "{format:?}: elements {e} and {p} in different bytes"
                );
                assert_eq!(
                    a.1 ^ b.1,
                    4,
                    "{format:?}: elements {e} and {p} in one nibble"
                );
                paired += 1;
            }
            assert_eq!(2 * paired, format.block_elems(), "{format:?}");
        }
    }

    #[test]
    fn relaid_blocks_decode_as_the_originals() {
        for from in [QuantFormat::Q4K, QuantFormat::Q6K] {
            let to = from.relaid().unwrap();
            let bb = from.block_bytes();
            let mut bytes: Vec<u8> = (0..3 * bb).map(|i| (i * 97 + i / 7) as u8).collect();
            for b in bytes.chunks_exact_mut(bb) {
                for &at in from.half_fields() {
                    b[at..at + 2].copy_from_slice(&f16::from_f32(0.01).to_bits().to_le_bytes());
                }
            }
            let mut relaid = bytes.clone();
            from.relayout(to, &mut relaid).unwrap();
            assert_ne!(relaid, bytes, "{from}: nothing moved");
            let (mut a, mut b) = (vec![0f32; 256], vec![0f32; 256]);
            for (x, y) in bytes.chunks_exact(bb).zip(relaid.chunks_exact(bb)) {
                from.decode_block(x, &mut a);
                to.decode_block(y, &mut b);
                assert_eq!(a, b, "{from} -> {to}");
            }
            let l = to.layout();
            for f in [Some(l.low), l.high].into_iter().flatten() {
                for e0 in (0..256).step_by(64) {
                    let first = f.locate(e0 / l.run_len, 0);
                    for k in 0..64 {
                        let e = e0 + k;
                        let at = f.locate(e / l.run_len, e % l.run_len);
                        assert_eq!(at, (first.0 + k, first.1), "{to}: element {e}");
                    }
                }
            }
        }
        let mut odd = vec![0u8; 100];
        assert!(QuantFormat::Q4K
            .relayout(QuantFormat::Q4KX, &mut odd)
            .is_err());
        assert!(QuantFormat::Q4K
            .relayout(QuantFormat::Q6KX, &mut [0u8; 144])
            .is_err());
    }
}
