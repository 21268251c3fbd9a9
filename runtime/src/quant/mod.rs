//! Weight formats and quantizers.

pub mod ggml;
pub mod iq4;
pub mod kquant;
pub mod q5;
pub mod ternary;
