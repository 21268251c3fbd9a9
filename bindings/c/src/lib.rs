//! The C ABI of suanpan. `include/suanpan.h` is generated from this crate by cbindgen
//! (`scripts/gen-header`); `tests/header.rs` fails when the committed header is stale.
//!
//! Every exported function runs inside [`status::guard`]: runtime errors become a status
//! code plus a thread-local message, and a panic becomes `SUANPAN_INTERNAL` instead of
//! unwinding into C (the library must be built with `panic = "unwind"`, the default).
//!
//! Handles: a `suanpan_model` is an `Arc<Model>` (sessions keep the model alive, so the
//! model handle may be freed before its sessions); a `suanpan_session` is a session behind
//! a mutex plus its cancel token, so a second thread using a busy session gets
//! `SUANPAN_BUSY` and any thread may cancel.

#![allow(non_camel_case_types)]

pub mod log;
pub mod params;
pub mod status;

use std::ffi::{c_char, c_void};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use suanpan::chat::ChatMessage;
use suanpan::{CancelToken, GenerateParams, GenerateStats, Model, Session};

use log::{log, suanpan_log_level::*};
use params::*;
use status::{guard, suanpan_status, CResult, Failure};

/// A loaded model (opaque). Shared by its sessions; thread-safe.
pub struct suanpan_model {
    model: Arc<Model>,
}

/// A conversation on a model (opaque). One thread at a time generates with it; any thread
/// may cancel it.
pub struct suanpan_session {
    session: Mutex<Session>,
    cancel: CancelToken,
}

impl suanpan_session {
    fn new(session: Session) -> Self {
        suanpan_session {
            cancel: session.cancel_token(),
            session: Mutex::new(session),
        }
    }

    /// The session, or BUSY when another thread holds it. A session whose earlier call
    /// panicked is refused: its state may be half-updated.
    pub(crate) fn lock(&self) -> CResult<MutexGuard<'_, Session>> {
        match self.session.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(Failure::new(
                suanpan_status::SUANPAN_BUSY,
                "the session is in use by another thread",
            )),
            Err(TryLockError::Poisoned(_)) => Err(Failure::new(
                suanpan_status::SUANPAN_INTERNAL,
                "an earlier call on this session failed internally; free it and start a new one",
            )),
        }
    }

    /// Cancel a running generation (any thread).
    fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// # Safety
/// `p` is NULL or a pointer this library returned and that was not freed.
unsafe fn handle<'a, T>(p: *const T, what: &str) -> CResult<&'a T> {
    // SAFETY: per the contract, non-null pointers are live handles.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// # Safety
/// `p` is NULL or valid for writing a `T`.
unsafe fn out_ptr<'a, T>(p: *mut T, what: &str) -> CResult<&'a mut T> {
    // SAFETY: per the contract, a non-null pointer is writable.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// The library version, e.g. "0.1.0" (static string).
#[no_mangle]
pub extern "C" fn suanpan_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Load a GGUF model. On success `*out_model` is a handle to free with
/// suanpan_model_free(). `params` may be NULL for defaults. Errors: SUANPAN_IO (cannot
/// read), SUANPAN_BAD_MODEL (malformed or unsupported), SUANPAN_CANCELLED (the progress
/// callback said stop), SUANPAN_INVALID_ARG.
///
/// # Safety
/// `path` is a NUL-terminated string; `params` NULL or initialized with
/// suanpan_model_params_default(); `out_model` writable.
#[no_mangle]
pub unsafe extern "C" fn suanpan_model_load(
    path: *const c_char,
    params: *const suanpan_model_params,
    out_model: *mut *mut suanpan_model,
) -> suanpan_status {
    guard("suanpan_model_load", || {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_ptr(out_model, "out_model") }?;
        *out = std::ptr::null_mut();
        // SAFETY: as above.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: as above.
        let p = unsafe {
            read_struct(
                params,
                suanpan_model_params_default(),
                "suanpan_model_params",
            )
        }?;
        let model = Model::load(path, &model_params(&p)).map_err(|e| match e {
            // A template that does not parse is a defect of the file.
            suanpan::Error::Template(m) => suanpan::Error::BadModel(m),
            e => e,
        })?;
        log(
            SUANPAN_LOG_INFO,
            &format!(
                "loaded {} ({}, {} layers) in {:.0} ms on {}",
                path,
                model.config().arch_name,
                model.config().n_layer,
                model.load_ms(),
                model.backend_name()
            ),
        );
        *out = Box::into_raw(Box::new(suanpan_model {
            model: Arc::new(model),
        }));
        Ok(())
    })
}

/// Free a model handle (NULL is ignored). Sessions created from it stay valid: they share
/// the model, which is released with the last of them.
///
/// # Safety
/// `model` is NULL or a handle from suanpan_model_load() not freed before.
#[no_mangle]
pub unsafe extern "C" fn suanpan_model_free(model: *mut suanpan_model) {
    guard("suanpan_model_free", || {
        if !model.is_null() {
            // SAFETY: the handle came from Box::into_raw in suanpan_model_load.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

/// Memory that loading `path` and one session with `session_params` would take, without
/// loading (only the header is read). Either params pointer may be NULL for defaults.
/// Fails like load/session creation would (including SUANPAN_OOM over a memory budget).
///
/// # Safety
/// `path` is a NUL-terminated string; params NULL or initialized by their *_default();
/// `out` initialized with suanpan_memory_estimate_default().
#[no_mangle]
pub unsafe extern "C" fn suanpan_estimate_memory(
    path: *const c_char,
    model_params: *const suanpan_model_params,
    session_params: *const suanpan_session_params,
    out: *mut suanpan_memory_estimate,
) -> suanpan_status {
    guard("suanpan_estimate_memory", || {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_ptr(out, "out") }?;
        check_size(
            out.size,
            size_of::<suanpan_memory_estimate>(),
            "suanpan_memory_estimate",
        )?;
        // SAFETY: as above.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: as above.
        let mp = unsafe {
            read_struct(
                model_params,
                suanpan_model_params_default(),
                "suanpan_model_params",
            )
        }?;
        // SAFETY: as above.
        let sp = unsafe {
            read_struct(
                session_params,
                suanpan_session_params_default(),
                "suanpan_session_params",
            )
        }?;
        let e = Model::estimate_memory(
            path,
            &params::model_params(&mp),
            &params::session_params(&sp)?,
        )?;
        fill_estimate(out, &e);
        Ok(())
    })
}

/// Create a session on a model. `params` may be NULL for defaults. Errors:
/// SUANPAN_INVALID_ARG (bad n_ctx / n_batch), SUANPAN_OOM (over memory_budget or the
/// allocation failed).
///
/// # Safety
/// `model` is a live model handle; `params` NULL or initialized with
/// suanpan_session_params_default(); `out_session` writable.
#[no_mangle]
pub unsafe extern "C" fn suanpan_session_new(
    model: *const suanpan_model,
    params: *const suanpan_session_params,
    out_session: *mut *mut suanpan_session,
) -> suanpan_status {
    guard("suanpan_session_new", || {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_ptr(out_session, "out_session") }?;
        *out = std::ptr::null_mut();
        // SAFETY: as above.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: as above.
        let p = unsafe {
            read_struct(
                params,
                suanpan_session_params_default(),
                "suanpan_session_params",
            )
        }?;
        let s = m.model.session(&session_params(&p)?)?;
        *out = Box::into_raw(Box::new(suanpan_session::new(s)));
        Ok(())
    })
}

/// Free a session (NULL is ignored). It must not be generating on another thread.
///
/// # Safety
/// `session` is NULL or a live session handle no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn suanpan_session_free(session: *mut suanpan_session) {
    guard("suanpan_session_free", || {
        if !session.is_null() {
            // SAFETY: the handle came from Box::into_raw in this library.
            drop(unsafe { Box::from_raw(session) });
        }
        Ok(())
    });
}

/// A copy of a session: same model and context (the KV cache is copied), its own cancel
/// state. SUANPAN_BUSY if the session is generating.
///
/// # Safety
/// `session` is a live session handle; `out_session` writable.
#[no_mangle]
pub unsafe extern "C" fn suanpan_session_clone(
    session: *const suanpan_session,
    out_session: *mut *mut suanpan_session,
) -> suanpan_status {
    guard("suanpan_session_clone", || {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_ptr(out_session, "out_session") }?;
        *out = std::ptr::null_mut();
        // SAFETY: as above.
        let s = unsafe { handle(session, "session") }?;
        let copy = s.lock()?.try_clone()?;
        *out = Box::into_raw(Box::new(suanpan_session::new(copy)));
        Ok(())
    })
}

/// Ask a running generation on this session to stop; it returns SUANPAN_CANCELLED at the
/// next token (or prompt batch) and the session stays usable. Safe from any thread. A
/// cancel that arrives when nothing is running is forgotten when the next generation
/// starts.
///
/// # Safety
/// `session` is a live session handle.
#[no_mangle]
pub unsafe extern "C" fn suanpan_session_cancel(session: *const suanpan_session) -> suanpan_status {
    guard("suanpan_session_cancel", || {
        // SAFETY: the caller's contract above.
        unsafe { handle(session, "session") }?.cancel();
        Ok(())
    })
}

/// Forget the conversation (the KV cache is kept allocated).
///
/// # Safety
/// `session` is a live session handle.
#[no_mangle]
pub unsafe extern "C" fn suanpan_session_reset(session: *const suanpan_session) -> suanpan_status {
    guard("suanpan_session_reset", || {
        // SAFETY: the caller's contract above.
        unsafe { handle(session, "session") }?.lock()?.reset();
        Ok(())
    })
}

/// Tokens in context, capacity and KV memory of a session.
///
/// # Safety
/// `session` is a live session handle; `out` initialized with suanpan_usage_default().
#[no_mangle]
pub unsafe extern "C" fn suanpan_session_usage(
    session: *const suanpan_session,
    out: *mut suanpan_usage,
) -> suanpan_status {
    guard("suanpan_session_usage", || {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_ptr(out, "out") }?;
        check_size(out.size, size_of::<suanpan_usage>(), "suanpan_usage")?;
        // SAFETY: as above.
        let u = unsafe { handle(session, "session") }?.lock()?.usage();
        fill_usage(out, &u);
        Ok(())
    })
}

/// Stream pieces to a C callback; a NUL follows each piece in a reused buffer.
struct PieceSink {
    f: suanpan_piece_fn,
    user_data: *mut c_void,
    buf: Vec<u8>,
}

impl PieceSink {
    fn call(&mut self, piece: &str) -> ControlFlow<()> {
        let Some(f) = self.f else {
            return ControlFlow::Continue(());
        };
        self.buf.clear();
        self.buf.extend_from_slice(piece.as_bytes());
        self.buf.push(0);
        if f(self.buf.as_ptr().cast(), piece.len(), self.user_data) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }
}

/// Write the result of a generation into `result` (NULL or writable per the entry points'
/// contracts, its size checked by `read_generate_args`): the stats on success, the tokens
/// streamed before the error and SUANPAN_STOP_ERROR on failure.
fn finish_generation(
    r: suanpan::Result<GenerateStats>,
    result: *mut suanpan_generate_result,
    generated: usize,
) -> CResult {
    let st = match r {
        Ok(st) => st,
        Err(e) => {
            // SAFETY: `result` is NULL or writable per the entry points' contracts.
            if let Some(out) = unsafe { result.as_mut() } {
                if out.size == size_of::<suanpan_generate_result>() {
                    fill_failed_result(out, generated);
                }
            }
            return Err(e.into());
        }
    };
    if log::enabled(SUANPAN_LOG_DEBUG) {
        log(
            SUANPAN_LOG_DEBUG,
            &format!(
                "prompt {} tok ({:.1} tok/s), generated {} tok ({:.1} tok/s), stop {:?}",
                st.prompt_tokens,
                st.prompt_tps(),
                st.generated_tokens,
                st.decode_tps(),
                st.stop
            ),
        );
    }
    // SAFETY: `result` is NULL or writable per the entry points' contracts.
    if let Some(out) = unsafe { result.as_mut() } {
        check_size(
            out.size,
            size_of::<suanpan_generate_result>(),
            "suanpan_generate_result",
        )?;
        fill_result(out, &st);
    }
    Ok(())
}

/// Checks `result`'s size and marks it failed (no tokens, SUANPAN_STOP_ERROR) so that
/// every later return path leaves it describing the call, then reads `params`.
///
/// # Safety
/// Pointers as in suanpan_generate().
unsafe fn read_generate_args(
    params: *const suanpan_generate_params,
    result: *mut suanpan_generate_result,
) -> CResult<GenerateParams> {
    // SAFETY: the caller's contract.
    if let Some(r) = unsafe { result.as_mut() } {
        check_size(
            r.size,
            size_of::<suanpan_generate_result>(),
            "suanpan_generate_result",
        )?;
        fill_failed_result(r, 0);
    }
    // SAFETY: the caller's contract.
    let p = unsafe {
        read_struct(
            params,
            suanpan_generate_params_default(),
            "suanpan_generate_params",
        )
    }?;
    // SAFETY: the caller's contract.
    unsafe { generate_params(&p) }
}

/// Continue the session's context with `prompt` (UTF-8) and generate, streaming pieces to
/// `on_piece` (may be NULL). `params` NULL = defaults; `result` may be NULL. An empty
/// prompt continues after the last generated token. Errors: SUANPAN_CANCELLED
/// (suanpan_session_cancel), SUANPAN_CONTEXT_FULL (the context filled up; what was
/// generated so far stays in it), SUANPAN_BUSY, SUANPAN_INVALID_ARG. After any error the
/// session is usable.
///
/// # Safety
/// `session` is a live handle; `prompt` a NUL-terminated string; `params` NULL or
/// initialized by suanpan_generate_params_default() (with valid stop strings); `result`
/// NULL or initialized by suanpan_generate_result_default().
#[no_mangle]
pub unsafe extern "C" fn suanpan_generate(
    session: *const suanpan_session,
    prompt: *const c_char,
    params: *const suanpan_generate_params,
    on_piece: suanpan_piece_fn,
    user_data: *mut c_void,
    result: *mut suanpan_generate_result,
) -> suanpan_status {
    guard("suanpan_generate", || {
        // SAFETY: the caller's contract above.
        let gp = unsafe { read_generate_args(params, result) }?;
        // SAFETY: as above.
        let s = unsafe { handle(session, "session") }?;
        // SAFETY: as above.
        let prompt = unsafe { str_arg(prompt, "prompt") }?;
        let mut sink = PieceSink {
            f: on_piece,
            user_data,
            buf: Vec::with_capacity(64),
        };
        let mut s = s.lock()?;
        let r = if prompt.is_empty() {
            s.generate_tokens(&[], &gp, |p| sink.call(p))
        } else {
            s.generate(prompt, &gp, |p| sink.call(p))
        };
        finish_generation(r, result, s.last_generated())
    })
}

/// Generate the assistant's reply to a conversation of `n_messages` messages, rendered
/// with the model's chat template. Pass the whole conversation each turn: the part the
/// session already holds is reused. Otherwise as suanpan_generate().
///
/// # Safety
/// As suanpan_generate(); `messages` points to `n_messages` messages whose strings are
/// NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn suanpan_chat(
    session: *const suanpan_session,
    messages: *const suanpan_chat_message,
    n_messages: usize,
    params: *const suanpan_generate_params,
    on_piece: suanpan_piece_fn,
    user_data: *mut c_void,
    result: *mut suanpan_generate_result,
) -> suanpan_status {
    guard("suanpan_chat", || {
        // SAFETY: the caller's contract above.
        let gp = unsafe { read_generate_args(params, result) }?;
        // SAFETY: as above.
        let s = unsafe { handle(session, "session") }?;
        if messages.is_null() && n_messages > 0 {
            return Err(Failure::invalid("messages is NULL"));
        }
        let mut msgs = Vec::with_capacity(n_messages.min(1024));
        for i in 0..n_messages {
            // SAFETY: the caller passes n_messages readable messages.
            let m = unsafe { *messages.add(i) };
            msgs.push(ChatMessage::new(
                // SAFETY: as above.
                unsafe { str_arg(m.role, "role") }?,
                // SAFETY: as above.
                unsafe { str_arg(m.content, "content") }?,
            ));
        }
        let mut sink = PieceSink {
            f: on_piece,
            user_data,
            buf: Vec::with_capacity(64),
        };
        let mut s = s.lock()?;
        let r = s.chat(&msgs, &gp, |p| sink.call(p));
        finish_generation(r, result, s.last_generated())
    })
}

/// Save the session's context as a versioned, checksummed blob. On success `*out_bytes`
/// (free with suanpan_bytes_free) holds `*out_len` bytes.
///
/// # Safety
/// `session` is a live handle; `out_bytes` and `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn suanpan_session_save(
    session: *const suanpan_session,
    out_bytes: *mut *mut u8,
    out_len: *mut usize,
) -> suanpan_status {
    guard("suanpan_session_save", || {
        // SAFETY: the caller's contract above.
        let ob = unsafe { out_ptr(out_bytes, "out_bytes") }?;
        // SAFETY: as above.
        let ol = unsafe { out_ptr(out_len, "out_len") }?;
        *ob = std::ptr::null_mut();
        *ol = 0;
        // SAFETY: as above.
        let blob = unsafe { handle(session, "session") }?
            .lock()?
            .save_state()?;
        let b = blob.into_boxed_slice();
        *ol = b.len();
        *ob = Box::into_raw(b).cast();
        Ok(())
    })
}

/// Free bytes from suanpan_session_save (NULL is ignored).
///
/// # Safety
/// `bytes`/`len` are exactly what suanpan_session_save returned, not freed before.
#[no_mangle]
pub unsafe extern "C" fn suanpan_bytes_free(bytes: *mut u8, len: usize) {
    guard("suanpan_bytes_free", || {
        if !bytes.is_null() {
            let slice = std::ptr::slice_from_raw_parts_mut(bytes, len);
            // SAFETY: this is the boxed slice suanpan_session_save leaked, same length.
            drop(unsafe { Box::from_raw(slice) });
        }
        Ok(())
    });
}

/// Replace the session's context with a saved one. A blob from another model, a damaged
/// one or one of another format version is SUANPAN_INVALID_ARG, one too large for the
/// context SUANPAN_CONTEXT_FULL; either way the session is left as it was.
///
/// # Safety
/// `session` is a live handle; `bytes` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn suanpan_session_restore(
    session: *const suanpan_session,
    bytes: *const u8,
    len: usize,
) -> suanpan_status {
    guard("suanpan_session_restore", || {
        // SAFETY: the caller's contract above.
        let s = unsafe { handle(session, "session") }?;
        if bytes.is_null() {
            return Err(Failure::invalid("bytes is NULL"));
        }
        // SAFETY: the caller passes `len` readable bytes.
        let blob = unsafe { std::slice::from_raw_parts(bytes, len) };
        s.lock()?.load_state(blob)?;
        Ok(())
    })
}
