//! AVX2 kernels of the block types llama.cpp's Q4_K_M files mix: Q4_K and Q6_K against Q8_K
//! activations, Q5_0 against Q8_0. Each computes the same integers as its scalar reference
//! in [`super::blocks_ref`] (exact: `maddubs` pair sums fit i16, `madd` into i32 lanes) and
//! then the same float expression per block, so its result equals the reference bit for
//! bit (tested).

use std::arch::x86_64::*;

use super::Acts;
use crate::quant::ggml::Q8kRow;
use crate::quant::kquant::scale_min_k4;

/// The f16 at `p` as f32 (F16C; exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY (caller): two bytes at `p` are readable.
    let bits = std::ptr::read_unaligned(p as *const u16);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Sum of 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Q4_K weights (144-byte super-blocks) against a Q8_K activation row.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: same CPU requirements as this function.
    let r = unsafe { q4_k_rows::<1, false>(w, [a]) };
    r[0]
}

/// [`dot_q4_k_q8_k`] for four activation rows, each weight byte unpacked once (prefill);
/// the same results as four single-row calls.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q4_k_q8_k(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    // SAFETY: same CPU requirements as this function.
    unsafe { q4_k_rows::<4, false>(w, a) }
}

/// Q5_K weights (176-byte super-blocks) against a Q8_K activation row: Q4_K's layout with
/// bit 4 of every code in `qh`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: same CPU requirements as this function.
    let r = unsafe { q4_k_rows::<1, true>(w, [a]) };
    r[0]
}

/// [`dot_q5_k_q8_k`] for four activation rows (prefill).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q5_k_q8_k(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    // SAFETY: same CPU requirements as this function.
    unsafe { q4_k_rows::<4, true>(w, a) }
}

/// Q4_K (`FIVE` false, 144-byte blocks) or Q5_K (`FIVE` true, 176-byte blocks with the 32
/// `qh` bytes before the nibbles) against `R` Q8_K rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_rows<const R: usize, const FIVE: bool>(w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let (bb, qs_at) = if FIVE { (176, 48) } else { (144, 16) };
    let nk = w.len() / bb;
    let mut parts = [Q8kRow::EMPTY; R];
    for (p, row) in parts.iter_mut().zip(a) {
        match Q8kRow::new(row, nk) {
            Some(x) => *p = x,
            None => return [f32::NAN; R],
        }
    }
    let mask = _mm256_set1_epi8(15);
    let (one, m16) = (_mm256_set1_epi8(1), _mm256_set1_epi8(16));
    let mut acc = [0f32; R];
    for (i, b) in w.chunks_exact(bb).enumerate() {
        // Q5_K: bit 2p (low nibbles) and 2p+1 (high nibbles) of qh[l] are bit 4 of the codes.
        // SAFETY: bytes 16..48 of a Q5_K block are qh (only read when FIVE).
        let qh = if FIVE {
            unsafe { _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i) }
        } else {
            _mm256_setzero_si256()
        };
        let mut sc = [0i16; 8];
        let mut mins = [0i32; 8];
        for (j, s) in sc.iter_mut().enumerate() {
            let (scale, m) = scale_min_k4(j, &b[4..16]);
            *s = scale as i16;
            mins[j] = m as i32;
        }
        let mut iacc = [_mm256_setzero_si256(); R];
        for p in 0..4 {
            // SAFETY: 32 bytes at qs_at + 32p ≤ bb of `b`.
            let q4 =
                unsafe { _mm256_loadu_si256(b.as_ptr().add(qs_at + 32 * p) as *const __m256i) };
            let mut lo = _mm256_and_si256(q4, mask);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), mask);
            if FIVE {
                // Move bit 2p (then 2p+1) of each qh byte to bit 0, then to 16.
                let shifted = shift_right_bytes(qh, 2 * p as i32);
                let b_lo = _mm256_and_si256(shifted, one);
                let b_hi = _mm256_and_si256(_mm256_srli_epi16(shifted, 1), one);
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(b_lo, one), m16));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(b_hi, one), m16));
            }
            let (s_lo, s_hi) = (
                _mm256_set1_epi16(sc[2 * p]),
                _mm256_set1_epi16(sc[2 * p + 1]),
            );
            for (acc_r, row) in iacc.iter_mut().zip(&parts) {
                let q8 = row.codes(i);
                // SAFETY: 32 bytes at 64p (+32) ≤ 256 of `q8`.
                let (a_lo, a_hi) = unsafe {
                    (
                        _mm256_loadu_si256(q8.as_ptr().add(64 * p) as *const __m256i),
                        _mm256_loadu_si256(q8.as_ptr().add(64 * p + 32) as *const __m256i),
                    )
                };
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), s_lo);
                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), s_hi);
                *acc_r = _mm256_add_epi32(*acc_r, _mm256_add_epi32(p_lo, p_hi));
            }
        }
        // SAFETY: the super-block's first four bytes are d and dmin.
        let (d, dmin) = unsafe { (f16_at(b.as_ptr()), f16_at(b.as_ptr().add(2))) };
        for r in 0..R {
            let row = &parts[r];
            let mut imin = 0i32;
            for (j, &m) in mins.iter().enumerate() {
                if m != 0 {
                    imin += m * (row.bsum(i, 2 * j) + row.bsum(i, 2 * j + 1));
                }
            }
            let isum = hsum_i32(iacc[r]);
            let da = row.d(i);
            acc[r] += d * da * isum as f32 - dmin * da * imin as f32;
        }
    }
    acc
}

/// Every byte of `v` shifted right by `n` bits (0, 2, 4 or 6); bits from the neighbouring byte
/// that a 16-bit shift brings in are above bit 1 and are masked off by the caller.
#[inline]
#[target_feature(enable = "avx2")]
fn shift_right_bytes(v: __m256i, n: i32) -> __m256i {
    match n {
        0 => v,
        2 => _mm256_srli_epi16(v, 2),
        4 => _mm256_srli_epi16(v, 4),
        _ => _mm256_srli_epi16(v, 6),
    }
}

/// Six-bit codes: `low` (0..15 per byte) with bits 0-1 of each byte of `high` as bits 4-5.
#[inline]
#[target_feature(enable = "avx2")]
fn six_bits(low: __m256i, high: __m256i, m3: __m256i) -> __m256i {
    _mm256_or_si256(low, _mm256_slli_epi16(_mm256_and_si256(high, m3), 4))
}

/// Q6_K weights (210-byte super-blocks) against a Q8_K activation row. Codes are taken as
/// unsigned 0..63 for `maddubs`; the −32 offset comes back as `32·Σ scale·(16-sum of a)`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: same CPU requirements as this function.
    let r = unsafe { q6_k_rows::<1>(w, [a]) };
    r[0]
}

/// [`dot_q6_k_q8_k`] for four activation rows, each weight byte unpacked once (prefill);
/// the same results as four single-row calls.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q6_k_q8_k(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    // SAFETY: same CPU requirements as this function.
    unsafe { q6_k_rows::<4>(w, a) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_rows<const R: usize>(w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nk = w.len() / 210;
    let mut parts = [Q8kRow::EMPTY; R];
    for (p, row) in parts.iter_mut().zip(a) {
        match Q8kRow::new(row, nk) {
            Some(x) => *p = x,
            None => return [f32::NAN; R],
        }
    }
    let (m4, m3) = (_mm256_set1_epi8(15), _mm256_set1_epi8(3));
    let mut acc = [0f32; R];
    for (i, b) in w.chunks_exact(210).enumerate() {
        let sc = &b[192..208];
        let mut iacc = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            // SAFETY: 32-byte loads at 64h, 64h + 32 (ql) and 128 + 32h (qh) lie in the
            // 210-byte block.
            let (ql0, ql1, qh) = unsafe {
                (
                    _mm256_loadu_si256(b.as_ptr().add(64 * h) as *const __m256i),
                    _mm256_loadu_si256(b.as_ptr().add(64 * h + 32) as *const __m256i),
                    _mm256_loadu_si256(b.as_ptr().add(128 + 32 * h) as *const __m256i),
                )
            };
            let codes = [
                six_bits(_mm256_and_si256(ql0, m4), qh, m3),
                six_bits(_mm256_and_si256(ql1, m4), _mm256_srli_epi16(qh, 2), m3),
                six_bits(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_srli_epi16(qh, 4),
                    m3,
                ),
                six_bits(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_srli_epi16(qh, 6),
                    m3,
                ),
            ];
            for (k, c) in codes.into_iter().enumerate() {
                let j = 8 * h + 2 * k;
                let scales = _mm256_set_m128i(
                    _mm_set1_epi16(sc[j + 1] as i8 as i16),
                    _mm_set1_epi16(sc[j] as i8 as i16),
                );
                for (acc_r, row) in iacc.iter_mut().zip(&parts) {
                    // SAFETY: 32 bytes at 256i + 128h + 32k lie in the activation codes.
                    let av = unsafe {
                        _mm256_loadu_si256(
                            row.codes(i).as_ptr().add(128 * h + 32 * k) as *const __m256i
                        )
                    };
                    let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(c, av), scales);
                    *acc_r = _mm256_add_epi32(*acc_r, prod);
                }
            }
        }
        // SAFETY: bytes 208..210 of the block are d.
        let d = unsafe { f16_at(b.as_ptr().add(208)) };
        for r in 0..R {
            let row = &parts[r];
            let mut corr = 0i32;
            for (j, &s) in sc.iter().enumerate() {
                corr += s as i8 as i32 * row.bsum(i, j);
            }
            let isum = hsum_i32(iacc[r]) - 32 * corr;
            let da = row.d(i);
            let (dmin, imin) = (0f32, 0i32);
            acc[r] += d * da * isum as f32 - dmin * da * imin as f32;
        }
    }
    acc
}

/// Q5_0 weights (22-byte blocks of 32) against a Q8_0 activation row: codes from the
/// nibbles plus bit 4 from `qh`, minus 16; the sum of code × activation per block is exact
/// and scaled as [`super::blocks_ref::dot_q5_0_q8_0_ref`] does.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: same CPU requirements as this function.
    let r = unsafe { q5_0_rows::<1>(w, [a]) };
    r[0]
}

/// [`dot_q5_0_q8_0`] for four activation rows, each block's codes built once (prefill);
/// the same results as four single-row calls.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q5_0_q8_0(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    // SAFETY: same CPU requirements as this function.
    unsafe { q5_0_rows::<4>(w, a) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_rows<const R: usize>(w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = w.len() / 22;
    let mut parts = [None; R];
    for (p, row) in parts.iter_mut().zip(a) {
        match Acts::new(row, nb, false) {
            Some(x) => *p = Some(x),
            None => return [f32::NAN; R],
        }
    }
    // Byte j of the 32 gets byte j/8 of qh; OR-ing every bit but j%8 and comparing with all
    // ones tells whether bit j is set.
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bit_mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    let (m15, m16, ones) = (
        _mm256_set1_epi8(15),
        _mm256_set1_epi8(16),
        _mm256_set1_epi16(1),
    );
    let mut acc = [0f32; R];
    for (i, wb) in w.chunks_exact(22).enumerate() {
        // SAFETY: bytes 6..22 of the block are the 16 nibble bytes.
        let q = unsafe { _mm_loadu_si128(wb.as_ptr().add(6) as *const __m128i) };
        let low = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m15);
        let qh = i32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit_mask), _mm256_set1_epi8(-1));
        let code = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_and_si256(set, m16)), m16);
        let abs = _mm256_sign_epi8(code, code);
        // SAFETY: the block's first two bytes are its f16 scale.
        let d = unsafe { f16_at(wb.as_ptr()) };
        for (acc_r, acts) in acc.iter_mut().zip(parts.iter().flatten()) {
            // SAFETY: block i < nb of the activations holds 32 codes.
            let av = unsafe { _mm256_loadu_si256(acts.block(i).as_ptr() as *const __m256i) };
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(abs, _mm256_sign_epi8(av, code)), ones);
            let s = hsum_i32(p);
            let da = acts.d(i);
            *acc_r += d * da * s as f32;
        }
    }
    acc
}
