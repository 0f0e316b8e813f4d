//! GGUF files (versions 2 and 3): metadata, tensor infos, and tensor data borrowed from a
//! memory map without copying.
//!
//! Everything read from the file is checked before use: counts against the bytes left,
//! tensor extents against the data section, alignment against `general.alignment`. A bad
//! file is an error naming what is wrong and where, never a panic.

mod dequant;
mod ggml_type;
mod value;

pub use dequant::dequantize;
pub use ggml_type::{GgmlType, QK_K};
pub use value::Value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (it starts with {found:?}, GGUF files start with \"GGUF\")")]
    NotGguf { path: PathBuf, found: String },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

/// One tensor's entry in the file's tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (the row length). The row-major shape is this
    /// reversed.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data within the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row-major shape (outermost first), as the IR writes shapes.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    data_start: u64,
}

/// The file's bytes: mapped (files on disk, never copied) or owned (files built in
/// memory, which is how the fuzz target feeds the reader).
enum Bytes {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; a file changed
        // underneath it by another process is outside what kiln can guard against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        GgufFile::new(path, Bytes::Map(map))
    }

    /// A GGUF file held in memory; `name` stands for its path in errors.
    pub fn from_bytes(name: &Path, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::new(name, Bytes::Owned(bytes))
    }

    fn new(path: &Path, bytes: Bytes) -> Result<GgufFile, GgufError> {
        let header = parse(&bytes).map_err(|e| match e {
            ParseError::NotGguf(found) => GgufError::NotGguf {
                path: path.to_path_buf(),
                found,
            },
            ParseError::Invalid(msg) => GgufError::Invalid {
                path: path.to_path_buf(),
                msg,
            },
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_start: header.data_start,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor's bytes, borrowed from the map (extents were checked at open).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_start + t.offset) as usize;
        &self.bytes[start..start + t.size as usize]
    }

    /// The tensor as f32 values in row-major order.
    pub fn dequantize(&self, t: &TensorInfo) -> Vec<f32> {
        let mut out = vec![0f32; t.elements() as usize];
        dequantize(t.ggml_type, self.data(t), &mut out)
            .expect("open checked that the data holds whole blocks of every tensor");
        out
    }
}

enum ParseError {
    NotGguf(String),
    Invalid(String),
}

struct Header {
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_start: u64,
}

/// A cursor over the file's bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "truncated: {what} at byte {} needs {n} bytes, the file has {} left",
                self.pos,
                self.bytes.len() - self.pos
            ));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that each take at least `min_bytes`: more than the bytes left
    /// could hold is corruption, caught before anything is allocated for it.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, String> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes as u64) > left {
            return Err(format!(
                "{what} at byte {at} is {n}, more than the {left} bytes left could hold"
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(&format!("length of {what}"), 1)?;
        let at = self.pos;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what} at byte {at} is not UTF-8"))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("`{key}`: bool value {b} is neither 0 nor 1")),
            },
            8 => Value::String(self.string(&format!("string value of `{key}`"))?),
            9 => {
                if depth >= 8 {
                    return Err(format!("`{key}`: arrays nested more than 8 deep"));
                }
                let elem = self.u32(key)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                let n = self.count(&format!("length of array `{key}`"), min)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(format!("`{key}`: unknown metadata value type {t}")),
        })
    }
}

fn parse(bytes: &[u8]) -> Result<Header, ParseError> {
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        let found = String::from_utf8_lossy(&bytes[..bytes.len().min(4)]).into_owned();
        return Err(ParseError::NotGguf(found));
    }
    parse_after_magic(bytes).map_err(ParseError::Invalid)
}

fn parse_after_magic(bytes: &[u8]) -> Result<Header, String> {
    let mut r = Reader { bytes, pos: 4 };
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        1 => return Err("GGUF version 1 (32-bit counts) is not supported; re-convert the model with a current llama.cpp".into()),
        v if v.swap_bytes() <= 3 => {
            return Err("a big-endian GGUF file; kiln reads little-endian files".into())
        }
        v => return Err(format!("GGUF version {v} is newer than kiln reads (2 and 3)")),
    }
    let n_tensors = r.count("tensor count", 24)?;
    let n_kv = r.count("metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let ty = r.u32(&key)?;
        let v = r.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), v).is_some() {
            return Err(format!("metadata key `{key}` appears twice"));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => return Err(format!("general.alignment is {v}, not a power of two")),
        },
    };
    let mut infos = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = r.string("tensor name")?;
        let n_dims = r.u32(&name)?;
        if n_dims == 0 || n_dims > 4 {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (GGUF allows 1 to 4)"
            ));
        }
        let dims = (0..n_dims)
            .map(|_| r.u64(&name))
            .collect::<Result<Vec<u64>, String>>()?;
        let ty = r.u32(&name)?;
        let ggml_type = GgmlType::from_id(ty).map_err(|e| format!("tensor `{name}`: {e}"))?;
        let offset = r.u64(&name)?;
        infos.push((name, dims, ggml_type, offset));
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (bytes.len() as u64).saturating_sub(data_start);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dims, ggml_type, offset) in infos {
        let elements = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}`: dimensions {dims:?} overflow"))?;
        let row = dims[0];
        if !row.is_multiple_of(ggml_type.block_elems() as u64) {
            return Err(format!(
                "tensor `{name}`: rows of {row} elements are not whole {} blocks of {}",
                ggml_type,
                ggml_type.block_elems()
            ));
        }
        let size = ggml_type
            .row_bytes(row)
            .and_then(|b| b.checked_mul(elements / row.max(1)))
            .ok_or_else(|| {
                format!(
                    "tensor `{name}`: dimensions {dims:?} of {ggml_type} need more than 2^64 bytes"
                )
            })?;
        if !offset.is_multiple_of(alignment) {
            return Err(format!(
                "tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}"
            ));
        }
        if offset.checked_add(size).is_none_or(|end| end > data_len) {
            return Err(format!(
                "tensor `{name}`: {size} bytes at offset {offset} run past the end of the data ({data_len} bytes); the file is truncated"
            ));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            size,
        });
    }
    check_distinct(&tensors)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// Every tensor has its own name and its own bytes: a name given twice or two tensors'
/// data overlapping is a corrupt (or hostile) file, not two views of one tensor.
fn check_distinct(tensors: &[TensorInfo]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    if let Some(t) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
        return Err(format!("tensor `{}` appears twice", t.name));
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.size > b.offset {
            return Err(format!(
                "tensors `{}` ({} bytes at offset {}) and `{}` (at offset {}) overlap",
                a.name, a.size, a.offset, b.name, b.offset
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
