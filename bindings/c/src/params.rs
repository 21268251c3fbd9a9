//! The structs passed across the ABI, their `*_default()` initializers, and their
//! conversion to the runtime's Rust types.
//!
//! Every struct begins with `size`, which the caller's `*_default()` sets to the size of
//! the struct as the caller's header declares it. This version of the library accepts
//! exactly its own sizes; a later version that appends fields will still accept the older
//! sizes (reading only the fields they had, defaults for the rest), so programs built
//! against this header keep working with newer libraries.

use std::ffi::{c_char, c_void, CStr};

use suanpan::model::LoadProgress;
use suanpan::session::MemoryEstimate;
use suanpan::{
    Constraint, GenerateParams, GenerateStats, ModelParams, SamplingParams, SessionParams,
};
use suanpan::{StopReason, Usage};

use crate::status::{CResult, Failure};

/// Load progress: `fraction` goes from 0.0 to 1.0 and never decreases. Return true to
/// go on, false to cancel the load (it then returns SUANPAN_CANCELLED). Called on the
/// loading thread.
#[allow(non_camel_case_types)]
pub type suanpan_progress_fn = Option<extern "C" fn(fraction: f32, user_data: *mut c_void) -> bool>;

/// Receives one piece of generated text: `len` bytes of UTF-8 made of whole code points,
/// followed by a NUL (so `piece` is also a C string). Valid only during the call. Return
/// true to go on, false to stop generation (the call then returns SUANPAN_OK with
/// stop_reason SUANPAN_STOP_CALLBACK).
#[allow(non_camel_case_types)]
pub type suanpan_piece_fn =
    Option<extern "C" fn(piece: *const c_char, len: usize, user_data: *mut c_void) -> bool>;

/// How to load a model. Initialize with suanpan_model_params_default().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct suanpan_model_params {
    /// sizeof(suanpan_model_params), set by suanpan_model_params_default().
    pub size: usize,
    /// Compute threads (0 = one per core).
    pub n_threads: u32,
    /// Optional load progress callback (NULL for none).
    pub progress: suanpan_progress_fn,
    /// Passed to `progress` as is.
    pub progress_user_data: *mut c_void,
}

/// How to create a session. Initialize with suanpan_session_params_default().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct suanpan_session_params {
    /// sizeof(suanpan_session_params), set by suanpan_session_params_default().
    pub size: usize,
    /// Context length in tokens (0 = the model's trained length, at most 4096).
    pub n_ctx: u32,
    /// Most prompt tokens per forward pass (default 512).
    pub n_batch: u32,
    /// Most bytes the session may allocate (KV cache + buffers); 0 = no limit. Over it,
    /// suanpan_session_new returns SUANPAN_OOM.
    pub memory_budget: u64,
}

/// How to generate. Initialize with suanpan_generate_params_default().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct suanpan_generate_params {
    /// sizeof(suanpan_generate_params), set by suanpan_generate_params_default().
    pub size: usize,
    /// Most tokens to generate (default 256).
    pub max_tokens: u32,
    /// Sampling temperature; 0 or less = greedy (default 0.8).
    pub temperature: f32,
    /// Keep the k most likely tokens, 0 = all (default 40).
    pub top_k: u32,
    /// Nucleus sampling threshold in [0, 1] (default 0.95).
    pub top_p: f32,
    /// Drop tokens below min_p x the top probability, in [0, 1] (default 0.05).
    pub min_p: f32,
    /// Repetition penalty, 1 = off (default 1).
    pub repeat_penalty: f32,
    /// Recent tokens the penalty looks at (default 64).
    pub repeat_last_n: u32,
    /// Random seed: the same seed, prompt and context give the same tokens.
    pub seed: u64,
    /// Add BOS/EOS around the prompt as the model's metadata says (default true).
    pub add_special: bool,
    /// Let special-token text in the prompt become special tokens (default false).
    pub parse_special: bool,
    /// Stop strings (UTF-8, NUL-terminated; NULL when n_stop is 0). Generation stops
    /// before a stop string; none of it is streamed.
    pub stop: *const *const c_char,
    /// Number of stop strings.
    pub n_stop: usize,
    /// What the output must match: one of the SUANPAN_CONSTRAINT_* values (default
    /// SUANPAN_CONSTRAINT_NONE). A constraint that does not compile or cannot be satisfied
    /// makes suanpan_generate return SUANPAN_INVALID_ARG, naming it in the message.
    pub constraint_kind: u32,
    /// The JSON schema, regular expression or Lark grammar (UTF-8, NUL-terminated); NULL
    /// for SUANPAN_CONSTRAINT_NONE and SUANPAN_CONSTRAINT_JSON_OBJECT.
    pub constraint: *const c_char,
}

/// No constraint on the output.
pub const SUANPAN_CONSTRAINT_NONE: u32 = 0;
/// The output is JSON matching the JSON schema in `constraint`.
pub const SUANPAN_CONSTRAINT_JSON_SCHEMA: u32 = 1;
/// The output is a JSON object (`constraint` is NULL).
pub const SUANPAN_CONSTRAINT_JSON_OBJECT: u32 = 2;
/// The output matches the regular expression in `constraint` (Rust regex syntax).
pub const SUANPAN_CONSTRAINT_REGEX: u32 = 3;
/// The output matches the Lark-style grammar in `constraint` (llguidance syntax).
pub const SUANPAN_CONSTRAINT_GRAMMAR: u32 = 4;

/// Why a generation ended.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum suanpan_stop_reason {
    /// The model produced an end-of-generation token.
    SUANPAN_STOP_END = 0,
    /// max_tokens were generated.
    SUANPAN_STOP_MAX_TOKENS = 1,
    /// The piece callback returned false.
    SUANPAN_STOP_CALLBACK = 2,
    /// The output reached a stop string.
    SUANPAN_STOP_STRING = 3,
    /// The call failed (its status says why); generated_tokens says how many tokens were
    /// streamed before (they are in the context).
    SUANPAN_STOP_ERROR = 4,
}

/// What a generation did. Initialize with suanpan_generate_result_default().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct suanpan_generate_result {
    /// sizeof(suanpan_generate_result).
    pub size: usize,
    /// Tokens evaluated before generating (the prompt, plus a pending token).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub generated_tokens: u32,
    /// Milliseconds spent on the prompt.
    pub prompt_ms: f64,
    /// Milliseconds spent generating.
    pub generate_ms: f64,
    /// Why generation ended.
    pub stop_reason: suanpan_stop_reason,
}

/// How full a session is. Initialize with suanpan_usage_default().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct suanpan_usage {
    /// sizeof(suanpan_usage).
    pub size: usize,
    /// Tokens in the context.
    pub tokens: u32,
    /// Context capacity in tokens.
    pub n_ctx: u32,
    /// Bytes the KV cache holds (allocated for n_ctx tokens).
    pub kv_bytes: u64,
    /// Bytes of the KV cache in use.
    pub kv_bytes_used: u64,
}

/// Memory a model and one session need. Initialize with
/// suanpan_memory_estimate_default().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct suanpan_memory_estimate {
    /// sizeof(suanpan_memory_estimate).
    pub size: usize,
    /// Size of the model file (it is memory-mapped).
    pub file_bytes: u64,
    /// Bytes of weights (read at load time; file-backed).
    pub weights_bytes: u64,
    /// The context the session gets.
    pub n_ctx: u32,
    /// KV cache of one session.
    pub kv_bytes: u64,
    /// KV bytes per token of context.
    pub kv_bytes_per_token: u64,
    /// Activation buffers of one session.
    pub scratch_bytes: u64,
    /// weights + KV + buffers.
    pub total_bytes: u64,
}

/// One chat message: role ("system", "user", "assistant") and content, UTF-8.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct suanpan_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// Defaults for suanpan_model_load().
#[no_mangle]
pub extern "C" fn suanpan_model_params_default() -> suanpan_model_params {
    suanpan_model_params {
        size: size_of::<suanpan_model_params>(),
        n_threads: 0,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
    }
}

/// Defaults for suanpan_session_new().
#[no_mangle]
pub extern "C" fn suanpan_session_params_default() -> suanpan_session_params {
    let d = SessionParams::default();
    suanpan_session_params {
        size: size_of::<suanpan_session_params>(),
        n_ctx: d.n_ctx as u32,
        n_batch: d.n_batch as u32,
        memory_budget: d.memory_budget as u64,
    }
}

/// Defaults for generation (llama.cpp's sampling defaults, 256 tokens).
#[no_mangle]
pub extern "C" fn suanpan_generate_params_default() -> suanpan_generate_params {
    let d = GenerateParams::default();
    let s = &d.sampling;
    suanpan_generate_params {
        size: size_of::<suanpan_generate_params>(),
        max_tokens: d.max_tokens as u32,
        temperature: s.temperature,
        top_k: s.top_k as u32,
        top_p: s.top_p,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        repeat_last_n: s.repeat_last_n as u32,
        seed: s.seed,
        add_special: d.add_special,
        parse_special: d.parse_special,
        stop: std::ptr::null(),
        n_stop: 0,
        constraint_kind: SUANPAN_CONSTRAINT_NONE,
        constraint: std::ptr::null(),
    }
}

/// An empty result with its size set.
#[no_mangle]
pub extern "C" fn suanpan_generate_result_default() -> suanpan_generate_result {
    suanpan_generate_result {
        size: size_of::<suanpan_generate_result>(),
        prompt_tokens: 0,
        generated_tokens: 0,
        prompt_ms: 0.0,
        generate_ms: 0.0,
        stop_reason: suanpan_stop_reason::SUANPAN_STOP_END,
    }
}

/// An empty usage with its size set.
#[no_mangle]
pub extern "C" fn suanpan_usage_default() -> suanpan_usage {
    suanpan_usage {
        size: size_of::<suanpan_usage>(),
        tokens: 0,
        n_ctx: 0,
        kv_bytes: 0,
        kv_bytes_used: 0,
    }
}

/// An empty estimate with its size set.
#[no_mangle]
pub extern "C" fn suanpan_memory_estimate_default() -> suanpan_memory_estimate {
    suanpan_memory_estimate {
        size: size_of::<suanpan_memory_estimate>(),
        file_bytes: 0,
        weights_bytes: 0,
        n_ctx: 0,
        kv_bytes: 0,
        kv_bytes_per_token: 0,
        scratch_bytes: 0,
        total_bytes: 0,
    }
}

/// Read a caller's struct whose first field is `size`; NULL gives `default`.
///
/// # Safety
/// `p` is NULL or points to a readable `T`-sized struct whose first field is a `usize`.
pub(crate) unsafe fn read_struct<T: Copy>(p: *const T, default: T, what: &str) -> CResult<T> {
    if p.is_null() {
        return Ok(default);
    }
    // SAFETY: the caller guarantees `p` points to a struct that starts with a usize.
    let size = unsafe { *(p as *const usize) };
    check_size(size, size_of::<T>(), what)?;
    // SAFETY: size checked: the caller's struct is a whole `T`.
    Ok(unsafe { *p })
}

/// Check an out-struct's size field before writing it.
pub(crate) fn check_size(size: usize, want: usize, what: &str) -> CResult {
    if size != want {
        return Err(Failure::invalid(format!(
            "{what}.size is {size}, expected {want}: initialize it with {what}_default()"
        )));
    }
    Ok(())
}

/// Borrow a C string as UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the duration of the borrow.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> CResult<&'a str> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated per the contract above.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| Failure::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// The progress callback of a load, callable from the loading thread.
struct CProgress {
    f: extern "C" fn(f32, *mut c_void) -> bool,
    user_data: *mut c_void,
}
// SAFETY: the load calls the callback only on the thread that called suanpan_model_load,
// during that call; the user data goes back to the caller untouched.
unsafe impl Send for CProgress {}
// SAFETY: as above.
unsafe impl Sync for CProgress {}

impl CProgress {
    fn call(&self, fraction: f32) -> bool {
        (self.f)(fraction, self.user_data)
    }
}

pub(crate) fn model_params(p: &suanpan_model_params) -> ModelParams {
    let progress = p.progress.map(|f| {
        let cp = CProgress {
            f,
            user_data: p.progress_user_data,
        };
        LoadProgress::new(move |x| cp.call(x))
    });
    ModelParams {
        n_threads: p.n_threads as usize,
        progress,
        ..Default::default()
    }
}

pub(crate) fn session_params(p: &suanpan_session_params) -> CResult<SessionParams> {
    Ok(SessionParams {
        n_ctx: p.n_ctx as usize,
        n_batch: p.n_batch as usize,
        all_logits: false,
        memory_budget: usize::try_from(p.memory_budget).unwrap_or(usize::MAX),
        ..Default::default()
    })
}

/// The constraint of `p`.
///
/// # Safety
/// `p.constraint` is NULL or a NUL-terminated string.
unsafe fn constraint(p: &suanpan_generate_params) -> CResult<Option<Constraint>> {
    let text = || {
        if p.constraint.is_null() {
            return Err(Failure::invalid(
                "constraint is NULL but constraint_kind needs a schema, regex or grammar",
            ));
        }
        // SAFETY: the caller passes a NUL-terminated string (checked non-NULL above).
        unsafe { str_arg(p.constraint, "constraint") }.map(str::to_string)
    };
    Ok(match p.constraint_kind {
        SUANPAN_CONSTRAINT_NONE => None,
        SUANPAN_CONSTRAINT_JSON_SCHEMA => Some(Constraint::JsonSchema(text()?)),
        SUANPAN_CONSTRAINT_JSON_OBJECT => Some(Constraint::JsonObject),
        SUANPAN_CONSTRAINT_REGEX => Some(Constraint::Regex(text()?)),
        SUANPAN_CONSTRAINT_GRAMMAR => Some(Constraint::Grammar(text()?)),
        k => {
            return Err(Failure::invalid(format!(
                "constraint_kind {k} is not one of the SUANPAN_CONSTRAINT_* values"
            )))
        }
    })
}

/// # Safety
/// `p.stop` points to `p.n_stop` valid C strings (or n_stop is 0); `p.constraint` is NULL
/// or a C string.
pub(crate) unsafe fn generate_params(p: &suanpan_generate_params) -> CResult<GenerateParams> {
    let mut stop = Vec::with_capacity(p.n_stop.min(64));
    if p.n_stop > 0 {
        if p.stop.is_null() {
            return Err(Failure::invalid("stop is NULL but n_stop > 0"));
        }
        for i in 0..p.n_stop {
            // SAFETY: the caller passes an array of n_stop string pointers.
            let s = unsafe { *p.stop.add(i) };
            // SAFETY: each entry is a NUL-terminated string.
            stop.push(unsafe { str_arg(s, "a stop string") }?.to_string());
        }
    }
    Ok(GenerateParams {
        max_tokens: p.max_tokens as usize,
        sampling: SamplingParams {
            temperature: p.temperature,
            top_k: p.top_k as usize,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: p.repeat_last_n as usize,
            seed: p.seed,
        },
        add_special: p.add_special,
        parse_special: p.parse_special,
        stop,
        // SAFETY: as this function's contract says.
        constraint: unsafe { constraint(p) }?,
    })
}

pub(crate) fn stop_reason(r: StopReason) -> suanpan_stop_reason {
    match r {
        StopReason::EndOfGeneration => suanpan_stop_reason::SUANPAN_STOP_END,
        StopReason::MaxTokens => suanpan_stop_reason::SUANPAN_STOP_MAX_TOKENS,
        StopReason::Callback => suanpan_stop_reason::SUANPAN_STOP_CALLBACK,
        StopReason::StopString => suanpan_stop_reason::SUANPAN_STOP_STRING,
    }
}

pub(crate) fn fill_result(out: &mut suanpan_generate_result, st: &GenerateStats) {
    out.prompt_tokens = st.prompt_tokens as u32;
    out.generated_tokens = st.generated_tokens as u32;
    out.prompt_ms = st.prompt_ms;
    out.generate_ms = st.generate_ms;
    out.stop_reason = stop_reason(st.stop);
}

/// What a failed call reports: the tokens streamed before the error, nothing else.
pub(crate) fn fill_failed_result(out: &mut suanpan_generate_result, generated: usize) {
    *out = suanpan_generate_result {
        generated_tokens: generated as u32,
        stop_reason: suanpan_stop_reason::SUANPAN_STOP_ERROR,
        ..suanpan_generate_result_default()
    };
}

pub(crate) fn fill_usage(out: &mut suanpan_usage, u: &Usage) {
    out.tokens = u.tokens as u32;
    out.n_ctx = u.n_ctx as u32;
    out.kv_bytes = u.kv_bytes as u64;
    out.kv_bytes_used = u.kv_bytes_used as u64;
}

pub(crate) fn fill_estimate(out: &mut suanpan_memory_estimate, e: &MemoryEstimate) {
    out.file_bytes = e.file_bytes;
    out.weights_bytes = e.weights_bytes;
    out.n_ctx = e.n_ctx as u32;
    out.kv_bytes = e.kv_bytes;
    out.kv_bytes_per_token = e.kv_bytes_per_token;
    out.scratch_bytes = e.scratch_bytes;
    out.total_bytes = e.total_bytes();
}
