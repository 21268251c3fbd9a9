//! WebAssembly SIMD128 lookup-accumulate GEMV over the layout of [`super::layout`] (the
//! browser build's CPU kernel).
//!
//! The same scheme as the NEON kernel ([`super::gemv`] documents the sums): each 16-byte
//! lane of the layout is one k-step's nibbles for the 32 rows of a chunk, and the k-step's
//! 16 biased table entries are one `v128`, so one `i8x16.swizzle` per nibble half does 16
//! lookups (indices are < 16, where swizzle and NEON's `tbl` agree):
//!
//! ```text
//! w   = 16 plane bytes of k-step s   (byte b: lo nibble → row ROW(b), hi nibble → ROW(b)+16,
//!                                      ROW = 0,8,1,9,…,7,15)
//! vl  = swizzle(T_s, w & 15)         vh = swizzle(T_s, w >> 4)    (biased u8 entries)
//! as 8 u16 words:  word t = odd·256 + even = row (8+t)·256 + row t
//! wl += vl (wrapping)   ol += vl >> 8   → rows 8..15 exact in ol,
//!                                         rows 0..7 = wl − ol·256 (mod 2^16)
//! ```
//!
//! Bounds: one accumulator takes the `g/4 ≤ 32` k-steps of a group and plane, each ≤ 255,
//! so every row sum is ≤ 8160 < 2^16 and the wrapped difference is exact. The per-plane
//! sums are widened to i32, weighted by `2^p`, unbiased, and go through the float epilogue
//! of [`super::gemv::gemv_ref`] in the same order (SIMD128 has no fused multiply-add): the
//! results are bit-identical to the scalar reference. SIMD128 has no f16 conversion, so
//! the 32 scales and zeros of a group are widened by `half` (exact) first.
//!
//! SIMD128 is a compile-time feature (`-C target-feature=+simd128`): a module built with
//! it does not load in an engine without it, so there is no run-time detection to do.

use std::arch::wasm32::*;
use std::ops::Range;

use super::gemv::chunk_rows;
use super::table::{LutTables, TABLE_BIAS};
use crate::lut::layout::{LutMatrix, CHUNK_ROWS};

/// `y = W·x` for the rows of `chunks`, bit-identical to [`super::gemv::gemv_ref_chunks`].
///
/// Shapes are asserted (the caller has checked them); a safe function: every vector load
/// reads a bounds-checked slice of at least its width.
pub fn gemv_simd128(m: &LutMatrix, t: &LutTables, chunks: Range<usize>, y: &mut [f32]) {
    let (bits, group, groups) = (m.bits(), m.group(), m.groups());
    let steps = group / 4;
    let planes = m.planes();
    let entries = t.entries();
    let (scales, zeros) = (m.scales(), m.zeros());
    assert!(
        planes.len() >= m.chunks() * m.chunk_bytes()
            && m.chunk_bytes() == groups * bits * steps * 16
            && scales.len() >= m.chunks() * groups * CHUNK_ROWS
            && zeros.len() >= m.chunks() * groups * CHUNK_ROWS
            && entries.len() >= groups * steps * 16
            && t.half_scales().len() >= groups
            && t.sums().len() >= groups
            && chunks.start <= chunks.end
            && chunks.end <= m.chunks()
            && y.len() == chunk_rows(m, &chunks).len()
    );
    let nib = u8x16_splat(15);
    let zero = u16x8_splat(0);
    let half_range = f32x4_splat(((1u32 << bits) - 1) as f32 * 0.5);
    // Σ_p 2^p · (bias per lookup) · (lookups per plane and group).
    let bias = i32x4_splat(TABLE_BIAS * steps as i32 * ((1 << bits) - 1));
    let chunk_planes = &planes[chunks.start * m.chunk_bytes()..chunks.end * m.chunk_bytes()];
    let mut lanes = chunk_planes.chunks_exact(16);
    for c in chunks.clone() {
        let mut yacc = [f32x4_splat(0.0); 8];
        for gi in 0..groups {
            // Row sums of all planes, rows 4j..4j+4 in tot[j].
            let mut tot = [i32x4_splat(0); 8];
            let tabs = &entries[gi * steps * 16..(gi + 1) * steps * 16];
            for p in 0..bits {
                let (mut wl, mut ol, mut wh, mut oh) = (zero, zero, zero, zero);
                for (lane, tab) in lanes.by_ref().take(steps).zip(tabs.chunks_exact(16)) {
                    let (w, tab) = (load16(lane), load16(tab));
                    let vl = u8x16_swizzle(tab, v128_and(w, nib));
                    let vh = u8x16_swizzle(tab, u8x16_shr(w, 4));
                    wl = i16x8_add(wl, vl);
                    ol = i16x8_add(ol, u16x8_shr(vl, 8));
                    wh = i16x8_add(wh, vh);
                    oh = i16x8_add(oh, u16x8_shr(vh, 8));
                }
                // Rows 0..7, 8..15, 16..23, 24..31; even sums < 2^16, so exact.
                let acc = [
                    i16x8_sub(wl, i16x8_shl(ol, 8)),
                    ol,
                    i16x8_sub(wh, i16x8_shl(oh, 8)),
                    oh,
                ];
                for (j, a) in acc.iter().enumerate() {
                    let lo = i32x4_shl(u32x4_extend_low_u16x8(*a), p as u32);
                    let hi = i32x4_shl(u32x4_extend_high_u16x8(*a), p as u32);
                    tot[2 * j] = i32x4_add(tot[2 * j], lo);
                    tot[2 * j + 1] = i32x4_add(tot[2 * j + 1], hi);
                }
            }
            let hs = f32x4_splat(t.half_scales()[gi]);
            let sx = f32x4_splat(t.sums()[gi]);
            let at = (c * groups + gi) * CHUNK_ROWS;
            let (mut s32, mut z32) = ([0f32; CHUNK_ROWS], [0f32; CHUNK_ROWS]);
            for r in 0..CHUNK_ROWS {
                s32[r] = scales[at + r].to_f32();
                z32[r] = zeros[at + r].to_f32();
            }
            for j in 0..8 {
                let s = load4(&s32[4 * j..4 * j + 4]);
                let z = load4(&z32[4 * j..4 * j + 4]);
                // Same operations and order as `gemv::epilogue`, no fused multiply-add.
                let total = f32x4_convert_i32x4(i32x4_sub(tot[j], bias));
                let cz = f32x4_sub(half_range, z);
                let inner = f32x4_add(f32x4_mul(total, hs), f32x4_mul(cz, sx));
                yacc[j] = f32x4_add(yacc[j], f32x4_mul(s, inner));
            }
        }
        let mut out = [0f32; CHUNK_ROWS];
        for (o, v) in out.chunks_exact_mut(4).zip(yacc) {
            // SAFETY: `o` is 4 writable floats; `v128_store` has no alignment requirement.
            unsafe { v128_store(o.as_mut_ptr() as *mut v128, v) };
        }
        let r0 = (c - chunks.start) * CHUNK_ROWS;
        let n = CHUNK_ROWS.min(y.len() - r0);
        y[r0..r0 + n].copy_from_slice(&out[..n]);
    }
}

/// 16 bytes as a vector.
#[inline(always)]
fn load16(b: &[u8]) -> v128 {
    assert!(b.len() >= 16);
    // SAFETY: 16 bytes are readable (asserted); `v128_load` has no alignment requirement.
    unsafe { v128_load(b.as_ptr() as *const v128) }
}

/// 4 floats as a vector.
#[inline(always)]
fn load4(f: &[f32]) -> v128 {
    assert!(f.len() >= 4);
    // SAFETY: 16 bytes are readable (asserted); `v128_load` has no alignment requirement.
    unsafe { v128_load(f.as_ptr() as *const v128) }
}
