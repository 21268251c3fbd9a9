//! Single-thread decode GEMV micro-benchmark: LUT kernel (bits 1..4) vs the portable
//! scalar kernel and the scalar reference vs the Q4_1 dot-product path (activation
//! quantization included), all on the same M×K shape. Weights are random (RTN): speed does
//! not depend on the values.
//!
//! `cargo run --release -p suanpan --example lut_gemv_bench [M K GROUP]` (default 2048 2048 128)

use std::hint::black_box;
use std::time::{Duration, Instant};

use half::f16;
use suanpan::backend::cpu::dot::{dot, dot_ref, simd_level};
use suanpan::backend::cpu::lut::{gemv, table::LutTables};
use suanpan::format::GgmlType;
use suanpan::lut::{LutMatrix, Method};
use suanpan::quant::ggml::{quantize_row, ActFormat};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Median seconds per call of `f`, over enough calls to fill about `budget`.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    f();
    let one = t.elapsed().as_secs_f64().max(1e-7);
    let reps = ((budget.as_secs_f64() / one) as usize).clamp(3, 2000);
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> suanpan::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (m, k, group) = match args[..] {
        [m, k, g] => (m, k, g),
        _ => (2048, 2048, 128),
    };
    let budget = Duration::from_millis(400);
    let mut rng = Rng(0x5eed);
    let w: Vec<f32> = (0..m * k).map(|_| 0.05 * rng.f()).collect();
    let x: Vec<f32> = (0..k).map(|_| rng.f()).collect();
    let mut y = vec![0f32; m];
    println!(
        "M={m} K={k} group={group}, one thread, LUT kernel: {}",
        suanpan::backend::cpu::lut::gemv::simd_level()
    );

    // Q4_1 (random blocks with sane f16 scales) through backend::cpu::dot.
    let q_row = k / 32 * 20;
    let mut q = vec![0u8; m * q_row];
    for b in q.iter_mut() {
        *b = rng.next() as u8;
    }
    for blk in q.chunks_exact_mut(20) {
        blk[0..2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        blk[2..4].copy_from_slice(&f16::from_f32(-0.08).to_le_bytes());
    }
    let fmt = ActFormat::for_weights(GgmlType::Q4_1);
    let mut a = vec![0u8; fmt.row_bytes(k)];
    let t_q4 = time(budget, || {
        quantize_row(fmt, black_box(&x), &mut a);
        for (r, row) in q.chunks_exact(q_row).enumerate() {
            y[r] = dot(GgmlType::Q4_1, row, &a);
        }
        black_box(&y);
    });
    let t_q4_ref = time(budget / 4, || {
        for (r, row) in q.chunks_exact(q_row).enumerate() {
            y[r] = dot_ref(GgmlType::Q4_1, row, &a);
        }
        black_box(&y);
    });
    let q4_bytes = q.len() as f64;
    println!(
        "Q4_1 dot ({}):   {:8.1} µs  {:6.2} GB/s   (scalar ref {:8.1} µs)",
        simd_level(),
        t_q4 * 1e6,
        q4_bytes / t_q4 / 1e9,
        t_q4_ref * 1e6
    );

    for method in [Method::Rtn, Method::Search] {
        let t = Instant::now();
        black_box(LutMatrix::quantize_with(&w, m, k, 4, group, method)?);
        println!(
            "quantize 4-bit {method:?}: {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    println!(
        "bits  bytes(MB)  table µs  LUT µs (incl. table)  GB/s   portable µs  scalar-ref µs  ref/LUT  Q4_1/LUT"
    );
    for bits in 1..=4 {
        let mat = LutMatrix::quantize_with(&w, m, k, bits, group, Method::Rtn)?;
        let bytes = mat.stream_bytes() as f64;
        let t_tab = time(budget / 4, || {
            black_box(LutTables::build(black_box(&x), group).unwrap());
        });
        let t_lut = time(budget, || {
            gemv::gemv(&mat, black_box(&x), &mut y).unwrap();
            black_box(&y);
        });
        let tables = LutTables::build(&x, group)?;
        let t_port = time(budget / 4, || {
            gemv::gemv_portable_chunks(&mat, &tables, 0..mat.chunks(), &mut y).unwrap();
            black_box(&y);
        });
        let t_ref = time(budget / 4, || {
            gemv::gemv_ref(&mat, &tables, &mut y).unwrap();
            black_box(&y);
        });
        println!(
            "{bits:>4}  {:9.2}  {:8.1}  {:20.1}  {:5.2}  {:11.1}  {:13.1}  {:7.1}  {:8.2}",
            bytes / 1e6,
            t_tab * 1e6,
            t_lut * 1e6,
            bytes / t_lut / 1e9,
            t_port * 1e6,
            t_ref * 1e6,
            t_ref / t_lut,
            t_q4 / t_lut
        );
    }
    Ok(())
}
