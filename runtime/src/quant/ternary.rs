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

/// The codes `u` of one TQ1_0 block (54 bytes) into `codes[..256]`, weight = `d·(u − 1)`
/// with `u` in 0..=2; returns `d`'s f16 bits.
pub fn codes_tq1_0(b: &[u8], codes: &mut [u8]) -> u16 {
    let (qs, qh) = (&b[..48], &b[48..52]);
    let u = |q: u8, n: usize| (trit(q, n) + 1) as u8;
    for n in 0..5 {
        for m in 0..32 {
            codes[32 * n + m] = u(qs[m], n);
        }
        for m in 0..16 {
            codes[160 + 16 * n + m] = u(qs[32 + m], n);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            codes[240 + 4 * n + j] = u(qh[j], n);
        }
    }
    u16::from_le_bytes([b[52], b[53]])
}

/// The codes `u` of one TQ2_0 block (66 bytes) into `codes[..256]`, weight = `d·(u − 1)`
/// with `u` in 0..=3 (ggml writes 0..=2; 3 reads as +2); returns `d`'s f16 bits.
pub fn codes_tq2_0(b: &[u8], codes: &mut [u8]) -> u16 {
    for h in 0..2 {
        for s in 0..4 {
            for m in 0..32 {
                codes[128 * h + 32 * s + m] = (b[32 * h + m] >> (2 * s)) & 3;
            }
        }
    }
    u16::from_le_bytes([b[64], b[65]])
}

/// `out[i] = (codes[i] − 1)·d`, the ternary blocks' dequantization.
fn dequantize_codes(codes: &[u8; 256], d: u16, out: &mut [f32]) {
    let d = half::f16::from_bits(d).to_f32();
    for (o, &u) in out.iter_mut().zip(codes) {
        *o = (u as i32 - 1) as f32 * d;
    }
}

/// Dequantize one TQ1_0 block (54 bytes) into 256 values.
pub fn dequantize_tq1_0(b: &[u8], out: &mut [f32]) {
    let mut codes = [0u8; 256];
    let d = codes_tq1_0(b, &mut codes);
    dequantize_codes(&codes, d, out);
}

/// Dequantize one TQ2_0 block (66 bytes) into 256 values.
pub fn dequantize_tq2_0(b: &[u8], out: &mut [f32]) {
    let mut codes = [0u8; 256];
    let d = codes_tq2_0(b, &mut codes);
    dequantize_codes(&codes, d, out);
}
