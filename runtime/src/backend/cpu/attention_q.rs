//! Causal grouped-query attention over a quantized, paged KV cache (see [`crate::kv::quant`]
//! for the page layout and [`crate::kv::paged`] for the cache).
//!
//! The keys a query sees come in three regions, in this order:
//! ```text
//! sinks (f16 rows) | quantized pages (P tokens each) | window (f16 rows)
//! ```
//! and are walked in blocks of at most P tokens (a whole page, or up to P f16 rows) with an
//! online softmax (running max, running sum, rescaled accumulator), so no score buffer of
//! the context length and no dequantized copy of the cache is ever made. For a page:
//! ```text
//! score_j = Σ_c q_c·(m_c + s_c·u_jc) = Σ_c (q_c·s_c)·u_jc + Σ_c q_c·m_c     (keys, per channel)
//! out    += p_j · (m_jg + s_jg·u_jc)                                       (values, per token)
//! ```
//! Codes are unpacked 32 at a time and turned into floats in registers. The query heads that
//! share a KV head are processed together, so each page is unpacked once per query token.
//!
//! A query's blocks are grouped in segments of [`SEG`] blocks; each segment gives a partial
//! softmax state (max, sum, unnormalized output) and the states are merged in segment order.
//! Work is split over (token, KV head) pairs, dealt to threads round-robin so causal prefill
//! stays balanced; when there are fewer pairs than twice the threads (decode), the segments
//! of a pair run on different threads and are merged afterwards (flash-decoding). The
//! arithmetic per segment and the merge order do not depend on the batch size or the thread
//! count, so a prompt gives the same bits in one batch, token by token, on 1 or 8 threads.

use half::f16;

use super::attention::AttnShape;
use super::dot::{axpy_f16, dot_f16, has_avx2};
use super::pool::Pool;
use crate::kv::hadamard;
use crate::kv::quant::{unpack_block, BatchPlan, PageGeom, Span, BLOCK};

/// One layer of a quantized cache, as the kernel reads it.
#[derive(Clone, Copy)]
pub struct QLayerView<'a> {
    pub pg: PageGeom,
    pub n_kv_head: usize,
    /// Sink rows `[sinks][kv_dim]`.
    pub sink_k: &'a [f16],
    pub sink_v: &'a [f16],
    /// This layer's page slots: `[slot][kv_head][PageGeom::code_bytes]`.
    pub codes: &'a [u8],
    /// `[slot][kv_head][PageGeom::meta_len]`.
    pub meta: &'a [f16],
    /// Slot of each logical page, oldest first (including pages quantized in this batch).
    pub pages: &'a [u32],
    /// Window rows `[rows][kv_dim]`; row 0 is the oldest token not quantized before the batch.
    pub tail_k: &'a [f16],
    pub tail_v: &'a [f16],
    /// Hadamard signs when keys were stored rotated (queries get the same rotation).
    pub signs: Option<&'a [f32]>,
    /// Which keys each query of the batch sees.
    pub plan: BatchPlan,
}

/// Key blocks per segment (see the module docs).
pub const SEG: usize = 8;

/// Floats of scratch [`attention_q`] needs for queries that see at most `max_blocks` blocks.
pub fn work_len(shape: AttnShape, page: usize, n_threads: usize, max_blocks: usize) -> usize {
    let g = shape.n_head / shape.n_kv_head;
    let hd = shape.head_dim;
    let max_segs = max_blocks.div_ceil(SEG).max(1);
    n_threads * per_thread(g, hd, page) + 2 * n_threads * max_segs * g * (hd + 2)
}

/// Per-thread scratch: the running state (g × (hd + 2)), then for one segment: queries,
/// accumulators, scaled queries (g × hd each), scores (g × page), max/sum/bias (g each), one
/// value row (hd) and a page's metadata as f32.
fn per_thread(g: usize, hd: usize, page: usize) -> usize {
    g * (hd + 2) + g * (3 * hd + page + 3) + hd + meta_f32_len(hd, page)
}

/// Upper bound of a page's metadata values (value groups are at least 32 channels).
fn meta_f32_len(hd: usize, page: usize) -> usize {
    2 * hd + 2 * page * hd.div_ceil(32)
}

/// Merge a segment's state `(m, l, acc)` into a running state `dst = [m, l, acc...]`.
/// The same code runs in both work layouts, so results do not depend on the layout.
#[inline]
fn merge_into(dst: &mut [f32], m: f32, l: f32, acc: &[f32]) {
    if l == 0.0 {
        return; // an empty segment
    }
    if dst[1] == 0.0 {
        dst[0] = m;
        dst[1] = l;
        dst[2..].copy_from_slice(acc);
        return;
    }
    let mx = dst[0].max(m);
    let (fa, fb) = ((dst[0] - mx).exp(), (m - mx).exp());
    dst[0] = mx;
    dst[1] = dst[1] * fa + l * fb;
    for (d, &a) in dst[2..].iter_mut().zip(acc) {
        *d = *d * fa + a * fb;
    }
}

/// `out = acc / l` of a finished state.
#[inline]
fn finish(state: &[f32], out: &mut [f32]) {
    let inv = if state[1] > 0.0 { 1.0 / state[1] } else { 0.0 };
    for (d, &a) in out.iter_mut().zip(&state[2..]) {
        *d = a * inv;
    }
}

/// Segments of query `t`.
fn n_segs(view: &QLayerView, t: usize) -> usize {
    Blocks::new(view.plan.span(t), view.pg.page)
        .len()
        .div_ceil(SEG)
        .max(1)
}

struct Ptr(*mut f32);
// SAFETY: every writer of a `Ptr` writes disjoint ranges (see each use).
unsafe impl Sync for Ptr {}

/// Attention of `n_tokens` queries `q` (`[n_tokens][n_head][head_dim]`) over `view`, into
/// `out` (same shape). `work`: at least [`work_len`] floats.
#[allow(clippy::too_many_arguments)]
pub fn attention_q(
    pool: &Pool,
    shape: AttnShape,
    view: &QLayerView,
    q: &[f32],
    n_tokens: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [f32],
) {
    let AttnShape {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = shape;
    let g = n_head / n_kv_head;
    let nth = pool.n_threads();
    let page = view.pg.page;
    let st = g * (hd + 2);
    assert!(n_head % n_kv_head == 0 && view.n_kv_head == n_kv_head && view.pg.head_dim == hd);
    assert!(q.len() >= n_tokens * n_head * hd && out.len() >= n_tokens * n_head * hd);
    let pairs = n_tokens * n_kv_head;
    let pt = per_thread(g, hd, page);
    let (thread_work, merge) = work.split_at_mut((nth * pt).min(work.len()));
    assert!(thread_work.len() == nth * pt);
    let out_ptr = Ptr(out.as_mut_ptr());
    let work_ptr = Ptr(thread_work.as_mut_ptr());
    let simd = has_avx2();
    if pairs >= 2 * nth || nth == 1 {
        // One pair per item: its segments in order, merged as they come.
        pool.run(|ith, nth| {
            let (op, wp) = (&out_ptr, &work_ptr);
            // SAFETY: thread ith owns work[ith*pt..][..pt] (length checked above).
            let w = unsafe { std::slice::from_raw_parts_mut(wp.0.add(ith * pt), pt) };
            let (run, w) = w.split_at_mut(st);
            let mut pair = ith;
            while pair < pairs {
                let (t, kvh) = (pair / n_kv_head, pair % n_kv_head);
                for h in 0..g {
                    run[h * (hd + 2) + 1] = 0.0;
                }
                for seg in 0..n_segs(view, t) {
                    let (m, l, acc) = run_item(simd, shape, view, q, t, kvh, seg, scale, w);
                    for h in 0..g {
                        merge_into(
                            &mut run[h * (hd + 2)..][..hd + 2],
                            m[h],
                            l[h],
                            &acc[h * hd..][..hd],
                        );
                    }
                }
                for h in 0..g {
                    // SAFETY: (t, head) is owned by this pair alone; the slice is in `out`.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(
                            op.0.add((t * n_head + kvh * g + h) * hd),
                            hd,
                        )
                    };
                    finish(&run[h * (hd + 2)..][..hd + 2], o);
                }
                pair += nth;
            }
        });
        return;
    }
    // Few pairs (decode): every (pair, segment) is an item; merge afterwards, in order.
    let segs = (0..n_tokens).map(|t| n_segs(view, t)).max().unwrap_or(1);
    let items = pairs * segs;
    assert!(
        merge.len() >= items * st,
        "attention scratch too small for the context"
    );
    let merge_ptr = Ptr(merge.as_mut_ptr());
    pool.run(|ith, nth| {
        let (wp, mp) = (&work_ptr, &merge_ptr);
        // SAFETY: thread ith owns work[ith*pt..][..pt] (length checked above).
        let w = unsafe { std::slice::from_raw_parts_mut(wp.0.add(ith * pt), pt) };
        let w = &mut w[st..];
        let mut item = ith;
        while item < items {
            let (pair, seg) = (item / segs, item % segs);
            let (t, kvh) = (pair / n_kv_head, pair % n_kv_head);
            // SAFETY: merge slot `item` (items·st <= merge.len(), checked above) belongs to
            // this item alone.
            let dst = unsafe { std::slice::from_raw_parts_mut(mp.0.add(item * st), st) };
            if seg < n_segs(view, t) {
                let (m, l, acc) = run_item(simd, shape, view, q, t, kvh, seg, scale, w);
                for h in 0..g {
                    let d = &mut dst[h * (hd + 2)..][..hd + 2];
                    d[0] = m[h];
                    d[1] = l[h];
                    d[2..].copy_from_slice(&acc[h * hd..][..hd]);
                }
            } else {
                for h in 0..g {
                    dst[h * (hd + 2) + 1] = 0.0;
                }
            }
            item += nth;
        }
    });
    let (run, _) = thread_work.split_at_mut(st);
    for pair in 0..pairs {
        let (t, kvh) = (pair / n_kv_head, pair % n_kv_head);
        for h in 0..g {
            let r = &mut run[h * (hd + 2)..][..hd + 2];
            r[1] = 0.0;
            for seg in 0..segs {
                let p = &merge[((pair * segs + seg) * g + h) * (hd + 2)..][..hd + 2];
                merge_into(r, p[0], p[1], &p[2..]);
            }
            finish(r, &mut out[(t * n_head + kvh * g + h) * hd..][..hd]);
        }
    }
}

/// Blocks of the key sequence a query sees.
#[derive(Clone, Copy)]
struct Blocks {
    span: Span,
    n_sink: usize,
    n_page: usize,
    n_tail: usize,
}

impl Blocks {
    fn new(span: Span, page: usize) -> Self {
        Blocks {
            span,
            n_sink: span.sinks.div_ceil(page),
            n_page: span.pages,
            n_tail: (span.tail_hi - span.tail_lo).div_ceil(page),
        }
    }
    fn len(&self) -> usize {
        self.n_sink + self.n_page + self.n_tail
    }
}

/// Process segment `seg` of one (token, KV head) pair; returns (max, sum, unnormalized
/// output) per query head of the group, as slices of `w`.
#[allow(clippy::too_many_arguments)]
fn run_item<'w>(
    simd: bool,
    shape: AttnShape,
    view: &QLayerView,
    q: &[f32],
    t: usize,
    kvh: usize,
    seg: usize,
    scale: f32,
    w: &'w mut [f32],
) -> (&'w [f32], &'w [f32], &'w [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX2, FMA and F16C were detected at run time (`has_avx2`); the body is
        // the portable code below compiled with those features, plus the `x86` kernels.
        return unsafe { run_item_avx2(shape, view, q, t, kvh, seg, scale, w) };
    }
    let _ = simd;
    run_item_generic::<false>(shape, view, q, t, kvh, seg, scale, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_item_avx2<'w>(
    shape: AttnShape,
    view: &QLayerView,
    q: &[f32],
    t: usize,
    kvh: usize,
    seg: usize,
    scale: f32,
    w: &'w mut [f32],
) -> (&'w [f32], &'w [f32], &'w [f32]) {
    run_item_generic::<true>(shape, view, q, t, kvh, seg, scale, w)
}

/// `o + a·b`, fused on the SIMD path (compiled with FMA).
#[inline(always)]
fn madd<const SIMD: bool>(a: f32, b: f32, o: f32) -> f32 {
    if SIMD {
        a.mul_add(b, o)
    } else {
        o + a * b
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_item_generic<'w, const SIMD: bool>(
    shape: AttnShape,
    view: &QLayerView,
    q: &[f32],
    t: usize,
    kvh: usize,
    seg: usize,
    scale: f32,
    w: &'w mut [f32],
) -> (&'w [f32], &'w [f32], &'w [f32]) {
    let hd = shape.head_dim;
    let g = shape.n_head / shape.n_kv_head;
    let kv_dim = shape.n_kv_head * hd;
    let pg = view.pg;
    let page = pg.page;
    let (qb, rest) = w.split_at_mut(g * hd);
    let (acc, rest) = rest.split_at_mut(g * hd);
    let (qs, rest) = rest.split_at_mut(g * hd);
    let (sc, rest) = rest.split_at_mut(g * page);
    let (mx, rest) = rest.split_at_mut(g);
    let (sum, rest) = rest.split_at_mut(g);
    let (bias, rest) = rest.split_at_mut(g);
    let (vrow, rest) = rest.split_at_mut(hd);
    let mf = &mut rest[..pg.outliers_at()];
    // Queries of the group, scaled, rotated like the stored keys.
    for h in 0..g {
        let src = &q[(t * shape.n_head + kvh * g + h) * hd..][..hd];
        let d = &mut qb[h * hd..][..hd];
        for (d, &s) in d.iter_mut().zip(src) {
            *d = s * scale;
        }
        if let Some(signs) = view.signs {
            hadamard::rotate(d, signs);
        }
    }
    acc.fill(0.0);
    mx.fill(f32::NEG_INFINITY);
    sum.fill(0.0);
    let blocks = Blocks::new(view.plan.span(t), page);
    let nb = blocks.len();
    let (b0, b1) = ((seg * SEG).min(nb), ((seg + 1) * SEG).min(nb));
    for b in b0..b1 {
        // Scores of this block into sc[h][..len].
        let len;
        let f16_rows: Option<(&[f16], &[f16], usize)>;
        let mut page_at = None;
        if b < blocks.n_sink {
            let lo = b * page;
            len = (blocks.span.sinks - lo).min(page);
            f16_rows = Some((view.sink_k, view.sink_v, lo));
        } else if b < blocks.n_sink + blocks.n_page {
            len = page;
            f16_rows = None;
            let slot = view.pages[b - blocks.n_sink] as usize;
            page_at = Some(slot * shape.n_kv_head + kvh);
        } else {
            let lo = blocks.span.tail_lo + (b - blocks.n_sink - blocks.n_page) * page;
            len = (blocks.span.tail_hi - lo).min(page);
            f16_rows = Some((view.tail_k, view.tail_v, lo));
        }
        if let Some((kr, _, lo)) = f16_rows {
            for j in 0..len {
                let krow = &kr[(lo + j) * kv_dim + kvh * hd..][..hd];
                for h in 0..g {
                    sc[h * page + j] = dot_f16(krow, &qb[h * hd..][..hd]);
                }
            }
        } else if let Some(at) = page_at {
            let codes = &view.codes[at * pg.code_bytes()..][..pg.code_bytes()];
            meta_to_f32::<SIMD>(&view.meta[at * pg.meta_len()..][..pg.outliers_at()], mf);
            // score_j = Σ_c (q_c·s_c)·u_jc + Σ_c q_c·m_c
            let (ks, km) = (&mf[..hd], &mf[hd..2 * hd]);
            for h in 0..g {
                let q = &qb[h * hd..][..hd];
                let mut b = 0f32;
                for ((d, &qc), (&s, &m)) in
                    qs[h * hd..][..hd].iter_mut().zip(q).zip(ks.iter().zip(km))
                {
                    *d = qc * s;
                    b = madd::<SIMD>(qc, m, b);
                }
                bias[h] = b;
            }
            page_scores::<SIMD>(&pg, codes, qs, bias, g, sc);
            // Key outliers: add q·(x − x̂) where the codes were far off.
            for pair in view.meta[at * pg.meta_len() + pg.outliers_at()..][..2 * pg.k_outliers]
                .chunks_exact(2)
            {
                let e = pair[1].to_f32();
                if e != 0.0 {
                    let idx = pair[0].to_bits() as usize;
                    let (c, j) = (idx / page, idx % page);
                    for h in 0..g {
                        sc[h * page + j] += qb[h * hd + c] * e;
                    }
                }
            }
        }
        // Online softmax: rescale what was accumulated when the max grows.
        for h in 0..g {
            let s = &mut sc[h * page..][..len];
            let bm = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if bm > mx[h] {
                let f = (mx[h] - bm).exp(); // 0 for the first block (max = −∞)
                sum[h] *= f;
                for a in acc[h * hd..][..hd].iter_mut() {
                    *a *= f;
                }
                mx[h] = bm;
            }
            let m = mx[h];
            let mut l = 0f32;
            for v in s.iter_mut() {
                *v = (*v - m).exp();
                l += *v;
            }
            sum[h] += l;
        }
        // Values.
        if let Some((_, vr, lo)) = f16_rows {
            for j in 0..len {
                let row = &vr[(lo + j) * kv_dim + kvh * hd..][..hd];
                for h in 0..g {
                    let p = sc[h * page + j];
                    if p != 0.0 {
                        axpy_f16(&mut acc[h * hd..][..hd], p, row);
                    }
                }
            }
        } else if let Some(at) = page_at {
            let codes = &view.codes[at * pg.code_bytes()..][..pg.code_bytes()];
            page_values::<SIMD>(&pg, codes, mf, sc, g, acc, vrow);
        }
    }
    (mx, sum, acc)
}

/// f16 → f32 of a page's metadata.
#[inline(always)]
fn meta_to_f32<const SIMD: bool>(meta: &[f16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: SIMD is only true inside `run_item_avx2`, which has AVX2/FMA/F16C enabled
        // and is only called after run-time detection; lengths are checked inside.
        return unsafe { x86::f16_to_f32(meta, out) };
    }
    for (d, s) in out.iter_mut().zip(meta) {
        *d = s.to_f32();
    }
}

/// Scores of the `g` queries against the P keys of one page, into `sc[h][0..P]` (rows of
/// stride P): `qs[h][c] = q_c·s_c` (`[g][head_dim]`), `bias[h] = Σ_c q_c·m_c`.
#[inline(always)]
fn page_scores<const SIMD: bool>(
    pg: &PageGeom,
    codes: &[u8],
    qs: &[f32],
    bias: &[f32],
    g: usize,
    sc: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: as in `meta_to_f32`; the kernel checks every length it relies on.
        return unsafe { x86::page_scores(pg, codes, qs, bias, g, sc) };
    }
    let (p, hd, bits) = (pg.page, pg.head_dim, pg.kbits);
    let (kb, bb) = (pg.k_chan_bytes(), bits.block_bytes());
    for h in 0..g {
        sc[h * p..][..p].fill(bias[h]);
    }
    let mut u = [0u8; BLOCK];
    let mut uf = [0f32; BLOCK];
    for c in 0..hd {
        for blk in 0..p / BLOCK {
            unpack_block(bits, &codes[c * kb + blk * bb..][..bb], &mut u);
            for (f, &x) in uf.iter_mut().zip(&u) {
                *f = x as f32;
            }
            for h in 0..g {
                let a = qs[h * hd + c];
                let o: &mut [f32; BLOCK] = (&mut sc[h * p + blk * BLOCK..][..BLOCK])
                    .try_into()
                    .unwrap();
                for (o, &x) in o.iter_mut().zip(&uf) {
                    *o += a * x;
                }
            }
        }
    }
}

/// `acc[h] += Σ_j probs[h][j] · v_j` over the P tokens of one page (`mf`: the page's
/// metadata as f32); `vrow`: `head_dim` floats of scratch for one dequantized value row.
#[inline(always)]
fn page_values<const SIMD: bool>(
    pg: &PageGeom,
    codes: &[u8],
    mf: &[f32],
    probs: &[f32],
    g: usize,
    acc: &mut [f32],
    vrow: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: as in `meta_to_f32`; the kernel checks every length it relies on.
        return unsafe { x86::page_values(pg, codes, mf, probs, g, acc) };
    }
    let (p, hd, bits) = (pg.page, pg.head_dim, pg.vbits);
    let vc = &codes[pg.v_codes_at()..];
    let ng = pg.v_groups();
    let vs = &mf[2 * hd..2 * hd + p * ng];
    let vm = &mf[2 * hd + p * ng..2 * hd + 2 * p * ng];
    let (vb, bb) = (pg.v_row_bytes(), bits.block_bytes());
    let mut u = [0u8; BLOCK];
    for j in 0..p {
        if (0..g).all(|h| probs[h * p + j] == 0.0) {
            continue;
        }
        for blk in 0..hd / BLOCK {
            let gi = blk * BLOCK / pg.vgroup;
            let (s, m) = (vs[j * ng + gi], vm[j * ng + gi]);
            unpack_block(bits, &vc[j * vb + blk * bb..][..bb], &mut u);
            let d: &mut [f32; BLOCK] = (&mut vrow[blk * BLOCK..][..BLOCK]).try_into().unwrap();
            for (d, &x) in d.iter_mut().zip(&u) {
                *d = m + s * x as f32;
            }
        }
        for h in 0..g {
            let pj = probs[h * p + j];
            for (a, &v) in acc[h * hd..][..hd].iter_mut().zip(vrow.iter()) {
                *a += pj * v;
            }
        }
    }
}

/// AVX2 + FMA + F16C versions of the page loops: codes are unpacked 32 at a time into four
/// 8-float registers; up to three query heads accumulate in registers at once.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use crate::kv::quant::{PageGeom, QBits, BLOCK};

    #[inline(always)]
    unsafe fn widen(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    /// The 32 codes of the packed block at `p` (see `kv::quant::pack_block`) as floats.
    /// Reads `32·BITS/8` bytes from `p`.
    #[inline(always)]
    unsafe fn unpack<const BITS: usize>(p: *const u8) -> [__m256; 4] {
        match BITS {
            8 => [
                widen(_mm_loadl_epi64(p as *const __m128i)),
                widen(_mm_loadl_epi64(p.add(8) as *const __m128i)),
                widen(_mm_loadl_epi64(p.add(16) as *const __m128i)),
                widen(_mm_loadl_epi64(p.add(24) as *const __m128i)),
            ],
            4 => {
                let x = _mm_loadu_si128(p as *const __m128i);
                let m = _mm_set1_epi8(0x0F);
                let lo = _mm_and_si128(x, m);
                let hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
                [
                    widen(lo),
                    widen(_mm_srli_si128(lo, 8)),
                    widen(hi),
                    widen(_mm_srli_si128(hi, 8)),
                ]
            }
            _ => {
                let x = _mm_loadl_epi64(p as *const __m128i);
                let m = _mm_set1_epi8(3);
                [
                    widen(_mm_and_si128(x, m)),
                    widen(_mm_and_si128(_mm_srli_epi16(x, 2), m)),
                    widen(_mm_and_si128(_mm_srli_epi16(x, 4), m)),
                    widen(_mm_and_si128(_mm_srli_epi16(x, 6), m)),
                ]
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n elements are in bounds of both slices.
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        for j in i..n {
            dst[j] = src[j].to_f32();
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn page_scores(
        pg: &PageGeom,
        codes: &[u8],
        qs: &[f32],
        bias: &[f32],
        g: usize,
        sc: &mut [f32],
    ) {
        let (p, hd) = (pg.page, pg.head_dim);
        assert!(p % BLOCK == 0 && codes.len() >= hd * pg.k_chan_bytes());
        assert!(qs.len() >= g * hd && bias.len() >= g && sc.len() >= g * p);
        let mut h0 = 0;
        while h0 < g {
            let hc = (g - h0).min(3);
            match (pg.kbits, hc) {
                (QBits::B8, 3) => scores::<8, 3>(pg, codes, qs, bias, h0, sc),
                (QBits::B8, 2) => scores::<8, 2>(pg, codes, qs, bias, h0, sc),
                (QBits::B8, _) => scores::<8, 1>(pg, codes, qs, bias, h0, sc),
                (QBits::B4, 3) => scores::<4, 3>(pg, codes, qs, bias, h0, sc),
                (QBits::B4, 2) => scores::<4, 2>(pg, codes, qs, bias, h0, sc),
                (QBits::B4, _) => scores::<4, 1>(pg, codes, qs, bias, h0, sc),
                (QBits::B2, 3) => scores::<2, 3>(pg, codes, qs, bias, h0, sc),
                (QBits::B2, 2) => scores::<2, 2>(pg, codes, qs, bias, h0, sc),
                (QBits::B2, _) => scores::<2, 1>(pg, codes, qs, bias, h0, sc),
            }
            h0 += hc;
        }
    }

    /// Heads `h0..h0+HC`, every 32-token block of the page; lengths checked by the caller.
    #[inline(always)]
    unsafe fn scores<const BITS: usize, const HC: usize>(
        pg: &PageGeom,
        codes: &[u8],
        qs: &[f32],
        bias: &[f32],
        h0: usize,
        sc: &mut [f32],
    ) {
        let (p, hd) = (pg.page, pg.head_dim);
        let (kb, bb) = (pg.k_chan_bytes(), BLOCK * BITS / 8);
        for blk in 0..p / BLOCK {
            let mut acc = [[_mm256_setzero_ps(); 4]; HC];
            for (h, a) in acc.iter_mut().enumerate() {
                *a = [_mm256_set1_ps(bias[h0 + h]); 4];
            }
            // SAFETY (pointer reads): channel c's block `blk` lies within
            // codes[c·kb..(c+1)·kb] and c < hd, so every read is inside `codes`.
            let cp = codes.as_ptr().add(blk * bb);
            let qp = qs.as_ptr().add(h0 * hd);
            for c in 0..hd {
                let u = unpack::<BITS>(cp.add(c * kb));
                for (h, a) in acc.iter_mut().enumerate() {
                    let qv = _mm256_set1_ps(*qp.add(h * hd + c));
                    for i in 0..4 {
                        a[i] = _mm256_fmadd_ps(qv, u[i], a[i]);
                    }
                }
            }
            for (h, a) in acc.iter().enumerate() {
                let o = sc.as_mut_ptr().add((h0 + h) * p + blk * BLOCK);
                for (i, v) in a.iter().enumerate() {
                    _mm256_storeu_ps(o.add(8 * i), *v);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn page_values(
        pg: &PageGeom,
        codes: &[u8],
        mf: &[f32],
        probs: &[f32],
        g: usize,
        acc: &mut [f32],
    ) {
        let (p, hd) = (pg.page, pg.head_dim);
        assert!(hd % BLOCK == 0 && codes.len() >= pg.code_bytes());
        assert!(mf.len() >= pg.outliers_at() && probs.len() >= g * p && acc.len() >= g * hd);
        let mut h0 = 0;
        while h0 < g {
            let hc = (g - h0).min(3);
            match (pg.vbits, hc) {
                (QBits::B8, 3) => values::<8, 3>(pg, codes, mf, probs, h0, acc),
                (QBits::B8, 2) => values::<8, 2>(pg, codes, mf, probs, h0, acc),
                (QBits::B8, _) => values::<8, 1>(pg, codes, mf, probs, h0, acc),
                (QBits::B4, 3) => values::<4, 3>(pg, codes, mf, probs, h0, acc),
                (QBits::B4, 2) => values::<4, 2>(pg, codes, mf, probs, h0, acc),
                (QBits::B4, _) => values::<4, 1>(pg, codes, mf, probs, h0, acc),
                (QBits::B2, 3) => values::<2, 3>(pg, codes, mf, probs, h0, acc),
                (QBits::B2, 2) => values::<2, 2>(pg, codes, mf, probs, h0, acc),
                (QBits::B2, _) => values::<2, 1>(pg, codes, mf, probs, h0, acc),
            }
            h0 += hc;
        }
    }

    /// Heads `h0..h0+HC`, every 32-channel block; lengths checked by the caller.
    #[inline(always)]
    unsafe fn values<const BITS: usize, const HC: usize>(
        pg: &PageGeom,
        codes: &[u8],
        mf: &[f32],
        probs: &[f32],
        h0: usize,
        acc: &mut [f32],
    ) {
        let (p, hd) = (pg.page, pg.head_dim);
        let ng = pg.v_groups();
        let (vb, bb) = (pg.v_row_bytes(), BLOCK * BITS / 8);
        // SAFETY (pointer reads/writes): token j's block `blk` lies within the value codes
        // (P rows of vb bytes after v_codes_at); scales/mins within mf[2hd..2hd+2·P·ng];
        // accumulators within acc[(h0+h)·hd..][..hd].
        let vc = codes.as_ptr().add(pg.v_codes_at());
        let vs = mf.as_ptr().add(2 * hd);
        let vm = mf.as_ptr().add(2 * hd + p * ng);
        for blk in 0..hd / BLOCK {
            let gi = blk * BLOCK / pg.vgroup;
            let mut a = [[_mm256_setzero_ps(); 4]; HC];
            for (h, ah) in a.iter_mut().enumerate() {
                let src = acc.as_ptr().add((h0 + h) * hd + blk * BLOCK);
                for (i, v) in ah.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(src.add(8 * i));
                }
            }
            for j in 0..p {
                let s = _mm256_set1_ps(*vs.add(j * ng + gi));
                let m = _mm256_set1_ps(*vm.add(j * ng + gi));
                let u = unpack::<BITS>(vc.add(j * vb + blk * bb));
                let v = [
                    _mm256_fmadd_ps(u[0], s, m),
                    _mm256_fmadd_ps(u[1], s, m),
                    _mm256_fmadd_ps(u[2], s, m),
                    _mm256_fmadd_ps(u[3], s, m),
                ];
                for (h, ah) in a.iter_mut().enumerate() {
                    let pv = _mm256_set1_ps(*probs.as_ptr().add((h0 + h) * p + j));
                    for i in 0..4 {
                        ah[i] = _mm256_fmadd_ps(pv, v[i], ah[i]);
                    }
                }
            }
            for (h, ah) in a.iter().enumerate() {
                let dst = acc.as_mut_ptr().add((h0 + h) * hd + blk * BLOCK);
                for (i, v) in ah.iter().enumerate() {
                    _mm256_storeu_ps(dst.add(8 * i), *v);
                }
            }
        }
    }
}

/// Scalar reference: dequantize every page a query sees and run plain attention in f64.
/// Tests compare [`attention_q`] with it.
pub fn attention_q_ref(
    shape: AttnShape,
    view: &QLayerView,
    q: &[f32],
    n_tokens: usize,
    scale: f32,
) -> Vec<f32> {
    use crate::kv::quant::dequantize_page;
    let AttnShape {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = shape;
    let g = n_head / n_kv_head;
    let kv_dim = n_kv_head * hd;
    let pg = view.pg;
    let mut out = vec![0f32; n_tokens * n_head * hd];
    for t in 0..n_tokens {
        let span = view.plan.span(t);
        for kvh in 0..n_kv_head {
            // The keys and values this query sees, dequantized.
            let mut ks: Vec<Vec<f32>> = Vec::new();
            let mut vs: Vec<Vec<f32>> = Vec::new();
            let row = |r: &[f16], i: usize| -> Vec<f32> {
                r[i * kv_dim + kvh * hd..][..hd]
                    .iter()
                    .map(|x| x.to_f32())
                    .collect()
            };
            for i in 0..span.sinks {
                ks.push(row(view.sink_k, i));
                vs.push(row(view.sink_v, i));
            }
            let mut kd = vec![0f32; pg.page * hd];
            let mut vd = vec![0f32; pg.page * hd];
            for &slot in &view.pages[..span.pages] {
                let at = slot as usize * n_kv_head + kvh;
                dequantize_page(
                    &pg,
                    &view.codes[at * pg.code_bytes()..][..pg.code_bytes()],
                    &view.meta[at * pg.meta_len()..][..pg.meta_len()],
                    &mut kd,
                    &mut vd,
                );
                for j in 0..pg.page {
                    ks.push(kd[j * hd..][..hd].to_vec());
                    vs.push(vd[j * hd..][..hd].to_vec());
                }
            }
            for i in span.tail_lo..span.tail_hi {
                ks.push(row(view.tail_k, i));
                vs.push(row(view.tail_v, i));
            }
            for h in 0..g {
                let head = kvh * g + h;
                let mut qh: Vec<f32> = q[(t * n_head + head) * hd..][..hd].to_vec();
                if let Some(signs) = view.signs {
                    hadamard::rotate(&mut qh, signs);
                }
                let s: Vec<f64> = ks
                    .iter()
                    .map(|k| {
                        k.iter()
                            .zip(&qh)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                let o = &mut out[(t * n_head + head) * hd..][..hd];
                for (c, o) in o.iter_mut().enumerate() {
                    *o = (e.iter().zip(&vs).map(|(p, v)| p * v[c] as f64).sum::<f64>() / z) as f32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::budget::KvGeom;
    use crate::kv::paged::QuantCache;
    use crate::kv::quant::QBits;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Keys with two outlier channels and a per-channel offset, values plain: like real K/V.
    fn kv_rows(n: usize, kvd: usize, seed: &mut u64) -> (Vec<f32>, Vec<f32>) {
        let k = (0..n * kvd)
            .map(|i| {
                let c = i % kvd;
                let base = rng(seed) * 1.5 + (c % 7) as f32 * 0.3;
                if c % 64 == 3 || c % 64 == 40 {
                    base * 8.0
                } else {
                    base
                }
            })
            .collect();
        let v = (0..n * kvd).map(|_| rng(seed)).collect();
        (k, v)
    }

    /// The kernel equals attention over the dequantized cache (f64 reference) through every
    /// stage: sinks filling, window only, pages appearing mid-batch, single-token decode with
    /// split key ranges, for each bit width, with and without rotation, on 1-3 threads.
    /// Tolerance: 2e-5 absolute on outputs of magnitude ≤ 1 (f32 online softmax vs f64).
    #[test]
    fn matches_dequantized_reference() {
        let geom = KvGeom {
            n_layer: 2,
            n_kv_head: 2,
            head_dim: 64,
        };
        let shape = AttnShape {
            n_head: 6,
            n_kv_head: 2,
            head_dim: 64,
        };
        let kvd = geom.kv_dim();
        let batches = [1usize, 2, 37, 1, 1, 64, 5, 1, 90, 1, 1, 1, 33, 1];
        let total: usize = batches.iter().sum();
        let mut worst = 0f32;
        for (bits, page, rotate, threads) in [
            (QBits::B8, 32, false, 1),
            (QBits::B4, 32, false, 2),
            (QBits::B2, 32, false, 3),
            (QBits::B4, 64, true, 2),
            (QBits::B2, 32, true, 1),
        ] {
            let pg = PageGeom {
                kbits: bits,
                vbits: bits,
                k_outliers: if bits == QBits::B2 { 16 } else { 0 },
                page,
                head_dim: 64,
                vgroup: 32,
            };
            let pool = Pool::new(threads).unwrap();
            let mut c =
                QuantCache::new(geom, pg, 40, 3, rotate, false, total, 90, 6, threads).unwrap();
            let mut seed = 42u64 + page as u64;
            for &n in &batches {
                c.begin(n).unwrap();
                for layer in 0..2 {
                    let (k, v) = kv_rows(n, kvd, &mut seed);
                    c.store(layer, &k, &v).unwrap();
                }
                let q: Vec<f32> = (0..n * 6 * 64).map(|_| rng(&mut seed) * 2.0).collect();
                let mut out = vec![0f32; q.len()];
                c.attend(&pool, 1, shape, &q, n, 0.125, &mut out).unwrap();
                let want = attention_q_ref(shape, &c.view(1), &q, n, 0.125);
                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                    let d = (a - b).abs();
                    worst = worst.max(d);
                    assert!(
                        d < 2e-5,
                        "{bits:?} page {page} rotate {rotate}: batch {n}, element {i}: {a} vs {b}"
                    );
                }
                c.commit();
            }
            assert!(c.n_pages() > 0 && c.window_len() >= 40);
        }
        eprintln!("largest difference from the reference: {worst:e}");
    }
}
