//! AVX2 df12 rows × one token (decode) with the decode fused in registers: each 32 values
//! are rebuilt as BF16 by table lookup (as [`super::df12_kernel`]'s AVX2 decode) and fed
//! straight to the FMAs, each row in exactly the order of the BF16 kernels (`dot::x86`'s
//! `dot4_dense` and the f32 GEMM tile: one 8-lane accumulator, element `i` in lane `i % 8`,
//! groups of 8 in order, then the same horizontal sum), so the results are bitwise the
//! BF16 matrix's. Several rows run at once, so their FMA chains overlap and the decode's
//! shuffles fill the latency. Rows holding an escape are not handled here (the caller
//! decodes them into a buffer).

use std::arch::x86_64::*;

/// Horizontal sum, the same sequence as the BF16 kernel's.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `Σ_j w_r[j]·x[j]` for `R` df12 rows of `cols` values starting at values `starts[r]`
/// (each even), `cols` a multiple of 32, against one activation row of at least `cols`
/// f32 (decode). Each row has its own accumulator, so the `R` FMA chains run side by side
/// where one row alone waits on the FMA latency. No row may hold an escape (its exponents
/// all come from `table`).
///
/// # Safety
/// AVX2 and FMA are available; for every row, `sm[start..start + cols]` and
/// `codes[start / 2..(start + cols) / 2]` are in bounds (checked by the caller).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_rows<const R: usize>(
    table: &[u8; 16],
    sm: &[u8],
    codes: &[u8],
    starts: [usize; R],
    cols: usize,
    x: &[f32],
) -> [f32; R] {
    debug_assert!(cols.is_multiple_of(32) && x.len() >= cols);
    debug_assert!(starts
        .iter()
        .all(|&s| s.is_multiple_of(2) && s + cols <= sm.len() && (s + cols) / 2 <= codes.len()));
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    for c in 0..16 {
        hi[c] = table[c] >> 1;
        lo[c] = (table[c] & 1) << 7;
    }
    // SAFETY (whole fn): the loads read sm[s + i..+32], codes[(s + i)/2..+16] for every
    // row start s and x[i..i + 32], for i + 32 <= cols: in bounds by the caller's contract.
    let hi_t = _mm256_broadcastsi128_si256(_mm_loadu_si128(hi.as_ptr() as *const __m128i));
    let lo_t = _mm256_broadcastsi128_si256(_mm_loadu_si128(lo.as_ptr() as *const __m128i));
    let m0f = _mm_set1_epi8(0x0f);
    let m80 = _mm256_set1_epi8(0x80u8 as i8);
    let m7f = _mm256_set1_epi8(0x7f);
    let mut acc = [_mm256_setzero_ps(); R];
    let f32s = |h: __m128i| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    let mut i = 0;
    while i + 32 <= cols {
        let xv: [__m256; 4] = std::array::from_fn(|g| _mm256_loadu_ps(x.as_ptr().add(i + 8 * g)));
        for r in 0..R {
            let at = starts[r] + i;
            let c = _mm_loadu_si128(codes.as_ptr().add(at / 2) as *const __m128i);
            let cl = _mm_and_si128(c, m0f);
            let ch = _mm_and_si128(_mm_srli_epi16(c, 4), m0f);
            let c = _mm256_set_m128i(_mm_unpackhi_epi8(cl, ch), _mm_unpacklo_epi8(cl, ch));
            let s = _mm256_loadu_si256(sm.as_ptr().add(at) as *const __m256i);
            let h = _mm256_or_si256(_mm256_and_si256(s, m80), _mm256_shuffle_epi8(hi_t, c));
            let l = _mm256_or_si256(_mm256_and_si256(s, m7f), _mm256_shuffle_epi8(lo_t, c));
            let u0 = _mm256_unpacklo_epi8(l, h); // values 0..8 | 16..24
            let u1 = _mm256_unpackhi_epi8(l, h); // values 8..16 | 24..32
                                                 // In value order, as the BF16 kernel adds them.
            acc[r] = _mm256_fmadd_ps(f32s(_mm256_castsi256_si128(u0)), xv[0], acc[r]);
            acc[r] = _mm256_fmadd_ps(f32s(_mm256_castsi256_si128(u1)), xv[1], acc[r]);
            acc[r] = _mm256_fmadd_ps(f32s(_mm256_extracti128_si256(u0, 1)), xv[2], acc[r]);
            acc[r] = _mm256_fmadd_ps(f32s(_mm256_extracti128_si256(u1, 1)), xv[3], acc[r]);
        }
        i += 32;
    }
    // `+ 0.0`: the BF16 kernel adds its (here empty) scalar tail the same way.
    std::array::from_fn(|r| hsum(acc[r]) + 0f32)
}
