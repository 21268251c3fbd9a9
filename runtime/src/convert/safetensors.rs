//! A Hugging Face `.safetensors` file, mapped, as a list of tensors with GGUF-style dims
//! (`ne[0]` = the last, fastest dimension of the safetensors shape). Parsing and
//! validation are the `safetensors` crate's.

use std::ops::Range;
use std::path::Path;

#[cfg(not(target_arch = "wasm32"))]
use memmap2::Mmap;
/// No mmap in the browser build: the file is read whole.
#[cfg(target_arch = "wasm32")]
type Mmap = Vec<u8>;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::format::GgmlType;

/// One tensor: name, GGUF dims, type and byte range in the file.
#[derive(Clone, Debug)]
pub struct StTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub range: Range<usize>,
}

/// A mapped safetensors file.
pub struct SafetensorsFile {
    map: Mmap,
    tensors: Vec<StTensor>,
}

fn ggml_type(d: Dtype) -> Option<GgmlType> {
    Some(match d {
        Dtype::F32 => GgmlType::F32,
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::BF16,
        Dtype::F64 => GgmlType::F64,
        Dtype::I8 => GgmlType::I8,
        Dtype::I16 => GgmlType::I16,
        Dtype::I32 => GgmlType::I32,
        Dtype::I64 => GgmlType::I64,
        _ => return None,
    })
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is mapped read-only; like every model file it must not be
        // modified while mapped (documented for model files in `format::gguf`).
        #[cfg(not(target_arch = "wasm32"))]
        let map = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(path, e))?;
        #[cfg(target_arch = "wasm32")]
        let map: Mmap = {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut { f }, &mut v).map_err(|e| Error::io(path, e))?;
            v
        };
        let st = SafeTensors::deserialize(&map)
            .map_err(|e| Error::bad_model(format!("{}: {e}", path.display())))?;
        let base = map.as_ptr() as usize;
        let mut tensors = Vec::new();
        for (name, view) in st.iter() {
            let ty = ggml_type(view.dtype()).ok_or_else(|| {
                Error::bad_model(format!(
                    "{}: tensor {name} has dtype {:?}, which suanpan cannot store",
                    path.display(),
                    view.dtype()
                ))
            })?;
            let start = view.data().as_ptr() as usize - base;
            let mut dims: Vec<u64> = view.shape().iter().rev().map(|&d| d as u64).collect();
            if dims.is_empty() {
                dims.push(1);
            }
            tensors.push(StTensor {
                name: name.to_string(),
                dims,
                ty,
                range: start..start + view.data().len(),
            });
        }
        tensors.sort_by_key(|t| t.range.start);
        Ok(SafetensorsFile { map, tensors })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn tensors(&self) -> &[StTensor] {
        &self.tensors
    }
}
