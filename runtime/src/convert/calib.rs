//! Calibration for GPTQ ([`crate::lut::gptq`]): run the source model over some text and
//! keep, for every block matrix's input, the second moments `H = Σ xxᵀ`.
//!
//! One [`Hessian`] per layer and input site ([`TapSite`]): Q, K and V share theirs, as do
//! gate and up. The forward pass shows the inputs through its [`Tap`]; the model runs on the
//! CPU at the source's own precision, in chunks of `ctx` tokens each starting from an empty
//! cache (as `perplexity` does).
//!
//! Memory: `4·K²` bytes per site (SmolLM2-135M: 30 layers × (3·576² + 1536²) floats =
//! 400 MB), refused above [`MAX_BYTES`]. Each site's factor replaces its Hessian once a
//! matrix needs it.
//!
//! Calibrate on text other than what you evaluate on: `bench/lut_quality.sh` calibrates on
//! one license text and measures perplexity on another.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::kv::KvParams;
use crate::lut::gptq::{Hessian, InvFactor};
use crate::model::graph::{Logits, TapSite};
use crate::model::{BackendKind, Model, ModelParams};
use crate::session::{Session, SessionParams};

/// Most memory the Hessians may take (bytes).
pub const MAX_BYTES: usize = 6 << 30;

/// Calibration settings.
#[derive(Clone, Debug)]
pub struct CalibParams {
    /// Most tokens of the text to use (default 4096).
    pub tokens: usize,
    /// Tokens per chunk (default 512).
    pub ctx: usize,
    /// Threads (0 = one per core).
    pub threads: usize,
}

impl Default for CalibParams {
    fn default() -> Self {
        CalibParams {
            tokens: 4096,
            ctx: 512,
            threads: 0,
        }
    }
}

struct Site {
    h: Mutex<Option<Hessian>>,
    f: OnceLock<std::result::Result<Arc<InvFactor>, String>>,
}

/// Input statistics of every block matrix of one model.
pub struct Calibration {
    sites: HashMap<(usize, TapSite), Site>,
    tokens: usize,
}

impl std::fmt::Debug for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibration")
            .field("sites", &self.sites.len())
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// `blk.N.MATRIX.weight` → (N, MATRIX).
fn block_matrix(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?.strip_suffix(".weight")?;
    let (layer, matrix) = rest.split_once('.')?;
    Some((layer.parse().ok()?, matrix))
}

impl Calibration {
    /// Run the model at `model_path` (a GGUF suanpan loads) over `text`; `progress(done,
    /// total)` in tokens after each chunk.
    pub fn collect(
        model_path: &Path,
        text: &str,
        p: &CalibParams,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Calibration> {
        if p.ctx < 8 {
            return Err(Error::invalid("calibration chunks need at least 8 tokens"));
        }
        let model = Arc::new(Model::load(
            model_path,
            &ModelParams {
                n_threads: p.threads,
                backend: BackendKind::Cpu,
                progress: None,
                keep_df11: false,
            },
        )?);
        let c = model.config();
        let per_layer = 3 * c.n_embd * c.n_embd + c.q_dim() * c.q_dim() + c.n_ff * c.n_ff;
        let bytes = 4 * per_layer * c.n_layer;
        if bytes > MAX_BYTES {
            return Err(Error::invalid(format!(
                "calibration would hold {:.1} GB of input statistics (limit {:.1} GB); \
                 convert without --calib",
                bytes as f64 / 1e9,
                MAX_BYTES as f64 / 1e9
            )));
        }
        let tok = model.tokenizer();
        let mut tokens = tok.encode(text, true, false)?;
        let ctx = p.ctx;
        tokens.truncate(p.tokens.max(ctx) / ctx * ctx);
        let n_chunks = tokens.len() / ctx;
        if n_chunks == 0 {
            return Err(Error::invalid(format!(
                "calibration text has {} tokens, fewer than one chunk of {ctx}",
                tokens.len()
            )));
        }
        let mut session = Session::new(
            model.clone(),
            &SessionParams {
                n_ctx: ctx,
                n_batch: ctx,
                all_logits: false,
                kv: KvParams::default(),
                memory_budget: 0,
            },
        )?;
        let acc: Arc<Mutex<HashMap<(usize, TapSite), Hessian>>> = Arc::default();
        let threads = model.n_threads();
        let sink = acc.clone();
        session.set_tap(Some(Box::new(move |layer, site, x, n| {
            let mut m = sink.lock().unwrap_or_else(|e| e.into_inner());
            let k = x.len() / n.max(1);
            m.entry((layer, site))
                .or_insert_with(|| Hessian::new(k))
                .add(x, n, threads);
        })));
        let bos = if tok.add_bos() { tok.bos() } else { None };
        let mut chunk = vec![0u32; ctx];
        for i in 0..n_chunks {
            chunk.copy_from_slice(&tokens[i * ctx..(i + 1) * ctx]);
            if let Some(b) = bos {
                chunk[0] = b;
            }
            session.reset();
            session.eval(&chunk, Logits::None)?;
            progress((i + 1) * ctx, n_chunks * ctx);
        }
        session.set_tap(None);
        drop(session);
        let map = std::mem::take(&mut *acc.lock().unwrap_or_else(|e| e.into_inner()));
        let sites = map
            .into_iter()
            .map(|(key, h)| {
                let s = Site {
                    h: Mutex::new(Some(h)),
                    f: OnceLock::new(),
                };
                (key, s)
            })
            .collect();
        Ok(Calibration {
            sites,
            tokens: n_chunks * ctx,
        })
    }

    /// Tokens the statistics were collected over.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Whether tensor `name` (`blk.N.attn_q.weight`, ...) has calibration data.
    pub fn covers(&self, name: &str) -> bool {
        self.key(name).is_some_and(|k| self.sites.contains_key(&k))
    }

    fn key(&self, name: &str) -> Option<(usize, TapSite)> {
        let (layer, matrix) = block_matrix(name)?;
        Some((layer, TapSite::of_matrix(matrix)?))
    }

    /// The GPTQ factor for tensor `name`'s inputs (computed once per site, then shared).
    pub fn factor(&self, name: &str) -> Result<Arc<InvFactor>> {
        let site = self
            .key(name)
            .and_then(|k| self.sites.get(&k))
            .ok_or_else(|| Error::invalid(format!("no calibration data for {name}")))?;
        let r = site.f.get_or_init(|| {
            let h = site.h.lock().unwrap_or_else(|e| e.into_inner()).take();
            match h {
                Some(h) => h.factor().map(Arc::new).map_err(|e| e.to_string()),
                None => Err("calibration statistics already consumed".into()),
            }
        });
        r.clone()
            .map_err(|e| Error::invalid(format!("{name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_matrix_names() {
        assert_eq!(
            block_matrix("blk.12.ffn_down.weight"),
            Some((12, "ffn_down"))
        );
        assert_eq!(block_matrix("blk.x.ffn_down.weight"), None);
        assert_eq!(block_matrix("token_embd.weight"), None);
        assert_eq!(block_matrix("blk.3.attn_norm.bias"), None);
    }
}
