//! Prefill GEMM micro-benchmark: for one M×K shape and batch sizes N = 1..128, the LUT GEMM
//! (lookup tables, `gemm_many` on tables from `rebuild`) vs the tiled int8 GEMM (`gemm_many`
//! on tables from `rebuild_int8`), each including its per-token activation preparation.
//! Prints µs per token and the ratio; the crossover sets `lut::tiled::MIN_TOKENS`.
//! Weights are random (RTN): speed does not depend on the values.
//!
//! `cargo run --release -p suanpan --example lut_gemm_bench [M K BITS GROUP THREADS]`
//! (default 2048 2048 4 32 1)

use std::hint::black_box;
use std::time::{Duration, Instant};

use suanpan::backend::cpu::lut::gemm::gemm_many;
use suanpan::backend::cpu::lut::table::LutTables;
use suanpan::backend::cpu::Pool;
use suanpan::lut::{LutMatrix, Method};

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
    let reps = ((budget.as_secs_f64() / one) as usize).clamp(3, 200);
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
    let (m, k, bits, group, threads) = match args[..] {
        [m, k, b, g, t] => (m, k, b, g, t),
        [m, k, b, g] => (m, k, b, g, 1),
        _ => (2048, 2048, 4, 32, 1),
    };
    let pool = Pool::new(threads)?;
    let budget = Duration::from_millis(300);
    let mut rng = Rng(0x5eed);
    let w: Vec<f32> = (0..m * k).map(|_| 0.05 * rng.f()).collect();
    let mat = LutMatrix::quantize_with(&w, m, k, bits, group, Method::Rtn)?;
    println!(
        "M={m} K={k} bits={bits} group={group} threads={threads}; int8 kernel available: {}",
        suanpan::backend::cpu::lut::tiled::available()
    );
    println!("    N   LUT µs/token   int8 µs/token   LUT/int8");
    for n in [1usize, 2, 4, 8, 12, 16, 24, 32, 64, 128] {
        let x: Vec<f32> = (0..n * k).map(|_| rng.f()).collect();
        let mut y = vec![0f32; n * m];
        let mut tabs = vec![LutTables::default(); n];
        let t_lut = time(budget, || {
            for (t, xr) in tabs.iter_mut().zip(x.chunks_exact(k)) {
                t.rebuild(black_box(xr), group).unwrap();
            }
            gemm_many(&pool, [(mat.clone(), &mut y[..])], &tabs).unwrap();
            black_box(&y);
        });
        let t_i8 = time(budget, || {
            for (t, xr) in tabs.iter_mut().zip(x.chunks_exact(k)) {
                t.rebuild_int8(black_box(xr), group).unwrap();
            }
            gemm_many(&pool, [(mat.clone(), &mut y[..])], &tabs).unwrap();
            black_box(&y);
        });
        println!(
            "{n:5}  {:13.1}  {:14.1}  {:9.2}",
            t_lut * 1e6 / n as f64,
            t_i8 * 1e6 / n as f64,
            t_lut / t_i8
        );
    }
    Ok(())
}
