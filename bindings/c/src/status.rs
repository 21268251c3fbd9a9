//! Status codes, the thread-local last error, and the guard every entry point runs in: it
//! turns a `suanpan::Error` into a status plus message and a panic into
//! `SUANPAN_INTERNAL`, so nothing unwinds into C.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use suanpan::Error;

use crate::log::{log, suanpan_log_level};

/// What a call did. 0 is success; every other value comes with a message from
/// suanpan_last_error().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum suanpan_status {
    /// Success.
    SUANPAN_OK = 0,
    /// An argument was NULL, out of range, not UTF-8, or a struct's size field was wrong.
    SUANPAN_INVALID_ARG = 1,
    /// A file could not be read (missing, permissions, mmap refused).
    SUANPAN_IO = 2,
    /// The model file is malformed, truncated or uses something unsupported.
    SUANPAN_BAD_MODEL = 3,
    /// Memory could not be had: over the session's memory budget, or the allocator refused.
    SUANPAN_OOM = 4,
    /// The session's context is full; reset it or use a larger n_ctx.
    SUANPAN_CONTEXT_FULL = 5,
    /// suanpan_session_cancel() or a progress callback stopped the call.
    SUANPAN_CANCELLED = 6,
    /// The session is in use by another thread.
    SUANPAN_BUSY = 7,
    /// The compute backend failed.
    SUANPAN_BACKEND = 8,
    /// A bug in suanpan (an internal invariant failed or a panic was caught).
    SUANPAN_INTERNAL = 9,
}

use suanpan_status::*;

/// A failed call: the status to return and the message for suanpan_last_error().
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: suanpan_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: suanpan_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(SUANPAN_INVALID_ARG, message)
    }
}

/// The status a runtime error maps to.
pub(crate) fn status_of(e: &Error) -> suanpan_status {
    match e {
        Error::Io { .. } | Error::Install(_) => SUANPAN_IO,
        Error::BadModel(_) | Error::Tokenizer(_) => SUANPAN_BAD_MODEL,
        Error::InvalidArg(_) | Error::Template(_) => SUANPAN_INVALID_ARG,
        Error::ContextFull(_) => SUANPAN_CONTEXT_FULL,
        Error::OutOfMemory(_) => SUANPAN_OOM,
        Error::Cancelled => SUANPAN_CANCELLED,
        Error::Internal(_) => SUANPAN_INTERNAL,
        Error::Backend(_) => SUANPAN_BACKEND,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(status_of(&e), e.to_string())
    }
}

pub(crate) type CResult<T = ()> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Environment variable naming an entry point (e.g. `suanpan_generate`) that panics on
/// purpose right after it starts, so tests can see a panic become SUANPAN_INTERNAL.
pub const DEBUG_PANIC_ENV: &str = "SUANPAN_C_DEBUG_PANIC";

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".to_string()
    }
}

/// Run an entry point: clear the last error, run `f`, and map its outcome (error or
/// panic) to a status, recording the message.
pub(crate) fn guard(name: &'static str, f: impl FnOnce() -> CResult) -> suanpan_status {
    set_last_error("");
    let r = catch_unwind(AssertUnwindSafe(|| {
        if std::env::var_os(DEBUG_PANIC_ENV).is_some_and(|v| v == name) {
            panic!("{DEBUG_PANIC_ENV}={name}: a deliberate panic for testing");
        }
        f()
    }));
    match r {
        Ok(Ok(())) => SUANPAN_OK,
        Ok(Err(fail)) => {
            let level = if matches!(fail.status, SUANPAN_CANCELLED | SUANPAN_BUSY) {
                suanpan_log_level::SUANPAN_LOG_INFO
            } else {
                suanpan_log_level::SUANPAN_LOG_ERROR
            };
            log(level, &format!("{name}: {}", fail.message));
            set_last_error(&fail.message);
            fail.status
        }
        Err(p) => {
            let msg = format!("internal error in {name}: {}", panic_message(&*p));
            // Logging is itself guarded: a panicking log callback cannot escape either.
            let _ = catch_unwind(|| log(suanpan_log_level::SUANPAN_LOG_ERROR, &msg));
            set_last_error(&msg);
            SUANPAN_INTERNAL
        }
    }
}

/// The message of the last failed call on this thread ("" if the last call succeeded).
/// The pointer stays valid until this thread's next call into the library.
#[no_mangle]
pub extern "C" fn suanpan_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr())).unwrap_or(c"".as_ptr())
}

/// A constant name for a status value, e.g. "SUANPAN_CONTEXT_FULL" ("SUANPAN_UNKNOWN" for
/// a value that is not a status). Takes an int so any value is safe to pass.
#[no_mangle]
pub extern "C" fn suanpan_status_name(status: i32) -> *const c_char {
    let s: &'static std::ffi::CStr = match status {
        0 => c"SUANPAN_OK",
        1 => c"SUANPAN_INVALID_ARG",
        2 => c"SUANPAN_IO",
        3 => c"SUANPAN_BAD_MODEL",
        4 => c"SUANPAN_OOM",
        5 => c"SUANPAN_CONTEXT_FULL",
        6 => c"SUANPAN_CANCELLED",
        7 => c"SUANPAN_BUSY",
        8 => c"SUANPAN_BACKEND",
        9 => c"SUANPAN_INTERNAL",
        _ => c"SUANPAN_UNKNOWN",
    };
    s.as_ptr()
}

/// The message of the last error on this thread.
#[cfg(test)]
fn last_error_message() -> String {
    LAST_ERROR.with(|e| e.borrow().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses_and_messages() {
        let s = guard("t", || Err(Error::ContextFull("ctx 16".into()).into()));
        assert_eq!(s, SUANPAN_CONTEXT_FULL);
        assert!(last_error_message().contains("ctx 16"));
        assert_eq!(guard("t", || Ok(())), SUANPAN_OK);
        assert_eq!(last_error_message(), "");
    }

    #[test]
    fn panics_become_internal() {
        let s = guard("t", || panic!("boom"));
        assert_eq!(s, SUANPAN_INTERNAL);
        assert!(last_error_message().contains("boom"));
    }
}
