//! The forward pass on the GPU: the one graph ([`crate::model::graph::run`]) over a
//! [`GpuBackend`]. One forward is one submission; only the logits come back to the host.

pub use super::exec::GpuBackend;
pub use super::model::{GpuLinear, GpuModel, GpuWeights, LutChooser};
pub use super::state::GpuState;
use crate::backend::Logits;
use crate::error::Result;
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
