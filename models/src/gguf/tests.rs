//! GGUF parsing and dequantization tests on files written here byte by byte.

use super::*;
use std::io::Write;

/// A minimal GGUF writer for tests: metadata entries and tensors are raw encodings.
struct FileBuilder {
    version: u32,
    kv: Vec<Vec<u8>>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    alignment: usize,
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

impl FileBuilder {
    fn new(version: u32) -> Self {
        FileBuilder {
            version,
            kv: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        let mut e = gguf_string(key);
        e.extend_from_slice(&ty.to_le_bytes());
        e.extend_from_slice(value);
        self.kv.push(e);
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.into(), dims.to_vec(), ty.id(), data));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for e in &self.kv {
            out.extend_from_slice(e);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            out.extend_from_slice(&gguf_string(name));
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len()).div_ceil(self.alignment) * self.alignment;
        }
        out.resize(out.len().div_ceil(self.alignment) * self.alignment, 0);
        let base = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(base + off, 0);
            out.extend_from_slice(data);
        }
        out
    }
}

fn open_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    let path = f.into_temp_path();
    let r = GgufFile::open(&path);
    drop(path);
    // The in-memory reader (the fuzz target's) answers the same.
    let owned = GgufFile::from_bytes(Path::new("mem.gguf"), bytes.to_vec());
    assert_eq!(r.is_ok(), owned.is_ok());
    r
}

fn err_of(bytes: &[u8]) -> String {
    match open_bytes(bytes) {
        Ok(_) => panic!("the file was accepted"),
        Err(e) => e.to_string(),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn every_metadata_type_reads_back_in_v2_and_v3() {
    for version in [2, 3] {
        let mut arr = 4u32.to_le_bytes().to_vec(); // array of u32
        arr.extend_from_slice(&3u64.to_le_bytes());
        for v in [7u32, 8, 9] {
            arr.extend_from_slice(&v.to_le_bytes());
        }
        let mut nested = 9u32.to_le_bytes().to_vec(); // array of arrays of strings
        nested.extend_from_slice(&1u64.to_le_bytes());
        nested.extend_from_slice(&8u32.to_le_bytes());
        nested.extend_from_slice(&2u64.to_le_bytes());
        nested.extend_from_slice(&gguf_string("a"));
        nested.extend_from_slice(&gguf_string("bc"));
        let b = FileBuilder::new(version)
            .kv("u8", 0, &[200])
            .kv("i8", 1, &[0xFE])
            .kv("u16", 2, &60000u16.to_le_bytes())
            .kv("i16", 3, &(-300i16).to_le_bytes())
            .kv("u32", 4, &4_000_000_000u32.to_le_bytes())
            .kv("i32", 5, &(-5i32).to_le_bytes())
            .kv("f32", 6, &1.5f32.to_le_bytes())
            .kv("bool", 7, &[1])
            .kv("string", 8, &gguf_string("llama"))
            .kv("array", 9, &arr)
            .kv("nested", 9, &nested)
            .kv("u64", 10, &(1u64 << 40).to_le_bytes())
            .kv("i64", 11, &(-(1i64 << 40)).to_le_bytes())
            .kv("f64", 12, &0.25f64.to_le_bytes());
        let f = open_bytes(&b.bytes()).unwrap();
        assert_eq!(f.version, version);
        let m = &f.metadata;
        assert_eq!(m["u8"], Value::U8(200));
        assert_eq!(m["i8"], Value::I8(-2));
        assert_eq!(m["u16"], Value::U16(60000));
        assert_eq!(m["i16"], Value::I16(-300));
        assert_eq!(m["u32"], Value::U32(4_000_000_000));
        assert_eq!(m["i32"], Value::I32(-5));
        assert_eq!(m["f32"], Value::F32(1.5));
        assert_eq!(m["bool"], Value::Bool(true));
        assert_eq!(m["string"].as_str(), Some("llama"));
        assert_eq!(
            m["array"],
            Value::Array(vec![Value::U32(7), Value::U32(8), Value::U32(9)])
        );
        assert_eq!(
            m["nested"],
            Value::Array(vec![Value::Array(vec![
                Value::String("a".into()),
                Value::String("bc".into())
            ])])
        );
        assert_eq!(m["u64"].as_u64(), Some(1 << 40));
        assert_eq!(m["i64"], Value::I64(-(1 << 40)));
        assert_eq!(m["f64"].as_f64(), Some(0.25));
        assert!(f.tensors.is_empty());
    }
}

#[test]
fn tensors_are_found_at_aligned_offsets_and_borrowed() {
    let a: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..5).map(|i| -(i as f32)).collect();
    let mut fb = FileBuilder::new(3)
        .kv("general.alignment", 4, &64u32.to_le_bytes())
        .tensor("a", &[3, 2], GgmlType::F32, f32_bytes(&a))
        .tensor("b", &[5], GgmlType::F32, f32_bytes(&b));
    fb.alignment = 64;
    let f = open_bytes(&fb.bytes()).unwrap();
    assert_eq!(f.alignment, 64);
    let ta = f.tensor("a").unwrap();
    assert_eq!(ta.shape(), vec![2, 3], "GGUF dims are fastest-first");
    assert_eq!(f.dequantize(ta), a);
    let tb = f.tensor("b").unwrap();
    assert_eq!(tb.offset, 64);
    assert_eq!(f.dequantize(tb), b);
}

#[test]
fn bad_files_are_named_errors() {
    let good = FileBuilder::new(3).tensor("w", &[4], GgmlType::F32, f32_bytes(&[1.0; 4]));
    let bytes = good.bytes();

    assert!(err_of(b"PK\x03\x04zip").contains("not a GGUF file"));
    assert!(err_of(b"").contains("not a GGUF file"));

    let mut v1 = bytes.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err_of(&v1).contains("version 1"));
    let mut big = bytes.clone();
    big[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(err_of(&big).contains("big-endian"));
    let mut v9 = bytes.clone();
    v9[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert!(err_of(&v9).contains("version 9"));

    for cut in [6, 12, 30, bytes.len() - 1] {
        let e = err_of(&bytes[..cut]);
        assert!(
            e.contains("truncated") || e.contains("bytes left"),
            "cut at {cut}: {e}"
        );
    }

    let mut huge_count = bytes.clone();
    huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err_of(&huge_count).contains("tensor count"));

    let unknown_value = FileBuilder::new(3).kv("k", 13, &[0]).bytes();
    assert!(err_of(&unknown_value).contains("unknown metadata value type 13"));
    let bad_bool = FileBuilder::new(3).kv("flag", 7, &[2]).bytes();
    assert!(err_of(&bad_bool).contains("`flag`"));
    let bad_align = FileBuilder::new(3)
        .kv("general.alignment", 4, &48u32.to_le_bytes())
        .bytes();
    assert!(err_of(&bad_align).contains("not a power of two"));
    let dup = FileBuilder::new(3)
        .kv("k", 0, &[1])
        .kv("k", 0, &[2])
        .bytes();
    assert!(err_of(&dup).contains("appears twice"));

    let mut iq = FileBuilder::new(3).tensor("w", &[256], GgmlType::F32, vec![0; 1024]);
    iq.tensors[0].2 = 16;
    assert!(err_of(&iq.bytes()).contains("IQ2_XXS"));
    iq.tensors[0].2 = 99;
    assert!(err_of(&iq.bytes()).contains("unknown ggml tensor type 99"));

    // 2^62 + 8 f32 values: 4 bytes each wraps around to 32 bytes in u64 arithmetic.
    let mut wrapping = FileBuilder::new(3).tensor("w", &[8], GgmlType::F32, vec![0; 32]);
    wrapping.tensors[0].1 = vec![(1 << 62) + 8];
    let e = err_of(&wrapping.bytes());
    assert!(e.contains("need more than 2^64 bytes"), "{e}");

    let ragged = FileBuilder::new(3).tensor("w", &[40], GgmlType::Q8_0, vec![0; 68]);
    assert!(err_of(&ragged.bytes()).contains("not whole Q8_0 blocks of 32"));

    // Packed at 4 bytes while the file declares the default alignment of 32.
    let mut misaligned = FileBuilder::new(3)
        .tensor("a", &[1], GgmlType::F32, vec![0; 4])
        .tensor("b", &[1], GgmlType::F32, vec![0; 4]);
    misaligned.alignment = 4;
    let e = err_of(&misaligned.bytes());
    assert!(
        e.contains("`b`: data offset 4 is not a multiple of the alignment 32"),
        "{e}"
    );

    let twice = FileBuilder::new(3)
        .tensor("w", &[8], GgmlType::F32, vec![0; 32])
        .tensor("w", &[8], GgmlType::F32, vec![0; 32]);
    assert!(err_of(&twice.bytes()).contains("tensor `w` appears twice"));
}

/// Two tensors whose extents share bytes: the second entry points into the first's data.
#[test]
fn overlapping_tensors_are_refused() {
    let ok = FileBuilder::new(3)
        .tensor("a", &[16], GgmlType::F32, vec![0; 64])
        .tensor("b", &[8], GgmlType::F32, vec![0; 32]);
    let mut bytes = ok.bytes();
    assert!(open_bytes(&bytes).is_ok());
    // `b`'s offset is the last u64 of its tensor-info entry, just before the data section's
    // padding; `a` ends at 64, so 32 puts `b` inside it.
    let b_offset = find_u64(&bytes, 64);
    bytes[b_offset..b_offset + 8].copy_from_slice(&32u64.to_le_bytes());
    let e = err_of(&bytes);
    assert!(
        e.contains("tensors `a` (64 bytes at offset 0) and `b` (at offset 32) overlap"),
        "{e}"
    );
}

/// Where the little-endian u64 `v` first appears in `bytes`.
fn find_u64(bytes: &[u8], v: u64) -> usize {
    bytes
        .windows(8)
        .position(|w| w == v.to_le_bytes())
        .expect("the value is in the file")
}

fn f16_bits(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

#[test]
fn q4_0_and_q8_0_blocks_decode_by_hand() {
    let mut q4 = f16_bits(0.5).to_vec();
    q4.extend((0..16u8).map(|j| (15 - j) << 4 | j));
    let mut y = [0f32; 32];
    dequantize(GgmlType::Q4_0, &q4, &mut y).unwrap();
    for j in 0..16 {
        assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
        assert_eq!(y[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
    }
    let mut q8 = f16_bits(0.25).to_vec();
    q8.extend((0..32).map(|j| (j as i8 - 16) as u8));
    dequantize(GgmlType::Q8_0, &q8, &mut y).unwrap();
    for (j, v) in y.iter().enumerate() {
        assert_eq!(*v, (j as f32 - 16.0) * 0.25);
    }
}

#[test]
fn q5_0_takes_fifth_bits_from_qh() {
    // All low nibbles 0; bit k of qh is element k's fifth bit: set elements 3 and 20.
    let mut b = f16_bits(1.0).to_vec();
    b.extend(((1u32 << 3) | (1 << 20)).to_le_bytes());
    b.extend([0u8; 16]);
    let mut y = [0f32; 32];
    dequantize(GgmlType::Q5_0, &b, &mut y).unwrap();
    for (j, v) in y.iter().enumerate() {
        let want = if j == 3 || j == 20 { 0.0 } else { -16.0 };
        assert_eq!(*v, want, "element {j}");
    }
}

#[test]
fn k_quant_scales_unpack_six_bits() {
    // Scales 0..8 = 1, 2, .., 8 and mins 9..16, packed as ggml packs them.
    let (sc, mn): (Vec<u8>, Vec<u8>) = ((1..=8).collect(), (9..=16).map(|v| v + 40).collect());
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
    }
    for j in 0..8 {
        assert_eq!(dequant_scale_min(j, &s), (sc[j], mn[j]), "pair {j}");
    }
}

fn dequant_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    // Through a whole Q4_K block: d = 1, dmin = 1, all quants 0 except none, so element
    // 32*j (sub-block j's first) is -min_j, and with quants 1 it is scale_j - min_j.
    let mut b = f16_bits(1.0).to_vec();
    b.extend(f16_bits(1.0));
    b.extend_from_slice(s);
    b.extend([0x11u8; 128]);
    let mut y = [0f32; 256];
    dequantize(GgmlType::Q4K, &b, &mut y).unwrap();
    let mut zero = b.clone();
    zero[16..].fill(0);
    let mut y0 = [0f32; 256];
    dequantize(GgmlType::Q4K, &zero, &mut y0).unwrap();
    let m = -y0[32 * j];
    let sc = y[32 * j] + m;
    (sc as u8, m as u8)
}

#[test]
fn dequantize_checks_lengths() {
    let mut y = [0f32; 32];
    let e = dequantize(GgmlType::Q8_0, &[0; 33], &mut y).unwrap_err();
    assert!(e.contains("33 bytes"), "{e}");
}
