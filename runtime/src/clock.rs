//! Clocks that work wherever the runtime runs: `std::time` natively, and on wasm32 (the
//! browser) `web-time`'s drop-in types over `performance.now()` / `Date.now()`, because
//! `std::time::Instant::now` and `SystemTime::now` panic on `wasm32-unknown-unknown`.

#[cfg(not(target_arch = "wasm32"))]
pub use std::time::{Instant, SystemTime, UNIX_EPOCH};
#[cfg(target_arch = "wasm32")]
pub use web_time::{Instant, SystemTime, UNIX_EPOCH};
