//! The decoder forward pass: embed → N × block → norm → LM head, written once ([`run`]),
//! generic over the [`Backend`] that executes it.
//!
//! One graph for every supported architecture; they differ by config flags (biases, Q/K
//! norms, post-norms, activation, sliding-window layers, embedding scale), never by copies
//! of this code. It decides what runs; the backend decides how. A batch of tokens (prefill)
//! and a single token (decode) take the same path.

use super::config::ModelConfig;
use super::weights::Weights;
use crate::backend::cpu::exec::CpuBackend;
pub use crate::backend::cpu::exec::Scratch;
use crate::backend::cpu::Pool;
pub use crate::backend::Logits;
use crate::backend::{Act, Backend, Mat, Norm};
use crate::error::Result;
use crate::format::GgufFile;
use crate::kv::KvCache;

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

/// Run `tokens` through the model on backend `b`: embed → N × block → norm → LM head.
///
/// This is the only copy of the decoder; architectures differ by `c`'s flags. Each block:
/// ```text
/// Xn = norm(X)           Q,K,V = Wq,Wk,Wv · Xn     [per-head Q/K norms]   RoPE(Q, K)
/// Attn = attention(Q over the KV store + K,V)      Tmp = Wo · Attn   [post-norm]   X += Tmp
/// Xn = norm(X)           Gate,Up = Wg,Wu · Xn      Gate = act(Gate) ⊙ Up
/// Tmp = Wd · Gate        [post-norm]               X += Tmp
/// ```
/// The backend has made room in its KV store (overflow policy) before.
pub fn run<B: Backend>(c: &ModelConfig, b: &mut B, tokens: &[u32], logits: Logits) -> Result<()> {
    b.begin(tokens, logits)?;
    b.embed(tokens, c.embd_scale)?;
    for li in 0..c.n_layer {
        let swa = c.is_swa(li);
        b.rms_norm(Norm::Attn(li), Act::X, Act::Xn)?;
        b.observe(li, TapSite::AttnIn, Act::Xn);
        b.project(
            Act::Xn,
            &[
                (Mat::Q(li), Act::Q),
                (Mat::K(li), Act::K),
                (Mat::V(li), Act::V),
            ],
        )?;
        if c.qk_norm() {
            b.head_norm(Norm::QHead(li), Act::Q)?;
            b.head_norm(Norm::KHead(li), Act::K)?;
        }
        b.rope(Act::Q, swa)?;
        b.rope(Act::K, swa)?;
        b.attend(li, if swa { c.sliding_window } else { 0 })?;
        b.observe(li, TapSite::AttnOut, Act::Attn);
        b.project(Act::Attn, &[(Mat::O(li), Act::Tmp)])?;
        if c.post_norms {
            b.rms_norm(Norm::PostAttn(li), Act::Tmp, Act::Tmp)?;
        }
        b.add(Act::X, Act::Tmp)?;

        b.rms_norm(Norm::Ffn(li), Act::X, Act::Xn)?;
        b.observe(li, TapSite::FfnIn, Act::Xn);
        b.project(
            Act::Xn,
            &[(Mat::Gate(li), Act::Gate), (Mat::Up(li), Act::Up)],
        )?;
        b.glu(c.act)?;
        b.observe(li, TapSite::FfnDown, Act::Gate);
        b.project(Act::Gate, &[(Mat::Down(li), Act::Tmp)])?;
        if c.post_norms {
            b.rms_norm(Norm::PostFfn(li), Act::Tmp, Act::Tmp)?;
        }
        b.add(Act::X, Act::Tmp)?;
    }
    match logits {
        Logits::None => {}
        Logits::Last => b.logits(tokens.len() - 1)?,
        Logits::All => b.logits(0)?,
    }
    b.end()
}

/// Run `tokens` (at RoPE positions `kv.next_pos()..`) through the model on the CPU, store
/// their keys/values in `kv`, and return the requested logits (`n_vocab` per token). The
/// caller applies the overflow policy first ([`KvCache::make_room`]).
#[allow(clippy::too_many_arguments)]
pub fn forward<'s>(
    c: &ModelConfig,
    w: &Weights,
    file: &GgufFile,
    pool: &Pool,
    tokens: &[u32],
    kv: &mut KvCache,
    s: &'s mut Scratch,
    logits: Logits,
) -> Result<&'s [f32]> {
    let mut b = CpuBackend::new(c, w, file, pool, kv, s);
    let r = run(c, &mut b, tokens, logits);
    if r.is_err() {
        kv.abort();
    }
    r?;
    let m = match logits {
        Logits::None => 0,
        Logits::Last => 1,
        Logits::All => tokens.len(),
    };
    Ok(s.last_logits(m * c.n_vocab))
}
