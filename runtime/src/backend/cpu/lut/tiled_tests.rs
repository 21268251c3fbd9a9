//! Tests of the tiled int8 GEMM: the SIMD expansion and tile equal their references byte
//! for byte / bit for bit, the reference is within the activation-rounding bound of the
//! exact product, and `gemm_many` dispatches to it for int8 tables.

use super::*;
use crate::backend::cpu::lut::gemm::gemm_many;
use crate::backend::cpu::lut::gemv::gemv_ideal;
use crate::backend::cpu::lut::table::{rebuild_many, LutTables};
use crate::backend::cpu::Pool;
use crate::lut::Method;
use crate::testutil::Rng;
use half::f16;

fn random_matrix(
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    bits: usize,
    group: usize,
) -> LutMatrix<'static> {
    let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.heavy()).collect();
    LutMatrix::quantize_with(&w, rows, cols, bits, group, Method::Search).unwrap()
}

fn acts(rng: &mut Rng, n: usize, cols: usize, group: usize) -> (Vec<Vec<f32>>, Vec<Acts8>) {
    let xs: Vec<Vec<f32>> = (0..n)
        .map(|_| (0..cols).map(|_| rng.heavy()).collect())
        .collect();
    let a = xs
        .iter()
        .map(|x| {
            let mut a = Acts8::default();
            a.rebuild(x, group).unwrap();
            a
        })
        .collect();
    (xs, a)
}

#[test]
fn slot_rows_are_a_permutation_matching_the_layout() {
    let mut seen = [false; CHUNK_ROWS];
    for (slot, &r) in SLOT_ROW.iter().enumerate() {
        assert!(!seen[r]);
        seen[r] = true;
        // The layout's byte of row r within a lane (layout.rs `bit_position`).
        let t = r % 16;
        let byte = if t < 8 { 2 * t } else { 2 * (t - 8) + 1 };
        assert_eq!((slot % 16, slot / 16), (byte, r / 16));
    }
}

/// The dispatched expansion equals the index-formula reference byte for byte, and the
/// expanded codes are the matrix's codes.
#[test]
fn expansion_equals_reference() {
    let mut rng = Rng(0x7111);
    for case in 0..24 {
        let bits = 1 + case % 4;
        let group = [32, 64, 128][case / 4 % 3];
        let rows = 1 + (rng.next() % 100) as usize;
        let cols = group * (1 + (rng.next() % 4) as usize);
        let m = random_matrix(&mut rng, rows, cols, bits, group);
        for c in 0..m.chunks() {
            let (mut a, mut b) = (Tile::default(), Tile::default());
            expand(&m, c, &mut a);
            expand_ref(&m, c, &mut b);
            assert_eq!(a.codes, b.codes, "b{bits} g{group} {rows}×{cols} chunk {c}");
            assert_eq!(a.scales, b.scales);
            assert_eq!(a.szs, b.szs);
            let r = c * CHUNK_ROWS + SLOT_ROW[17];
            if r < rows {
                // Slot 17 = half 1, byte 1; k-step 1 of group 0 (columns 4..8): (1·2 + 1)·64.
                let at = 3 * 64 + 4;
                let want: Vec<u8> = (4..8).map(|k| m.code(r, k)).collect();
                assert_eq!(&a.codes[at..at + 4], &want[..]);
            }
        }
    }
}

/// The dispatched tile kernel equals the portable tile bit for bit for every token count of
/// a tile, including the extreme codes and activations (largest integer sums).
#[test]
fn tile_kernel_equals_portable() {
    let mut rng = Rng(0x7112);
    for case in 0..30 {
        let bits = 1 + case % 4;
        let group = [32, 64, 128][case / 4 % 3];
        let rows = 1 + (rng.next() % 70) as usize;
        let cols = group * (1 + (rng.next() % 4) as usize);
        let n = 1 + case % TILE;
        let (m, acts8) = if case % 10 == 9 {
            let top = (1u8 << bits) - 1;
            let codes = vec![top; rows * cols];
            let params = vec![f16::ONE; rows * cols / group];
            let m = LutMatrix::pack(bits, group, rows, cols, &codes, &params, &params).unwrap();
            let x = vec![-3.0f32; cols];
            let mut a = Acts8::default();
            a.rebuild(&x, group).unwrap();
            assert!(a.codes().iter().all(|&q| q == -127));
            (m, vec![a; n])
        } else {
            let m = random_matrix(&mut rng, rows, cols, bits, group);
            (m, acts(&mut rng, n, cols, group).1)
        };
        let refs: Vec<&Acts8> = acts8.iter().collect();
        for c in 0..m.chunks() {
            let mut tile = Tile::default();
            expand(&m, c, &mut tile);
            let mut got = vec![[0f32; CHUNK_ROWS]; n];
            let mut want = vec![[1f32; CHUNK_ROWS]; n];
            tile_run(&m, &tile, &refs, &mut got);
            tile_portable(&m, &tile, &refs, &mut want);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "b{bits} g{group} {rows}×{cols} n{n} chunk {c}"
                );
            }
        }
    }
}

/// `gemm_many` on int8 tables (every token count up to two tiles and a remainder, several
/// matrices in one pass) equals the scalar reference bit for bit, and the reference is
/// within the activation-rounding bound of the exact product of the dequantized weights.
#[test]
fn gemm_many_int8_equals_reference_and_is_close_to_ideal() {
    let pool = Pool::new(2).unwrap();
    let mut rng = Rng(0x7113);
    for (bits, group) in [(4usize, 32usize), (2, 64), (3, 128), (1, 64)] {
        let cols = 2 * 128;
        let mats: Vec<LutMatrix> = [70usize, 32, 5]
            .iter()
            .map(|&rows| random_matrix(&mut rng, rows, cols, bits, group))
            .collect();
        for n in [1usize, 7, 8, 19, 33] {
            let (xs, _) = acts(&mut rng, n, cols, group);
            let flat: Vec<f32> = xs.concat();
            let mut tables = vec![LutTables::default(); n];
            for (t, x) in tables.iter_mut().zip(&xs) {
                t.rebuild_int8(x, group).unwrap();
            }
            let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; n * m.rows()]).collect();
            let jobs = mats
                .iter()
                .cloned()
                .zip(outs.iter_mut().map(|o| o.as_mut_slice()));
            gemm_many(&pool, jobs, &tables).unwrap();
            let a8: Vec<&Acts8> = tables.iter().map(|t| t.int8().unwrap()).collect();
            for (m, out) in mats.iter().zip(&outs) {
                let mut want = vec![0f32; n * m.rows()];
                gemm_int8_ref(m, &a8, &mut want).unwrap();
                assert!(
                    out.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "b{bits} g{group} {}×{cols} n{n}",
                    m.rows()
                );
                let w = m.dequantize();
                for (t, x) in xs.iter().enumerate() {
                    let mut ideal = vec![0f32; m.rows()];
                    gemv_ideal(m, x, &mut ideal).unwrap();
                    for r in 0..m.rows() {
                        let mag: f32 = w[r * cols..(r + 1) * cols]
                            .iter()
                            .zip(x)
                            .map(|(a, b)| (a * b).abs())
                            .sum();
                        let tol = int8_error_bound(m, x, a8[t], r) + 1e-5 * mag + 1e-6;
                        let y = out[t * m.rows() + r];
                        assert!(
                            (y - ideal[r]).abs() <= tol,
                            "b{bits} row {r} token {t}: {y} vs {} tol {tol}",
                            ideal[r]
                        );
                    }
                }
            }
            // rebuild_many picks the int8 form for large batches on CPUs with the kernel.
            let mut picked = vec![LutTables::default(); n];
            rebuild_many(&pool, &mut picked, &flat, cols, group).unwrap();
            let int8 = n >= MIN_TOKENS && available();
            let lookup = n < MIN_TOKENS_LOW_BITS || !available();
            assert!(picked.iter().all(|t| t.int8().is_some() == int8));
            assert!(picked.iter().all(|t| t.has_lookup() == lookup));
        }
    }
}

/// Mixed or mismatched tables are errors, and the GEMV refuses int8-only tables.
#[test]
fn int8_tables_bad_input_is_an_error() {
    let pool = Pool::new(1).unwrap();
    let mut rng = Rng(0x7114);
    let m = random_matrix(&mut rng, 40, 64, 2, 32);
    let x: Vec<f32> = (0..64).map(|_| rng.normal()).collect();
    let mut i8t = LutTables::default();
    i8t.rebuild_int8(&x, 32).unwrap();
    let lut = LutTables::build(&x, 32).unwrap();
    let mut out = vec![0f32; 80];
    let mixed = [i8t.clone(), lut.clone()];
    assert!(gemm_many(&pool, [(m.clone(), &mut out[..])], &mixed).is_err());
    let mixed = [lut, i8t.clone()];
    assert!(gemm_many(&pool, [(m.clone(), &mut out[..])], &mixed).is_err());
    let mut y = vec![0f32; 40];
    assert!(crate::backend::cpu::lut::gemv::gemv_tables(&m, &i8t, &mut y).is_err());
    let mut g64 = LutTables::default();
    g64.rebuild_int8(&x, 64).unwrap();
    assert!(gemm_many(&pool, [(m.clone(), &mut out[..40])], &[g64]).is_err());
    assert!(i8t.rebuild_int8(&x, 16).is_err());
    let a = i8t.int8().unwrap();
    assert!(gemm_int8_ref(&m, &[a], &mut out[..39]).is_err());
    let m128 = random_matrix(&mut rng, 3, 128, 2, 32);
    assert!(gemm_int8_ref(&m128, &[a], &mut out[..3]).is_err());
}

/// Tables holding both forms (mid-size batches): `gemm_many` runs each matrix on the kernel
/// `prefers` picks for its bit width, in one pass: int8 rows equal the int8 reference, the
/// others the lookup reference, bit for bit.
#[test]
fn both_forms_pick_the_kernel_per_matrix() {
    use crate::backend::cpu::lut::gemv::gemv_ref;
    let pool = Pool::new(2).unwrap();
    let mut rng = Rng(0x7115);
    let (cols, group, n) = (128, 64, MIN_TOKENS + 1);
    let mats = [
        random_matrix(&mut rng, 40, cols, 4, group),
        random_matrix(&mut rng, 40, cols, 2, group),
    ];
    let (xs, _) = acts(&mut rng, n, cols, group);
    let mut tables = vec![LutTables::default(); n];
    for (t, x) in tables.iter_mut().zip(&xs) {
        t.rebuild_both(x, group).unwrap();
        assert!(t.has_lookup() && t.int8().is_some());
    }
    let mut outs = [vec![0f32; n * 40], vec![0f32; n * 40]];
    let [o4, o2] = &mut outs;
    gemm_many(
        &pool,
        [
            (mats[0].clone(), &mut o4[..]),
            (mats[1].clone(), &mut o2[..]),
        ],
        &tables,
    )
    .unwrap();
    let a8: Vec<&Acts8> = tables.iter().map(|t| t.int8().unwrap()).collect();
    for (m, out) in mats.iter().zip(&outs) {
        let mut want = vec![0f32; n * 40];
        if prefers(m, n) {
            gemm_int8_ref(m, &a8, &mut want).unwrap();
        } else {
            for (t, w) in tables.iter().zip(want.chunks_exact_mut(40)) {
                gemv_ref(m, t, w).unwrap();
            }
        }
        assert!(
            out.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "b{}",
            m.bits()
        );
    }
    assert!(prefers(&mats[0], n) && !prefers(&mats[1], n));
}
