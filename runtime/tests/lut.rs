//! The LUT GEMV through the public API, as the model code will use it: quantize once,
//! build tables per activation vector, run on the thread pool.

use suanpan::backend::cpu::lut::gemv::{gemv, gemv_ideal, gemv_pool, table_error_bound};
use suanpan::backend::cpu::lut::table::LutTables;
use suanpan::backend::cpu::Pool;
use suanpan::lut::{LutMatrix, Method};
use suanpan::Error;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[test]
fn pooled_lut_gemv_matches_ideal_within_the_table_bound() {
    let pool = Pool::new(2).unwrap();
    let mut seed = 42u64;
    for (bits, group, rows, cols, method) in [
        (4, 128, 129, 512, Method::Search),
        (3, 64, 67, 320, Method::Search),
        (2, 32, 45, 96, Method::Ternary),
        (1, 64, 7, 128, Method::Rtn),
    ] {
        let w: Vec<f32> = (0..rows * cols).map(|_| 0.1 * lcg(&mut seed)).collect();
        let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
        let m = LutMatrix::quantize_with(&w, rows, cols, bits, group, method).unwrap();
        let t = LutTables::build(&x, group).unwrap();
        let (mut y, mut y1, mut yi) = (vec![0f32; rows], vec![0f32; rows], vec![0f32; rows]);
        gemv_pool(&pool, &m, &t, &mut y).unwrap();
        gemv(&m, &x, &mut y1).unwrap();
        gemv_ideal(&m, &x, &mut yi).unwrap();
        assert_eq!(y, y1, "b{bits}: pool and single thread differ");
        let wq = m.dequantize();
        for r in 0..rows {
            let mag: f32 = wq[r * cols..(r + 1) * cols]
                .iter()
                .zip(&x)
                .map(|(a, b)| (a * b).abs())
                .sum();
            let tol = table_error_bound(&m, &t, r) + 1e-5 * mag + 1e-6;
            assert!(
                (y[r] - yi[r]).abs() <= tol,
                "b{bits} row {r}: {} vs {}",
                y[r],
                yi[r]
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let w = vec![0.0f32; 64];
    assert!(matches!(
        LutMatrix::quantize(&w, 2, 32, 5, 32),
        Err(Error::InvalidArg(_))
    ));
    assert!(matches!(
        LutMatrix::quantize(&w, 1, 64, 2, 128),
        Err(Error::InvalidArg(_))
    ));
    let m = LutMatrix::quantize(&w, 2, 32, 2, 32).unwrap();
    assert!(matches!(
        gemv(&m, &[0.0; 31], &mut [0.0; 2]),
        Err(Error::InvalidArg(_))
    ));
    assert!(matches!(
        LutMatrix::from_packed(2, 32, 2, 32, vec![0; 3], vec![], vec![]),
        Err(Error::BadModel(_))
    ));
}
