//! SIMD kernels against the scalar references, on random and extreme blocks.

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
                .flat_map(|_| f16::from_f32((rng(seed) % 2000) as f32 / 1000.0 - 1.0).to_le_bytes())
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
