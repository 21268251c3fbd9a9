//! ggml's ternary blocks for BitNet b1.58 weights (codes −1, 0, +1 under one f16 scale).
//!
//! ```text
//! TQ2_0  256 weights, 66 bytes [ qs: 64 | d: f16 ]
//!        weight 128h + 32s + m  ←  ((qs[32h + m] >> 2s) & 3) − 1        (h < 2, s < 4, m < 32)
//! TQ1_0  256 weights, 54 bytes [ qs: 48 | qh: 4 | d: f16 ]
//!        five trits per byte in base 3, stored as ceil(v·256/243) so that trit n of byte q
//!        is ((u8)(q·3ⁿ) · 3) >> 8  (a multiply and a shift, no division):
//!        qs[0..32]  → weights 32n + m        (n < 5, m < 32)       160 weights
//!        qs[32..48] → weights 160 + 16n + m  (n < 5, m < 16)        80 weights
//!        qh[0..4]   → weights 240 + 4n + j   (n < 4, j < 4)         16 weights
//! ```

use super::ggml::f16_at;

/// Bytes of one TQ1_0 block.
pub const TQ1_0_BYTES: usize = 54;
/// Bytes of one TQ2_0 block.
pub const TQ2_0_BYTES: usize = 66;

const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];

/// Trit `n` (0..5) of a TQ1_0 byte, as −1, 0 or +1.
#[inline]
pub fn trit(q: u8, n: usize) -> i32 {
    let v = q.wrapping_mul(POW3[n]);
    ((v as u16 * 3) >> 8) as i32 - 1
}

/// Dequantize one TQ1_0 block (54 bytes) into 256 values.
pub fn dequantize_tq1_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 52);
    let (qs, qh) = (&b[..48], &b[48..52]);
    for n in 0..5 {
        for m in 0..32 {
            out[32 * n + m] = trit(qs[m], n) as f32 * d;
        }
        for m in 0..16 {
            out[160 + 16 * n + m] = trit(qs[32 + m], n) as f32 * d;
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            out[240 + 4 * n + j] = trit(qh[j], n) as f32 * d;
        }
    }
}

/// Dequantize one TQ2_0 block (66 bytes) into 256 values.
pub fn dequantize_tq2_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 64);
    for h in 0..2 {
        for s in 0..4 {
            for m in 0..32 {
                let q = ((b[32 * h + m] >> (2 * s)) & 3) as i32 - 1;
                out[128 * h + 32 * s + m] = q as f32 * d;
            }
        }
    }
}
