//! AVX2 lookup-accumulate GEMV over the layout of [`super::layout`].
//!
//! Per 32-row chunk, group and plane, each 32-byte load holds two k-steps of 32 rows
//! (lanes) as nibbles; one 32-byte load of the two matching tables (consecutive in memory)
//! serves both lanes. Two `_mm256_shuffle_epi8` give the biased u8 entries for the low and
//! high nibbles; each is added as 16-bit words (odd·256 + even, wrapping) and, shifted,
//! as odd bytes into u16 accumulators; the even-byte sums are the difference afterwards. Bounds: a group has at most 16 k-pairs per lane, so a u16 lane holds at
//! most 16·255; after folding the two lanes at most 8160. The per-plane sums are widened
//! to i32, weighted by `2^p`, unbiased, and go through the same float epilogue as the
//! scalar reference (mul/add, no FMA), so results are bit-identical.

use std::arch::x86_64::*;
use std::ops::Range;

use super::gemv::chunk_rows;
use super::table::{LutTables, TABLE_BIAS};
use crate::lut::layout::{LutMatrix, CHUNK_ROWS};

/// Sum the two 128-bit lanes of 16 u16 accumulators and widen to 8 i32.
///
/// # Safety
/// AVX2 must be available (an `unsafe fn` to keep the crate's MSRV).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn fold_widen(a: __m256i) -> __m256i {
    let s = _mm_add_epi16(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
    _mm256_cvtepu16_epi32(s)
}

/// `y = W·x` for `m` and the tables `t`.
///
/// # Safety
/// AVX2 and F16C must be available. Shapes are asserted (the caller has checked them).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn gemv_avx2(m: &LutMatrix, t: &LutTables, chunks: Range<usize>, y: &mut [f32]) {
    let (bits, group, groups) = (m.bits(), m.group(), m.groups());
    let steps = group / 4;
    let pairs = group / 8;
    let planes = m.planes();
    let entries = t.entries();
    let (scales, zeros) = (m.scales(), m.zeros());
    assert!(
        planes.len() >= m.chunks() * m.chunk_bytes()
            && scales.len() >= m.chunks() * groups * CHUNK_ROWS
            && zeros.len() >= m.chunks() * groups * CHUNK_ROWS
            && entries.len() >= groups * steps * 16
            && t.half_scales().len() >= groups
            && t.sums().len() >= groups
            && chunks.start <= chunks.end
            && chunks.end <= m.chunks()
            && y.len() == chunk_rows(m, &chunks).len()
    );
    let nib = _mm256_set1_epi8(15);
    let zero = _mm256_setzero_si256();
    let half_range = _mm256_set1_ps(((1u32 << bits) - 1) as f32 * 0.5);
    // Σ_p 2^p · (bias per lookup) · (lookups per plane and group).
    let bias = _mm256_set1_epi32(TABLE_BIAS * steps as i32 * ((1 << bits) - 1));
    let mut wp = planes.as_ptr().wrapping_add(chunks.start * m.chunk_bytes());
    for c in chunks.clone() {
        let mut yacc = [_mm256_setzero_ps(); 4];
        for gi in 0..groups {
            let mut tot = [_mm256_setzero_si256(); 4];
            // SAFETY: gi < groups, so the group's `steps` tables of 16 bytes are in `entries`.
            let tp = unsafe { entries.as_ptr().add(gi * steps * 16) };
            for p in 0..bits {
                // Whole 16-bit words (odd·256 + even, wrapping) and odd bytes, low and
                // high nibbles: the even-byte sums are recovered after the loop.
                let (mut wl, mut ol, mut wh, mut oh) = (zero, zero, zero, zero);
                for q in 0..pairs {
                    // SAFETY: `wp` walks the planes in layout order from chunk `chunks.start`,
                    // 32 bytes per k-pair, groups·bits·pairs k-pairs (= chunk_bytes) per chunk,
                    // and chunks.end <= m.chunks() (asserted with the planes' length); the two
                    // tables of k-pair q < pairs lie inside this group's tables.
                    let (w, tab) = unsafe {
                        (
                            _mm256_loadu_si256(wp as *const __m256i),
                            _mm256_loadu_si256(tp.add(32 * q) as *const __m256i),
                        )
                    };
                    wp = wp.wrapping_add(32);
                    let lo = _mm256_and_si256(w, nib);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(w), nib);
                    let vl = _mm256_shuffle_epi8(tab, lo);
                    let vh = _mm256_shuffle_epi8(tab, hi);
                    wl = _mm256_add_epi16(wl, vl);
                    ol = _mm256_add_epi16(ol, _mm256_srli_epi16::<8>(vl));
                    wh = _mm256_add_epi16(wh, vh);
                    oh = _mm256_add_epi16(oh, _mm256_srli_epi16::<8>(vh));
                }
                // Even sums ≤ 16·255 < 2^16, so the wrapped difference is exact.
                let acc = [
                    _mm256_sub_epi16(wl, _mm256_slli_epi16::<8>(ol)),
                    ol,
                    _mm256_sub_epi16(wh, _mm256_slli_epi16::<8>(oh)),
                    oh,
                ];
                let sh = _mm_cvtsi32_si128(p as i32);
                for j in 0..4 {
                    tot[j] = _mm256_add_epi32(tot[j], _mm256_sll_epi32(fold_widen(acc[j]), sh));
                }
            }
            let hs = _mm256_set1_ps(t.half_scales()[gi]);
            let sx = _mm256_set1_ps(t.sums()[gi]);
            let at = (c * groups + gi) * CHUNK_ROWS;
            for j in 0..4 {
                // SAFETY: at + 8j + 8 <= chunks·groups·32 scales/zeros (asserted); f16 is a
                // transparent u16, so 8 of them are 16 readable bytes.
                let (s, z) = unsafe {
                    (
                        _mm256_cvtph_ps(_mm_loadu_si128(
                            scales.as_ptr().add(at + 8 * j) as *const __m128i
                        )),
                        _mm256_cvtph_ps(_mm_loadu_si128(
                            zeros.as_ptr().add(at + 8 * j) as *const __m128i
                        )),
                    )
                };
                let total = _mm256_cvtepi32_ps(_mm256_sub_epi32(tot[j], bias));
                let cz = _mm256_sub_ps(half_range, z);
                let inner = _mm256_add_ps(_mm256_mul_ps(total, hs), _mm256_mul_ps(cz, sx));
                yacc[j] = _mm256_add_ps(yacc[j], _mm256_mul_ps(s, inner));
            }
        }
        let mut out = [0f32; CHUNK_ROWS];
        for (j, v) in yacc.iter().enumerate() {
            // SAFETY: `out` has 32 floats; 8j + 8 <= 32.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), *v) };
        }
        let r0 = (c - chunks.start) * CHUNK_ROWS;
        let n = CHUNK_ROWS.min(y.len() - r0);
        y[r0..r0 + n].copy_from_slice(&out[..n]);
    }
}

/// AVX2 table kernel, equal to [`super::table::quantize_tables_ref`]: per table, the 8
/// lower entries in one register (signs by XOR), rounded half-to-even by `cvtps_epi32`,
/// packed to i16, mirrored (negated and reversed) and packed to biased bytes.
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_tables_avx2(x: &[f32], inv: f32, q: &mut [u8]) {
    assert_eq!(q.len(), 4 * x.len(), "LUT tables: output length");
    let neg = _mm256_set1_ps(-0.0);
    // Entry m (0..8) takes +x_j when bit j of m is set, else −x_j (x3 always negative).
    let sign = |j: usize| {
        let mut bits = [0i32; 8];
        for (m, b) in bits.iter_mut().enumerate() {
            if (m >> j) & 1 == 0 {
                *b = i32::MIN;
            }
        }
        // SAFETY: `bits` is 8 readable i32.
        _mm256_castsi256_ps(unsafe { _mm256_loadu_si256(bits.as_ptr() as *const __m256i) })
    };
    let (s0, s1, s2) = (sign(0), sign(1), sign(2));
    let vinv = _mm256_set1_ps(inv);
    let (lo, hi) = (_mm256_set1_epi32(-127), _mm256_set1_epi32(127));
    // Reverse the 8 words of a 128-bit register.
    let rev = _mm_setr_epi8(14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1);
    let bias = _mm_set1_epi8(-128);
    for (x4, qt) in x.chunks_exact(4).zip(q.chunks_exact_mut(16)) {
        let b0 = _mm256_xor_ps(_mm256_set1_ps(x4[0]), s0);
        let b1 = _mm256_xor_ps(_mm256_set1_ps(x4[1]), s1);
        let b2 = _mm256_xor_ps(_mm256_set1_ps(x4[2]), s2);
        let b3 = _mm256_xor_ps(_mm256_set1_ps(x4[3]), neg);
        // Same association as the reference: ((±x0 ± x1) ± x2) − x3.
        let t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(b0, b1), b2), b3);
        let v = _mm256_cvtps_epi32(_mm256_mul_ps(t, vinv));
        let v = _mm256_max_epi32(_mm256_min_epi32(v, hi), lo);
        let w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let m = _mm_shuffle_epi8(_mm_sub_epi16(_mm_setzero_si128(), w), rev);
        let bytes = _mm_xor_si128(_mm_packs_epi16(w, m), bias);
        // SAFETY: `qt` is a 16-byte chunk of `q`.
        unsafe { _mm_storeu_si128(qt.as_mut_ptr() as *mut __m128i, bytes) };
    }
}
