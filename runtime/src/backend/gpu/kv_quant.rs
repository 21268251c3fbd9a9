//! The quantized KV cache (`KvMode` q8/q4/q2) on the GPU: attention sinks and the recent
//! window in f16, everything between in KIVI pages, attended by `shaders/kv_attention.wgsl`
//! straight from the codes. It behaves as the CPU's [`crate::kv::QuantCache`] does (same
//! batch plan, same spans, same pages), so the two backends attend over the same keys.
//!
//! ```text
//! device buffers:
//!   kf, vf  [layer][sink_cap + tail_cap][kv_dim] f16   sinks, then the window as a ring
//!   pages   [layer][slot][kv_head][PageGeom::bytes]    codes then f16 metadata, CPU layout
//!   span    [n_batch][8] u32                           keys each query of the batch sees:
//!                                                       (sinks, pages, tail_lo, tail_hi,
//!                                                        page0, n_slots, 0, 0)
//!   pk, pv  [layer][sink_cap][kv_dim] f16              sink keys/values before rotation
//!                                                       (sliding caches only)
//! ```
//!
//! **Pages are quantized on the host.** When the plan of a batch says pages leave the
//! window, their f16 rows are read back (one copy, one wait for every layer), quantized by
//! the CPU's own [`quantize_page`] and uploaded before the batch's forward pass. The page
//! bytes are then exactly the CPU cache's for the same f16 rows, which makes the GPU
//! attention testable against the CPU kernel over identical pages (and keeps one quantizer:
//! the 4- and 2-bit search with least-squares refits in f64 would be a large kernel of its
//! own). It costs a readback of `P` rows per layer once every `P` tokens; a WGSL quantizer
//! writing the same bytes is the way to remove it.
//!
//! Pages can be quantized before the batch runs when they hold only rows committed before
//! it (`new_pages·P ≤ tail_before`: batches no larger than the window); the batch's queries
//! that come before the page leaves still read its f16 rows from the ring (they stay until
//! commit). Otherwise (a window of 0, a batch larger than the window) the pass is split:
//! after each layer's store its submission is flushed, the new pages are quantized on the
//! host from that layer's rows and uploaded, and recording goes on with the attention —
//! one wait per layer, for such batches only.
//!
//! Pages live in a ring of slots: logical page `i` is in slot `(page0 + i) % n_slots`, so
//! evicting the oldest pages (the sliding window) moves nothing. With Hadamard-rotated keys
//! (`--kv-rotate`) the keys are rotated on the device before they are stored
//! (`kv_rotate`, the CPU's butterfly order) and the attention rotates its scaled queries
//! alike. A sliding cache keeps the sinks' unrotated f16 keys (`pk`) so that, after each
//! slide, [`GpuQuantKv::rewrite_sinks`] re-rotates them on the host exactly as the CPU
//! cache does.

use half::f16;

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::kernels::{KvRotate, KvqAttention, KvqStore};
use super::ops::kv_store;
use super::ops::{grid, WG};
use super::record::Recorder;
use crate::error::{Error, Result};
use crate::kv::budget::{tail_rows, KvGeom, KvParams, Overflow};
use crate::kv::hadamard;
use crate::kv::quant::{quantize_page, BatchPlan, PageGeom};

/// A quantized, paged KV cache in device memory; see the module docs.
#[derive(Debug)]
pub struct GpuQuantKv {
    geom: KvGeom,
    pg: PageGeom,
    window: usize,
    sink_cap: usize,
    tail_cap: usize,
    n_slots: usize,
    n_batch: usize,
    kf: GpuBuffer,
    vf: GpuBuffer,
    pages: GpuBuffer,
    span: GpuBuffer,
    /// Hadamard signs (host and device) when keys are rotated.
    signs: Option<(Vec<f32>, GpuBuffer)>,
    /// Unrotated f16 sink keys and values (sliding caches).
    pristine: Option<(GpuBuffer, GpuBuffer)>,
    // Committed state.
    n_sink: usize,
    n_pages: usize,
    /// Slot of logical page 0.
    page0: usize,
    tail_len: usize,
    /// Ring row of window row 0.
    ring: usize,
    /// The batch being run.
    plan: Option<BatchPlan>,
    /// Pages of the planned batch to quantize layer by layer after their store (0 when
    /// [`Self::begin`] quantized them already).
    late_pages: bool,
}

fn u(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Backend(format!("{v} exceeds a GPU kernel parameter")))
}

impl GpuQuantKv {
    /// A cache of `capacity` tokens for batches of up to `n_batch` (at most the window).
    pub fn new(
        d: &GpuDevice,
        geom: KvGeom,
        params: &KvParams,
        capacity: usize,
        n_batch: usize,
    ) -> Result<Self> {
        let Some(pg) = params.page_geom(&geom)? else {
            return Err(Error::Internal(
                "an f16 cache as a quantized GPU cache".into(),
            ));
        };
        if pg.kbits != pg.vbits || geom.head_dim > 512 || !pg.vgroup.is_power_of_two() {
            return Err(Error::Backend(format!(
                "the GPU's quantized KV attention takes head_dim ≤ 512 and power-of-two value groups (head_dim {}, group {})",
                geom.head_dim, pg.vgroup
            )));
        }
        if n_batch == 0 || capacity == 0 {
            return Err(Error::invalid(format!(
                "a quantized GPU KV cache of {capacity} tokens for batches of {n_batch}"
            )));
        }
        let kvd = geom.kv_dim();
        let sink_cap = params.sinks.min(capacity);
        let tail_cap = tail_rows(params.window, pg.page, n_batch, capacity);
        let n_slots = capacity.saturating_sub(sink_cap + params.window) / pg.page;
        let big = || Error::OutOfMemory(format!("{capacity} tokens of KV cache"));
        let row_bytes = (geom.n_layer * (sink_cap + tail_cap))
            .checked_mul(2 * kvd)
            .ok_or_else(big)?;
        let page_bytes = (geom.n_layer * n_slots * geom.n_kv_head)
            .checked_mul(pg.bytes())
            .ok_or_else(big)?;
        let signs = if params.rotate {
            if !geom.head_dim.is_power_of_two() {
                return Err(Error::invalid(format!(
                    "rotated KV keys need a power-of-two head size, not {}",
                    geom.head_dim
                )));
            }
            let s = hadamard::signs(geom.head_dim);
            let b = d.upload("hadamard signs", bytemuck::cast_slice(&s))?;
            Some((s, b))
        } else {
            None
        };
        let pristine = if params.overflow == Overflow::Slide && sink_cap > 0 {
            let bytes = (2 * geom.n_layer * sink_cap * kvd) as u64;
            Some((
                d.buffer("sink keys (unrotated)", bytes)?,
                d.buffer("sink values (unrotated)", bytes)?,
            ))
        } else {
            None
        };
        Ok(GpuQuantKv {
            geom,
            pg,
            window: params.window,
            sink_cap,
            tail_cap,
            n_slots,
            n_batch,
            kf: d.buffer("k cache (f16 rows)", row_bytes as u64)?,
            vf: d.buffer("v cache (f16 rows)", row_bytes as u64)?,
            pages: d.buffer("kv cache pages", page_bytes.max(4) as u64)?,
            span: d.buffer("kv spans", 32 * n_batch as u64)?,
            signs,
            pristine,
            n_sink: 0,
            n_pages: 0,
            page0: 0,
            tail_len: 0,
            ring: 0,
            plan: None,
            late_pages: false,
        })
    }

    /// Tokens cached (committed).
    pub fn len(&self) -> usize {
        self.n_sink + self.n_pages * self.pg.page + self.tail_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn page_geom(&self) -> &PageGeom {
        &self.pg
    }

    /// Committed quantized pages.
    pub fn n_pages(&self) -> usize {
        self.n_pages
    }

    /// Committed f16 window rows.
    pub fn window_len(&self) -> usize {
        self.tail_len
    }

    /// Device bytes of keys and values.
    pub fn bytes(&self) -> u64 {
        self.kf.bytes() + self.vf.bytes() + self.pages.bytes()
    }

    /// Marginal bytes per token of context (all layers): a page per `P` tokens.
    pub fn bytes_per_token(&self) -> f64 {
        (self.geom.n_layer * self.geom.n_kv_head * self.pg.bytes()) as f64 / self.pg.page as f64
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.plan = None;
        self.n_sink = 0;
        self.n_pages = 0;
        self.page0 = 0;
        self.tail_len = 0;
        self.ring = 0;
    }

    /// Sink tokens cached.
    pub fn n_sink(&self) -> usize {
        self.n_sink
    }

    /// Evict at least `want` tokens after the sinks (whole pages first, then window rows,
    /// as the CPU's cache does); returns how many went. Only between batches.
    pub fn evict(&mut self, want: usize) -> usize {
        self.abort();
        let p = self.pg.page;
        let drop = want.div_ceil(p).min(self.n_pages);
        if self.n_slots > 0 {
            self.page0 = (self.page0 + drop) % self.n_slots;
        }
        self.n_pages -= drop;
        let mut gone = drop * p;
        if gone < want {
            let rows = (want - gone).min(self.tail_len);
            self.ring = (self.ring + rows) % self.tail_cap;
            self.tail_len -= rows;
            gone += rows;
        }
        gone
    }

    /// Rewrite the sink keys of every layer from their unrotated copies through `f` (a
    /// RoPE shift), then re-apply the Hadamard rotation: the CPU cache's `rewrite_sinks`,
    /// on the host, uploaded. A cache that does not slide keeps no copies and does nothing.
    pub fn rewrite_sinks(&mut self, d: &GpuDevice, mut f: impl FnMut(&mut [f32])) -> Result<()> {
        let Some((pk, _)) = &self.pristine else {
            return Ok(());
        };
        let (kvd, n) = (self.geom.kv_dim(), self.n_sink);
        if n == 0 {
            return Ok(());
        }
        let row_b = 2 * kvd as u64;
        let parts: Vec<_> = (0..self.geom.n_layer)
            .map(|l| (pk, (l * self.sink_cap) as u64 * row_b, n as u64 * row_b))
            .collect();
        let bytes = d.read_many(&parts)?;
        let mut row = vec![0f32; kvd];
        let mut out = vec![0u8; n * kvd * 2];
        for l in 0..self.geom.n_layer {
            let layer = &bytes[l * n * kvd * 2..(l + 1) * n * kvd * 2];
            for r in 0..n {
                let src = &layer[r * kvd * 2..(r + 1) * kvd * 2];
                for (x, c) in row.iter_mut().zip(src.chunks_exact(2)) {
                    *x = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
                f(&mut row);
                if let Some((signs, _)) = &self.signs {
                    hadamard::rotate_heads(&mut row, signs);
                }
                for (o, &x) in out[r * kvd * 2..].chunks_exact_mut(2).zip(row.iter()) {
                    o.copy_from_slice(&f16::from_f32(x).to_bits().to_le_bytes());
                }
            }
            d.write(&self.kf, self.row0(l) as u64 * row_b, &out)?;
        }
        Ok(())
    }

    /// Plan a batch of `n` tokens: quantize (on the host) and upload the pages that leave
    /// the window during it, and upload the keys each of its queries sees. The caller has
    /// checked that the tokens fit the capacity.
    pub fn begin(&mut self, d: &GpuDevice, n: usize) -> Result<()> {
        self.plan = None;
        let p = self.pg.page;
        let plan = BatchPlan::new(
            n,
            self.n_sink,
            self.sink_cap,
            self.n_pages,
            self.tail_len,
            self.window,
            p,
        );
        if n == 0
            || n > self.n_batch
            || plan.tail_after() > self.tail_cap
            || plan.pages_before + plan.new_pages > self.n_slots
        {
            return Err(Error::ContextFull(format!(
                "{} tokens in the KV cache + {n} new do not fit (batches of at most {})",
                self.len(),
                self.n_batch
            )));
        }
        // Pages made of committed rows are quantized now, for every layer at once; pages
        // that take rows of this batch after each layer's store (module docs).
        self.late_pages = plan.new_pages * p > plan.tail_before;
        if plan.new_pages > 0 && !self.late_pages {
            self.quantize_pages(d, &plan, 0..self.geom.n_layer)?;
        }
        let mut spans = Vec::with_capacity(8 * n);
        for t in 0..n {
            let s = plan.span(t);
            spans.extend([u(s.sinks)?, u(s.pages)?, u(s.tail_lo)?, u(s.tail_hi)?]);
            spans.extend([u(self.page0)?, u(self.n_slots.max(1))?, 0, 0]);
        }
        d.write(&self.span, 0, bytemuck::cast_slice(&spans))?;
        self.plan = Some(plan);
        Ok(())
    }

    /// First row of layer `l` in `kf`/`vf`.
    fn row0(&self, l: usize) -> usize {
        l * (self.sink_cap + self.tail_cap)
    }

    /// Read back window rows `0..new_pages·P` of `layers`, quantize them page by page with
    /// the CPU's quantizer and upload the pages to their slots.
    fn quantize_pages(
        &self,
        d: &GpuDevice,
        plan: &BatchPlan,
        layers: std::ops::Range<usize>,
    ) -> Result<()> {
        let (p, kvd, hd) = (self.pg.page, self.geom.kv_dim(), self.geom.head_dim);
        let (nl, nk) = (layers.len(), self.geom.n_kv_head);
        let rows = plan.new_pages * p;
        let row_b = 2 * kvd as u64;
        // Logical rows 0..rows of the ring: at most two contiguous runs per layer.
        let start = self.ring % self.tail_cap;
        let first = rows.min(self.tail_cap - start);
        let mut parts = Vec::with_capacity(4 * nl);
        for buf in [&self.kf, &self.vf] {
            for l in layers.clone() {
                let base = (self.row0(l) + self.sink_cap) as u64;
                parts.push((buf, (base + start as u64) * row_b, first as u64 * row_b));
                if rows > first {
                    parts.push((buf, base * row_b, (rows - first) as u64 * row_b));
                }
            }
        }
        let bytes = d.read_many(&parts)?;
        let vals: Vec<f16> = bytes
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        let per_layer = rows * kvd;
        if vals.len() != 2 * nl * per_layer {
            return Err(Error::Internal("KV page readback size".into()));
        }
        let (ks, vs) = vals.split_at(nl * per_layer);
        let (cb, ml, pb) = (self.pg.code_bytes(), self.pg.meta_len(), self.pg.bytes());
        let mut codes = vec![0u8; cb];
        let mut meta = vec![f16::ZERO; ml];
        let mut upload = vec![0u8; nk * pb];
        for (li, l) in layers.enumerate() {
            for pi in 0..plan.new_pages {
                let at = li * per_layer + pi * p * kvd;
                let (k, v) = (&ks[at..at + p * kvd], &vs[at..at + p * kvd]);
                for h in 0..nk {
                    quantize_page(&self.pg, k, v, kvd, h * hd, &mut codes, &mut meta);
                    let dst = &mut upload[h * pb..(h + 1) * pb];
                    dst[..cb].copy_from_slice(&codes);
                    for (o, m) in dst[cb..].chunks_exact_mut(2).zip(&meta) {
                        o.copy_from_slice(&m.to_bits().to_le_bytes());
                    }
                }
                let slot = (self.page0 + plan.pages_before + pi) % self.n_slots;
                d.write(
                    &self.pages,
                    ((l * self.n_slots + slot) * nk * pb) as u64,
                    &upload,
                )?;
            }
        }
        Ok(())
    }

    /// The bytes of page `page` of KV head `kv_head` in layer `layer` as stored on the
    /// device (codes, then the f16 metadata little-endian), for tests.
    pub fn read_page(
        &self,
        d: &GpuDevice,
        layer: usize,
        page: usize,
        kv_head: usize,
    ) -> Result<Vec<u8>> {
        if layer >= self.geom.n_layer || page >= self.n_slots || kv_head >= self.geom.n_kv_head {
            return Err(Error::invalid(format!(
                "page {page} of KV head {kv_head} in layer {layer}"
            )));
        }
        let pb = self.pg.bytes();
        let at = ((layer * self.n_slots + page) * self.geom.n_kv_head + kv_head) * pb;
        d.read(&self.pages, at as u64, pb as u64)
    }

    /// Tokens of the planned batch (0 when none is planned).
    pub fn planned_n(&self) -> usize {
        self.plan.map_or(0, |p| p.n)
    }

    fn planned(&self) -> Result<BatchPlan> {
        self.plan
            .ok_or_else(|| Error::Internal("GPU KV call without a planned batch".into()))
    }

    /// Record storing layer `layer`'s keys (after RoPE) and values of the planned batch
    /// (`n × kv_dim` f32 each in `k`, `v`) as f16 rows.
    pub fn store(
        &self,
        r: &mut Recorder,
        layer: usize,
        k: &GpuBuffer,
        v: &GpuBuffer,
    ) -> Result<()> {
        let plan = self.planned()?;
        let kvd = self.geom.kv_dim();
        let n_vals = plan.n * kvd;
        if layer >= self.geom.n_layer
            || (k.bytes() as usize) < 4 * n_vals
            || (v.bytes() as usize) < 4 * n_vals
        {
            return Err(Error::invalid(format!(
                "GPU KV store of {} tokens into layer {layer}",
                plan.n
            )));
        }
        if let (Some((pk, pv)), true) = (&self.pristine, plan.sink_take > 0) {
            // The sinks' keys before rotation, for re-rotating them after a slide.
            let at = (layer * self.sink_cap + plan.n_sink_before) * kvd;
            kv_store(r, k, v, pk, pv, plan.sink_take * kvd, at)?;
        }
        if let Some((signs, sb)) = &self.signs {
            let hd = self.geom.head_dim;
            let norm = 1.0 / (signs.len() as f32).sqrt();
            r.run(
                &KvRotate {
                    keys: k,
                    signs: sb,
                    heads: u(plan.n * self.geom.n_kv_head)?,
                    head_dim: u(hd)?,
                    norm,
                },
                grid(plan.n * self.geom.n_kv_head),
            )?;
        }
        let ring0 = (self.ring + plan.tail_before) % self.tail_cap;
        r.run(
            &KvqStore {
                k_cache: &self.kf,
                v_cache: &self.vf,
                k,
                v,
                n: u(plan.n)?,
                kv_dim: u(kvd)?,
                sink_take: u(plan.sink_take)?,
                n_sink_before: u(plan.n_sink_before)?,
                row0: u(self.row0(layer))?,
                sink_cap: u(self.sink_cap)?,
                tail_cap: u(self.tail_cap)?,
                ring0: u(ring0)?,
            },
            grid((n_vals / 2).div_ceil(WG)),
        )?;
        if self.late_pages && plan.new_pages > 0 {
            // The batch's own rows become pages: quantize them before the attention.
            r.flush()?;
            self.quantize_pages(r.device(), &plan, layer..layer + 1)?;
        }
        Ok(())
    }

    /// Record the attention of the planned batch's queries `q` (`n × n_head × head_dim`)
    /// over layer `layer` (after its [`Self::store`]) into `out`.
    pub fn attend(
        &self,
        r: &mut Recorder,
        layer: usize,
        n_head: usize,
        q: &GpuBuffer,
        out: &GpuBuffer,
        scale: f32,
    ) -> Result<()> {
        let plan = self.planned()?;
        let (nk, hd) = (self.geom.n_kv_head, self.geom.head_dim);
        let qn = plan.n * n_head * hd;
        if layer >= self.geom.n_layer
            || n_head == 0
            || !n_head.is_multiple_of(nk)
            || (q.bytes() as usize) < 4 * qn
            || (out.bytes() as usize) < 4 * qn
        {
            return Err(Error::invalid(format!(
                "GPU quantized KV attention: {n_head} heads over {nk} KV heads, layer {layer}"
            )));
        }
        let page_word = layer * self.n_slots * nk * self.pg.bytes() / 4;
        r.run(
            &KvqAttention {
                k_cache: &self.kf,
                v_cache: &self.vf,
                q,
                pages: &self.pages,
                span: &self.span,
                out,
                // Unused without rotation; any read-only buffer fills the binding.
                signs: self.signs.as_ref().map_or(&self.span, |(_, b)| b),
                n_head: u(n_head)?,
                n_kv_head: u(nk)?,
                head_dim: u(hd)?,
                n_tokens: u(plan.n)?,
                row0: u(self.row0(layer))?,
                sink_cap: u(self.sink_cap)?,
                tail_cap: u(self.tail_cap)?,
                ring: u(self.ring)?,
                page_word: u(page_word)?,
                page: u(self.pg.page)?,
                vgroup: u(self.pg.vgroup)?,
                k_outliers: u(self.pg.k_outliers)?,
                scale,
                rotated: f32::from(u8::from(self.signs.is_some())),
                inv_sqrt_hd: 1.0 / (hd as f32).sqrt(),
                bits: self.pg.kbits.bits() as u32,
            },
            grid(plan.n * n_head),
        )
    }

    /// Make the planned batch part of the cache (after its forward pass ran).
    pub fn commit(&mut self) {
        let Some(plan) = self.plan.take() else {
            return;
        };
        let quantized = plan.new_pages * self.pg.page;
        self.n_sink += plan.sink_take;
        self.n_pages += plan.new_pages;
        self.tail_len = plan.tail_after() - quantized;
        self.ring = (self.ring + quantized) % self.tail_cap;
    }

    /// Drop a planned batch (nothing of it becomes visible).
    pub fn abort(&mut self) {
        self.plan = None;
    }
}
