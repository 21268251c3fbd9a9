//! WebAssembly SIMD128 block dots (the browser build): Q4_1 · Q8_1 and Q8_0 · Q8_0.
//!
//! Per 32-weight block the integer sum `Σ w_j·q_j` is computed exactly in SIMD (codes
//! widened to i16, `i32x4.dot_i16x8_s` for pairwise products, then a horizontal add), and
//! the float part is the reference's expression in the reference's order, block by block:
//! the results are bit-identical to [`super::dot_q4_1_q8_1_ref`] /
//! [`super::dot_q8_0_q8_0_ref`].
//!
//! ```text
//! Q4_1 block (20 B): d f16 | m f16 | 16 B nibbles (lo: weights 0..16, hi: 16..32)
//! Q8_0 block (34 B): d f16 | 32 × i8
//! activations (Acts): 32 × i8 per block, then d f32 per block (then s f32 for Q8_1)
//! ```

use std::arch::wasm32::*;

use super::{f16_table, h, Acts};
use crate::quant::ggml::{Q8_0_BYTES, QK};

/// 16 bytes as a vector.
#[inline(always)]
fn load16(b: &[u8]) -> v128 {
    assert!(b.len() >= 16);
    // SAFETY: 16 bytes are readable (asserted); `v128_load` has no alignment requirement.
    unsafe { v128_load(b.as_ptr() as *const v128) }
}

/// Σ of 16 products of two i8x16 vectors given as (already widened) i16x8 halves.
#[inline(always)]
fn dot16(a_lo: v128, a_hi: v128, b: v128) -> v128 {
    i32x4_add(
        i32x4_dot_i16x8(a_lo, i16x8_extend_low_i8x16(b)),
        i32x4_dot_i16x8(a_hi, i16x8_extend_high_i8x16(b)),
    )
}

#[inline(always)]
fn hsum(v: v128) -> i32 {
    i32x4_extract_lane::<0>(v)
        + i32x4_extract_lane::<1>(v)
        + i32x4_extract_lane::<2>(v)
        + i32x4_extract_lane::<3>(v)
}

/// Q4_1 weights · Q8_1 activations, bit-identical to the reference (NaN on short input).
pub fn dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let t = f16_table();
    let nb = w.len() / 20;
    let Some(a) = Acts::new(a, nb, true) else {
        return f32::NAN;
    };
    let nib = u8x16_splat(15);
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(20).enumerate() {
        let q = a.block(i);
        let packed = load16(&wb[4..20]);
        let lo = v128_and(packed, nib); // weights 0..16, each 0..15
        let hi = u8x16_shr(packed, 4); // weights 16..32
        let s = i32x4_add(
            dot16(
                u16x8_extend_low_u8x16(lo),
                u16x8_extend_high_u8x16(lo),
                load16(&q[..16]),
            ),
            dot16(
                u16x8_extend_low_u8x16(hi),
                u16x8_extend_high_u8x16(hi),
                load16(&q[16..32]),
            ),
        );
        acc += h(t, wb, 0) * a.d(i) * hsum(s) as f32 + h(t, wb, 2) * a.s(i);
    }
    acc
}

/// Q8_0 weights · Q8_0 activations, bit-identical to the reference (NaN on short input).
pub fn dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let t = f16_table();
    let nb = w.len() / Q8_0_BYTES;
    let Some(a) = Acts::new(a, nb, false) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(Q8_0_BYTES).enumerate() {
        let q = a.block(i);
        let mut s = i32x4_splat(0);
        for half in 0..QK / 16 {
            let wv = load16(&wb[2 + 16 * half..2 + 16 * half + 16]);
            s = i32x4_add(
                s,
                dot16(
                    i16x8_extend_low_i8x16(wv),
                    i16x8_extend_high_i8x16(wv),
                    load16(&q[16 * half..16 * half + 16]),
                ),
            );
        }
        acc += h(t, wb, 0) * a.d(i) * hsum(s) as f32;
    }
    acc
}
