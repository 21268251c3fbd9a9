//! JNI library behind the Kotlin API in `android/src/main/kotlin/io/suanpan/`.
//!
//! The native methods of `io.suanpan.NativeBridge` are kept thin and uniform:
//! - every one returns a status code (the numbers of the C ABI's `suanpan_status`) and
//!   writes results into a `long[]` the caller passes; the Kotlin layer turns a non-zero
//!   status into a `SuanpanException` subclass with [`Java_io_suanpan_NativeBridge_nativeLastError`]'s
//!   message (a thread-local, read right after the failing call on the same thread);
//! - text crosses the boundary only as UTF-8 `byte[]` (never JNI's modified UTF-8);
//!   lists of strings are one `byte[]` of `[u32 little-endian length][bytes]` records;
//! - every call runs under `catch_unwind`: a panic becomes status INTERNAL (9), and
//!   `EnvUnowned::with_env` is a second net that turns anything else into a Java
//!   RuntimeException. Nothing unwinds into the JVM.
//!
//! Handles are `jlong`s holding `Box` pointers: a model handle owns an `Arc<Model>`
//! (sessions keep the model alive), a session handle owns the session and its cancel
//! token. The Kotlin classes free each handle exactly once, and never while a call on it
//! runs (their `close()` cancels, then waits for the call to finish).

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use jni::errors::ThrowRuntimeExAndDefault;
use jni::objects::{JByteArray, JClass, JLongArray, JObject};
use jni::refs::Reference;
use jni::sys::{jboolean, jfloat, jint, jlong};
use jni::{jni_sig, jni_str, Env, EnvUnowned, JValue};

use suanpan::chat::ChatMessage;
use suanpan::model::LoadProgress;
use suanpan::{
    CancelToken, Constraint, Error, GenerateParams, Model, ModelParams, SamplingParams, Session,
    SessionParams, StopReason,
};

/// Status codes, as in the C ABI (`bindings/c/include/suanpan.h`).
mod status {
    pub const OK: i32 = 0;
    pub const INVALID_ARG: i32 = 1;
    pub const IO: i32 = 2;
    pub const BAD_MODEL: i32 = 3;
    pub const OOM: i32 = 4;
    pub const CONTEXT_FULL: i32 = 5;
    pub const CANCELLED: i32 = 6;
    pub const BUSY: i32 = 7;
    #[allow(dead_code)]
    pub const BACKEND: i32 = 8;
    pub const INTERNAL: i32 = 9;
}

struct Failure {
    status: i32,
    message: String,
}

impl Failure {
    fn new(status: i32, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(status::INVALID_ARG, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let s = match &e {
            Error::Io { .. } | Error::Install(_) => status::IO,
            Error::BadModel(_) | Error::Tokenizer(_) => status::BAD_MODEL,
            Error::InvalidArg(_) | Error::Template(_) => status::INVALID_ARG,
            Error::ContextFull(_) => status::CONTEXT_FULL,
            Error::OutOfMemory(_) => status::OOM,
            Error::Cancelled => status::CANCELLED,
            Error::Internal(_) => status::INTERNAL,
            Error::Backend(_) => status::BACKEND,
        };
        Failure::new(s, e.to_string())
    }
}

impl From<jni::errors::Error> for Failure {
    fn from(e: jni::errors::Error) -> Self {
        Failure::new(status::INTERNAL, format!("JNI: {e}"))
    }
}

type CResult<T = ()> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
    static LAST_STATUS: RefCell<i32> = const { RefCell::new(0) };
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".into()
    }
}

/// Run a native method body: status code out, message to the thread-local last error, a
/// panic caught as INTERNAL.
fn call<'l>(
    mut env: EnvUnowned<'l>,
    name: &'static str,
    f: impl FnOnce(&mut Env<'l>) -> CResult,
) -> jint {
    env.with_env(|env| -> Result<jint, jni::errors::Error> {
        LAST_ERROR.with(|e| e.borrow_mut().clear());
        let r = catch_unwind(AssertUnwindSafe(|| f(env)));
        let (code, msg) = match r {
            Ok(Ok(())) => (status::OK, String::new()),
            Ok(Err(fail)) => (fail.status, fail.message),
            Err(p) => (
                status::INTERNAL,
                format!("internal error in {name}: {}", panic_message(&*p)),
            ),
        };
        LAST_ERROR.with(|e| *e.borrow_mut() = msg);
        LAST_STATUS.with(|s| *s.borrow_mut() = code);
        Ok(code)
    })
    .resolve::<ThrowRuntimeExAndDefault>()
}

/// A session and its cancel token; `lock` refuses a second concurrent user (BUSY).
struct JniSession {
    session: Mutex<Session>,
    cancel: CancelToken,
}

impl JniSession {
    fn new(s: Session) -> Box<Self> {
        Box::new(JniSession {
            cancel: s.cancel_token(),
            session: Mutex::new(s),
        })
    }
    fn lock(&self) -> CResult<MutexGuard<'_, Session>> {
        match self.session.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(Failure::new(
                status::BUSY,
                "the session is in use by another thread",
            )),
            Err(TryLockError::Poisoned(_)) => Err(Failure::new(
                status::INTERNAL,
                "an earlier call on this session failed internally; close it",
            )),
        }
    }
}

fn model_ref<'a>(h: jlong) -> CResult<&'a Arc<Model>> {
    if h == 0 {
        return Err(Failure::invalid("the engine is closed"));
    }
    // SAFETY: non-zero handles are `Box<Arc<Model>>` pointers made by nativeLoad and not
    // yet freed (the Kotlin class frees once, after every call on it has returned).
    Ok(unsafe { &*(h as *const Arc<Model>) })
}

fn session_ref<'a>(h: jlong) -> CResult<&'a JniSession> {
    if h == 0 {
        return Err(Failure::invalid("the session is closed"));
    }
    // SAFETY: non-zero handles are `Box<JniSession>` pointers made by this library and
    // not yet freed (same contract as `model_ref`).
    Ok(unsafe { &*(h as *const JniSession) })
}

fn utf8(env: &Env, a: &JByteArray, what: &str) -> CResult<String> {
    if a.is_null() {
        return Err(Failure::invalid(format!("{what} is null")));
    }
    String::from_utf8(env.convert_byte_array(a)?)
        .map_err(|e| Failure::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// Decode `[u32 LE length][UTF-8 bytes]` records (a null array is an empty list).
/// The constraint of a generation: `kind` (0 none, 1 JSON schema, 2 JSON object, 3 regex,
/// 4 grammar) and its UTF-8 text (null for 0 and 2).
fn constraint_arg(env: &Env, kind: jint, text: &JByteArray) -> CResult<Option<Constraint>> {
    let text = || -> CResult<String> {
        if text.is_null() {
            return Err(Failure::invalid(
                "the constraint needs a schema, regex or grammar text",
            ));
        }
        String::from_utf8(env.convert_byte_array(text)?)
            .map_err(|e| Failure::invalid(format!("the constraint is not valid UTF-8: {e}")))
    };
    Ok(match kind {
        0 => None,
        1 => Some(Constraint::JsonSchema(text()?)),
        2 => Some(Constraint::JsonObject),
        3 => Some(Constraint::Regex(text()?)),
        4 => Some(Constraint::Grammar(text()?)),
        k => return Err(Failure::invalid(format!("unknown constraint kind {k}"))),
    })
}

fn utf8_list(env: &Env, a: &JByteArray, what: &str) -> CResult<Vec<String>> {
    if a.is_null() {
        return Ok(Vec::new());
    }
    let bytes = env.convert_byte_array(a)?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| Failure::invalid(format!("{what}: truncated record")))?;
        let s = bytes
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| Failure::invalid(format!("{what}: truncated record")))?;
        out.push(
            String::from_utf8(s.to_vec())
                .map_err(|e| Failure::invalid(format!("{what} is not valid UTF-8: {e}")))?,
        );
        at += 4 + len;
    }
    Ok(out)
}

fn write_longs(env: &Env, out: &JLongArray, values: &[i64]) -> CResult {
    if out.is_null() || out.len(env)? < values.len() {
        return Err(Failure::invalid(format!(
            "the output array needs {} elements",
            values.len()
        )));
    }
    out.set_region(env, 0, values)?;
    Ok(())
}

/// The library version as UTF-8.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeVersion<'l>(
    mut env: EnvUnowned<'l>,
    _class: JClass<'l>,
) -> JByteArray<'l> {
    env.with_env(|env| env.byte_array_from_slice(env!("CARGO_PKG_VERSION").as_bytes()))
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// The message of this thread's last failed call, as UTF-8.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeLastError<'l>(
    mut env: EnvUnowned<'l>,
    _class: JClass<'l>,
) -> JByteArray<'l> {
    env.with_env(|env| {
        let msg = LAST_ERROR.with(|e| e.borrow().clone());
        env.byte_array_from_slice(msg.as_bytes())
    })
    .resolve::<ThrowRuntimeExAndDefault>()
}

/// Load a model; `out[0]` receives the handle. `progress` (nullable) is a
/// `LoadProgressListener`: `boolean onProgress(float)`.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeLoad<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    path: JByteArray<'l>,
    n_threads: jint,
    progress: JObject<'l>,
    out: JLongArray<'l>,
) -> jint {
    call(env, "nativeLoad", |env| {
        let path = utf8(env, &path, "path")?;
        let progress = if progress.is_null() {
            None
        } else {
            let vm = env.get_java_vm()?;
            let listener = env.new_global_ref(&progress)?;
            Some(LoadProgress::new(move |f| {
                // The load runs on the calling (already attached) thread; a listener that
                // throws cancels the load (its exception is caught and reported by
                // attach_current_thread as an error).
                vm.attach_current_thread(|env| -> jni::errors::Result<bool> {
                    env.call_method(
                        listener.as_obj(),
                        jni_str!("onProgress"),
                        jni_sig!("(F)Z"),
                        &[JValue::Float(f)],
                    )?
                    .z()
                })
                .unwrap_or(false)
            }))
        };
        let params = ModelParams {
            n_threads: n_threads.max(0) as usize,
            progress,
            ..Default::default()
        };
        let model = Model::load(&path, &params).map_err(|e| match e {
            Error::Template(m) => Error::BadModel(m),
            e => e,
        })?;
        let h = Box::into_raw(Box::new(Arc::new(model))) as jlong;
        if let Err(e) = write_longs(env, &out, &[h]) {
            // SAFETY: `h` was just made by Box::into_raw and never handed out.
            drop(unsafe { Box::from_raw(h as *mut Arc<Model>) });
            return Err(e);
        }
        Ok(())
    })
}

/// Free a model handle (0 is ignored).
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeModelFree<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    model: jlong,
) -> jint {
    call(env, "nativeModelFree", |_| {
        if model != 0 {
            // SAFETY: a handle from nativeLoad, freed once (the Kotlin class zeroes it).
            drop(unsafe { Box::from_raw(model as *mut Arc<Model>) });
        }
        Ok(())
    })
}

fn session_params(n_ctx: jint, n_batch: jint, budget: jlong) -> CResult<SessionParams> {
    if n_ctx < 0 || n_batch < 0 || budget < 0 {
        return Err(Failure::invalid(
            "n_ctx, n_batch and memory budget must be >= 0",
        ));
    }
    let d = SessionParams::default();
    Ok(SessionParams {
        n_ctx: n_ctx as usize,
        n_batch: if n_batch == 0 {
            d.n_batch
        } else {
            n_batch as usize
        },
        all_logits: false,
        memory_budget: usize::try_from(budget).unwrap_or(usize::MAX),
        ..d
    })
}

/// Memory estimate without loading; `out` = [file, weights, n_ctx, kv, kv per token,
/// scratch, total] bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeEstimate<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    path: JByteArray<'l>,
    n_threads: jint,
    n_ctx: jint,
    n_batch: jint,
    budget: jlong,
    out: JLongArray<'l>,
) -> jint {
    call(env, "nativeEstimate", |env| {
        let path = utf8(env, &path, "path")?;
        let mp = ModelParams {
            n_threads: n_threads.max(0) as usize,
            progress: None,
            ..Default::default()
        };
        let e = Model::estimate_memory(&path, &mp, &session_params(n_ctx, n_batch, budget)?)?;
        write_longs(
            env,
            &out,
            &[
                e.file_bytes as i64,
                e.weights_bytes as i64,
                e.n_ctx as i64,
                e.kv_bytes as i64,
                e.kv_bytes_per_token as i64,
                e.scratch_bytes as i64,
                e.total_bytes() as i64,
            ],
        )
    })
}

fn hand_out(env: &Env, out: &JLongArray, s: Session) -> CResult {
    let h = Box::into_raw(JniSession::new(s)) as jlong;
    if let Err(e) = write_longs(env, out, &[h]) {
        // SAFETY: `h` was just made by Box::into_raw and never handed out.
        drop(unsafe { Box::from_raw(h as *mut JniSession) });
        return Err(e);
    }
    Ok(())
}

/// Create a session; `out[0]` receives the handle.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeSessionNew<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    model: jlong,
    n_ctx: jint,
    n_batch: jint,
    budget: jlong,
    out: JLongArray<'l>,
) -> jint {
    call(env, "nativeSessionNew", |env| {
        let m = model_ref(model)?;
        let s = m.session(&session_params(n_ctx, n_batch, budget)?)?;
        hand_out(env, &out, s)
    })
}

/// Copy a session (context included); `out[0]` receives the new handle.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeSessionClone<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    session: jlong,
    out: JLongArray<'l>,
) -> jint {
    call(env, "nativeSessionClone", |env| {
        let copy = session_ref(session)?.lock()?.try_clone()?;
        hand_out(env, &out, copy)
    })
}

/// Free a session handle (0 is ignored).
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeSessionFree<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    session: jlong,
) -> jint {
    call(env, "nativeSessionFree", |_| {
        if session != 0 {
            // SAFETY: a handle from this library, freed once, with no call running on it.
            drop(unsafe { Box::from_raw(session as *mut JniSession) });
        }
        Ok(())
    })
}

/// Cancel a running generation (any thread).
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeCancel<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    session: jlong,
) -> jint {
    call(env, "nativeCancel", |_| {
        session_ref(session)?.cancel.cancel();
        Ok(())
    })
}

/// Forget the conversation.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeReset<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    session: jlong,
) -> jint {
    call(env, "nativeReset", |_| {
        session_ref(session)?.lock()?.reset();
        Ok(())
    })
}

/// `out` = [tokens, n_ctx, kv bytes, kv bytes used].
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeUsage<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    session: jlong,
    out: JLongArray<'l>,
) -> jint {
    call(env, "nativeUsage", |env| {
        let u = session_ref(session)?.lock()?.usage();
        write_longs(
            env,
            &out,
            &[
                u.tokens as i64,
                u.n_ctx as i64,
                u.kv_bytes as i64,
                u.kv_bytes_used as i64,
            ],
        )
    })
}

/// Generate from `prompt` (UTF-8) or, when `chat` is non-null, from chat messages
/// (records alternating role, content). Pieces go to `sink.onPiece(byte[]): boolean`
/// (nullable). `constraint_kind` 0 none, 1 JSON schema, 2 JSON object, 3 regex, 4 Lark
/// grammar, with its text in `constraint` (UTF-8, null for 0 and 2). `out` = [prompt
/// tokens, generated tokens, stop reason (0 end, 1 max tokens, 2 callback, 3 stop string,
/// 4 error: the tokens streamed before it), prompt µs, generate µs], written on success and
/// on errors from the session.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeGenerate<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    session: jlong,
    prompt: JByteArray<'l>,
    chat: JByteArray<'l>,
    max_tokens: jint,
    temperature: jfloat,
    top_k: jint,
    top_p: jfloat,
    min_p: jfloat,
    repeat_penalty: jfloat,
    repeat_last_n: jint,
    seed: jlong,
    add_special: jboolean,
    parse_special: jboolean,
    stops: JByteArray<'l>,
    constraint_kind: jint,
    constraint: JByteArray<'l>,
    sink: JObject<'l>,
    out: JLongArray<'l>,
) -> jint {
    call(env, "nativeGenerate", |env| {
        let s = session_ref(session)?;
        if max_tokens < 0 || top_k < 0 || repeat_last_n < 0 {
            return Err(Failure::invalid(
                "max_tokens, top_k and repeat_last_n must be >= 0",
            ));
        }
        let params = GenerateParams {
            max_tokens: max_tokens as usize,
            sampling: SamplingParams {
                temperature,
                top_k: top_k as usize,
                top_p,
                min_p,
                repeat_penalty,
                repeat_last_n: repeat_last_n as usize,
                seed: seed as u64,
            },
            add_special,
            parse_special,
            stop: utf8_list(env, &stops, "stop strings")?,
            constraint: constraint_arg(env, constraint_kind, &constraint)?,
        };
        let messages = if chat.is_null() {
            None
        } else {
            let parts = utf8_list(env, &chat, "chat messages")?;
            if parts.len() % 2 != 0 {
                return Err(Failure::invalid(
                    "chat messages need a role and a content each",
                ));
            }
            Some(
                parts
                    .chunks_exact(2)
                    .map(|p| ChatMessage::new(p[0].clone(), p[1].clone()))
                    .collect::<Vec<_>>(),
            )
        };
        let prompt = match &messages {
            Some(_) => String::new(),
            None => utf8(env, &prompt, "prompt")?,
        };
        let mut java_failed: Option<Failure> = None;
        let mut on_piece = |piece: &str| -> ControlFlow<()> {
            if sink.is_null() {
                return ControlFlow::Continue(());
            }
            let r = env.with_local_frame(4, |env| -> jni::errors::Result<bool> {
                let bytes = env.byte_array_from_slice(piece.as_bytes())?;
                env.call_method(
                    &sink,
                    jni_str!("onPiece"),
                    jni_sig!("([B)Z"),
                    &[JValue::Object(&bytes)],
                )?
                .z()
            });
            match r {
                Ok(true) => ControlFlow::Continue(()),
                Ok(false) => ControlFlow::Break(()),
                Err(e) => {
                    java_failed = Some(e.into());
                    ControlFlow::Break(())
                }
            }
        };
        let mut guard = s.lock()?;
        let r = match &messages {
            Some(m) => guard.chat(m, &params, &mut on_piece),
            None if prompt.is_empty() => guard.generate_tokens(&[], &params, &mut on_piece),
            None => guard.generate(&prompt, &params, &mut on_piece),
        };
        let generated = guard.last_generated();
        drop(guard);
        let st = match r {
            Ok(st) => st,
            Err(e) => {
                // `out` tells the tokens streamed before the error (stop reason 4 = error).
                if java_failed.is_none() {
                    let _ = write_longs(env, &out, &[0, generated as i64, 4, 0, 0]);
                }
                return Err(e.into());
            }
        };
        if let Some(f) = java_failed {
            return Err(f);
        }
        let stop = match st.stop {
            StopReason::EndOfGeneration => 0,
            StopReason::MaxTokens => 1,
            StopReason::Callback => 2,
            StopReason::StopString => 3,
        };
        write_longs(
            env,
            &out,
            &[
                st.prompt_tokens as i64,
                st.generated_tokens as i64,
                stop,
                (st.prompt_ms * 1e3) as i64,
                (st.generate_ms * 1e3) as i64,
            ],
        )
    })
}

/// Save the session's context as a byte[]; null on failure, with the status in
/// nativeLastStatus and the message in nativeLastError.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeSave<'l>(
    mut env: EnvUnowned<'l>,
    _class: JClass<'l>,
    session: jlong,
) -> JByteArray<'l> {
    env.with_env(|env| -> Result<JByteArray<'l>, jni::errors::Error> {
        LAST_ERROR.with(|e| e.borrow_mut().clear());
        LAST_STATUS.with(|s| *s.borrow_mut() = status::OK);
        let r = catch_unwind(AssertUnwindSafe(|| -> CResult<Vec<u8>> {
            Ok(session_ref(session)?.lock()?.save_state()?)
        }));
        let fail = match r {
            Ok(Ok(blob)) => return env.byte_array_from_slice(&blob),
            Ok(Err(f)) => f,
            Err(p) => Failure::new(
                status::INTERNAL,
                format!("internal error in nativeSave: {}", panic_message(&*p)),
            ),
        };
        LAST_STATUS.with(|s| *s.borrow_mut() = fail.status);
        LAST_ERROR.with(|e| *e.borrow_mut() = fail.message);
        Ok(JByteArray::default())
    })
    .resolve::<ThrowRuntimeExAndDefault>()
}

/// The status of this thread's last call (0 if it succeeded).
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeLastStatus<'l>(
    _env: EnvUnowned<'l>,
    _class: JClass<'l>,
) -> jint {
    LAST_STATUS.with(|s| *s.borrow())
}

/// Replace the session's context with a saved one.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeRestore<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
    session: jlong,
    blob: JByteArray<'l>,
) -> jint {
    call(env, "nativeRestore", |env| {
        if blob.is_null() {
            return Err(Failure::invalid("the saved state is null"));
        }
        let bytes = env.convert_byte_array(&blob)?;
        session_ref(session)?.lock()?.load_state(&bytes)?;
        Ok(())
    })
}

/// Panics on purpose inside the guard, so tests can see a panic arrive in Kotlin as
/// `SuanpanException.Internal` instead of killing the JVM.
#[no_mangle]
pub extern "system" fn Java_io_suanpan_NativeBridge_nativeDebugPanic<'l>(
    env: EnvUnowned<'l>,
    _class: JClass<'l>,
) -> jint {
    call(env, "nativeDebugPanic", |_| -> CResult {
        panic!("a deliberate panic for testing")
    })
}
