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
//! Work is split over (token, KV head) pairs; when there are fewer pairs than twice the
//! threads (decode), each pair's key blocks are also split into ranges whose partial softmax
//! states are merged afterwards (flash-decoding). Pairs are dealt to threads round-robin so
//! causal prefill stays balanced.

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

/// Floats of scratch [`attention_q`] needs.
pub fn work_len(shape: AttnShape, page: usize, n_threads: usize) -> usize {
    let g = shape.n_head / shape.n_kv_head;
    let hd = shape.head_dim;
    n_threads * per_thread(g, hd, page) + merge_slots(shape, n_threads) * g * (hd + 2)
}

fn per_thread(g: usize, hd: usize, page: usize) -> usize {
    g * (2 * hd + page + 2) + hd
}

fn merge_slots(shape: AttnShape, n_threads: usize) -> usize {
    4 * n_threads + shape.n_kv_head
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
    assert!(n_head % n_kv_head == 0 && view.n_kv_head == n_kv_head && view.pg.head_dim == hd);
    assert!(q.len() >= n_tokens * n_head * hd && out.len() >= n_tokens * n_head * hd);
    assert!(work.len() >= work_len(shape, page, nth));
    let pairs = n_tokens * n_kv_head;
    let mut splits = 1;
    if pairs < 2 * nth {
        splits = (2 * nth).div_ceil(pairs).min(16);
        while pairs * splits > merge_slots(shape, nth) {
            splits -= 1;
        }
    }
    let items = pairs * splits;
    let pt = per_thread(g, hd, page);
    let (thread_work, merge) = work.split_at_mut(nth * pt);
    let out_ptr = Ptr(out.as_mut_ptr());
    let work_ptr = Ptr(thread_work.as_mut_ptr());
    let merge_ptr = Ptr(merge.as_mut_ptr());
    let simd = has_avx2();
    pool.run(|ith, nth| {
        let (op, wp, mp) = (&out_ptr, &work_ptr, &merge_ptr);
        // SAFETY: thread ith owns work[ith*pt..][..pt] (work.len() checked above).
        let w = unsafe { std::slice::from_raw_parts_mut(wp.0.add(ith * pt), pt) };
        let mut item = ith;
        while item < items {
            let (pair, sp) = (item / splits, item % splits);
            let (t, kvh) = (pair / n_kv_head, pair % n_kv_head);
            let (m, l, acc) = run_item(simd, shape, view, q, t, kvh, sp, splits, scale, w);
            if splits == 1 {
                for h in 0..g {
                    let head = kvh * g + h;
                    // SAFETY: (t, head) is owned by this item alone; the slice is in `out`.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(op.0.add((t * n_head + head) * hd), hd)
                    };
                    let inv = if l[h] > 0.0 { 1.0 / l[h] } else { 0.0 };
                    for (d, &a) in o.iter_mut().zip(&acc[h * hd..][..hd]) {
                        *d = a * inv;
                    }
                }
            } else {
                // SAFETY: merge slot `item` (items <= merge_slots, checked when choosing
                // `splits`) belongs to this item alone.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(mp.0.add(item * g * (hd + 2)), g * (hd + 2))
                };
                for h in 0..g {
                    let d = &mut dst[h * (hd + 2)..][..hd + 2];
                    d[0] = m[h];
                    d[1] = l[h];
                    d[2..].copy_from_slice(&acc[h * hd..][..hd]);
                }
            }
            item += nth;
        }
    });
    if splits > 1 {
        for pair in 0..pairs {
            let (t, kvh) = (pair / n_kv_head, pair % n_kv_head);
            for h in 0..g {
                let part =
                    |sp: usize| &merge[((pair * splits + sp) * g + h) * (hd + 2)..][..hd + 2];
                let mx = (0..splits)
                    .map(|sp| part(sp)[0])
                    .fold(f32::NEG_INFINITY, f32::max);
                let o = &mut out[(t * n_head + kvh * g + h) * hd..][..hd];
                o.fill(0.0);
                let mut l = 0f32;
                for sp in 0..splits {
                    let p = part(sp);
                    if p[1] == 0.0 {
                        continue;
                    }
                    let f = (p[0] - mx).exp();
                    l += p[1] * f;
                    for (d, &a) in o.iter_mut().zip(&p[2..]) {
                        *d += a * f;
                    }
                }
                let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
                for d in o.iter_mut() {
                    *d *= inv;
                }
            }
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

/// Process one (token, KV head, split) item; returns (max, sum, unnormalized output) per
/// query head of the group, as slices of `w`.
#[allow(clippy::too_many_arguments)]
fn run_item<'w>(
    simd: bool,
    shape: AttnShape,
    view: &QLayerView,
    q: &[f32],
    t: usize,
    kvh: usize,
    sp: usize,
    splits: usize,
    scale: f32,
    w: &'w mut [f32],
) -> (&'w [f32], &'w [f32], &'w [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX2 and FMA were detected at run time (`has_avx2`); the body is the
        // portable code below compiled with those features, with the same bounds checks.
        return unsafe { run_item_avx2(shape, view, q, t, kvh, sp, splits, scale, w) };
    }
    let _ = simd;
    run_item_generic::<false>(shape, view, q, t, kvh, sp, splits, scale, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_item_avx2<'w>(
    shape: AttnShape,
    view: &QLayerView,
    q: &[f32],
    t: usize,
    kvh: usize,
    sp: usize,
    splits: usize,
    scale: f32,
    w: &'w mut [f32],
) -> (&'w [f32], &'w [f32], &'w [f32]) {
    run_item_generic::<true>(shape, view, q, t, kvh, sp, splits, scale, w)
}

/// `o + a·b`, fused when the caller was compiled with FMA.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, o: f32) -> f32 {
    if FMA {
        a.mul_add(b, o)
    } else {
        o + a * b
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_item_generic<'w, const FMA: bool>(
    shape: AttnShape,
    view: &QLayerView,
    q: &[f32],
    t: usize,
    kvh: usize,
    sp: usize,
    splits: usize,
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
    let (sc, rest) = rest.split_at_mut(g * page);
    let (mx, rest) = rest.split_at_mut(g);
    let (sum, rest) = rest.split_at_mut(g);
    let vrow = &mut rest[..hd];
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
    let (b0, b1) = (nb * sp / splits, nb * (sp + 1) / splits);
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
            let meta = &view.meta[at * pg.meta_len()..][..pg.meta_len()];
            page_scores::<FMA>(&pg, codes, meta, qb, g, sc);
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
            let meta = &view.meta[at * pg.meta_len()..][..pg.meta_len()];
            page_values::<FMA>(&pg, codes, meta, sc, g, acc, vrow);
        }
    }
    (mx, sum, acc)
}

/// Scores of the `g` queries `qb` (`[g][head_dim]`) against the P keys of one page, into
/// `sc[h][0..P]` (rows of stride P).
#[inline(always)]
fn page_scores<const FMA: bool>(
    pg: &PageGeom,
    codes: &[u8],
    meta: &[f16],
    qb: &[f32],
    g: usize,
    sc: &mut [f32],
) {
    let (p, hd, bits) = (pg.page, pg.head_dim, pg.bits);
    let ks = &meta[..hd];
    let km = &meta[hd..2 * hd];
    let (kb, bb) = (pg.k_chan_bytes(), bits.block_bytes());
    for h in 0..g {
        let q = &qb[h * hd..][..hd];
        let mut bias = 0f32;
        for (&qc, m) in q.iter().zip(km) {
            bias = madd::<FMA>(qc, m.to_f32(), bias);
        }
        sc[h * p..][..p].fill(bias);
    }
    let mut u = [0u8; BLOCK];
    let mut uf = [0f32; BLOCK];
    for c in 0..hd {
        let s = ks[c].to_f32();
        for blk in 0..p / BLOCK {
            unpack_block(bits, &codes[c * kb + blk * bb..][..bb], &mut u);
            for (f, &x) in uf.iter_mut().zip(&u) {
                *f = x as f32;
            }
            for h in 0..g {
                let a = qb[h * hd + c] * s;
                let o: &mut [f32; BLOCK] = (&mut sc[h * p + blk * BLOCK..][..BLOCK])
                    .try_into()
                    .unwrap();
                for (o, &x) in o.iter_mut().zip(&uf) {
                    *o = madd::<FMA>(a, x, *o);
                }
            }
        }
    }
}

/// `acc[h] += Σ_j probs[h][j] · v_j` over the P tokens of one page; `vrow`: `head_dim` floats
/// of scratch holding one dequantized value row at a time.
#[inline(always)]
fn page_values<const FMA: bool>(
    pg: &PageGeom,
    codes: &[u8],
    meta: &[f16],
    probs: &[f32],
    g: usize,
    acc: &mut [f32],
    vrow: &mut [f32],
) {
    let (p, hd, bits) = (pg.page, pg.head_dim, pg.bits);
    let vc = &codes[pg.v_codes_at()..];
    let ng = pg.v_groups();
    let vs = &meta[2 * hd..2 * hd + p * ng];
    let vm = &meta[2 * hd + p * ng..2 * hd + 2 * p * ng];
    let (vb, bb) = (pg.v_row_bytes(), bits.block_bytes());
    let mut u = [0u8; BLOCK];
    for j in 0..p {
        if (0..g).all(|h| probs[h * p + j] == 0.0) {
            continue;
        }
        for blk in 0..hd / BLOCK {
            let gi = blk * BLOCK / pg.vgroup;
            let (s, m) = (vs[j * ng + gi].to_f32(), vm[j * ng + gi].to_f32());
            unpack_block(bits, &vc[j * vb + blk * bb..][..bb], &mut u);
            let d: &mut [f32; BLOCK] = (&mut vrow[blk * BLOCK..][..BLOCK]).try_into().unwrap();
            for (d, &x) in d.iter_mut().zip(&u) {
                *d = madd::<FMA>(s, x as f32, m);
            }
        }
        for h in 0..g {
            let pj = probs[h * p + j];
            for (a, &v) in acc[h * hd..][..hd].iter_mut().zip(vrow.iter()) {
                *a = madd::<FMA>(pj, v, *a);
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
                bits,
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
