//! Single-thread prefill micro-benchmark: the GEMMs (`backend::cpu::gemm_bf16` for BF16,
//! `dot::qgemm` for Q5_0/Q4_K/Q6_K) against the decode row kernels they replace
//! (`matmul::matmul_rows_raw`), on the shapes of SmolLM2-135M and Gemma 3 270M, timed
//! alternately in one run so machine load affects both alike. Also prints, per token
//! count, the time per token of each path (where the GEMM starts to pay: the
//! `GEMM_MIN_TOKENS` / `QGEMM_MIN_TOKENS` thresholds).
//!
//! `cargo run --release -p suanpan --example prefill_gemm_bench [N_TOKENS]` (default 128)

use std::time::Instant;

use suanpan::backend::cpu::dot::qgemm::{gemm_rows_raw, has_gemm};
use suanpan::backend::cpu::gemm_bf16::{dense_rows_raw, Bf16Kernel, DenseActs};
use suanpan::backend::cpu::rows::{matmul_rows_raw, WeightView};
use suanpan::format::GgmlType;
use suanpan::quant::ggml::{quantize_row, ActFormat};

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Weights of `ty` with valid, moderate f16 scales.
fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    if ty == GgmlType::BF16 {
        return (0..rows * cols)
            .flat_map(|_| half::bf16::from_f32(rng.f() * 0.1).to_le_bytes())
            .collect();
    }
    let (bl, bb) = ty.block_geometry();
    let mut b: Vec<u8> = (0..rows * cols / bl * bb)
        .map(|_| ((rng.f() + 1.0) * 127.0) as u8)
        .collect();
    let at: &[usize] = match ty {
        GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4K => &[0, 2],
        _ => &[208],
    };
    for blk in b.chunks_exact_mut(bb) {
        for &a in at {
            blk[a..a + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    b
}

/// Seconds of one call of `gemm` and `rows` (medians of alternating runs).
fn race(mut gemm: impl FnMut(), mut rows: impl FnMut()) -> (f64, f64) {
    let (mut g, mut r) = (Vec::new(), Vec::new());
    gemm();
    rows();
    for _ in 0..9 {
        let t = Instant::now();
        gemm();
        g.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        rows();
        r.push(t.elapsed().as_secs_f64());
    }
    g.sort_by(f64::total_cmp);
    r.sort_by(f64::total_cmp);
    (g[4], r[4])
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let mut rng = Rng(0x1234_5678);
    let shapes = [
        ("SmolLM2 attn_q", GgmlType::BF16, 576, 576),
        ("SmolLM2 ffn_up", GgmlType::BF16, 1536, 576),
        ("SmolLM2 ffn_down", GgmlType::BF16, 576, 1536),
        ("Gemma ffn_up", GgmlType::Q5_0, 2048, 640),
        ("Gemma attn_v", GgmlType::Q8_0, 256, 640),
        ("Gemma attn_out", GgmlType::Q4K, 640, 1024),
        ("Gemma ffn_down", GgmlType::Q6K, 640, 2048),
    ];
    println!("{n} tokens, 1 thread: GFLOP/s of the GEMM vs the row kernels");
    for (name, ty, rows, cols) in shapes {
        let wd = weights(ty, rows, cols, &mut rng);
        let w = WeightView {
            ty,
            rows,
            cols,
            data: &wd,
        };
        let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
        let fmt = ActFormat::for_weights(ty);
        let rb = fmt.row_bytes(cols);
        let mut acts = vec![0u8; n * rb];
        for (xr, ar) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(rb)) {
            quantize_row(fmt, xr, ar);
        }
        let mut out = vec![0f32; n * rows];
        let o = out.as_mut_ptr();
        let per_n = |k: usize| {
            let acts = &acts[..k * rb];
            let gemm = || {
                if ty == GgmlType::BF16 {
                    // Activations are converted inside, as matmul_many does per call.
                    let a = DenseActs::with_kernel(Bf16Kernel::best(), acts, rb, k, cols)
                        .expect("acts");
                    // SAFETY: `out` holds n × rows ≥ k × rows; one thread.
                    unsafe { dense_rows_raw(&w, 0, rows, &a, o) };
                } else if has_gemm(ty) {
                    // SAFETY: has_gemm(ty); `out` holds k × rows; one thread.
                    unsafe { gemm_rows_raw(&w, 0, rows, acts, rb, k, o) };
                }
            };
            // SAFETY: as above.
            let row_kernels = || unsafe { matmul_rows_raw(&w, 0, rows, acts, rb, k, o) };
            race(gemm, row_kernels)
        };
        let (g, r) = per_n(n);
        let flop = 2.0 * (rows * cols * n) as f64;
        println!(
            "{name:<17} {ty:?} {rows}×{cols}: GEMM {:6.1}  rows {:6.1}  ({:.2}×)",
            flop / g / 1e9,
            flop / r / 1e9,
            r / g
        );
        let mut line = String::from("   µs/token GEMM|rows at n =");
        for k in [1usize, 2, 3, 4, 6, 8, 16] {
            let (g, r) = per_n(k);
            line += &format!(" {k}: {:.1}|{:.1}", g / k as f64 * 1e6, r / k as f64 * 1e6);
        }
        println!("{line}");
    }
}
