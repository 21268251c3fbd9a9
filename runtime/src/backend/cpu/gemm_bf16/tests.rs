use super::*;
use crate::backend::cpu::matmul::matmul_many;
use crate::backend::cpu::pool::Pool;

/// Deterministic pseudo-random f32 in about ±scale (xorshift).
fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn to_bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| crate::dfloat::f32_to_bf16_rne(x).to_le_bytes())
        .collect()
}

/// Every GEMM kernel this machine has, through [`dense_rows_raw`], against its scalar model
/// (bitwise) and against an f64 reference (stated bound), on odd shapes: rows not a
/// multiple of the tile, 1..=17 tokens, columns not a multiple of the vector width.
#[test]
fn each_kernel_equals_its_scalar_model_on_random_shapes() {
    let kernels = [
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::Avx2F32,
        Bf16Kernel::NeonF32,
    ];
    let mut ran = 0;
    for k in kernels.into_iter().filter(|k| k.available()) {
        ran += 1;
        for (si, &(rows, cols)) in [
            (1usize, 1usize),
            (3, 7),
            (5, 33),
            (7, 64),
            (13, 100),
            (9, 576),
            (6, 1000),
        ]
        .iter()
        .enumerate()
        {
            let w = to_bf16_bytes(&rand_vec(rows * cols, si as u64 + 1, 1.0));
            let view = WeightView {
                ty: GgmlType::BF16,
                rows,
                cols,
                data: &w,
            };
            for n in 1..=17 {
                let x = rand_vec(n * cols, 100 + n as u64, 2.0);
                let xb: &[u8] = bytemuck::cast_slice(&x);
                let a = DenseActs::with_kernel(Some(k), xb, 4 * cols, n, cols).unwrap();
                let mut out = vec![f32::NAN; n * rows];
                // SAFETY: out holds n × rows; one thread.
                unsafe { dense_rows_raw(&view, 0, rows, &a, out.as_mut_ptr()) };
                for r in 0..rows {
                    let wr = &w[2 * cols * r..2 * cols * (r + 1)];
                    for t in 0..n {
                        let xr = &x[t * cols..(t + 1) * cols];
                        let got = out[t * rows + r];
                        let model = match k {
                            Bf16Kernel::Avx512Bf16 => {
                                ref_avx512bf16(wr, &a.bf16[t * cols..(t + 1) * cols])
                            }
                            Bf16Kernel::Avx2F32 => ref_avx2_order(wr, xr),
                            Bf16Kernel::NeonF32 => {
                                crate::backend::cpu::dot::dot_dense_ref(GgmlType::BF16, wr, xr)
                            }
                        };
                        assert_eq!(
                            got.to_bits(),
                            model.to_bits(),
                            "{k:?} {rows}×{cols}, n {n}, row {r}, token {t}: {got} vs model {model}"
                        );
                        // f64 reference: exact products of the BF16 weights and f32 inputs.
                        let (mut exact, mut mag) = (0f64, 0f64);
                        for (j, &xv) in xr.iter().enumerate() {
                            let p = bf16_at(wr, j) as f64 * xv as f64;
                            exact += p;
                            mag += p.abs();
                        }
                        // BF16-rounded activations (8 significant bits): 2^-8 relative per
                        // product; f32 sums:
                        // cols·2^-24 of the magnitude, doubled for margin.
                        let act = if k.wants_bf16_acts() {
                            2f64.powi(-8)
                        } else {
                            0.0
                        };
                        let tol = (act + cols as f64 * 2f64.powi(-23)) * mag + 1e-30;
                        assert!(
                            (got as f64 - exact).abs() <= tol,
                            "{k:?} {rows}×{cols}: {got} vs exact {exact} (tol {tol})"
                        );
                    }
                }
            }
        }
    }
    assert!(ran > 0 || crate::backend::cpu::features::cpu().forced_scalar);
}

/// The f32 kernels give the decode row kernel's bits (so `GEMM_MIN_TOKENS` changes no
/// result where they run), and a row's result does not depend on the rows around it.
#[test]
fn results_do_not_depend_on_tiling_or_path() {
    // 1 token: the decode pass (4 rows × 1 token tiles); 11: a prefill batch.
    for n in [1usize, 11] {
        tiling_case(n);
    }
}

fn tiling_case(n: usize) {
    let (rows, cols) = (23usize, 200usize);
    let w = to_bf16_bytes(&rand_vec(rows * cols, 7, 0.5));
    let x = rand_vec(n * cols, 8, 1.0);
    let xb: &[u8] = bytemuck::cast_slice(&x);
    let gemv = DenseActs::with_kernel(None, xb, 4 * cols, n, cols).unwrap();
    let run = |a: &DenseActs, splits: &[usize]| {
        let mut out = vec![f32::NAN; n * rows];
        let mut r = 0;
        for &s in splits.iter().chain(std::iter::once(&rows)) {
            let s = s.min(rows);
            if s <= r {
                continue;
            }
            let v = WeightView {
                ty: GgmlType::BF16,
                rows: s - r,
                cols,
                data: &w[2 * cols * r..2 * cols * s],
            };
            // SAFETY: out holds n × rows; rows r..s lie inside; one thread.
            unsafe { dense_rows_raw(&v, r, rows, a, out.as_mut_ptr()) };
            r = s;
        }
        out
    };
    let want_rows = run(&gemv, &[]);
    for k in [
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::Avx2F32,
        Bf16Kernel::NeonF32,
    ] {
        let Some(a) = DenseActs::with_kernel(Some(k), xb, 4 * cols, n, cols) else {
            continue;
        };
        let whole = run(&a, &[]);
        for splits in [&[1usize, 2, 3, 9][..], &[5, 6, 17], &[22]] {
            let parts = run(&a, splits);
            assert!(
                whole
                    .iter()
                    .zip(&parts)
                    .all(|(p, q)| p.to_bits() == q.to_bits()),
                "{k:?} split {splits:?}, {n} tokens"
            );
        }
        if !k.wants_bf16_acts() {
            assert!(
                whole
                    .iter()
                    .zip(&want_rows)
                    .all(|(p, q)| p.to_bits() == q.to_bits()),
                "{k:?} differs from the row kernels, {n} tokens"
            );
        }
    }
}

/// `matmul_many` takes the GEMM from `GEMM_MIN_TOKENS` on (BF16 next to an F32 matrix in
/// one pass) and gives the GEMM's results on any thread count.
#[test]
fn matmul_many_runs_the_gemm_for_a_batch() {
    let (cols, n) = (96usize, GEMM_MIN_TOKENS + 3);
    let (r1, r2) = (37usize, 10usize);
    let w1 = to_bf16_bytes(&rand_vec(r1 * cols, 1, 1.0));
    let w2f = rand_vec(r2 * cols, 2, 1.0);
    let w2: &[u8] = bytemuck::cast_slice(&w2f);
    let x = rand_vec(n * cols, 3, 1.0);
    let xb: &[u8] = bytemuck::cast_slice(&x);
    let a = DenseActs::prepare(xb, 4 * cols, n, cols).unwrap();
    let v1 = WeightView {
        ty: GgmlType::BF16,
        rows: r1,
        cols,
        data: &w1,
    };
    let mut want = vec![0f32; n * r1];
    // SAFETY: want holds n × r1; one thread.
    unsafe { dense_rows_raw(&v1, 0, r1, &a, want.as_mut_ptr()) };
    for threads in [1, 2, 3] {
        let pool = Pool::new(threads).unwrap();
        let mut o1 = vec![f32::NAN; n * r1];
        let mut o2 = vec![f32::NAN; n * r2];
        let v2 = WeightView {
            ty: GgmlType::F32,
            rows: r2,
            cols,
            data: w2,
        };
        matmul_many(
            &pool,
            [(v1, &mut o1[..]), (v2, &mut o2[..])],
            xb,
            4 * cols,
            n,
        );
        assert!(o1
            .iter()
            .zip(&want)
            .all(|(p, q)| p.to_bits() == q.to_bits()));
        for t in 0..n {
            for r in 0..r2 {
                let e: f32 = (0..cols).map(|j| w2f[r * cols + j] * x[t * cols + j]).sum();
                assert!(
                    (o2[t * r2 + r] - e).abs() < 1e-3,
                    "F32 matrix beside the GEMM"
                );
            }
        }
    }
}

#[test]
fn short_activations_are_refused() {
    let x = vec![0u8; 4 * 10];
    assert!(DenseActs::prepare(&x, 4 * 10, 2, 11).is_none());
    assert!(DenseActs::prepare(&x, 4 * 10, 1, 10).is_some());
}

/// Decode (1 token) takes an f32 kernel, never one that rounds the activations to BF16;
/// a batch takes the machine's best.
#[test]
fn decode_keeps_f32_activations() {
    assert!(Bf16Kernel::for_tokens(1).is_none_or(|k| !k.wants_bf16_acts()));
    assert_eq!(Bf16Kernel::for_tokens(GEMM_MIN_TOKENS), Bf16Kernel::best());
    if Bf16Kernel::best().is_some() {
        assert!(Bf16Kernel::for_tokens(1).is_some());
    }
}
