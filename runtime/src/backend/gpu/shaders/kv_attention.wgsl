// kv_attention.wgsl: the quantized KV cache on the GPU (KvMode q8/q4/q2): storing a batch's
// keys and values as f16 rows, and causal grouped-query attention over
// sinks (f16) | quantized pages | recent window (f16), read straight from the codes.
//
// Storage (runtime/src/backend/gpu/kv_quant.rs has the host side):
//   KF, VF  f16 rows [layer][sink_cap + tail_cap][kv_dim], two values per u32 word. Per layer
//           the first sink_cap rows are the attention sinks, the other tail_cap rows a ring
//           holding the f16 window (logical window row i sits at sink_cap + (start + i) %
//           tail_cap), so dropping the rows of a quantized page moves nothing.
//   PG      pages [layer][slot][kv_head][page bytes], each page byte for byte the CPU's layout
//           (runtime/src/kv/quant.rs): key codes [head_dim channels][P tokens], value codes
//           [P tokens][head_dim], then the f16 metadata (K scale[hd], K min[hd], V scale
//           [P][ng], V min[P][ng], key outliers as (index bits, error) f16 pairs, i.e. one
//           u32 word per outlier: index in the low half, error in the high half).
//           Pages are quantized on the host by the CPU's own quantizer and uploaded, so
//           these bytes equal the CPU cache's.
//   SPAN    per query token of the batch: (sinks, pages, tail_lo, tail_hi), the keys it
//           sees (kv::quant::BatchPlan::span, computed on the host once per forward).
//
// Codes come in blocks of 32 packed into BITS words (8 bits: byte i = u[i]; 4 bits: byte i
// = u[i] | u[i+16] << 4; 2 bits: byte i = u[i] | u[i+8] << 2 | u[i+16] << 4 | u[i+24] << 6);
// BITS is a pipeline override, so each width is its own specialized kernel. Every load is a
// whole, aligned u32 word; a code is a shift and a mask in registers.
//
// Attention gives one workgroup to each (query token, query head); a query head reads KV
// head h / (n_head / n_kv_head) (GQA). Keys are walked in tiles of 256 with an online softmax
// (running max, accumulators rescaled when the max grows), so a score is computed once and
// nothing of the context's length is kept. Per tile:
//   1. invocation lid scores keys k0 + lid, k0 + 64 + lid, ... (4 of them): an f16 row dot
//      product, or for a page key Σ_c q_c·(m_c + s_c·u_c) plus q_c·e for each of the page's
//      key outliers at that token. Neighbouring invocations score neighbouring tokens: in a
//      page they read neighbouring bytes of the same channel's code words (coalesced; keys
//      are stored per channel, KIVI), and the channel's scale and minimum are one word for
//      all of them.
//   2. one max reduction in workgroup memory; probabilities go to `probs`, and each
//      invocation keeps its own share of the sum (the max is the same everywhere, so the
//      shares rescale alike and are reduced once at the end).
//   3. every invocation accumulates its own output dimensions d = lid + 64c over the tile's
//      keys: value rows are per token, so the invocations of one step read one value row's
//      consecutive code bytes (coalesced) and that token's group scale and minimum.
// A tile of 256 keys needs one round of barriers where tiles of 64 would need four (decode
// contexts up to 256 keys are one round). On lavapipe this kernel still takes about three
// times the f16 kernel's time per dispatch (measured with kernel timestamps, 130-token
// prefill of SmolLM2); where that goes is not known yet.
// Queries are multiplied by the scale and kept in f32 (not rounded to f16): the CPU's
// quantized-cache kernel (backend/cpu/attention_q.rs) does the same, and that is what this
// kernel must equal (to float summation order). Branches on the key region (sink, page,
// window) are uniform over the workgroup in step 3 and differ only at region edges in step 1.
// A real GPU would also split long contexts over several workgroups (flash-decoding) and
// share one page's unpacking between the query heads of a KV head; for the sizes tested
// here one workgroup per (token, head) is enough.

override BITS: u32 = 8u;

@group(0) @binding(1) var<storage, read_write> KF: array<u32>;
@group(0) @binding(2) var<storage, read_write> VF: array<u32>;
@group(0) @binding(3) var<storage, read> SRC_K: array<f32>;
@group(0) @binding(4) var<storage, read> SRC_V: array<f32>;
@group(0) @binding(5) var<storage, read> Q: array<f32>;
@group(0) @binding(6) var<storage, read> PG: array<u32>;
@group(0) @binding(7) var<storage, read> SPAN: array<u32>;
@group(0) @binding(8) var<storage, read_write> O: array<f32>;
@group(0) @binding(9) var<storage, read> SIGNS: array<f32>;

// Store a batch of n tokens: a.x = n, a.y = kv_dim (even), a.z = sink_take (the first rows
// go to the sinks), a.w = n_sink_before; b.x = this layer's first row, b.y = sink_cap,
// b.z = tail_cap, b.w = ring row of the batch's first window token. SRC_K/SRC_V hold
// [n][kv_dim] f32 (keys after RoPE). Each invocation converts two keys and two values to f16
// (round to nearest even, bit-identical to the CPU's cache) and writes one word of each.
// params: n=a.x kv_dim=a.y sink_take=a.z n_sink_before=a.w row0=b.x sink_cap=b.y tail_cap=b.z ring0=b.w
@compute @workgroup_size(64)
fn kvq_store(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = flat_group(wid, nwg) * WG + l.x;
    let kvd = P.a.y;
    if (2u * w >= P.a.x * kvd) {
        return;
    }
    let i = (2u * w) / kvd;
    let col = (2u * w) % kvd;
    var row: u32;
    if (i < P.a.z) {
        row = P.b.x + P.a.w + i;
    } else {
        row = P.b.x + P.b.y + (P.b.w + i - P.a.z) % P.b.z;
    }
    let dst = (row * kvd + col) / 2u;
    KF[dst] = f16_bits(SRC_K[2u * w]) | (f16_bits(SRC_K[2u * w + 1u]) << 16u);
    VF[dst] = f16_bits(SRC_V[2u * w]) | (f16_bits(SRC_V[2u * w + 1u]) << 16u);
}

var<workgroup> qs: array<f32, 512>;
// Probabilities of one tile of keys.
var<workgroup> probs: array<f32, 256>;

// Keys per tile: each invocation scores TILE / WG = 4 of them per round, so a round of
// barriers (one max reduction, two fences) serves 256 keys.
const TILE: u32 = 256u;

// Code i (0..31) of the packed block starting at word `at` of PG.
fn code_at(at: u32, i: u32) -> f32 {
    if (BITS == 8u) {
        return f32((PG[at + i / 4u] >> (8u * (i % 4u))) & 0xffu);
    }
    if (BITS == 4u) {
        let b = i % 16u;
        return f32((PG[at + b / 4u] >> (8u * (b % 4u) + 4u * (i / 16u))) & 0xfu);
    }
    let b = i % 8u;
    return f32((PG[at + b / 4u] >> (8u * (b % 4u) + 2u * (i / 8u))) & 3u);
}

// f16 metadata value m of the page whose metadata starts at word `mt`.
fn meta_at(mt: u32, m: u32) -> f32 {
    return f16_of(PG[mt + m / 2u], m % 2u);
}

// What a workgroup needs to find a key: its query's span and the cache's shape.
struct Keys {
    kvd: u32,
    hd: u32,
    kvh: u32,
    n_kv: u32,
    row0: u32,
    sink_cap: u32,
    tail_cap: u32,
    ring: u32,
    page: u32,
    // log2 of the page size and of the value group (both powers of two: 32, 64 or 128).
    page_sh: u32,
    vg_sh: u32,
    ng: u32,
    n_out: u32,
    k_chan_w: u32,
    v_row_w: u32,
    codes_w: u32,
    page_w: u32,
    out_w: u32,
    n_sinks: u32,
    tail_lo: u32,
    page_end: u32,
    n_keys: u32,
    // Slot of logical page 0 and slots per layer (pages are a ring: the sliding window).
    page0: u32,
    n_slots: u32,
}

// KF/VF row of a key outside the pages (a sink, or a window row in the ring).
fn f16_row(q: Keys, k: u32) -> u32 {
    if (k < q.n_sinks) {
        return q.row0 + k;
    }
    // ring < tail_cap and the window row < tail_cap: one conditional subtraction wraps it
    // (integer division is scalarized, hence slow, on CPU rasterizers).
    var r = q.ring + q.tail_lo + (k - q.page_end);
    if (r >= q.tail_cap) {
        r -= q.tail_cap;
    }
    return q.row0 + q.sink_cap + r;
}

// First word of the page holding key k (n_sinks <= k < page_end).
fn page_word(q: Keys, k: u32) -> u32 {
    var slot = q.page0 + ((k - q.n_sinks) >> q.page_sh);
    if (slot >= q.n_slots) {
        slot -= q.n_slots;
    }
    return P.c.x + (slot * q.n_kv + q.kvh) * q.page_w;
}

// Score of key k against the scaled query in `qs`.
fn key_score(q: Keys, k: u32) -> f32 {
    var s = 0.0;
    if (k < q.n_sinks || k >= q.page_end) {
        let at = (f16_row(q, k) * q.kvd + q.kvh * q.hd) / 2u;
        for (var w = 0u; w < q.hd / 2u; w++) {
            let kw = KF[at + w];
            s += qs[2u * w] * f16_of(kw, 0u) + qs[2u * w + 1u] * f16_of(kw, 1u);
        }
        return s;
    }
    let j = (k - q.n_sinks) & (q.page - 1u);
    let pw = page_word(q, k);
    let mt = pw + q.codes_w;
    let blk = pw + (j / 32u) * BITS;
    for (var c = 0u; c < q.hd; c++) {
        let u = code_at(blk + c * q.k_chan_w, j % 32u);
        s += qs[c] * (meta_at(mt, q.hd + c) + meta_at(mt, c) * u);
    }
    for (var o = 0u; o < q.n_out; o++) {
        let ow = PG[mt + q.out_w + o];
        let idx = ow & 0xffffu;
        let e = f16_of(ow, 1u);
        if (e != 0.0 && (idx & (q.page - 1u)) == j) {
            s += qs[idx >> q.page_sh] * e;
        }
    }
    return s;
}

// qs[0..n] ← H·(SIGNS ⊙ qs)·norm in place: kv::hadamard::rotate's butterflies in its order
// (n a power of two, at most 512), every invocation taking pairs lid, lid + 64, ...
fn rotate_qs(n: u32, lid: u32, norm: f32) {
    for (var d = lid; d < n; d += WG) {
        qs[d] = qs[d] * SIGNS[d];
    }
    workgroupBarrier();
    for (var h = 1u; h < n; h *= 2u) {
        for (var i = lid; i < n / 2u; i += WG) {
            let j = (i / h) * 2u * h + i % h;
            let a = qs[j];
            let b = qs[j + h];
            qs[j] = a + b;
            qs[j + h] = a - b;
        }
        workgroupBarrier();
    }
    for (var d = lid; d < n; d += WG) {
        qs[d] = qs[d] * norm;
    }
    workgroupBarrier();
}

// Rotate a.x heads of a.y values (a power of two, at most 512) of O in place, as
// kv::hadamard::rotate does (f.x = 1/sqrt(a.y)): the keys of a rotated cache, before they
// are stored. One workgroup per head.
// params: heads=a.x head_dim=a.y norm=f.x
@compute @workgroup_size(64)
fn kv_rotate(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat_group(wid, nwg);
    let n = P.a.y;
    // Uniform per workgroup, so the barriers below are reached by all or none.
    if (g >= P.a.x) {
        return;
    }
    for (var d = l.x; d < n; d += WG) {
        qs[d] = O[g * n + d];
    }
    workgroupBarrier();
    rotate_qs(n, l.x, P.f.x);
    for (var d = l.x; d < n; d += WG) {
        O[g * n + d] = qs[d];
    }
}

// a.x = n_head, a.y = n_kv_head, a.z = head_dim (multiple of 32, <= 512), a.w = n_tokens;
// b.x = this layer's first row of KF/VF, b.y = sink_cap, b.z = tail_cap, b.w = ring start
// (ring row of window row 0); c.x = this layer's first page word, c.y = P (tokens per page,
// 32, 64 or 128), c.z = channels per value group (32, 64 or 128), c.w = key outliers per page;
// f.x = scale, f.y = 1 when keys are rotated (f.z = 1/sqrt(head_dim)). Q and O are
// [n_tokens][n_head][head_dim].
// params: n_head=a.x n_kv_head=a.y head_dim=a.z n_tokens=a.w row0=b.x sink_cap=b.y tail_cap=b.z ring=b.w page_word=c.x page=c.y vgroup=c.z k_outliers=c.w scale=f.x rotated=f.y inv_sqrt_hd=f.z
@compute @workgroup_size(64)
fn kvq_attention(@builtin(local_invocation_id) l: vec3<u32>,
                 @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = l.x;
    let g = flat_group(wid, nwg);
    let n_head = P.a.x;
    if (g >= P.a.w * n_head) {
        return;
    }
    let t = g / n_head;
    let h = g % n_head;
    var q: Keys;
    q.n_kv = P.a.y;
    q.hd = P.a.z;
    q.kvh = h / (n_head / q.n_kv);
    q.kvd = q.n_kv * q.hd;
    q.row0 = P.b.x;
    q.sink_cap = P.b.y;
    q.tail_cap = P.b.z;
    q.ring = P.b.w;
    q.page = P.c.y;
    q.page_sh = countTrailingZeros(q.page);
    q.vg_sh = countTrailingZeros(P.c.z);
    q.ng = q.hd >> q.vg_sh;
    q.n_out = P.c.w;
    // Words of one page and of its parts.
    q.k_chan_w = (q.page / 32u) * BITS;
    q.v_row_w = (q.hd / 32u) * BITS;
    q.codes_w = q.hd * q.k_chan_w + q.page * q.v_row_w;
    q.out_w = q.hd + q.page * q.ng;
    q.page_w = q.codes_w + q.out_w + q.n_out;
    q.n_sinks = SPAN[8u * t];
    q.tail_lo = SPAN[8u * t + 2u];
    q.page_end = q.n_sinks + SPAN[8u * t + 1u] * q.page;
    q.n_keys = q.page_end + SPAN[8u * t + 3u] - q.tail_lo;
    q.page0 = SPAN[8u * t + 4u];
    q.n_slots = SPAN[8u * t + 5u];
    let hd = q.hd;

    for (var d = lid; d < hd; d += WG) {
        qs[d] = Q[g * hd + d] * P.f.x;
    }
    workgroupBarrier();
    if (P.f.y != 0.0) {
        // Rotated keys: rotate the scaled query alike (the CPU kernel's order).
        rotate_qs(hd, lid, P.f.z);
    }

    // Running max (the same in every invocation), this invocation's share of the sum.
    var m = -3.0e38;
    var s_l = 0.0;
    var acc: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
        acc[c] = 0.0;
    }
    for (var k0 = 0u; k0 < q.n_keys; k0 += TILE) {
        // 1. Scores of keys k0 + e·64 + lid.
        var sk: array<f32, 4>;
        var tmax = -3.0e38;
        for (var e = 0u; e < TILE / WG; e++) {
            let k = k0 + e * WG + lid;
            var s = -3.0e38;
            if (k < q.n_keys) {
                s = key_score(q, k);
            }
            sk[e] = s;
            tmax = max(tmax, s);
        }
        // 2. Online softmax over the tile.
        let mn = max(m, wg_max(tmax, lid));
        let alpha = exp(m - mn);
        s_l *= alpha;
        for (var e = 0u; e < TILE / WG; e++) {
            var p = 0.0;
            if (k0 + e * WG + lid < q.n_keys) {
                p = exp(sk[e] - mn);
            }
            probs[e * WG + lid] = p;
            s_l += p;
        }
        m = mn;
        for (var c = 0u; c < 8u; c++) {
            acc[c] *= alpha;
        }
        workgroupBarrier();
        // 3. Values of the tile's keys, output dimensions d = lid + 64c.
        let nt = min(TILE, q.n_keys - k0);
        for (var i = 0u; i < nt; i++) {
            let pj = probs[i];
            let kk = k0 + i;
            if (kk >= q.n_sinks && kk < q.page_end) {
                let j = (kk - q.n_sinks) & (q.page - 1u);
                let pw = page_word(q, kk);
                let mt = pw + q.codes_w;
                let vrow = pw + hd * q.k_chan_w + j * q.v_row_w;
                for (var c = 0u; c < 8u; c++) {
                    let d = lid + c * WG;
                    if (d < hd) {
                        let gi = d >> q.vg_sh;
                        let u = code_at(vrow + (d / 32u) * BITS, d % 32u);
                        let sv = meta_at(mt, 2u * hd + j * q.ng + gi);
                        let mv = meta_at(mt, 2u * hd + q.page * q.ng + j * q.ng + gi);
                        acc[c] += pj * (mv + sv * u);
                    }
                }
            } else {
                let vr = f16_row(q, kk) * q.kvd + q.kvh * hd;
                for (var c = 0u; c < 8u; c++) {
                    let d = lid + c * WG;
                    if (d < hd) {
                        let vi = vr + d;
                        acc[c] += pj * f16_of(VF[vi / 2u], vi % 2u);
                    }
                }
            }
        }
        workgroupBarrier();
    }
    let inv = 1.0 / wg_sum(s_l, lid);
    for (var c = 0u; c < 8u; c++) {
        let d = lid + c * WG;
        if (d < hd) {
            O[g * hd + d] = acc[c] * inv;
        }
    }
}
