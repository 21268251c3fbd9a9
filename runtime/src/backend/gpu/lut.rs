//! LUT (T-MAC) matrices on the GPU: the upload permutation and the two dispatches
//! (`shaders/lut.wgsl`).
//!
//! ```text
//! planes  [group gi][plane p][word w < group/32][row r]  u32
//!         nibble j of a word = bits of plane p for columns gi·group + 32w + 4j .. +4
//!         (bit i of the nibble = column + i: the CPU's nibble, so the same table index)
//! params  at word `param_off`: [group gi][row r] = scale f16 | zero f16 << 16
//! ```
//! The same bits as the CPU [`LutMatrix`], permuted so that consecutive rows (invocations)
//! read consecutive words.

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::kernels::{LutGemv, LutTables};
use super::ops::grid;
use super::record::Recorder;
use crate::error::{Error, Result};
use crate::lut::LutMatrix;

/// A LUT matrix uploaded in the GPU layout.
#[derive(Debug)]
pub struct GpuLut {
    pub(crate) buf: GpuBuffer,
    pub bits: usize,
    pub group: usize,
    pub rows: usize,
    pub cols: usize,
    param_off: u32,
}

/// The GPU layout of `m` as words (see the module docs).
pub fn permute(m: &LutMatrix) -> Vec<u32> {
    let (rows, bits, group, groups) = (m.rows(), m.bits(), m.group(), m.groups());
    let wpg = group / 32;
    let plane_words = groups * bits * wpg * rows;
    let mut out = vec![0u32; plane_words + groups * rows];
    for gi in 0..groups {
        for p in 0..bits {
            for w in 0..wpg {
                let base = ((gi * bits + p) * wpg + w) * rows;
                for (r, o) in out[base..base + rows].iter_mut().enumerate() {
                    let mut word = 0u32;
                    for j in 0..8 {
                        word |= (m.nibble(r, gi, p, 8 * w + j) as u32) << (4 * j);
                    }
                    *o = word;
                }
            }
        }
        for r in 0..rows {
            let i = m.param_index(r, gi);
            out[plane_words + gi * rows + r] =
                m.scales()[i].to_bits() as u32 | (m.zeros()[i].to_bits() as u32) << 16;
        }
    }
    out
}

impl GpuLut {
    /// Device bytes of `m` in the GPU layout.
    pub fn device_bytes(m: &LutMatrix) -> u64 {
        4 * (m.groups() * m.rows()) as u64 * (m.bits() * m.group() / 32 + 1) as u64
    }

    /// Upload `m` (permuted into the GPU layout). A matrix larger than one storage binding
    /// of the adapter is refused ([`Error::Backend`]) before anything is allocated.
    pub fn upload(dev: &GpuDevice, name: &str, m: &LutMatrix) -> Result<GpuLut> {
        dev.check_binding(name, Self::device_bytes(m))?;
        let plane_words = m.groups() * m.bits() * m.group() / 32 * m.rows();
        if plane_words > u32::MAX as usize {
            return Err(Error::Backend(format!(
                "{name}: LUT matrix of {plane_words} words is too large for 32-bit indexing"
            )));
        }
        let words = permute(m);
        let param_off = plane_words as u32;
        let buf = dev.upload(name, bytemuck::cast_slice(&words))?;
        Ok(GpuLut {
            buf,
            bits: m.bits(),
            group: m.group(),
            rows: m.rows(),
            cols: m.cols(),
            param_off,
        })
    }

    /// Device bytes.
    pub fn bytes(&self) -> u64 {
        self.buf.bytes()
    }
}

/// Scratch for the tables of `n` tokens of `cols` activations in groups of `group`.
pub struct LutScratch {
    pub tables: GpuBuffer,
    pub half_scales: GpuBuffer,
    pub sums: GpuBuffer,
    cap: usize,
}

impl LutScratch {
    /// Room for `n` tokens of up to `cols` columns (groups ≥ 32).
    pub fn new(dev: &GpuDevice, cols: usize, n: usize) -> Result<LutScratch> {
        Ok(LutScratch {
            tables: dev.buffer("lut tables", (4 * cols * n) as u64)?,
            half_scales: dev.buffer("lut scales", (4 * (cols / 32) * n) as u64)?,
            sums: dev.buffer("lut sums", (4 * (cols / 32) * n) as u64)?,
            cap: cols * n,
        })
    }
}

/// Build the quantized tables of `n` activation rows of `cols` for groups of `group`.
pub fn lut_tables(
    r: &mut Recorder,
    x: &GpuBuffer,
    s: &LutScratch,
    cols: usize,
    group: usize,
    n: usize,
) -> Result<()> {
    if !crate::lut::layout::GROUPS.contains(&group)
        || !cols.is_multiple_of(group)
        || cols * n > s.cap
    {
        return Err(Error::invalid(format!(
            "GPU LUT tables: {n}×{cols} in groups of {group}"
        )));
    }
    if (x.bytes() as usize) < 4 * cols * n {
        return Err(Error::invalid("GPU LUT tables: activations too small"));
    }
    r.run(
        &LutTables {
            x,
            tables: &s.tables,
            half_scales: &s.half_scales,
            sums: &s.sums,
            cols: cols as u32,
            group: group as u32,
            n: n as u32,
        },
        grid(cols / group * n),
    )
}

/// `y[t] = W · x[t]` from tables built by [`lut_tables`] for `n` tokens; `y_stride`
/// between tokens' output rows.
pub fn lut_gemv(
    r: &mut Recorder,
    w: &GpuLut,
    s: &LutScratch,
    y: &GpuBuffer,
    n: usize,
    y_stride: usize,
) -> Result<()> {
    if w.cols * n > s.cap || y_stride < w.rows || n == 0 {
        return Err(Error::invalid("GPU LUT GEMV: scratch or output stride"));
    }
    if (y.bytes() as usize) < 4 * ((n - 1) * y_stride + w.rows) {
        return Err(Error::invalid("GPU LUT GEMV: output too small"));
    }
    let g = grid(w.rows.div_ceil(64));
    r.run(
        &LutGemv {
            tables: &s.tables,
            half_scales: &s.half_scales,
            sums: &s.sums,
            w: &w.buf,
            y,
            rows: w.rows as u32,
            cols: w.cols as u32,
            group: w.group as u32,
            n: n as u32,
            param_off: w.param_off,
            y_stride: y_stride as u32,
            bits: w.bits as u32,
        },
        [g[0], n as u32, g[2]],
    )
}
