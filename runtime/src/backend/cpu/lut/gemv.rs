//! `y = W·x` for a [`LutMatrix`] by table lookup (decode GEMV).
//!
//! Per row `r` and group `g` (with `n = g/4` k-steps, `b` planes):
//!
//! ```text
//! acc_p  = Σ_{steps s of g} q_s[nibble(r, p, s)]            (integer, exact)
//! total  = Σ_p acc_p · 2^p                                  (integer, exact)
//! y[r]  += s_rg · (total · ts_g/2 + ((2^b − 1)/2 − z_rg) · Σ_{k∈g} x_k)
//! ```
//! which equals `Σ_k s·(u − z)·x_k` up to the table quantization. The float epilogue is
//! evaluated in exactly this order (no FMA) by the scalar reference and the SIMD kernel,
//! so their results are bit-identical.

use std::ops::Range;

use super::table::{LutTables, TABLE_BIAS};
use crate::backend::cpu::pool::Pool;
use crate::error::{Error, Result};
use crate::lut::layout::{LutMatrix, CHUNK_ROWS};

/// Which GEMV kernel [`gemv_tables`] uses (decided once).
pub fn simd_level() -> &'static str {
    if has_avx512() {
        "avx512"
    } else if has_avx2() {
        "avx2"
    } else if has_neon() {
        "neon"
    } else if has_simd128() {
        "simd128"
    } else {
        "scalar"
    }
}

/// AVX2 + F16C (with FMA), unless `SUANPAN_FORCE_SCALAR` (see
/// [`crate::backend::cpu::features`]).
pub(crate) fn has_avx2() -> bool {
    crate::backend::cpu::features::cpu().avx2
}

/// AVX-512 BW (with AVX2 and F16C) for the lookup kernels, unless `SUANPAN_FORCE_SCALAR` or
/// `SUANPAN_NO_AVX512` is set (the latter lets a benchmark compare it with AVX2).
pub(crate) fn has_avx512() -> bool {
    crate::backend::cpu::features::cpu().avx512bw
}

/// NEON is baseline on aarch64: used unless `SUANPAN_FORCE_SCALAR` is set.
pub(crate) fn has_neon() -> bool {
    crate::backend::cpu::features::cpu().neon
}

/// WebAssembly SIMD128 (a build-time feature there), unless `SUANPAN_FORCE_SCALAR`.
pub(crate) fn has_simd128() -> bool {
    crate::backend::cpu::features::cpu().simd128
}

/// The per-group float epilogue, shared by every kernel (the SIMD one mirrors it lane-wise).
#[inline(always)]
pub(crate) fn epilogue(
    total: i32,
    half_scale: f32,
    sum: f32,
    s: f32,
    z: f32,
    half_range: f32,
) -> f32 {
    let c = half_range - z;
    s * (total as f32 * half_scale + c * sum)
}

/// Rows `chunks` (in 32-row chunks) cover: `32·start .. min(32·end, rows)`.
pub fn chunk_rows(m: &LutMatrix, chunks: &Range<usize>) -> Range<usize> {
    let lo = (chunks.start * CHUNK_ROWS).min(m.rows());
    let hi = (chunks.end * CHUNK_ROWS).min(m.rows());
    lo..hi.max(lo)
}

fn check(m: &LutMatrix, t: &LutTables, chunks: &Range<usize>, y: &[f32]) -> Result<()> {
    if t.group() != m.group() || t.cols() != m.cols() {
        return Err(Error::invalid(format!(
            "LUT GEMV: tables for {} columns in groups of {}, matrix has {} in groups of {}",
            t.cols(),
            t.group(),
            m.cols(),
            m.group()
        )));
    }
    if !t.has_lookup() {
        return Err(Error::invalid(
            "LUT GEMV: tables hold int8 activations (built for the tiled GEMM), not lookups",
        ));
    }
    if chunks.start > chunks.end || chunks.end > m.chunks() {
        return Err(Error::invalid(format!(
            "LUT GEMV: chunks {chunks:?} outside 0..{}",
            m.chunks()
        )));
    }
    let rows = chunk_rows(m, chunks);
    if y.len() != rows.len() {
        return Err(Error::invalid(format!(
            "LUT GEMV: output has {} elements for rows {rows:?}",
            y.len(),
        )));
    }
    Ok(())
}

/// `y = W·x`: builds the tables and runs the best kernel.
pub fn gemv(m: &LutMatrix, x: &[f32], y: &mut [f32]) -> Result<()> {
    if x.len() != m.cols() {
        return Err(Error::invalid(format!(
            "LUT GEMV: {} activations for {} columns",
            x.len(),
            m.cols()
        )));
    }
    let t = LutTables::build(x, m.group())?;
    gemv_tables(m, &t, y)
}

/// `y = W·x` from prebuilt tables with the best kernel.
pub fn gemv_tables(m: &LutMatrix, t: &LutTables, y: &mut [f32]) -> Result<()> {
    gemv_chunks(m, t, 0..m.chunks(), y)
}

/// Rows of the 32-row `chunks` only (`y` holds exactly [`chunk_rows`]): the unit a thread
/// pool splits a GEMV into.
pub fn gemv_chunks(
    m: &LutMatrix,
    t: &LutTables,
    chunks: Range<usize>,
    y: &mut [f32],
) -> Result<()> {
    check(m, t, &chunks, y)?;
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F/BW, AVX2 and F16C were detected at run time; `check` validated
        // the chunk range and output length, and the kernel asserts the lengths it uses.
        unsafe { super::x86_512::gemv_avx512(m, t, chunks, y) };
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and F16C were detected at run time; `check` validated the chunk
        // range and output length, and the kernel asserts the buffer lengths it relies on.
        unsafe { super::x86::gemv_avx2(m, t, chunks, y) };
        return Ok(());
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON is baseline on aarch64; `check` validated the chunk range and
        // output length, and the kernel asserts the buffer lengths it relies on.
        unsafe { super::neon::gemv_neon(m, t, chunks, y) };
        return Ok(());
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if has_simd128() {
        // `check` validated the chunk range and output length.
        super::wasm::gemv_simd128(m, t, chunks, y);
        return Ok(());
    }
    gemv_portable_chunks(m, t, chunks, y)
}

/// Chunk `c` of `W·x_0` and `W·x_1` in one pass over its weights (prefill), when this CPU
/// has a two-token kernel (AVX-512 BW): fills `out` (32 rows per token, the padding rows
/// of a last chunk included) and returns `true`, bit-identical to two [`gemv_chunks`].
/// Returns `false`, touching nothing, when there is no such kernel or a shape does not
/// match; the caller then runs [`gemv_chunks`] per token.
pub fn gemv_pair(
    m: &LutMatrix,
    t: [&LutTables; 2],
    c: usize,
    out: &mut [[f32; CHUNK_ROWS]; 2],
) -> bool {
    let fits = c < m.chunks()
        && t.iter()
            .all(|t| t.group() == m.group() && t.cols() == m.cols() && t.has_lookup());
    #[cfg(target_arch = "x86_64")]
    if fits && has_avx512() {
        // SAFETY: AVX-512F/BW, AVX2 and F16C were detected at run time; the chunk index and
        // the tables' shapes were checked above, and the kernel asserts the buffer lengths.
        unsafe { super::x86_512::gemv2_avx512(m, t, c, out) };
        return true;
    }
    let _ = (fits, out);
    false
}

/// Row within a chunk of the low nibble of byte `b` of a 16-byte lane (high nibble: +16).
const ROW_OF_BYTE: [usize; 16] = [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15];

/// Portable kernel (no SIMD; the fallback when no SIMD kernel applies): streams the planes in layout
/// order like the AVX2 kernel, with the same integer sums and float epilogue.
pub fn gemv_portable_chunks(
    m: &LutMatrix,
    t: &LutTables,
    chunks: Range<usize>,
    y: &mut [f32],
) -> Result<()> {
    check(m, t, &chunks, y)?;
    let (bits, group, groups) = (m.bits(), m.group(), m.groups());
    let steps = group / 4;
    let half_range = ((1u32 << bits) - 1) as f32 * 0.5;
    let bias = TABLE_BIAS * steps as i32 * ((1 << bits) - 1);
    let planes = &m.planes()[chunks.start * m.chunk_bytes()..chunks.end * m.chunk_bytes()];
    let mut blocks = planes.chunks_exact(32);
    for (c, yc) in chunks.clone().zip(y.chunks_mut(CHUNK_ROWS)) {
        let mut yacc = [0f32; CHUNK_ROWS];
        for gi in 0..groups {
            let tabs = &t.entries()[gi * steps * 16..(gi + 1) * steps * 16];
            let mut tot = [0i32; CHUNK_ROWS];
            for p in 0..bits {
                let mut acc = [0i32; CHUNK_ROWS];
                for (block, tab2) in blocks.by_ref().take(steps / 2).zip(tabs.chunks_exact(32)) {
                    for lane in 0..2 {
                        let tab = &tab2[16 * lane..16 * lane + 16];
                        for (b, &byte) in block[16 * lane..16 * lane + 16].iter().enumerate() {
                            let r = ROW_OF_BYTE[b];
                            acc[r] += tab[(byte & 15) as usize] as i32;
                            acc[r + 16] += tab[(byte >> 4) as usize] as i32;
                        }
                    }
                }
                for (t, a) in tot.iter_mut().zip(acc) {
                    *t += a << p;
                }
            }
            let at = (c * groups + gi) * CHUNK_ROWS;
            for (r, ya) in yacc.iter_mut().enumerate() {
                let (s, z) = (m.scales()[at + r].to_f32(), m.zeros()[at + r].to_f32());
                *ya += epilogue(
                    tot[r] - bias,
                    t.half_scales()[gi],
                    t.sums()[gi],
                    s,
                    z,
                    half_range,
                );
            }
        }
        yc.copy_from_slice(&yacc[..yc.len()]);
    }
    Ok(())
}

/// Output pointer shared by the pool's threads; each writes only its own chunks' rows.
struct OutPtr(*mut f32);
// SAFETY: the threads write disjoint row ranges (disjoint chunk ranges from `run_ranges`)
// while the `&mut` output borrow is held by `gemv_pool`.
unsafe impl Sync for OutPtr {}

/// [`gemv_tables`] with the 32-row chunks split over the threads of `pool`; identical
/// results (each row is computed by the same kernel whatever the split).
pub fn gemv_pool(pool: &Pool, m: &LutMatrix, t: &LutTables, y: &mut [f32]) -> Result<()> {
    check(m, t, &(0..m.chunks()), y)?;
    let out = OutPtr(y.as_mut_ptr());
    let out = &out;
    pool.run_ranges(m.chunks(), 1, |_, chunks| {
        let rows = chunk_rows(m, &chunks);
        // SAFETY: `rows` lies inside `0..y.len()` (checked above) and no other thread gets
        // an overlapping chunk range, so this is the only live reference to these elements.
        let part = unsafe { std::slice::from_raw_parts_mut(out.0.add(rows.start), rows.len()) };
        // Cannot fail: the shapes were checked for the whole range above.
        let _ = gemv_chunks(m, t, chunks, part);
    });
    Ok(())
}

/// Scalar reference: the kernel's computation one row at a time, reading the packed
/// layout through `LutMatrix::nibble` (the index formula of the layout picture).
pub fn gemv_ref(m: &LutMatrix, t: &LutTables, y: &mut [f32]) -> Result<()> {
    gemv_ref_chunks(m, t, 0..m.chunks(), y)
}

/// [`gemv_ref`] for the rows of `chunks` only.
pub fn gemv_ref_chunks(
    m: &LutMatrix,
    t: &LutTables,
    chunks: Range<usize>,
    y: &mut [f32],
) -> Result<()> {
    check(m, t, &chunks, y)?;
    let steps = m.group() / 4;
    let half_range = ((1u32 << m.bits()) - 1) as f32 * 0.5;
    for (r, yr) in chunk_rows(m, &chunks).zip(y.iter_mut()) {
        let mut acc = 0f32;
        for gi in 0..m.groups() {
            let mut total = 0i32;
            for p in 0..m.bits() {
                let mut a = 0i32;
                for s in 0..steps {
                    a += t.entry(gi * steps + s, m.nibble(r, gi, p, s));
                }
                total += a << p;
            }
            let (s, z) = m.scale_zero(r, gi);
            acc += epilogue(total, t.half_scales()[gi], t.sums()[gi], s, z, half_range);
        }
        *yr = acc;
    }
    Ok(())
}

/// The ideal result: `y = dequantize(W)·x` in f32 (f64 accumulation), no table error.
pub fn gemv_ideal(m: &LutMatrix, x: &[f32], y: &mut [f32]) -> Result<()> {
    if x.len() != m.cols() || y.len() != m.rows() {
        return Err(Error::invalid(
            "LUT GEMV: activation or output length does not match",
        ));
    }
    let w = m.dequantize();
    for (yr, wr) in y.iter_mut().zip(w.chunks_exact(m.cols())) {
        *yr = wr
            .iter()
            .zip(x)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>() as f32;
    }
    Ok(())
}

/// Worst-case |LUT − ideal| per row from table quantization alone: each of the
/// `n = g/4` lookups per plane is off by at most `ts/2`, planes weigh `2^p`, and the
/// epilogue multiplies by `|s|/2`: `Σ_g |s_rg| · ts_g/2 · n · (2^b − 1) / 2`.
pub fn table_error_bound(m: &LutMatrix, t: &LutTables, r: usize) -> f32 {
    let n = (m.group() / 4) as f32;
    let levels = ((1u32 << m.bits()) - 1) as f32;
    (0..m.groups())
        .map(|gi| m.scale_zero(r, gi).0.abs() * t.half_scales()[gi] * n * levels * 0.5)
        .sum()
}
