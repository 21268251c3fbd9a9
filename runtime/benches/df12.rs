//! df12 throughput: `cargo bench -p suanpan --bench df12`.
//!
//! Prints, on N(0, 0.02) BF16 weights: the table-lookup decode alone (GB/s of BF16 output,
//! one thread, each kernel, in 8192-value pieces as the GEMV decodes them), and the GEMV of
//! a SmolLM2-sized stack of matrices at batch 1 as df12 (decode fused) and as BF16, on 1
//! and 2 threads: wall time (median) and the calling thread's CPU time.

use std::time::{Duration, Instant};
use suanpan::backend::cpu::dfloat::Df12Decode;

use suanpan::backend::cpu::dfloat::df12_kernel::Kernel;
use suanpan::backend::cpu::dfloat::{df12_matmul_many, Df12Job};
use suanpan::backend::cpu::matmul::matmul_many;
use suanpan::backend::cpu::rows::WeightView;
use suanpan::backend::cpu::Pool;
use suanpan::dfloat::df12::{encode, Df12View};
use suanpan::dfloat::f32_to_bf16_rne;
use suanpan::format::GgmlType;

fn normal_bf16(n: usize, std: f64, seed: u64) -> Vec<u16> {
    let mut s = seed | 1;
    let mut unit = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (unit(), unit());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            f32_to_bf16_rne((z * std) as f32)
        })
        .collect()
}

fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Median wall time and mean calling-thread CPU time over ~1.5 s (at least 5 runs).
fn time(mut f: impl FnMut()) -> (Duration, Option<Duration>) {
    f();
    let start = Instant::now();
    let mut walls = Vec::new();
    let c0 = thread_cpu();
    while walls.len() < 5 || start.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        f();
        walls.push(t.elapsed());
    }
    let cpu = match (c0, thread_cpu()) {
        (Some(a), Some(b)) => Some((b - a) / walls.len() as u32),
        _ => None,
    };
    walls.sort();
    (walls[walls.len() / 2], cpu)
}

fn main() {
    let n = 16 << 20;
    let v = normal_bf16(n, 0.02, 7);
    let blob = encode(&v).to_bytes();
    let view = Df12View::parse(&blob).unwrap();
    println!(
        "df12: {} values, {:.3} bits/value, {} exceptions",
        n,
        8.0 * blob.len() as f64 / n as f64,
        view.n_exceptions()
    );
    let mut out = vec![0u16; 8192];
    for k in Kernel::available() {
        let (wall, _) = time(|| {
            let mut at = 0;
            while at < n {
                let e = (at + 8192).min(n);
                view.decode_range_with(k, at..e, &mut out[..e - at])
                    .unwrap();
                at = e;
            }
            std::hint::black_box(&out);
        });
        println!(
            "decode {k:?}: {:.2} GB/s of BF16 (1 thread)",
            2.0 * n as f64 / wall.as_secs_f64() / 1e9
        );
    }
    // A SmolLM2 layer's projections ×30 would be slow to set up; one FFN-sized stack of
    // matrices that do not fit the caches stands in: 24 matrices of 1536×576.
    let (rows, cols, mats) = (1536usize, 576usize, 24usize);
    let ws: Vec<Vec<u16>> = (0..mats)
        .map(|m| normal_bf16(rows * cols, 0.02, 100 + m as u64))
        .collect();
    let blobs: Vec<Vec<u8>> = ws.iter().map(|w| encode(w).to_bytes()).collect();
    let views: Vec<Df12View> = blobs.iter().map(|b| Df12View::parse(b).unwrap()).collect();
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.1).sin()).collect();
    let acts: &[u8] = bytemuck::cast_slice(&x);
    let bytes_bf16 = (2 * rows * cols * mats) as f64;
    for threads in [1, 2] {
        let pool = Pool::new(threads).unwrap();
        let mut o = vec![0f32; rows];
        let (wb, cb) = time(|| {
            for w in &ws {
                let wv = WeightView {
                    ty: GgmlType::BF16,
                    rows,
                    cols,
                    data: bytemuck::cast_slice(w),
                };
                matmul_many(&pool, [(wv, &mut o[..])], acts, 4 * cols, 1);
            }
        });
        let (wd, cd) = time(|| {
            for v in &views {
                let mut jobs = [Df12Job {
                    t: *v,
                    rows,
                    cols,
                    out: &mut o,
                }];
                df12_matmul_many(&pool, &mut jobs, acts, 4 * cols, 1).unwrap();
            }
        });
        let cpu = |c: Option<Duration>| {
            c.map_or("?".into(), |c| format!("{:.2} ms", c.as_secs_f64() * 1e3))
        };
        println!(
            "GEMV {threads} thr: BF16 {:.2} ms ({:.1} GB/s, cpu {}), df12 {:.2} ms (cpu {}): df12/BF16 speed {:.2}x",
            wb.as_secs_f64() * 1e3,
            bytes_bf16 / wb.as_secs_f64() / 1e9,
            cpu(cb),
            wd.as_secs_f64() * 1e3,
            cpu(cd),
            wb.as_secs_f64() / wd.as_secs_f64()
        );
    }
}
