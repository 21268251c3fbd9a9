//! The log callback: one process-wide sink for what the library has to say (model loaded,
//! errors returned, generation stats). Without a callback nothing is logged.

use std::ffi::{c_char, c_void, CString};
use std::sync::RwLock;

/// Severity of a log message.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum suanpan_log_level {
    SUANPAN_LOG_ERROR = 0,
    SUANPAN_LOG_WARN = 1,
    SUANPAN_LOG_INFO = 2,
    SUANPAN_LOG_DEBUG = 3,
}

/// Receives one log message (UTF-8, NUL-terminated, valid only during the call). May be
/// called from any thread that calls into the library; must not call back into it.
#[allow(non_camel_case_types)]
pub type suanpan_log_fn =
    Option<extern "C" fn(level: suanpan_log_level, message: *const c_char, user_data: *mut c_void)>;

#[derive(Clone, Copy)]
struct Sink {
    f: extern "C" fn(suanpan_log_level, *const c_char, *mut c_void),
    user_data: *mut c_void,
    max_level: suanpan_log_level,
}

// SAFETY: the user data pointer is only handed back to the caller's callback; the caller
// promised (suanpan_set_log_callback's contract) that the callback may run on any thread.
unsafe impl Send for Sink {}
// SAFETY: as above; the library never dereferences the pointer.
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Send a message to the callback, if one is set and wants this level.
pub(crate) fn log(level: suanpan_log_level, msg: &str) {
    let sink = *SINK.read().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = sink {
        if level as i32 <= s.max_level as i32 {
            let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
            (s.f)(level, c.as_ptr(), s.user_data);
        }
    }
}

/// Whether a message of `level` would reach a callback (to skip formatting otherwise).
pub(crate) fn enabled(level: suanpan_log_level) -> bool {
    SINK.read()
        .unwrap_or_else(|p| p.into_inner())
        .is_some_and(|s| level as i32 <= s.max_level as i32)
}

/// Install (or with NULL remove) the log callback; messages above `max_level` (a
/// suanpan_log_level: 0 error .. 3 debug) are dropped. `user_data` is passed back as is.
/// The callback may be called from any thread that calls into the library.
#[no_mangle]
pub extern "C" fn suanpan_set_log_callback(
    callback: suanpan_log_fn,
    max_level: i32,
    user_data: *mut c_void,
) {
    let max_level = match max_level {
        i32::MIN..=0 => suanpan_log_level::SUANPAN_LOG_ERROR,
        1 => suanpan_log_level::SUANPAN_LOG_WARN,
        2 => suanpan_log_level::SUANPAN_LOG_INFO,
        _ => suanpan_log_level::SUANPAN_LOG_DEBUG,
    };
    let sink = callback.map(|f| Sink {
        f,
        user_data,
        max_level,
    });
    // Nothing here can panic; the guard keeps the rule "no unwinding into C" uniform.
    let _ = std::panic::catch_unwind(|| {
        *SINK.write().unwrap_or_else(|p| p.into_inner()) = sink;
    });
}
