//! AVX2 / FMA / F16C kernels of the ggml block dot products.

use super::{f16_table, h, Acts, Q8_0_BYTES, QK};
use std::arch::x86_64::*;

/// The f16 at `p` as f32 (F16C; exact, same value as the table lookup).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY (caller): two bytes at `p` are readable.
    let bits = std::ptr::read_unaligned(p as *const u16);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The two consecutive f16 at `p` (Q4_1's d and m) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_pair_at(p: *const u8) -> (f32, f32) {
    // SAFETY (caller): four bytes at `p` are readable.
    let bits = std::ptr::read_unaligned(p as *const i32);
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

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

/// 32 unsigned nibbles of a 16-byte block, low nibbles first (elements 0..15, then 16..31).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let hi = _mm_srli_epi16(q, 4);
    _mm256_and_si256(_mm256_set_m128i(hi, q), _mm256_set1_epi8(15))
}

/// Σ x·y over 32 signed bytes, as 8 i32 lanes converted to f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot_i8(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1));
    _mm256_cvtepi32_ps(p)
}

/// 32 signed codes of block `i` of an activation row.
#[inline(always)]
unsafe fn load_block(a: &Acts, i: usize) -> __m256i {
    // SAFETY (caller): i < a.nb, so 32 bytes at i*32 lie inside `a.qs`.
    _mm256_loadu_si256(a.qs.as_ptr().add(i * QK) as *const __m256i)
}

fn acts4(a: [&[u8]; 4], nb: usize, with_sum: bool) -> Option<[Acts<'_>; 4]> {
    Some([
        Acts::new(a[0], nb, with_sum)?,
        Acts::new(a[1], nb, with_sum)?,
        Acts::new(a[2], nb, with_sum)?,
        Acts::new(a[3], nb, with_sum)?,
    ])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / 18;
    let Some(a) = Acts::new(a, nb, false) else {
        return f32::NAN;
    };
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let wb = &w[i * 18..i * 18 + 18];
        // SAFETY: `wb` has 16 bytes after offset 2; i < nb blocks of `a`.
        let q4 = _mm256_sub_epi8(nibbles(wb.as_ptr().add(2)), _mm256_set1_epi8(8));
        let d = _mm256_set1_ps(f16_at(wb.as_ptr()) * a.d(i));
        acc = _mm256_fmadd_ps(d, dot_i8(q4, load_block(&a, i)), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / 20;
    let Some(a) = Acts::new(a, nb, true) else {
        return f32::NAN;
    };
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    let ones = _mm256_set1_epi16(1);
    for i in 0..nb {
        let wb = &w[i * 20..i * 20 + 20];
        // SAFETY: `wb` has 16 bytes after offset 4; i < nb blocks of `a`.
        let q4 = nibbles(wb.as_ptr().add(4));
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q4, load_block(&a, i)), ones);
        let (dw, mw) = f16_pair_at(wb.as_ptr());
        let d = _mm256_set1_ps(dw * a.d(i));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
        mins += mw * a.s(i);
    }
    hsum(acc) + mins
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / Q8_0_BYTES;
    let Some(a) = Acts::new(a, nb, false) else {
        return f32::NAN;
    };
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let wb = &w[i * Q8_0_BYTES..(i + 1) * Q8_0_BYTES];
        // SAFETY: `wb` has 32 bytes after offset 2; i < nb blocks of `a`.
        let x = _mm256_loadu_si256(wb.as_ptr().add(2) as *const __m256i);
        let d = _mm256_set1_ps(f16_at(wb.as_ptr()) * a.d(i));
        acc = _mm256_fmadd_ps(d, dot_i8(x, load_block(&a, i)), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q4_1_q8_1(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    let nb = w.len() / 20;
    let Some(a) = acts4(a, nb, true) else {
        return [f32::NAN; 4];
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins = [0f32; 4];
    let ones = _mm256_set1_epi16(1);
    for i in 0..nb {
        let wb = &w[i * 20..i * 20 + 20];
        // SAFETY: `wb` has 16 bytes after offset 4; i < nb blocks of every `a[k]`.
        let q4 = nibbles(wb.as_ptr().add(4));
        let (dw, mw) = f16_pair_at(wb.as_ptr());
        for k in 0..4 {
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q4, load_block(&a[k], i)), ones);
            acc[k] = _mm256_fmadd_ps(
                _mm256_set1_ps(dw * a[k].d(i)),
                _mm256_cvtepi32_ps(p),
                acc[k],
            );
            mins[k] += mw * a[k].s(i);
        }
    }
    [
        hsum(acc[0]) + mins[0],
        hsum(acc[1]) + mins[1],
        hsum(acc[2]) + mins[2],
        hsum(acc[3]) + mins[3],
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q4_0_q8_0(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    let nb = w.len() / 18;
    let Some(a) = acts4(a, nb, false) else {
        return [f32::NAN; 4];
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        let wb = &w[i * 18..i * 18 + 18];
        // SAFETY: `wb` has 16 bytes after offset 2; i < nb blocks of every `a[k]`.
        let q4 = _mm256_sub_epi8(nibbles(wb.as_ptr().add(2)), _mm256_set1_epi8(8));
        let dw = f16_at(wb.as_ptr());
        for k in 0..4 {
            acc[k] = _mm256_fmadd_ps(
                _mm256_set1_ps(dw * a[k].d(i)),
                dot_i8(q4, load_block(&a[k], i)),
                acc[k],
            );
        }
    }
    [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q8_0_q8_0(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    let nb = w.len() / Q8_0_BYTES;
    let Some(a) = acts4(a, nb, false) else {
        return [f32::NAN; 4];
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        let wb = &w[i * Q8_0_BYTES..(i + 1) * Q8_0_BYTES];
        // SAFETY: `wb` has 32 bytes after offset 2; i < nb blocks of every `a[k]`.
        let x = _mm256_loadu_si256(wb.as_ptr().add(2) as *const __m256i);
        let dw = f16_at(wb.as_ptr());
        for k in 0..4 {
            acc[k] = _mm256_fmadd_ps(
                _mm256_set1_ps(dw * a[k].d(i)),
                dot_i8(x, load_block(&a[k], i)),
                acc[k],
            );
        }
    }
    [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16_f32(w: &[u8], x: &[f32]) -> f32 {
    let n = (w.len() / 2).min(x.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements are in bounds of both slices.
        let wv = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i));
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        acc = _mm256_fmadd_ps(wv, xv, acc);
        i += 8;
    }
    let mut s = hsum(acc);
    let t = f16_table();
    while i < n {
        s += h(t, w, 2 * i) * x[i];
        i += 1;
    }
    s
}

/// 8 weights at element `i` of a dense row as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(ty: crate::format::GgmlType, w: &[u8], i: usize) -> __m256 {
    use crate::format::GgmlType;
    // SAFETY (caller): elements i..i+8 are inside `w`.
    match ty {
        GgmlType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i)),
        GgmlType::BF16 => {
            let h = _mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        }
        _ => _mm256_loadu_ps(w.as_ptr().add(4 * i) as *const f32),
    }
}

/// One dense (F16, BF16 or F32) weight row against `K` f32 activation rows: each 8
/// weights are converted once and applied to every row (prefill), one FMA lane set per
/// row, so row `k`'s result does not depend on `K`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_dense<const K: usize>(
    ty: crate::format::GgmlType,
    w: &[u8],
    x: [&[f32]; K],
) -> [f32; K] {
    let (_, eb) = ty.block_geometry();
    let mut n = w.len() / eb;
    for xr in &x {
        n = n.min(xr.len());
    }
    let mut acc = [_mm256_setzero_ps(); K];
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements are in bounds of `w` and of every row.
        let wv = load8(ty, w, i);
        for k in 0..K {
            acc[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[k].as_ptr().add(i)), acc[k]);
        }
        i += 8;
    }
    std::array::from_fn(|k| hsum(acc[k]) + vec_tail(ty, w, x[k], i, n))
}

/// `Σ w[j]·x[j]` for the scalar tail `i..n`.
fn vec_tail(ty: crate::format::GgmlType, w: &[u8], x: &[f32], i: usize, n: usize) -> f32 {
    let mut s = 0f32;
    for j in i..n {
        let mut one = [0f32; 1];
        let (_, eb) = ty.block_geometry();
        crate::quant::ggml::dequantize_row(ty, &w[j * eb..(j + 1) * eb], &mut one);
        s += one[0] * x[j];
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_f16(y: &mut [f32], a: f32, v: &[u8]) {
    let n = (v.len() / 2).min(y.len());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements are in bounds of both slices.
        let vv = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(2 * i) as *const __m128i));
        let yp = y.as_mut_ptr().add(i);
        _mm256_storeu_ps(yp, _mm256_fmadd_ps(av, vv, _mm256_loadu_ps(yp)));
        i += 8;
    }
    let t = f16_table();
    while i < n {
        y[i] += a * h(t, v, 2 * i);
        i += 1;
    }
}
