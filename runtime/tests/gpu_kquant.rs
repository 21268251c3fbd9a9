//! `kquant.wgsl`, the GEMV / small GEMM for the K-quants, Q5_0/Q5_1, IQ4_NL/IQ4_XS and
//! TQ1_0/TQ2_0 (and Q8_0 matrices beyond one binding), against the CPU scalar reference:
//! the CPU's dequantizer, then a dot product in f64 with the same f32 activations.
//!
//! Runs on whatever adapter wgpu finds (lavapipe in CI); no adapter is a failure.
#![cfg(feature = "gpu")]

mod common;

use common::gpu::dev;

use half::f16;
use suanpan::backend::gpu::kquant::{matmul_k, supported, GpuKMatrix};
use suanpan::backend::gpu::{Frame, GpuBuffer, GpuDevice, GpuOptions, Recorder};
use suanpan::format::GgmlType;
use suanpan::quant::ggml::dequantize_row;

/// Every type `kquant.wgsl` runs.
const TYPES: [GgmlType; 12] = [
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::Q5_0,
    GgmlType::Q5K,
    GgmlType::Q5_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Iq4Nl,
    GgmlType::Iq4Xs,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::Q8_0,
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
}

/// Byte offsets of the f16 super-scales in a ggml block of `ty` (the rest is codes and
/// small integer scales, any bytes of which are valid).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        GgmlType::TQ1_0 => &[52],
        GgmlType::TQ2_0 => &[64],
        _ => &[0],
    }
}

/// Random blocks of `ty`: random bytes with finite f16 scales.
fn random_blocks(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let (bl, bb) = ty.block_geometry();
    let mut out = Vec::with_capacity(rows * cols / bl * bb);
    for _ in 0..rows * cols / bl {
        let mut b: Vec<u8> = (0..bb).map(|_| rng.next() as u8).collect();
        for &at in f16_fields(ty) {
            let v = f16::from_f32(rng.f() * 0.05).to_le_bytes();
            b[at..at + 2].copy_from_slice(&v);
        }
        out.extend_from_slice(&b);
    }
    out
}

fn run(d: &GpuDevice, f: impl FnOnce(&mut Recorder)) {
    let mut frame = Frame::new(d, 64, false).unwrap();
    let mut r = Recorder::new(d, &mut frame);
    f(&mut r);
    r.submit().unwrap();
}

/// `y[t][r]` of `W` (`rows × cols`, ggml bytes `w`) times `x` (`n × cols`) on `d`.
fn gpu_matmul(
    d: &GpuDevice,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
) -> (Vec<f32>, usize) {
    let n = x.len() / cols;
    let m = GpuKMatrix::upload(d, "w", ty, rows, cols, w).unwrap();
    let xb = d.upload("x", bytemuck::cast_slice(x)).unwrap();
    let y = d.buffer("y", (4 * rows * n) as u64).unwrap();
    run(d, |r| matmul_k(r, &m, &xb, &y, n, rows).unwrap());
    (d.read_f32(&y, 0, rows * n).unwrap(), m.parts())
}

/// Largest |gpu − reference| / Σ|w·x| over all rows and tokens (reference in f64 from the
/// CPU's dequantized weights).
fn worst_rel(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], got: &[f32]) -> f64 {
    let rb = w.len() / rows;
    let mut wrow = vec![0f32; cols];
    let mut worst = 0f64;
    for r in 0..rows {
        assert!(dequantize_row(ty, &w[r * rb..][..rb], &mut wrow), "{ty}");
        for (t, xt) in x.chunks_exact(cols).enumerate() {
            let want: f64 = wrow
                .iter()
                .zip(xt)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            let mag: f64 = wrow
                .iter()
                .zip(xt)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let g = got[t * rows + r] as f64;
            assert!(g.is_finite(), "{ty} r{r} t{t}: gpu {g}");
            worst = worst.max((g - want).abs() / mag.max(1e-30));
        }
    }
    worst
}

/// Every type on shapes that include row counts off the 4-row tile and token counts off
/// the 4-token tile (1, 3, 4, 5, 9 tokens: decode and prefill batches). The GPU
/// dequantizes with the CPU's formulas (a multiply-add may be fused: 1 ulp) and sums in
/// f32 in another order than the f64 reference: tolerance 1e-5 of Σ|w·x| per output
/// (measured worst per type printed: 2e-8 to 7.5e-8 on lavapipe).
#[test]
fn kquant_gemv_matches_dequantized_dot_all_types() {
    let d = dev();
    let mut rng = Rng(19);
    let mut report = Vec::new();
    for ty in TYPES {
        assert!(supported(ty), "{ty}");
        let bl = ty.block_geometry().0;
        let mut worst = 0f64;
        for &(rows, blocks, n) in &[
            (1usize, 1usize, 1usize),
            (5, 2, 3),
            (63, 3, 4),
            (66, 5, 5),
            (9, 9, 9),
        ] {
            let cols = blocks * bl;
            let w = random_blocks(&mut rng, ty, rows, cols);
            let x = rng.vec(cols * n, 3.0);
            let (got, _) = gpu_matmul(&d, ty, &w, rows, cols, &x);
            let rel = worst_rel(ty, &w, rows, cols, &x, &got);
            assert!(
                rel <= 1e-5,
                "{ty} {rows}×{cols} n{n}: relative error {rel:e}"
            );
            worst = worst.max(rel);
        }
        report.push(format!("{ty} {worst:.1e}"));
    }
    eprintln!("kquant GEMV worst |Δ|/Σ|w·x|: {}", report.join(", "));
}

/// A matrix over the binding limit is split by rows into several buffers, one dispatch
/// each, and gives the same outputs bit for bit (each row's sum is computed the same way).
#[test]
fn matrix_beyond_one_binding_is_split_and_equal() {
    let small = GpuDevice::new(&GpuOptions {
        max_binding: Some(8192),
        ..Default::default()
    })
    .unwrap();
    let big = dev();
    let mut rng = Rng(20);
    for ty in [GgmlType::Q6K, GgmlType::Q8_0, GgmlType::Q4K] {
        let (rows, cols, n) = (70, 512, 3);
        let w = random_blocks(&mut rng, ty, rows, cols);
        let x = rng.vec(cols * n, 2.0);
        let (whole, p1) = gpu_matmul(&big, ty, &w, rows, cols, &x);
        let (split, p2) = gpu_matmul(&small, ty, &w, rows, cols, &x);
        assert_eq!(p1, 1, "{ty}");
        assert!(p2 > 1, "{ty}: {p2} parts");
        assert_eq!(whole, split, "{ty}: split matrix differs");
        assert!(worst_rel(ty, &w, rows, cols, &x, &split) <= 1e-5, "{ty}");
    }
}

/// Bad input is an error naming the problem, never a panic or a GPU fault.
#[test]
fn bad_kquant_input_is_an_error() {
    let d = dev();
    let mut rng = Rng(21);
    let w = random_blocks(&mut rng, GgmlType::Q4K, 2, 256);
    // Too few bytes, partial blocks, no rows, a type the kernels do not run.
    assert!(GpuKMatrix::upload(&d, "w", GgmlType::Q4K, 3, 256, &w).is_err());
    assert!(GpuKMatrix::upload(&d, "w", GgmlType::Q4K, 1, 300, &w).is_err());
    assert!(GpuKMatrix::upload(&d, "w", GgmlType::Q4K, 0, 256, &w).is_err());
    let e = GpuKMatrix::upload(&d, "w", GgmlType::F32, 2, 64, &w).unwrap_err();
    assert!(e.to_string().contains("F32"), "{e}");
    // A row too large for the binding limit four at a time.
    let tiny = GpuDevice::new(&GpuOptions {
        max_binding: Some(256),
        ..Default::default()
    })
    .unwrap();
    assert!(GpuKMatrix::upload(&tiny, "w", GgmlType::Q4K, 2, 256, &w).is_err());
    // Activations or outputs too small for the call.
    let m = GpuKMatrix::upload(&d, "w", GgmlType::Q4K, 2, 256, &w).unwrap();
    let x: GpuBuffer = d.buffer("x", 4 * 256).unwrap();
    let y: GpuBuffer = d.buffer("y", 4 * 2).unwrap();
    let mut frame = Frame::new(&d, 4, false).unwrap();
    let mut r = Recorder::new(&d, &mut frame);
    assert!(matmul_k(&mut r, &m, &x, &y, 2, 2).is_err());
    assert!(matmul_k(&mut r, &m, &x, &y, 1, 1).is_err());
    assert!(matmul_k(&mut r, &m, &x, &y, 0, 2).is_err());
    assert!(r.is_empty());
    matmul_k(&mut r, &m, &x, &y, 1, 2).unwrap();
    assert!(!r.is_empty());
}
