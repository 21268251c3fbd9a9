//! Reading the tensors of a conversion input (GGUF or safetensors) as raw bytes, f32 or
//! exact BF16 bit patterns, whatever their stored type.

use crate::backend::cpu::dfloat::Df12Decode;
use std::path::Path;

use crate::backend::cpu::dfloat::Df11Decoder;
use crate::dfloat::df12::Df12View;
use crate::dfloat::Df11View;
use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile, Value};
use crate::lut::LutMatrix;
use crate::model::weights::df11_dims;
use crate::quant::ggml::dequantize_row;

/// A conversion input.
pub enum Source {
    Gguf(GgufFile),
    Safetensors(super::safetensors::SafetensorsFile),
}

/// One tensor of a [`Source`]: GGUF dims (`ne[0]` first), type and where its bytes are.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub name: String,
    /// Stored dims (for DFloat11: the blob length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Logical dims (`ne[0]` first).
    logical: Vec<u64>,
    start: usize,
    len: usize,
}

impl SourceTensor {
    /// Logical dims, `ne[0]` (the row length) first.
    pub fn logical_dims(&self) -> Vec<u64> {
        self.logical.clone()
    }
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.logical.iter().product()
    }
}

impl Source {
    /// Open a `.safetensors` file (by extension) or a GGUF.
    pub fn open(path: &Path) -> Result<Source> {
        if path.extension().is_some_and(|e| e == "safetensors") {
            Ok(Source::Safetensors(
                super::safetensors::SafetensorsFile::open(path)?,
            ))
        } else {
            Ok(Source::Gguf(GgufFile::open(path)?))
        }
    }

    pub fn is_safetensors(&self) -> bool {
        matches!(self, Source::Safetensors(_))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Source::Gguf(f) => f.bytes(),
            Source::Safetensors(s) => s.bytes(),
        }
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> Result<Vec<SourceTensor>> {
        match self {
            Source::Gguf(f) => f
                .tensors
                .iter()
                .map(|t| {
                    let logical = if matches!(t.ty, GgmlType::Df11 | GgmlType::Df12) {
                        df11_dims(f, &t.name)?
                    } else {
                        t.dims.clone()
                    };
                    Ok(SourceTensor {
                        name: t.name.clone(),
                        dims: t.dims.clone(),
                        ty: t.ty,
                        logical,
                        start: (f.data_start + t.offset) as usize,
                        len: t.size as usize,
                    })
                })
                .collect(),
            Source::Safetensors(s) => Ok(s
                .tensors()
                .iter()
                .map(|t| SourceTensor {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ty: t.ty,
                    logical: t.dims.clone(),
                    start: t.range.start,
                    len: t.range.len(),
                })
                .collect()),
        }
    }

    /// The tensor's stored bytes.
    pub fn raw(&self, t: &SourceTensor) -> &[u8] {
        &self.bytes()[t.start..t.start + t.len]
    }

    /// Metadata to carry over (GGUF only; `general.alignment` is the writer's business).
    pub fn metadata(&self) -> Vec<(String, Value)> {
        match self {
            Source::Gguf(f) => f
                .metadata
                .iter()
                .filter(|(k, _)| k != "general.alignment")
                .cloned()
                .collect(),
            Source::Safetensors(_) => Vec::new(),
        }
    }
}

/// The tensor's values as exact BF16 bit patterns when it is stored as BF16, DFloat11 or df12,
/// `None` for other types (converting them would round).
pub fn read_bf16_bits(src: &Source, t: &SourceTensor) -> Result<Option<Vec<u16>>> {
    let raw = src.raw(t);
    match t.ty {
        GgmlType::BF16 => Ok(Some(
            raw.chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
        )),
        GgmlType::Df11 => {
            let v = Df11View::parse(raw)?;
            if v.n as u64 != t.n_elements() {
                return Err(Error::bad_model(format!(
                    "{}: DFloat11 blob of {} values for {:?}",
                    t.name, v.n, t.logical
                )));
            }
            Ok(Some(Df11Decoder::new(v.lengths)?.decode(v)?))
        }
        GgmlType::Df12 => {
            let v = Df12View::parse(raw)?;
            if v.n as u64 != t.n_elements() {
                return Err(Error::bad_model(format!(
                    "{}: df12 blob of {} values for {:?}",
                    t.name, v.n, t.logical
                )));
            }
            Ok(Some(v.decode()?))
        }
        _ => Ok(None),
    }
}

/// The tensor's values as f32 (dequantized / decoded), row-major.
pub fn read_f32(src: &Source, t: &SourceTensor) -> Result<Vec<f32>> {
    if let Some(b) = read_bf16_bits(src, t)? {
        return Ok(b
            .into_iter()
            .map(|v| f32::from_bits((v as u32) << 16))
            .collect());
    }
    let n = t.n_elements() as usize;
    let cols = t.logical[0] as usize;
    let rows = n / cols.max(1);
    let raw = src.raw(t);
    let mut out = vec![0f32; n];
    match t.ty {
        GgmlType::Lut { bits, group } => {
            let m = LutMatrix::from_bytes(bits as usize, group as usize, rows, cols, raw)?;
            for (r, o) in out.chunks_exact_mut(cols).enumerate() {
                m.dequantize_row(r, o);
            }
        }
        ty => {
            let rb = ty
                .bytes_for(cols as u64)
                .ok_or_else(|| Error::bad_model(format!("{}: bad row length", t.name)))?
                as usize;
            for (row, o) in raw.chunks_exact(rb).zip(out.chunks_exact_mut(cols)) {
                if !dequantize_row(ty, row, o) {
                    return Err(Error::invalid(format!(
                        "{}: cannot convert tensors of type {ty} yet",
                        t.name
                    )));
                }
            }
        }
    }
    Ok(out)
}
