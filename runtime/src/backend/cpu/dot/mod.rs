//! Row dot products between a weight row in a ggml block format and one activation row
//! quantized as llama.cpp does it (see [`crate::quant::ggml`]).
//!
//! Each format has a scalar reference (`*_ref`) and a SIMD kernel chosen once at start-up:
//! AVX2+FMA on x86_64, NEON on aarch64, SIMD128 on wasm32 (Q4_1 and Q8_0, bit-identical to
//! the references). Integer parts are exact in all; the SIMD kernels
//! reassociate the float accumulation, so they agree with the reference to a few ulps of
//! the row's magnitude (tested in `tests.rs`). The NEON kernels follow the AVX2 kernels' order
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
    } else if has_simd128() {
        "simd128"
    } else {
        "scalar"
    }
}

/// AVX2 + FMA + F16C, unless `SUANPAN_FORCE_SCALAR` (see [`super::features`]).
pub(crate) fn has_avx2() -> bool {
    super::features::cpu().avx2
}

/// NEON (baseline on aarch64), unless `SUANPAN_FORCE_SCALAR`.
fn has_neon() -> bool {
    super::features::cpu().neon
}

/// WebAssembly SIMD128 (a build-time feature), unless `SUANPAN_FORCE_SCALAR`.
fn has_simd128() -> bool {
    super::features::cpu().simd128
}

/// Whether [`dot`] runs a SIMD kernel for `ty` on this machine (else the scalar reference).
pub fn has_simd(ty: GgmlType) -> bool {
    use GgmlType::*;
    if has_avx2() {
        return matches!(
            ty,
            Q4_0 | Q4_1 | Q8_0 | F16 | BF16 | F32 | Q4K | Q5K | Q6K | Q5_0
        );
    }
    if has_simd128() {
        return matches!(ty, Q4_1 | Q8_0);
    }
    has_neon() && matches!(ty, Q4_0 | Q4_1 | Q8_0 | F16 | BF16 | F32 | Q4K | Q6K | Q5_0)
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
                GgmlType::Q5_0 => kquant_x86::dot_q5_0_q8_0(w, a),
                GgmlType::Q4K => kquant_x86::dot_q4_k_q8_k(w, a),
                GgmlType::Q5K => kquant_x86::dot_q5_k_q8_k(w, a),
                GgmlType::Q6K => kquant_x86::dot_q6_k_q8_k(w, a),
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
                GgmlType::Q5_0 => kquant_neon::dot_q5_0_q8_0(w, a),
                GgmlType::Q4K => kquant_neon::dot_q4_k_q8_k(w, a),
                GgmlType::Q6K => kquant_neon::dot_q6_k_q8_k(w, a),
                GgmlType::F32 => neon::dot_f32_f32(w, bytemuck::cast_slice(a)),
                GgmlType::F16 => neon::dot_f16_f32(w, bytemuck::cast_slice(a)),
                GgmlType::BF16 => neon::dot_bf16_f32(w, bytemuck::cast_slice(a)),
                _ => dot_ref(ty, w, a),
            };
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if has_simd128() {
        match ty {
            GgmlType::Q4_1 => return wasm::dot_q4_1_q8_1(w, a),
            GgmlType::Q8_0 => return wasm::dot_q8_0_q8_0(w, a),
            _ => {}
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
                GgmlType::Q5_0 => return kquant_x86::dot4_q5_0_q8_0(w, a),
                GgmlType::Q4K => return kquant_x86::dot4_q4_k_q8_k(w, a),
                GgmlType::Q5K => return kquant_x86::dot4_q5_k_q8_k(w, a),
                GgmlType::Q6K => return kquant_x86::dot4_q6_k_q8_k(w, a),
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
        GgmlType::Q5_0 => blocks_ref::dot_q5_0_q8_0_ref(w, a),
        GgmlType::Q5_1 => blocks_ref::dot_q5_1_q8_1_ref(w, a),
        GgmlType::Iq4Nl => blocks_ref::dot_iq4_nl_q8_0_ref(w, a),
        GgmlType::Q2K
        | GgmlType::Q3K
        | GgmlType::Q4K
        | GgmlType::Q5K
        | GgmlType::Q6K
        | GgmlType::Iq4Xs
        | GgmlType::TQ1_0
        | GgmlType::TQ2_0 => blocks_ref::dot_q8k_ref(ty, w, a),
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

pub mod blocks_ref;
#[cfg(target_arch = "aarch64")]
mod kquant_neon;
#[cfg(target_arch = "x86_64")]
mod kquant_x86;
pub mod qgemm;
#[cfg(target_arch = "x86_64")]
mod qgemm_vnni;
#[cfg(target_arch = "x86_64")]
mod qgemm_x86;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;

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
mod tests;
