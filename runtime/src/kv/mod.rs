//! The KV cache: keys and values of every past token, per layer, in f16 or quantized pages,
//! under a memory budget and an overflow policy.
//!
//! [`KvCache`] is what a session owns and the graph drives, one batch at a time:
//! ```text
//! make_room(n)    policy: refuse (ContextFull) or slide the window
//! begin(n)        plan where the batch's tokens go
//! for each layer: store(layer, k, v) → attend(layer, q) → out
//! commit()        the batch becomes part of the context
//! ```
//! Two storages sit behind it, chosen once per session (an enum: one match per layer call,
//! no allocation, no virtual call in the inner loops):
//! - [`F16Cache`]: llama.cpp's default layout, attended by [`crate::backend::cpu::attention`];
//!   bit for bit what the runtime did before quantized caches existed.
//! - [`QuantCache`]: KIVI-style 8/4/2-bit pages behind an f16 window of recent tokens and a
//!   few f16 attention sinks ([`quant`] has the formats, [`paged`] the storage), attended by
//!   [`crate::backend::cpu::attention_q`] straight from the codes.
//!
//! [`budget`] has the byte counts per mode and the context a budget buys.
//!
//! ## Positions when the window slides
//! Cached keys are stored after RoPE and keep their original positions; a new token's
//! position is the number of tokens seen since the last reset ([`KvCache::next_pos`]). RoPE
//! depends only on the distance between query and key, so window tokens keep exact relative
//! distances. The first `sinks` tokens are kept (attention sinks) and, after each slide, their
//! keys are re-rotated from a pristine copy so that they sit right before the oldest kept
//! token — the relative distances StreamingLLM gets by renumbering the cache, without
//! touching (or re-quantizing) any page.

pub mod budget;
pub mod f16;
pub mod hadamard;
pub mod paged;
pub mod quant;

pub use self::budget::{parse_bytes, KvFootprint, KvGeom, KvMode, KvParams, Overflow};
pub use self::f16::F16Cache;
pub use self::paged::QuantCache;

use ::half::f16 as F16;

use crate::backend::cpu::attention::{attention, AttnShape};
use crate::backend::cpu::ops::{rope, rope_cos_sin, RopeStyle};
use crate::backend::cpu::Pool;
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;

/// What a session needs of its KV cache, whichever backend holds it ([`KvCache`] on the
/// CPU, `backend::gpu::kv::GpuKvCache` on the GPU): the same policy (context, budget,
/// overflow with sinks, truncation) and f16 snapshots for save/restore and copies.
/// Storing and attending are the backends' own (they run inside a forward pass).
pub trait KvStore: Send {
    fn params(&self) -> &KvParams;
    /// Tokens in the cache.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Most tokens the cache holds.
    fn capacity(&self) -> usize;
    /// Most tokens per batch the cache was built for.
    fn n_batch(&self) -> usize;
    /// Tokens dropped by sliding since the last reset.
    fn evicted(&self) -> usize;
    /// RoPE position of the next token: tokens seen since the last reset, evicted included.
    fn next_pos(&self) -> usize {
        self.len() + self.evicted()
    }
    /// Bytes allocated for keys and values.
    fn bytes(&self) -> usize;
    /// Marginal KV bytes per token of context (all layers).
    fn bytes_per_token(&self) -> f64;
    /// Make room for `n` more tokens as the overflow policy says: nothing to do when they
    /// fit; otherwise [`Error::ContextFull`], or slide the window (between batches only).
    fn make_room(&mut self, n: usize) -> Result<()>;
    /// Forget everything (positions start again at 0).
    fn reset(&mut self);
    /// Keep only the first `n` tokens (f16 caches that never slid).
    fn truncate(&mut self, n: usize) -> Result<()>;
    /// Keys and values of every cached token, `[layer][len][kv_dim]` f16 each (f16 caches
    /// that never slid).
    fn snapshot(&self) -> Result<(Vec<F16>, Vec<F16>)>;
    /// Replace the contents with `len` tokens from [`KvStore::snapshot`].
    fn restore(&mut self, len: usize, k: &[F16], v: &[F16]) -> Result<()>;
}

impl KvStore for KvCache {
    fn params(&self) -> &KvParams {
        KvCache::params(self)
    }
    fn len(&self) -> usize {
        KvCache::len(self)
    }
    fn capacity(&self) -> usize {
        KvCache::capacity(self)
    }
    fn n_batch(&self) -> usize {
        KvCache::n_batch(self)
    }
    fn evicted(&self) -> usize {
        KvCache::evicted(self)
    }
    fn bytes(&self) -> usize {
        KvCache::bytes(self)
    }
    fn bytes_per_token(&self) -> f64 {
        KvCache::bytes_per_token(self)
    }
    fn make_room(&mut self, n: usize) -> Result<()> {
        KvCache::make_room(self, n)
    }
    fn reset(&mut self) {
        KvCache::reset(self)
    }
    fn truncate(&mut self, n: usize) -> Result<()> {
        KvCache::truncate(self, n)
    }
    fn snapshot(&self) -> Result<(Vec<F16>, Vec<F16>)> {
        KvCache::snapshot(self)
    }
    fn restore(&mut self, len: usize, k: &[F16], v: &[F16]) -> Result<()> {
        KvCache::restore(self, len, k, v)
    }
}

/// The overflow policy, shared by every [`KvStore`]: `None` when `n` more tokens fit beside
/// `len` in `capacity`; else [`Error::ContextFull`] (policy `Error`, or a batch larger than
/// the room beside the `sink_cap` sinks), or how many tokens after the sinks must be
/// evicted (policy `Slide`; the store may evict more, e.g. whole pages).
pub fn tokens_to_evict(
    params: &KvParams,
    len: usize,
    n: usize,
    capacity: usize,
    sink_cap: usize,
) -> Result<Option<usize>> {
    if len + n <= capacity {
        return Ok(None);
    }
    if params.overflow == Overflow::Error {
        return Err(Error::ContextFull(format!(
            "{len} tokens in context + {n} new exceed the context size {capacity}"
        )));
    }
    if n > capacity - sink_cap {
        return Err(Error::ContextFull(format!(
            "a batch of {n} tokens does not fit beside {sink_cap} attention sinks in a context of {capacity}"
        )));
    }
    // Here the sinks are full (else len + n <= capacity), so everything after them can go.
    Ok(Some(len + n - capacity))
}

/// Rotates cached keys by a RoPE position delta (used to move attention sinks).
#[derive(Clone, Debug)]
pub struct RopeShift {
    pub head_dim: usize,
    pub n_rot: usize,
    pub base: f32,
    pub freq_scale: f32,
    pub style: RopeStyle,
    pub factors: Option<Vec<f32>>,
}

impl RopeShift {
    /// The RoPE of a model (its config and optional `rope_freqs` factors).
    pub fn new(c: &ModelConfig, factors: Option<&[f32]>) -> Self {
        RopeShift {
            head_dim: c.head_dim,
            n_rot: c.n_rot,
            base: c.rope_base,
            freq_scale: c.rope_freq_scale,
            style: c.rope_style,
            factors: factors.map(|f| f.to_vec()),
        }
    }

    /// Rotate every head of `row` as if its position grew by `delta`.
    pub fn shift(&self, delta: usize, row: &mut [f32]) {
        let mut cs = [(0f32, 0f32); 256];
        let cs = &mut cs[..self.n_rot / 2];
        rope_cos_sin(
            delta as f32 * self.freq_scale,
            self.n_rot,
            self.base,
            self.factors.as_deref(),
            cs,
        );
        rope(row, self.head_dim, self.n_rot, cs, self.style);
    }
}

enum Store {
    F16 {
        cache: F16Cache,
        /// Sink keys before the first slide re-rotated them: `[layer][sinks][kv_dim]`.
        pristine: Vec<F16>,
        pristine_ok: bool,
        pending: usize,
    },
    Quant(Box<QuantCache>),
}

/// A session's KV cache; see the module docs.
pub struct KvCache {
    geom: KvGeom,
    params: KvParams,
    capacity: usize,
    n_batch: usize,
    sink_cap: usize,
    evicted: usize,
    rope: RopeShift,
    store: Store,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KvCache({}, {}/{} tokens)",
            self.params.mode,
            self.len(),
            self.capacity
        )
    }
}

impl KvCache {
    /// The cache of a session on a model (`rope_freqs`: the model's RoPE factors): the
    /// context is `n_ctx` tokens (0 = the trained length capped at 4096), or with a budget
    /// what the budget buys (capped by `n_ctx`, else by the trained length); the batch is
    /// `n_batch` capped by the mode's staging and, when sliding, by the room beside the sinks.
    /// The caller has checked `n_ctx` against the trained length.
    pub fn for_model(
        c: &ModelConfig,
        rope_freqs: Option<&[f32]>,
        params: &KvParams,
        n_ctx: usize,
        n_batch: usize,
        n_threads: usize,
    ) -> Result<Self> {
        let (geom, capacity, batch) = Self::plan(c, params, n_ctx, n_batch)?;
        Self::new(
            geom,
            params,
            capacity,
            batch,
            c.n_head,
            n_threads,
            RopeShift::new(c, rope_freqs),
        )
    }

    /// The geometry, capacity and batch size [`KvCache::for_model`] gives a model of config
    /// `c` for a requested context `n_ctx` (0 = the model's default) and batch `n_batch`:
    /// a byte budget picks the context, a sliding window keeps room beside the sinks.
    pub fn plan(
        c: &ModelConfig,
        params: &KvParams,
        n_ctx: usize,
        n_batch: usize,
    ) -> Result<(KvGeom, usize, usize)> {
        let geom = KvGeom {
            n_layer: c.n_layer,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
        };
        params.validate(&geom)?;
        let capacity = match (params.budget, n_ctx) {
            (None, 0) => c.n_ctx_train.min(4096),
            (None, n) => n,
            (Some(budget), n) => {
                let max = if n == 0 { c.n_ctx_train } else { n };
                params.capacity_for_budget(&geom, budget, n_batch, max)?
            }
        };
        let mut batch = params.batch(n_batch).min(capacity);
        if params.overflow == Overflow::Slide {
            // A batch must fit beside the attention sinks once the window slides.
            let room = capacity.saturating_sub(params.sinks);
            if room == 0 {
                return Err(Error::invalid(format!(
                    "a sliding context of {capacity} tokens leaves no room beside {} attention sinks",
                    params.sinks
                )));
            }
            batch = batch.min(room);
        }
        Ok((geom, capacity, batch))
    }

    /// A cache of `capacity` tokens for batches of up to `n_batch`, attended by `n_threads`
    /// threads for a model with `n_head` query heads.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        geom: KvGeom,
        params: &KvParams,
        capacity: usize,
        n_batch: usize,
        n_head: usize,
        n_threads: usize,
        rope: RopeShift,
    ) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::invalid("a KV cache of 0 tokens"));
        }
        let pg = params.page_geom(&geom)?;
        let sink_cap = params.sinks.min(capacity);
        let slide = params.overflow == Overflow::Slide;
        let store = match pg {
            None => Store::F16 {
                cache: F16Cache::new(geom.n_layer, capacity, geom.kv_dim())?,
                pristine: if slide {
                    vec![F16::ZERO; geom.n_layer * sink_cap * geom.kv_dim()]
                } else {
                    Vec::new()
                },
                pristine_ok: false,
                pending: 0,
            },
            Some(pg) => Store::Quant(Box::new(QuantCache::new(
                geom,
                pg,
                params.window,
                params.sinks,
                params.rotate,
                slide,
                capacity,
                n_batch,
                n_head,
                n_threads,
            )?)),
        };
        Ok(KvCache {
            geom,
            params: params.clone(),
            capacity,
            n_batch,
            sink_cap,
            evicted: 0,
            rope,
            store,
        })
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::F16 { cache, .. } => cache.len(),
            Store::Quant(q) => q.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most tokens the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most tokens per batch the cache was built for.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// RoPE position of the next token: tokens seen since the last reset, evicted included.
    pub fn next_pos(&self) -> usize {
        self.len() + self.evicted
    }

    /// Tokens dropped by sliding since the last reset.
    pub fn evicted(&self) -> usize {
        self.evicted
    }

    pub fn params(&self) -> &KvParams {
        &self.params
    }

    pub fn mode(&self) -> KvMode {
        self.params.mode
    }

    /// Bytes allocated for keys and values.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::F16 {
                cache, pristine, ..
            } => cache.bytes() + pristine.len() * 2,
            Store::Quant(q) => q.bytes(),
        }
    }

    /// The f16 storage, when this is an f16 cache (snapshots).
    pub fn as_f16(&self) -> Option<&F16Cache> {
        match &self.store {
            Store::F16 { cache, .. } => Some(cache),
            Store::Quant(_) => None,
        }
    }

    /// The quantized storage, when this is a quantized cache.
    pub fn as_quant(&self) -> Option<&QuantCache> {
        match &self.store {
            Store::Quant(q) => Some(q),
            Store::F16 { .. } => None,
        }
    }

    /// Marginal KV bytes per token of context (all layers).
    pub fn bytes_per_token(&self) -> f64 {
        self.params
            .footprint(&self.geom, self.capacity, self.n_batch)
            .map(|f| f.bytes_per_token)
            .unwrap_or(0.0)
    }

    /// The f16 storage of a cache that can be copied token for token: an f16 cache whose
    /// window never slid (a slid cache's sinks were re-rotated, a quantized one has no
    /// per-token copy).
    fn plain_f16(&self, what: &str) -> Result<&F16Cache> {
        match &self.store {
            Store::F16 { cache, .. } if self.evicted == 0 => Ok(cache),
            Store::F16 { .. } => Err(Error::invalid(format!(
                "{what} needs a KV cache whose window has not slid"
            ))),
            Store::Quant(_) => Err(Error::invalid(format!(
                "{what} needs an f16 KV cache (this one is {})",
                self.params.mode
            ))),
        }
    }

    /// Keys and values of every cached token, as [`F16Cache::snapshot`] (f16 caches that
    /// never slid).
    pub fn snapshot(&self) -> Result<(Vec<F16>, Vec<F16>)> {
        Ok(self.plain_f16("copying the KV cache")?.snapshot())
    }

    /// Replace the contents with `len` tokens from [`KvCache::snapshot`].
    pub fn restore(&mut self, len: usize, k: &[F16], v: &[F16]) -> Result<()> {
        self.reset();
        self.plain_f16("restoring the KV cache")?;
        match &mut self.store {
            Store::F16 { cache, .. } => cache.restore(len, k, v),
            Store::Quant(_) => unreachable!("checked by plain_f16"),
        }
    }

    /// Keep only the first `n` tokens (f16 caches that never slid; quantized pages cannot
    /// be cut). `n >= len` keeps everything.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n >= self.len() {
            return Ok(());
        }
        self.plain_f16("truncating the context")?;
        match &mut self.store {
            Store::F16 { cache, .. } => cache.set_len(n),
            Store::Quant(_) => unreachable!("checked by plain_f16"),
        }
        Ok(())
    }

    /// Forget everything (positions start again at 0).
    pub fn reset(&mut self) {
        self.evicted = 0;
        match &mut self.store {
            Store::F16 {
                cache,
                pristine_ok,
                pending,
                ..
            } => {
                cache.set_len(0);
                *pristine_ok = false;
                *pending = 0;
            }
            Store::Quant(q) => q.reset(),
        }
    }

    /// Make room for `n` more tokens as the overflow policy says: nothing to do when they
    /// fit; otherwise [`Error::ContextFull`], or slide the window.
    pub fn make_room(&mut self, n: usize) -> Result<()> {
        let len = self.len();
        let Some(need) = tokens_to_evict(&self.params, len, n, self.capacity, self.sink_cap)?
        else {
            return Ok(());
        };
        let page = self.params.group;
        let gone = match &mut self.store {
            Store::F16 {
                cache,
                pristine,
                pristine_ok,
                ..
            } => {
                if !*pristine_ok && !pristine.is_empty() {
                    let per = self.sink_cap * self.geom.kv_dim();
                    for l in 0..self.geom.n_layer {
                        pristine[l * per..(l + 1) * per]
                            .copy_from_slice(cache.keys_mut(l, 0..self.sink_cap));
                    }
                    *pristine_ok = true;
                }
                let count = need.max(page).min(len - self.sink_cap);
                cache.remove(self.sink_cap, count);
                count
            }
            Store::Quant(q) => q.evict(need),
        };
        self.evicted += gone;
        self.reposition_sinks();
        Ok(())
    }

    /// Re-rotate the sink keys to sit just before the oldest kept token.
    fn reposition_sinks(&mut self) {
        let delta = self.evicted;
        let rope = &self.rope;
        match &mut self.store {
            Store::F16 {
                cache, pristine, ..
            } => {
                let kvd = self.geom.kv_dim();
                let per = self.sink_cap * kvd;
                let hd = self.geom.head_dim;
                let mut row = [0f32; 512];
                let row = &mut row[..hd];
                for l in 0..self.geom.n_layer {
                    for r in 0..self.sink_cap.min(cache.len()) {
                        let src = &pristine[l * per + r * kvd..][..kvd];
                        let dst = cache.keys_mut(l, r..r + 1);
                        for (d, s) in dst.chunks_exact_mut(hd).zip(src.chunks_exact(hd)) {
                            for (x, s) in row.iter_mut().zip(s) {
                                *x = s.to_f32();
                            }
                            rope.shift(delta, row);
                            for (o, &x) in d.iter_mut().zip(row.iter()) {
                                *o = F16::from_f32(x);
                            }
                        }
                    }
                }
            }
            Store::Quant(q) => q.rewrite_sinks(|row| rope.shift(delta, row)),
        }
    }

    /// Plan a batch of `n` tokens (after [`KvCache::make_room`]).
    pub fn begin(&mut self, n: usize) -> Result<()> {
        let len = self.len();
        if n == 0 || len + n > self.capacity {
            return Err(Error::ContextFull(format!(
                "{len} tokens in context + {n} new exceed the context size {}",
                self.capacity
            )));
        }
        match &mut self.store {
            Store::F16 { pending, .. } => {
                *pending = n;
                Ok(())
            }
            Store::Quant(q) => q.begin(n),
        }
    }

    /// Store layer `layer`'s keys (after RoPE) and values of the planned batch,
    /// `n × kv_dim` f32 each.
    pub fn store(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        match &mut self.store {
            Store::F16 { cache, .. } => {
                let pos = cache.len();
                cache.store(layer, pos, k, v)
            }
            Store::Quant(q) => q.store(layer, k, v),
        }
    }

    /// Attention of the batch's queries `q` (`n × n_head × head_dim`) over layer `layer`,
    /// including the batch's own keys (causal), into `out`. `window` > 0 limits each query
    /// to its last `window` keys, itself included (sliding-window layers); 0 = all.
    /// `scores`: f16 path scratch of `n_threads × capacity` floats.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        pool: &Pool,
        layer: usize,
        shape: AttnShape,
        q: &[f32],
        n: usize,
        scale: f32,
        window: usize,
        scores: &mut [f32],
        out: &mut [f32],
    ) -> Result<()> {
        let len = self.len();
        match &mut self.store {
            Store::F16 { cache, .. } => {
                let pos0 = cache.len();
                let (k, v) = cache.layer(layer);
                attention(pool, shape, q, k, v, pos0, n, scale, window, scores, out);
                Ok(())
            }
            Store::Quant(qc) => {
                // The quantized pages have no window mask yet: refuse once it would matter.
                if window > 0 && len + n > window {
                    return Err(Error::invalid(format!(
                        "sliding-window attention (window {window}) over a quantized KV cache is not supported yet; use --kv f16 or a context of at most {window} tokens"
                    )));
                }
                qc.attend(pool, layer, shape, q, n, scale, out)
            }
        }
    }

    /// Make the planned batch part of the context.
    pub fn commit(&mut self) {
        match &mut self.store {
            Store::F16 { cache, pending, .. } => {
                let len = cache.len() + *pending;
                cache.set_len(len);
                *pending = 0;
            }
            Store::Quant(q) => q.commit(),
        }
    }

    /// Drop a planned batch.
    pub fn abort(&mut self) {
        match &mut self.store {
            Store::F16 { pending, .. } => *pending = 0,
            Store::Quant(q) => q.abort(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEOM: KvGeom = KvGeom {
        n_layer: 2,
        n_kv_head: 1,
        head_dim: 64,
    };

    fn rope() -> RopeShift {
        RopeShift {
            head_dim: 64,
            n_rot: 64,
            base: 10000.0,
            freq_scale: 1.0,
            style: RopeStyle::Interleaved,
            factors: None,
        }
    }

    /// The un-rotated key of token `i` (the same in every layer), and its value.
    fn raw_key(i: usize) -> Vec<f32> {
        (0..64)
            .map(|c| (((i * 13 + c * 5) % 23) as f32 - 11.0) / 8.0)
            .collect()
    }

    /// Feed tokens `i0..i0+n` through the policy, as the graph does: keys rotated to their
    /// RoPE position `next_pos + t`.
    fn feed(kv: &mut KvCache, i0: usize, n: usize) -> Result<()> {
        kv.make_room(n)?;
        let pos0 = kv.next_pos();
        kv.begin(n)?;
        let mut k = Vec::new();
        let mut v = Vec::new();
        for t in 0..n {
            let mut row = raw_key(i0 + t);
            rope().shift(pos0 + t, &mut row);
            k.extend_from_slice(&row);
            v.extend(raw_key(i0 + t + 1000));
        }
        for l in 0..GEOM.n_layer {
            kv.store(l, &k, &v)?;
        }
        kv.commit();
        Ok(())
    }

    fn cache(mode: KvMode, overflow: Overflow, rotate: bool, cap: usize) -> KvCache {
        let p = KvParams {
            mode,
            window: 40,
            sinks: 4,
            rotate,
            overflow,
            ..Default::default()
        };
        KvCache::new(GEOM, &p, cap, 100, 2, 1, rope()).unwrap()
    }

    #[test]
    fn error_policy_refuses_and_keeps_the_cache() {
        for mode in KvMode::ALL {
            let mut kv = cache(mode, Overflow::Error, false, 100);
            feed(&mut kv, 0, 90).unwrap_or_else(|e| panic!("{mode}: {e}"));
            let r = feed(&mut kv, 90, 11);
            assert!(matches!(r, Err(Error::ContextFull(_))), "{mode}: {r:?}");
            assert_eq!(kv.len(), 90);
            feed(&mut kv, 90, 10).unwrap();
            assert_eq!((kv.len(), kv.next_pos()), (100, 100));
            assert!(matches!(kv.make_room(1), Err(Error::ContextFull(_))));
        }
    }

    /// Sliding keeps the context bounded, positions keep counting, and the sink keys end up
    /// rotated exactly as if they sat right before the oldest kept token.
    #[test]
    fn slide_keeps_sinks_before_the_window() {
        for (mode, rotate) in [
            (KvMode::F16, false),
            (KvMode::Q4, false),
            (KvMode::Q2, true),
        ] {
            let cap = 120;
            let mut kv = cache(mode, Overflow::Slide, rotate, cap);
            let mut fed = 0;
            for n in [100usize, 16, 16, 1, 1, 16, 16, 3] {
                feed(&mut kv, fed, n).unwrap_or_else(|e| panic!("{mode}: {e}"));
                fed += n;
                assert!(kv.len() <= cap);
                assert_eq!(kv.next_pos(), fed, "{mode}");
                assert_eq!(kv.len() + kv.evicted(), fed);
            }
            assert!(kv.evicted() > 0);
            // Every eviction is a multiple of the page size (32) in quantized modes; in f16 at
            // least one page worth.
            if mode != KvMode::F16 {
                assert_eq!(kv.evicted() % 32, 0);
            }
            let delta = kv.evicted();
            for l in 0..GEOM.n_layer {
                for j in 0..4 {
                    let mut want = raw_key(j);
                    rope().shift(j + delta, &mut want);
                    if rotate {
                        hadamard::rotate(&mut want, &hadamard::signs(64));
                    }
                    let got: Vec<f32> = match &kv.store {
                        Store::F16 { cache, .. } => cache.layer(l).0[j * 64..(j + 1) * 64]
                            .iter()
                            .map(|x| x.to_f32())
                            .collect(),
                        Store::Quant(q) => q.view(l).sink_k[j * 64..(j + 1) * 64]
                            .iter()
                            .map(|x| x.to_f32())
                            .collect(),
                    };
                    for (a, b) in got.iter().zip(&want) {
                        // f16 storage of both the pristine copy and the result.
                        assert!(
                            (a - b).abs() < 4e-3,
                            "{mode} layer {l} sink {j}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_batch_larger_than_the_room_beside_the_sinks_is_refused() {
        let mut kv = cache(KvMode::Q4, Overflow::Slide, false, 64);
        feed(&mut kv, 0, 16).unwrap();
        assert!(matches!(kv.make_room(61), Err(Error::ContextFull(_))));
        kv.make_room(60).unwrap();
        assert!(kv.len() + 60 <= 64);
    }
}
