//! Backends run the graph's ops. The graph ([`crate::model::graph::forward`]) is written
//! once, against the [`Backend`] trait; a backend decides how each op runs:
//!
//! - [`cpu`]: executes each call at once, on the session's scratch buffers and thread pool
//!   ([`cpu::exec::CpuBackend`]).
//! - [`gpu`] (feature `gpu`): records each call as WGSL dispatches into one submission,
//!   submitted when the graph ends ([`gpu::exec::GpuBackend`]); every kernel is tested
//!   against the CPU one.
//!
//! Activations and weights are named, not passed as buffers: the graph says "normalize
//! `X` with layer 3's attention norm into `Xn`", and each backend maps the names onto its
//! own storage (slices of a CPU scratch, device buffers). That keeps the trait free of
//! backend types and lets the borrow checker see that a CPU op reads one scratch buffer
//! while it writes another.
//!
//! Kernels live under their backend (`cpu`: ggml block dots, BF16/K-quant GEMMs, lookup
//! tables, DFloat11/df12 decoders, quantized-KV attention; [`gpu`]: WGSL), over the
//! formats they read ([`crate::format`], [`crate::quant`], [`crate::lut`], [`crate::dfloat`],
//! [`crate::kv::quant`]), which import no kernel. `runtime/tests/layering.rs` checks that
//! layering on the sources.
//!
//! What a backend cannot do is said once, in [`Unsupported`] errors from the place that
//! builds it (model upload, session creation), never in checks spread over the session.

/// The weight a [`Norm`] names in a backend's weights: `$layers` a slice of layer structs
/// with the fields `attn_norm`, `ffn_norm` (plain) and `q_norm`, `k_norm`,
/// `post_attn_norm`, `post_ffn_norm` (`Option`s), `$output` the final norm. Every
/// backend's layer struct uses these names, so the mapping is written once.
macro_rules! select_norm {
    ($layers:expr, $output:expr, $w:expr) => {{
        let w: $crate::backend::Norm = $w;
        let layers = $layers;
        let layer = |l: usize| {
            layers
                .get(l)
                .ok_or_else(|| $crate::error::Error::Internal(format!("norm of layer {l}")))
        };
        let v = match w {
            $crate::backend::Norm::Attn(l) => Some(&layer(l)?.attn_norm),
            $crate::backend::Norm::Ffn(l) => Some(&layer(l)?.ffn_norm),
            $crate::backend::Norm::QHead(l) => layer(l)?.q_norm.as_ref(),
            $crate::backend::Norm::KHead(l) => layer(l)?.k_norm.as_ref(),
            $crate::backend::Norm::PostAttn(l) => layer(l)?.post_attn_norm.as_ref(),
            $crate::backend::Norm::PostFfn(l) => layer(l)?.post_ffn_norm.as_ref(),
            $crate::backend::Norm::Output => Some($output),
        };
        v.ok_or_else(|| $crate::error::Error::Internal(format!("the model has no {w:?} norm")))
    }};
}

/// The matrix a [`Mat`] names: `$layers` a slice of layer structs with the fields `wq`,
/// `wk`, `wv`, `wo`, `w_gate`, `w_up`, `w_down`; `$output` the LM head.
macro_rules! select_mat {
    ($layers:expr, $output:expr, $m:expr) => {{
        let layers = $layers;
        let layer = |l: usize| {
            layers
                .get(l)
                .ok_or_else(|| $crate::error::Error::Internal(format!("matrix of layer {l}")))
        };
        match $m {
            $crate::backend::Mat::Q(l) => &layer(l)?.wq,
            $crate::backend::Mat::K(l) => &layer(l)?.wk,
            $crate::backend::Mat::V(l) => &layer(l)?.wv,
            $crate::backend::Mat::O(l) => &layer(l)?.wo,
            $crate::backend::Mat::Gate(l) => &layer(l)?.w_gate,
            $crate::backend::Mat::Up(l) => &layer(l)?.w_up,
            $crate::backend::Mat::Down(l) => &layer(l)?.w_down,
            $crate::backend::Mat::Output => $output,
        }
    }};
}

/// The CPU backend: its executor and every CPU kernel. Public for the tests, benchmarks and
/// the CLI's `info`; not a stable API.
#[doc(hidden)]
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod profile;

use crate::error::Result;
use crate::model::config::Activation;

/// The activation buffers of one forward pass. Each holds one row per token of the batch
/// (`n × width`); widths: `X`, `Xn`, `Tmp` = `n_embd`; `Q`, `Attn` = `q_dim`; `K`, `V` =
/// `kv_dim`; `Gate`, `Up` = `n_ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    /// The residual stream.
    X,
    /// A normalized copy of the residual stream (input of the projections).
    Xn,
    Q,
    K,
    V,
    /// Attention output.
    Attn,
    /// A projection's output before it joins the residual stream.
    Tmp,
    Gate,
    Up,
}

/// A projection of the model: one of layer `l`'s matrices, or the LM head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mat {
    Q(usize),
    K(usize),
    V(usize),
    O(usize),
    Gate(usize),
    Up(usize),
    Down(usize),
    /// The LM head (the token embedding when tied).
    Output,
}

/// An RMSNorm weight vector of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Norm {
    Attn(usize),
    Ffn(usize),
    /// Per-head query norm (Qwen3, Gemma 3).
    QHead(usize),
    /// Per-head key norm.
    KHead(usize),
    /// Norm of the attention output before the residual add (Gemma 2/3).
    PostAttn(usize),
    /// Norm of the FFN output before the residual add.
    PostFfn(usize),
    /// The final norm before the LM head.
    Output,
}

/// Which logits a forward pass produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, scoring).
    All,
    /// None (prompt chunks before the last one).
    None,
}

/// Where a forward pass shows a block matrix's input to a [`Tap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TapSite {
    /// The normed input of `attn_q`, `attn_k`, `attn_v` (width `n_embd`).
    AttnIn,
    /// The attention output, input of `attn_output` (width `q_dim`).
    AttnOut,
    /// The normed input of `ffn_gate`, `ffn_up` (width `n_embd`).
    FfnIn,
    /// The SwiGLU output, input of `ffn_down` (width `n_ff`).
    FfnDown,
}

impl TapSite {
    /// The site whose values are the input of block matrix `matrix` (`attn_q`, ...).
    pub fn of_matrix(matrix: &str) -> Option<TapSite> {
        Some(match matrix {
            "attn_q" | "attn_k" | "attn_v" => TapSite::AttnIn,
            "attn_output" => TapSite::AttnOut,
            "ffn_gate" | "ffn_up" => TapSite::FfnIn,
            "ffn_down" => TapSite::FfnDown,
            _ => return None,
        })
    }
}

/// Observer of the block matrices' inputs: `(layer, site, rows, n_rows)`, `rows` being
/// `n_rows` inputs back to back. Calibration (`convert::calib`) uses it; inference has none.
pub type Tap = Box<dyn FnMut(usize, TapSite, &[f32], usize) + Send>;

/// The ops of a decoder forward pass over a batch of `n` tokens (fixed by [`Backend::begin`]).
///
/// Every op works on all `n` rows of its buffers. A backend may run an op at once (CPU) or
/// record it (GPU); results are visible after [`Backend::end`].
pub trait Backend {
    /// Start a batch: check `tokens` against the vocabulary, the batch size and the context
    /// (the KV store has made room already), compute the RoPE angles of their positions and
    /// plan where their keys and values go.
    fn begin(&mut self, tokens: &[u32], logits: Logits) -> Result<()>;
    /// `X[t] = scale · embedding(tokens[t])`.
    fn embed(&mut self, tokens: &[u32], scale: f32) -> Result<()>;
    /// `dst[t] = rms_norm(src[t]) ⊙ w` (`src == dst` normalizes in place).
    fn rms_norm(&mut self, w: Norm, src: Act, dst: Act) -> Result<()>;
    /// RMSNorm of every `head_dim`-wide head of `buf`, in place.
    fn head_norm(&mut self, w: Norm, buf: Act) -> Result<()>;
    /// `out[t] = W · x[t] (+ bias)` for every `(W, out)`, all reading the same input (Q/K/V,
    /// gate/up), so a backend can share the input's conversion and one pass over threads.
    fn project(&mut self, x: Act, jobs: &[(Mat, Act)]) -> Result<()>;
    /// Rotary embedding of every head of `buf` (`Q` or `K`) at the batch's positions, with
    /// the sliding layers' base when `sliding`.
    fn rope(&mut self, buf: Act, sliding: bool) -> Result<()>;
    /// Store `K`, `V` (after RoPE) in layer `layer` of the KV store and attend `Q` over it
    /// (causal, the batch's own keys included) into `Attn`. `window` > 0 limits each query
    /// to its last `window` keys (sliding-window layers).
    fn attend(&mut self, layer: usize, window: usize) -> Result<()>;
    /// `Gate = act(Gate) ⊙ Up`.
    fn glu(&mut self, act: Activation) -> Result<()>;
    /// `dst += src`.
    fn add(&mut self, dst: Act, src: Act) -> Result<()>;
    /// Show `src` (the input of layer `layer`'s matrices at `site`) to an observer
    /// (calibration). Backends without observers do nothing.
    fn observe(&mut self, _layer: usize, _site: TapSite, _src: Act) {}
    /// Logits of rows `first..n`: the final norm of `X` and the LM head.
    fn logits(&mut self, first: usize) -> Result<()>;
    /// Finish the batch: its keys and values become part of the context, results visible.
    fn end(&mut self) -> Result<()>;

    /// Overwrite the `n` rows of `a` (after [`Backend::begin`]; tests and debugging: the
    /// backend-ops test feeds every backend the same inputs this way).
    fn load(&mut self, a: Act, rows: &[f32]) -> Result<()>;
    /// The `n` rows of `a`, with every op recorded so far applied.
    fn fetch(&mut self, a: Act) -> Result<Vec<f32>>;
    /// The first `rows` rows of logits of [`Backend::logits`], with every op applied.
    fn fetch_logits(&mut self, rows: usize) -> Result<Vec<f32>>;
}
