//! ggml's K-quants: super-blocks of 256 weights split into sub-blocks of 16 or 32, each
//! with its own small integer scale (and minimum) under one or two f16 super-scales.
//!
//! ```text
//! Q2_K         84 bytes [ scales: 16 (lo nibble scale, hi nibble min) | qs: 64 (2-bit) | d: f16 | dmin: f16 ]
//! Q3_K        110 bytes [ hmask: 32 (bit 2 of each code) | qs: 64 (2 low bits) | scales: 12 (16 × 6-bit) | d: f16 ]
//! Q4_K        144 bytes [ d: f16 | dmin: f16 | scales: 12 (8 × 6-bit scale, 8 × 6-bit min) | qs: 128 (4-bit) ]
//! Q5_K        176 bytes [ d: f16 | dmin: f16 | scales: 12 | qh: 32 (bit 4 of each code) | qs: 128 (4 low bits) ]
//! Q6_K        210 bytes [ ql: 128 (4 low bits) | qh: 64 (2 high bits) | scales: 16 × i8 | d: f16 ]
//! ```
//!
//! Where the bits of one weight live (all formats walk the super-block in halves of 128
//! weights; within a half, a byte column `l` (0..32) feeds weights l, l+32, l+64, l+96 from
//! successive bit positions of the same byte):
//! ```text
//! Q2_K/Q3_K  half h, shift s = 0,2,4,6:  weight 128h + 32(s/2) + l  ←  (qs[32h + l] >> s) & 3
//!            Q3_K's third bit:           hmask[l] bit (4h + s/2), set means +0, clear means −4
//! Q4_K/Q5_K  pair p = 0..4 of 32-weight sub-blocks: weight 64p + l ← qs[32p + l] & 15,
//!            weight 64p + 32 + l ← qs[32p + l] >> 4; Q5_K's bit 4 is qh[l] bit 2p (then 2p+1)
//! Q6_K       half h: weights 128h + l, +32, +64, +96 ← ql[64h + l] & 15, ql[64h + 32 + l] & 15,
//!            ql[64h + l] >> 4, ql[64h + 32 + l] >> 4, with 2 high bits from qh[32h + l] >> 0,2,4,6
//! ```
//! Scales multiply in the order llama.cpp uses (`(d·sc)·q − dmin·m`), so values match its
//! reference dequantizer bit for bit.

use super::f16_at;

/// Elements of one K-quant super-block.
pub const QK_K: usize = 256;

/// The 6-bit (scale, min) of sub-block `j` (0..8) from Q4_K/Q5_K's 12 packed scale bytes.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q3_K's 16 signed 6-bit scales (already minus 32) from its 12 packed bytes.
#[inline]
pub fn q3k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 15 } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = ((low | (high << 4)) as i8).wrapping_sub(32);
    }
    out
}

/// Dequantize one Q2_K super-block (84 bytes) into 256 values.
pub fn dequantize_q2_k(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    for h in 0..2 {
        for s in 0..4 {
            for half in 0..2 {
                let sc = scales[8 * h + 2 * s + half];
                let dl = d * (sc & 15) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let base = 128 * h + 32 * s + 16 * half;
                for l in 0..16 {
                    let q = (qs[32 * h + 16 * half + l] >> (2 * s)) & 3;
                    out[base + l] = dl * q as f32 - ml;
                }
            }
        }
    }
}

/// Dequantize one Q3_K super-block (110 bytes) into 256 values.
pub fn dequantize_q3_k(b: &[u8], out: &mut [f32]) {
    let (hmask, qs) = (&b[..32], &b[32..96]);
    let scales = q3k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    for h in 0..2 {
        for s in 0..4 {
            let bit = 1u8 << (4 * h + s);
            for half in 0..2 {
                let dl = d * scales[8 * h + 2 * s + half] as f32;
                let base = 128 * h + 32 * s + 16 * half;
                for l in 0..16 {
                    let i = 16 * half + l;
                    let low = ((qs[32 * h + i] >> (2 * s)) & 3) as i8;
                    let q = low - if hmask[i] & bit != 0 { 0 } else { 4 };
                    out[base + l] = dl * q as f32;
                }
            }
        }
    }
}

/// Dequantize one Q4_K super-block (144 bytes) into 256 values.
pub fn dequantize_q4_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for p in 0..4 {
        let (s1, m1) = scale_min_k4(2 * p, scales);
        let (s2, m2) = scale_min_k4(2 * p + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            let q = qs[32 * p + l];
            out[64 * p + l] = d1 * (q & 15) as f32 - m1;
            out[64 * p + 32 + l] = d2 * (q >> 4) as f32 - m2;
        }
    }
}

/// Dequantize one Q5_K super-block (176 bytes) into 256 values.
pub fn dequantize_q5_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for p in 0..4 {
        let (s1, m1) = scale_min_k4(2 * p, scales);
        let (s2, m2) = scale_min_k4(2 * p + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * p), 1u8 << (2 * p + 1));
        for l in 0..32 {
            let q = qs[32 * p + l];
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            out[64 * p + l] = d1 * ((q & 15) + h1) as f32 - m1;
            out[64 * p + 32 + l] = d2 * ((q >> 4) + h2) as f32 - m2;
        }
    }
}

/// Dequantize one Q6_K super-block (210 bytes) into 256 values.
pub fn dequantize_q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh) = (&b[..128], &b[128..192]);
    let sc = &b[192..208];
    let d = f16_at(b, 208);
    for h in 0..2 {
        let (ql, qh, sc) = (&ql[64 * h..], &qh[32 * h..], &sc[8 * h..]);
        let o = &mut out[128 * h..128 * h + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            o[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            o[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            o[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            o[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
