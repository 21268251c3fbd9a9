//! The one error type of the runtime. Every fallible public function returns
//! [`Result`]; bindings map each variant to a status code.

use std::path::PathBuf;

/// Everything that can go wrong in suanpan, grouped the way callers react to it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed (missing, unreadable, mmap refused).
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model file is malformed, truncated, hostile or uses something we do not support.
    #[error("bad model file: {0}")]
    BadModel(String),
    /// A caller passed an argument that cannot be valid (wrong shape, empty prompt, bad option).
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    /// The tokenizer could not be built or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The context (KV cache) is full and the overflow policy is to refuse.
    #[error("context full: {0}")]
    ContextFull(String),
    /// A memory budget cannot be met.
    #[error("out of memory budget: {0}")]
    OutOfMemory(String),
    /// Generation or loading was cancelled through a cancel token.
    #[error("cancelled")]
    Cancelled,
    /// The GPU backend failed: no adapter, a limit the adapter cannot meet, a shader or
    /// validation error, or a lost device. The session that reports it can fall back to the CPU.
    #[error("GPU backend: {0}")]
    Backend(String),
    /// Installing the default model failed.
    #[error("model install: {0}")]
    Install(String),
    /// A bug: an invariant did not hold. Reported, never a panic across an ABI.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Build an [`Error::BadModel`] from anything printable.
    pub fn bad_model(msg: impl Into<String>) -> Self {
        Error::BadModel(msg.into())
    }
    /// Build an [`Error::InvalidArg`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArg(msg.into())
    }
    /// Wrap an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
