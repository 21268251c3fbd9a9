//! A persistent pool of worker threads that every CPU op splits its work over.
//!
//! Ops call [`Pool::run`] with a closure that receives `(thread_index, n_threads)` and picks
//! its own share, the way ggml splits rows by `ith`/`nth`. Decode runs ~150 such passes per
//! token, so the hand-off must cost well under a microsecond when the workers are hot:
//!
//! ```text
//! caller                         worker i (1..n)
//! ------                         ---------------
//! store job pointer              spin on `epoch` (then park on a condvar when idle long)
//! epoch += 1  ─────────────────► sees new epoch, runs job(i, n)
//! runs job(0, n)                 done += 1
//! spin until done == n - 1 ◄──── (job pointer no longer touched)
//! ```
//! The caller is thread 0, so `n` threads means `n - 1` workers. One pass runs at a time
//! (a mutex serialises callers, e.g. two sessions sharing a model).

use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// Busy-wait this many rounds before yielding the core (hot hand-off between ops)...
const SPIN_ROUNDS: u32 = 2000;
/// ...and yield this many times before parking on the condvar (idle between tokens).
/// Yielding keeps an oversubscribed machine (tests in parallel, other processes) fair.
const YIELD_ROUNDS: u32 = 2000;

/// Wait politely: spin, then yield.
#[inline]
fn backoff(round: u32) {
    if round < SPIN_ROUNDS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    n: usize,
    epoch: AtomicU64,
    done: AtomicUsize,
    /// The current job; valid from an epoch bump until `done` reaches n - 1.
    job: UnsafeCell<Option<*const Job>>,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller holding `Pool::caller` before bumping the
// epoch, and read by workers only after they observe that bump and before they report done;
// the caller does not return (so the closure outlives every read) until all have reported.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A fixed set of threads. `n_threads == 1` runs everything on the caller.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    caller: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.shared.n)
    }
}

fn worker(shared: Arc<Shared>, ith: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin first, then park.
        let mut spins = 0u32;
        loop {
            let e = shared.epoch.load(SeqCst);
            if e != seen {
                seen = e;
                break;
            }
            if spins < SPIN_ROUNDS + YIELD_ROUNDS {
                backoff(spins);
                spins += 1;
                continue;
            }
            let guard = shared.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            shared.sleepers.fetch_add(1, SeqCst);
            let guard = if shared.epoch.load(SeqCst) == seen {
                shared.wake.wait(guard).unwrap_or_else(|p| p.into_inner())
            } else {
                guard
            };
            shared.sleepers.fetch_sub(1, SeqCst);
            drop(guard);
            spins = 0;
        }
        if shared.shutdown.load(SeqCst) {
            return;
        }
        // SAFETY: the epoch changed, so the caller stored a job that stays alive until we
        // increment `done` below (see `Shared`).
        let job = unsafe { (*shared.job.get()).map(|p| &*p) };
        if let Some(job) = job {
            if catch_unwind(AssertUnwindSafe(|| job(ith, shared.n))).is_err() {
                shared.panicked.store(true, SeqCst);
            }
        }
        shared.done.fetch_add(1, SeqCst);
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
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        if n > 1024 || n > 8 * cores.max(4) {
            return Err(Error::invalid(format!(
                "{n} threads on a machine with {cores} cores: more threads than 8× the cores \
                 only wait on each other (use at most the core count)"
            )));
        }
        let shared = Arc::new(Shared {
            n,
            epoch: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(n - 1);
        for ith in 1..n {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("suanpan-{ith}"))
                .spawn(move || worker(s, ith))
                .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))?;
            workers.push(h);
        }
        Ok(Pool {
            shared,
            workers,
            caller: Mutex::new(()),
        })
    }

    /// Number of threads work is split over.
    pub fn n_threads(&self) -> usize {
        self.shared.n
    }

    fn bump_epoch(&self) {
        let s = &self.shared;
        s.epoch.fetch_add(1, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
    }

    /// Run `f(thread_index, n_threads)` once on every thread and wait for all of them.
    /// A panic in any share is re-raised here after every thread has finished.
    pub fn run(&self, f: impl Fn(usize, usize) + Sync) {
        let s = &self.shared;
        if s.n == 1 {
            return f(0, 1);
        }
        let _turn = self.caller.lock().unwrap_or_else(|p| p.into_inner());
        let job: &(dyn Fn(usize, usize) + Sync + '_) = &f;
        // SAFETY: lifetime erasure of `job`; it is only used by workers before they
        // increment `done`, and we wait for all of them below before `f` goes out of scope.
        let job: *const Job = unsafe {
            std::mem::transmute::<&(dyn Fn(usize, usize) + Sync + '_), &'static Job>(job)
        };
        // SAFETY: no worker reads `job` now: the previous pass ended with done == n - 1 and
        // the epoch has not moved since.
        unsafe { *s.job.get() = Some(job) };
        s.done.store(0, SeqCst);
        self.bump_epoch();
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, s.n)));
        let mut round = 0;
        while s.done.load(SeqCst) < s.n - 1 {
            backoff(round);
            round = round.saturating_add(1);
        }
        // SAFETY: every worker has reported done; none will read the pointer again.
        unsafe { *s.job.get() = None };
        if mine.is_err() || s.panicked.swap(false, SeqCst) {
            panic!("a compute thread panicked");
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

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        self.bump_epoch();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
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
    use std::sync::atomic::AtomicUsize;

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
    fn run_visits_every_thread_every_time() {
        let pool = Pool::new(3).unwrap();
        for round in 0..2000 {
            let hits = AtomicUsize::new(0);
            pool.run(|ith, nth| {
                assert_eq!(nth, 3);
                hits.fetch_add(1 << (ith * 4), SeqCst);
            });
            assert_eq!(hits.load(SeqCst), 0x111, "round {round}");
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = Pool::new(2).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let hits = AtomicUsize::new(0);
        pool.run(|_, _| {
            hits.fetch_add(1, SeqCst);
        });
        assert_eq!(hits.load(SeqCst), 2);
    }

    #[test]
    fn concurrent_callers_are_serialised() {
        let pool = Arc::new(Pool::new(2).unwrap());
        let total = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (p, t) = (pool.clone(), total.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        p.run(|_, _| {
                            t.fetch_add(1, SeqCst);
                        });
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(total.load(SeqCst), 4 * 500 * 2);
    }

    #[test]
    fn a_panicking_share_is_reported_and_the_pool_survives() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(|ith, _| {
                if ith == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        pool.run(|_, _| {
            hits.fetch_add(1, SeqCst);
        });
        assert_eq!(hits.load(SeqCst), 2);
    }
}
