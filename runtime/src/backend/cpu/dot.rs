//! Row dot products between a weight row in a ggml block format and one activation row
//! quantized as llama.cpp does it (see [`crate::quant::ggml`]).
//!
//! Each format has a scalar reference (`*_ref`) and, on x86_64 with AVX2+FMA, a SIMD kernel
//! chosen once at start-up. Integer parts are exact in both; the float accumulation order
//! differs, so the two agree to a few ulps of the row's magnitude (tested below).

use half::{bf16, f16};
use std::sync::OnceLock;

use crate::format::GgmlType;
use crate::quant::ggml::{Q8_0_BYTES, QK};

/// f16 → f32 for every bit pattern: one load instead of a conversion in the inner loops.
fn f16_table() -> &'static [f32] {
    static T: OnceLock<Vec<f32>> = OnceLock::new();
    T.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect())
}

#[inline(always)]
fn h(t: &[f32], b: &[u8], at: usize) -> f32 {
    t[u16::from_le_bytes([b[at], b[at + 1]]) as usize]
}

/// An activation row in the Q8 layout of [`crate::quant::ggml`]: codes, then f32 scales
/// `d` (and sums `s` for Q8_1), `nb` blocks each.
#[derive(Clone, Copy)]
struct Acts<'a> {
    qs: &'a [u8],
    scales: &'a [u8],
    nb: usize,
}

impl<'a> Acts<'a> {
    /// Split `a` for `nb` blocks; `None` if it is too short.
    #[inline(always)]
    fn new(a: &'a [u8], nb: usize, with_sum: bool) -> Option<Self> {
        let need = nb * QK + nb * if with_sum { 8 } else { 4 };
        (a.len() >= need).then(|| Acts {
            qs: &a[..nb * QK],
            scales: &a[nb * QK..need],
            nb,
        })
    }
    #[inline(always)]
    fn d(&self, i: usize) -> f32 {
        f32::from_le_bytes(self.scales[4 * i..4 * i + 4].try_into().unwrap())
    }
    #[inline(always)]
    fn s(&self, i: usize) -> f32 {
        let j = self.nb + i;
        f32::from_le_bytes(self.scales[4 * j..4 * j + 4].try_into().unwrap())
    }
    #[inline(always)]
    fn block(&self, i: usize) -> &'a [u8] {
        &self.qs[i * QK..(i + 1) * QK]
    }
}

/// Whether the AVX2 kernels are used (decided once).
pub fn simd_level() -> &'static str {
    if has_avx2() {
        "avx2"
    } else {
        "scalar"
    }
}

pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static A: OnceLock<bool> = OnceLock::new();
        *A.get_or_init(|| {
            std::env::var_os("SUANPAN_FORCE_SCALAR").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot product of a weight row of type `ty` with an activation row already converted to the
/// format [`crate::quant::ggml::ActFormat::for_weights`] gives for `ty`.
#[inline]
pub fn dot(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2, FMA and F16C were detected at run time; the kernels only read
        // within `w` and `a`, whose lengths they check against the block count.
        unsafe {
            return match ty {
                GgmlType::Q4_0 => x86::dot_q4_0_q8_0(w, a),
                GgmlType::Q4_1 => x86::dot_q4_1_q8_1(w, a),
                GgmlType::Q8_0 => x86::dot_q8_0_q8_0(w, a),
                GgmlType::F16 => x86::dot_f16_f32(w, bytemuck::cast_slice(a)),
                _ => dot_ref(ty, w, a),
            };
        }
    }
    dot_ref(ty, w, a)
}

/// Four dot products of one weight row with four activation rows (prefill): the weight
/// block is unpacked once and applied to all four. Same results as four [`dot`] calls.
#[inline]
pub fn dot4(ty: GgmlType, w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2, FMA and F16C were detected at run time; the kernels only read
        // within `w` and each `a[i]`, whose lengths bound the block count.
        unsafe {
            match ty {
                GgmlType::Q4_0 => return x86::dot4_q4_0_q8_0(w, a),
                GgmlType::Q4_1 => return x86::dot4_q4_1_q8_1(w, a),
                GgmlType::Q8_0 => return x86::dot4_q8_0_q8_0(w, a),
                _ => {}
            }
        }
    }
    [
        dot(ty, w, a[0]),
        dot(ty, w, a[1]),
        dot(ty, w, a[2]),
        dot(ty, w, a[3]),
    ]
}

/// The scalar reference for [`dot`].
pub fn dot_ref(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    match ty {
        GgmlType::Q4_0 => dot_q4_0_q8_0_ref(w, a),
        GgmlType::Q4_1 => dot_q4_1_q8_1_ref(w, a),
        GgmlType::Q8_0 => dot_q8_0_q8_0_ref(w, a),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            dot_dense_ref(ty, w, bytemuck::cast_slice(a))
        }
        _ => f32::NAN,
    }
}

pub fn dot_q4_0_q8_0_ref(w: &[u8], a: &[u8]) -> f32 {
    let t = f16_table();
    let nb = w.len() / 18;
    let Some(a) = Acts::new(a, nb, false) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(18).enumerate() {
        let q = a.block(i);
        let mut s = 0i32;
        for j in 0..16 {
            s += ((wb[2 + j] & 15) as i32 - 8) * (q[j] as i8 as i32);
            s += ((wb[2 + j] >> 4) as i32 - 8) * (q[j + 16] as i8 as i32);
        }
        acc += h(t, wb, 0) * a.d(i) * s as f32;
    }
    acc
}

pub fn dot_q4_1_q8_1_ref(w: &[u8], a: &[u8]) -> f32 {
    let t = f16_table();
    let nb = w.len() / 20;
    let Some(a) = Acts::new(a, nb, true) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(20).enumerate() {
        let q = a.block(i);
        let mut s = 0i32;
        for j in 0..16 {
            s += (wb[4 + j] & 15) as i32 * (q[j] as i8 as i32);
            s += (wb[4 + j] >> 4) as i32 * (q[j + 16] as i8 as i32);
        }
        acc += h(t, wb, 0) * a.d(i) * s as f32 + h(t, wb, 2) * a.s(i);
    }
    acc
}

pub fn dot_q8_0_q8_0_ref(w: &[u8], a: &[u8]) -> f32 {
    let t = f16_table();
    let nb = w.len() / Q8_0_BYTES;
    let Some(a) = Acts::new(a, nb, false) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(Q8_0_BYTES).enumerate() {
        let q = a.block(i);
        let s: i32 = (0..QK)
            .map(|j| (wb[2 + j] as i8 as i32) * (q[j] as i8 as i32))
            .sum();
        acc += h(t, wb, 0) * a.d(i) * s as f32;
    }
    acc
}

/// Dense weights (F32, F16, BF16) against f32 activations, accumulated in 8 lanes.
pub fn dot_dense_ref(ty: GgmlType, w: &[u8], x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    match ty {
        GgmlType::F32 => {
            for (i, (c, &xv)) in w.chunks_exact(4).zip(x).enumerate() {
                lanes[i % 8] += f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * xv;
            }
        }
        GgmlType::F16 => {
            let t = f16_table();
            for (i, (c, &xv)) in w.chunks_exact(2).zip(x).enumerate() {
                lanes[i % 8] += t[u16::from_le_bytes([c[0], c[1]]) as usize] * xv;
            }
        }
        GgmlType::BF16 => {
            for (i, (c, &xv)) in w.chunks_exact(2).zip(x).enumerate() {
                lanes[i % 8] += bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32() * xv;
            }
        }
        _ => return f32::NAN,
    }
    lanes.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
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
}

/// `Σ k[i]·x[i]` for an f16 row (a cached key) and f32 values.
#[inline]
pub fn dot_f16(k: &[f16], x: &[f32]) -> f32 {
    let kb: &[u8] = bytemuck::cast_slice(k);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected; the kernel stays within both slices.
        return unsafe { x86::dot_f16_f32(kb, x) };
    }
    dot_dense_ref(GgmlType::F16, kb, x)
}

/// `y += a·v` for an f16 row (a cached value).
#[inline]
pub fn axpy_f16(y: &mut [f32], a: f32, v: &[f16]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected; the kernel stays within both slices.
        return unsafe { x86::axpy_f16(y, a, bytemuck::cast_slice(v)) };
    }
    for (o, h) in y.iter_mut().zip(v) {
        *o += a * h.to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::ggml::{quantize_row, ActFormat};

    /// Deterministic pseudo-random bytes/floats without a dependency.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn random_weights(ty: GgmlType, n: usize, seed: &mut u64) -> Vec<u8> {
        let (bl, bb) = ty.block_geometry();
        let mut w = vec![0u8; n / bl * bb];
        for b in w.iter_mut() {
            *b = rng(seed) as u8;
        }
        // Keep the f16 scales finite and modest.
        let scale_bytes: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 => &[0, 2],
            GgmlType::F16 => {
                return (0..n)
                    .flat_map(|_| {
                        f16::from_f32((rng(seed) % 2000) as f32 / 1000.0 - 1.0).to_le_bytes()
                    })
                    .collect()
            }
            _ => &[],
        };
        for blk in w.chunks_exact_mut(bb) {
            for &o in scale_bytes {
                let v = f16::from_f32((rng(seed) % 1000) as f32 / 1e4 - 0.05);
                blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        w
    }

    #[test]
    fn simd_matches_scalar_reference() {
        let mut seed = 0x9E3779B97F4A7C15u64;
        for &ty in &[
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::F16,
        ] {
            for &n in &[32usize, 64, 576, 1536, 32 * 7] {
                let w = random_weights(ty, n, &mut seed);
                let x: Vec<f32> = (0..n)
                    .map(|_| (rng(&mut seed) % 20001) as f32 / 1e4 - 1.0)
                    .collect();
                let fmt = ActFormat::for_weights(ty);
                let mut a = vec![0u8; fmt.row_bytes(n)];
                quantize_row(fmt, &x, &mut a);
                let r = dot_ref(ty, &w, &a);
                let s = dot(ty, &w, &a);
                // The 4-token kernel gives exactly the single-token kernel's bits.
                let xr: Vec<f32> = x.iter().rev().copied().collect();
                let mut a2 = vec![0u8; a.len()];
                quantize_row(fmt, &xr, &mut a2);
                let four = dot4(ty, &w, [&a, &a2, &a, &a2]);
                assert_eq!(four[0].to_bits(), s.to_bits(), "{ty} n={n} dot4");
                assert_eq!(four[2].to_bits(), s.to_bits(), "{ty} n={n} dot4");
                assert_eq!(
                    four[1].to_bits(),
                    dot(ty, &w, &a2).to_bits(),
                    "{ty} n={n} dot4"
                );
                // Tolerance: relative to the sum of |terms|, float reassociation only.
                let mut deq = vec![0f32; n];
                crate::quant::ggml::dequantize_row(ty, &w, &mut deq);
                let mag: f32 = deq.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum::<f32>() + 1e-3;
                assert!(
                    (r - s).abs() <= 1e-5 * mag + 1e-6,
                    "{ty} n={n}: ref {r} simd {s}"
                );
                // And the quantized dot is close to the exact f32 dot.
                let exact: f32 = deq.iter().zip(&x).map(|(a, b)| a * b).sum();
                assert!(
                    (exact - r).abs() <= 0.02 * mag,
                    "{ty} n={n}: exact {exact} q {r}"
                );
            }
        }
    }
}
