//! The Q5_0/Q8_0 GEMM tile of [`super::qgemm_x86`] on AVX-512 VNNI (256-bit `vpdpbusd`):
//! weight codes as unsigned bytes (`code + 16` for Q5_0, `code + 128` for Q8_0), each
//! (row, token) sum started at `-offset · Σ activations` and accumulated by one `vpdpbusd`
//! instead of sign, `maddubs` and `madd`. The integers are exact (no saturation in
//! `vpdpbusd`), and the float update is the reference's, so every lane still equals the
//! scalar reference dot bit for bit.

use std::arch::x86_64::*;

use super::qgemm_x86::{f16_at, lanes, per_row, per_token, reduce8, ROWS, TOKENS};
use super::Acts;

/// As [`super::qgemm_x86::q5_0_tile`].
///
/// # Safety
/// AVX2, FMA, F16C, AVX-512 VNNI and VL are available.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn q5_0_tile<const Q8: bool>(w: [&[u8]; ROWS], a: [&[u8]; TOKENS]) -> [f32; 8] {
    let bb = if Q8 { 34 } else { 22 };
    let nb = w[0].len().min(w[1].len()) / bb;
    let mut acts = [None; TOKENS];
    for (p, row) in acts.iter_mut().zip(a) {
        *p = Acts::new(row, nb, false);
    }
    let [Some(a0), Some(a1), Some(a2), Some(a3)] = acts else {
        return [f32::NAN; 8];
    };
    let acts = [a0, a1, a2, a3];
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bit_mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    let (m15, m16) = (_mm256_set1_epi8(15), _mm256_set1_epi8(16));
    // The code offset as an unsigned byte: Σ offset·a per 4 bytes via vpdpbusd.
    let offset = _mm256_set1_epi8(if Q8 { -128 } else { 16 });
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let mut u = [_mm256_setzero_si256(); ROWS];
        let mut d = [0f32; ROWS];
        for r in 0..ROWS {
            let wb = &w[r][bb * i..bb * (i + 1)];
            if Q8 {
                // SAFETY: bytes 2..34 of a Q8_0 block are its 32 codes; code + 128 is the
                // code with its top bit flipped.
                let c = unsafe { _mm256_loadu_si256(wb.as_ptr().add(2) as *const __m256i) };
                u[r] = _mm256_xor_si256(c, _mm256_set1_epi8(-128));
            } else {
                // SAFETY: bytes 6..22 of a Q5_0 block are the 16 nibble bytes.
                let q = unsafe { _mm_loadu_si128(wb.as_ptr().add(6) as *const __m128i) };
                let low = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m15);
                let qh = i32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
                let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
                let set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit_mask), _mm256_set1_epi8(-1));
                u[r] = _mm256_or_si256(low, _mm256_and_si256(set, m16));
            }
            // SAFETY: bytes 0..2 of the block are its f16 scale.
            d[r] = unsafe { f16_at(wb.as_ptr()) };
        }
        let mut v = [_mm256_setzero_si256(); 8];
        for (t, at) in acts.iter().enumerate() {
            // SAFETY: block i < nb of the activations holds 32 codes.
            let av = unsafe { _mm256_loadu_si256(at.block(i).as_ptr() as *const __m256i) };
            let neg = _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), offset, av),
            );
            for r in 0..ROWS {
                v[4 * r + t] = _mm256_dpbusd_epi32(neg, u[r], av);
            }
        }
        let s = _mm256_cvtepi32_ps(reduce8(&v));
        let da = per_token(std::array::from_fn(|t| acts[t].d(i)));
        // Reference: acc += d * da * s.
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(per_row(d), da), s));
    }
    lanes(acc)
}
