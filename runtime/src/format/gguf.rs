//! GGUF v2/v3 reader and writer.
//!
//! ```text
//! offset 0   "GGUF" | version u32 | n_tensors u64 | n_kv u64
//!            n_kv × { key: str | value_type u32 | value }
//!            n_tensors × { name: str | n_dims u32 | ne[n_dims] u64 | type u32 | offset u64 }
//!            padding to `general.alignment` (default 32)
//! data_start tensor data; each tensor at data_start + offset (offset aligned)
//! str = len u64 | bytes (UTF-8, no NUL)
//! ```
//!
//! Every count, length, dimension and offset is checked against the bytes that are really
//! there before anything is allocated or sliced, so a truncated or hostile file is an
//! [`Error::BadModel`] naming the problem, never a panic or a huge allocation.
//! Tensor data is never copied: [`GgufFile::tensor_data`] borrows from the mmap.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::ggml_type::GgmlType;
use crate::error::{Error, Result};

/// Magic bytes at offset 0.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// At most this many dimensions per tensor (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: usize = 4;
/// Nesting limit for arrays of arrays (hostile files could recurse otherwise).
const MAX_ARRAY_DEPTH: usize = 4;
/// At most this many items are reserved up front for a count read from the file; more grow
/// as they are actually parsed (a count that merely fits the file could still ask for ~32×
/// the file size in `Value`s before the first item is checked).
const MAX_PREALLOC: usize = 1024;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// GGUF value type id.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// Any integer type as u64 (negative values give `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            Value::Bool(v) => Some(v as u64),
            _ => None,
        }
    }

    /// Any integer type as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any numeric type as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short description for `info` output (arrays are summarised).
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.len() > 60 => {
                let head: String = s.chars().take(57).collect();
                format!("{head:?}… ({} bytes)", s.len())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{} items]", a.len()),
            Value::F32(v) => format!("{v}"),
            Value::F64(v) => format!("{v}"),
            Value::Bool(v) => format!("{v}"),
            other => other.as_i64().map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

/// Where a tensor lives in the file and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (contiguous), `dims[1]` the number of rows.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Byte size, computed from dims and type.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The file image: a read-only mapping natively, owned bytes from memory (and always in
/// the browser build, which has no mmap).
enum Storage {
    #[cfg(not(target_arch = "wasm32"))]
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Metadata is owned; tensor data borrows from the mapping.
pub struct GgufFile {
    storage: Storage,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::bad_model(format!(
                "truncated file: {what} needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(Error::bad_model(format!(
                "{what}: string length {len} at offset {} exceeds the {} bytes left in the file",
                self.pos - 8,
                self.remaining()
            )));
        }
        let at = self.pos;
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::bad_model(format!(
                "{what}: invalid UTF-8 in string at offset {at} (byte {} of {len})",
                e.utf8_error().valid_up_to()
            ))
        })
    }

    /// Check that `count` items of at least `min_size` bytes each can still fit.
    fn check_count(&self, count: u64, min_size: usize, what: &str) -> Result<usize> {
        let need = count.checked_mul(min_size as u64);
        match need {
            Some(n) if n <= self.remaining() as u64 => Ok(count as usize),
            _ => Err(Error::bad_model(format!(
                "{what}: count {count} cannot fit in the {} bytes left in the file",
                self.remaining()
            ))),
        }
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8(key)?),
            1 => Value::I8(self.u8(key)? as i8),
            2 => Value::U16(self.u16(key)?),
            3 => Value::I16(self.u16(key)? as i16),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::bad_model(format!(
                        "metadata {key:?}: bool byte is {b}, not 0 or 1"
                    )))
                }
            },
            8 => Value::String(self.string(&format!("metadata {key:?}"))?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::bad_model(format!(
                        "metadata {key:?}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let elem_ty = self.u32(key)?;
                let count = self.u64(key)?;
                let min = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => {
                        return Err(Error::bad_model(format!(
                            "metadata {key:?}: unknown array element type {t}"
                        )))
                    }
                };
                let n = self.check_count(count, min, &format!("metadata {key:?} array"))?;
                let mut items = Vec::with_capacity(n.min(MAX_PREALLOC));
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            t => {
                return Err(Error::bad_model(format!(
                    "metadata {key:?}: unknown value type {t}"
                )))
            }
        })
    }
}

impl GgufFile {
    /// Map and parse a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(Error::invalid(format!(
                "{} is a folder, not a model file",
                path.display()
            )));
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            // SAFETY: the mapping is read-only; we accept that another process truncating the
            // file while it is mapped is outside what any mmap-based loader can defend against.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            Self::parse(Storage::Mmap(mmap))
        }
        // No mmap (nor, in a browser, a file system): read it whole.
        #[cfg(target_arch = "wasm32")]
        {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut { file }, &mut bytes)
                .map_err(|e| Error::io(path, e))?;
            Self::parse(Storage::Owned(bytes))
        }
    }

    /// Parse a GGUF image held in memory (tests, fuzzing, files built on the fly).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<Self> {
        let buf = storage.bytes();
        let mut c = Cursor { buf, pos: 0 };
        let magic = c.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(Error::bad_model(format!(
                "not a GGUF file: magic is {magic:02x?}, expected \"GGUF\""
            )));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::bad_model(format!(
                "unsupported GGUF version {version} (supported: 2, 3)"
            )));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // A key-value pair is at least 8 (key len) + 4 (type) + 1 bytes.
        let n_kv = c.check_count(n_kv, 13, "metadata")?;
        let mut metadata = Vec::with_capacity(n_kv.min(MAX_PREALLOC));
        let mut index = HashMap::with_capacity(n_kv.min(MAX_PREALLOC));
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(Error::bad_model(format!("duplicate metadata key {key:?}")));
            }
            metadata.push((key, value));
        }
        let alignment = match index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let a = metadata[i].1.as_u64().unwrap_or(0);
                if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                    return Err(Error::bad_model(format!(
                        "general.alignment {:?} is not a power of two in 1..=1MiB",
                        metadata[i].1
                    )));
                }
                a
            }
        };
        // A tensor info is at least 8 (name len) + 4 (n_dims) + 8 (one dim) + 4 + 8 bytes.
        let n_tensors = c.check_count(n_tensors, 32, "tensor")?;
        let mut tensors = Vec::with_capacity(n_tensors.min(MAX_PREALLOC));
        let mut tensor_index = HashMap::with_capacity(n_tensors.min(MAX_PREALLOC));
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor #{i} name"))?;
            let n_dims = c.u32(&name)? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::bad_model(format!(
                    "tensor {name:?}: {n_dims} dimensions (1..={MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let ty_id = c.u32(&name)?;
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
                Error::bad_model(format!("tensor {name:?}: unknown tensor type id {ty_id}"))
            })?;
            let offset = c.u64(&name)?;
            let n_el = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n < 1 << 50)
                .ok_or_else(|| {
                    Error::bad_model(format!("tensor {name:?}: absurd dimensions {dims:?}"))
                })?;
            if dims[0] % ty.block_len() as u64 != 0 {
                return Err(Error::bad_model(format!(
                    "tensor {name:?}: row length {} is not a multiple of the {} block size {}",
                    dims[0],
                    ty,
                    ty.block_len()
                )));
            }
            let _ = n_el;
            let size = ty.tensor_bytes(&dims).ok_or_else(|| {
                Error::bad_model(format!(
                    "tensor {name:?}: shape {dims:?} does not fit type {ty} or its size overflows"
                ))
            })?;
            if offset % alignment != 0 {
                return Err(Error::bad_model(format!(
                    "tensor {name:?}: offset {offset} is not aligned to {alignment}"
                )));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(Error::bad_model(format!("duplicate tensor name {name:?}")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        if data_start > file_len && !tensors.is_empty() {
            return Err(Error::bad_model(format!(
                "truncated file: data section starts at {data_start} but the file has {file_len} bytes"
            )));
        }
        for t in &tensors {
            let end = data_start
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(Error::bad_model(format!(
                        "tensor {:?}: data [{} + {}, +{} bytes) runs past the end of the file ({file_len} bytes); the file is truncated or corrupt",
                        t.name, data_start, t.offset, t.size
                    )))
                }
            }
        }
        // Tensors must not overlap: a size that disagrees with the data written (e.g. a
        // type id or shape that does not match the bytes) shows up here.
        let mut spans: Vec<(u64, u64, usize)> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.offset, t.offset + t.size, i))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[0].1 > w[1].0 {
                return Err(Error::bad_model(format!(
                    "tensors {:?} and {:?} overlap: their types or shapes do not match the data",
                    tensors[w[0].2].name, tensors[w[1].2].name
                )));
            }
        }
        // suanpan's own tensors are written back to back (padded to the alignment): more
        // room than that means the type id (bits, group) or shape claims fewer bytes than
        // were written.
        for (i, &(_, end, ti)) in spans.iter().enumerate() {
            let t = &tensors[ti];
            if !matches!(t.ty, GgmlType::Lut { .. } | GgmlType::Df11 | GgmlType::Df12) {
                continue;
            }
            let next = spans
                .get(i + 1)
                .map_or(file_len - data_start, |&(start, _, _)| start);
            if next - end >= alignment {
                return Err(Error::bad_model(format!(
                    "tensor {:?}: {} {:?} takes {} bytes but {} were written",
                    t.name,
                    t.ty,
                    t.dims,
                    t.size,
                    next - t.offset
                )));
            }
        }
        Ok(GgufFile {
            storage,
            version,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_start,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// An unsigned integer metadata value; a present value of the wrong type is an error.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::bad_model(format!(
                    "metadata {key:?} should be an unsigned integer, is {v:?}"
                ))
            }),
        }
    }

    /// A float metadata value; a present value of the wrong type is an error.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::bad_model(format!("metadata {key:?} should be a number, is {v:?}"))
            }),
        }
    }

    /// A tensor's description by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor (validated at parse time to lie inside the file).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_start + info.offset) as usize;
        &self.storage.bytes()[start..start + info.size as usize]
    }

    /// The whole file image.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}

/// Builds a GGUF v3 file: metadata, then tensors laid out with the chosen alignment.
///
/// ```
/// use suanpan::format::gguf::{GgufWriter, GgufFile, Value};
/// use suanpan::format::GgmlType;
/// let mut w = GgufWriter::new();
/// w.add_meta("general.architecture", Value::String("llama".into()));
/// w.add_tensor("t", &[2], GgmlType::F32, bytemuck::cast_slice(&[1.0f32, 2.0]).to_vec());
/// let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
/// assert_eq!(f.get_str("general.architecture"), Some("llama"));
/// ```
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
    alignment: u64,
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            ..Default::default()
        }
    }

    /// Add (or replace) a metadata key. `general.alignment` also sets the layout.
    pub fn add_meta(&mut self, key: &str, value: Value) {
        if key == "general.alignment" {
            if let Some(a) = value.as_u64() {
                self.alignment = a.max(1);
            }
        }
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key.to_string(), value));
        }
    }

    /// Add a tensor; `data` must hold exactly the bytes `dims`/`ty` call for.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) {
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, data));
    }

    fn write_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn write_value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::Bool(x) => out.push(*x as u8),
            Value::String(s) => Self::write_str(out, s),
            Value::Array(items) => {
                let ty = items.first().map(Value::type_id).unwrap_or(4);
                out.extend_from_slice(&ty.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for it in items {
                    Self::write_value(out, it);
                }
            }
            Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        }
    }

    /// The header (everything before the data section), given tensor offsets.
    fn header(&self) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        out.extend_from_slice(GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            Self::write_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            Self::write_value(&mut out, v);
        }
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut off = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            Self::write_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
            offsets.push(off);
            off = (off + data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        let pad = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(pad as usize, 0);
        (out, offsets)
    }

    /// Serialize into memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Serialize to any writer (a file for converters).
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let (header, offsets) = self.header();
        w.write_all(&header)?;
        let mut pos = 0u64;
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            if off > pos {
                w.write_all(&vec![0u8; (off - pos) as usize])?;
            }
            w.write_all(data)?;
            pos = off + data.len() as u64;
        }
        Ok(())
    }
}
