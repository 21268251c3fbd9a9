//! The lookup-table kernels against their scalar and ideal references, on random
//! matrices of every bit width and group size.

use super::gemv::{gemv, gemv_ideal, gemv_ref, gemv_tables, table_error_bound};
use super::*;
use crate::error::Error;
use crate::lut::{LutMatrix, Method};
use crate::testutil::Rng;

fn random_case(
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    bits: usize,
    group: usize,
    method: Method,
) -> (LutMatrix<'static>, Vec<f32>) {
    let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.heavy()).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
    (
        LutMatrix::quantize_with(&w, rows, cols, bits, group, method).unwrap(),
        x,
    )
}

/// The dispatched SIMD kernel (AVX2 or NEON) == scalar reference bit for bit; both within
/// the table-quantization bound of the ideal f32 product.
#[test]
fn simd_equals_reference_and_reference_is_close_to_ideal() {
    let mut rng = Rng(0xC0FFEE);
    let mut cases = 0;
    for bits in 1..=4 {
        for &group in &[32usize, 64, 128] {
            for &(rows, mult) in &[(1usize, 1usize), (31, 3), (33, 2), (77, 5), (64, 1)] {
                let cols = group * mult;
                let method = if bits == 2 && rows == 33 {
                    Method::Ternary
                } else {
                    Method::Search
                };
                let (m, x) = random_case(&mut rng, rows, cols, bits, group, method);
                let t = LutTables::build(&x, group).unwrap();
                let (mut yr, mut ys, mut yi) =
                    (vec![0f32; rows], vec![0f32; rows], vec![0f32; rows]);
                gemv_ref(&m, &t, &mut yr).unwrap();
                gemv_tables(&m, &t, &mut ys).unwrap();
                let mut yp = vec![0f32; rows];
                super::gemv::gemv_portable_chunks(&m, &t, 0..m.chunks(), &mut yp).unwrap();
                gemv_ideal(&m, &x, &mut yi).unwrap();
                let w = m.dequantize();
                for r in 0..rows {
                    assert_eq!(
                        yp[r].to_bits(),
                        yr[r].to_bits(),
                        "portable b{bits} g{group} {rows}×{cols} row {r}"
                    );
                    assert_eq!(
                        ys[r].to_bits(),
                        yr[r].to_bits(),
                        "b{bits} g{group} {rows}×{cols} row {r}"
                    );
                    // Table quantization bound plus f32 rounding (relative to Σ|w·x|).
                    let mag: f32 = w[r * cols..(r + 1) * cols]
                        .iter()
                        .zip(&x)
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    let tol = table_error_bound(&m, &t, r) + 1e-5 * mag + 1e-6;
                    assert!(
                        (yr[r] - yi[r]).abs() <= tol,
                        "b{bits} g{group} {rows}×{cols} row {r}: lut {} ideal {} tol {tol}",
                        yr[r],
                        yi[r]
                    );
                }
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 60);
}

/// The bound above is a worst case; the typical error is far smaller (sanity: the
/// LUT result is within 2% of Σ|w·x| of the ideal one on a larger matrix).
#[test]
fn typical_error_is_small() {
    let mut rng = Rng(99);
    let (m, x) = random_case(&mut rng, 40, 512, 4, 128, Method::Search);
    let (mut y, mut yi) = (vec![0f32; 40], vec![0f32; 40]);
    gemv(&m, &x, &mut y).unwrap();
    gemv_ideal(&m, &x, &mut yi).unwrap();
    let w = m.dequantize();
    for r in 0..40 {
        let mag: f32 = w[r * 512..(r + 1) * 512]
            .iter()
            .zip(&x)
            .map(|(a, b)| (a * b).abs())
            .sum();
        assert!(
            (y[r] - yi[r]).abs() <= 0.02 * mag,
            "row {r}: {} vs {}",
            y[r],
            yi[r]
        );
    }
}

/// Random shapes; a GEMV split into chunk ranges equals the whole one.
#[test]
fn random_shapes_and_chunk_ranges() {
    use super::gemv::{chunk_rows, gemv_chunks, gemv_ref_chunks};
    let mut rng = Rng(0xABCDEF);
    for _ in 0..12 {
        let bits = 1 + (rng.next() % 4) as usize;
        let group = [32, 64, 128][(rng.next() % 3) as usize];
        let rows = 1 + (rng.next() % 140) as usize;
        let cols = group * (1 + (rng.next() % 6) as usize);
        let (m, x) = random_case(&mut rng, rows, cols, bits, group, Method::Search);
        let t = LutTables::build(&x, group).unwrap();
        let (mut whole, mut whole_ref) = (vec![0f32; rows], vec![0f32; rows]);
        gemv_tables(&m, &t, &mut whole).unwrap();
        gemv_ref(&m, &t, &mut whole_ref).unwrap();
        assert_eq!(whole, whole_ref, "b{bits} g{group} {rows}×{cols}");
        let mut portable = vec![0f32; rows];
        super::gemv::gemv_portable_chunks(&m, &t, 0..m.chunks(), &mut portable).unwrap();
        assert_eq!(
            portable, whole_ref,
            "portable b{bits} g{group} {rows}×{cols}"
        );
        let cut = (rng.next() as usize) % (m.chunks() + 1);
        for range in [0..cut, cut..m.chunks()] {
            let rr = chunk_rows(&m, &range);
            let (mut part, mut part_ref) = (vec![0f32; rr.len()], vec![0f32; rr.len()]);
            gemv_chunks(&m, &t, range.clone(), &mut part).unwrap();
            gemv_ref_chunks(&m, &t, range, &mut part_ref).unwrap();
            assert_eq!(part, whole[rr.clone()]);
            assert_eq!(part_ref, whole[rr]);
        }
    }
}

/// Every lookup at the extremes of the biased range (255 and 1) in the largest group:
/// the u16 accumulators and the wrapped even-byte recovery must still be exact.
#[test]
fn extreme_lookups_do_not_overflow() {
    use half::f16;
    let (rows, cols, group) = (40, 256, 128);
    let x = vec![1.0f32; cols];
    let t = LutTables::build(&x, group).unwrap();
    for bits in 1..=4 {
        let top = (1u8 << bits) - 1;
        for code in [0, top] {
            let codes = vec![code; rows * cols];
            let params = vec![f16::ONE; rows * cols / group];
            let m = LutMatrix::pack(bits, group, rows, cols, &codes, &params, &params).unwrap();
            let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
            gemv_tables(&m, &t, &mut a).unwrap();
            gemv_ref(&m, &t, &mut b).unwrap();
            assert_eq!(a, b, "bits {bits} code {code}");
            // Σ_k (u − 1)·1 exactly: the tables of all-ones activations are exact.
            let want = (code as f32 - 1.0) * cols as f32;
            assert!(
                a.iter().all(|&v| v == want),
                "bits {bits} code {code}: {} vs {want}",
                a[0]
            );
        }
    }
}

/// Every x86 kernel this CPU can run (AVX2 and AVX-512 BW; the dispatcher picks only
/// one) equals the scalar reference bit for bit: random shapes of every width and
/// group, odd row counts, chunk sub-ranges, and the extreme all-0 / all-max codes.
#[cfg(target_arch = "x86_64")]
#[test]
fn every_x86_kernel_equals_reference() {
    use super::gemv::{chunk_rows, gemv_ref_chunks};
    use half::f16;
    type Kernel = unsafe fn(&LutMatrix, &LutTables, std::ops::Range<usize>, &mut [f32]);
    let mut kernels: Vec<(&str, Kernel)> = Vec::new();
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") {
        kernels.push(("avx2", super::x86::gemv_avx2));
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            kernels.push(("avx512", super::x86_512::gemv_avx512));
        }
    }
    let mut rng = Rng(0x512);
    let mut checked = 0;
    for (name, kernel) in &kernels {
        for case in 0..40 {
            let bits = 1 + case % 4;
            let group = [32, 64, 128][case / 4 % 3];
            let rows = 1 + (rng.next() % 150) as usize;
            let cols = group * (1 + (rng.next() % 5) as usize);
            let (m, x) = if case % 10 == 9 {
                // All codes at one extreme, all-ones activations: the largest sums.
                let code = if case % 20 == 9 { (1u8 << bits) - 1 } else { 0 };
                let codes = vec![code; rows * cols];
                let params = vec![f16::ONE; rows * cols / group];
                let m = LutMatrix::pack(bits, group, rows, cols, &codes, &params, &params);
                (m.unwrap(), vec![1.0f32; cols])
            } else {
                random_case(&mut rng, rows, cols, bits, group, Method::Search)
            };
            let t = LutTables::build(&x, group).unwrap();
            if *name == "avx512" {
                // The two-token prefill kernel: each token's rows as the reference's.
                let x2: Vec<f32> = x.iter().map(|v| 0.5 - v * rng.unit()).collect();
                let t2 = LutTables::build(&x2, group).unwrap();
                for c in 0..m.chunks() {
                    let n = chunk_rows(&m, &(c..c + 1)).len();
                    let mut out = [[0f32; crate::lut::layout::CHUNK_ROWS]; 2];
                    // SAFETY: the features were detected above; c < chunks.
                    unsafe { super::x86_512::gemv2_avx512(&m, [&t, &t2], c, &mut out) };
                    for (tab, got) in [&t, &t2].into_iter().zip(&out) {
                        let mut want = vec![0f32; n];
                        gemv_ref_chunks(&m, tab, c..c + 1, &mut want).unwrap();
                        let same = got[..n].iter().zip(&want).all(|(a, b)| a == b);
                        assert!(same, "pair b{bits} g{group} {rows}×{cols} chunk {c}");
                        checked += n;
                    }
                }
            }
            let cut = (rng.next() as usize) % (m.chunks() + 1);
            for range in [0..m.chunks(), 0..cut, cut..m.chunks()] {
                let n = chunk_rows(&m, &range).len();
                let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
                gemv_ref_chunks(&m, &t, range.clone(), &mut want).unwrap();
                // SAFETY: the features were detected above; the range and output length
                // are those the reference accepted.
                unsafe { kernel(&m, &t, range.clone(), &mut got) };
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{name} b{bits} g{group} {rows}×{cols} chunks {range:?}"
                );
                checked += n;
            }
        }
    }
    // This machine class has AVX2 (the CI's does); rows were really compared.
    assert!(kernels.is_empty() || checked > 0);
}

#[test]
fn pool_split_equals_single_thread() {
    let pool = crate::backend::cpu::Pool::new(2).unwrap();
    let mut rng = Rng(11);
    for &rows in &[1usize, 31, 95, 200] {
        let (m, x) = random_case(&mut rng, rows, 256, 3, 64, Method::Search);
        let t = LutTables::build(&x, 64).unwrap();
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        gemv_tables(&m, &t, &mut a).unwrap();
        super::gemv::gemv_pool(&pool, &m, &t, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(super::gemv::gemv_pool(&pool, &m, &t, &mut b[1..]).is_err());
    }
}

#[test]
fn gemv_bad_input_is_an_error() {
    let mut rng = Rng(3);
    let (m, x) = random_case(&mut rng, 5, 64, 3, 32, Method::Rtn);
    let inv = |r: crate::Result<()>| matches!(r, Err(Error::InvalidArg(_)));
    assert!(inv(gemv(&m, &x[..32], &mut [0.0; 5])));
    assert!(inv(gemv(&m, &x, &mut [0.0; 4])));
    assert!(inv(gemv(&m, &x, &mut [0.0; 6])));
    let t64 = LutTables::build(&x, 64).unwrap();
    assert!(inv(gemv_tables(&m, &t64, &mut [0.0; 5])));
    assert!(inv(gemv_ref(&m, &t64, &mut [0.0; 5])));
    let t = LutTables::build(&x[..32], 32).unwrap();
    assert!(inv(gemv_tables(&m, &t, &mut [0.0; 5])));
    assert!(inv(gemv_ideal(&m, &x[..63], &mut [0.0; 5])));
    let t = LutTables::build(&x, 32).unwrap();
    assert!(inv(super::gemv::gemv_chunks(&m, &t, 0..2, &mut [0.0; 5])));
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 1..0;
    assert!(inv(super::gemv::gemv_chunks(&m, &t, backwards, &mut [])));
    assert!(inv(super::gemv::gemv_chunks(&m, &t, 0..1, &mut [0.0; 4])));
    assert!(super::gemv::gemv_chunks(&m, &t, 1..1, &mut []).is_ok());
}
