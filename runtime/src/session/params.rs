//! What a session and a generation are asked to do, and what they report.

use super::constrain::Constraint;
use crate::kv::KvParams;
use crate::sample::SamplingParams;
#[cfg(doc)]
use crate::{error::Error, model::Model};

/// Shape of a session.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Context length in tokens (0 = the model's trained length, capped at 4096; with a KV
    /// budget, as many tokens as the budget buys up to the trained length).
    pub n_ctx: usize,
    /// Most tokens per forward pass while ingesting a prompt.
    pub n_batch: usize,
    /// Keep logits for every token of a batch (perplexity, scoring). Costs n_batch × vocab floats.
    pub all_logits: bool,
    /// KV cache mode (f16 or quantized), KV byte budget and overflow policy.
    pub kv: KvParams,
    /// Most bytes the session may allocate for its KV cache and buffers (0 = no limit).
    /// Creating a session that needs more fails with [`Error::OutOfMemory`];
    /// [`Model::estimate_memory`] tells the need beforehand.
    pub memory_budget: usize,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            n_ctx: 0,
            n_batch: 512,
            all_logits: false,
            kv: KvParams::default(),
            memory_budget: 0,
        }
    }
}

/// What one generation does.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Add BOS/EOS around the prompt as the model's metadata says.
    pub add_special: bool,
    /// Let special-token text in the prompt (e.g. `<|im_start|>`) become special tokens.
    pub parse_special: bool,
    /// Stop when the output contains one of these strings. The stop string and anything
    /// after it is not handed to the callback, even when it spans several tokens (text
    /// that could be the start of a stop string is held back until it is known not to be).
    pub stop: Vec<String>,
    /// Output must match this JSON schema, regex or grammar ([`constrain`]).
    pub constraint: Option<Constraint>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            add_special: true,
            parse_special: false,
            stop: Vec::new(),
            constraint: None,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The callback returned `ControlFlow::Break`.
    Callback,
    /// The output reached one of [`GenerateParams::stop`].
    StopString,
}

/// How full a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the context (KV cache plus the pending token).
    pub tokens: usize,
    /// Context capacity in tokens.
    pub n_ctx: usize,
    /// Bytes the KV cache holds (allocated up front for `n_ctx` positions).
    pub kv_bytes: usize,
    /// Bytes of the KV cache filled with the context's keys and values.
    pub kv_bytes_used: usize,
}

/// Counts and timings of one generation.
#[derive(Clone, Debug)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    pub generated_tokens: usize,
    pub generate_ms: f64,
    pub stop: StopReason,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Time spent computing constrained-decoding masks (0 without a constraint). It runs
    /// on a helper thread beside the forward passes, so it is not all added to the time.
    pub mask_ms: f64,
}

impl GenerateStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / (self.prompt_ms / 1e3).max(1e-9)
    }
    /// Decode speed: tokens after the first (whose logits came from the prompt pass).
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / (self.generate_ms / 1e3).max(1e-9)
    }
}
