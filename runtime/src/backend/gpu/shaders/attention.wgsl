// attention.wgsl: the f16 KV cache store and causal grouped-query attention over it.
//
// Cache layout (as the CPU's F16Cache): [layer][n_ctx][n_kv_head * head_dim] f16, two
// values per u32 word. head_dim and kv_dim are even, so every key/value row starts on a word.
//
// Attention gives one workgroup to each (token, query head). Pass 1: each invocation scores
// keys j = lid, lid+64, ... (one key row per invocation: a 128-byte contiguous row for
// head_dim 64, i.e. whole cache lines) keeping a running max and sum (online softmax), and
// the workgroup reduces them. Pass 2 walks the keys in tiles of 64: each invocation turns
// one score into a probability (rounded to f16 like llama.cpp and the CPU backend) into
// workgroup memory, then every invocation accumulates its own output dimensions over the
// tile, so the value-row loads of a step are contiguous across invocations (coalesced).
// Trip counts depend only on the position, never on data; the only branch is the causal
// bound of the last tile. A query head reads KV head h / (n_head / n_kv_head) (GQA).
// For long decode contexts a real GPU would also split the keys over several workgroups
// (flash-decoding); one workgroup per head is enough for the sizes tested here.

@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read_write> K: array<u32>;
@group(0) @binding(3) var<storage, read_write> V: array<u32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;

@group(0) @binding(5) var<storage, read> SRC_K: array<f32>;
@group(0) @binding(6) var<storage, read> SRC_V: array<f32>;

// Store keys and values: a.x = values to store (n_tokens * kv_dim, even), a.y = first
// destination value (even). Each invocation converts two values of K and two of V to f16
// (round to nearest even, bit-identical to the CPU cache) and writes one word of each.
// params: n=a.x dst=a.y
@compute @workgroup_size(64)
fn kv_store(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = flat_group(wid, nwg) * WG + l.x;
    if (2u * w >= P.a.x) {
        return;
    }
    let dst = P.a.y / 2u + w;
    K[dst] = f16_bits(SRC_K[2u * w]) | (f16_bits(SRC_K[2u * w + 1u]) << 16u);
    V[dst] = f16_bits(SRC_V[2u * w]) | (f16_bits(SRC_V[2u * w + 1u]) << 16u);
}

var<workgroup> qh: array<f32, 512>;
var<workgroup> probs: array<f32, 64>;

// a.x = n_head, a.y = n_kv_head, a.z = head_dim (even, <= 512), a.w = pos0 (tokens already
// cached); b.x = n_tokens, b.y = first cache value of this layer, b.z = kv_dim, b.w = window
// (0 = none); f.x = scale. Q and O are [n_tokens][n_head][head_dim]. Token t attends to
// positions 0..=pos0 + t, or with a window w to the last w of them.
// params: n_head=a.x n_kv_head=a.y head_dim=a.z pos0=a.w n_tokens=b.x layer_base=b.y kv_dim=b.z window=b.w scale=f.x
@compute @workgroup_size(64)
fn attention(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = l.x;
    let g = flat_group(wid, nwg);
    let n_head = P.a.x;
    let hd = P.a.z;
    if (g >= P.b.x * n_head) {
        return;
    }
    let t = g / n_head;
    let h = g % n_head;
    let kvh = h / (n_head / P.a.y);
    let n_keys = P.a.w + t + 1u;
    var lo = 0u;
    if (P.b.w > 0u && n_keys > P.b.w) {
        lo = n_keys - P.b.w;
    }
    let kv_dim = P.b.z;
    // Word index of key/value row 0 of this KV head.
    let base = (P.b.y + kvh * hd) / 2u;
    let row_words = kv_dim / 2u;
    let hw = hd / 2u;
    let scale = P.f.x;

    // llama.cpp rounds Q to f16 before the f16 dot products; so does the CPU backend.
    for (var d = lid; d < hd; d += WG) {
        qh[d] = f16_round(Q[g * hd + d]);
    }
    workgroupBarrier();

    // Pass 1: running max m and sum l of exp(score - m) over this invocation's keys.
    var m = -3.0e38;
    var s_l = 0.0;
    for (var j = lo + lid; j < n_keys; j += WG) {
        let kr = base + j * row_words;
        var s = 0.0;
        for (var w = 0u; w < hw; w++) {
            let kw = K[kr + w];
            s += qh[2u * w] * f16_of(kw, 0u) + qh[2u * w + 1u] * f16_of(kw, 1u);
        }
        s = s * scale;
        let mn = max(m, s);
        s_l = s_l * exp(m - mn) + exp(s - mn);
        m = mn;
    }
    let gm = wg_max(m, lid);
    let gl = wg_sum(s_l * exp(m - gm), lid);
    let inv = 1.0 / gl;

    // Pass 2: probabilities of 64 keys at a time, then every invocation accumulates its
    // output dimensions d = lid + 64c.
    var acc: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
        acc[c] = 0.0;
    }
    for (var j0 = lo; j0 < n_keys; j0 += WG) {
        let j = j0 + lid;
        var p = 0.0;
        if (j < n_keys) {
            let kr = base + j * row_words;
            var s = 0.0;
            for (var w = 0u; w < hw; w++) {
                let kw = K[kr + w];
                s += qh[2u * w] * f16_of(kw, 0u) + qh[2u * w + 1u] * f16_of(kw, 1u);
            }
            p = f16_round(exp(s * scale - gm) * inv);
        }
        probs[lid] = p;
        workgroupBarrier();
        let nt = min(WG, n_keys - j0);
        for (var i = 0u; i < nt; i++) {
            let pj = probs[i];
            let vr = (base + (j0 + i) * row_words) * 2u;
            for (var c = 0u; c < 8u; c++) {
                let d = lid + c * WG;
                if (d < hd) {
                    let vi = vr + d;
                    acc[c] += pj * f16_of(V[vi / 2u], vi % 2u);
                }
            }
        }
        workgroupBarrier();
    }
    for (var c = 0u; c < 8u; c++) {
        let d = lid + c * WG;
        if (d < hd) {
            O[g * hd + d] = acc[c];
        }
    }
}
