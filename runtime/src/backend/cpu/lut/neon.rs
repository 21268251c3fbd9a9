//! NEON (aarch64) lookup-accumulate GEMV and table kernel over the layout of
//! [`super::layout`].
//!
//! Each 16-byte lane of the layout is one k-step's nibbles for the 32 rows of a chunk, and
//! the k-step's 16 biased table entries are one NEON register, so one `vqtbl1q_u8` per
//! nibble half does 16 lookups:
//!
//! ```text
//! w   = 16 plane bytes of k-step s   (byte b: lo nibble → row ROW(b), hi nibble → ROW(b)+16,
//!                                      ROW = 0,8,1,9,…,7,15)
//! vl  = tbl(T_s, w & 15)             vh = tbl(T_s, w >> 4)        (biased u8 entries)
//! as 8 u16 words:  word t = odd·256 + even = row (8+t)·256 + row t
//! wl += vl (wrapping)   ol += vl >> 8 (usra)   → rows 8..15 exact in ol,
//!                                                rows 0..7 = wl − ol·256 (mod 2^16)
//! ```
//!
//! Bounds: one accumulator takes the `g/4 ≤ 32` k-steps of a group and plane, each ≤ 255,
//! so every row sum is ≤ 8160 < 2^16 and the wrapped difference is exact. The per-plane
//! sums are widened to i32, weighted by `2^p`, unbiased, and go through the same float
//! epilogue as [`super::gemv::gemv_ref`] (separate multiply and add, no FMA): results are
//! bit-identical to the scalar reference.

use std::arch::aarch64::*;
use std::arch::asm;
use std::ops::Range;

use super::gemv::chunk_rows;
use super::table::{LutTables, TABLE_BIAS};
use crate::lut::layout::{LutMatrix, CHUNK_ROWS};

/// Four f16 (as raw bits) to f32 with `fcvtl`, exact (the f16 intrinsics are not stable
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

/// `y = W·x` for the rows of `chunks`, bit-identical to [`super::gemv::gemv_ref_chunks`].
///
/// # Safety
/// NEON must be available (it is baseline on aarch64). Shapes are asserted (the caller
/// has checked them).
#[target_feature(enable = "neon")]
pub unsafe fn gemv_neon(m: &LutMatrix, t: &LutTables, chunks: Range<usize>, y: &mut [f32]) {
    let (bits, group, groups) = (m.bits(), m.group(), m.groups());
    let steps = group / 4;
    let planes = m.planes();
    let entries = t.entries();
    let (scales, zeros) = (m.scales(), m.zeros());
    assert!(
        planes.len() >= m.chunks() * m.chunk_bytes()
            && m.chunk_bytes() == groups * bits * steps * 16
            && scales.len() >= m.chunks() * groups * CHUNK_ROWS
            && zeros.len() >= m.chunks() * groups * CHUNK_ROWS
            && entries.len() >= groups * steps * 16
            && t.half_scales().len() >= groups
            && t.sums().len() >= groups
            && chunks.start <= chunks.end
            && chunks.end <= m.chunks()
            && y.len() == chunk_rows(m, &chunks).len()
    );
    let nib = vdupq_n_u8(15);
    let zero = vdupq_n_u16(0);
    let half_range = vdupq_n_f32(((1u32 << bits) - 1) as f32 * 0.5);
    // Σ_p 2^p · (bias per lookup) · (lookups per plane and group).
    let bias = vdupq_n_s32(TABLE_BIAS * steps as i32 * ((1 << bits) - 1));
    let mut wp = planes.as_ptr().wrapping_add(chunks.start * m.chunk_bytes());
    for c in chunks.clone() {
        let mut yacc = [vdupq_n_f32(0.0); 8];
        for gi in 0..groups {
            // Row sums of all planes, rows 4j..4j+4 in tot[j].
            let mut tot = [vdupq_n_s32(0); 8];
            // SAFETY: gi < groups, so the group's `steps` tables of 16 bytes are in `entries`.
            let tp = unsafe { entries.as_ptr().add(gi * steps * 16) };
            for p in 0..bits {
                let (mut wl, mut ol, mut wh, mut oh) = (zero, zero, zero, zero);
                for s in 0..steps {
                    // SAFETY: `wp` walks the planes in layout order from chunk `chunks.start`,
                    // 16 bytes per k-step, groups·bits·steps k-steps (= chunk_bytes, asserted)
                    // per chunk, and chunks.end <= m.chunks() (asserted with the planes'
                    // length); table s < steps lies inside this group's tables.
                    let (w, tab) = unsafe { (vld1q_u8(wp), vld1q_u8(tp.add(16 * s))) };
                    wp = wp.wrapping_add(16);
                    let vl = vreinterpretq_u16_u8(vqtbl1q_u8(tab, vandq_u8(w, nib)));
                    let vh = vreinterpretq_u16_u8(vqtbl1q_u8(tab, vshrq_n_u8::<4>(w)));
                    wl = vaddq_u16(wl, vl);
                    ol = vsraq_n_u16::<8>(ol, vl);
                    wh = vaddq_u16(wh, vh);
                    oh = vsraq_n_u16::<8>(oh, vh);
                }
                // Rows 0..7, 8..15, 16..23, 24..31; even sums < 2^16, so exact.
                let acc = [
                    vsubq_u16(wl, vshlq_n_u16::<8>(ol)),
                    ol,
                    vsubq_u16(wh, vshlq_n_u16::<8>(oh)),
                    oh,
                ];
                let sh = vdupq_n_s32(p as i32);
                for (j, a) in acc.iter().enumerate() {
                    let lo = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(*a)));
                    let hi = vreinterpretq_s32_u32(vmovl_high_u16(*a));
                    tot[2 * j] = vaddq_s32(tot[2 * j], vshlq_s32(lo, sh));
                    tot[2 * j + 1] = vaddq_s32(tot[2 * j + 1], vshlq_s32(hi, sh));
                }
            }
            let hs = vdupq_n_f32(t.half_scales()[gi]);
            let sx = vdupq_n_f32(t.sums()[gi]);
            let at = (c * groups + gi) * CHUNK_ROWS;
            for j in 0..8 {
                // SAFETY: at + 4j + 4 <= chunks·groups·32 scales/zeros (asserted); f16 is a
                // transparent u16, so 4 of them are 8 readable bytes.
                let (s, z) = unsafe {
                    (
                        f16x4_to_f32(vld1_u16(scales.as_ptr().add(at + 4 * j) as *const u16)),
                        f16x4_to_f32(vld1_u16(zeros.as_ptr().add(at + 4 * j) as *const u16)),
                    )
                };
                // Same operations and order as `gemv::epilogue`, no fused multiply-add.
                let total = vcvtq_f32_s32(vsubq_s32(tot[j], bias));
                let cz = vsubq_f32(half_range, z);
                let inner = vaddq_f32(vmulq_f32(total, hs), vmulq_f32(cz, sx));
                yacc[j] = vaddq_f32(yacc[j], vmulq_f32(s, inner));
            }
        }
        let mut out = [0f32; CHUNK_ROWS];
        for (j, v) in yacc.iter().enumerate() {
            // SAFETY: `out` has 32 floats; 4j + 4 <= 32.
            unsafe { vst1q_f32(out.as_mut_ptr().add(4 * j), *v) };
        }
        let r0 = (c - chunks.start) * CHUNK_ROWS;
        let n = CHUNK_ROWS.min(y.len() - r0);
        y[r0..r0 + n].copy_from_slice(&out[..n]);
    }
}

/// NEON table kernel, equal to [`super::table::quantize_tables_ref`]: per table the 8
/// lower entries in two registers (signs by XOR, same association as the reference),
/// rounded half-to-even by `fcvtns`, clamped, narrowed, mirrored and biased.
///
/// # Safety
/// NEON must be available (baseline on aarch64).
#[target_feature(enable = "neon")]
pub unsafe fn quantize_tables_neon(x: &[f32], inv: f32, q: &mut [u8]) {
    assert_eq!(q.len(), 4 * x.len(), "LUT tables: output length");
    // Entry m (0..8) takes +x_j when bit j of m is set, else −x_j; entries 0..3 subtract
    // x2 and 4..7 add it, all subtract x3.
    let sign = |j: usize, base: usize| {
        let mut bits = [0u32; 4];
        for (i, b) in bits.iter_mut().enumerate() {
            if ((base + i) >> j) & 1 == 0 {
                *b = 0x8000_0000;
            }
        }
        // SAFETY: `bits` is 4 readable u32.
        unsafe { vld1q_u32(bits.as_ptr()) }
    };
    let (s0, s1) = (sign(0, 0), sign(1, 0));
    let vinv = vdupq_n_f32(inv);
    let (lo, hi) = (vdupq_n_s32(-127), vdupq_n_s32(127));
    let bias = vdupq_n_u8(TABLE_BIAS as u8);
    let flip = |v: float32x4_t, s: uint32x4_t| {
        vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(v), s))
    };
    for (x4, qt) in x.chunks_exact(4).zip(q.chunks_exact_mut(16)) {
        let (x0, x1) = (vdupq_n_f32(x4[0]), vdupq_n_f32(x4[1]));
        let (x2, x3) = (vdupq_n_f32(x4[2]), vdupq_n_f32(x4[3]));
        // (±x0 ± x1): −x0 − x1 == (−x0) + (−x1) exactly, as in the reference.
        let l = vaddq_f32(flip(x0, s0), flip(x1, s1));
        let t0 = vsubq_f32(vsubq_f32(l, x2), x3);
        let t1 = vsubq_f32(vaddq_f32(l, x2), x3);
        let v0 = vmaxq_s32(vminq_s32(vcvtnq_s32_f32(vmulq_f32(t0, vinv)), hi), lo);
        let v1 = vmaxq_s32(vminq_s32(vcvtnq_s32_f32(vmulq_f32(t1, vinv)), hi), lo);
        // Entries 0..8 as i16, then T[15 − m] = −T[m]: negate and reverse the 8 words.
        let w = vcombine_s16(vmovn_s32(v0), vmovn_s32(v1));
        let n = vrev64q_s16(vnegq_s16(w));
        let n = vextq_s16::<4>(n, n);
        let bytes = vcombine_s8(vmovn_s16(w), vmovn_s16(n));
        let out = vaddq_u8(vreinterpretq_u8_s8(bytes), bias);
        // SAFETY: `qt` is a 16-byte chunk of `q`.
        unsafe { vst1q_u8(qt.as_mut_ptr(), out) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::lut::gemv::{gemv_ref, gemv_ref_chunks, simd_level};
    use crate::backend::cpu::lut::table::quantize_tables_ref;
    use crate::lut::Method;
    use crate::testutil::Rng;

    /// The dispatcher picks this back end on aarch64 unless told not to.
    #[test]
    fn neon_is_the_dispatched_kernel() {
        let forced = std::env::var_os("SUANPAN_FORCE_SCALAR").is_some();
        assert_eq!(simd_level(), if forced { "scalar" } else { "neon" });
        assert_eq!(
            crate::backend::cpu::dot::simd_level(),
            if forced { "scalar" } else { "neon" }
        );
    }

    /// The NEON kernel called directly (whatever the dispatcher chose) equals the scalar
    /// reference bit for bit, on every bit width and group, odd row counts (a padded last
    /// chunk) and sub-ranges of chunks.
    #[test]
    fn neon_gemv_is_bit_identical_to_the_reference() {
        let mut rng = Rng(0x0A64);
        let mut cases = 0;
        for bits in 1..=4 {
            for &group in &[32usize, 64, 128] {
                for &(rows, mult) in &[(1usize, 2usize), (5, 1), (31, 3), (33, 2), (70, 1), (97, 4)]
                {
                    let cols = group * mult;
                    let method = if bits == 2 && rows == 33 {
                        Method::Ternary
                    } else if rows == 5 {
                        Method::Rtn
                    } else {
                        Method::Search
                    };
                    let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.heavy()).collect();
                    let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
                    let m = LutMatrix::quantize_with(&w, rows, cols, bits, group, method).unwrap();
                    let t = LutTables::build(&x, group).unwrap();
                    let (mut yn, mut yr) = (vec![0f32; rows], vec![0f32; rows]);
                    // SAFETY: NEON is baseline on aarch64; shapes are those of `m` and `t`.
                    unsafe { gemv_neon(&m, &t, 0..m.chunks(), &mut yn) };
                    gemv_ref(&m, &t, &mut yr).unwrap();
                    for r in 0..rows {
                        assert_eq!(
                            yn[r].to_bits(),
                            yr[r].to_bits(),
                            "b{bits} g{group} {rows}×{cols} row {r}: {} vs {}",
                            yn[r],
                            yr[r]
                        );
                    }
                    let n = m.chunks();
                    for range in [0..0, 1.min(n)..n, 0..1, n - 1..n] {
                        let rr = chunk_rows(&m, &range);
                        let (mut a, mut b) = (vec![0f32; rr.len()], vec![0f32; rr.len()]);
                        // SAFETY: as above; `a` holds exactly the rows of `range`.
                        unsafe { gemv_neon(&m, &t, range.clone(), &mut a) };
                        gemv_ref_chunks(&m, &t, range, &mut b).unwrap();
                        assert_eq!(a, b, "b{bits} g{group} {rows}×{cols} rows {rr:?}");
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 72);
    }

    /// Table kernel == scalar table reference byte for byte, including exact rounding ties,
    /// zero and huge scales.
    #[test]
    fn neon_tables_equal_the_reference() {
        let mut rng = Rng(23);
        for n in [4usize, 32, 128, 576, 1536] {
            let mut x: Vec<f32> = (0..n).map(|_| rng.heavy()).collect();
            for v in x.iter_mut().step_by(3) {
                *v = (*v * 4.0).round() / 8.0;
            }
            x[0] = -0.0;
            for inv in [0.0f32, 0.5, 1.0, 2.0, 127.0 / 3.7, 31.75, 1e6] {
                let (mut a, mut b) = (vec![0u8; 4 * n], vec![1u8; 4 * n]);
                // SAFETY: NEON is baseline on aarch64; q is 4·x long.
                unsafe { quantize_tables_neon(&x, inv, &mut a) };
                quantize_tables_ref(&x, inv, &mut b);
                assert_eq!(a, b, "n {n} inv {inv}");
            }
        }
    }
}
