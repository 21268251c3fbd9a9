//! Cancelling a generation from another thread: a leaf the session, chat-template
//! rendering and the bindings share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Stops a running generation from any thread; the session stays usable afterwards.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask the generation to stop at the next token boundary.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// Clear a cancellation (done at the start of each generation).
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
