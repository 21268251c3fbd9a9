//! df12 matrices on the GPU: kept compressed in device memory (~12 bits per weight) and
//! multiplied by `matmul_df12` (`shaders/matmul.wgsl`), which decodes each weight in
//! registers with the tensor's exponent table in workgroup memory.
//!
//! The kernel is `matmul_dense`'s BF16 GEMV with the load of a weight replaced by its df12
//! decode: the same lanes, the same order of products and the same reduction, on the same
//! BF16 values, so its output is bit for bit the BF16 kernel's on the decoded matrix.
//!
//! # Device layout (one buffer of u32 words, little-endian)
//!
//! ```text
//! word 0          4 words       table: exponent of code c in byte c % 4 of word c / 4
//!                                (code 15, the escape, has 0)
//! word 4          ceil(n/4)     sign|mantissa: value i in byte i % 4 of word 4 + i / 4
//! codes_off       ceil(n/8)     codes: value i in bits 4(i%8)..4(i%8)+4 of word i / 8
//!                                (the file's nibble order: its bytes copied as they are)
//! starts_off      nb + 1        per block b, its first exception entry; then the total
//! exc_off         n_exc         exception entries, increasing within each block:
//!                               ┌──────────────┬─────────────────────────────────┐
//!                               │ exponent (8) │ value index − b·block (24 bits) │
//!                               └──────────────┴─────────────────────────────────┘
//! ```
//!
//! `nb = ceil(n / block)`; df12 blocks hold at most 2^24 values, so an in-block offset fits
//! 24 bits. Value i of the matrix (row-major, `i = row·cols + k`) is
//! `bf16 = (sm & 0x80) << 8 | exp << 7 | (sm & 0x7f)` with `exp = table[code]`, or for the
//! escape code the exponent of the entry whose offset is `i − b·block` (a binary search of
//! block b's entries).

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::kernels::MatmulDf12;
use super::ops::matmul_grid;
use super::record::Recorder;
use crate::dfloat::df12::Df12View;
use crate::error::{Error, Result};

/// A df12 matrix in device memory.
#[derive(Debug)]
pub struct GpuDf12 {
    buf: GpuBuffer,
    codes_off: u32,
    starts_off: u32,
    exc_off: u32,
    block: u32,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

/// The words of `t`'s device layout (see the module docs) and the offsets of its
/// sections: (words, codes_off, starts_off, exc_off).
pub fn pack(t: &Df12View<'_>) -> Result<(Vec<u32>, u32, u32, u32)> {
    let words = |bytes: &[u8]| -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect()
    };
    let mut out = words(&t.table);
    out.extend(words(t.sign_mantissa));
    let codes_off = out.len();
    out.extend(words(t.codes));
    let starts_off = out.len();
    out.extend(t.block_starts());
    let exc_off = out.len();
    let block = t.block as u64;
    for (i, e) in t.exceptions() {
        let off = i as u64 % block;
        if off >= 1 << 24 {
            return Err(Error::bad_model(format!(
                "df12: exception offset {off} in a block of {block}"
            )));
        }
        out.push(off as u32 | u32::from(e) << 24);
    }
    let off = |w: usize| {
        u32::try_from(w).map_err(|_| Error::Backend("df12 matrix too large for the GPU".into()))
    };
    Ok((out, off(codes_off)?, off(starts_off)?, off(exc_off)?))
}

impl GpuDf12 {
    /// Upload the `rows × cols` df12 matrix `t` (validated by its parse). The device must
    /// bind its packed size.
    pub fn upload(
        dev: &GpuDevice,
        name: &str,
        t: &Df12View<'_>,
        rows: usize,
        cols: usize,
    ) -> Result<GpuDf12> {
        if t.n != rows * cols {
            return Err(Error::bad_model(format!(
                "{name}: df12 tensor of {} values for a {rows}×{cols} matrix",
                t.n
            )));
        }
        let (words, codes_off, starts_off, exc_off) = pack(t)?;
        dev.check_binding(name, 4 * words.len() as u64)?;
        Ok(GpuDf12 {
            buf: dev.upload(name, bytemuck::cast_slice(&words))?,
            codes_off,
            starts_off,
            exc_off,
            block: t.block as u32,
            rows,
            cols,
        })
    }

    /// Device bytes.
    pub fn bytes(&self) -> u64 {
        self.buf.bytes()
    }

    /// `y[t][r] = W[r] · x[t]` for `n` tokens of f32 input `x`; `y_stride` between tokens'
    /// output rows (≥ rows). Bitwise the BF16 GEMV's output on the decoded matrix.
    pub fn matmul(
        &self,
        r: &mut Recorder,
        x: &GpuBuffer,
        y: &GpuBuffer,
        n: usize,
        y_stride: usize,
    ) -> Result<()> {
        if y_stride < self.rows || n == 0 {
            return Err(Error::invalid(
                "GPU df12 matmul: output stride or token count",
            ));
        }
        if (x.bytes() as usize) < 4 * self.cols * n
            || (y.bytes() as usize) < 4 * ((n - 1) * y_stride + self.rows)
        {
            return Err(Error::invalid("GPU df12 matmul: input or output too small"));
        }
        r.run(
            &MatmulDf12 {
                w: &self.buf,
                x,
                y,
                rows: self.rows as u32,
                cols: self.cols as u32,
                n: n as u32,
                block: self.block,
                y_stride: y_stride as u32,
                codes_off: self.codes_off,
                starts_off: self.starts_off,
                exc_off: self.exc_off,
            },
            matmul_grid(self.rows, n),
        )
    }
}
