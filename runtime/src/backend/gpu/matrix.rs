//! Weight matrices on the GPU in the layouts `shaders/matmul.wgsl` reads, converted once at
//! upload from the GGUF bytes.
//!
//! ```text
//! F32            [rows][cols] f32
//! F16, BF16      [rows][cols] 16-bit, two per word (a row may start mid-word)
//! Q4_0, Q8_0     qs [rows][nb][16 or 32 bytes]  | d  [rows·nb] f16 (scale_off words in)
//! Q4_1           qs [rows][nb][16 bytes]        | dm [rows·nb] (d | m << 16) words
//! ```
//! `nb = cols/32`. Only the block headers move out of line (ggml's 18- and 34-byte blocks
//! are not word aligned); every bit is kept, so GPU and CPU compute on the same numbers.

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use crate::error::{Error, Result};
use crate::format::GgmlType;

/// A matrix uploaded for `matmul.wgsl`.
#[derive(Debug)]
pub struct GpuMatrix {
    pub(crate) buf: GpuBuffer,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Word offset of the scale region (quantized types), else 0.
    pub(crate) scale_off: u32,
}

/// Whether the GPU matmul supports weights of type `ty`.
pub fn supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q8_0
    )
}

/// Repack ggml rows (`data`, row-major) into the GPU layout; returns (bytes, scale_off).
pub fn repack(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<(Vec<u8>, u32)> {
    let bad = |m: String| Error::bad_model(m);
    let (bl, bb) = ty.block_geometry();
    if !cols.is_multiple_of(bl) {
        return Err(bad(format!("{cols} columns are not whole {ty} blocks")));
    }
    let need = rows * cols / bl * bb;
    if data.len() < need {
        return Err(bad(format!(
            "{ty} matrix {rows}×{cols} needs {need} bytes, has {}",
            data.len()
        )));
    }
    let data = &data[..need];
    Ok(match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => (data.to_vec(), 0),
        GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q4_1 => {
            let nblk = rows * cols / 32;
            let (head, qbytes) = match ty {
                GgmlType::Q4_0 => (2, 16),
                GgmlType::Q8_0 => (2, 32),
                _ => (4, 16),
            };
            let qs_len = nblk * qbytes;
            let sc_len = (nblk * head).div_ceil(4) * 4;
            let mut out = vec![0u8; qs_len + sc_len];
            for (i, blk) in data.chunks_exact(bb).enumerate() {
                out[i * qbytes..(i + 1) * qbytes].copy_from_slice(&blk[head..]);
                out[qs_len + i * head..qs_len + (i + 1) * head].copy_from_slice(&blk[..head]);
            }
            (out, (qs_len / 4) as u32)
        }
        other => {
            return Err(Error::Backend(format!(
            "the GPU backend does not support {other} weights (F32, F16, BF16, Q4_0, Q4_1, Q8_0)"
        )))
        }
    })
}

impl GpuMatrix {
    /// Upload a `rows × cols` matrix of type `ty` from its GGUF bytes.
    pub fn upload(
        dev: &GpuDevice,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<GpuMatrix> {
        let (bytes, scale_off) = repack(ty, rows, cols, data)?;
        let buf = dev.upload(name, &bytes)?;
        Ok(GpuMatrix {
            buf,
            ty,
            rows,
            cols,
            scale_off,
        })
    }

    /// Device bytes.
    pub fn bytes(&self) -> u64 {
        self.buf.bytes()
    }
}
