//! The group quantizer's search, shared by the LUT weights ([`crate::lut::quantize`]) and
//! the quantized KV cache ([`crate::kv::quant`]).
//!
//! Both store a group of values as `b`-bit codes with two f16 parameters (LUT: scale and
//! zero point, `w ≈ s·(u − z)`; KV: scale and minimum, `x ≈ m + s·u`, rounded outwards so
//! every value stays in range). A few extreme values waste most of the levels of a min/max
//! range, so both search clipped ranges and keep the one of smallest squared error:
//!
//! ```text
//!   range [lo, hi] around the group mean μ; a clipped end keeps a fraction r of its distance:
//!   l = μ + (lo − μ)·a        h = μ + (hi − μ)·b
//!   1. joint:  a = b = r      for r in `joint`     (keep each improvement)
//!   2. low:    a = r, b fixed for r in `ends`
//!   3. high:   b = r, a fixed for r in `ends`
//!   4. refine: least-squares (params) for the best codes, re-quantize; up to `refits` times
//!              while the error falls
//! ```
//!
//! Each format says, through [`Grid`], what parameters a range gives, how values are coded
//! and how parameters are refitted; this module holds the search once.

/// One format's quantization grid over one group of values.
pub trait Grid {
    /// The stored parameters of a group (e.g. f16 scale and zero).
    type Params: Copy;
    /// The parameters for the (clipped) range `[lo, hi]`.
    fn for_range(&self, lo: f32, hi: f32) -> Self::Params;
    /// Write the group's codes for `p`; return the squared error of the reconstruction
    /// (`+∞` rather than NaN, so a failed candidate never wins).
    fn quantize(&self, p: Self::Params, codes: &mut [u8]) -> f64;
    /// Least-squares parameters for fixed codes (`None` when degenerate).
    fn refit(&self, codes: &[u8]) -> Option<Self::Params>;
}

/// The clipping schedule of [`search`] (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Schedule<'a> {
    /// Ratios tried for both ends at once.
    pub joint: &'a [f32],
    /// Ratios tried for each end alone.
    pub ends: &'a [f32],
    /// Least-squares refits at most.
    pub refits: usize,
}

/// Search clipped ranges of `[lo, hi]` around `mean`, then refit; `start` is a candidate
/// already evaluated (its error and parameters), or `None`. Writes the winner's codes into
/// `codes` and returns its parameters and error. `scratch` has the length of `codes`.
pub fn search<G: Grid>(
    g: &G,
    (lo, hi, mean): (f32, f32, f32),
    start: Option<(f64, G::Params)>,
    sched: Schedule<'_>,
    codes: &mut [u8],
    scratch: &mut [u8],
) -> (G::Params, f64) {
    let mut best = start;
    let mut try_range = |a: f32, b: f32, best: &mut Option<(f64, G::Params)>| -> bool {
        let p = g.for_range(mean + (lo - mean) * a, mean + (hi - mean) * b);
        let e = g.quantize(p, scratch);
        let better = best.is_none_or(|(be, _)| e < be);
        if better {
            *best = Some((e, p));
        }
        better
    };
    let (mut ra, mut rb) = (1.0, 1.0);
    for &r in sched.joint {
        if try_range(r, r, &mut best) {
            (ra, rb) = (r, r);
        }
    }
    for &a in sched.ends {
        if try_range(a, rb, &mut best) {
            ra = a;
        }
    }
    for &b in sched.ends {
        try_range(ra, b, &mut best);
    }
    let (mut e, mut p) = match best {
        Some((e, p)) => {
            g.quantize(p, codes);
            (e, p)
        }
        None => {
            let p = g.for_range(lo, hi);
            (g.quantize(p, codes), p)
        }
    };
    for _ in 0..sched.refits {
        let Some(p2) = g.refit(codes) else {
            break;
        };
        let e2 = g.quantize(p2, scratch);
        if e2.is_nan() || e2 >= e {
            break;
        }
        (e, p) = (e2, p2);
        codes.copy_from_slice(scratch);
    }
    (p, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Integer codes on a plain f32 grid `x ≈ m + s·u` (no f16 rounding), 2 bits.
    struct Plain<'a>(&'a [f32]);
    impl Grid for Plain<'_> {
        type Params = (f32, f32);
        fn for_range(&self, lo: f32, hi: f32) -> (f32, f32) {
            ((hi - lo).max(1e-12) / 3.0, lo)
        }
        fn quantize(&self, (s, m): (f32, f32), codes: &mut [u8]) -> f64 {
            let mut e = 0.0;
            for (c, &x) in codes.iter_mut().zip(self.0) {
                *c = ((x - m) / s).round().clamp(0.0, 3.0) as u8;
                let d = (x - (m + s * *c as f32)) as f64;
                e += d * d;
            }
            e
        }
        fn refit(&self, _: &[u8]) -> Option<(f32, f32)> {
            None
        }
    }

    #[test]
    fn an_outlier_is_clipped_and_the_search_never_loses_to_min_max() {
        // 31 values near 0 and one far outlier: min/max spends the 4 levels on the gap.
        let mut xs: Vec<f32> = (0..31).map(|i| (i as f32 - 15.0) * 0.01).collect();
        xs.push(10.0);
        let g = Plain(&xs);
        let mut c0 = vec![0u8; xs.len()];
        let e_minmax = g.quantize(g.for_range(-0.15, 10.0), &mut c0);
        let (mut codes, mut scratch) = (vec![0u8; xs.len()], vec![0u8; xs.len()]);
        let ratios = [1.0, 0.5, 0.25, 0.1, 0.05];
        let sched = Schedule {
            joint: &ratios,
            ends: &ratios,
            refits: 0,
        };
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let (p, e) = search(
            &g,
            (-0.15, 10.0, mean),
            None,
            sched,
            &mut codes,
            &mut scratch,
        );
        assert!(e < 0.5 * e_minmax, "search {e} vs min/max {e_minmax}");
        // The codes written are those of the returned parameters, and their error is `e`.
        let mut check = vec![0u8; xs.len()];
        assert_eq!(g.quantize(p, &mut check), e);
        assert_eq!(check, codes);
        // A start candidate reported better than every clipped range is kept as it is.
        let start = Some((0.0, (1.0, -0.15)));
        let (p2, e2) = search(
            &g,
            (-0.15, 10.0, mean),
            start,
            sched,
            &mut codes,
            &mut scratch,
        );
        assert_eq!((p2, e2), ((1.0, -0.15), 0.0));
    }
}
