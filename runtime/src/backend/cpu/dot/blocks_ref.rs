//! Scalar reference dot products for the block types that have no SIMD kernel yet: Q5_0,
//! Q5_1 and IQ4_NL against Q8_0/Q8_1 activation blocks, and the K-quants, IQ4_XS, TQ1_0 and
//! TQ2_0 against Q8_K super-blocks (see [`crate::quant::ggml`] for the activation layouts).
//!
//! Each weight block is first unpacked into integer codes with integer sub-block scales
//! ([`Unpacked`]); the sums of code × activation code are exact integers, so the only
//! rounding is the final `d_w·d_a·Σ − dmin_w·d_a·Σmin` per block, as in llama.cpp's
//! generic C kernels.

use super::{f16_table, h, Acts};
use crate::format::GgmlType;
use crate::quant::f16_at;
use crate::quant::ggml::Q8kRow;
use crate::quant::iq4::{iq4_xs_scale, LEVELS};
use crate::quant::kquant::{q3k_scales, scale_min_k4, QK_K};
use crate::quant::ternary::trit;

/// One weight super-block as integers: `w[l] = d·scale[l / sub]·code[l] − dmin·min[l / sub]`.
pub(crate) struct Unpacked {
    pub code: [i8; QK_K],
    /// Elements per sub-block (16 or 32).
    pub sub: usize,
    pub scale: [i32; 16],
    pub min: [i32; 16],
    pub d: f32,
    pub dmin: f32,
}

impl Unpacked {
    fn new(sub: usize, d: f32, dmin: f32) -> Self {
        Unpacked {
            code: [0; QK_K],
            sub,
            scale: [1; 16],
            min: [0; 16],
            d,
            dmin,
        }
    }
}

/// Unpack one super-block of `ty` (a type whose activations are Q8_K).
pub(crate) fn unpack(ty: GgmlType, b: &[u8]) -> Unpacked {
    match ty {
        GgmlType::Q2K => {
            let mut u = Unpacked::new(16, f16_at(b, 80), f16_at(b, 82));
            for (j, &sc) in b[..16].iter().enumerate() {
                u.scale[j] = (sc & 15) as i32;
                u.min[j] = (sc >> 4) as i32;
            }
            for hh in 0..2 {
                for s in 0..4 {
                    for l in 0..32 {
                        u.code[128 * hh + 32 * s + l] =
                            ((b[16 + 32 * hh + l] >> (2 * s)) & 3) as i8;
                    }
                }
            }
            u
        }
        GgmlType::Q3K => {
            let mut u = Unpacked::new(16, f16_at(b, 108), 0.0);
            let sc = q3k_scales(&b[96..108]);
            for (o, &v) in u.scale.iter_mut().zip(&sc) {
                *o = v as i32;
            }
            for hh in 0..2 {
                for s in 0..4 {
                    let bit = 1u8 << (4 * hh + s);
                    for l in 0..32 {
                        let low = ((b[32 + 32 * hh + l] >> (2 * s)) & 3) as i8;
                        u.code[128 * hh + 32 * s + l] = low - if b[l] & bit != 0 { 0 } else { 4 };
                    }
                }
            }
            u
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let mut u = Unpacked::new(32, f16_at(b, 0), f16_at(b, 2));
            let five = ty == GgmlType::Q5K;
            let qs = if five { &b[48..176] } else { &b[16..144] };
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, &b[4..16]);
                u.scale[j] = s as i32;
                u.min[j] = m as i32;
            }
            for p in 0..4 {
                for l in 0..32 {
                    let q = qs[32 * p + l];
                    let (mut lo, mut hi) = (q & 15, q >> 4);
                    if five {
                        lo |= ((b[16 + l] >> (2 * p)) & 1) << 4;
                        hi |= ((b[16 + l] >> (2 * p + 1)) & 1) << 4;
                    }
                    u.code[64 * p + l] = lo as i8;
                    u.code[64 * p + 32 + l] = hi as i8;
                }
            }
            u
        }
        GgmlType::Q6K => {
            let mut u = Unpacked::new(16, f16_at(b, 208), 0.0);
            for j in 0..16 {
                u.scale[j] = b[192 + j] as i8 as i32;
            }
            for hh in 0..2 {
                let (ql, qh) = (&b[64 * hh..], &b[128 + 32 * hh..]);
                for l in 0..32 {
                    let c = &mut u.code[128 * hh..];
                    c[l] = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i8 - 32;
                    c[l + 32] = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                    c[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                    c[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                }
            }
            u
        }
        GgmlType::Iq4Xs => {
            let mut u = Unpacked::new(32, f16_at(b, 0), 0.0);
            for k in 0..8 {
                u.scale[k] = iq4_xs_scale(b, k);
                let qs = &b[8 + 16 * k..24 + 16 * k];
                for j in 0..16 {
                    u.code[32 * k + j] = LEVELS[(qs[j] & 15) as usize];
                    u.code[32 * k + 16 + j] = LEVELS[(qs[j] >> 4) as usize];
                }
            }
            u
        }
        GgmlType::TQ1_0 => {
            let mut u = Unpacked::new(16, f16_at(b, 52), 0.0);
            for n in 0..5 {
                for (m, &q) in b[..32].iter().enumerate() {
                    u.code[32 * n + m] = trit(q, n) as i8;
                }
                for m in 0..16 {
                    u.code[160 + 16 * n + m] = trit(b[32 + m], n) as i8;
                }
            }
            for n in 0..4 {
                for j in 0..4 {
                    u.code[240 + 4 * n + j] = trit(b[48 + j], n) as i8;
                }
            }
            u
        }
        GgmlType::TQ2_0 => {
            let mut u = Unpacked::new(16, f16_at(b, 64), 0.0);
            for hh in 0..2 {
                for s in 0..4 {
                    for m in 0..32 {
                        u.code[128 * hh + 32 * s + m] = ((b[32 * hh + m] >> (2 * s)) & 3) as i8 - 1;
                    }
                }
            }
            u
        }
        other => unreachable!("{other} has no Q8_K dot product"),
    }
}

/// `Σ w·x` for one row of `ty` weights (K-quants, IQ4_XS, TQ1_0, TQ2_0) and a Q8_K
/// activation row; NaN if the activation row is too short.
pub fn dot_q8k_ref(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    let bb = ty.block_geometry().1;
    let nk = w.len() / bb;
    let Some(row) = Q8kRow::new(a, nk) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(bb).enumerate() {
        let u = unpack(ty, wb);
        let q = row.codes(i);
        let da = row.d(i);
        let bsum = |j: usize| row.bsum(i, j);
        let (mut isum, mut imin) = (0i32, 0i32);
        for j in 0..QK_K / u.sub {
            let span = u.sub * j..u.sub * (j + 1);
            let s: i32 = u.code[span.clone()]
                .iter()
                .zip(&q[span])
                .map(|(&c, &a)| c as i32 * a as i8 as i32)
                .sum();
            isum += u.scale[j] * s;
            if u.min[j] != 0 {
                let qsum = if u.sub == 16 {
                    bsum(j)
                } else {
                    bsum(2 * j) + bsum(2 * j + 1)
                };
                imin += u.min[j] * qsum;
            }
        }
        acc += u.d * da * isum as f32 - u.dmin * da * imin as f32;
    }
    acc
}

/// The 32 codes of a Q5_0/Q5_1 block.
fn q5_codes(qh: u32, qs: &[u8]) -> [i32; 32] {
    let mut c = [0i32; 32];
    for j in 0..16 {
        c[j] = ((qs[j] & 15) | ((((qh >> j) & 1) as u8) << 4)) as i32;
        c[j + 16] = ((qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4)) as i32;
    }
    c
}

/// Q5_0 weights against Q8_0 activations.
pub fn dot_q5_0_q8_0_ref(w: &[u8], a: &[u8]) -> f32 {
    let t = f16_table();
    let nb = w.len() / 22;
    let Some(a) = Acts::new(a, nb, false) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(22).enumerate() {
        let c = q5_codes(u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]), &wb[6..]);
        let q = a.block(i);
        let s: i32 = (0..32).map(|j| (c[j] - 16) * q[j] as i8 as i32).sum();
        acc += h(t, wb, 0) * a.d(i) * s as f32;
    }
    acc
}

/// Q5_1 weights against Q8_1 activations (`m·s` carries the minimum, as for Q4_1).
pub fn dot_q5_1_q8_1_ref(w: &[u8], a: &[u8]) -> f32 {
    let t = f16_table();
    let nb = w.len() / 24;
    let Some(a) = Acts::new(a, nb, true) else {
        return f32::NAN;
    };
    let mut acc = 0f32;
    for (i, wb) in w.chunks_exact(24).enumerate() {
        let c = q5_codes(u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]), &wb[8..]);
        let q = a.block(i);
        let s: i32 = (0..32).map(|j| c[j] * q[j] as i8 as i32).sum();
        acc += h(t, wb, 0) * a.d(i) * s as f32 + h(t, wb, 2) * a.s(i);
    }
    acc
}

/// IQ4_NL weights against Q8_0 activations.
pub fn dot_iq4_nl_q8_0_ref(w: &[u8], a: &[u8]) -> f32 {
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
            s += LEVELS[(wb[2 + j] & 15) as usize] as i32 * q[j] as i8 as i32;
            s += LEVELS[(wb[2 + j] >> 4) as usize] as i32 * q[j + 16] as i8 as i32;
        }
        acc += h(t, wb, 0) * a.d(i) * s as f32;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::ggml::{dequantize_row, quantize_row, ActFormat};

    /// Each reference dot equals the f64 dot of the dequantized weights with the
    /// dequantized activation codes, on the golden blocks of every type, to float
    /// rounding (relative 1e-5 of Σ|w·x|).
    #[test]
    fn reference_dots_equal_dequantized_dots() {
        use GgmlType::*;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/ggml_blocks");
        for ty in [
            Q5_0, Q5_1, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Nl, Iq4Xs, TQ1_0, TQ2_0,
        ] {
            let data = std::fs::read(dir.join(format!("{}.bin", ty.name()))).unwrap();
            let (bl, bb) = ty.block_geometry();
            let nb = data.len() / (bb + 4 * bl);
            let w = &data[..nb * bb];
            let n = nb * bl;
            let mut wf = vec![0f32; n];
            assert!(dequantize_row(ty, w, &mut wf));
            let mut seed = 0x1234u64 + ty.id() as u64;
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 2001) as f32 / 1000.0 - 1.0
                })
                .collect();
            let fmt = ActFormat::for_weights(ty);
            let mut a = vec![0u8; fmt.row_bytes(n)];
            quantize_row(fmt, &x, &mut a);
            // The activations as the kernel sees them: codes times their block scale.
            let xq: Vec<f64> = match fmt {
                ActFormat::Q8K => (0..n)
                    .map(|l| {
                        let i = l / QK_K;
                        let d = f32::from_le_bytes(a[n + 4 * i..n + 4 * i + 4].try_into().unwrap());
                        d as f64 * (a[l] as i8) as f64
                    })
                    .collect(),
                _ => (0..n)
                    .map(|l| {
                        let i = l / 32;
                        let d = f32::from_le_bytes(a[n + 4 * i..n + 4 * i + 4].try_into().unwrap());
                        d as f64 * (a[l] as i8) as f64
                    })
                    .collect(),
            };
            let (want, mag) = wf.iter().zip(&xq).fold((0f64, 0f64), |(s, m), (&w, &x)| {
                (s + w as f64 * x, m + (w as f64 * x).abs())
            });
            let got = super::super::dot_ref(ty, w, &a) as f64;
            // Q5_1 adds the minimum through Q8_1's f16-rounded block sum s = d·Σq.
            let tol = if ty == Q5_1 { 2e-3 } else { 1e-5 } * mag.max(1e-6);
            assert!(
                (got - want).abs() <= tol,
                "{ty}: {got} vs {want} (Σ|wx| {mag})"
            );
        }
    }

    /// The AVX2 Q4_K, Q5_K, Q6_K and Q5_0 kernels (one row and four) equal the reference bit for bit: random blocks (any
    /// code bytes, finite scales), random activations of zero, tiny, unit and huge
    /// magnitude, one to nine super-blocks per row.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kquant_kernels_equal_reference_bitwise() {
        use GgmlType::*;
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return;
        }
        type Kernel = unsafe fn(&[u8], &[u8]) -> f32;
        let kernels: [(GgmlType, Kernel, &[usize]); 3] = [
            (Q4K, super::super::kquant_x86::dot_q4_k_q8_k, &[0, 2]),
            (Q5K, super::super::kquant_x86::dot_q5_k_q8_k, &[0, 2]),
            (Q6K, super::super::kquant_x86::dot_q6_k_q8_k, &[208]),
        ];
        let mut seed = 0xC0FFEEu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        for (ty, kernel, fields) in kernels {
            let bb = ty.block_geometry().1;
            for case in 0..60 {
                let nk = 1 + case % 9;
                let mut w: Vec<u8> = (0..nk * bb).map(|_| next() as u8).collect();
                for k in 0..nk {
                    for &f in fields {
                        let v = half::f16::from_f32(((next() % 2000) as f32 - 1000.0) * 1e-5);
                        w[k * bb + f..k * bb + f + 2].copy_from_slice(&v.to_le_bytes());
                    }
                }
                let mag = [0.0f32, 1e-6, 1.0, 3e4][case % 4];
                let x: Vec<f32> = (0..nk * QK_K)
                    .map(|_| ((next() % 2001) as f32 / 1000.0 - 1.0) * mag)
                    .collect();
                let mut a = vec![0u8; ActFormat::Q8K.row_bytes(x.len())];
                quantize_row(ActFormat::Q8K, &x, &mut a);
                let want = dot_q8k_ref(ty, &w, &a);
                // SAFETY: AVX2, FMA and F16C were detected above.
                let got = unsafe { kernel(&w, &a) };
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty} case {case}: {got} vs {want}"
                );
                // The four-row (prefill) kernel: each row as the single-row reference.
                let rows: Vec<Vec<u8>> = (0..4)
                    .map(|r| {
                        let xr: Vec<f32> = x.iter().map(|v| v * (r as f32 - 1.5)).collect();
                        let mut ar = vec![0u8; a.len()];
                        quantize_row(ActFormat::Q8K, &xr, &mut ar);
                        ar
                    })
                    .collect();
                let four = super::super::dot4(ty, &w, [&rows[0], &rows[1], &rows[2], &rows[3]]);
                for (r, got) in four.iter().enumerate() {
                    let want = dot_q8k_ref(ty, &w, &rows[r]);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} dot4 row {r} case {case}"
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 180);
        // Q5_0 against Q8_0 activations, same cases.
        let mut checked = 0;
        for case in 0..60 {
            let nb = 1 + case % 17;
            let mut w: Vec<u8> = (0..nb * 22).map(|_| next() as u8).collect();
            for k in 0..nb {
                let v = half::f16::from_f32(((next() % 2000) as f32 - 1000.0) * 1e-5);
                w[k * 22..k * 22 + 2].copy_from_slice(&v.to_le_bytes());
            }
            let mag = [0.0f32, 1e-6, 1.0, 3e4][case % 4];
            let x: Vec<f32> = (0..nb * 32)
                .map(|_| ((next() % 2001) as f32 / 1000.0 - 1.0) * mag)
                .collect();
            let mut a = vec![0u8; ActFormat::Q8_0.row_bytes(x.len())];
            quantize_row(ActFormat::Q8_0, &x, &mut a);
            let rows: Vec<Vec<u8>> = (0..4)
                .map(|r| {
                    let xr: Vec<f32> = x.iter().map(|v| v * (r as f32 - 1.5)).collect();
                    let mut ar = vec![0u8; a.len()];
                    quantize_row(ActFormat::Q8_0, &xr, &mut ar);
                    ar
                })
                .collect();
            let four = super::super::dot4(Q5_0, &w, [&rows[0], &rows[1], &rows[2], &rows[3]]);
            for (r, got) in four.iter().enumerate() {
                let want = dot_q5_0_q8_0_ref(&w, &rows[r]);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "Q5_0 dot4 row {r} case {case}"
                );
            }
            let want = dot_q5_0_q8_0_ref(&w, &a);
            // SAFETY: AVX2, FMA and F16C were detected above.
            let got = unsafe { super::super::kquant_x86::dot_q5_0_q8_0(&w, &a) };
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "Q5_0 case {case}: {got} vs {want}"
            );
            checked += 1;
        }
        assert_eq!(checked, 60);
    }

    /// Whatever kernel [`super::super::dot`] / [`super::super::dot4`] dispatch to on this
    /// machine (AVX2 on x86, NEON on aarch64 under qemu, the references elsewhere), every
    /// block type equals its scalar reference bit for bit on random blocks.
    #[test]
    fn dispatched_dots_equal_reference_bitwise() {
        use GgmlType::*;
        let mut seed = 0xBADC0DEu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let fields = |ty: GgmlType| -> &'static [usize] {
            match ty {
                Q5_0 | Iq4Nl | Iq4Xs => &[0],
                Q5_1 | Q4K | Q5K => &[0, 2],
                Q2K => &[80, 82],
                Q3K => &[108],
                Q6K => &[208],
                TQ1_0 => &[52],
                _ => &[64],
            }
        };
        for ty in [
            Q5_0, Q5_1, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Nl, Iq4Xs, TQ1_0, TQ2_0,
        ] {
            let (bl, bb) = ty.block_geometry();
            for case in 0..12 {
                let nb = (1 + case % 3) * QK_K / bl;
                let mut w: Vec<u8> = (0..nb * bb).map(|_| next() as u8).collect();
                for k in 0..nb {
                    for &f in fields(ty) {
                        let v = half::f16::from_f32(((next() % 2000) as f32 - 1000.0) * 1e-5);
                        w[k * bb + f..k * bb + f + 2].copy_from_slice(&v.to_le_bytes());
                    }
                }
                let fmt = ActFormat::for_weights(ty);
                let rows: Vec<Vec<u8>> = (0..4)
                    .map(|_| {
                        let x: Vec<f32> = (0..nb * bl)
                            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                            .collect();
                        let mut a = vec![0u8; fmt.row_bytes(x.len())];
                        quantize_row(fmt, &x, &mut a);
                        a
                    })
                    .collect();
                let four = super::super::dot4(ty, &w, [&rows[0], &rows[1], &rows[2], &rows[3]]);
                for (r, row) in rows.iter().enumerate() {
                    let want = super::super::dot_ref(ty, &w, row);
                    let got = super::super::dot(ty, &w, row);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} case {case}: {got} vs {want}"
                    );
                    assert_eq!(
                        four[r].to_bits(),
                        want.to_bits(),
                        "{ty} dot4 row {r} case {case}"
                    );
                }
            }
        }
    }

    #[test]
    fn q8k_codes_sums_and_scale() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        let mut a = vec![0u8; ActFormat::Q8K.row_bytes(512)];
        quantize_row(ActFormat::Q8K, &x, &mut a);
        for i in 0..2 {
            let d = f32::from_le_bytes(a[512 + 4 * i..516 + 4 * i].try_into().unwrap());
            let amax = x[256 * i..256 * (i + 1)]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            assert!((d.abs() - amax / 127.0).abs() <= 1e-6 * amax, "{d} {amax}");
            for j in 0..16 {
                let s: i32 = a[256 * i + 16 * j..256 * i + 16 * j + 16]
                    .iter()
                    .map(|&c| c as i8 as i32)
                    .sum();
                let at = 512 + 8 + 32 * i + 2 * j;
                assert_eq!(i16::from_le_bytes([a[at], a[at + 1]]) as i32, s);
            }
            for l in 0..256 {
                let back = d * (a[256 * i + l] as i8) as f32;
                assert!((back - x[256 * i + l]).abs() <= d.abs() * 0.5 + 1e-6);
            }
        }
    }
}
