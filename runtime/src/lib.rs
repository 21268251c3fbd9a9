//! suanpan: an on-device LLM inference runtime whose low-bit kernels compute by table lookup.
//!
//! See `DESIGN.md` in the shared folder for the architecture: one model graph ([`model`]),
//! backends that run its ops ([`backend`]), a KV cache ([`kv`]), sampling ([`sample`]) and
//! the session API that ties them together.

pub mod alloc_guard;
pub mod clock;
pub mod error;
pub mod format;

pub mod backend;
pub mod install;
pub mod kv;
pub mod lut;
pub mod model;
pub mod perplexity;
pub mod quant;
pub mod sample;
pub mod session;

pub use error::{Error, Result};
pub use model::{BackendKind, Model, ModelParams};
pub use sample::SamplingParams;
pub use session::constrain::Constraint;
pub use session::{
    CancelToken, GenerateParams, GenerateStats, Session, SessionParams, StopReason, Usage,
};
pub mod chat;
pub mod convert;
pub mod dfloat;
pub mod tokenizer;
