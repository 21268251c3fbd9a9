//! Group-wise weight quantization for the LUT kernels.
//!
//! Asymmetric: a group of `g` weights becomes codes `u ∈ 0..=2^b−1` with one scale `s` and
//! one zero point `z` (both stored as f16), dequantized as `w ≈ s·(u − z)`.
//!
//! * [`Method::Rtn`]: plain min/max round-to-nearest, `s = (max−min)/(2^b−1)`, `z = −min/s`.
//! * [`Method::Search`]: error-minimizing. Searches clipping ratios of the range (shrinking
//!   towards the group mean): jointly, then the low end, then the high end, then refines
//!   the best candidate by a least-squares fit of `(s, z)` to its codes; keeps whichever has
//!   the smallest squared error *with the f16-rounded scale and zero actually stored*. The
//!   grid contains the unclipped range, so it is never worse than [`Method::Rtn`].
//! * [`Method::Ternary`]: BitNet b1.58 absmean, `γ = mean|W|` over the whole matrix, codes
//!   `round(clamp(w/γ, −1, 1)) + 1` in 2 bits with `s = γ`, `z = 1`.

use half::f16;

use crate::quant::group::{search, Grid, Schedule};

/// How a matrix is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Min/max round-to-nearest (the baseline).
    Rtn,
    /// Clipping-ratio grid search plus least-squares refinement (the default).
    Search,
    /// BitNet b1.58 absmean ternary; forces 2 bits.
    Ternary,
}

/// Clipping ratios tried for each end of the range (1.0 = no clipping).
const RATIOS: [f32; 9] = [1.0, 0.93, 0.86, 0.79, 0.72, 0.65, 0.55, 0.45, 0.35];

/// Rounds of least-squares refinement after the grid search.
const REFINE_ROUNDS: usize = 3;

/// Scale and zero (f16-rounded, as stored) for the range `[lo, hi]` with `qmax + 1` levels.
fn params_for_range(lo: f32, hi: f32, qmax: f32) -> (f16, f16) {
    if hi <= lo {
        // Constant group: represent the value exactly with u = 0.
        let s = if lo != 0.0 { lo.abs() } else { 1.0 };
        return (f16::from_f32(s), f16::from_f32(-lo / s));
    }
    let s = (hi - lo) / qmax;
    let z = -lo / s;
    let (s16, z16) = (f16::from_f32(s), f16::from_f32(z));
    if s16.to_f32() > 0.0 && s16.is_finite() && z16.is_finite() {
        return (s16, z16);
    }
    // The zero point (or scale) does not fit an f16: fall back to a range containing 0.
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let s = ((hi - lo) / qmax).max(f32::MIN_POSITIVE);
    (f16::from_f32(s), f16::from_f32(-lo / s))
}

/// The code of `v` for `inv = 1/s` and zero `z`: `clamp(round(v/s + z), 0, qmax)`, rounding
/// half to even without a libm call (clamping first commutes with rounding since the bounds
/// are integers; exact for codes below 2^22).
#[inline(always)]
pub(crate) fn code_of(v: f32, inv: f32, z: f32, qmax: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    ((v * inv + z).clamp(0.0, qmax) + MAGIC) - MAGIC
}

/// Weight 1 for every column (the unweighted error; multiplying by 1.0 is exact).
const ONES: [f32; 128] = [1.0; 128];

/// Codes of `w` for the stored `(s, z)`; returns the squared error of the reconstruction,
/// each column's weighted by `imp`.
fn quantize_with(w: &[f32], imp: &[f32], s: f16, z: f16, qmax: f32, codes: &mut [u8]) -> f64 {
    let (s, z) = (s.to_f32(), z.to_f32());
    let inv = if s != 0.0 { 1.0 / s } else { 0.0 };
    let one = |v: f32, m: f32, c: &mut u8| -> f64 {
        let u = code_of(v, inv, z, qmax);
        *c = u as u8;
        let d = (v - s * (u - z)) as f64;
        d * d * m as f64
    };
    // Eight independent partial sums: no serial chain of f64 adds.
    let mut err = [0f64; 8];
    let n8 = w.len() / 8 * 8;
    for ((c8, w8), m8) in codes[..n8]
        .chunks_exact_mut(8)
        .zip(w[..n8].chunks_exact(8))
        .zip(imp[..n8].chunks_exact(8))
    {
        for i in 0..8 {
            err[i] += one(w8[i], m8[i], &mut c8[i]);
        }
    }
    let tail: f64 = codes[n8..]
        .iter_mut()
        .zip(&w[n8..])
        .zip(&imp[n8..])
        .map(|((c, &v), &m)| one(v, m, c))
        .sum();
    err.iter().sum::<f64>() + tail
}

/// Plain min/max RTN of one group into `codes`; returns `(scale, zero)`.
pub fn quantize_group_rtn(w: &[f32], bits: usize, codes: &mut [u8]) -> (f16, f16) {
    let qmax = ((1u32 << bits) - 1) as f32;
    let (lo, hi) = min_max(w);
    let (s, z) = params_for_range(lo, hi, qmax);
    quantize_with(w, &ONES, s, z, qmax, codes);
    (s, z)
}

/// Error-minimizing quantization of one group into `codes`; returns `(scale, zero)`.
pub fn quantize_group_search(w: &[f32], bits: usize, codes: &mut [u8]) -> (f16, f16) {
    if w.len() <= ONES.len() {
        quantize_group_search_weighted(w, &ONES[..w.len()], bits, codes)
    } else {
        quantize_group_search_weighted(w, &vec![1.0; w.len()], bits, codes)
    }
}

/// [`quantize_group_search`] minimizing `Σ imp_i·(w_i − ŵ_i)²` (`imp ≥ 0`, one per weight;
/// GPTQ passes how much each column's error costs).
pub fn quantize_group_search_weighted(
    w: &[f32],
    imp: &[f32],
    bits: usize,
    codes: &mut [u8],
) -> (f16, f16) {
    assert_eq!(imp.len(), w.len(), "one importance per weight");
    let qmax = ((1u32 << bits) - 1) as f32;
    let (lo, hi) = min_max(w);
    let mean = w.iter().sum::<f32>() / w.len().max(1) as f32;
    let mut scratch = vec![0u8; w.len()];
    let grid = LutGrid { w, imp, qmax };
    let sched = Schedule {
        joint: &RATIOS,
        ends: &RATIOS,
        refits: REFINE_ROUNDS,
    };
    // Starting from "nothing yet" at (0, 0), as a failed (NaN) group reads back.
    let start = Some((f64::INFINITY, (f16::ZERO, f16::ZERO)));
    search(&grid, (lo, hi, mean), start, sched, codes, &mut scratch).0
}

/// The LUT format's [`Grid`]: f16 scale and zero, errors weighted by importance.
struct LutGrid<'a> {
    w: &'a [f32],
    imp: &'a [f32],
    qmax: f32,
}

impl Grid for LutGrid<'_> {
    type Params = (f16, f16);
    fn for_range(&self, lo: f32, hi: f32) -> (f16, f16) {
        params_for_range(lo, hi, self.qmax)
    }
    fn quantize(&self, (s, z): (f16, f16), codes: &mut [u8]) -> f64 {
        let e = quantize_with(self.w, self.imp, s, z, self.qmax, codes);
        if e.is_nan() {
            f64::INFINITY
        } else {
            e
        }
    }
    fn refit(&self, codes: &[u8]) -> Option<(f16, f16)> {
        lsq_fit(self.w, self.imp, codes)
    }
}

/// Weighted least-squares `(s, z)` with `w ≈ s·(u − z)` for fixed codes; `None` if
/// degenerate.
fn lsq_fit(w: &[f32], imp: &[f32], codes: &[u8]) -> Option<(f16, f16)> {
    let (mut n, mut su, mut suu, mut sw, mut suw) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for ((&c, &v), &m) in codes.iter().zip(w).zip(imp) {
        let (u, v, m) = (c as f64, v as f64, m as f64);
        n += m;
        su += m * u;
        suu += m * u * u;
        sw += m * v;
        suw += m * u * v;
    }
    let den = n * suu - su * su;
    if den <= 0.0 {
        return None;
    }
    let a = (n * suw - su * sw) / den;
    let c = (sw - a * su) / n;
    if a.is_nan() || a <= 0.0 {
        return None;
    }
    let (s, z) = (f16::from_f32(a as f32), f16::from_f32((-c / a) as f32));
    (s.to_f32() > 0.0 && s.is_finite() && z.is_finite()).then_some((s, z))
}

/// BitNet b1.58 absmean scale of a whole matrix.
pub fn absmean(w: &[f32]) -> f32 {
    let m = w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len().max(1) as f64;
    m as f32
}

/// Ternary codes (0, 1, 2 for −1, 0, +1) of one group for the matrix scale `gamma`;
/// returns `(scale, zero) = (γ, 1)`.
pub fn quantize_group_ternary(w: &[f32], gamma: f32, codes: &mut [u8]) -> (f16, f16) {
    let inv = 1.0 / (gamma + 1e-6);
    for (c, &v) in codes.iter_mut().zip(w) {
        *c = ((v * inv).clamp(-1.0, 1.0).round() + 1.0) as u8;
    }
    (f16::from_f32(gamma), f16::ONE)
}

/// Squared reconstruction error of one group.
pub fn group_sse(w: &[f32], codes: &[u8], s: f16, z: f16) -> f64 {
    let (s, z) = (s.to_f32(), z.to_f32());
    w.iter()
        .zip(codes)
        .map(|(&v, &u)| {
            let d = (v - s * (u as f32 - z)) as f64;
            d * d
        })
        .sum()
}

fn min_max(w: &[f32]) -> (f32, f32) {
    w.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn sse_of(w: &[f32], bits: usize, search: bool) -> f64 {
        let mut codes = vec![0u8; w.len()];
        let (s, z) = if search {
            quantize_group_search(w, bits, &mut codes)
        } else {
            quantize_group_rtn(w, bits, &mut codes)
        };
        assert!(codes.iter().all(|&c| (c as usize) < (1 << bits)));
        group_sse(w, &codes, s, z)
    }

    #[test]
    fn search_never_worse_than_rtn_and_better_on_heavy_tails() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for bits in 1..=4 {
            for &g in &[32usize, 64, 128] {
                let (mut rtn_heavy, mut search_heavy) = (0f64, 0f64);
                for _ in 0..40 {
                    let uni: Vec<f32> = (0..g).map(|_| rng.normal()).collect();
                    let heavy: Vec<f32> = (0..g).map(|_| rng.heavy()).collect();
                    for w in [&uni, &heavy] {
                        let (r, s) = (sse_of(w, bits, false), sse_of(w, bits, true));
                        assert!(s <= r, "bits {bits} g {g}: search {s} > rtn {r}");
                    }
                    rtn_heavy += sse_of(&heavy, bits, false);
                    search_heavy += sse_of(&heavy, bits, true);
                }
                // Heavy tails: clipping the outliers must pay off clearly (≥ 10% less error).
                assert!(
                    search_heavy < 0.9 * rtn_heavy,
                    "bits {bits} g {g}: search {search_heavy} vs rtn {rtn_heavy}"
                );
            }
        }
    }

    #[test]
    fn constant_and_ternary_groups() {
        for v in [0.0f32, 1.5, -2.25] {
            let w = [v; 32];
            let mut c = [0u8; 32];
            let (s, z) = quantize_group_search(&w, 2, &mut c);
            assert!(group_sse(&w, &c, s, z) < 1e-6, "{v}");
        }
        let w: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 16.0).collect();
        let gamma = absmean(&w);
        let mut c = vec![0u8; 64];
        let (s, z) = quantize_group_ternary(&w, gamma, &mut c);
        assert_eq!(z, f16::ONE);
        assert!(c.iter().all(|&u| u <= 2));
        assert_eq!(c[0], 0);
        assert_eq!(c[32], 1);
        assert_eq!(c[63], 2);
        assert!((s.to_f32() - gamma).abs() < 1e-3);
    }
}
