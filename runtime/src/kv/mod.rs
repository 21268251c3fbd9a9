//! The KV cache: keys and values of every past position, per layer.
//!
//! Only the f16 cache exists so far; quantized caches (KIVI-style) will implement the same
//! shape of API (`store`, per-layer views for attention, `truncate`).

pub mod f16;

pub use self::f16::F16Cache;
