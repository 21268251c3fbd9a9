//! The quantized KV cache (`KvMode` q8/q4/q2) on the GPU: attention sinks and the recent
//! window in f16, everything between in KIVI pages, attended by `shaders/kv_attention.wgsl`
//! straight from the codes. It behaves as the CPU's [`crate::kv::QuantCache`] does (same
//! batch plan, same spans, same pages), so the two backends attend over the same keys.
//!
//! ```text
//! device buffers:
//!   kf, vf  [layer][sink_cap + tail_cap][kv_dim] f16   sinks, then the window as a ring
//!   pages   [layer][slot][kv_head][PageGeom::bytes]    codes then f16 metadata, CPU layout
//!   span    [n_batch][4] u32                           keys each query of the batch sees
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
//! That pages can be quantized before the batch runs relies on the batch being at most the
//! window: a page leaving during a batch then holds only rows committed before it
//! (`new_pages·P ≤ tail_before + n − R ≤ tail_before`), while the batch's queries that come
//! before the page leaves still read its f16 rows from the ring (they stay until commit).
//! Sessions on the GPU cap their batch at the window; [`GpuQuantKv::begin`] checks it.
//!
//! Without eviction (the GPU refuses the sliding window) pages are allocated in order, so
//! logical page `i` lives in slot `i` and the kernel needs no page table.

use half::f16;

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::ops::{grid, WG};
use super::pipeline::{PipeKey, Shader};
use super::record::{Params, Recorder};
use crate::error::{Error, Result};
use crate::kv::budget::{tail_rows, KvGeom, KvParams};
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
    // Committed state.
    n_sink: usize,
    n_pages: usize,
    tail_len: usize,
    /// Ring row of window row 0.
    ring: usize,
    /// The batch being run.
    plan: Option<BatchPlan>,
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
        if let Some(what) = params.gpu_unsupported() {
            return Err(Error::Backend(format!(
                "the GPU backend does not support {what}; use --backend cpu"
            )));
        }
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
        if n_batch == 0 || n_batch > params.window || capacity == 0 {
            return Err(Error::invalid(format!(
                "a quantized GPU KV cache of {capacity} tokens takes batches of 1 to {} tokens (the window), not {n_batch}",
                params.window
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
            pages: d.buffer("kv cache pages", page_bytes as u64)?,
            span: d.buffer("kv spans", 16 * n_batch as u64)?,
            n_sink: 0,
            n_pages: 0,
            tail_len: 0,
            ring: 0,
            plan: None,
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
        self.tail_len = 0;
        self.ring = 0;
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
        if plan.new_pages * p > plan.tail_before {
            return Err(Error::Internal(format!(
                "a batch of {n} tokens quantizes window rows it has not stored yet (window {})",
                self.window
            )));
        }
        if plan.new_pages > 0 {
            self.quantize_pages(d, &plan)?;
        }
        let mut spans = Vec::with_capacity(4 * n);
        for t in 0..n {
            let s = plan.span(t);
            spans.extend([u(s.sinks)?, u(s.pages)?, u(s.tail_lo)?, u(s.tail_hi)?]);
        }
        d.write(&self.span, 0, bytemuck::cast_slice(&spans))?;
        self.plan = Some(plan);
        Ok(())
    }

    /// First row of layer `l` in `kf`/`vf`.
    fn row0(&self, l: usize) -> usize {
        l * (self.sink_cap + self.tail_cap)
    }

    /// Read back window rows `0..new_pages·P` of every layer, quantize them page by page
    /// with the CPU's quantizer and upload the pages to their slots.
    fn quantize_pages(&self, d: &GpuDevice, plan: &BatchPlan) -> Result<()> {
        let (p, kvd, hd) = (self.pg.page, self.geom.kv_dim(), self.geom.head_dim);
        let (nl, nk) = (self.geom.n_layer, self.geom.n_kv_head);
        let rows = plan.new_pages * p;
        let row_b = 2 * kvd as u64;
        // Logical rows 0..rows of the ring: at most two contiguous runs per layer.
        let start = self.ring % self.tail_cap;
        let first = rows.min(self.tail_cap - start);
        let mut parts = Vec::with_capacity(4 * nl);
        for buf in [&self.kf, &self.vf] {
            for l in 0..nl {
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
        for l in 0..nl {
            for pi in 0..plan.new_pages {
                let at = l * per_layer + pi * p * kvd;
                let (k, v) = (&ks[at..at + p * kvd], &vs[at..at + p * kvd]);
                for h in 0..nk {
                    quantize_page(&self.pg, k, v, kvd, h * hd, &mut codes, &mut meta);
                    let dst = &mut upload[h * pb..(h + 1) * pb];
                    dst[..cb].copy_from_slice(&codes);
                    for (o, m) in dst[cb..].chunks_exact_mut(2).zip(&meta) {
                        o.copy_from_slice(&m.to_bits().to_le_bytes());
                    }
                }
                let slot = plan.pages_before + pi;
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
        let ring0 = (self.ring + plan.tail_before) % self.tail_cap;
        r.dispatch(
            PipeKey::new(Shader::KvAttention, "kvq_store"),
            Params::u(&[
                u(plan.n)?,
                u(kvd)?,
                u(plan.sink_take)?,
                u(plan.n_sink_before)?,
                u(self.row0(layer))?,
                u(self.sink_cap)?,
                u(self.tail_cap)?,
                u(ring0)?,
            ]),
            &[(1, &self.kf), (2, &self.vf), (3, k), (4, v)],
            grid((n_vals / 2).div_ceil(WG)),
        )
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
        r.dispatch(
            PipeKey::new(Shader::KvAttention, "kvq_attention").bits(self.pg.kbits.bits() as u32),
            Params::u(&[
                u(n_head)?,
                u(nk)?,
                u(hd)?,
                u(plan.n)?,
                u(self.row0(layer))?,
                u(self.sink_cap)?,
                u(self.tail_cap)?,
                u(self.ring)?,
                u(page_word)?,
                u(self.pg.page)?,
                u(self.pg.vgroup)?,
                u(self.pg.k_outliers)?,
            ])
            .with_f(&[scale]),
            &[
                (1, &self.kf),
                (2, &self.vf),
                (5, q),
                (6, &self.pages),
                (7, &self.span),
                (8, out),
            ],
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
