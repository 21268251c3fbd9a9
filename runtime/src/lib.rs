//! suanpan: an on-device LLM inference runtime whose low-bit kernels compute by table lookup.
//!
//! See `DESIGN.md` in the shared folder for the architecture: one model graph
//! ([`model::graph`]) written against the [`backend::Backend`] trait, backends that run its
//! ops (CPU, GPU), a KV cache behind the [`kv::KvStore`] trait, sampling ([`sample`]) and the
//! session API that ties them together.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use std::sync::Arc;
//! use suanpan::{GenerateParams, Model, ModelParams, SessionParams};
//!
//! # fn main() -> suanpan::Result<()> {
//! let model = Arc::new(Model::load("SmolLM2-135M-Instruct.Q4_1.gguf", &ModelParams::default())?);
//! let mut session = model.session(&SessionParams::default())?;
//! let stats = session.generate("Once upon a time", &GenerateParams::default(), |piece| {
//!     print!("{piece}");
//!     ControlFlow::Continue(())
//! })?;
//! eprintln!("{:.1} tok/s", stats.decode_tps());
//! # Ok(())
//! # }
//! ```
//!
//! The API is [`Model`], [`Session`] and their parameters, [`Error`], [`convert`], the
//! formats ([`format`], [`quant`]'s ggml blocks, [`lut`]'s bit planes, [`dfloat`]'s
//! DFloat11/df12), [`tokenizer`], [`chat`], [`kv`]'s parameters and [`perplexity`]. Every
//! CPU kernel lives in `backend::cpu`, public for the tests and benchmarks only and hidden
//! from the docs: not a stable API.

pub mod alloc_guard;
pub mod cancel;
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
#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Error, Result};
pub use model::{BackendKind, Model, ModelParams};
pub use sample::SamplingParams;
pub use session::constrain::Constraint;
pub use session::MemoryEstimate;
pub use session::{
    CancelToken, GenerateParams, GenerateStats, Session, SessionParams, StopReason, Usage,
};
pub mod chat;
pub mod convert;
pub mod dfloat;
pub mod tokenizer;
