//! The quantized KV cache: attention sinks and a recent window in f16, everything between
//! in quantized pages (formats in [`super::quant`]).
//!
//! ```text
//! logical tokens:  [ sinks | page 0 | page 1 | ... | window (f16) ]
//! per layer:
//!   sink_k, sink_v  [sinks][kv_dim] f16          (keys Hadamard-rotated when enabled)
//!   sink_pristine   [sinks][kv_dim] f16          (keys before rotation; slide policy only)
//!   codes           [slot][kv_head][code bytes]  u8
//!   meta            [slot][kv_head][meta]        f16
//!   tail_k, tail_v  [tail rows][kv_dim] f16      (the window + staging for one batch)
//! shared by layers: pages: logical page → slot; free: unused slots
//! ```
//! All memory is allocated at creation; storing, quantizing, attending and sliding allocate
//! nothing. A batch is planned once ([`QuantCache::begin`]), stored layer by layer, attended,
//! and committed ([`QuantCache::commit`]), which drops the f16 rows of the pages quantized
//! during the batch.

use half::f16;

use super::budget::{tail_rows, KvGeom};
use super::hadamard;
use super::quant::{quantize_page, BatchPlan, PageGeom};
use crate::backend::cpu::attention::AttnShape;
use crate::backend::cpu::attention_q::{attention_q, work_len, QLayerView};
use crate::backend::cpu::Pool;
use crate::error::{Error, Result};

/// A quantized, paged KV cache for every layer of a model.
pub struct QuantCache {
    geom: KvGeom,
    pg: PageGeom,
    window: usize,
    signs: Option<Vec<f32>>,
    sink_cap: usize,
    keep_pristine: bool,
    tail_cap: usize,
    n_slots: usize,
    sink_k: Vec<f16>,
    sink_v: Vec<f16>,
    sink_pristine: Vec<f16>,
    codes: Vec<u8>,
    meta: Vec<f16>,
    tail_k: Vec<f16>,
    tail_v: Vec<f16>,
    // Committed state.
    n_sink: usize,
    pages: Vec<u32>,
    free: Vec<u32>,
    tail_len: usize,
    // The batch being ingested.
    batch: Option<BatchPlan>,
    work: Vec<f32>,
}

fn alloc<T: Clone>(n: usize, zero: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::OutOfMemory(format!(
            "cannot allocate the KV cache's {what} ({n} elements)"
        ))
    })?;
    v.resize(n, zero);
    Ok(v)
}

impl QuantCache {
    /// A cache of `capacity` tokens taking batches of up to `n_batch`, attended by a pool of
    /// `n_threads` for models with `n_head` query heads.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        geom: KvGeom,
        pg: PageGeom,
        window: usize,
        sinks: usize,
        rotate: bool,
        keep_pristine: bool,
        capacity: usize,
        n_batch: usize,
        n_head: usize,
        n_threads: usize,
    ) -> Result<Self> {
        let kvd = geom.kv_dim();
        let sink_cap = sinks.min(capacity);
        let tail_cap = tail_rows(window, pg.page, n_batch, capacity);
        let n_slots = capacity.saturating_sub(sink_cap + window) / pg.page;
        if n_slots > u32::MAX as usize {
            return Err(Error::OutOfMemory(format!("{capacity} tokens of KV cache")));
        }
        let per_layer_slots = n_slots * geom.n_kv_head;
        let big = |a: usize, b: usize| {
            a.checked_mul(b)
                .and_then(|x| x.checked_mul(geom.n_layer))
                .ok_or_else(|| Error::OutOfMemory(format!("{capacity} tokens of KV cache")))
        };
        let shape = AttnShape {
            n_head,
            n_kv_head: geom.n_kv_head,
            head_dim: geom.head_dim,
        };
        Ok(QuantCache {
            geom,
            pg,
            window,
            signs: rotate.then(|| hadamard::signs(geom.head_dim)),
            sink_cap,
            keep_pristine,
            tail_cap,
            n_slots,
            sink_k: alloc(big(sink_cap, kvd)?, f16::ZERO, "sinks")?,
            sink_v: alloc(big(sink_cap, kvd)?, f16::ZERO, "sinks")?,
            sink_pristine: alloc(
                if keep_pristine {
                    big(sink_cap, kvd)?
                } else {
                    0
                },
                f16::ZERO,
                "sinks",
            )?,
            codes: alloc(big(per_layer_slots, pg.code_bytes())?, 0u8, "pages")?,
            meta: alloc(big(per_layer_slots, pg.meta_len())?, f16::ZERO, "pages")?,
            tail_k: alloc(big(tail_cap, kvd)?, f16::ZERO, "window")?,
            tail_v: alloc(big(tail_cap, kvd)?, f16::ZERO, "window")?,
            n_sink: 0,
            pages: Vec::with_capacity(n_slots),
            free: (0..n_slots as u32).rev().collect(),
            tail_len: 0,
            batch: None,
            work: alloc(
                work_len(
                    shape,
                    pg.page,
                    n_threads,
                    sink_cap.div_ceil(pg.page) + n_slots + tail_cap.div_ceil(pg.page),
                ),
                0f32,
                "scratch",
            )?,
        })
    }

    /// Tokens cached (committed).
    pub fn len(&self) -> usize {
        self.n_sink + self.pages.len() * self.pg.page + self.tail_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn page_geom(&self) -> &PageGeom {
        &self.pg
    }

    /// Committed quantized pages.
    pub fn n_pages(&self) -> usize {
        self.pages.len()
    }

    /// Committed f16 window rows (after the sinks and pages).
    pub fn window_len(&self) -> usize {
        self.tail_len
    }

    /// Sink tokens held.
    pub fn n_sink(&self) -> usize {
        self.n_sink
    }

    /// Codes and metadata of logical page `page` (including pages of a planned batch) of
    /// KV head `kv_head` in layer `layer` (the GPU cache is tested against these bytes).
    pub fn page(&self, layer: usize, page: usize, kv_head: usize) -> Option<(&[u8], &[f16])> {
        let slot = *self.pages.get(page)? as usize;
        if layer >= self.geom.n_layer || kv_head >= self.geom.n_kv_head {
            return None;
        }
        let at = (layer * self.n_slots + slot) * self.geom.n_kv_head + kv_head;
        let (cb, ml) = (self.pg.code_bytes(), self.pg.meta_len());
        Some((
            &self.codes[at * cb..(at + 1) * cb],
            &self.meta[at * ml..(at + 1) * ml],
        ))
    }

    /// Bytes allocated for keys and values.
    pub fn bytes(&self) -> usize {
        (self.sink_k.len() + self.sink_v.len() + self.sink_pristine.len()) * 2
            + self.codes.len()
            + self.meta.len() * 2
            + (self.tail_k.len() + self.tail_v.len()) * 2
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.abort();
        self.n_sink = 0;
        self.tail_len = 0;
        self.free.clear();
        self.free.extend((0..self.n_slots as u32).rev());
        self.pages.clear();
    }

    /// Plan a batch of `n` tokens. The caller has checked that they fit the capacity.
    pub fn begin(&mut self, n: usize) -> Result<()> {
        self.abort();
        let plan = BatchPlan::new(
            n,
            self.n_sink,
            self.sink_cap,
            self.pages.len(),
            self.tail_len,
            self.window,
            self.pg.page,
        );
        if plan.tail_after() > self.tail_cap || plan.new_pages > self.free.len() {
            return Err(Error::ContextFull(format!(
                "{} tokens in the KV cache + {n} new do not fit",
                self.len()
            )));
        }
        for _ in 0..plan.new_pages {
            let slot = self.free.pop().expect("checked above");
            self.pages.push(slot);
        }
        self.batch = Some(plan);
        Ok(())
    }

    /// Drop a planned batch (nothing of it becomes visible).
    pub fn abort(&mut self) {
        if let Some(plan) = self.batch.take() {
            for slot in self.pages.drain(plan.pages_before..).rev() {
                self.free.push(slot);
            }
        }
    }

    /// Store layer `layer`'s keys and values (`n × kv_dim` f32 each, keys after RoPE) of the
    /// planned batch, and quantize the pages that leave the window.
    pub fn store(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let plan = self
            .batch
            .ok_or_else(|| Error::Internal("KV store without a planned batch".into()))?;
        let kvd = self.geom.kv_dim();
        if layer >= self.geom.n_layer || k.len() != plan.n * kvd || v.len() != k.len() {
            return Err(Error::Internal(format!(
                "KV store of {} values into layer {layer}",
                k.len()
            )));
        }
        let hd = self.geom.head_dim;
        let mut row = [0f32; 4096];
        let mut put_row =
            |dst_k: &mut [f16], dst_v: &mut [f16], pristine: Option<&mut [f16]>, i| {
                let src = &k[i * kvd..(i + 1) * kvd];
                if let Some(p) = pristine {
                    for (d, &s) in p.iter_mut().zip(src) {
                        *d = f16::from_f32(s);
                    }
                }
                match &self.signs {
                    Some(signs) if kvd <= row.len() => {
                        let r = &mut row[..kvd];
                        r.copy_from_slice(src);
                        hadamard::rotate_heads(r, signs);
                        for (d, &s) in dst_k.iter_mut().zip(r.iter()) {
                            *d = f16::from_f32(s);
                        }
                    }
                    Some(signs) => {
                        // Wider than the stack row: rotate head by head.
                        for (dh, sh) in dst_k.chunks_exact_mut(hd).zip(src.chunks_exact(hd)) {
                            let r = &mut row[..hd];
                            r.copy_from_slice(sh);
                            hadamard::rotate(r, signs);
                            for (d, &s) in dh.iter_mut().zip(r.iter()) {
                                *d = f16::from_f32(s);
                            }
                        }
                    }
                    None => {
                        for (d, &s) in dst_k.iter_mut().zip(src) {
                            *d = f16::from_f32(s);
                        }
                    }
                }
                for (d, &s) in dst_v.iter_mut().zip(&v[i * kvd..(i + 1) * kvd]) {
                    *d = f16::from_f32(s);
                }
            };
        let sink_base = layer * self.sink_cap * kvd;
        for i in 0..plan.sink_take {
            let at = sink_base + (plan.n_sink_before + i) * kvd;
            let pristine = if self.keep_pristine {
                Some(&mut self.sink_pristine[at..at + kvd])
            } else {
                None
            };
            put_row(
                &mut self.sink_k[at..at + kvd],
                &mut self.sink_v[at..at + kvd],
                pristine,
                i,
            );
        }
        let tail_base = layer * self.tail_cap * kvd;
        for i in plan.sink_take..plan.n {
            let at = tail_base + (plan.tail_before + i - plan.sink_take) * kvd;
            put_row(
                &mut self.tail_k[at..at + kvd],
                &mut self.tail_v[at..at + kvd],
                None,
                i,
            );
        }
        // Pages that leave the window during this batch, from its oldest rows.
        let (cb, ml) = (self.pg.code_bytes(), self.pg.meta_len());
        let nk = self.geom.n_kv_head;
        for p in 0..plan.new_pages {
            let slot = self.pages[plan.pages_before + p] as usize;
            let rows = tail_base + p * self.pg.page * kvd;
            let rows_len = self.pg.page * kvd;
            for h in 0..nk {
                let at = (layer * self.n_slots + slot) * nk + h;
                quantize_page(
                    &self.pg,
                    &self.tail_k[rows..rows + rows_len],
                    &self.tail_v[rows..rows + rows_len],
                    kvd,
                    h * hd,
                    &mut self.codes[at * cb..(at + 1) * cb],
                    &mut self.meta[at * ml..(at + 1) * ml],
                );
            }
        }
        Ok(())
    }

    /// Attention of the planned batch's queries over layer `layer` (after its `store`).
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        pool: &Pool,
        layer: usize,
        shape: AttnShape,
        q: &[f32],
        n: usize,
        scale: f32,
        out: &mut [f32],
    ) -> Result<()> {
        let plan = self
            .batch
            .ok_or_else(|| Error::Internal("KV attention without a planned batch".into()))?;
        if n != plan.n {
            return Err(Error::Internal(
                "attention batch differs from the stored one".into(),
            ));
        }
        let kvd = self.geom.kv_dim();
        let nk = self.geom.n_kv_head;
        let (cb, ml) = (self.pg.code_bytes(), self.pg.meta_len());
        let slots = self.n_slots * nk;
        let sinks = layer * self.sink_cap * kvd..(layer + 1) * self.sink_cap * kvd;
        let tail = layer * self.tail_cap * kvd..(layer + 1) * self.tail_cap * kvd;
        let view = QLayerView {
            pg: self.pg,
            n_kv_head: nk,
            sink_k: &self.sink_k[sinks.clone()],
            sink_v: &self.sink_v[sinks],
            codes: &self.codes[layer * slots * cb..(layer + 1) * slots * cb],
            meta: &self.meta[layer * slots * ml..(layer + 1) * slots * ml],
            pages: &self.pages,
            tail_k: &self.tail_k[tail.clone()],
            tail_v: &self.tail_v[tail],
            signs: self.signs.as_deref(),
            plan,
        };
        attention_q(pool, shape, &view, q, n, scale, &mut self.work, out);
        Ok(())
    }

    /// A view of layer `layer` for the reference implementation in tests.
    #[cfg(test)]
    pub(crate) fn view(&self, layer: usize) -> QLayerView<'_> {
        let kvd = self.geom.kv_dim();
        let nk = self.geom.n_kv_head;
        let (cb, ml) = (self.pg.code_bytes(), self.pg.meta_len());
        let slots = self.n_slots * nk;
        let sinks = layer * self.sink_cap * kvd..(layer + 1) * self.sink_cap * kvd;
        let tail = layer * self.tail_cap * kvd..(layer + 1) * self.tail_cap * kvd;
        QLayerView {
            pg: self.pg,
            n_kv_head: nk,
            sink_k: &self.sink_k[sinks.clone()],
            sink_v: &self.sink_v[sinks],
            codes: &self.codes[layer * slots * cb..(layer + 1) * slots * cb],
            meta: &self.meta[layer * slots * ml..(layer + 1) * slots * ml],
            pages: &self.pages,
            tail_k: &self.tail_k[tail.clone()],
            tail_v: &self.tail_v[tail],
            signs: self.signs.as_deref(),
            plan: self.batch.unwrap_or_default(),
        }
    }

    /// Make the planned batch part of the cache.
    pub fn commit(&mut self) {
        let Some(plan) = self.batch.take() else {
            return;
        };
        self.n_sink += plan.sink_take;
        let quantized = plan.new_pages * self.pg.page;
        let after = plan.tail_after();
        self.drop_window_front(quantized, after);
    }

    /// Remove the first `drop` of `rows` window rows in every layer.
    fn drop_window_front(&mut self, drop: usize, rows: usize) {
        let kvd = self.geom.kv_dim();
        if drop > 0 && rows > drop {
            for l in 0..self.geom.n_layer {
                let base = l * self.tail_cap * kvd;
                self.tail_k
                    .copy_within(base + drop * kvd..base + rows * kvd, base);
                self.tail_v
                    .copy_within(base + drop * kvd..base + rows * kvd, base);
            }
        }
        self.tail_len = rows - drop.min(rows);
    }

    /// Evict at least `want` tokens after the sinks (whole pages first, then window rows);
    /// returns how many were evicted. Only between batches.
    pub fn evict(&mut self, want: usize) -> usize {
        self.abort();
        let page = self.pg.page;
        let n_pages = want.div_ceil(page).min(self.pages.len());
        for slot in self.pages.drain(..n_pages) {
            self.free.push(slot);
        }
        let mut gone = n_pages * page;
        if gone < want {
            let rows = (want - gone).min(self.tail_len);
            self.drop_window_front(rows, self.tail_len);
            gone += rows;
        }
        gone
    }

    /// Rewrite the sink keys of every layer from their pristine (unrotated) copies through
    /// `f` (a RoPE shift), then re-apply the Hadamard rotation. Needs `keep_pristine`.
    pub fn rewrite_sinks(&mut self, mut f: impl FnMut(&mut [f32])) {
        if !self.keep_pristine {
            return;
        }
        let kvd = self.geom.kv_dim();
        // The attention scratch is free between batches and holds at least kv_dim floats.
        let row = &mut self.work[..kvd];
        for l in 0..self.geom.n_layer {
            for r in 0..self.n_sink {
                let at = (l * self.sink_cap + r) * kvd;
                for (d, s) in row.iter_mut().zip(&self.sink_pristine[at..at + kvd]) {
                    *d = s.to_f32();
                }
                f(row);
                if let Some(signs) = &self.signs {
                    hadamard::rotate_heads(row, signs);
                }
                for (d, &s) in self.sink_k[at..at + kvd].iter_mut().zip(row.iter()) {
                    *d = f16::from_f32(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::quant::{pages_to_quantize, QBits};

    const GEOM: KvGeom = KvGeom {
        n_layer: 2,
        n_kv_head: 2,
        head_dim: 64,
    };

    fn pg(bits: QBits) -> PageGeom {
        PageGeom {
            kbits: bits,
            vbits: bits,
            k_outliers: 8,
            page: 32,
            head_dim: 64,
            vgroup: 32,
        }
    }

    /// Deterministic K/V rows of token `i` in layer `l`.
    fn rows(l: usize, i0: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let kvd = GEOM.kv_dim();
        let f = |i: usize, c: usize, salt: usize| {
            (((i * 31 + c * 17 + l * 7 + salt) % 97) as f32 - 48.0) / 16.0
        };
        let k = (0..n * kvd).map(|x| f(i0 + x / kvd, x % kvd, 0)).collect();
        let v = (0..n * kvd).map(|x| f(i0 + x / kvd, x % kvd, 5)).collect();
        (k, v)
    }

    fn feed(c: &mut QuantCache, i0: usize, n: usize) {
        c.begin(n).unwrap();
        for l in 0..GEOM.n_layer {
            let (k, v) = rows(l, i0, n);
            c.store(l, &k, &v).unwrap();
        }
        c.commit();
    }

    /// Token by token, a page leaves the window exactly when the window reaches R + P tokens,
    /// the window then holds R; sinks fill first.
    #[test]
    fn pages_appear_at_the_window_edge() {
        let (sinks, window, page) = (3usize, 40usize, 32usize);
        let mut c = QuantCache::new(
            GEOM,
            pg(QBits::B4),
            window,
            sinks,
            false,
            false,
            300,
            8,
            4,
            1,
        )
        .unwrap();
        for i in 0..300 {
            feed(&mut c, i, 1);
            let len = i + 1;
            assert_eq!(c.len(), len);
            let after_sinks = len.saturating_sub(sinks);
            assert_eq!(c.n_sink(), len.min(sinks));
            let expect_pages = pages_to_quantize(after_sinks, window, page);
            assert_eq!(c.n_pages(), expect_pages, "at {len}");
            assert_eq!(c.window_len(), after_sinks - expect_pages * page);
            if after_sinks >= window {
                assert!(
                    (window..window + page).contains(&c.window_len()),
                    "at {len}"
                );
            }
        }
    }

    /// One big batch, several small ones and token-by-token ingestion leave byte-identical
    /// caches (same pages, same codes, same window), also across page boundaries.
    #[test]
    fn batching_does_not_change_the_cache() {
        for bits in [QBits::B8, QBits::B2] {
            let make =
                || QuantCache::new(GEOM, pg(bits), 40, 3, true, true, 260, 200, 4, 2).unwrap();
            let mut one = make();
            feed(&mut one, 0, 200);
            feed(&mut one, 200, 50);
            let mut many = make();
            let mut i = 0;
            for n in [1usize, 2, 70, 33, 1, 64, 29] {
                feed(&mut many, i, n);
                i += n;
            }
            assert_eq!(i, 200);
            feed(&mut many, 200, 50);
            let mut single = make();
            for i in 0..250 {
                feed(&mut single, i, 1);
            }
            for other in [&many, &single] {
                assert_eq!(one.len(), other.len());
                assert_eq!(one.n_pages(), other.n_pages());
                let slot_bytes = |c: &QuantCache, p: usize| -> (Vec<u8>, Vec<f16>) {
                    let (cb, ml) = (c.pg.code_bytes(), c.pg.meta_len());
                    let mut codes = Vec::new();
                    let mut meta = Vec::new();
                    for l in 0..GEOM.n_layer {
                        for h in 0..GEOM.n_kv_head {
                            let at = (l * c.n_slots + c.pages[p] as usize) * 2 + h;
                            codes.extend_from_slice(&c.codes[at * cb..(at + 1) * cb]);
                            meta.extend_from_slice(&c.meta[at * ml..(at + 1) * ml]);
                        }
                    }
                    (codes, meta)
                };
                for p in 0..one.n_pages() {
                    assert!(
                        slot_bytes(&one, p) == slot_bytes(other, p),
                        "{bits:?} page {p}"
                    );
                }
                let kvd = GEOM.kv_dim();
                for l in 0..GEOM.n_layer {
                    let w = |c: &QuantCache| {
                        let at = l * c.tail_cap * kvd;
                        c.tail_k[at..at + c.tail_len * kvd].to_vec()
                    };
                    assert_eq!(w(&one), w(other));
                    let s = |c: &QuantCache| c.sink_k[l * 3 * kvd..(l + 1) * 3 * kvd].to_vec();
                    assert_eq!(s(&one), s(other));
                }
            }
        }
    }

    /// Eviction frees whole pages first, then window rows; freed slots are reused; a batch
    /// that cannot get pages is refused without changing the cache.
    #[test]
    fn eviction_and_slot_reuse() {
        let mut c =
            QuantCache::new(GEOM, pg(QBits::B4), 40, 3, false, false, 220, 150, 4, 1).unwrap();
        feed(&mut c, 0, 150);
        let pages = c.n_pages();
        assert_eq!(pages, (150 - 3 - 40) / 32);
        assert_eq!(c.evict(5), 32);
        assert_eq!(c.n_pages(), pages - 1);
        assert_eq!(c.len(), 150 - 32);
        feed(&mut c, 150, 64);
        assert_eq!(c.len(), 150 - 32 + 64);
        // Everything after the sinks can go, pages and window rows alike.
        let n = c.len() - 3;
        assert_eq!(c.evict(n), n);
        assert_eq!((c.len(), c.n_pages(), c.window_len()), (3, 0, 0));
        assert_eq!(c.free.len(), c.n_slots);
        c.reset();
        assert!(c.is_empty());
        // More than the window buffer can stage: refused, state unchanged.
        let mut small =
            QuantCache::new(GEOM, pg(QBits::B4), 40, 3, false, false, 200, 8, 4, 1).unwrap();
        feed(&mut small, 0, 8);
        assert!(matches!(small.begin(150), Err(Error::ContextFull(_))));
        assert_eq!(small.len(), 8);
        feed(&mut small, 8, 8);
        assert_eq!(small.len(), 16);
    }
}

#[cfg(test)]
mod batch_equivalence {
    use super::*;
    use crate::kv::quant::QBits;

    /// A batch attends exactly (bit for bit) as its tokens one at a time, whatever the
    /// thread count, across page transitions.
    #[test]
    fn batched_attention_equals_token_by_token() {
        let geom = KvGeom {
            n_layer: 1,
            n_kv_head: 3,
            head_dim: 64,
        };
        let shape = AttnShape {
            n_head: 9,
            n_kv_head: 3,
            head_dim: 64,
        };
        let pg = PageGeom {
            kbits: QBits::B4,
            vbits: QBits::B4,
            k_outliers: 4,
            page: 32,
            head_dim: 64,
            vgroup: 32,
        };
        let n = 290; // past the first segment (8 blocks)
        let f = |i: usize, salt: usize| (((i * 7919 + salt * 31) % 201) as f32 - 100.0) / 50.0;
        let (kvd, qd) = (192, 576);
        let k: Vec<f32> = (0..n * kvd).map(|i| f(i, 1)).collect();
        let v: Vec<f32> = (0..n * kvd).map(|i| f(i, 2)).collect();
        let q: Vec<f32> = (0..n * qd).map(|i| f(i, 3)).collect();
        let pool = Pool::new(3).unwrap();
        let pool1 = Pool::new(1).unwrap();
        let mut a = QuantCache::new(geom, pg, 32, 4, false, false, 300, 256, 9, 3).unwrap();
        a.begin(n).unwrap();
        a.store(0, &k, &v).unwrap();
        let mut out_a = vec![0f32; n * qd];
        // The batch on one thread: segments merged in order as they come.
        a.attend(&pool1, 0, shape, &q, n, 0.125, &mut out_a)
            .unwrap();
        a.commit();
        let mut b = QuantCache::new(geom, pg, 32, 4, false, false, 300, 1, 9, 3).unwrap();
        let mut out_b = vec![0f32; n * qd];
        for t in 0..n {
            b.begin(1).unwrap();
            b.store(0, &k[t * kvd..(t + 1) * kvd], &v[t * kvd..(t + 1) * kvd])
                .unwrap();
            // One token on three threads: segments run in parallel, merged afterwards.
            b.attend(
                &pool,
                0,
                shape,
                &q[t * qd..(t + 1) * qd],
                1,
                0.125,
                &mut out_b[t * qd..(t + 1) * qd],
            )
            .unwrap();
            b.commit();
        }
        // Bit for bit: the same segments, merged in the same order.
        for t in 0..n {
            for i in 0..qd {
                let (x, y) = (out_a[t * qd + i], out_b[t * qd + i]);
                assert_eq!(x.to_bits(), y.to_bits(), "token {t} elem {i}: {x} vs {y}");
            }
        }
    }
}
