//! DFloat11 tensors on the GPU: compressed in device memory, decoded to BF16 by
//! `shaders/df11.wgsl` into a scratch buffer just before use.
//!
//! At upload the file's chunk index (one entry per 4 KiB of bitstream) is refined into
//! units of `unit_bytes` (default 64): a walk over the code lengths on the CPU records the
//! first element and absolute start bit of the first code in every unit, so the GPU decodes
//! with thousands of independent invocations. The walk also checks every code, so a
//! corrupt bitstream is refused at upload ([`Error::BadModel`]).
//!
//! ```text
//! index  [unit k]: (first element, absolute start bit) u32 pairs, then (n, end bit)
//! ```

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::kernels::{Df11Decode, Df11Zero};
use super::ops::{grid, WG};
use super::record::Recorder;
use crate::backend::cpu::dfloat::Df11Decoder;
use crate::dfloat::Df11View;
use crate::error::{Error, Result};

/// Default refined unit size in bytes of bitstream.
pub const UNIT_BYTES: usize = 64;

/// A DFloat11 tensor in device memory.
#[derive(Debug)]
pub struct GpuDf11 {
    bitstream: GpuBuffer,
    sign_mantissa: GpuBuffer,
    tables: GpuBuffer,
    index: GpuBuffer,
    units: usize,
    /// Number of BF16 values.
    pub n: usize,
}

/// The refined start index of `t` for units of `unit_bytes`: flat (element, bit) pairs
/// ending with (n, end bit). Errors on any invalid code.
pub fn refine_index(t: &Df11View<'_>, dec: &Df11Decoder, unit_bytes: usize) -> Result<Vec<u32>> {
    let bs = t.bitstream;
    let total_bits = bs.len() as u64 * 8;
    if total_bits >= u32::MAX as u64 || t.n >= u32::MAX as usize {
        return Err(Error::Backend(format!(
            "DFloat11 tensor of {} values / {} bitstream bytes is too large for one GPU decode; split it",
            t.n,
            bs.len()
        )));
    }
    let tables = dec.symbol_tables();
    let unit_bits = 8 * unit_bytes.max(4) as u64;
    let peek = |pos: u64| -> u32 {
        let b0 = (pos / 8) as usize;
        let mut w = 0u64;
        for i in 0..5 {
            w = w << 8 | *bs.get(b0 + i).unwrap_or(&0) as u64;
        }
        ((w << (pos % 8)) >> 8) as u32
    };
    let mut idx = Vec::with_capacity(2 * (total_bits / unit_bits) as usize + 4);
    let mut pos = 0u64;
    let mut next_at = 0u64;
    for i in 0..t.n {
        if pos >= next_at {
            idx.push(i as u32);
            idx.push(pos as u32);
            next_at = (pos / unit_bits + 1) * unit_bits;
        }
        let b = peek(pos);
        let mut block = 0usize;
        let mut len = 0u32;
        for level in 0..4 {
            let e = tables[block * 256 + ((b << (8 * level)) >> 24) as usize];
            if e & (1 << 31) != 0 {
                block = (e & !(1 << 31)) as usize;
                continue;
            }
            len = (e >> 8) & 63;
            break;
        }
        if len == 0 {
            return Err(Error::bad_model(format!(
                "DFloat11: bit pattern at bit {pos} is not a code"
            )));
        }
        pos += len as u64;
        if pos > total_bits {
            return Err(Error::bad_model("DFloat11: bitstream truncated"));
        }
    }
    if pos + 8 <= total_bits && t.n > 0 {
        return Err(Error::bad_model(format!(
            "DFloat11: codes end at bit {pos} of {total_bits}"
        )));
    }
    idx.push(t.n as u32);
    idx.push(pos as u32);
    Ok(idx)
}

impl GpuDf11 {
    /// Validate `t`, refine its index and upload it.
    pub fn upload(dev: &GpuDevice, t: &Df11View<'_>, unit_bytes: usize) -> Result<GpuDf11> {
        t.validate()?;
        let dec = Df11Decoder::new(t.lengths)?;
        let idx = refine_index(t, &dec, unit_bytes)?;
        Ok(GpuDf11 {
            bitstream: dev.upload("df11 bitstream", t.bitstream)?,
            sign_mantissa: dev.upload("df11 sign|mantissa", t.sign_mantissa)?,
            tables: dev.upload("df11 tables", bytemuck::cast_slice(dec.symbol_tables()))?,
            index: dev.upload("df11 index", bytemuck::cast_slice(&idx))?,
            units: idx.len() / 2 - 1,
            n: t.n,
        })
    }

    /// Independent decode units.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Device bytes of the compressed form.
    pub fn bytes(&self) -> u64 {
        self.bitstream.bytes()
            + self.sign_mantissa.bytes()
            + self.tables.bytes()
            + self.index.bytes()
    }

    /// Decode into `out` (BF16, two per word; at least `2·n` bytes).
    pub fn decode(&self, r: &mut Recorder, out: &GpuBuffer) -> Result<()> {
        let words = self.n.div_ceil(2);
        if (out.bytes() as usize) < 4 * words {
            return Err(Error::invalid("GPU DFloat11 decode: output too small"));
        }
        r.run(
            &Df11Zero {
                out,
                words: words as u32,
            },
            grid(words.div_ceil(WG)),
        )?;
        r.run(
            &Df11Decode {
                bitstream: &self.bitstream,
                sign_mantissa: &self.sign_mantissa,
                tables: &self.tables,
                index: &self.index,
                out,
                units: self.units as u32,
            },
            grid(self.units.div_ceil(WG)),
        )
    }
}
