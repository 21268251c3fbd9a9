//! One session's GPU state ([`GpuState`]): its KV cache, the activation buffers of a
//! batch, the recorded-dispatch cache and the logits read back.

use super::buffer::GpuBuffer;
use super::kv::GpuKvCache;
use super::kv_quant::GpuQuantKv;
use super::lut::LutScratch;
use super::model::{GpuLayer, GpuModel, GpuWeights};
use super::record::Frame;
use crate::error::Result;
use crate::kv::{KvMode, KvParams, KvStore};
use crate::model::config::ModelConfig;
use crate::model::weights::RowScratch;

/// One session's GPU state: KV cache, scratch, recorded dispatches, logits.
pub struct GpuState {
    pub(super) cap: usize,
    pub(super) kv: GpuKvCache,
    pub(super) acts: GpuActs,
    pub(super) host: HostSide,
    pub(super) frame: Frame,
}

/// Device buffers of one batch.
pub(super) struct GpuActs {
    pub(super) ids: GpuBuffer,
    /// RoPE (cos, sin) per token and frequency; `cs_swa` at the sliding layers' base.
    pub(super) cs: GpuBuffer,
    pub(super) cs_swa: GpuBuffer,
    pub(super) x: GpuBuffer,
    pub(super) xn: GpuBuffer,
    pub(super) q: GpuBuffer,
    pub(super) k: GpuBuffer,
    pub(super) v: GpuBuffer,
    pub(super) attn: GpuBuffer,
    pub(super) tmp: GpuBuffer,
    pub(super) gate: GpuBuffer,
    pub(super) up: GpuBuffer,
    /// Q8 codes and scales of a projection's input (ggml 8-bit matrices).
    pub(super) xq: GpuBuffer,
    pub(super) xd: GpuBuffer,
    pub(super) lut: Option<LutScratch>,
    /// BF16 scratch for the DFloat11 matrix being applied (one, reused by every one).
    pub(super) df11: Option<GpuBuffer>,
    pub(super) logits: GpuBuffer,
}

/// Host memory of a session on the GPU.
pub(super) struct HostSide {
    /// Embedding rows (models whose embedding is read on the host).
    pub(super) embd_rows: Vec<f32>,
    pub(super) embd_scratch: RowScratch,
    /// RoPE angles of a batch, flattened (cos, sin).
    pub(super) cs: Vec<f32>,
    pub(super) logits: Vec<f32>,
}

impl GpuState {
    /// Buffers for batches of up to `cap` tokens in a context of `n_ctx` with an f16 KV
    /// cache; `all_logits` keeps every token's logits; `profile` collects kernel timestamps.
    pub fn new(
        m: &GpuModel,
        cap: usize,
        n_ctx: usize,
        all_logits: bool,
        profile: bool,
    ) -> Result<GpuState> {
        Self::with_kv(m, cap, n_ctx, all_logits, profile, &KvParams::default())
    }

    /// [`Self::new`] with the KV cache `kv` describes (f16 or q8/q4/q2 pages, budget,
    /// overflow policy, rotation). `n_ctx` and `cap` are requests: the context and batch
    /// are what [`crate::kv::KvCache::plan`] makes of them, as on the CPU.
    pub fn with_kv(
        m: &GpuModel,
        cap: usize,
        n_ctx: usize,
        all_logits: bool,
        profile: bool,
        kv: &KvParams,
    ) -> Result<GpuState> {
        let d = &*m.dev;
        let c = &m.cfg;
        let f = |what: &str, n: usize| d.buffer(what, 4 * n as u64);
        let widest = c.n_embd.max(c.n_ff).max(c.q_dim());
        m.supports(kv)?;
        let kv_cache = GpuKvCache::new(&m.dev, c, m.rope_freqs.as_deref(), kv, n_ctx, cap)?;
        let cap = kv_cache.n_batch();
        let has_lut = m
            .layers
            .iter()
            .flat_map(GpuLayer::linears)
            .chain([&m.output])
            .any(|x| matches!(x.w, GpuWeights::Lut(_)));
        let n_logits = if all_logits { cap } else { 1 } * c.n_vocab;
        Ok(GpuState {
            cap,
            kv: kv_cache,
            acts: GpuActs {
                ids: f("token ids", cap)?,
                cs: f("rope cos/sin", cap * c.n_rot)?,
                cs_swa: f("rope cos/sin (sliding layers)", cap * c.n_rot)?,
                x: f("x", cap * c.n_embd)?,
                xn: f("xn", cap * c.n_embd)?,
                q: f("q", cap * c.q_dim())?,
                k: f("k", cap * c.kv_dim())?,
                v: f("v", cap * c.kv_dim())?,
                attn: f("attn", cap * c.q_dim())?,
                tmp: f("tmp", cap * c.n_embd)?,
                gate: f("gate", cap * c.n_ff)?,
                up: f("up", cap * c.n_ff)?,
                xq: d.buffer("act codes", (cap * widest) as u64)?,
                xd: f("act scales", cap * widest / 16)?,
                lut: if has_lut {
                    Some(LutScratch::new(d, widest, cap)?)
                } else {
                    None
                },
                df11: if m.df11_scratch > 0 {
                    Some(d.buffer("DFloat11 decode scratch", 2 * m.df11_scratch as u64)?)
                } else {
                    None
                },
                logits: f("logits", n_logits)?,
            },
            host: HostSide {
                embd_rows: Vec::new(),
                embd_scratch: RowScratch::default(),
                cs: Vec::new(),
                logits: vec![0.0; n_logits],
            },
            // At most 32 dispatches per layer and 16 outside, plus 2 per DFloat11 decode.
            frame: Frame::new(
                d,
                32 * c.n_layer + 16 + 2 * m.n_df11 + m.n_split_extra,
                profile,
            )?,
        })
    }

    /// Drop a batch whose pass failed (nothing of it becomes visible).
    pub(super) fn abort_batch(&mut self) {
        self.kv.abort();
    }

    /// The KV cache (policy, snapshots).
    pub fn kv(&self) -> &GpuKvCache {
        &self.kv
    }

    pub fn kv_mut(&mut self) -> &mut GpuKvCache {
        &mut self.kv
    }

    /// Most tokens per forward pass.
    pub fn n_batch(&self) -> usize {
        self.cap
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.kv.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep the first `n` positions (`n >= len` keeps everything; `0` empties any cache).
    /// Quantized pages and slid windows cannot be cut: anything else is an error.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            self.kv.reset();
            return Ok(());
        }
        self.kv.truncate(n)
    }

    /// The KV cache mode.
    pub fn kv_mode(&self) -> KvMode {
        self.kv.params().mode
    }

    /// The quantized KV cache, when the session has one.
    pub fn quant_kv(&self) -> Option<&GpuQuantKv> {
        self.kv.quant()
    }

    /// Marginal KV bytes per token of context (all layers).
    pub fn kv_bytes_per_token(&self, _c: &ModelConfig) -> f64 {
        self.kv.bytes_per_token()
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.capacity()
    }

    /// Bytes of the KV cache.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.device_bytes()
    }

    /// The logits of the last forward.
    pub fn last_logits(&self, n: usize) -> &[f32] {
        &self.host.logits[..n.min(self.host.logits.len())]
    }

    /// Kernel timings collected so far (when created with `profile`).
    pub fn timings(&self) -> Vec<(&'static str, u64, f64)> {
        self.frame.timings()
    }

    /// Whether kernel timestamps are collected (profile asked and the adapter has them).
    pub fn profiling(&self) -> bool {
        self.frame.profiling()
    }
}
