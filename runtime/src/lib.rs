//! suanpan: an on-device LLM inference runtime whose low-bit kernels compute by table lookup.
//!
//! See `DESIGN.md` in the shared folder for the architecture: one model graph ([`model`]),
//! backends that run its ops ([`backend`]), a KV cache ([`kv`]), sampling ([`sample`]) and
//! the session API that ties them together.

pub mod error;
pub mod format;

pub use error::{Error, Result};
pub mod backend;
pub mod quant;
