//! ggml block formats we read from GGUF files, their scalar dequantization, and the
//! quantization of activations to 8-bit blocks that llama.cpp uses for its dot products.
//!
//! ```text
//! Q4_0  [ d: f16 | qs: 16 bytes ]            x[j] = d * ((qs[j] & 15) - 8),  x[j+16] = d * ((qs[j] >> 4) - 8)
//! Q4_1  [ d: f16 | m: f16 | qs: 16 bytes ]   x[j] = d * (qs[j] & 15) + m,    x[j+16] = d * (qs[j] >> 4) + m
//! Q8_0  [ d: f16 | qs: 32 × i8 ]             x[j] = d * qs[j]
//! ```
//! All blocks hold 32 elements of one row; rows are a whole number of blocks.
//!
//! Activations quantized for those dot products (llama.cpp's Q8_0 / Q8_1 blocks: per 32
//! values a scale d = amax/127 rounded to f16, codes round(x/d), and for Q8_1 s = d·Σcodes
//! rounded to f16) are stored structure-of-arrays, with the f16 scales widened to f32
//! (exactly) so the kernels load them directly:
//! ```text
//! one row of n activations, nb = n/32 blocks
//! Q8_0 acts  [ qs: n × i8 ][ d: nb × f32 ]
//! Q8_1 acts  [ qs: n × i8 ][ d: nb × f32 ][ s: nb × f32 ]
//! Q8_K acts  [ qs: n × i8 ][ d: nk × f32 ][ bsums: 16·nk × i16 ]      nk = n/256 super-blocks
//! ```
//! Q8_K (for the K-quants, IQ4_XS and the ternary types) is llama.cpp's: per 256 values the
//! value `max` of largest magnitude gives `d = max/−127` (kept in f32), codes
//! `min(127, round(x/d))` (round half to even), and the sum of every 16 codes.
//!
//! Matching llama.cpp: it multiplies Q4_0/Q8_0 weights by activations quantized to Q8_0 and
//! Q4_1 weights by activations quantized to Q8_1 (round to nearest even, scale = amax/127).
//! We do the same on the reference path so greedy tokens and perplexity agree with it.

use half::{bf16, f16};

use super::f16_at;
use super::kquant::QK_K;
use super::{iq4, kquant, q5, ternary};
use crate::format::GgmlType;

/// Elements per block for every 32-element format here.
pub const QK: usize = 32;
/// Bytes of one Q8_0 weight block.
pub const Q8_0_BYTES: usize = 34;

/// Dequantize one row (`out.len()` elements) of a tensor of type `ty` from its bytes.
/// `row` must hold exactly the bytes of `out.len()` elements. Supports every type for which
/// [`GgmlType::can_dequantize`] is true; returns false otherwise.
pub fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut [f32]) -> bool {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(Q8_0_BYTES)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    o[j] = d * (b[2 + j] as i8) as f32;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    o[j] = d * ((b[2 + j] & 15) as i32 - 8) as f32;
                    o[j + 16] = d * ((b[2 + j] >> 4) as i32 - 8) as f32;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    o[j] = d * (b[4 + j] & 15) as f32 + m;
                    o[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
                }
            }
        }
        GgmlType::Q5_0 => blocks(row, out, 32, q5::Q5_0_BYTES, q5::dequantize_q5_0),
        GgmlType::Q5_1 => blocks(row, out, 32, q5::Q5_1_BYTES, q5::dequantize_q5_1),
        GgmlType::Q2K => blocks(row, out, QK_K, 84, kquant::dequantize_q2_k),
        GgmlType::Q3K => blocks(row, out, QK_K, 110, kquant::dequantize_q3_k),
        GgmlType::Q4K => blocks(row, out, QK_K, 144, kquant::dequantize_q4_k),
        GgmlType::Q5K => blocks(row, out, QK_K, 176, kquant::dequantize_q5_k),
        GgmlType::Q6K => blocks(row, out, QK_K, 210, kquant::dequantize_q6_k),
        GgmlType::Iq4Nl => blocks(row, out, 32, iq4::IQ4_NL_BYTES, iq4::dequantize_iq4_nl),
        GgmlType::Iq4Xs => blocks(row, out, QK_K, iq4::IQ4_XS_BYTES, iq4::dequantize_iq4_xs),
        GgmlType::TQ1_0 => blocks(
            row,
            out,
            QK_K,
            ternary::TQ1_0_BYTES,
            ternary::dequantize_tq1_0,
        ),
        GgmlType::TQ2_0 => blocks(
            row,
            out,
            QK_K,
            ternary::TQ2_0_BYTES,
            ternary::dequantize_tq2_0,
        ),
        _ => return false,
    }
    true
}

/// Apply a one-block dequantizer (`bl` values from `bb` bytes) over a whole row.
#[inline]
fn blocks(row: &[u8], out: &mut [f32], bl: usize, bb: usize, f: fn(&[u8], &mut [f32])) {
    for (o, b) in out.chunks_exact_mut(bl).zip(row.chunks_exact(bb)) {
        f(b, o);
    }
}

/// Which 8-bit activation format a weight type's dot product consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    /// Activations stay f32 (dense weights).
    F32,
    /// Q8_0 blocks (for Q4_0 and Q8_0 weights).
    Q8_0,
    /// Q8_1 blocks (for Q4_1 and Q5_1 weights).
    Q8_1,
    /// Q8_K super-blocks of 256 (for the K-quants, IQ4_XS, TQ1_0 and TQ2_0).
    Q8K,
}

impl ActFormat {
    /// The activation format llama.cpp pairs with weight type `ty`.
    pub fn for_weights(ty: GgmlType) -> ActFormat {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Iq4Nl => ActFormat::Q8_0,
            GgmlType::Q4_1 | GgmlType::Q5_1 => ActFormat::Q8_1,
            GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Iq4Xs
            | GgmlType::TQ1_0
            | GgmlType::TQ2_0 => ActFormat::Q8K,
            _ => ActFormat::F32,
        }
    }

    /// Bytes needed to hold one row of `n` activations in this format.
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            ActFormat::F32 => n * 4,
            ActFormat::Q8_0 => n + n / QK * 4,
            ActFormat::Q8_1 => n + n / QK * 8,
            ActFormat::Q8K => n + n / QK_K * (4 + 32),
        }
    }
}

/// Round half to even, as `_mm256_round_ps(_, _MM_ROUND_NEAREST)` does in llama.cpp's x86
/// path. Adding and subtracting 1.5·2²³ rounds exactly that way for |x| < 2²² (our values are
/// within ±127.5) and, unlike `round_ties_even`, compiles to vector adds instead of a libm call.
#[inline]
fn round_even(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    ((x + MAGIC) - MAGIC) as i32
}

/// Quantize `x` (a multiple of 32 long) into the Q8_0 or Q8_1 activation layout in `out`.
fn quantize_row_q8(x: &[f32], out: &mut [u8], with_sum: bool) {
    let n = x.len();
    let nb = n / QK;
    let (qs, scales) = out.split_at_mut(n);
    for (i, (xb, qb)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            let r = round_even(v * id);
            sum += r;
            *q = r as i8 as u8;
        }
        let d16 = f16::from_f32(d).to_f32();
        scales[4 * i..4 * i + 4].copy_from_slice(&d16.to_le_bytes());
        if with_sum {
            let s16 = f16::from_f32(d * sum as f32).to_f32();
            scales[4 * (nb + i)..4 * (nb + i) + 4].copy_from_slice(&s16.to_le_bytes());
        }
    }
}

/// Quantize `x` (a multiple of 32 long) into the Q8_0 activation layout.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    quantize_row_q8(x, out, false)
}

/// Quantize `x` (a multiple of 32 long) into the Q8_1 activation layout.
pub fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    quantize_row_q8(x, out, true)
}

/// A Q8_K activation row (the [`ActFormat::Q8K`] layout above) read in place: the kernels
/// and their references share this view instead of each splitting the bytes.
#[derive(Clone, Copy, Debug)]
pub struct Q8kRow<'a> {
    qs: &'a [u8],
    ds: &'a [u8],
    sums: &'a [u8],
}

impl<'a> Q8kRow<'a> {
    /// A view of nothing (placeholder before [`Q8kRow::new`]).
    pub const EMPTY: Q8kRow<'static> = Q8kRow {
        qs: &[],
        ds: &[],
        sums: &[],
    };

    /// View `a` as `nk` super-blocks; `None` if it is too short.
    pub fn new(a: &'a [u8], nk: usize) -> Option<Self> {
        let n = nk * QK_K;
        if a.len() < n + nk * 36 {
            return None;
        }
        let (qs, rest) = a.split_at(n);
        let (ds, sums) = rest.split_at(4 * nk);
        Some(Q8kRow { qs, ds, sums })
    }

    /// The 256 codes of super-block `i`.
    #[inline(always)]
    pub fn codes(&self, i: usize) -> &'a [u8] {
        &self.qs[QK_K * i..QK_K * (i + 1)]
    }

    /// The scale of super-block `i`.
    #[inline(always)]
    pub fn d(&self, i: usize) -> f32 {
        let d = &self.ds[4 * i..4 * i + 4];
        f32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }

    /// The 16 sums of super-block `i` as 32 bytes (i16 little-endian, see [`Self::bsum`]).
    #[inline(always)]
    pub fn bsums(&self, i: usize) -> &'a [u8] {
        &self.sums[32 * i..32 * (i + 1)]
    }

    /// The sum of codes 16j..16j+16 of super-block `i`.
    #[inline(always)]
    pub fn bsum(&self, i: usize, j: usize) -> i32 {
        let at = 32 * i + 2 * j;
        i16::from_le_bytes([self.sums[at], self.sums[at + 1]]) as i32
    }
}

/// Quantize `x` (a multiple of 256 long) into the Q8_K activation layout.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    let n = x.len();
    let nk = n / QK_K;
    let (qs, rest) = out.split_at_mut(n);
    let (ds, sums) = rest.split_at_mut(4 * nk);
    for (i, (xb, qb)) in x
        .chunks_exact(QK_K)
        .zip(qs.chunks_exact_mut(QK_K))
        .enumerate()
    {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            qb.fill(0);
            ds[4 * i..4 * i + 4].copy_from_slice(&0f32.to_le_bytes());
            sums[32 * i..32 * i + 32].fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = round_even(iscale * v).min(127) as i8 as u8;
        }
        for j in 0..16 {
            let s: i32 = qb[16 * j..16 * j + 16]
                .iter()
                .map(|&c| c as i8 as i32)
                .sum();
            sums[32 * i + 2 * j..32 * i + 2 * j + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        ds[4 * i..4 * i + 4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// Quantize a row of activations into `fmt` (F32 copies the floats as bytes).
pub fn quantize_row(fmt: ActFormat, x: &[f32], out: &mut [u8]) {
    match fmt {
        ActFormat::F32 => out.copy_from_slice(bytemuck::cast_slice(x)),
        ActFormat::Q8_0 => quantize_row_q8_0(x, out),
        ActFormat::Q8_1 => quantize_row_q8_1(x, out),
        ActFormat::Q8K => quantize_row_q8_k(x, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(q: &[u8], n: usize, i: usize) -> f32 {
        f32::from_le_bytes(q[n + 4 * i..n + 4 * i + 4].try_into().unwrap())
    }

    #[test]
    fn q8_roundtrip_is_close() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.13)
            .collect();
        let mut q = vec![0u8; ActFormat::Q8_0.row_bytes(64)];
        quantize_row_q8_0(&x, &mut q);
        for (j, &a) in x.iter().enumerate() {
            let b = scale(&q, 64, j / 32) * (q[j] as i8) as f32;
            // Error is at most half a step (amax/127/2) plus f16 rounding of the scale.
            assert!((a - b).abs() <= 1.04 / 127.0 * 0.5 + 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn q8_1_sum_matches_values() {
        let x: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) * 0.5).collect();
        let mut q = vec![0u8; ActFormat::Q8_1.row_bytes(32)];
        quantize_row_q8_1(&x, &mut q);
        let (d, s) = (scale(&q, 32, 0), scale(&q, 32, 1));
        assert_eq!(f16::from_f32(d).to_f32(), d, "d is an f16 value");
        let sum: i32 = q[..32].iter().map(|&b| b as i8 as i32).sum();
        assert!((s - d * sum as f32).abs() <= s.abs() * 1e-3);
    }

    #[test]
    fn magic_rounding_is_round_half_even() {
        for i in -300_000..300_000 {
            let x = i as f32 / 2048.0;
            assert_eq!(round_even(x), x.round_ties_even() as i32, "{x}");
        }
        for x in [0.5f32, 1.5, 2.5, -0.5, -1.5, 126.5, -127.5, 127.49999] {
            assert_eq!(round_even(x), x.round_ties_even() as i32, "{x}");
        }
    }

    /// Every block type with a dequantizer against gguf-py's (llama.cpp's numpy port) on
    /// the golden blocks of `tests/golden/ggml_blocks` (see `make_ggml_blocks.py` there):
    /// random and quantized-from-normal blocks. Exact: same operations in the same order.
    #[test]
    fn dequantizers_equal_gguf_py_bitwise() {
        use GgmlType::*;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/ggml_blocks");
        let types = [
            Q5_0, Q5_1, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Nl, Iq4Xs, TQ1_0, TQ2_0,
        ];
        for ty in types {
            let path = dir.join(format!("{}.bin", ty.name()));
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let (bl, bb) = ty.block_geometry();
            assert_eq!(data.len() % (bb + 4 * bl), 0, "{ty}: file size");
            let nb = data.len() / (bb + 4 * bl);
            let (blocks, want) = data.split_at(nb * bb);
            let mut got = vec![0f32; nb * bl];
            assert!(ty.can_dequantize(), "{ty}");
            assert!(dequantize_row(ty, blocks, &mut got), "{ty}");
            for (i, (g, w)) in got.iter().zip(want.chunks_exact(4)).enumerate() {
                let w = f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{ty} value {i}: {g} vs gguf-py {w}"
                );
            }
        }
    }

    #[test]
    fn unsupported_type_is_refused() {
        let mut out = [0f32; 256];
        assert!(!dequantize_row(GgmlType::Q8K, &[0u8; 292], &mut out));
    }
}
