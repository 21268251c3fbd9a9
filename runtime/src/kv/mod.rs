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
use crate::model::ModelConfig;

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
        if len + n <= self.capacity {
            return Ok(());
        }
        if self.params.overflow == Overflow::Error {
            return Err(Error::ContextFull(format!(
                "{len} tokens in context + {n} new exceed the context size {}",
                self.capacity
            )));
        }
        if n > self.capacity - self.sink_cap {
            return Err(Error::ContextFull(format!(
                "a batch of {n} tokens does not fit beside {} attention sinks in a context of {}",
                self.sink_cap, self.capacity
            )));
        }
        // Here the sinks are full (else len + n <= capacity), so everything after them can go.
        let need = len + n - self.capacity;
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
    /// including the batch's own keys (causal), into `out`. `scores`: f16 path scratch of
    /// `n_threads × capacity` floats.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        pool: &Pool,
        layer: usize,
        shape: AttnShape,
        q: &[f32],
        n: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) -> Result<()> {
        match &mut self.store {
            Store::F16 { cache, .. } => {
                let pos0 = cache.len();
                let (k, v) = cache.layer(layer);
                attention(pool, shape, q, k, v, pos0, n, scale, scores, out);
                Ok(())
            }
            Store::Quant(qc) => qc.attend(pool, layer, shape, q, n, scale, out),
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
