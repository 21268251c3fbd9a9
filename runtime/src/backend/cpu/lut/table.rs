//! Lookup tables of partial sums of the activations, built once per GEMV and shared by
//! every row and every bit plane.
//!
//! For each k-step (4 activations `x0..x3`) the table is *symmetric*:
//! `T[m] = Σ_j (2·bit_j(m) − 1)·x_j`. Then `T[15 − m] = −T[m]` (flipping all four bits
//! negates every term), so only `T[0..8]` is computed and the upper half is its mirror
//! ("mirror consolidation"). A plane's 0/1 bits relate to the ±1 form by
//! `Σ_j bit_j·x_j = (T[m] + Σ_j x_j) / 2`, which the epilogue undoes with the group sum.
//!
//! Table quantization: all tables of one quantization group share one scale
//! `ts = max|T| / 127`; entries become `q = round(T / ts) ∈ [−127, 127]` (symmetric
//! rounding keeps the mirror exact: `q[15 − m] = −q[m]`), stored biased as `q + 128` in a
//! `u8` so that the kernel can widen lookups with a mask and a shift (unsigned).

use super::acts8::Acts8;
use crate::backend::cpu::pool::Pool;
use crate::error::{Error, Result};

/// Bias added to every quantized table entry.
pub const TABLE_BIAS: i32 = 128;

/// Quantized tables for one activation vector and one group size.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LutTables {
    group: usize,
    cols: usize,
    /// `cols/4` tables of 16 biased entries, in k-step order.
    q: Vec<u8>,
    /// Per group: `ts / 2` (the 1/2 of the ±1 → 0/1 conversion folded in).
    half_scale: Vec<f32>,
    /// Per group: `Σ x` over the group, in f32.
    sums: Vec<f32>,
    /// The int8 activations of the tiled prefill GEMM ([`LutTables::rebuild_int8`]); empty
    /// when the lookup tables above are built, and then the tables are empty.
    int8: Acts8,
}

/// The lower half `T[0..8]` of the symmetric table for `x[0..4]` (bit 3 clear).
#[inline(always)]
fn table8(x: &[f32]) -> [f32; 8] {
    let (x0, x1, x2, x3) = (x[0], x[1], x[2], x[3]);
    let lo = [-x0 - x1, x0 - x1, -x0 + x1, x0 + x1];
    let mut t = [0f32; 8];
    for m in 0..4 {
        t[m] = (lo[m] - x2) - x3;
        t[m + 4] = (lo[m] + x2) - x3;
    }
    t
}

/// The 16 f32 entries of the symmetric table for `x[0..4]`, built from 8 by mirroring.
pub fn table_f32(x: &[f32]) -> [f32; 16] {
    let h = table8(x);
    let mut t = [0f32; 16];
    for m in 0..8 {
        t[m] = h[m];
        t[15 - m] = -h[m];
    }
    t
}

/// Round half to even for |v| < 2²² without a libm call (symmetric, so mirrored entries
/// stay exact negatives).
#[inline(always)]
fn round_even(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    ((v + MAGIC) - MAGIC) as i32
}

/// Tables of `x` (4 activations per table, all finite) quantized with `inv = 1/ts` into
/// `q` (16 biased bytes per table), with the best kernel.
fn quantize_tables(x: &[f32], inv: f32, q: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if super::gemv::has_avx2() {
        // SAFETY: AVX2 was detected at run time; the kernel asserts q.len() == 4·x.len().
        unsafe { super::x86::quantize_tables_avx2(x, inv, q) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if super::gemv::has_neon() {
        // SAFETY: NEON is baseline on aarch64; the kernel asserts q.len() == 4·x.len().
        unsafe { super::neon::quantize_tables_neon(x, inv, q) };
        return;
    }
    quantize_tables_ref(x, inv, q)
}

/// Scalar reference of the table kernel: entries `T[0..8]`, `q = round_half_even(T·inv)`
/// clamped to ±127, mirrored into `T[8..16]`, biased by 128.
pub fn quantize_tables_ref(x: &[f32], inv: f32, q: &mut [u8]) {
    assert_eq!(q.len(), 4 * x.len(), "LUT tables: output length");
    for (x4, qt) in x.chunks_exact(4).zip(q.chunks_exact_mut(16)) {
        let t = table8(x4);
        for m in 0..8 {
            let v = round_even(t[m] * inv).clamp(-127, 127);
            qt[m] = (v + TABLE_BIAS) as u8;
            qt[15 - m] = (TABLE_BIAS - v) as u8;
        }
    }
}

impl LutTables {
    /// Build and quantize the tables of `x` for groups of `group` activations.
    pub fn build(x: &[f32], group: usize) -> Result<Self> {
        let mut t = LutTables::default();
        t.rebuild(x, group)?;
        Ok(t)
    }

    /// [`LutTables::build`] into these buffers, reusing their allocations (the decode loop
    /// allocates nothing once they have grown to the widest activation vector).
    pub fn rebuild(&mut self, x: &[f32], group: usize) -> Result<()> {
        if !crate::lut::layout::GROUPS.contains(&group)
            || x.is_empty()
            || !x.len().is_multiple_of(group)
        {
            return Err(Error::invalid(format!(
                "LUT tables: {} activations is not a positive multiple of the group {group}",
                x.len()
            )));
        }
        let groups = x.len() / group;
        self.group = group;
        self.cols = x.len();
        self.int8.clear();
        self.q.resize(x.len() * 4, 0);
        self.half_scale.resize(groups, 0.0);
        self.sums.resize(groups, 0.0);
        for (gi, (xg, qg)) in x
            .chunks_exact(group)
            .zip(self.q.chunks_exact_mut(group * 4))
            .enumerate()
        {
            // max_m |T[m]| is the all-signs-aligned entry, which rounds exactly like this sum.
            let amax = xg.chunks_exact(4).fold(0f32, |a, x4| {
                a.max(((x4[0].abs() + x4[1].abs()) + x4[2].abs()) + x4[3].abs())
            });
            // A NaN/inf activation poisons this group's result, not the whole vector.
            let (ts, inv) = if !xg.iter().all(|v| v.is_finite()) {
                (f32::NAN, 0.0)
            } else if amax > 0.0 {
                (amax / 127.0, 127.0 / amax)
            } else {
                (0.0, 0.0)
            };
            if ts.is_nan() {
                qg.fill(TABLE_BIAS as u8);
            } else {
                quantize_tables(xg, inv, qg);
            }
            self.half_scale[gi] = 0.5 * ts;
            self.sums[gi] = xg.iter().sum();
        }
        Ok(())
    }

    /// Instead of lookup tables, the int8 activations of `x` for the tiled prefill GEMM
    /// ([`super::tiled`]): `gemm_many` then runs that kernel, and the GEMV refuses these
    /// tables (see [`LutTables::has_lookup`]).
    pub fn rebuild_int8(&mut self, x: &[f32], group: usize) -> Result<()> {
        self.rebuild_int8_keep(x, group, false)
    }

    /// Both forms: the lookup tables and the int8 activations; `gemm_many` picks per matrix
    /// ([`super::tiled::prefers`]).
    pub fn rebuild_both(&mut self, x: &[f32], group: usize) -> Result<()> {
        self.rebuild(x, group)?;
        self.rebuild_int8_keep(x, group, true)
    }

    fn rebuild_int8_keep(&mut self, x: &[f32], group: usize, keep: bool) -> Result<()> {
        if !crate::lut::layout::GROUPS.contains(&group) {
            return Err(Error::invalid(format!(
                "LUT tables: group {group} not one of {:?}",
                crate::lut::layout::GROUPS
            )));
        }
        self.int8.rebuild(x, group)?;
        self.group = group;
        self.cols = x.len();
        if !keep {
            self.q.clear();
            self.half_scale.clear();
            self.sums.clear();
        }
        Ok(())
    }

    /// Whether the lookup tables are built (by [`LutTables::rebuild`], not
    /// [`LutTables::rebuild_int8`]).
    pub fn has_lookup(&self) -> bool {
        self.cols > 0 && self.q.len() == 4 * self.cols
    }

    /// The int8 activations, when built by [`LutTables::rebuild_int8`].
    pub fn int8(&self) -> Option<&Acts8> {
        (self.cols > 0 && self.int8.cols() == self.cols).then_some(&self.int8)
    }

    pub fn group(&self) -> usize {
        self.group
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Biased quantized entries: `cols/4` tables of 16 bytes.
    pub fn entries(&self) -> &[u8] {
        &self.q
    }
    /// Per group `ts / 2`.
    pub fn half_scales(&self) -> &[f32] {
        &self.half_scale
    }
    /// Per group `Σ x`.
    pub fn sums(&self) -> &[f32] {
        &self.sums
    }
    /// Signed quantized entry `m` of table (k-step) `step`.
    #[inline]
    pub fn entry(&self, step: usize, m: usize) -> i32 {
        self.q[step * 16 + m] as i32 - TABLE_BIAS
    }
}

/// Tables pointer shared by the pool's threads; each rebuilds only its own tokens' tables.
struct TablesPtr(*mut LutTables);
// SAFETY: the threads touch disjoint elements (disjoint token ranges from `run_ranges`)
// while `rebuild_many` holds the `&mut` borrow of the slice.
unsafe impl Sync for TablesPtr {}

/// `tables[t].rebuild(x[t·cols..(t+1)·cols], group)` for every `t < tables.len()`, tokens
/// split over the threads of `pool` (prefill: a serial table build would leave the other
/// threads waiting before every GEMM). Same tables as the serial loop, byte for byte.
///
/// On a CPU with the tiled int8 GEMM, from [`super::tiled::MIN_TOKENS`] tokens it builds
/// the int8 activations too ([`LutTables::rebuild_both`]), and from
/// [`super::tiled::MIN_TOKENS_LOW_BITS`] only them ([`LutTables::rebuild_int8`]);
/// [`super::gemm::gemm_many`] then picks the kernel per matrix: the prefill path is chosen
/// here and there, not by the model graph.
pub fn rebuild_many(
    pool: &Pool,
    tables: &mut [LutTables],
    x: &[f32],
    cols: usize,
    group: usize,
) -> Result<()> {
    let n = tables.len();
    // Enough tokens to amortize the weight expansion, and a CPU with the int8 kernel.
    let int8 = super::tiled::available();
    let build = |t: &mut LutTables, xr: &[f32]| {
        if int8 && n >= super::tiled::MIN_TOKENS_LOW_BITS {
            t.rebuild_int8(xr, group)
        } else if int8 && n >= super::tiled::MIN_TOKENS {
            t.rebuild_both(xr, group)
        } else {
            t.rebuild(xr, group)
        }
    };
    if cols == 0 || x.len() < n * cols {
        return Err(Error::invalid(format!(
            "LUT tables: {} activations for {n} tokens of {cols}",
            x.len()
        )));
    }
    if n <= 1 || pool.n_threads() == 1 {
        for (t, xr) in tables.iter_mut().zip(x.chunks_exact(cols)) {
            build(t, xr)?;
        }
        return Ok(());
    }
    // The shape errors of `rebuild` do not depend on the values: check them once.
    LutTables::default().rebuild(&x[..cols], group)?;
    let ptr = TablesPtr(tables.as_mut_ptr());
    let ptr = &ptr;
    pool.run_ranges(n, 1, |_, range| {
        for t in range {
            // SAFETY: t < n = tables.len(), and no other thread gets token t, so this is
            // the only live reference to tables[t].
            let tab = unsafe { &mut *ptr.0.add(t) };
            // Cannot fail: the shape was checked above.
            let _ = build(tab, &x[t * cols..(t + 1) * cols]);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn tables_are_mirrored_and_quantized_within_half_a_step() {
        let mut rng = Rng(5);
        for &g in &[32usize, 64, 128] {
            let x: Vec<f32> = (0..3 * g).map(|_| rng.normal()).collect();
            let t = LutTables::build(&x, g).unwrap();
            for step in 0..x.len() / 4 {
                let exact = table_f32(&x[4 * step..4 * step + 4]);
                let ts = 2.0 * t.half_scales()[4 * step / g];
                for (m, &e) in exact.iter().enumerate() {
                    // Direct definition, not the mirrored shortcut.
                    let direct: f32 = (0..4)
                        .map(|j| {
                            if (m >> j) & 1 == 1 {
                                x[4 * step + j]
                            } else {
                                -x[4 * step + j]
                            }
                        })
                        .sum();
                    assert!((direct - e).abs() <= 1e-5 * (1.0 + direct.abs()));
                    assert_eq!(t.entry(step, 15 - m), -t.entry(step, m));
                    assert!(t.entry(step, m).abs() <= 127);
                    assert!((t.entry(step, m) as f32 * ts - e).abs() <= 0.5 * ts * 1.0001);
                }
            }
            for gi in 0..3 {
                let s: f32 = x[gi * g..(gi + 1) * g].iter().sum();
                assert_eq!(t.sums()[gi], s);
            }
        }
    }

    #[test]
    fn table_kernel_equals_reference() {
        let mut rng = Rng(17);
        for n in [4usize, 32, 128, 1024] {
            let mut x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            // Exact ties for the rounding: quarters and halves times a power of two.
            for v in x.iter_mut().step_by(3) {
                *v = (*v * 4.0).round() / 8.0;
            }
            for inv in [0.0f32, 1.0, 2.0, 127.0 / 3.7, 31.75] {
                let (mut a, mut b) = (vec![0u8; 4 * n], vec![1u8; 4 * n]);
                quantize_tables(&x, inv, &mut a);
                quantize_tables_ref(&x, inv, &mut b);
                assert_eq!(a, b, "n {n} inv {inv}");
            }
        }
    }

    #[test]
    fn pooled_rebuild_equals_serial() {
        let pool = Pool::new(2).unwrap();
        let mut rng = Rng(23);
        let (n, cols, group) = (7, 192, 64);
        let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
        let mut pooled = vec![LutTables::default(); n];
        rebuild_many(&pool, &mut pooled, &x, cols, group).unwrap();
        for (t, xr) in pooled.iter().zip(x.chunks_exact(cols)) {
            assert_eq!(*t, LutTables::build(xr, group).unwrap());
        }
        assert!(rebuild_many(&pool, &mut pooled, &x[..cols], cols, group).is_err());
        assert!(rebuild_many(&pool, &mut pooled, &x, cols, 48).is_err());
    }

    #[test]
    fn non_finite_activation_poisons_its_group_only() {
        let mut x = vec![0.5f32; 64];
        x[40] = f32::NAN;
        let t = LutTables::build(&x, 32).unwrap();
        assert!(t.half_scales()[0] > 0.0);
        assert!(t.half_scales()[1].is_nan());
        assert!(t.entries()[128..].iter().all(|&b| b as i32 == TABLE_BIAS));
    }

    #[test]
    fn zero_activations_and_bad_lengths() {
        let t = LutTables::build(&[0.0; 64], 32).unwrap();
        assert!(t.entries().iter().all(|&b| b as i32 == TABLE_BIAS));
        assert_eq!(t.half_scales(), &[0.0, 0.0]);
        assert!(matches!(
            LutTables::build(&[0.0; 48], 32),
            Err(Error::InvalidArg(_))
        ));
        assert!(matches!(
            LutTables::build(&[], 32),
            Err(Error::InvalidArg(_))
        ));
        assert!(matches!(
            LutTables::build(&[0.0; 64], 16),
            Err(Error::InvalidArg(_))
        ));
    }
}
