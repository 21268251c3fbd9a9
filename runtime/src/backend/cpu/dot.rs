//! Row dot products between a weight row in a ggml block format and one activation row
//! quantized as llama.cpp does it (see [`crate::quant::ggml`]).
//!
//! Each format has a scalar reference (`*_ref`) and a SIMD kernel chosen once at start-up:
//! AVX2+FMA on x86_64, NEON on aarch64. Integer parts are exact in all; the SIMD kernels
//! reassociate the float accumulation, so they agree with the reference to a few ulps of
//! the row's magnitude (tested below). The NEON kernels follow the AVX2 kernels' order
//! exactly, so both SIMD back ends give the same bits (tested against a scalar model of
//! that order, [`tests::dot_avx2_order`], on each architecture).

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
    } else if has_neon() {
        "neon"
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

/// NEON is baseline on aarch64: used unless `SUANPAN_FORCE_SCALAR` is set (read once).
fn has_neon() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        static N: OnceLock<bool> = OnceLock::new();
        *N.get_or_init(|| std::env::var_os("SUANPAN_FORCE_SCALAR").is_none())
    }
    #[cfg(not(target_arch = "aarch64"))]
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
                GgmlType::F16 | GgmlType::BF16 | GgmlType::F32 => {
                    x86::dot4_dense(ty, w, [bytemuck::cast_slice(a); 1])[0]
                }
                _ => dot_ref(ty, w, a),
            };
        }
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON is baseline on aarch64; the kernels only read within `w` and `a`,
        // whose lengths they check against the block count.
        unsafe {
            return match ty {
                GgmlType::Q4_0 => neon::dot_q4_0_q8_0(w, a),
                GgmlType::Q4_1 => neon::dot_q4_1_q8_1(w, a),
                GgmlType::Q8_0 => neon::dot_q8_0_q8_0(w, a),
                GgmlType::F32 => neon::dot_f32_f32(w, bytemuck::cast_slice(a)),
                GgmlType::F16 => neon::dot_f16_f32(w, bytemuck::cast_slice(a)),
                GgmlType::BF16 => neon::dot_bf16_f32(w, bytemuck::cast_slice(a)),
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
                GgmlType::F16 | GgmlType::BF16 | GgmlType::F32 => {
                    return x86::dot4_dense(ty, w, a.map(bytemuck::cast_slice))
                }
                _ => {}
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON is baseline on aarch64; the kernels only read within `w` and each
        // `a[i]`, whose lengths bound the block count.
        unsafe {
            match ty {
                GgmlType::Q4_0 => return neon::dot4_q4_0_q8_0(w, a),
                GgmlType::Q4_1 => return neon::dot4_q4_1_q8_1(w, a),
                GgmlType::Q8_0 => return neon::dot4_q8_0_q8_0(w, a),
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

    /// 8 weights at element `i` of a dense row as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(ty: crate::format::GgmlType, w: &[u8], i: usize) -> __m256 {
        use crate::format::GgmlType;
        // SAFETY (caller): elements i..i+8 are inside `w`.
        match ty {
            GgmlType::F16 => {
                _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i))
            }
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
}

/// NEON kernels (aarch64, where NEON is baseline). They compute exactly what the AVX2
/// kernels compute, in the same order: per 32-element block, eight i32 lane sums of four
/// consecutive products (AVX2's `maddubs`+`madd`, NEON's widening multiply and pairwise
/// adds), each lane fused-multiply-added with the block scale into an f32 lane
/// accumulator, and the same horizontal-sum tree. So a phone and an AVX2 machine produce
/// the same logits bit for bit (tested against a scalar model of that order on both), and
/// both agree with the scalar reference to float reassociation. Dense F32/BF16, which have
/// no AVX2 kernel, equal [`super::dot_dense_ref`] exactly.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{f16_table, h, Acts, Q8_0_BYTES};
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// Four f16 (raw bits) to f32 with `fcvtl`, exact (the f16 intrinsics are not stable
    /// at the crate's MSRV; the instruction is base AArch64 floating point).
    #[inline(always)]
    fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
        let r: float32x4_t;
        // SAFETY: `fcvtl` only reads and writes the given vector registers; FP/SIMD is
        // baseline on aarch64.
        unsafe {
            asm!("fcvtl {r:v}.4s, {h:v}.4h", r = lateout(vreg) r, h = in(vreg) h,
                 options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// The 32 weights of a 4-bit block (16 bytes at `p`) as i8, low nibbles first
    /// (elements 0..15, then 16..31), minus `off`.
    #[inline(always)]
    unsafe fn nibbles(p: *const u8, off: u8) -> (int8x16_t, int8x16_t) {
        // SAFETY (caller): 16 bytes at `p` are readable.
        let q = vld1q_u8(p);
        let o = vdupq_n_u8(off);
        let lo = vsubq_u8(vandq_u8(q, vdupq_n_u8(15)), o);
        let hi = vsubq_u8(vshrq_n_u8::<4>(q), o);
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }

    /// 32 signed weight bytes at `p`.
    #[inline(always)]
    unsafe fn bytes32(p: *const u8) -> (int8x16_t, int8x16_t) {
        // SAFETY (caller): 32 bytes at `p` are readable.
        (vld1q_s8(p as *const i8), vld1q_s8(p.add(16) as *const i8))
    }

    /// Σ of 4 consecutive products of 16 element pairs: `[e0..3, e4..7, e8..11, e12..15]`
    /// (exact: products widen to i16, sums to i32).
    #[inline(always)]
    fn quad_sums(w: int8x16_t, a: int8x16_t) -> int32x4_t {
        // SAFETY: register-only NEON arithmetic; NEON is baseline on aarch64.
        unsafe {
            let lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a)));
            let hi = vpaddlq_s16(vmull_high_s8(w, a));
            vpaddq_s32(lo, hi)
        }
    }

    /// The eight AVX2 lane sums of block `w · a` (32 activation bytes at `a`), as f32.
    #[inline(always)]
    unsafe fn lanes(w: (int8x16_t, int8x16_t), a: *const u8) -> (float32x4_t, float32x4_t) {
        // SAFETY (caller): 32 bytes at `a` are readable.
        let (a0, a1) = bytes32(a);
        (
            vcvtq_f32_s32(quad_sums(w.0, a0)),
            vcvtq_f32_s32(quad_sums(w.1, a1)),
        )
    }

    /// `acc += d·p` lane-wise, fused like `_mm256_fmadd_ps`.
    #[inline(always)]
    fn fma8(acc: &mut (float32x4_t, float32x4_t), d: f32, p: (float32x4_t, float32x4_t)) {
        // SAFETY: register-only NEON arithmetic; NEON is baseline on aarch64.
        unsafe {
            let dv = vdupq_n_f32(d);
            acc.0 = vfmaq_f32(acc.0, dv, p.0);
            acc.1 = vfmaq_f32(acc.1, dv, p.1);
        }
    }

    /// The AVX2 `hsum` tree: lanes j + j+4, then (0 + 2) + (1 + 3).
    #[inline(always)]
    fn hsum(acc: (float32x4_t, float32x4_t)) -> f32 {
        // SAFETY: register-only NEON arithmetic; NEON is baseline on aarch64.
        unsafe {
            let s = vaddq_f32(acc.0, acc.1);
            let t = vadd_f32(vget_low_f32(s), vget_high_f32(s));
            vget_lane_f32::<0>(t) + vget_lane_f32::<1>(t)
        }
    }

    #[inline(always)]
    fn zero8() -> (float32x4_t, float32x4_t) {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) }
    }

    fn acts4(a: [&[u8]; 4], nb: usize, with_sum: bool) -> Option<[Acts<'_>; 4]> {
        Some([
            Acts::new(a[0], nb, with_sum)?,
            Acts::new(a[1], nb, with_sum)?,
            Acts::new(a[2], nb, with_sum)?,
            Acts::new(a[3], nb, with_sum)?,
        ])
    }

    /// Start of block `i` of activation row `a` (32 readable bytes when i < a.nb).
    #[inline(always)]
    fn block_ptr(a: &Acts, i: usize) -> *const u8 {
        a.block(i).as_ptr()
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
        let t = f16_table();
        let nb = w.len() / 18;
        let Some(a) = Acts::new(a, nb, false) else {
            return f32::NAN;
        };
        let mut acc = zero8();
        for (i, wb) in w.chunks_exact(18).enumerate() {
            // SAFETY: `wb` has 16 bytes after offset 2; block i < nb of `a` has 32.
            let p = lanes(nibbles(wb.as_ptr().add(2), 8), block_ptr(&a, i));
            fma8(&mut acc, h(t, wb, 0) * a.d(i), p);
        }
        hsum(acc)
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot4_q4_0_q8_0(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
        let t = f16_table();
        let nb = w.len() / 18;
        let Some(a) = acts4(a, nb, false) else {
            return [f32::NAN; 4];
        };
        let mut acc = [zero8(); 4];
        for (i, wb) in w.chunks_exact(18).enumerate() {
            // SAFETY: `wb` has 16 bytes after offset 2; block i < nb of every `a[k]`.
            let q = nibbles(wb.as_ptr().add(2), 8);
            let dw = h(t, wb, 0);
            for k in 0..4 {
                fma8(&mut acc[k], dw * a[k].d(i), lanes(q, block_ptr(&a[k], i)));
            }
        }
        acc.map(hsum)
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
        let t = f16_table();
        let nb = w.len() / 20;
        let Some(a) = Acts::new(a, nb, true) else {
            return f32::NAN;
        };
        let mut acc = zero8();
        let mut mins = 0f32;
        for (i, wb) in w.chunks_exact(20).enumerate() {
            // SAFETY: `wb` has 16 bytes after offset 4; block i < nb of `a` has 32.
            let p = lanes(nibbles(wb.as_ptr().add(4), 0), block_ptr(&a, i));
            fma8(&mut acc, h(t, wb, 0) * a.d(i), p);
            mins += h(t, wb, 2) * a.s(i);
        }
        hsum(acc) + mins
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot4_q4_1_q8_1(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
        let t = f16_table();
        let nb = w.len() / 20;
        let Some(a) = acts4(a, nb, true) else {
            return [f32::NAN; 4];
        };
        let mut acc = [zero8(); 4];
        let mut mins = [0f32; 4];
        for (i, wb) in w.chunks_exact(20).enumerate() {
            // SAFETY: `wb` has 16 bytes after offset 4; block i < nb of every `a[k]`.
            let q = nibbles(wb.as_ptr().add(4), 0);
            let (dw, mw) = (h(t, wb, 0), h(t, wb, 2));
            for k in 0..4 {
                fma8(&mut acc[k], dw * a[k].d(i), lanes(q, block_ptr(&a[k], i)));
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

    #[target_feature(enable = "neon")]
    pub unsafe fn dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
        let t = f16_table();
        let nb = w.len() / Q8_0_BYTES;
        let Some(a) = Acts::new(a, nb, false) else {
            return f32::NAN;
        };
        let mut acc = zero8();
        for (i, wb) in w.chunks_exact(Q8_0_BYTES).enumerate() {
            // SAFETY: `wb` has 32 bytes after offset 2; block i < nb of `a` has 32.
            let p = lanes(bytes32(wb.as_ptr().add(2)), block_ptr(&a, i));
            fma8(&mut acc, h(t, wb, 0) * a.d(i), p);
        }
        hsum(acc)
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot4_q8_0_q8_0(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
        let t = f16_table();
        let nb = w.len() / Q8_0_BYTES;
        let Some(a) = acts4(a, nb, false) else {
            return [f32::NAN; 4];
        };
        let mut acc = [zero8(); 4];
        for (i, wb) in w.chunks_exact(Q8_0_BYTES).enumerate() {
            // SAFETY: `wb` has 32 bytes after offset 2; block i < nb of every `a[k]`.
            let q = bytes32(wb.as_ptr().add(2));
            let dw = h(t, wb, 0);
            for k in 0..4 {
                fma8(&mut acc[k], dw * a[k].d(i), lanes(q, block_ptr(&a[k], i)));
            }
        }
        acc.map(hsum)
    }

    /// Eight f16 at element `i` of `w` as two f32x4.
    #[inline(always)]
    unsafe fn load8_f16(w: &[u8], i: usize) -> (float32x4_t, float32x4_t) {
        // SAFETY (caller): 16 bytes at 2i are inside `w`.
        let v = vld1q_u16(w.as_ptr().add(2 * i) as *const u16);
        (
            f16x4_to_f32(vget_low_u16(v)),
            f16x4_to_f32(vget_high_u16(v)),
        )
    }

    /// As the AVX2 kernel: 8 fused lanes, the `hsum` tree, then the tail one by one.
    #[target_feature(enable = "neon")]
    pub unsafe fn dot_f16_f32(w: &[u8], x: &[f32]) -> f32 {
        let n = (w.len() / 2).min(x.len());
        let mut acc = zero8();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n elements are in bounds of both slices.
            let (w0, w1) = load8_f16(w, i);
            let xp = x.as_ptr().add(i);
            acc.0 = vfmaq_f32(acc.0, w0, vld1q_f32(xp));
            acc.1 = vfmaq_f32(acc.1, w1, vld1q_f32(xp.add(4)));
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

    /// Dense weights with 4-byte (F32) or 2-byte (BF16) elements in 8 lanes, multiply then
    /// add, summed in lane order: exactly [`super::dot_dense_ref`] (which x86 also uses).
    #[inline(always)]
    unsafe fn dot_dense_lanes(
        w: &[u8],
        x: &[f32],
        bytes: usize,
        load: impl Fn(usize) -> (float32x4_t, float32x4_t),
        scalar: impl Fn(&[u8]) -> f32,
    ) -> f32 {
        let n = (w.len() / bytes).min(x.len());
        let mut acc = zero8();
        let mut i = 0;
        while i + 8 <= n {
            let (w0, w1) = load(i);
            // SAFETY (caller contract of `load` too): i + 8 <= n elements are in bounds.
            let xp = x.as_ptr().add(i);
            acc.0 = vaddq_f32(acc.0, vmulq_f32(w0, vld1q_f32(xp)));
            acc.1 = vaddq_f32(acc.1, vmulq_f32(w1, vld1q_f32(xp.add(4))));
            i += 8;
        }
        let mut l = [0f32; 8];
        // SAFETY: `l` has 8 floats.
        vst1q_f32(l.as_mut_ptr(), acc.0);
        vst1q_f32(l.as_mut_ptr().add(4), acc.1);
        while i < n {
            l[i % 8] += scalar(&w[bytes * i..bytes * i + bytes]) * x[i];
            i += 1;
        }
        l.iter().sum()
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot_f32_f32(w: &[u8], x: &[f32]) -> f32 {
        let n = (w.len() / 4).min(x.len());
        let load = |i: usize| {
            assert!(i + 8 <= n);
            // SAFETY: 32 bytes at 4i lie inside `w` (asserted).
            unsafe {
                let p = w.as_ptr().add(4 * i) as *const f32;
                (vld1q_f32(p), vld1q_f32(p.add(4)))
            }
        };
        dot_dense_lanes(w, x, 4, load, |c| {
            f32::from_le_bytes([c[0], c[1], c[2], c[3]])
        })
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot_bf16_f32(w: &[u8], x: &[f32]) -> f32 {
        let n = (w.len() / 2).min(x.len());
        let load = |i: usize| {
            assert!(i + 8 <= n);
            // SAFETY: 16 bytes at 2i lie inside `w` (asserted); bf16 → f32 is a shift.
            unsafe {
                let v = vld1q_u16(w.as_ptr().add(2 * i) as *const u16);
                (
                    vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(v))),
                    vreinterpretq_f32_u32(vshll_high_n_u16::<16>(v)),
                )
            }
        };
        dot_dense_lanes(w, x, 2, load, |c| {
            half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()
        })
    }

    /// `y += a·v`, fused on whole 8-lane chunks and separate on the tail, as the AVX2 kernel.
    #[target_feature(enable = "neon")]
    pub unsafe fn axpy_f16(y: &mut [f32], a: f32, v: &[u8]) {
        let n = (v.len() / 2).min(y.len());
        let av = vdupq_n_f32(a);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n elements are in bounds of both slices.
            let (v0, v1) = load8_f16(v, i);
            let yp = y.as_mut_ptr().add(i);
            vst1q_f32(yp, vfmaq_f32(vld1q_f32(yp), av, v0));
            vst1q_f32(yp.add(4), vfmaq_f32(vld1q_f32(yp.add(4)), av, v1));
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
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON is baseline on aarch64; the kernel stays within both slices.
        return unsafe { neon::dot_f16_f32(kb, x) };
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
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON is baseline on aarch64; the kernel stays within both slices.
        return unsafe { neon::axpy_f16(y, a, bytemuck::cast_slice(v)) };
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
            GgmlType::BF16 => {
                return (0..n)
                    .flat_map(|_| {
                        bf16::from_f32((rng(seed) % 2000) as f32 / 1000.0 - 1.0).to_le_bytes()
                    })
                    .collect()
            }
            GgmlType::F32 => {
                return (0..n)
                    .flat_map(|_| ((rng(seed) % 2000) as f32 / 1000.0 - 1.0).to_le_bytes())
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
            GgmlType::BF16,
            GgmlType::F32,
        ] {
            for &n in &[32usize, 64, 576, 1536, 32 * 7, 45] {
                if n % 32 != 0 && ty.block_len() != 1 {
                    continue;
                }
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

    /// Weight element `e` of block `b` of a quantized row, as the SIMD kernels unpack it.
    fn weight_at(ty: GgmlType, b: &[u8], e: usize) -> i32 {
        match ty {
            GgmlType::Q4_0 if e < 16 => (b[2 + e] & 15) as i32 - 8,
            GgmlType::Q4_0 => (b[2 + e - 16] >> 4) as i32 - 8,
            GgmlType::Q4_1 if e < 16 => (b[4 + e] & 15) as i32,
            GgmlType::Q4_1 => (b[4 + e - 16] >> 4) as i32,
            _ => b[2 + e] as i8 as i32,
        }
    }

    /// The AVX2 `hsum` tree over 8 lanes: (0+4 + 2+6) + (1+5 + 3+7).
    fn hsum8(l: [f32; 8]) -> f32 {
        let s = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
        (s[0] + s[2]) + (s[1] + s[3])
    }

    /// Scalar model of the float order of the AVX2 kernels (and the NEON kernels, which
    /// follow it): per block eight exact i32 lane sums of four consecutive products, each
    /// fused-multiply-added with the block scale into its lane, the `hsum` tree, then Q4_1's
    /// separately accumulated minimum term. F16: eight fused lanes, `hsum`, scalar tail.
    pub(crate) fn dot_avx2_order(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
        let t = f16_table();
        let mut lanes = [0f32; 8];
        if ty == GgmlType::F16 {
            let x: &[f32] = bytemuck::cast_slice(a);
            let n = (w.len() / 2).min(x.len());
            let whole = n / 8 * 8;
            for (i, &xi) in x[..whole].iter().enumerate() {
                lanes[i % 8] = h(t, w, 2 * i).mul_add(xi, lanes[i % 8]);
            }
            let mut s = hsum8(lanes);
            for (i, &xi) in x[..n].iter().enumerate().skip(whole) {
                s += h(t, w, 2 * i) * xi;
            }
            return s;
        }
        let (bb, with_sum) = match ty {
            GgmlType::Q4_0 => (18, false),
            GgmlType::Q4_1 => (20, true),
            _ => (Q8_0_BYTES, false),
        };
        let nb = w.len() / bb;
        let acts = Acts::new(a, nb, with_sum).unwrap();
        let mut mins = 0f32;
        for (i, b) in w.chunks_exact(bb).enumerate() {
            let q = acts.block(i);
            let d = h(t, b, 0) * acts.d(i);
            for (j, lane) in lanes.iter_mut().enumerate() {
                let p: i32 = (4 * j..4 * j + 4)
                    .map(|e| weight_at(ty, b, e) * q[e] as i8 as i32)
                    .sum();
                *lane = d.mul_add(p as f32, *lane);
            }
            if with_sum {
                mins += h(t, b, 2) * acts.s(i);
            }
        }
        hsum8(lanes) + mins
    }

    /// The SIMD kernel of this machine for `ty`, called directly (whatever the dispatcher
    /// chose), or `None` without one.
    #[allow(unused_variables)]
    fn simd_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> Option<f32> {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is baseline on aarch64; the kernels check the lengths.
        unsafe {
            return Some(match ty {
                GgmlType::Q4_0 => neon::dot_q4_0_q8_0(w, a),
                GgmlType::Q4_1 => neon::dot_q4_1_q8_1(w, a),
                GgmlType::Q8_0 => neon::dot_q8_0_q8_0(w, a),
                _ => neon::dot_f16_f32(w, bytemuck::cast_slice(a)),
            });
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            // SAFETY: the features were just detected; the kernels check the lengths.
            unsafe {
                return Some(match ty {
                    GgmlType::Q4_0 => x86::dot_q4_0_q8_0(w, a),
                    GgmlType::Q4_1 => x86::dot_q4_1_q8_1(w, a),
                    GgmlType::Q8_0 => x86::dot_q8_0_q8_0(w, a),
                    _ => x86::dot_f16_f32(w, bytemuck::cast_slice(a)),
                });
            }
        }
        #[allow(unreachable_code)]
        None
    }

    /// The 4-row kernel of this machine, called directly, or `None`.
    #[allow(unused_variables)]
    fn simd_dot4(ty: GgmlType, w: &[u8], a: [&[u8]; 4]) -> Option<[f32; 4]> {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is baseline on aarch64; the kernels check the lengths.
        unsafe {
            return match ty {
                GgmlType::Q4_0 => Some(neon::dot4_q4_0_q8_0(w, a)),
                GgmlType::Q4_1 => Some(neon::dot4_q4_1_q8_1(w, a)),
                GgmlType::Q8_0 => Some(neon::dot4_q8_0_q8_0(w, a)),
                _ => None,
            };
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            // SAFETY: the features were just detected; the kernels check the lengths.
            unsafe {
                return match ty {
                    GgmlType::Q4_0 => Some(x86::dot4_q4_0_q8_0(w, a)),
                    GgmlType::Q4_1 => Some(x86::dot4_q4_1_q8_1(w, a)),
                    GgmlType::Q8_0 => Some(x86::dot4_q8_0_q8_0(w, a)),
                    _ => None,
                };
            }
        }
        #[allow(unreachable_code)]
        None
    }

    /// AVX2 (x86_64) and NEON (aarch64) both equal the scalar model of the AVX2 order bit
    /// for bit, so the two back ends give identical results; the model itself agrees with
    /// the scalar reference to float reassociation.
    #[test]
    fn simd_kernels_follow_the_avx2_order_bit_for_bit() {
        let mut seed = 0xA64A64u64;
        let mut simd_checked = 0;
        for &ty in &[
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::F16,
        ] {
            for &n in &[32usize, 64, 576, 1536, 32 * 7, 32 * 9] {
                let w = random_weights(ty, n, &mut seed);
                let fmt = ActFormat::for_weights(ty);
                let acts: Vec<Vec<f32>> = (0..4)
                    .map(|_| {
                        let x: Vec<f32> = (0..n)
                            .map(|_| (rng(&mut seed) % 20001) as f32 / 1e4 - 1.0)
                            .collect();
                        // f32 storage keeps the dense rows aligned for the cast.
                        let mut a = vec![0f32; fmt.row_bytes(n) / 4];
                        quantize_row(fmt, &x, bytemuck::cast_slice_mut(&mut a));
                        a
                    })
                    .collect();
                let rows: Vec<&[u8]> = acts.iter().map(|a| bytemuck::cast_slice(a)).collect();
                let model: Vec<f32> = rows.iter().map(|a| dot_avx2_order(ty, &w, a)).collect();
                let mut deq = vec![0f32; n];
                crate::quant::ggml::dequantize_row(ty, &w, &mut deq);
                let mag: f32 = deq.iter().map(|v| v.abs()).sum::<f32>() + 1e-3;
                let r = dot_ref(ty, &w, rows[0]);
                assert!(
                    (r - model[0]).abs() <= 1e-5 * mag + 1e-6,
                    "{ty} n={n}: ref {r} model {}",
                    model[0]
                );
                if let Some(s) = simd_dot(ty, &w, rows[0]) {
                    assert_eq!(
                        s.to_bits(),
                        model[0].to_bits(),
                        "{ty} n={n}: {s} vs {}",
                        model[0]
                    );
                    simd_checked += 1;
                }
                if let Some(four) = simd_dot4(ty, &w, [rows[0], rows[1], rows[2], rows[3]]) {
                    for k in 0..4 {
                        assert_eq!(
                            four[k].to_bits(),
                            model[k].to_bits(),
                            "{ty} n={n} dot4 row {k}"
                        );
                    }
                }
            }
        }
        // Attention helpers with a tail (n = 67): the kernels against the same model.
        let k: Vec<f16> = (0..67)
            .map(|_| f16::from_f32((rng(&mut seed) % 2000) as f32 / 1000.0 - 1.0))
            .collect();
        let x: Vec<f32> = (0..67).map(|i| (i as f32 * 0.37).sin()).collect();
        let kb: &[u8] = bytemuck::cast_slice(&k);
        let want = if simd_level() == "scalar" {
            dot_dense_ref(GgmlType::F16, kb, &x)
        } else {
            dot_avx2_order(GgmlType::F16, kb, bytemuck::cast_slice(&x))
        };
        assert_eq!(dot_f16(&k, &x).to_bits(), want.to_bits());
        let (mut y1, mut y2) = (x.clone(), x.clone());
        axpy_f16(&mut y1, 0.3, &k);
        for (i, (o, h)) in y2.iter_mut().zip(&k).enumerate() {
            *o = if simd_level() != "scalar" && i < 64 {
                0.3f32.mul_add(h.to_f32(), *o)
            } else {
                *o + 0.3 * h.to_f32()
            };
        }
        assert_eq!(y1, y2);
        // On aarch64 and on x86_64 with AVX2 every type has its SIMD kernel checked above.
        if cfg!(target_arch = "aarch64") || is_x86_feature_detected_all() {
            assert_eq!(simd_checked, 24);
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn is_x86_feature_detected_all() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    fn is_x86_feature_detected_all() -> bool {
        false
    }

    /// NEON dense F32/BF16 (no AVX2 kernel: x86 runs the reference) equal the reference bit
    /// for bit, and the integer parts are exact for any bytes, even −128·−128 products.
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_dense_equals_reference_and_extremes_are_exact() {
        let mut seed = 0xB16u64;
        for &n in &[8usize, 64, 576, 67, 1539] {
            let vals: Vec<f32> = (0..n)
                .map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let x: Vec<f32> = (0..n)
                .map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let w32: Vec<u8> = bytemuck::cast_slice(&vals).to_vec();
            let w16: Vec<u8> = vals
                .iter()
                .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                .collect();
            let xa: &[u8] = bytemuck::cast_slice(&x);
            assert_eq!(
                dot(GgmlType::F32, &w32, xa).to_bits(),
                dot_ref(GgmlType::F32, &w32, xa).to_bits()
            );
            // SAFETY: NEON is baseline on aarch64; the kernels stay within both slices.
            let (a, b) = unsafe { (neon::dot_f32_f32(&w32, &x), neon::dot_bf16_f32(&w16, &x)) };
            assert_eq!(
                a.to_bits(),
                dot_dense_ref(GgmlType::F32, &w32, &x).to_bits()
            );
            assert_eq!(
                b.to_bits(),
                dot_dense_ref(GgmlType::BF16, &w16, &x).to_bits()
            );
        }
        // Every weight and activation byte 0x80 (−128 for Q8_0; nibble 0 − 8 for Q4_0),
        // unit scales.
        let mut a = vec![0x80u8; 8 * QK];
        for _ in 0..8 {
            a.extend_from_slice(&1f32.to_le_bytes());
        }
        let blocks = |bytes: usize, fill: u8| -> Vec<u8> {
            (0..8)
                .flat_map(|_| {
                    let mut b = vec![fill; bytes];
                    b[..2].copy_from_slice(&f16::ONE.to_le_bytes());
                    b
                })
                .collect()
        };
        let (w8, w4) = (blocks(Q8_0_BYTES, 0x80), blocks(18, 0x00));
        // SAFETY: NEON is baseline on aarch64; 8 blocks in every row.
        let (s8, s4) = unsafe { (neon::dot_q8_0_q8_0(&w8, &a), neon::dot_q4_0_q8_0(&w4, &a)) };
        assert_eq!(s8, (8 * QK * 128 * 128) as f32);
        assert_eq!(s4, (8 * QK * 8 * 128) as f32);
    }
}
