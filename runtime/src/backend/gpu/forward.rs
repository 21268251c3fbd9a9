//! The forward pass on the GPU: the one graph ([`crate::model::graph::run`]) over a
//! [`GpuBackend`]. One forward is one submission; only the logits come back to the host,
//! waited for ([`forward`]) or awaited ([`forward_submit`], the browser's way).

pub use super::exec::GpuBackend;
pub use super::model::{GpuLinear, GpuModel, GpuWeights, LutChooser};
use super::readback::Readback;
pub use super::state::GpuState;
use crate::backend::Logits;
use crate::error::{Error, Result};
use crate::format::GgufFile;
use crate::model::graph::run;

/// Run `tokens` at positions `st.len()..` through the model on the GPU, store their keys
/// and values, and return the requested logits (`n_vocab` per token). `file` is the file
/// the model was uploaded from (a DFloat11 or LUT embedding is read from it on the host).
pub fn forward<'s>(
    m: &GpuModel,
    st: &'s mut GpuState,
    file: &GgufFile,
    tokens: &[u32],
    logits: Logits,
) -> Result<&'s [f32]> {
    let r = run(&m.cfg, &mut GpuBackend::new(m, st, file), tokens, logits);
    if r.is_err() {
        st.abort_batch();
    }
    r?;
    let rows = match logits {
        Logits::None => 0,
        Logits::Last => 1,
        Logits::All => tokens.len(),
    };
    Ok(st.last_logits(rows * m.cfg.n_vocab))
}

/// [`forward`] without waiting: record and submit the pass over `tokens`, and return the
/// read-back of the last token's logits (`n_vocab` values) to await. Nothing blocks, so
/// this is what runs in the browser, where the mapping completes only once control goes
/// back to the event loop. The tokens are in the KV cache when it returns.
pub fn forward_submit(
    m: &GpuModel,
    st: &mut GpuState,
    file: &GgufFile,
    tokens: &[u32],
) -> Result<Readback> {
    let (r, readback) = {
        let mut b = GpuBackend::new(m, st, file);
        b.defer_logits();
        let r = run(&m.cfg, &mut b, tokens, Logits::Last);
        (r, b.take_readback())
    };
    if r.is_err() {
        st.abort_batch();
    }
    r?;
    readback.ok_or_else(|| Error::Internal("the GPU pass read back no logits".into()))
}
