//! NEON kernels (aarch64, where NEON is baseline). They compute exactly what the AVX2
//! kernels compute, in the same order: per 32-element block, eight i32 lane sums of four
//! consecutive products (AVX2's `maddubs`+`madd`, NEON's widening multiply and pairwise
//! adds), each lane fused-multiply-added with the block scale into an f32 lane
//! accumulator, and the same horizontal-sum tree. So a phone and an AVX2 machine produce
//! the same logits bit for bit (tested against a scalar model of that order on both), and
//! both agree with the scalar reference to float reassociation. Dense F32/BF16, which have
//! no AVX2 kernel, equal [`super::dot_dense_ref`] exactly.

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
