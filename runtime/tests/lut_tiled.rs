//! The tiled int8 prefill GEMM on real SmolLM2 weights: matrices converted to lut4 g32 and
//! lut2 g64 the way the converter does (error-minimizing search), real layer inputs (normalized
//! token embeddings) as activations. The dispatched `gemm_many` equals the int8 scalar reference bit for bit,
//! stays within the activation-rounding bound of the exact product of the dequantized
//! weights, and its error is of the LUT GEMV's order (the table quantization it replaces), at most twice it.

mod common;

use suanpan::backend::cpu::lut::gemm::gemm_many;
use suanpan::backend::cpu::lut::table::LutTables;
use suanpan::backend::cpu::lut::tiled::{gemm_int8_ref, int8_error_bound};
use suanpan::backend::cpu::Pool;
use suanpan::convert::{read_f32, Source};
use suanpan::lut::{LutMatrix, Method};

/// RMS over rows and tokens of |y − ideal| / Σ_k |w·x|.
fn rel_rms(y: &[f32], ideal: &[f32], mag: &[f32]) -> f64 {
    let s: f64 = y
        .iter()
        .zip(ideal)
        .zip(mag)
        .map(|((a, b), m)| ((a - b) / m.max(1e-12)) as f64)
        .map(|e| e * e)
        .sum();
    (s / y.len() as f64).sqrt()
}

#[test]
fn int8_gemm_on_real_weights_equals_reference_and_is_close_to_exact() {
    let src = Source::open(&common::model_path()).unwrap();
    let tensors = src.tensors().unwrap();
    let find = |name: &str| tensors.iter().find(|t| t.name == name).unwrap();
    let emb = read_f32(&src, find("token_embd.weight")).unwrap();
    let cols = 576;
    let n = 17; // two tiles of 8 and a remainder
    let pool = Pool::new(2).unwrap();
    for (name, norm) in [
        ("blk.0.attn_q.weight", "blk.0.attn_norm.weight"),
        ("blk.5.ffn_up.weight", "blk.5.ffn_norm.weight"),
    ] {
        // The layer's input as the model computes it for the first token of a prompt:
        // RMS-normalized embeddings times the norm's weights (the embeddings alone are
        // Q8_0 codes, which int8 groups of 32 would represent exactly).
        let g = read_f32(&src, find(norm)).unwrap();
        let xs: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let e = &emb[(100 + 997 * i) * cols..][..cols];
                let rms = (e.iter().map(|v| v * v).sum::<f32>() / cols as f32 + 1e-5).sqrt();
                e.iter().zip(&g).map(|(v, w)| v / rms * w).collect()
            })
            .collect();
        let w = read_f32(&src, find(name)).unwrap();
        // The first 160 rows keep the debug-build reference quick; 160 = 5 chunks.
        let rows = 160;
        let w = &w[..rows * cols];
        for (bits, group) in [(4usize, 32usize), (2, 64)] {
            let m = LutMatrix::quantize_with(w, rows, cols, bits, group, Method::Search).unwrap();
            let dq = m.dequantize();
            let mut int8 = vec![LutTables::default(); n];
            let mut lut = vec![LutTables::default(); n];
            for ((ti, tl), x) in int8.iter_mut().zip(lut.iter_mut()).zip(&xs) {
                ti.rebuild_int8(x, group).unwrap();
                tl.rebuild(x, group).unwrap();
            }
            let (mut y8, mut yl) = (vec![0f32; n * rows], vec![0f32; n * rows]);
            gemm_many(&pool, [(m.clone(), &mut y8[..])], &int8).unwrap();
            gemm_many(&pool, [(m.clone(), &mut yl[..])], &lut).unwrap();
            let a8: Vec<_> = int8.iter().map(|t| t.int8().unwrap()).collect();
            let mut want = vec![0f32; n * rows];
            gemm_int8_ref(&m, &a8, &mut want).unwrap();
            assert!(
                y8.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name} b{bits}: dispatched int8 GEMM differs from its reference"
            );
            let (mut ideal, mut mag) = (vec![0f32; n * rows], vec![0f32; n * rows]);
            for (t, x) in xs.iter().enumerate() {
                for r in 0..rows {
                    let wr = &dq[r * cols..(r + 1) * cols];
                    ideal[t * rows + r] = wr
                        .iter()
                        .zip(x.iter())
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>() as f32;
                    mag[t * rows + r] = wr.iter().zip(x.iter()).map(|(a, b)| (a * b).abs()).sum();
                    let tol = int8_error_bound(&m, x, a8[t], r) + 1e-5 * mag[t * rows + r] + 1e-6;
                    let (y, i) = (y8[t * rows + r], ideal[t * rows + r]);
                    assert!((y - i).abs() <= tol, "{name} b{bits} t{t} r{r}: {y} vs {i}");
                }
            }
            let e8 = rel_rms(&y8, &ideal, &mag);
            let el = rel_rms(&yl, &ideal, &mag);
            eprintln!(
                "{name} lut{bits} g{group}: RMS error / Σ|w·x|: int8 GEMM {e8:.2e}, LUT GEMV \
                 {el:.2e}"
            );
            // Measured on this data: int8 about 1.5× the LUT tables' error (outlier channels
            // of the norm weights widen the groups' int8 steps).
            assert!(
                e8 <= 2.0 * el,
                "{name} b{bits}: int8 {e8:.2e} vs LUT {el:.2e}"
            );
        }
    }
}
