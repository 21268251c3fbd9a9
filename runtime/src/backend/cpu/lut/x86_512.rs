//! AVX-512 (BW) lookup-accumulate GEMV: the AVX2 kernel's computation at twice the width,
//! over the same layout ([`super::layout`]), with no repacking.
//!
//! The layout stores the k-pairs of a group and plane back to back (32 bytes each) and the
//! tables of consecutive k-steps back to back (16 bytes each), so one 64-byte load takes two
//! k-pairs — four k-steps, one per 128-bit lane — and one 64-byte load takes their four
//! tables, lane for lane, which is exactly what `vpshufb` on a zmm register looks up in:
//!
//! ```text
//! weights  [ k-step 2q | k-step 2q+1 | k-step 2q+2 | k-step 2q+3 ]   (32 rows as nibbles)
//! tables   [ table 2q  | table 2q+1  | table 2q+2  | table 2q+3  ]   (16 biased bytes each)
//! ```
//!
//! Integer bounds (biased entries are u8, at most 255):
//! * per lane and plane, a group gives `g/16` lookups per row (≤ 8): the u16 word sums and
//!   the wrapped even-byte recovery of the AVX2 kernel are exact (≤ 2040);
//! * the planes are combined in u16 as `Σ_p 2^p·acc_p ≤ 15·2040 = 30600` per lane;
//! * the four lanes are summed once per group: two in u16 (≤ 61200), then widened to i32.
//!
//! So the integer totals equal the reference's, and the float epilogue is the AVX2 kernel's
//! (mul/add, no FMA): results are bit-identical to [`super::gemv::gemv_ref`].
//! Compared with AVX2 it halves the lookups' instruction count and folds lanes once per
//! group instead of once per plane.

use std::arch::x86_64::*;
use std::ops::Range;

use super::gemv::chunk_rows;
use super::table::{LutTables, TABLE_BIAS};
use crate::lut::layout::{LutMatrix, CHUNK_ROWS};

/// `y = W·x` for `m` and the tables `t`.
///
/// # Safety
/// AVX-512F, AVX-512BW, AVX2 and F16C must be available. Shapes are asserted (the caller
/// has checked them).
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
pub unsafe fn gemv_avx512(m: &LutMatrix, t: &LutTables, chunks: Range<usize>, y: &mut [f32]) {
    assert!(chunks.start <= chunks.end && y.len() == chunk_rows(m, &chunks).len());
    for c in chunks.clone() {
        let mut out = [[0f32; CHUNK_ROWS]];
        // SAFETY: the caller guarantees the features; `chunk_tokens` asserts the shapes.
        unsafe { chunk_tokens::<1>(m, [t], c, &mut out) };
        let r0 = (c - chunks.start) * CHUNK_ROWS;
        let n = CHUNK_ROWS.min(y.len() - r0);
        y[r0..r0 + n].copy_from_slice(&out[0][..n]);
    }
}

/// Two tokens at once over one chunk (prefill): `out[i] = rows of chunk c of W·x_i`, where
/// `t[i]` holds the tables of `x_i`. Each weight load and nibble split serves both tokens,
/// and the scales are converted once; per token the computation is [`gemv_avx512`]'s, so
/// the rows are bit-identical to it.
///
/// # Safety
/// As [`gemv_avx512`].
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
pub unsafe fn gemv2_avx512(
    m: &LutMatrix,
    t: [&LutTables; 2],
    c: usize,
    out: &mut [[f32; CHUNK_ROWS]; 2],
) {
    // SAFETY: the caller guarantees the features; `chunk_tokens` asserts the shapes.
    unsafe { chunk_tokens::<2>(m, t, c, out) }
}

/// The 32 rows of chunk `c` for `T` tokens (`tabs[i]` built from token `i`).
///
/// # Safety
/// AVX-512F, AVX-512BW, AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
unsafe fn chunk_tokens<const T: usize>(
    m: &LutMatrix,
    tabs: [&LutTables; T],
    c: usize,
    out: &mut [[f32; CHUNK_ROWS]; T],
) {
    let (bits, group, groups) = (m.bits(), m.group(), m.groups());
    let steps = group / 4;
    let pairs = group / 8;
    let planes = m.planes();
    let (scales, zeros) = (m.scales(), m.zeros());
    assert!(
        pairs % 2 == 0
            && c < m.chunks()
            && planes.len() >= m.chunks() * m.chunk_bytes()
            && scales.len() >= m.chunks() * groups * CHUNK_ROWS
            && zeros.len() >= m.chunks() * groups * CHUNK_ROWS
            && tabs.iter().all(|t| t.entries().len() >= groups * steps * 16
                && t.half_scales().len() >= groups
                && t.sums().len() >= groups)
    );
    let nib = _mm512_set1_epi8(15);
    let zero = _mm512_setzero_si512();
    let half_range = _mm512_set1_ps(((1u32 << bits) - 1) as f32 * 0.5);
    // Σ_p 2^p · (bias per lookup) · (lookups per plane and group).
    let bias = _mm512_set1_epi32(TABLE_BIAS * steps as i32 * ((1 << bits) - 1));
    let mut wp = planes.as_ptr().wrapping_add(c * m.chunk_bytes());
    // Rows 0..16 and 16..32 per token.
    let mut yacc = [[_mm512_setzero_ps(); 2]; T];
    for gi in 0..groups {
        // Plane-weighted u16 sums per token and lane: rows 0..8 (even bytes, low nibbles),
        // 8..16 (odd, low), 16..24 (even, high), 24..32 (odd, high).
        let mut tot = [[zero; 4]; T];
        // SAFETY: gi < groups, so the group's `steps` tables of 16 bytes are in `entries`.
        let tp: [*const u8; T] =
            std::array::from_fn(|i| unsafe { tabs[i].entries().as_ptr().add(gi * steps * 16) });
        for p in 0..bits {
            let mut acc = [[zero; 4]; T];
            for q in (0..pairs).step_by(2) {
                // SAFETY: `wp` walks the planes in layout order from chunk c, 32 bytes per
                // k-pair, groups·bits·pairs k-pairs (= chunk_bytes) per chunk, and
                // c < m.chunks() (asserted with the planes' length); pairs is even, so k-pairs
                // q and q+1 are both in this plane.
                let w = unsafe { _mm512_loadu_si512(wp as *const __m512i) };
                wp = wp.wrapping_add(64);
                let lo = _mm512_and_si512(w, nib);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), nib);
                for i in 0..T {
                    // SAFETY: the four tables of k-pairs q, q+1 (64 bytes from 32q) lie inside
                    // this group's tables of token i (asserted lengths).
                    let tab = unsafe { _mm512_loadu_si512(tp[i].add(32 * q) as *const __m512i) };
                    let vl = _mm512_shuffle_epi8(tab, lo);
                    let vh = _mm512_shuffle_epi8(tab, hi);
                    let a = &mut acc[i];
                    a[0] = _mm512_add_epi16(a[0], vl);
                    a[1] = _mm512_add_epi16(a[1], _mm512_srli_epi16::<8>(vl));
                    a[2] = _mm512_add_epi16(a[2], vh);
                    a[3] = _mm512_add_epi16(a[3], _mm512_srli_epi16::<8>(vh));
                }
            }
            let sh = _mm_cvtsi32_si128(p as i32);
            for i in 0..T {
                let a = &acc[i];
                // Even sums = whole words − odd bytes·256 (exact: ≤ 2040 < 2^16).
                let parts = [
                    _mm512_sub_epi16(a[0], _mm512_slli_epi16::<8>(a[1])),
                    a[1],
                    _mm512_sub_epi16(a[2], _mm512_slli_epi16::<8>(a[3])),
                    a[3],
                ];
                for j in 0..4 {
                    tot[i][j] = _mm512_add_epi16(tot[i][j], _mm512_sll_epi16(parts[j], sh));
                }
            }
        }
        let at = (c * groups + gi) * CHUNK_ROWS;
        // SAFETY: at + 32 <= chunks·groups·32 scales/zeros (asserted); f16 is a transparent
        // u16, so 16 of them are 32 readable bytes.
        let (s, cz) = unsafe {
            let load = |p: *const half::f16, o: usize| {
                _mm512_cvtph_ps(_mm256_loadu_si256(p.add(at + o) as *const __m256i))
            };
            (
                [load(scales.as_ptr(), 0), load(scales.as_ptr(), 16)],
                [
                    _mm512_sub_ps(half_range, load(zeros.as_ptr(), 0)),
                    _mm512_sub_ps(half_range, load(zeros.as_ptr(), 16)),
                ],
            )
        };
        for i in 0..T {
            let hs = _mm512_set1_ps(tabs[i].half_scales()[gi]);
            let sx = _mm512_set1_ps(tabs[i].sums()[gi]);
            // Lanes 0+2 and 1+3 in u16 (≤ 61200), then the two halves in i32.
            let wide: [__m256i; 4] = std::array::from_fn(|j| {
                let v = tot[i][j];
                let s =
                    _mm256_add_epi16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
                _mm256_add_epi32(
                    _mm256_cvtepu16_epi32(_mm256_castsi256_si128(s)),
                    _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(s)),
                )
            });
            for h in 0..2 {
                let tot32 =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(wide[2 * h]), wide[2 * h + 1]);
                let total = _mm512_cvtepi32_ps(_mm512_sub_epi32(tot32, bias));
                let inner = _mm512_add_ps(_mm512_mul_ps(total, hs), _mm512_mul_ps(cz[h], sx));
                yacc[i][h] = _mm512_add_ps(yacc[i][h], _mm512_mul_ps(s[h], inner));
            }
        }
    }
    for (o, acc) in out.iter_mut().zip(yacc.iter()) {
        for (h, v) in acc.iter().enumerate() {
            // SAFETY: o has 32 floats; 16h + 16 <= 32.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(16 * h), *v) };
        }
    }
}
