//! Rendering a chat template with bounded work, memory and output, cancellably.
//!
//! A template is a program from the model file. Each render gets:
//! - **fuel** (minijinja instructions): loops and recursion end with an error;
//! - a **recursion limit** for nested calls, loops and macros;
//! - an **output limit**: the text is written through a writer that refuses past it;
//! - a **memory budget**: the render runs on a thread of its own whose live allocations
//!   are metered ([`crate::alloc_guard`]); a request over the budget never reaches the
//!   allocator and the render fails (its thread is left asleep, holding at most the budget);
//! - **cancel**: the caller waits for the render thread while watching a [`CancelToken`],
//!   and returns [`Error::Cancelled`] as soon as it is set (the abandoned render runs out
//!   of fuel on its own).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(target_arch = "wasm32"))]
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
#[cfg(not(target_arch = "wasm32"))]
use std::time::Duration;

use crate::alloc_guard::Budget;
use crate::cancel::CancelToken;
use crate::error::{Error, Result};

/// Bounds for one render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderLimits {
    /// minijinja instructions (real templates need a few hundred per message).
    pub fuel: u64,
    /// Nesting depth of loops, conditions and macro calls (minijinja caps it at 500).
    pub recursion: usize,
    /// Most bytes of rendered text.
    pub max_output: usize,
    /// Most bytes the render may hold at once (with the `alloc-guard` feature).
    pub max_memory: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            fuel: 20_000_000,
            recursion: 200,
            max_output: 64 << 20,
            max_memory: 128 << 20,
        }
    }
}

impl RenderLimits {
    /// These limits widened for a conversation of `input_bytes` bytes so that a long
    /// conversation renders: output up to 4× the input and memory 16× on top.
    pub fn for_input(&self, input_bytes: usize) -> Self {
        RenderLimits {
            fuel: self.fuel,
            recursion: self.recursion,
            max_output: self.max_output.max(input_bytes.saturating_mul(4)),
            max_memory: self
                .max_memory
                .saturating_add(input_bytes.saturating_mul(16)),
        }
    }
}

/// A `Write` that refuses to hold more than `limit` bytes of UTF-8 text.
pub(crate) struct BoundedOutput {
    pub(crate) buf: Vec<u8>,
    limit: usize,
    pub(crate) overflowed: bool,
}

impl BoundedOutput {
    pub(crate) fn new(limit: usize) -> Self {
        BoundedOutput {
            buf: Vec::new(),
            limit,
            overflowed: false,
        }
    }
}

impl Write for BoundedOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered text over the limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run `render` (which writes into the given output) on a thread of its own under
/// `limits`, waiting for it while watching `cancel`.
pub(crate) fn guarded<F>(
    limits: &RenderLimits,
    cancel: Option<&CancelToken>,
    render: F,
) -> Result<String>
where
    F: FnOnce(&mut BoundedOutput) -> Result<()> + Send + 'static,
{
    let max_output = limits.max_output;
    on_guarded_thread(limits, cancel, move || {
        let mut out = BoundedOutput::new(max_output);
        match render(&mut out) {
            Ok(()) => String::from_utf8(out.buf)
                .map_err(|_| Error::Template("rendered text is not UTF-8".into())),
            Err(_) if out.overflowed => Err(Error::Template(format!(
                "the rendered text is over {max_output} bytes"
            ))),
            Err(e) => Err(e),
        }
    })
}

/// Run `f` on a thread of its own whose allocations are held to `limits.max_memory`,
/// waiting for it while watching `cancel` (also used to parse templates: minijinja folds
/// constant expressions such as `'a' * 100000000` while compiling).
pub(crate) fn on_guarded_thread<T, F>(
    limits: &RenderLimits,
    cancel: Option<&CancelToken>,
    f: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let tripped = Arc::new(AtomicBool::new(false));
    let budget = Budget::new(limits.max_memory, tripped.clone());
    let (max_memory, fuel) = (limits.max_memory, limits.fuel);
    let fuel_message = move |e| match e {
        Error::Template(m) if m.contains("engine ran out of fuel") => Error::Template(format!(
            "the template did not finish within {fuel} instructions ({m})"
        )),
        e => e,
    };
    // The browser build has no threads: render on the caller, bounded by fuel, recursion
    // and output limits (and the budget, if a metered allocator is in place).
    #[cfg(target_arch = "wasm32")]
    {
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Error::Cancelled);
        }
        let (res, _) = budget.run(f);
        if tripped.load(Ordering::SeqCst) {
            return Err(Error::OutOfMemory(format!(
                "the chat template needs more than {max_memory} bytes of memory to render"
            )));
        }
        res.map_err(fuel_message)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let (tx, rx) = sync_channel::<Result<T>>(1);
        std::thread::Builder::new()
            .name("suanpan-template".into())
            .stack_size(8 << 20)
            .spawn(move || {
                let (res, _) = budget.run(f);
                let _ = tx.send(res);
            })
            .map_err(|e| Error::Internal(format!("cannot start the template thread: {e}")))?;
        loop {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(res) => return res.map_err(fuel_message),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Internal(
                        "the template thread ended without a result".into(),
                    ))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if tripped.load(Ordering::SeqCst) {
                return Err(Error::OutOfMemory(format!(
                    "the chat template needs more than {max_memory} bytes of memory to render"
                )));
            }
            if cancel.is_some_and(|c| c.is_cancelled()) {
                return Err(Error::Cancelled);
            }
        }
    }
}
