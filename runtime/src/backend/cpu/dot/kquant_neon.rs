//! NEON kernels (aarch64) of the block types of Gemma 3's Q4_K_M mix: Q4_K and Q6_K against
//! Q8_K activations, Q5_0 against Q8_0. Like the AVX2 ones (`kquant_x86.rs`) they compute
//! the reference's integers exactly (widening `smull` products, pairwise adds into i32) and
//! then its float expression per block, so they equal their references in
//! [`super::blocks_ref`] bit for bit (tested under qemu by
//! `blocks_ref::tests::dispatched_dots_equal_reference_bitwise`).

use std::arch::aarch64::*;

use super::Acts;
use crate::quant::f16_at;
use crate::quant::ggml::Q8kRow;
use crate::quant::kquant::scale_min_k4;

/// Σ x·y over 16 signed bytes, exact.
#[inline(always)]
fn dot16(x: int8x16_t, y: int8x16_t) -> i32 {
    // SAFETY: NEON is baseline on aarch64; register-only operations.
    unsafe {
        let lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
        let hi = vmull_high_s8(x, y);
        vaddvq_s32(vpadalq_s16(vpaddlq_s16(lo), hi))
    }
}

/// 16 activation codes at `at` of `q8` (bounds-checked).
#[inline(always)]
fn load16(q8: &[u8], at: usize) -> int8x16_t {
    let s = &q8[at..at + 16];
    // SAFETY: `s` holds 16 readable bytes.
    unsafe { vld1q_s8(s.as_ptr() as *const i8) }
}

/// Q4_K weights (144-byte super-blocks) against a Q8_K activation row.
pub fn dot_q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let nk = w.len() / 144;
    let Some(row) = Q8kRow::new(a, nk) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, b) in w.chunks_exact(144).enumerate() {
        let q8 = row.codes(i);
        let (mut isum, mut imin) = (0i32, 0i32);
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, &b[4..16]);
            if m != 0 {
                imin += m as i32 * (row.bsum(i, 2 * j) + row.bsum(i, 2 * j + 1));
            }
            // Sub-block j: nibbles (low for even j, high for odd) of qs[32(j/2)..][..32].
            let src = &b[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            let mut s_j = 0i32;
            for half in 0..2 {
                let bytes = &src[16 * half..16 * half + 16];
                // SAFETY: `bytes` holds 16 readable bytes; NEON is baseline.
                let codes = unsafe {
                    let v = vld1q_u8(bytes.as_ptr());
                    let c = if j % 2 == 0 {
                        vandq_u8(v, vdupq_n_u8(15))
                    } else {
                        vshrq_n_u8::<4>(v)
                    };
                    vreinterpretq_s8_u8(c)
                };
                s_j += dot16(codes, load16(q8, 32 * j + 16 * half));
            }
            isum += s as i32 * s_j;
        }
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let da = row.d(i);
        acc += d * da * isum as f32 - dmin * da * imin as f32;
    }
    acc
}

/// Q6_K weights (210-byte super-blocks) against a Q8_K activation row.
pub fn dot_q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let nk = w.len() / 210;
    let Some(row) = Q8kRow::new(a, nk) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, b) in w.chunks_exact(210).enumerate() {
        let q8 = row.codes(i);
        let sc = &b[192..208];
        let mut isum = 0i32;
        for h in 0..2 {
            for l0 in [0usize, 16] {
                // 16 columns l0..l0+16 of this half feed weights 128h + {0,32,64,96} + l.
                let (ql0, ql1, qh) = (
                    &b[64 * h + l0..64 * h + l0 + 16],
                    &b[64 * h + 32 + l0..64 * h + 32 + l0 + 16],
                    &b[128 + 32 * h + l0..128 + 32 * h + l0 + 16],
                );
                // SAFETY: each slice holds 16 readable bytes; NEON is baseline.
                let codes = unsafe {
                    let (v0, v1, vh) = (
                        vld1q_u8(ql0.as_ptr()),
                        vld1q_u8(ql1.as_ptr()),
                        vld1q_u8(qh.as_ptr()),
                    );
                    let (m4, m3) = (vdupq_n_u8(15), vdupq_n_u8(3));
                    let six = |low: uint8x16_t, high: uint8x16_t| {
                        vsubq_s8(
                            vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8::<4>(vandq_u8(high, m3)))),
                            vdupq_n_s8(32),
                        )
                    };
                    [
                        six(vandq_u8(v0, m4), vh),
                        six(vandq_u8(v1, m4), vshrq_n_u8::<2>(vh)),
                        six(vshrq_n_u8::<4>(v0), vshrq_n_u8::<4>(vh)),
                        six(vshrq_n_u8::<4>(v1), vshrq_n_u8::<6>(vh)),
                    ]
                };
                for (k, c) in codes.into_iter().enumerate() {
                    let at = 128 * h + 32 * k + l0;
                    isum += sc[at / 16] as i8 as i32 * dot16(c, load16(q8, at));
                }
            }
        }
        let d = f16_at(b, 208);
        let da = row.d(i);
        let (dmin, imin) = (0f32, 0i32);
        acc += d * da * isum as f32 - dmin * da * imin as f32;
    }
    acc
}

/// Q5_0 weights (22-byte blocks of 32) against a Q8_0 activation row (the layout of
/// [`crate::quant::ggml`]: 32 codes per block, then one f32 scale per block).
pub fn dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / 22;
    let Some(acts) = Acts::new(a, nb, false) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(22).enumerate() {
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let mut high = [0u8; 32];
        for (j, h) in high.iter_mut().enumerate() {
            *h = (((qh >> j) & 1) as u8) << 4;
        }
        // SAFETY: bytes 6..22 of the block are its 16 nibble bytes, `high` holds 32 bytes;
        // NEON is baseline.
        let (lo, hi) = unsafe {
            let q = vld1q_u8(wb[6..22].as_ptr());
            let m16 = vdupq_n_s8(16);
            let lo = vorrq_u8(vandq_u8(q, vdupq_n_u8(15)), vld1q_u8(high.as_ptr()));
            let hi = vorrq_u8(vshrq_n_u8::<4>(q), vld1q_u8(high[16..].as_ptr()));
            (
                vsubq_s8(vreinterpretq_s8_u8(lo), m16),
                vsubq_s8(vreinterpretq_s8_u8(hi), m16),
            )
        };
        let q8 = acts.block(i);
        let s = dot16(lo, load16(q8, 0)) + dot16(hi, load16(q8, 16));
        let d = f16_at(wb, 0);
        let da = acts.d(i);
        acc += d * da * s as f32;
    }
    acc
}
