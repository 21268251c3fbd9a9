//! Metered allocation: the process's global allocator (feature `alloc-guard`, on by
//! default) counts the bytes one thread allocates while a meter is on, and can hold that
//! thread to a budget.
//!
//! Why: a chat template is a program that comes with the model file. minijinja bounds its
//! instructions (fuel) but not its memory: `ns.l + ns.l` in a loop asks for 2^33 list items
//! after 33 cheap iterations, and Rust aborts the process when an allocation fails. Rust
//! cannot catch that, so the allocation must not reach the system allocator. Templates are
//! rendered on a thread of their own with a budget ([`crate::chat`]); an allocation that
//! would take the thread's live bytes over it is never made: the meter records the trip and
//! the thread sleeps for ever (it holds at most the budget and no lock shared with anyone
//! else), while the caller, which waits on the thread, returns an error.
//!
//! Off the metered thread the allocator is the system's, plus one thread-local read.
//! Embedders that bring their own global allocator build without the feature; templates
//! then run with fuel and an output limit only (see `README.md`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The metered state of one thread.
#[derive(Clone, Copy)]
struct Meter {
    on: bool,
    /// Bytes allocated minus bytes freed on this thread since the meter went on (freeing
    /// memory allocated before makes it negative).
    live: isize,
    /// Highest `live`.
    peak: isize,
    /// Largest single request.
    largest: usize,
    /// Most live bytes (0 = no limit).
    limit: usize,
    /// Set when a request went over `limit` (points into the [`Budget`] alive meanwhile).
    tripped: *const AtomicBool,
}

const OFF: Meter = Meter {
    on: false,
    live: 0,
    peak: 0,
    largest: 0,
    limit: 0,
    tripped: std::ptr::null(),
};

thread_local! {
    static METER: Cell<Meter> = const { Cell::new(OFF) };
}

/// What a metered closure allocated on its thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Most bytes live at once (allocated during the closure and not yet freed).
    pub peak_bytes: usize,
    /// Largest single allocation.
    pub largest: usize,
}

/// Whether allocations are metered in this build (feature `alloc-guard`).
pub const ENABLED: bool = cfg!(feature = "alloc-guard");

/// Run `f` with this thread's allocations metered. Without the feature the stats are 0.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, AllocStats) {
    metered(Meter { on: true, ..OFF }, f)
}

/// Puts the previous meter back when dropped (also when `f` panics).
struct Restore(Meter);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = METER.try_with(|m| m.set(self.0));
    }
}

fn metered<T>(meter: Meter, f: impl FnOnce() -> T) -> (T, AllocStats) {
    let restore = Restore(METER.with(|m| m.replace(meter)));
    let out = f();
    let m = METER.with(|m| m.get());
    drop(restore);
    let stats = AllocStats {
        peak_bytes: m.peak.max(0) as usize,
        largest: m.largest,
    };
    (out, stats)
}

/// A byte budget for the current thread; see [`Budget::run`].
pub struct Budget {
    limit: usize,
    tripped: std::sync::Arc<AtomicBool>,
}

impl Budget {
    /// A budget of `limit` live bytes; `tripped` is set when a request goes over it.
    pub fn new(limit: usize, tripped: std::sync::Arc<AtomicBool>) -> Self {
        Budget { limit, tripped }
    }

    /// Run `f` on this thread under the budget. When an allocation would go over it, the
    /// thread never returns (see the module docs): only call this on a thread made for it,
    /// holding nothing another thread waits for except through `tripped`.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> (T, AllocStats) {
        let meter = Meter {
            on: true,
            limit: self.limit,
            tripped: std::sync::Arc::as_ptr(&self.tripped),
            ..OFF
        };
        metered(meter, f)
    }
}

/// Count a request of `size` bytes (`freed` bytes given back at the same time, for
/// realloc); returns false when it must not be made. Never allocates.
fn note(size: usize, freed: usize) -> bool {
    METER
        .try_with(|cell| {
            let mut m = cell.get();
            if !m.on {
                return true;
            }
            let live = m.live.saturating_add(size as isize) - freed as isize;
            if m.limit != 0 && live > 0 && live as usize > m.limit {
                if !m.tripped.is_null() {
                    // SAFETY: `tripped` points into the `Arc<AtomicBool>` of the `Budget`
                    // whose `run` set this meter; `run` restores the old meter before it
                    // returns, so the pointer is only seen while the budget is alive.
                    unsafe { (*m.tripped).store(true, Ordering::SeqCst) };
                }
                cell.set(OFF);
                return false;
            }
            m.live = live;
            m.peak = m.peak.max(live);
            m.largest = m.largest.max(size);
            cell.set(m);
            true
        })
        .unwrap_or(true)
}

/// The metered thread went over its budget: it stays here (sleeping, allocating nothing)
/// so the request never reaches the system allocator and the process lives on.
fn park_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn note_free(size: usize) {
    let _ = METER.try_with(|cell| {
        let mut m = cell.get();
        if m.on {
            m.live -= size as isize;
            cell.set(m);
        }
    });
}

/// The global allocator: the system's, metered per thread on demand.
pub struct Metered;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// metering only reads and writes a thread-local `Cell` (no allocation, no unwinding). A
// request over budget is not forwarded and its thread never returns from the call.
unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size(), 0) {
            park_forever();
        }
        // SAFETY: forwarded unchanged (see the impl's comment).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size(), 0) {
            park_forever();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size, layout.size()) {
            park_forever();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[cfg(feature = "alloc-guard")]
#[global_allocator]
static GLOBAL: Metered = Metered;

#[cfg(all(test, feature = "alloc-guard"))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn measures_live_bytes() {
        let (v, st) = measure(|| vec![0u8; 1 << 20]);
        assert_eq!(v.len(), 1 << 20);
        assert!(st.peak_bytes >= 1 << 20 && st.largest >= 1 << 20, "{st:?}");
    }

    #[test]
    fn over_budget_parks_the_thread_and_trips() {
        let tripped = Arc::new(AtomicBool::new(false));
        let t = tripped.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let b = Budget::new(1 << 20, t);
            let (ok, _) = b.run(|| vec![1u8; 1 << 16].len());
            tx.send(ok).unwrap();
            let (_big, _) = b.run(|| vec![1u8; 1 << 30]); // never returns
            tx.send(0).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), 1 << 16);
        // The second closure trips: the thread sends nothing more.
        while !tripped.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }
}
