//! KIVI-style quantization of cached keys and values: the number formats and the page layout.
//!
//! ## Codes
//! A group of values `x` is stored as unsigned `b`-bit codes `u` (b = 8, 4 or 2) with an f16
//! scale `s` and an f16 minimum `m` (asymmetric): `x̂ = m + s·u`. The min/max choice
//! ([`group_params`]) takes `m` = the group minimum rounded *down* to f16 and `s` = the step
//! `(max − m)/(2^b − 1)` rounded *up* to f16, so every value lies inside
//! `[m, m + s·(2^b − 1)]` and the error is at most `s/2`. At 4 and 2 bits, where a few
//! extreme values would waste most of the levels, [`quantize_group`] also tries clipped ranges
//! and a least-squares refit and keeps whichever has the smallest squared error (never more
//! than min/max's). Values beyond ±65504 (f16's range) are clamped to it.
//!
//! Codes travel in blocks of 32 ([`BLOCK`]), packed so that unpacking is a few shifts and masks:
//! ```text
//! 8 bits: 32 bytes, byte i = u[i]
//! 4 bits: 16 bytes, byte i = u[i] | u[i+16] << 4
//! 2 bits:  8 bytes, byte i = u[i] | u[i+8] << 2 | u[i+16] << 4 | u[i+24] << 6
//! ```
//!
//! ## A page
//! `P` consecutive tokens (P = the group size, a multiple of 32) of one KV head of one layer:
//! ```text
//! codes: K [head_dim channels][P tokens]   (per channel: P/32 blocks; keys grouped along tokens)
//!        V [P tokens][head_dim channels]   (per token: head_dim/32 blocks; values along channels)
//! meta (f16): K scale [head_dim], K min [head_dim],
//!             V scale [P][head_dim/G], V min [P][head_dim/G]   (G = channels per value group)
//! ```
//! Keys are grouped per channel because a few channels carry outliers of a stable sign and
//! size across tokens; values have no such structure and are grouped per token (KIVI).

use half::f16;

use crate::quant::group::{search, Grid, Schedule};

/// Codes per packed block.
pub const BLOCK: usize = 32;

/// Bits per cached element of a quantized cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QBits {
    B8,
    B4,
    B2,
}

impl QBits {
    /// Number of bits.
    pub const fn bits(self) -> usize {
        match self {
            QBits::B8 => 8,
            QBits::B4 => 4,
            QBits::B2 => 2,
        }
    }
    /// Largest code, `2^b − 1`.
    pub const fn max_code(self) -> u8 {
        match self {
            QBits::B8 => 255,
            QBits::B4 => 15,
            QBits::B2 => 3,
        }
    }
    /// Bytes of one packed block of [`BLOCK`] codes.
    pub const fn block_bytes(self) -> usize {
        BLOCK * self.bits() / 8
    }
}

/// Pack 32 codes (each `<= bits.max_code()`) into `out[..bits.block_bytes()]`.
pub fn pack_block(bits: QBits, u: &[u8; BLOCK], out: &mut [u8]) {
    match bits {
        QBits::B8 => out[..32].copy_from_slice(u),
        QBits::B4 => {
            for i in 0..16 {
                out[i] = u[i] | (u[i + 16] << 4);
            }
        }
        QBits::B2 => {
            for i in 0..8 {
                out[i] = u[i] | (u[i + 8] << 2) | (u[i + 16] << 4) | (u[i + 24] << 6);
            }
        }
    }
}

/// Unpack one block written by [`pack_block`].
#[inline(always)]
pub fn unpack_block(bits: QBits, p: &[u8], u: &mut [u8; BLOCK]) {
    match bits {
        QBits::B8 => u.copy_from_slice(&p[..32]),
        QBits::B4 => {
            let p = &p[..16];
            for i in 0..16 {
                u[i] = p[i] & 0x0F;
                u[i + 16] = p[i] >> 4;
            }
        }
        QBits::B2 => {
            let p = &p[..8];
            for i in 0..8 {
                u[i] = p[i] & 3;
                u[i + 8] = (p[i] >> 2) & 3;
                u[i + 16] = (p[i] >> 4) & 3;
                u[i + 24] = p[i] >> 6;
            }
        }
    }
}

/// The largest f16 that is `<= x` (x finite and within ±65504).
pub fn f16_floor(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() <= x {
        return h;
    }
    // One f16 step towards −∞.
    let b = h.to_bits();
    let down = if b == 0 {
        0x8001 // +0 → the smallest negative subnormal
    } else if b & 0x8000 == 0 {
        b - 1
    } else {
        b + 1
    };
    f16::from_bits(down)
}

/// The smallest f16 that is `>= x` (x finite, `0 <= x <= 65504`).
pub fn f16_ceil(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() >= x {
        return h;
    }
    f16::from_bits(h.to_bits() + 1) // x ≥ 0, so one step up is bits + 1
}

/// Largest magnitude a quantized cache stores (f16's finite range).
pub const CLAMP: f32 = 65504.0;

/// Scale and minimum of a group, as described in the module docs.
#[inline]
pub fn group_params(bits: QBits, xs: impl Iterator<Item = f32>) -> (f16, f16) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for x in xs {
        // `min`/`max` ignore NaN, so a NaN value reads back as the group minimum.
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if lo > hi {
        return (f16::ZERO, f16::ZERO); // only NaNs
    }
    let (lo, hi) = (lo.clamp(-CLAMP, CLAMP), hi.clamp(-CLAMP, CLAMP));
    let m = f16_floor(lo);
    let step = (hi - m.to_f32()) / bits.max_code() as f32;
    (f16_ceil(step), m)
}

/// Code of `x` in a group of scale `s` and minimum `m` (`inv` = 1/s, or 0 when s = 0).
#[inline(always)]
pub fn code(bits: QBits, x: f32, m: f32, inv: f32) -> u8 {
    let c = ((x.clamp(-CLAMP, CLAMP) - m) * inv).round();
    // NaN → 0 through `as`; the clamp keeps rounding slop inside the code range.
    (c.clamp(0.0, bits.max_code() as f32)) as u8
}

/// Min/max quantization of a group: returns `(scale, min)` and writes one code per value.
/// For every finite `x` within ±65504: `|x − (min + scale·code)| <= scale/2` up to one f32
/// rounding, and `scale <= (max − min)/(2^b − 1)` up to f16 rounding (`2^-10` relative, or
/// one subnormal).
pub fn quantize_group_minmax(bits: QBits, xs: &[f32], codes: &mut [u8]) -> (f16, f16) {
    let (s, m) = group_params(bits, xs.iter().copied());
    sq_error(bits, xs, s, m, codes);
    (s, m)
}

/// Write the codes of `xs` for `(s, m)`; returns the squared error (f64).
fn sq_error(bits: QBits, xs: &[f32], s: f16, m: f16, codes: &mut [u8]) -> f64 {
    let (sf, mf) = (s.to_f32(), m.to_f32());
    let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
    let mut e = 0f64;
    for (c, &x) in codes.iter_mut().zip(xs) {
        *c = code(bits, x, mf, inv);
        let d = (x.clamp(-CLAMP, CLAMP) - (mf + sf * *c as f32)) as f64;
        e += d * d;
    }
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// Clipping ratios tried at 4 and 2 bits: the fraction of the distance from the group mean
/// to its min (max) that the range keeps.
const CLIP: [f32; 6] = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5];

/// Quantize a group (of at most 128 values), minimizing the squared error: at 8 bits plain
/// min/max ([`quantize_group_minmax`]); at 4 and 2 bits a coordinate search over clipped
/// ranges (joint ratio, then the low end, then the high end) followed by least-squares refits
/// of `(s, m)` to the codes. The result's squared error is never above min/max's.
pub fn quantize_group(bits: QBits, xs: &[f32], codes: &mut [u8]) -> (f16, f16) {
    let (s0, m0) = group_params(bits, xs.iter().copied());
    let e0 = sq_error(bits, xs, s0, m0, codes);
    if bits == QBits::B8 || xs.len() > 128 || e0 == 0.0 {
        return (s0, m0);
    }
    let mut scratch = [0u8; 128];
    let scratch = &mut scratch[..xs.len()];
    let (lo, hi) = (
        m0.to_f32(),
        m0.to_f32() + s0.to_f32() * bits.max_code() as f32,
    );
    let mean = xs.iter().map(|x| x.clamp(-CLAMP, CLAMP)).sum::<f32>() / xs.len() as f32;
    let sched = Schedule {
        joint: &CLIP[1..],
        ends: &CLIP,
        refits: 2,
    };
    let grid = KvGrid { bits, xs };
    search(
        &grid,
        (lo, hi, mean),
        Some((e0, (s0, m0))),
        sched,
        codes,
        scratch,
    )
    .0
}

/// The KV cache's [`Grid`]: f16 scale and minimum, rounded outwards.
struct KvGrid<'a> {
    bits: QBits,
    xs: &'a [f32],
}

impl Grid for KvGrid<'_> {
    type Params = (f16, f16);
    fn for_range(&self, l: f32, h: f32) -> (f16, f16) {
        let m = f16_floor(l);
        let s = f16_ceil(((h - m.to_f32()) / self.bits.max_code() as f32).max(0.0));
        (s, m)
    }
    fn quantize(&self, (s, m): (f16, f16), codes: &mut [u8]) -> f64 {
        sq_error(self.bits, self.xs, s, m, codes)
    }
    fn refit(&self, codes: &[u8]) -> Option<(f16, f16)> {
        lsq_fit(self.xs, codes)
    }
}

/// Least-squares `(s, m)` with `x ≈ m + s·u` for fixed codes; `None` if degenerate.
fn lsq_fit(xs: &[f32], codes: &[u8]) -> Option<(f16, f16)> {
    let n = xs.len() as f64;
    let (mut su, mut suu, mut sx, mut sux) = (0f64, 0f64, 0f64, 0f64);
    for (&c, &x) in codes.iter().zip(xs) {
        let (u, x) = (c as f64, x.clamp(-CLAMP, CLAMP) as f64);
        su += u;
        suu += u * u;
        sx += x;
        sux += u * x;
    }
    let den = n * suu - su * su;
    if den <= 0.0 {
        return None;
    }
    let s = (n * sux - su * sx) / den;
    let m = (sx - s * su) / n;
    if !(s > 0.0 && s.is_finite() && m.is_finite()) {
        return None;
    }
    let (s, m) = (f16::from_f64(s), f16::from_f64(m.clamp(-65504.0, 65504.0)));
    (s.to_f32() > 0.0 && s.is_finite()).then_some((s, m))
}

/// Geometry of one page of one KV head (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageGeom {
    /// Bits of the key codes.
    pub kbits: QBits,
    /// Bits of the value codes.
    pub vbits: QBits,
    /// Tokens per page (a multiple of 32).
    pub page: usize,
    pub head_dim: usize,
    /// Channels per value group (a multiple of 32 dividing `head_dim`).
    pub vgroup: usize,
    /// Key values kept exactly: the page's largest key quantization errors, stored as
    /// (position, error) pairs and added back when scoring (dense-and-sparse, KVQuant).
    pub k_outliers: usize,
}

impl PageGeom {
    /// Packed bytes of one key channel (P codes).
    pub fn k_chan_bytes(&self) -> usize {
        self.page / BLOCK * self.kbits.block_bytes()
    }
    /// Packed bytes of one value row (head_dim codes).
    pub fn v_row_bytes(&self) -> usize {
        self.head_dim / BLOCK * self.vbits.block_bytes()
    }
    /// Value groups per token.
    pub fn v_groups(&self) -> usize {
        self.head_dim / self.vgroup
    }
    /// Code bytes of a page: keys then values.
    pub fn code_bytes(&self) -> usize {
        self.head_dim * self.k_chan_bytes() + self.page * self.v_row_bytes()
    }
    /// Offset of the value codes inside a page's codes.
    pub fn v_codes_at(&self) -> usize {
        self.head_dim * self.k_chan_bytes()
    }
    /// f16 metadata values of a page: K scale, K min, V scale, V min, key outliers.
    pub fn meta_len(&self) -> usize {
        2 * self.head_dim + 2 * self.page * self.v_groups() + 2 * self.k_outliers
    }
    /// Offset of the key outliers in a page's metadata: pairs of (index `c·P + j` as the bits
    /// of an f16 slot, error `x − x̂` as f16); unused pairs have error 0.
    pub fn outliers_at(&self) -> usize {
        2 * self.head_dim + 2 * self.page * self.v_groups()
    }
    /// Bytes of one page (codes + metadata).
    pub fn bytes(&self) -> usize {
        self.code_bytes() + 2 * self.meta_len()
    }
}

/// Quantize one page of one KV head. `k`, `v`: rows `[page][row_stride]` (f16 as stored in the
/// window), of which `head_dim` values at `col` belong to this head.
pub fn quantize_page(
    g: &PageGeom,
    k: &[f16],
    v: &[f16],
    row_stride: usize,
    col: usize,
    codes: &mut [u8],
    meta: &mut [f16],
) {
    let (p, hd) = (g.page, g.head_dim);
    let (kc, vc) = codes.split_at_mut(g.v_codes_at());
    let (ks, rest) = meta.split_at_mut(hd);
    let (km, rest) = rest.split_at_mut(hd);
    let (vs, rest) = rest.split_at_mut(p * g.v_groups());
    let (vm, outl) = rest.split_at_mut(p * g.v_groups());
    let kb = g.k_chan_bytes();
    // The largest key errors: (|error|, index, error), smallest first replaced.
    let no = g.k_outliers.min(64);
    let mut top = [(0f32, 0u16, 0f32); 64];
    let mut floor = 0f32; // smallest |error| in `top`
                          // Keys: one group per channel, over the page's tokens.
    let mut col_vals = [0f32; 128];
    let mut col_codes = [0u8; 128];
    let (bits, bb) = (g.kbits, g.kbits.block_bytes());
    for c in 0..hd {
        for (j, x) in col_vals[..p].iter_mut().enumerate() {
            *x = k[j * row_stride + col + c].to_f32();
        }
        let (s, m) = quantize_group(bits, &col_vals[..p], &mut col_codes[..p]);
        ks[c] = s;
        km[c] = m;
        if no > 0 {
            let (sf, mf) = (s.to_f32(), m.to_f32());
            for j in 0..p {
                let e = col_vals[j].clamp(-CLAMP, CLAMP) - (mf + sf * col_codes[j] as f32);
                if e.abs() > floor {
                    let (slot, _) = top[..no]
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                        .expect("no > 0");
                    top[slot] = (e.abs(), (c * p + j) as u16, e);
                    floor = top[..no].iter().map(|t| t.0).fold(f32::INFINITY, f32::min);
                }
            }
        }
        for blk in 0..p / BLOCK {
            let u: &[u8; BLOCK] = col_codes[blk * BLOCK..][..BLOCK].try_into().unwrap();
            pack_block(bits, u, &mut kc[c * kb + blk * bb..][..bb]);
        }
    }
    for (i, pair) in outl.chunks_exact_mut(2).enumerate() {
        let (idx, e) = if i < no {
            (top[i].1, top[i].2)
        } else {
            (0, 0.0)
        };
        pair[0] = f16::from_bits(idx);
        pair[1] = f16::from_f32(e);
    }
    // Values: groups of `vgroup` channels within each token.
    let (vg, ng, vb) = (g.vgroup, g.v_groups(), g.v_row_bytes());
    let (bits, bb) = (g.vbits, g.vbits.block_bytes());
    let mut row = [0f32; 512];
    let mut ucodes = [0u8; 512];
    for j in 0..p {
        let src = &v[j * row_stride + col..][..hd];
        for (d, s) in row.iter_mut().zip(src) {
            *d = s.to_f32();
        }
        for gi in 0..ng {
            let (s, m) = quantize_group(
                bits,
                &row[gi * vg..(gi + 1) * vg],
                &mut ucodes[gi * vg..(gi + 1) * vg],
            );
            vs[j * ng + gi] = s;
            vm[j * ng + gi] = m;
        }
        for blk in 0..hd / BLOCK {
            let u: &[u8; BLOCK] = ucodes[blk * BLOCK..][..BLOCK].try_into().unwrap();
            pack_block(bits, u, &mut vc[j * vb + blk * bb..][..bb]);
        }
    }
}

/// Dequantize a page back to rows `[page][head_dim]` of keys and values (scalar reference;
/// attention never does this, it reads the codes directly).
pub fn dequantize_page(g: &PageGeom, codes: &[u8], meta: &[f16], k: &mut [f32], v: &mut [f32]) {
    let (p, hd) = (g.page, g.head_dim);
    let (kc, vc) = codes.split_at(g.v_codes_at());
    let (ks, rest) = meta.split_at(hd);
    let (km, rest) = rest.split_at(hd);
    let (vs, vm) = rest.split_at(p * g.v_groups());
    let (kbits, vbits) = (g.kbits, g.vbits);
    let (kb, kbb, vbb) = (g.k_chan_bytes(), kbits.block_bytes(), vbits.block_bytes());
    let mut u = [0u8; BLOCK];
    for c in 0..hd {
        let (s, m) = (ks[c].to_f32(), km[c].to_f32());
        for blk in 0..p / BLOCK {
            unpack_block(kbits, &kc[c * kb + blk * kbb..], &mut u);
            for (i, &code) in u.iter().enumerate() {
                k[(blk * BLOCK + i) * hd + c] = m + s * code as f32;
            }
        }
    }
    for pair in meta[g.outliers_at()..g.meta_len()].chunks_exact(2) {
        let idx = pair[0].to_bits() as usize;
        let (c, j) = (idx / p, idx % p);
        k[j * hd + c] += pair[1].to_f32();
    }
    let (vg, ng, vb) = (g.vgroup, g.v_groups(), g.v_row_bytes());
    for j in 0..p {
        for blk in 0..hd / BLOCK {
            unpack_block(vbits, &vc[j * vb + blk * vbb..], &mut u);
            for (i, &code) in u.iter().enumerate() {
                let c = blk * BLOCK + i;
                let gi = c / vg;
                v[j * hd + c] = vm[j * ng + gi].to_f32() + vs[j * ng + gi].to_f32() * code as f32;
            }
        }
    }
}

/// Pages the rule "quantize the oldest page while the window holds at least `window + page`
/// tokens" produces from a window of `tail` f16 tokens.
pub fn pages_to_quantize(tail: usize, window: usize, page: usize) -> usize {
    if tail >= window + page {
        (tail - window) / page
    } else {
        0
    }
}

/// Where the tokens of one batch go, and so which keys each of its queries sees.
///
/// A batch of `n` tokens fills the sinks first (`sink_take` tokens), then appends to the f16
/// window. Pages leave the window as they would had the tokens come one at a time, and query
/// `t` sees exactly the cache state after token `t` was stored: the f16 rows of pages
/// quantized later in the batch stay in the window buffer until the batch is committed. So a
/// prompt ingested in one batch attends exactly as it would token by token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchPlan {
    pub n: usize,
    pub n_sink_before: usize,
    pub sink_take: usize,
    pub pages_before: usize,
    pub tail_before: usize,
    /// Pages quantized from the window during this batch.
    pub new_pages: usize,
    pub window: usize,
    pub page: usize,
}

/// The keys query `t` of a batch sees: sinks `0..sinks`, the first `pages` logical pages, and
/// window rows `tail_lo..tail_hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub sinks: usize,
    pub pages: usize,
    pub tail_lo: usize,
    pub tail_hi: usize,
}

impl BatchPlan {
    /// The plan for `n` new tokens on a committed state.
    pub fn new(
        n: usize,
        n_sink: usize,
        sink_cap: usize,
        pages: usize,
        tail: usize,
        window: usize,
        page: usize,
    ) -> Self {
        let sink_take = n.min(sink_cap.saturating_sub(n_sink));
        let new_pages = pages_to_quantize(tail + n - sink_take, window, page);
        BatchPlan {
            n,
            n_sink_before: n_sink,
            sink_take,
            pages_before: pages,
            tail_before: tail,
            new_pages,
            window,
            page,
        }
    }

    /// Window rows after the batch (before the quantized ones are dropped).
    pub fn tail_after(&self) -> usize {
        self.tail_before + self.n - self.sink_take
    }

    /// Keys seen by query `t` (0-based within the batch).
    pub fn span(&self, t: usize) -> Span {
        if t < self.sink_take {
            return Span {
                sinks: self.n_sink_before + t + 1,
                pages: 0,
                tail_lo: 0,
                tail_hi: 0,
            };
        }
        let tail_t = self.tail_before + (t - self.sink_take + 1);
        let newp = pages_to_quantize(tail_t, self.window, self.page);
        Span {
            sinks: self.n_sink_before + self.sink_take,
            pages: self.pages_before + newp,
            tail_lo: newp * self.page,
            tail_hi: tail_t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    const ALL: [QBits; 3] = [QBits::B8, QBits::B4, QBits::B2];

    #[test]
    fn pack_unpack_roundtrip() {
        let mut seed = 7u64;
        for bits in ALL {
            for _ in 0..50 {
                let mut u = [0u8; BLOCK];
                for c in u.iter_mut() {
                    let r = ((rng(&mut seed) + 1.0) * 1000.0) as u32;
                    *c = (r % (bits.max_code() as u32 + 1)) as u8;
                }
                let mut p = [0u8; 32];
                pack_block(bits, &u, &mut p);
                let mut back = [0u8; BLOCK];
                unpack_block(bits, &p, &mut back);
                assert_eq!(u, back, "{bits:?}");
                assert!(p[bits.block_bytes()..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn f16_floor_and_ceil_bracket() {
        let mut seed = 3u64;
        for i in 0..20000 {
            let x = rng(&mut seed) * [1e-6f32, 1e-3, 1.0, 100.0, 60000.0][i % 5];
            let lo = f16_floor(x);
            assert!(lo.to_f32() <= x, "{x}");
            // Nothing representable lies between: one step up is above x.
            let next = if lo.to_bits() & 0x8000 == 0 {
                f16::from_bits(lo.to_bits() + 1)
            } else if lo.to_bits() == 0x8000 {
                f16::from_bits(1)
            } else {
                f16::from_bits(lo.to_bits() - 1)
            };
            assert!(next.to_f32() > x || next.to_f32() == lo.to_f32(), "{x}");
            let a = x.abs();
            let hi = f16_ceil(a);
            assert!(hi.to_f32() >= a);
            assert!(
                f16::from_bits(hi.to_bits() - (hi.to_bits() > 0) as u16).to_f32() < a || a == 0.0
            );
        }
        assert_eq!(f16_floor(0.0).to_f32(), 0.0);
        assert!(f16_floor(-1e-9).to_f32() < 0.0);
    }

    /// The documented bound of min/max quantization, on random groups of several shapes and
    /// on edge cases.
    #[test]
    fn minmax_error_within_half_a_step() {
        let mut seed = 11u64;
        let mut groups: Vec<Vec<f32>> = Vec::new();
        for (scale, offset) in [(1.0f32, 0.0f32), (0.01, 5.0), (300.0, -20.0), (1e-5, 0.0)] {
            for _ in 0..40 {
                groups.push((0..64).map(|_| rng(&mut seed) * scale + offset).collect());
            }
        }
        // One outlier, a constant group, tiny negative values, values beyond f16.
        let mut outlier: Vec<f32> = (0..64).map(|_| rng(&mut seed) * 0.1).collect();
        outlier[17] = 40.0;
        groups.push(outlier);
        groups.push(vec![3.25; 32]);
        groups.push(vec![-1e-7, -2e-7, 0.0, 1e-7]);
        groups.push(vec![-1e6, 0.0, 7e4]);
        for bits in ALL {
            for xs in &groups {
                let mut codes = vec![0u8; xs.len()];
                let (s, m) = quantize_group_minmax(bits, xs, &mut codes);
                let (sf, mf) = (s.to_f32(), m.to_f32());
                let lo = xs.iter().copied().fold(f32::INFINITY, f32::min).max(-CLAMP);
                let hi = xs
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max)
                    .min(CLAMP);
                assert!(mf <= lo);
                let ideal = (hi - lo) / bits.max_code() as f32;
                // f16 rounding of the step (2^-10 relative), the min rounded down (one f16
                // ulp of lo, spread over the codes), or one subnormal.
                let ulp_lo = (lo.abs() * 2f32.powi(-10)).max(6e-8);
                assert!(
                    sf <= ideal * (1.0 + 2f32.powi(-10)) + ulp_lo / bits.max_code() as f32 + 6e-8,
                    "{bits:?} step {sf} vs {ideal}"
                );
                for (&x, &c) in xs.iter().zip(&codes) {
                    assert!(c <= bits.max_code());
                    let x = x.clamp(-CLAMP, CLAMP);
                    let r = mf + sf * c as f32;
                    let tol = sf * 0.5 + 4.0 * f32::EPSILON * x.abs().max(mf.abs());
                    assert!((x - r).abs() <= tol, "{bits:?}: {x} -> {r} (step {sf})");
                }
            }
        }
    }

    fn dequant_sq_err(xs: &[f32], codes: &[u8], s: f16, m: f16) -> f64 {
        xs.iter()
            .zip(codes)
            .map(|(&x, &c)| {
                let d = (x.clamp(-CLAMP, CLAMP) - (m.to_f32() + s.to_f32() * c as f32)) as f64;
                d * d
            })
            .sum()
    }

    /// The searched quantizer never does worse than min/max, and on groups with outliers or
    /// bell-shaped values it does clearly better at 2 bits.
    #[test]
    fn search_beats_minmax() {
        let mut seed = 19u64;
        let (mut gain_sum, mut n) = (0f64, 0);
        for bits in ALL {
            for trial in 0..300 {
                let len = [32usize, 64, 128][trial % 3];
                // Sum of uniforms: bell-shaped; every 7th group gets an outlier.
                let mut xs: Vec<f32> = (0..len)
                    .map(|_| (0..4).map(|_| rng(&mut seed)).sum::<f32>() + 3.0)
                    .collect();
                if trial % 7 == 0 {
                    xs[trial % len] = -25.0;
                }
                let (mut c1, mut c2) = (vec![0u8; len], vec![0u8; len]);
                let (s1, m1) = quantize_group_minmax(bits, &xs, &mut c1);
                let (s2, m2) = quantize_group(bits, &xs, &mut c2);
                assert!(c2.iter().all(|&c| c <= bits.max_code()));
                let (e1, e2) = (
                    dequant_sq_err(&xs, &c1, s1, m1),
                    dequant_sq_err(&xs, &c2, s2, m2),
                );
                assert!(e2 <= e1 * (1.0 + 1e-9), "{bits:?}: {e2} > {e1}");
                if bits == QBits::B2 {
                    gain_sum += e2 / e1;
                    n += 1;
                }
            }
        }
        let mean_ratio = gain_sum / n as f64;
        assert!(
            mean_ratio < 0.85,
            "2-bit error ratio search/minmax {mean_ratio}"
        );
    }

    #[test]
    fn nan_reads_back_as_the_minimum_and_all_nan_as_zero() {
        let xs = [1.0f32, f32::NAN, 3.0];
        let mut c = [9u8; 3];
        let (s, m) = quantize_group(QBits::B4, &xs, &mut c);
        assert_eq!(c[1], 0);
        assert!(s.to_f32().is_finite() && m.to_f32() == 1.0);
        let (s, m) = quantize_group(QBits::B4, &[f32::NAN; 4], &mut c);
        assert_eq!((s.to_f32(), m.to_f32()), (0.0, 0.0));
    }

    /// Key outliers: the n largest key errors of a page come back exact (to f16 rounding of
    /// the error), so the error never grows with n and the kept positions are the worst ones.
    #[test]
    fn key_outliers_restore_the_largest_errors() {
        let mut seed = 11u64;
        let (page, hd) = (32usize, 64usize);
        let k: Vec<f16> = (0..page * hd)
            .map(|i| {
                // A few spikes far outside their channel's range.
                let spike = if i % 97 == 13 { 9.0 } else { 1.0 };
                f16::from_f32(rng(&mut seed) * spike)
            })
            .collect();
        let v: Vec<f16> = (0..page * hd)
            .map(|_| f16::from_f32(rng(&mut seed)))
            .collect();
        let run = |n: usize| {
            let g = PageGeom {
                kbits: QBits::B2,
                vbits: QBits::B2,
                k_outliers: n,
                page,
                head_dim: hd,
                vgroup: 32,
            };
            let mut codes = vec![0u8; g.code_bytes()];
            let mut meta = vec![f16::ZERO; g.meta_len()];
            quantize_page(&g, &k, &v, hd, 0, &mut codes, &mut meta);
            let (mut kd, mut vd) = (vec![0f32; page * hd], vec![0f32; page * hd]);
            dequantize_page(&g, &codes, &meta, &mut kd, &mut vd);
            let err: Vec<f32> = k.iter().zip(&kd).map(|(a, b)| a.to_f32() - b).collect();
            (err, vd)
        };
        let (e0, v0) = run(0);
        let sse = |e: &[f32]| e.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        let mut prev = sse(&e0);
        for n in [1, 8, 32, 64] {
            let (e, vd) = run(n);
            assert_eq!(vd, v0, "values do not depend on key outliers");
            let s = sse(&e);
            assert!(s <= prev, "n={n}: {s} > {prev}");
            prev = s;
            // The n worst errors without outliers are now (nearly) gone.
            let mut order: Vec<usize> = (0..e0.len()).collect();
            order.sort_by(|&a, &b| e0[b].abs().total_cmp(&e0[a].abs()));
            for &i in &order[..n] {
                assert!(
                    e[i].abs() <= e0[i].abs() * 1e-3 + 1e-3,
                    "n={n} position {i}: {} left of {}",
                    e[i],
                    e0[i]
                );
            }
        }
    }

    /// A page dequantizes to within each group's half step, for keys (per channel) and
    /// values (per token), with rows taken from inside a wider row.
    #[test]
    fn page_roundtrip_within_bounds() {
        let mut seed = 5u64;
        for bits in ALL {
            for (page, vgroup) in [(32usize, 32usize), (64, 64), (32, 64)] {
                let g = PageGeom {
                    kbits: bits,
                    vbits: bits,
                    k_outliers: 0,
                    page,
                    head_dim: 64,
                    vgroup,
                };
                let stride = 3 * 64;
                let col = 64;
                let k: Vec<f16> = (0..page * stride)
                    .map(|i| f16::from_f32(rng(&mut seed) * if i % 64 == 5 { 20.0 } else { 1.0 }))
                    .collect();
                let v: Vec<f16> = (0..page * stride)
                    .map(|_| f16::from_f32(rng(&mut seed)))
                    .collect();
                let mut codes = vec![0u8; g.code_bytes()];
                let mut meta = vec![f16::ZERO; g.meta_len()];
                quantize_page(&g, &k, &v, stride, col, &mut codes, &mut meta);
                let mut kd = vec![0f32; page * 64];
                let mut vd = vec![0f32; page * 64];
                dequantize_page(&g, &codes, &meta, &mut kd, &mut vd);
                // Each group's error: at most min/max's on the same values (which is within
                // half a step of each value; checked exactly at 8 bits).
                let check = |xs: &[f32], got: &[f32], what: &str| {
                    let mut c = vec![0u8; xs.len()];
                    let (s, m) = quantize_group_minmax(bits, xs, &mut c);
                    let e_mm = dequant_sq_err(xs, &c, s, m);
                    let e: f64 = xs
                        .iter()
                        .zip(got)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum();
                    assert!(
                        e <= e_mm * (1.0 + 1e-6) + 1e-9,
                        "{bits:?} {what}: {e} > {e_mm}"
                    );
                    if bits == QBits::B8 {
                        for (a, b) in xs.iter().zip(got) {
                            assert!((a - b).abs() <= s.to_f32() * 0.5 + 1e-5, "{what}");
                        }
                    }
                };
                for c in 0..64 {
                    let xs: Vec<f32> = (0..page)
                        .map(|j| k[j * stride + col + c].to_f32())
                        .collect();
                    let got: Vec<f32> = (0..page).map(|j| kd[j * 64 + c]).collect();
                    check(&xs, &got, "keys");
                }
                for j in 0..page {
                    for gi in 0..64 / vgroup {
                        let xs: Vec<f32> = (0..vgroup)
                            .map(|c| v[j * stride + col + gi * vgroup + c].to_f32())
                            .collect();
                        check(&xs, &vd[j * 64 + gi * vgroup..][..vgroup], "values");
                    }
                }
                assert_eq!(g.bytes(), g.code_bytes() + 2 * g.meta_len());
            }
        }
    }
}
