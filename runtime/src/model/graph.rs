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
use crate::backend::profile::{OpProfile, Profiled};
use crate::backend::{Act, Backend, Mat, Norm};
pub use crate::backend::{Logits, Tap, TapSite};
use crate::error::Result;
use crate::format::GgufFile;
use crate::kv::KvCache;

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
/// caller applies the overflow policy first ([`KvCache::make_room`]). With `profile`, every
/// op's time is added to it.
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
    profile: Option<&mut OpProfile>,
) -> Result<&'s [f32]> {
    let mut b = CpuBackend::new(c, w, file, pool, kv, s);
    let r = match profile {
        Some(p) => run(c, &mut Profiled::new(b, p), tokens, logits),
        None => run(c, &mut b, tokens, logits),
    };
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
