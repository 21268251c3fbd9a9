//! AVX2 GEMM tiles for the block types of llama.cpp's Q4_K_M mixes (prefill): 2 weight rows
//! × 4 activation rows per pass. Each weight block is unpacked once per tile and each
//! activation block loaded once per tile; the 8 (row, token) integer sums of a block are
//! reduced together into one vector (lane `4·row + token`), and the per-block float update
//! runs on that vector, lane by lane the same expression as the scalar reference
//! ([`super::blocks_ref`], [`super::dot_q5_0_q8_0_ref`]'s order). Integer sums are exact in
//! any order, so every lane equals the reference bit for bit (tested).

use std::arch::x86_64::*;

use super::Acts;
use crate::quant::ggml::Q8kRow;
use crate::quant::kquant::scale_min_k4;

/// Weight rows per tile.
pub const ROWS: usize = 2;
/// Activation rows (tokens) per tile.
pub const TOKENS: usize = 4;

/// The f16 at `p` as f32 (F16C; exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY (caller): two bytes at `p` are readable.
    let bits = unsafe { std::ptr::read_unaligned(p as *const u16) };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Lane `k` of the result is the sum of the 8 lanes of `v[k]` (exact i32 arithmetic).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn reduce8(v: &[__m256i; 8]) -> __m256i {
    let a0 = _mm256_hadd_epi32(v[0], v[1]);
    let a1 = _mm256_hadd_epi32(v[2], v[3]);
    let a2 = _mm256_hadd_epi32(v[4], v[5]);
    let a3 = _mm256_hadd_epi32(v[6], v[7]);
    // b0 = [v0..v3 partial (lanes 0-3 of each) | v0..v3 partial (lanes 4-7)], b1 for v4..v7.
    let b0 = _mm256_hadd_epi32(a0, a1);
    let b1 = _mm256_hadd_epi32(a2, a3);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(b0, b1),
        _mm256_permute2x128_si256::<0x31>(b0, b1),
    )
}

/// Lane `4r + t` = `row[r]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn per_row(row: [f32; ROWS]) -> __m256 {
    _mm256_set_m128(_mm_set1_ps(row[1]), _mm_set1_ps(row[0]))
}

/// Lane `4r + t` = `tok[t]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn per_token(tok: [f32; TOKENS]) -> __m256 {
    let v = _mm_set_ps(tok[3], tok[2], tok[1], tok[0]);
    _mm256_set_m128(v, v)
}

pub(super) fn lanes(v: __m256) -> [f32; 8] {
    // SAFETY: __m256 and [f32; 8] have the same size; every bit pattern is valid.
    unsafe { std::mem::transmute::<__m256, [f32; 8]>(v) }
}

/// Q5_0 (`Q8` false, 22-byte blocks) or Q8_0 (`Q8` true, 34-byte blocks) weight rows ×
/// Q8_0 activation rows: lane `4r + t` of the result is `dot_q5_0_q8_0_ref(w[r], a[t])`
/// (`dot_q8_0_q8_0_ref`); NaN lanes if an activation row is too short.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
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
    // As `kquant_x86::q5_0_rows`: byte j of the 32 gets byte j/8 of qh, and OR-ing every bit
    // but j%8 then comparing with all ones tells whether bit j is set.
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
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let mut code = [_mm256_setzero_si256(); ROWS];
        let mut abs = [_mm256_setzero_si256(); ROWS];
        let mut d = [0f32; ROWS];
        for r in 0..ROWS {
            let wb = &w[r][bb * i..bb * (i + 1)];
            if Q8 {
                // SAFETY: bytes 2..34 of a Q8_0 block are its 32 codes.
                code[r] = unsafe { _mm256_loadu_si256(wb.as_ptr().add(2) as *const __m256i) };
            } else {
                // SAFETY: bytes 6..22 of a Q5_0 block are the 16 nibble bytes.
                let q = unsafe { _mm_loadu_si128(wb.as_ptr().add(6) as *const __m128i) };
                let low = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m15);
                let qh = i32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
                let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
                let set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit_mask), _mm256_set1_epi8(-1));
                code[r] = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_and_si256(set, m16)), m16);
            }
            abs[r] = _mm256_sign_epi8(code[r], code[r]);
            // SAFETY: bytes 0..2 of the block are its f16 scale.
            d[r] = unsafe { f16_at(wb.as_ptr()) };
        }
        let mut v = [_mm256_setzero_si256(); 8];
        for (t, at) in acts.iter().enumerate() {
            // SAFETY: block i < nb of the activations holds 32 codes.
            let av = unsafe { _mm256_loadu_si256(at.block(i).as_ptr() as *const __m256i) };
            for r in 0..ROWS {
                let p = _mm256_maddubs_epi16(abs[r], _mm256_sign_epi8(av, code[r]));
                v[4 * r + t] = _mm256_madd_epi16(p, ones);
            }
        }
        let s = _mm256_cvtepi32_ps(reduce8(&v));
        let da = per_token(std::array::from_fn(|t| acts[t].d(i)));
        // Reference: acc += d * da * s.
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(per_row(d), da), s));
    }
    lanes(acc)
}

/// The per-super-block float update of the K-quant reference, on 8 lanes:
/// `acc += d * da * isum - dmin * da * imin`.
#[inline]
#[target_feature(enable = "avx2")]
fn kquant_update(
    acc: __m256,
    d: __m256,
    dmin: __m256,
    da: __m256,
    isum: __m256i,
    imin: __m256i,
) -> __m256 {
    let t1 = _mm256_mul_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(isum));
    let t2 = _mm256_mul_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(imin));
    _mm256_add_ps(acc, _mm256_sub_ps(t1, t2))
}

fn q8k_rows(a: [&[u8]; TOKENS], nk: usize) -> Option<[Q8kRow<'_>; TOKENS]> {
    Some([
        Q8kRow::new(a[0], nk)?,
        Q8kRow::new(a[1], nk)?,
        Q8kRow::new(a[2], nk)?,
        Q8kRow::new(a[3], nk)?,
    ])
}

/// Q4_K (`FIVE` false) or Q5_K (`FIVE` true) weight rows × Q8_K activation rows: lane
/// `4r + t` is `dot_q8k_ref(w[r], a[t])`; NaN lanes if an activation row is too short.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_k_tile<const FIVE: bool>(w: [&[u8]; ROWS], a: [&[u8]; TOKENS]) -> [f32; 8] {
    let (bb, qs_at) = if FIVE { (176, 48) } else { (144, 16) };
    let nk = w[0].len().min(w[1].len()) / bb;
    let Some(rows) = q8k_rows(a, nk) else {
        return [f32::NAN; 8];
    };
    let mask = _mm256_set1_epi8(15);
    let (one, m16) = (_mm256_set1_epi8(1), _mm256_set1_epi8(16));
    let mut acc = _mm256_setzero_ps();
    for i in 0..nk {
        let b: [&[u8]; ROWS] = std::array::from_fn(|r| &w[r][bb * i..bb * (i + 1)]);
        let mut sc = [[0i16; 8]; ROWS];
        let mut mins = [[0i16; 16]; ROWS];
        for r in 0..ROWS {
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, &b[r][4..16]);
                sc[r][j] = s as i16;
                mins[r][2 * j] = m as i16;
                mins[r][2 * j + 1] = m as i16;
            }
        }
        // Σ_j min_j · (bsum 2j + bsum 2j+1), per (row, token), as 8 i32 lanes each.
        let mut m = [_mm256_setzero_si256(); 8];
        // SAFETY: `mins[r]` is 16 i16 and each token's sums of super-block i are 32 bytes.
        let minv: [__m256i; ROWS] = std::array::from_fn(|r| unsafe {
            _mm256_loadu_si256(mins[r].as_ptr() as *const __m256i)
        });
        for (t, row) in rows.iter().enumerate() {
            let bs = unsafe { _mm256_loadu_si256(row.bsums(i).as_ptr() as *const __m256i) };
            for r in 0..ROWS {
                m[4 * r + t] = _mm256_madd_epi16(minv[r], bs);
            }
        }
        let mut v = [_mm256_setzero_si256(); 8];
        for p in 0..4 {
            let mut lo = [_mm256_setzero_si256(); ROWS];
            let mut hi = [_mm256_setzero_si256(); ROWS];
            for r in 0..ROWS {
                // SAFETY: 32 bytes at qs_at + 32p ≤ bb of the block (and qh at 16..48).
                let q4 = unsafe {
                    _mm256_loadu_si256(b[r].as_ptr().add(qs_at + 32 * p) as *const __m256i)
                };
                lo[r] = _mm256_and_si256(q4, mask);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(q4, 4), mask);
                if FIVE {
                    let qh = unsafe { _mm256_loadu_si256(b[r].as_ptr().add(16) as *const __m256i) };
                    let shifted = match p {
                        0 => qh,
                        1 => _mm256_srli_epi16(qh, 2),
                        2 => _mm256_srli_epi16(qh, 4),
                        _ => _mm256_srli_epi16(qh, 6),
                    };
                    let b_lo = _mm256_and_si256(shifted, one);
                    let b_hi = _mm256_and_si256(_mm256_srli_epi16(shifted, 1), one);
                    lo[r] =
                        _mm256_or_si256(lo[r], _mm256_and_si256(_mm256_cmpeq_epi8(b_lo, one), m16));
                    hi[r] =
                        _mm256_or_si256(hi[r], _mm256_and_si256(_mm256_cmpeq_epi8(b_hi, one), m16));
                }
            }
            for (t, row) in rows.iter().enumerate() {
                let q8 = row.codes(i);
                // SAFETY: 32 bytes at 64p (+32) ≤ 256 of `q8`.
                let (a_lo, a_hi) = unsafe {
                    (
                        _mm256_loadu_si256(q8.as_ptr().add(64 * p) as *const __m256i),
                        _mm256_loadu_si256(q8.as_ptr().add(64 * p + 32) as *const __m256i),
                    )
                };
                for r in 0..ROWS {
                    let s_lo = _mm256_set1_epi16(sc[r][2 * p]);
                    let s_hi = _mm256_set1_epi16(sc[r][2 * p + 1]);
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], a_lo), s_lo);
                    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], a_hi), s_hi);
                    let k = 4 * r + t;
                    v[k] = _mm256_add_epi32(v[k], _mm256_add_epi32(p_lo, p_hi));
                }
            }
        }
        // SAFETY: the super-block's first four bytes are d and dmin.
        let dd: [(f32, f32); ROWS] = std::array::from_fn(|r| unsafe {
            (f16_at(b[r].as_ptr()), f16_at(b[r].as_ptr().add(2)))
        });
        acc = kquant_update(
            acc,
            per_row(dd.map(|x| x.0)),
            per_row(dd.map(|x| x.1)),
            per_token(std::array::from_fn(|t| rows[t].d(i))),
            reduce8(&v),
            reduce8(&m),
        );
    }
    lanes(acc)
}

/// Six-bit codes: `low` (0..15 per byte) with bits 0-1 of each byte of `high` as bits 4-5.
#[inline]
#[target_feature(enable = "avx2")]
fn six_bits(low: __m256i, high: __m256i, m3: __m256i) -> __m256i {
    _mm256_or_si256(low, _mm256_slli_epi16(_mm256_and_si256(high, m3), 4))
}

/// Q6_K weight rows × Q8_K activation rows: lane `4r + t` is `dot_q8k_ref(w[r], a[t])`
/// (codes unsigned 0..63 for `maddubs`, the −32 offset back as `32·Σ scale·16-sum`); NaN
/// lanes if an activation row is too short.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k_tile(w: [&[u8]; ROWS], a: [&[u8]; TOKENS]) -> [f32; 8] {
    let nk = w[0].len().min(w[1].len()) / 210;
    let Some(rows) = q8k_rows(a, nk) else {
        return [f32::NAN; 8];
    };
    let (m4, m3) = (_mm256_set1_epi8(15), _mm256_set1_epi8(3));
    let mut acc = _mm256_setzero_ps();
    for i in 0..nk {
        let b: [&[u8]; ROWS] = std::array::from_fn(|r| &w[r][210 * i..210 * (i + 1)]);
        let mut v = [_mm256_setzero_si256(); 8];
        // The offset: 32 · Σ_j scale_j · bsum_j, subtracted from each pair's lanes.
        // SAFETY: bytes 192..208 of a block are the 16 scales; sums are 32 bytes.
        let scv: [__m256i; ROWS] = std::array::from_fn(|r| unsafe {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(b[r].as_ptr().add(192) as *const __m128i))
        });
        for (t, row) in rows.iter().enumerate() {
            let bs = unsafe { _mm256_loadu_si256(row.bsums(i).as_ptr() as *const __m256i) };
            for r in 0..ROWS {
                v[4 * r + t] = _mm256_sub_epi32(
                    v[4 * r + t],
                    _mm256_slli_epi32(_mm256_madd_epi16(scv[r], bs), 5),
                );
            }
        }
        for h in 0..2 {
            let mut codes = [[_mm256_setzero_si256(); 4]; ROWS];
            for r in 0..ROWS {
                // SAFETY: 32-byte loads at 64h, 64h + 32 (ql) and 128 + 32h (qh) lie in the
                // 210-byte block.
                let (ql0, ql1, qh) = unsafe {
                    (
                        _mm256_loadu_si256(b[r].as_ptr().add(64 * h) as *const __m256i),
                        _mm256_loadu_si256(b[r].as_ptr().add(64 * h + 32) as *const __m256i),
                        _mm256_loadu_si256(b[r].as_ptr().add(128 + 32 * h) as *const __m256i),
                    )
                };
                codes[r] = [
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
            }
            #[allow(clippy::needless_range_loop)] // k picks the code vector of every row
            for k in 0..4 {
                let j = 8 * h + 2 * k;
                let scales: [__m256i; ROWS] = std::array::from_fn(|r| {
                    _mm256_set_m128i(
                        _mm_set1_epi16(b[r][192 + j + 1] as i8 as i16),
                        _mm_set1_epi16(b[r][192 + j] as i8 as i16),
                    )
                });
                for (t, row) in rows.iter().enumerate() {
                    // SAFETY: 32 bytes at 128h + 32k lie in the super-block's 256 codes.
                    let av = unsafe {
                        _mm256_loadu_si256(
                            row.codes(i).as_ptr().add(128 * h + 32 * k) as *const __m256i
                        )
                    };
                    for r in 0..ROWS {
                        let prod =
                            _mm256_madd_epi16(_mm256_maddubs_epi16(codes[r][k], av), scales[r]);
                        v[4 * r + t] = _mm256_add_epi32(v[4 * r + t], prod);
                    }
                }
            }
        }
        // SAFETY: bytes 208..210 of a block are d.
        let d: [f32; ROWS] = std::array::from_fn(|r| unsafe { f16_at(b[r].as_ptr().add(208)) });
        acc = kquant_update(
            acc,
            per_row(d),
            _mm256_setzero_ps(),
            per_token(std::array::from_fn(|t| rows[t].d(i))),
            reduce8(&v),
            _mm256_setzero_si256(),
        );
    }
    lanes(acc)
}
