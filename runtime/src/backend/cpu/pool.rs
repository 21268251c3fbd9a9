//! A persistent pool of worker threads that every CPU op splits its work over.
//!
//! Ops call [`Pool::run`] with a closure that receives `(thread_index, n_threads)` and picks
//! its own share, the way ggml splits rows by `ith`/`nth`. The pool is built once per model
//! load (rayon underneath: its workers spin briefly before sleeping, so back-to-back ops in
//! the decode loop do not pay a wake-up each time).

use std::ops::Range;

use crate::error::{Error, Result};

/// A fixed set of threads. `n_threads == 1` runs everything on the caller.
pub struct Pool {
    pool: Option<rayon::ThreadPool>,
    n: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.n)
    }
}

impl Pool {
    /// A pool of `n` threads (0 means one per available core).
    pub fn new(n: usize) -> Result<Self> {
        let n = if n == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            n
        };
        if n > 1024 {
            return Err(Error::invalid(format!("{n} threads is not a sensible thread count")));
        }
        let pool = if n > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("suanpan-{i}"))
                    .build()
                    .map_err(|e| Error::Internal(format!("thread pool: {e}")))?,
            )
        } else {
            None
        };
        Ok(Pool { pool, n })
    }

    /// Number of threads work is split over.
    pub fn n_threads(&self) -> usize {
        self.n
    }

    /// Run `f(thread_index, n_threads)` once on every thread and wait for all of them.
    pub fn run(&self, f: impl Fn(usize, usize) + Sync) {
        match &self.pool {
            None => f(0, 1),
            Some(p) => {
                p.broadcast(|ctx| f(ctx.index(), ctx.num_threads()));
            }
        }
    }

    /// Split `0..total` into `n_threads` contiguous ranges (multiples of `align` except the
    /// last) and run `f(thread_index, range)` for each non-empty one.
    pub fn run_ranges(&self, total: usize, align: usize, f: impl Fn(usize, Range<usize>) + Sync) {
        self.run(|ith, nth| {
            let r = split_range(total, align, ith, nth);
            if !r.is_empty() {
                f(ith, r);
            }
        })
    }
}

/// The `ith` of `nth` contiguous parts of `0..total`, boundaries rounded to `align`.
pub fn split_range(total: usize, align: usize, ith: usize, nth: usize) -> Range<usize> {
    let align = align.max(1);
    let units = total.div_ceil(align);
    let per = units.div_ceil(nth.max(1));
    let lo = (ith * per * align).min(total);
    let hi = ((ith + 1) * per * align).min(total);
    lo..hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ranges_cover_everything_once() {
        for total in [0usize, 1, 7, 64, 100, 1000] {
            for nth in 1..5 {
                for align in [1usize, 4, 16] {
                    let mut covered = vec![0u8; total];
                    for ith in 0..nth {
                        for i in split_range(total, align, ith, nth) {
                            covered[i] += 1;
                        }
                    }
                    assert!(covered.iter().all(|&c| c == 1), "{total} {nth} {align}");
                }
            }
        }
    }

    #[test]
    fn run_visits_every_thread() {
        let pool = Pool::new(3).unwrap();
        let hits = AtomicUsize::new(0);
        pool.run(|ith, nth| {
            assert_eq!(nth, 3);
            hits.fetch_add(1 << (ith * 4), Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 0x111);
    }
}
