//! Weight formats and quantizers.

pub mod ggml;
