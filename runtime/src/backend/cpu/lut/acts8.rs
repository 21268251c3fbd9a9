//! Int8 activations for the tiled prefill GEMM ([`super::tiled`]): one scale per
//! quantization group of the weights, so each group's integer dot product needs one float
//! epilogue.
//!
//! Per token and group `g` of the activations `x`:
//!
//! ```text
//! d_g    = max_{k∈g} |x_k| / 127            (0 for an all-zero group)
//! a_k    = round_half_even(x_k · 127/max|x|) ∈ [−127, 127]     (i8)
//! zsum_g = d_g · Σ_{k∈g} a_k                 (the quantized activations' sum, f32)
//! ```
//!
//! A group holding a NaN or an infinity gets `d_g = zsum_g = NaN` and zero codes: it
//! poisons the rows' results like the LUT tables do, not the whole batch.

use crate::error::{Error, Result};

/// Int8 activations of one token (see the module docs for the formulas).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Acts8 {
    group: usize,
    cols: usize,
    q: Vec<i8>,
    scale: Vec<f32>,
    zsum: Vec<f32>,
}

/// Round half to even for |v| < 2²² without a libm call (the table builder's rounding).
#[inline(always)]
fn round_even(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    ((v + MAGIC) - MAGIC) as i32
}

impl Acts8 {
    /// Quantize `x` in groups of `group` (a positive divisor of `x.len()`), reusing the
    /// buffers.
    pub fn rebuild(&mut self, x: &[f32], group: usize) -> Result<()> {
        if group == 0 || x.is_empty() || !x.len().is_multiple_of(group) {
            return Err(Error::invalid(format!(
                "int8 activations: {} values is not a positive multiple of the group {group}",
                x.len()
            )));
        }
        let groups = x.len() / group;
        self.group = group;
        self.cols = x.len();
        self.q.resize(x.len(), 0);
        self.scale.resize(groups, 0.0);
        self.zsum.resize(groups, 0.0);
        for (gi, (xg, qg)) in x
            .chunks_exact(group)
            .zip(self.q.chunks_exact_mut(group))
            .enumerate()
        {
            if !xg.iter().all(|v| v.is_finite()) {
                qg.fill(0);
                self.scale[gi] = f32::NAN;
                self.zsum[gi] = f32::NAN;
                continue;
            }
            let amax = xg.iter().fold(0f32, |a, v| a.max(v.abs()));
            let (d, inv) = if amax > 0.0 {
                (amax / 127.0, 127.0 / amax)
            } else {
                (0.0, 0.0)
            };
            let mut sum = 0i32;
            for (q, &v) in qg.iter_mut().zip(xg) {
                let a = round_even(v * inv).clamp(-127, 127);
                *q = a as i8;
                sum += a;
            }
            self.scale[gi] = d;
            self.zsum[gi] = d * sum as f32;
        }
        Ok(())
    }

    /// Drop the contents, keeping the allocations.
    pub fn clear(&mut self) {
        self.group = 0;
        self.cols = 0;
        self.q.clear();
        self.scale.clear();
        self.zsum.clear();
    }

    pub fn group(&self) -> usize {
        self.group
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The `cols` int8 codes.
    pub fn codes(&self) -> &[i8] {
        &self.q
    }
    /// Per group `d_g`.
    pub fn scales(&self) -> &[f32] {
        &self.scale
    }
    /// Per group `d_g · Σ a_k`.
    pub fn zsums(&self) -> &[f32] {
        &self.zsum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn codes_are_within_half_a_step_and_sums_match() {
        let mut rng = Rng(8);
        let x: Vec<f32> = (0..256).map(|_| rng.heavy()).collect();
        let mut a = Acts8::default();
        a.rebuild(&x, 64).unwrap();
        for gi in 0..4 {
            let d = a.scales()[gi];
            let xg = &x[gi * 64..(gi + 1) * 64];
            let amax = xg.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(d, amax / 127.0);
            let mut sum = 0i32;
            for (k, &v) in xg.iter().enumerate() {
                let q = a.codes()[gi * 64 + k] as i32;
                assert!((v - d * q as f32).abs() <= 0.5001 * d, "{v} vs {q}·{d}");
                sum += q;
            }
            assert_eq!(a.zsums()[gi], d * sum as f32);
        }
    }

    #[test]
    fn zero_nan_and_bad_shapes() {
        let mut a = Acts8::default();
        let mut x = vec![0f32; 64];
        x[40] = f32::NAN;
        a.rebuild(&x, 32).unwrap();
        assert_eq!(&a.scales()[..1], &[0.0]);
        assert!(a.scales()[1].is_nan() && a.zsums()[1].is_nan());
        assert!(a.codes().iter().all(|&q| q == 0));
        assert!(a.rebuild(&x[..48], 32).is_err());
        assert!(a.rebuild(&[], 32).is_err());
        assert!(a.rebuild(&x, 0).is_err());
    }
}
