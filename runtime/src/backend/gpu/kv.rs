//! A session's KV cache on the GPU, under the same policy as the CPU's
//! [`crate::kv::KvCache`]: the same context a byte budget buys ([`KvCache::plan`]), the
//! same overflow policy (refuse, or slide the window keeping the attention sinks, whose
//! keys are re-rotated to sit before the oldest kept token), Hadamard-rotated keys, and
//! snapshots of f16 caches for save/restore.
//!
//! Two storages sit behind it:
//! - f16 keys and values of every position, `[layer][capacity][kv_dim]`, attended by
//!   `attention.wgsl`. Sliding removes rows after the sinks by two device copies per
//!   buffer (through a scratch buffer: a buffer cannot be copied onto itself).
//! - [`GpuQuantKv`]: q8/q4/q2 pages behind an f16 window and sinks.
//!
//! Sink re-rotation runs on the host from f16 copies of the sinks' unrotated keys, with
//! the CPU cache's arithmetic (`RopeShift::shift`, `hadamard::rotate_heads`), so both
//! backends keep the same sink keys.

use std::sync::Arc;

use half::f16;

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::kv_quant::GpuQuantKv;
use super::ops::{self, AttnCall};
use super::record::Recorder;
use crate::error::{Error, Result};
use crate::kv::{tokens_to_evict, KvCache, KvGeom, KvMode, KvParams, KvStore, Overflow, RopeShift};
use crate::model::config::ModelConfig;

enum Store {
    F16 {
        kc: GpuBuffer,
        vc: GpuBuffer,
        len: usize,
        /// Tokens of the planned batch.
        pending: usize,
        /// Sink keys before the first slide re-rotated them: `[layer][sinks][kv_dim]`.
        pristine: Vec<f16>,
        pristine_ok: bool,
        /// Scratch for moving rows (allocated at the first slide).
        tmp: Option<GpuBuffer>,
    },
    Quant(Box<GpuQuantKv>),
}

/// A session's KV cache on the GPU; see the module docs.
pub struct GpuKvCache {
    dev: Arc<GpuDevice>,
    geom: KvGeom,
    params: KvParams,
    capacity: usize,
    n_batch: usize,
    sink_cap: usize,
    evicted: usize,
    rope: RopeShift,
    store: Store,
}

fn f16_bytes(v: &[f16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

fn f16s(b: &[u8]) -> Vec<f16> {
    b.chunks_exact(2)
        .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}

impl GpuKvCache {
    /// The cache of a session on a model of config `c` (`rope_freqs`: its RoPE factors)
    /// for a requested context `n_ctx` (0 = the model's default) and batch `n_batch`:
    /// capacity and batch exactly as the CPU cache plans them.
    pub fn new(
        dev: &Arc<GpuDevice>,
        c: &ModelConfig,
        rope_freqs: Option<&[f32]>,
        params: &KvParams,
        n_ctx: usize,
        n_batch: usize,
    ) -> Result<Self> {
        let d = &**dev;
        let (geom, capacity, mut batch) = KvCache::plan(c, params, n_ctx, n_batch)?;
        if params.mode != KvMode::F16 && params.window > 0 {
            // Batches no larger than the window let every page be quantized before the
            // batch runs, from committed rows, in one wait for all layers (`kv_quant`), and
            // keep the f16 staging small. The context is the CPU's (planned with the
            // requested batch), so both backends slide at the same tokens.
            batch = batch.min(params.window);
        }
        let sink_cap = params.sinks.min(capacity);
        let slide = params.overflow == Overflow::Slide;
        let store = if params.mode == KvMode::F16 {
            let vals = geom
                .n_layer
                .checked_mul(capacity)
                .and_then(|x| x.checked_mul(geom.kv_dim()))
                .ok_or_else(|| Error::OutOfMemory(format!("{capacity} tokens of KV cache")))?;
            Store::F16 {
                kc: d.buffer("k cache", 2 * vals as u64)?,
                vc: d.buffer("v cache", 2 * vals as u64)?,
                len: 0,
                pending: 0,
                pristine: if slide {
                    vec![f16::ZERO; geom.n_layer * sink_cap * geom.kv_dim()]
                } else {
                    Vec::new()
                },
                pristine_ok: false,
                tmp: None,
            }
        } else {
            Store::Quant(Box::new(GpuQuantKv::new(d, geom, params, capacity, batch)?))
        };
        Ok(GpuKvCache {
            dev: dev.clone(),
            geom,
            params: params.clone(),
            capacity,
            n_batch: batch,
            sink_cap,
            evicted: 0,
            rope: RopeShift::new(c, rope_freqs),
            store,
        })
    }

    /// The quantized storage, when the cache is quantized.
    pub fn quant(&self) -> Option<&GpuQuantKv> {
        match &self.store {
            Store::Quant(q) => Some(q),
            Store::F16 { .. } => None,
        }
    }

    /// Device bytes of keys and values.
    pub fn device_bytes(&self) -> u64 {
        match &self.store {
            Store::F16 { kc, vc, .. } => kc.bytes() + vc.bytes(),
            Store::Quant(q) => q.bytes(),
        }
    }

    fn make_room_impl(&mut self, n: usize) -> Result<()> {
        let dev = self.dev.clone();
        let d = &*dev;
        let len = self.len();
        let Some(need) = tokens_to_evict(&self.params, len, n, self.capacity, self.sink_cap)?
        else {
            return Ok(());
        };
        let page = self.params.group;
        let (geom, sink_cap, capacity) = (self.geom, self.sink_cap, self.capacity);
        let gone = match &mut self.store {
            Store::F16 {
                kc,
                vc,
                len,
                pristine,
                pristine_ok,
                tmp,
                ..
            } => {
                let kvd = geom.kv_dim();
                let row_b = 2 * kvd as u64;
                let layer_b = capacity as u64 * row_b;
                if !*pristine_ok && !pristine.is_empty() {
                    let parts: Vec<_> = (0..geom.n_layer)
                        .map(|l| (&*kc, l as u64 * layer_b, sink_cap as u64 * row_b))
                        .collect();
                    *pristine = f16s(&d.read_many(&parts)?);
                    *pristine_ok = true;
                }
                let count = need.max(page).min(*len - sink_cap);
                let keep = *len - sink_cap - count;
                if keep > 0 {
                    if tmp.is_none() {
                        *tmp = Some(d.buffer("kv slide scratch", layer_b)?);
                    }
                    let t = tmp.as_ref().expect("allocated above");
                    let (from, to) = ((sink_cap + count) as u64 * row_b, sink_cap as u64 * row_b);
                    let size = keep as u64 * row_b;
                    for buf in [&*kc, &*vc] {
                        for l in 0..geom.n_layer as u64 {
                            let base = l * layer_b;
                            d.copy(buf, base + from, t, 0, size)?;
                            d.copy(t, 0, buf, base + to, size)?;
                        }
                    }
                }
                *len -= count;
                count
            }
            Store::Quant(q) => q.evict(need),
        };
        self.evicted += gone;
        self.reposition_sinks(d)
    }

    /// Re-rotate the sink keys to sit just before the oldest kept token.
    fn reposition_sinks(&mut self, d: &GpuDevice) -> Result<()> {
        let delta = self.evicted;
        let rope = &self.rope;
        match &mut self.store {
            Store::F16 {
                kc, pristine, len, ..
            } => {
                let kvd = self.geom.kv_dim();
                let hd = self.geom.head_dim;
                let per = self.sink_cap * kvd;
                let rows = self.sink_cap.min(*len);
                let mut row = vec![0f32; hd];
                let mut out = vec![f16::ZERO; rows * kvd];
                for l in 0..self.geom.n_layer {
                    for r in 0..rows {
                        let src = &pristine[l * per + r * kvd..][..kvd];
                        let dst = &mut out[r * kvd..(r + 1) * kvd];
                        for (dh, sh) in dst.chunks_exact_mut(hd).zip(src.chunks_exact(hd)) {
                            for (x, s) in row.iter_mut().zip(sh) {
                                *x = s.to_f32();
                            }
                            rope.shift(delta, &mut row);
                            for (o, &x) in dh.iter_mut().zip(row.iter()) {
                                *o = f16::from_f32(x);
                            }
                        }
                    }
                    let at = (l * self.capacity * kvd * 2) as u64;
                    d.write(kc, at, &f16_bytes(&out))?;
                }
                Ok(())
            }
            Store::Quant(q) => q.rewrite_sinks(d, |row| rope.shift(delta, row)),
        }
    }

    /// Plan a batch of `n` tokens (after [`KvStore::make_room`]): checks it fits, and for
    /// a quantized cache uploads the pages leaving the window and the keys each query sees.
    pub fn begin(&mut self, n: usize) -> Result<()> {
        let d = &*self.dev;
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
            Store::Quant(q) => q.begin(d, n),
        }
    }

    /// Record storing layer `layer`'s keys (after RoPE) and values of the planned batch and
    /// the attention of its queries over the layer (`window` > 0: sliding-window layers).
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        r: &mut Recorder,
        c: &ModelConfig,
        layer: usize,
        window: usize,
        (q, k, v): (&GpuBuffer, &GpuBuffer, &GpuBuffer),
        out: &GpuBuffer,
    ) -> Result<()> {
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let kvd = self.geom.kv_dim();
        match &self.store {
            Store::F16 {
                kc,
                vc,
                len,
                pending,
                ..
            } => {
                let layer_base = layer * self.capacity * kvd;
                ops::kv_store(r, k, v, kc, vc, pending * kvd, layer_base + len * kvd)?;
                let call = AttnCall {
                    n_head: c.n_head,
                    n_kv_head: c.n_kv_head,
                    head_dim: c.head_dim,
                    pos0: *len,
                    n_tokens: *pending,
                    layer_base,
                    scale,
                    window,
                };
                ops::attention(r, call, q, kc, vc, out)
            }
            Store::Quant(qkv) => {
                let len = self.len();
                if window > 0 && len + qkv.planned_n() > window {
                    return Err(Error::invalid(format!(
                        "sliding-window attention (window {window}) over a quantized KV cache is not supported yet; use --kv f16 or a context of at most {window} tokens"
                    )));
                }
                qkv.store(r, layer, k, v)?;
                qkv.attend(r, layer, c.n_head, q, out, scale)
            }
        }
    }

    /// Make the planned batch part of the context.
    pub fn commit(&mut self) {
        match &mut self.store {
            Store::F16 { len, pending, .. } => {
                *len += *pending;
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

    /// The f16 storage of a cache that can be copied token for token (an f16 cache whose
    /// window never slid).
    fn plain_f16(&self, what: &str) -> Result<(&GpuBuffer, &GpuBuffer, usize)> {
        match &self.store {
            Store::F16 { kc, vc, len, .. } if self.evicted == 0 => Ok((kc, vc, *len)),
            Store::F16 { .. } => Err(Error::invalid(format!(
                "{what} needs a KV cache whose window has not slid"
            ))),
            Store::Quant(_) => Err(Error::invalid(format!(
                "{what} needs an f16 KV cache (this one is {})",
                self.params.mode
            ))),
        }
    }

    fn snapshot_impl(&self) -> Result<(Vec<f16>, Vec<f16>)> {
        let d = &*self.dev;
        let (kc, vc, len) = self.plain_f16("copying the KV cache")?;
        let row_b = 2 * self.geom.kv_dim() as u64;
        let layer_b = self.capacity as u64 * row_b;
        let mut out = Vec::with_capacity(2);
        for buf in [kc, vc] {
            let parts: Vec<_> = (0..self.geom.n_layer as u64)
                .map(|l| (buf, l * layer_b, len as u64 * row_b))
                .collect();
            out.push(if len == 0 {
                Vec::new()
            } else {
                f16s(&d.read_many(&parts)?)
            });
        }
        let v = out.pop().expect("two");
        Ok((out.pop().expect("two"), v))
    }

    fn restore_impl(&mut self, n: usize, k: &[f16], v: &[f16]) -> Result<()> {
        self.reset();
        let dev = self.dev.clone();
        let d = &*dev;
        self.plain_f16("restoring the KV cache")?;
        let kvd = self.geom.kv_dim();
        let per = n * kvd;
        if n > self.capacity || k.len() != self.geom.n_layer * per || v.len() != k.len() {
            return Err(Error::invalid(format!(
                "a snapshot of {} values for {n} tokens in a cache of {} tokens",
                k.len(),
                self.capacity
            )));
        }
        let Store::F16 { kc, vc, len, .. } = &mut self.store else {
            return Err(Error::Internal("checked by plain_f16".into()));
        };
        let layer_b = (self.capacity * kvd * 2) as u64;
        for (buf, src) in [(&*kc, k), (&*vc, v)] {
            for l in 0..self.geom.n_layer {
                if per > 0 {
                    d.write(
                        buf,
                        l as u64 * layer_b,
                        &f16_bytes(&src[l * per..(l + 1) * per]),
                    )?;
                }
            }
        }
        *len = n;
        Ok(())
    }
}

impl KvStore for GpuKvCache {
    fn params(&self) -> &KvParams {
        &self.params
    }

    fn len(&self) -> usize {
        match &self.store {
            Store::F16 { len, .. } => *len,
            Store::Quant(q) => q.len(),
        }
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn n_batch(&self) -> usize {
        self.n_batch
    }

    fn evicted(&self) -> usize {
        self.evicted
    }

    fn bytes(&self) -> usize {
        self.device_bytes() as usize
    }

    fn bytes_per_token(&self) -> f64 {
        self.params
            .footprint(&self.geom, self.capacity, self.n_batch)
            .map(|f| f.bytes_per_token)
            .unwrap_or(0.0)
    }

    fn reset(&mut self) {
        self.evicted = 0;
        match &mut self.store {
            Store::F16 {
                len,
                pending,
                pristine_ok,
                ..
            } => {
                *len = 0;
                *pending = 0;
                *pristine_ok = false;
            }
            Store::Quant(q) => q.reset(),
        }
    }

    fn make_room(&mut self, n: usize) -> Result<()> {
        self.make_room_impl(n)
    }

    fn snapshot(&self) -> Result<(Vec<f16>, Vec<f16>)> {
        self.snapshot_impl()
    }

    fn restore(&mut self, len: usize, k: &[f16], v: &[f16]) -> Result<()> {
        self.restore_impl(len, k, v)
    }

    fn truncate(&mut self, n: usize) -> Result<()> {
        if n >= self.len() {
            return Ok(());
        }
        self.plain_f16("truncating the context")?;
        if let Store::F16 { len, .. } = &mut self.store {
            *len = n;
        }
        Ok(())
    }
}
