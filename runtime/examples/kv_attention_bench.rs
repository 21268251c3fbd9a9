//! Decode attention alone: one query token against a filled cache of one layer, f16 (the
//! llama.cpp-style kernel) vs the quantized pages, at several context lengths.
//!
//! ```sh
//! cargo run --release -p suanpan --example kv_attention_bench -- [THREADS] [CTX...]
//! ```
//! Shape: SmolLM2's (9 query heads, 3 KV heads of 64). Prints µs per call (median of 200)
//! and the bytes of K/V each call reads.

use std::time::Instant;

use half::f16;
use suanpan::backend::cpu::attention::{attention, AttnShape};
use suanpan::backend::cpu::Pool;
use suanpan::kv::quant::PageGeom;
use suanpan::kv::{KvGeom, KvMode, KvParams, QuantCache};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let threads = args.first().copied().unwrap_or(2);
    let ctxs = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![512, 2048, 8192]
    };
    let shape = AttnShape {
        n_head: 9,
        n_kv_head: 3,
        head_dim: 64,
    };
    let geom = KvGeom {
        n_layer: 1,
        n_kv_head: 3,
        head_dim: 64,
    };
    let kvd = 192;
    let pool = Pool::new(threads).unwrap();
    let mut seed = 1u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let q: Vec<f32> = (0..9 * 64).map(|_| rnd()).collect();
    let reps = 200;
    println!("threads {threads}; µs per decode-attention call of one layer (median of {reps})");
    println!("{:>6} {:>5} {:>10} {:>12}", "ctx", "mode", "µs", "KV bytes");
    for &ctx in &ctxs {
        let k: Vec<f32> = (0..ctx * kvd).map(|_| rnd()).collect();
        let v: Vec<f32> = (0..ctx * kvd).map(|_| rnd()).collect();
        // f16
        let kh: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
        let vh: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        let mut scores = vec![0f32; threads * ctx];
        let mut out = vec![0f32; 9 * 64];
        let mut times = Vec::new();
        for _ in 0..reps {
            let t0 = Instant::now();
            attention(
                &pool,
                shape,
                &q,
                &kh,
                &vh,
                ctx - 1,
                1,
                0.125,
                0,
                &mut scores,
                &mut out,
            );
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "{ctx:>6} {:>5} {:>10.1} {:>12}",
            "f16",
            median(times),
            ctx * kvd * 4
        );
        for mode in [KvMode::Q8, KvMode::Q4, KvMode::Q2] {
            let p = KvParams {
                mode,
                ..Default::default()
            };
            let pg: PageGeom = p.page_geom(&geom).unwrap().unwrap();
            let mut c =
                QuantCache::new(geom, pg, 128, 4, false, false, ctx, 64, 9, threads).unwrap();
            let mut at = 0;
            while at < ctx - 1 {
                let n = (ctx - 1 - at).min(64);
                c.begin(n).unwrap();
                c.store(
                    0,
                    &k[at * kvd..(at + n) * kvd],
                    &v[at * kvd..(at + n) * kvd],
                )
                .unwrap();
                c.commit();
                at += n;
            }
            let mut times = Vec::new();
            for _ in 0..reps {
                c.begin(1).unwrap();
                c.store(
                    0,
                    &k[at * kvd..(at + 1) * kvd],
                    &v[at * kvd..(at + 1) * kvd],
                )
                .unwrap();
                let t0 = Instant::now();
                c.attend(&pool, 0, shape, &q, 1, 0.125, &mut out).unwrap();
                times.push(t0.elapsed().as_secs_f64() * 1e6);
                c.abort();
            }
            let bytes = c.n_pages() * 3 * pg.bytes() + (ctx - c.n_pages() * 32) * kvd * 4;
            println!(
                "{ctx:>6} {:>5} {:>10.1} {:>12}",
                mode.name(),
                median(times),
                bytes
            );
        }
    }
}
