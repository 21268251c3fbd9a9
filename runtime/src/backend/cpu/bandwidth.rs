//! A memory-bandwidth probe: how fast the pool's threads can stream a buffer much larger
//! than the caches. Decode speed is read against it as a fraction of the roofline:
//! `tokens/s × weight bytes per token ÷ bandwidth`.

use crate::clock::Instant;

use super::pool::{split_range, Pool};

/// Sum of a slice of u64 in 4 independent lanes (so the loop is limited by loads, not by
/// one add chain); the result only keeps the reads from being optimized away.
fn sum_lanes(v: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let mut it = v.chunks_exact(4);
    for c in &mut it {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(x);
        }
    }
    let tail: u64 = it.remainder().iter().fold(0, |a, &x| a.wrapping_add(x));
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

/// Read bandwidth in GB/s (1e9 bytes/s) of `pool` streaming a `bytes`-sized buffer,
/// best of `reps` passes (after one warm-up pass that also faults the pages in).
pub fn read_bandwidth(pool: &Pool, bytes: usize, reps: usize) -> f64 {
    let n = (bytes / 8).max(1024);
    let buf: Vec<u64> = (0..n as u64).collect();
    let sink = std::sync::atomic::AtomicU64::new(0);
    let mut best = f64::INFINITY;
    for rep in 0..=reps.max(1) {
        let t0 = Instant::now();
        pool.run(|ith, nth| {
            let r = split_range(n, 1024, ith, nth);
            let s = sum_lanes(&buf[r]);
            sink.fetch_add(s, std::sync::atomic::Ordering::Relaxed);
        });
        let dt = t0.elapsed().as_secs_f64();
        if rep > 0 {
            best = best.min(dt);
        }
    }
    std::hint::black_box(sink.into_inner());
    (n * 8) as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_lanes_is_the_sum() {
        let v: Vec<u64> = (0..1003).collect();
        assert_eq!(sum_lanes(&v), 1002 * 1003 / 2);
        let pool = Pool::new(2).unwrap();
        assert!(read_bandwidth(&pool, 1 << 16, 1) > 0.0);
    }
}
