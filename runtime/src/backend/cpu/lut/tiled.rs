//! Tiled int8 GEMM for LUT weights (prefill): `Y = W·X` for a batch of tokens with the
//! weights expanded from bit planes to one byte per code, and int8 activations
//! ([`super::acts8`]) multiplied against them with integer dot products (`vpdpbusd` on
//! AVX-512 VNNI).
//!
//! Per 32-row chunk, a thread expands the chunk's planes once into a tile buffer (32·cols
//! bytes, L2-resident), converts its scales, then runs every token of the batch over it,
//! [`TILE`] tokens at a time, so the expansion is paid once per batch, not per token:
//!
//! ```text
//! codes:  [group gi][k-step s][half h][slot b = 0..16][j = 0..4]   u8, 64 bytes per (s, h)
//!           = code of row SLOT_ROW[16h + b], column gi·g + 4s + j
//! scales: [group gi][slot 0..32]  f32  s          (rows in slot order)
//! szs:    [group gi][slot 0..32]  f32  s·z
//! ```
//!
//! Slot `b` of half `h` is the row whose nibble sits in byte `b` (low nibbles: h = 0, high:
//! h = 1) of the planes' 16-byte lanes ([`super::layout`]), so the expansion needs no
//! shuffle; the rows are put back in order when a tile's results are written.
//!
//! Per row `r`, token `t` and group `g` (`a`, `d`, `zsum` from [`super::acts8::Acts8`]):
//!
//! ```text
//! dot  = Σ_{k∈g} u_rk · a_tk                          (integer, exact: ≤ 15·127·128)
//! y   += ((dot as f32) · d_tg) ×̂ s_rg  then  y −= (s_rg · z_rg) ×̂ zsum_tg
//! ```
//! (`×̂`: fused multiply-add), which is `Σ_k s·(u − z) · d·a_k`, the dequantized weights
//! times the dequantized int8 activations. Every kernel evaluates exactly this, so the
//! SIMD results equal [`gemm_int8_ref`] bit for bit. Against the exact f32 product
//! `dequantize(W)·x` the only error is the activations' rounding:
//! `|y − ideal| ≤ Σ_g |s_rg| · max_k|u_rk − z_rg| · Σ_{k∈g} |x_k − d·a_k|`
//! ([`int8_error_bound`]) plus f32 rounding.

use std::cell::RefCell;

use super::acts8::Acts8;
use crate::error::{Error, Result};
use crate::lut::layout::{LutMatrix, CHUNK_ROWS};

/// Batches of at least this many tokens take the int8 GEMM for 3- and 4-bit matrices (when
/// [`available`]); smaller ones the LUT GEMM. Measured with `examples/lut_gemm_bench.rs`
/// (2048×2048, one thread, the 2-core AMD EPYC VM): at 4 bits int8/LUT broke even near 8–12
/// tokens.
pub const MIN_TOKENS: usize = 16;

/// From this many tokens 1- and 2-bit matrices take the int8 GEMM too: their lookups are
/// half as many, and int8/LUT broke even near 24–32 tokens at 2 bits.
pub const MIN_TOKENS_LOW_BITS: usize = 32;

/// Whether a batch of `n` tokens runs `m` on the int8 GEMM when both forms are built.
pub fn prefers(m: &LutMatrix, n: usize) -> bool {
    n >= if m.bits() >= 3 {
        MIN_TOKENS
    } else {
        MIN_TOKENS_LOW_BITS
    }
}

/// Tokens per register tile of the SIMD kernel.
pub const TILE: usize = 8;

/// Row within a chunk of each slot of the tile buffer (see the module docs).
pub const SLOT_ROW: [usize; CHUNK_ROWS] = {
    let mut s = [0; CHUNK_ROWS];
    let mut i = 0;
    while i < CHUNK_ROWS {
        let b = i % 16;
        s[i] = (i / 16) * 16 + if b % 2 == 0 { b / 2 } else { 8 + b / 2 };
        i += 1;
    }
    s
};

/// Whether this CPU has an int8 GEMM kernel (AVX-512 VNNI), unless `SUANPAN_FORCE_SCALAR`.
pub fn available() -> bool {
    crate::backend::cpu::features::cpu().avx512vnni
}

/// A chunk expanded for the int8 kernels (layout in the module docs).
#[derive(Default)]
pub struct Tile {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub szs: Vec<f32>,
}

impl Tile {
    fn resize(&mut self, m: &LutMatrix) {
        self.codes.resize(CHUNK_ROWS * m.cols(), 0);
        self.scales.resize(CHUNK_ROWS * m.groups(), 0.0);
        self.szs.resize(CHUNK_ROWS * m.groups(), 0.0);
    }
}

/// Expand chunk `c` of `m` into `tile`, reading the layout through its index formula
/// (`LutMatrix::code`): the reference for the SIMD expansion.
pub fn expand_ref(m: &LutMatrix, c: usize, tile: &mut Tile) {
    tile.resize(m);
    let (group, steps) = (m.group(), m.group() / 4);
    for gi in 0..m.groups() {
        for (slot, &rr) in SLOT_ROW.iter().enumerate() {
            let r = c * CHUNK_ROWS + rr;
            let (s, z) = if r < m.rows() {
                m.scale_zero(r, gi)
            } else {
                (0.0, 0.0)
            };
            tile.scales[gi * CHUNK_ROWS + slot] = s;
            tile.szs[gi * CHUNK_ROWS + slot] = s * z;
            let (h, b) = (slot / 16, slot % 16);
            for st in 0..steps {
                for j in 0..4 {
                    let at = ((gi * steps + st) * 2 + h) * 64 + 4 * b + j;
                    tile.codes[at] = if r < m.rows() {
                        m.code(r, gi * group + 4 * st + j)
                    } else {
                        0
                    };
                }
            }
        }
    }
}

/// Expand chunk `c` with the best kernel (bytes equal to [`expand_ref`]).
fn expand(m: &LutMatrix, c: usize, tile: &mut Tile) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        tile.resize(m);
        // SAFETY: AVX-512 F/BW/VNNI and F16C were detected at run time; the tile was sized
        // for `m` just above and the kernel asserts c < chunks and the lengths it uses.
        unsafe { super::x86_vnni::expand(m, c, tile) };
        return;
    }
    expand_ref(m, c, tile)
}

/// One tile of tokens over an expanded chunk, portable: `out[i][slot]` for token `acts[i]`,
/// the arithmetic of the module docs in the kernels' order.
pub fn tile_portable(m: &LutMatrix, tile: &Tile, acts: &[&Acts8], out: &mut [[f32; CHUNK_ROWS]]) {
    let (group, steps) = (m.group(), m.group() / 4);
    for (a, o) in acts.iter().zip(out.iter_mut()) {
        for (slot, y) in o.iter_mut().enumerate() {
            let (h, b) = (slot / 16, slot % 16);
            let mut acc = 0f32;
            for gi in 0..m.groups() {
                let mut dot = 0i32;
                for st in 0..steps {
                    let w = &tile.codes[((gi * steps + st) * 2 + h) * 64 + 4 * b..][..4];
                    let x = &a.codes()[gi * group + 4 * st..][..4];
                    dot += (0..4).map(|j| w[j] as i32 * x[j] as i32).sum::<i32>();
                }
                let f = dot as f32 * a.scales()[gi];
                acc = f.mul_add(tile.scales[gi * CHUNK_ROWS + slot], acc);
                acc = (-tile.szs[gi * CHUNK_ROWS + slot]).mul_add(a.zsums()[gi], acc);
            }
            *y = acc;
        }
    }
}

/// One tile of tokens (at most [`TILE`]) with the best kernel (bits equal to
/// [`tile_portable`]).
fn tile_run(m: &LutMatrix, tile: &Tile, acts: &[&Acts8], out: &mut [[f32; CHUNK_ROWS]]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512 F/BW/VNNI were detected at run time; the kernel asserts the
        // lengths of the tile and activations it reads.
        unsafe { super::x86_vnni::tile(m, tile, acts, out) };
        return;
    }
    tile_portable(m, tile, acts, out)
}

thread_local! {
    /// Each pool thread's tile buffer (32·cols bytes), reused across calls.
    static TILE_BUF: RefCell<Tile> = RefCell::default();
}

/// Chunk `c` of `m` for every token of `acts` (already checked against `m`'s shape): calls
/// `emit(t, rows)` with the chunk's 32 rows of `W·x_t` in row order (padding rows of a
/// last chunk included).
pub(crate) fn chunk(
    m: &LutMatrix,
    c: usize,
    acts: &[&Acts8],
    mut emit: impl FnMut(usize, &[f32; CHUNK_ROWS]),
) {
    TILE_BUF.with(|buf| {
        let tile = &mut *buf.borrow_mut();
        expand(m, c, tile);
        let mut out = [[0f32; CHUNK_ROWS]; TILE];
        for (ti, toks) in acts.chunks(TILE).enumerate() {
            tile_run(m, tile, toks, &mut out[..toks.len()]);
            for (i, o) in out[..toks.len()].iter().enumerate() {
                let mut rows = [0f32; CHUNK_ROWS];
                for (slot, &v) in o.iter().enumerate() {
                    rows[SLOT_ROW[slot]] = v;
                }
                emit(ti * TILE + i, &rows);
            }
        }
    });
}

/// Check that every token's int8 activations fit `m`.
pub(crate) fn check(m: &LutMatrix, acts: &[&Acts8]) -> Result<()> {
    for a in acts {
        if a.cols() != m.cols() || a.group() != m.group() {
            return Err(Error::invalid(format!(
                "LUT int8 GEMM: activations of {} in groups of {}, matrix {}×{} in groups of {}",
                a.cols(),
                a.group(),
                m.rows(),
                m.cols(),
                m.group()
            )));
        }
    }
    Ok(())
}

/// Scalar reference: `out[t·rows + r]` for every token, row by row through the layout's
/// index formula, with the arithmetic of the module docs.
pub fn gemm_int8_ref(m: &LutMatrix, acts: &[&Acts8], out: &mut [f32]) -> Result<()> {
    check(m, acts)?;
    if out.len() != acts.len() * m.rows() {
        return Err(Error::invalid("LUT int8 GEMM: output length"));
    }
    let g = m.group();
    for (a, o) in acts.iter().zip(out.chunks_exact_mut(m.rows())) {
        for (r, y) in o.iter_mut().enumerate() {
            let mut acc = 0f32;
            for gi in 0..m.groups() {
                let dot: i32 = (gi * g..(gi + 1) * g)
                    .map(|k| m.code(r, k) as i32 * a.codes()[k] as i32)
                    .sum();
                let (s, z) = m.scale_zero(r, gi);
                let f = dot as f32 * a.scales()[gi];
                acc = f.mul_add(s, acc);
                acc = (-(s * z)).mul_add(a.zsums()[gi], acc);
            }
            *y = acc;
        }
    }
    Ok(())
}

/// Worst case |int8 GEMM − `dequantize(W)·x`| for row `r` from the activations' rounding
/// alone: `Σ_g |s| · max_k |u_rk − z| · Σ_{k∈g} |x_k − d·a_k|`.
pub fn int8_error_bound(m: &LutMatrix, x: &[f32], a: &Acts8, r: usize) -> f32 {
    let g = m.group();
    (0..m.groups())
        .map(|gi| {
            let (s, z) = m.scale_zero(r, gi);
            let d = a.scales()[gi];
            let du = (gi * g..(gi + 1) * g)
                .map(|k| (m.code(r, k) as f32 - z).abs())
                .fold(0f32, f32::max);
            let dx: f32 = (gi * g..(gi + 1) * g)
                .map(|k| (x[k] - d * a.codes()[k] as f32).abs())
                .sum();
            s.abs() * du * dx
        })
        .sum()
}

#[cfg(test)]
#[path = "tiled_tests.rs"]
mod tests;
