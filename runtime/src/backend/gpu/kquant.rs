//! ggml block types beyond `matmul.wgsl`'s (K-quants, Q5_0/Q5_1, IQ4_NL/IQ4_XS, TQ1_0/TQ2_0)
//! on the GPU: upload in a word-aligned layout, split by rows when a matrix exceeds the
//! adapter's storage binding limit, and the GEMV / small-batch GEMM of `shaders/kquant.wgsl`
//! (f32 activations, weights dequantized in registers as the CPU's dequantizers do).
//!
//! Layout: ggml's blocks kept whole and in order, each padded to a multiple of 4 bytes so
//! every field is word-aligned; where a 2-byte f16 header would misalign the codes it moves
//! to the tail. Every bit is kept.
//!
//! ```text
//!  ggml Q5_0 (22 B)  | d | qh (4) | qs (16)      |        GPU (24 B)  | qh (4) | qs (16) | d | 0 0 |
//!  ggml IQ4_NL (18 B)| d | qs (16)               |        GPU (20 B)  | qs (16) | d | 0 0 |
//!  ggml Q8_0 (34 B)  | d | qs (32)               |        GPU (36 B)  | qs (32) | d | 0 0 |
//!  Q6_K 210, Q3_K 110, TQ1_0 54, TQ2_0 66 B:   the ggml block, then 0 0
//!  Q4_K 144, Q5_K 176, Q2_K 84, IQ4_XS 136, Q5_1 24 B:  the ggml block as is
//!
//!  matrix rows 0..R  ->  part 0: rows 0..r1 | part 1: rows r1..r2 | ...   (one buffer each,
//!                        every part under the binding limit; one dispatch per part)
//! ```
//!
//! Q8_0 is here only for matrices too large for one binding (Gemma 3's 262144×640 tied
//! embedding): smaller ones keep `matmul.wgsl`'s Q8-activation path.

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::kernels::MatmulK;
use super::ops::grid;
use super::record::Recorder;
use crate::error::{Error, Result};
use crate::format::GgmlType;

/// Whether `kquant.wgsl` runs weights of type `ty`.
pub fn supported(ty: GgmlType) -> bool {
    layout(ty).is_some()
}

/// (bytes of one GPU block, byte offset in the GPU block where ggml's first `head` bytes go,
/// `head`): the GPU block is ggml's bytes `head..` then its first `head` bytes, then zeros.
fn layout(ty: GgmlType) -> Option<(usize, usize)> {
    use GgmlType::*;
    let head = match ty {
        Q5_0 | Iq4Nl | Q8_0 => 2,
        Q2K | Q3K | Q4K | Q5K | Q6K | Iq4Xs | TQ1_0 | TQ2_0 | Q5_1 => 0,
        _ => return None,
    };
    let (_, bb) = ty.block_geometry();
    Some((bb.div_ceil(4) * 4, head))
}

/// Repack `rows` ggml rows of `cols` (`data`, row-major) into the GPU layout.
pub fn repack(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<Vec<u8>> {
    let Some((gb, head)) = layout(ty) else {
        return Err(Error::Backend(format!(
            "the GPU K-quant kernels do not run {ty} weights"
        )));
    };
    let (bl, bb) = ty.block_geometry();
    if !cols.is_multiple_of(bl) || cols == 0 {
        return Err(Error::bad_model(format!(
            "{cols} columns are not whole {ty} blocks"
        )));
    }
    let nblk = rows * cols / bl;
    let need = nblk * bb;
    if data.len() < need {
        return Err(Error::bad_model(format!(
            "{ty} matrix {rows}×{cols} needs {need} bytes, has {}",
            data.len()
        )));
    }
    let mut out = vec![0u8; nblk * gb];
    for (src, dst) in data[..need].chunks_exact(bb).zip(out.chunks_exact_mut(gb)) {
        dst[..bb - head].copy_from_slice(&src[head..]);
        dst[bb - head..bb].copy_from_slice(&src[..head]);
    }
    Ok(out)
}

/// One row range of a matrix in its own buffer.
#[derive(Debug)]
struct Part {
    buf: GpuBuffer,
    row0: usize,
    rows: usize,
}

/// A matrix uploaded for `kquant.wgsl`, split into row ranges that each fit one binding.
#[derive(Debug)]
pub struct GpuKMatrix {
    parts: Vec<Part>,
    /// Block type.
    pub ty: GgmlType,
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
}

impl GpuKMatrix {
    /// Upload a `rows × cols` matrix of type `ty` from its GGUF bytes; rows are split over
    /// as many buffers as the adapter's binding limit needs.
    pub fn upload(
        dev: &GpuDevice,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<GpuKMatrix> {
        let bytes = repack(ty, rows, cols, data).map_err(|e| match e {
            Error::BadModel(m) => Error::BadModel(format!("{name}: {m}")),
            Error::Backend(m) => Error::Backend(format!("{name}: {m}")),
            e => e,
        })?;
        if rows == 0 {
            return Err(Error::bad_model(format!("{name}: a matrix of no rows")));
        }
        let row_bytes = bytes.len() / rows;
        let caps = dev.caps();
        let limit = caps.max_binding.min(caps.max_buffer) as usize;
        // Whole rows per part, a multiple of 4 so a workgroup's row quad stays in one part.
        let per = (limit / row_bytes) / 4 * 4;
        if per == 0 {
            return Err(Error::Backend(format!(
                "{name}: rows of {row_bytes} bytes do not fit the adapter's {limit}-byte \
                 binding four at a time; use the CPU backend"
            )));
        }
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = per.min(rows - row0);
            let buf = dev.upload(name, &bytes[row0 * row_bytes..(row0 + n) * row_bytes])?;
            parts.push(Part { buf, row0, rows: n });
            row0 += n;
        }
        Ok(GpuKMatrix {
            parts,
            ty,
            rows,
            cols,
        })
    }

    /// Device bytes.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buf.bytes()).sum()
    }

    /// Buffers the rows are split over.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}

/// `y[t·y_stride + r] = W[r] · x[t]` for `n` tokens of f32 activations `x` (`n × cols`).
pub fn matmul_k(
    r: &mut Recorder,
    w: &GpuKMatrix,
    x: &GpuBuffer,
    y: &GpuBuffer,
    n: usize,
    y_stride: usize,
) -> Result<()> {
    if y_stride < w.rows || n == 0 {
        return Err(Error::invalid("GPU matmul: output stride or token count"));
    }
    if (x.bytes() as usize) < 4 * w.cols * n {
        return Err(Error::invalid(format!(
            "GPU matmul: {} tokens of {} activations do not fit {} bytes",
            n,
            w.cols,
            x.bytes()
        )));
    }
    if (y.bytes() as usize) < 4 * ((n - 1) * y_stride + w.rows) {
        return Err(Error::invalid(format!(
            "GPU matmul: output of {} bytes, {n} tokens of stride {y_stride} need more",
            y.bytes()
        )));
    }
    for p in &w.parts {
        let g = grid(p.rows.div_ceil(4));
        let groups = [g[0], n.div_ceil(4) as u32, g[2]];
        let k = MatmulK {
            w: &p.buf,
            x,
            y,
            rows: p.rows as u32,
            cols: w.cols as u32,
            n: n as u32,
            row0: p.row0 as u32,
            y_stride: y_stride as u32,
            wtype: w.ty.id(),
        };
        r.run(&k, groups)?;
    }
    Ok(())
}
