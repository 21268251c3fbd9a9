// kquant.wgsl: Y[t][row0 + r] = W[r] . X[t] for the ggml block types that matmul.wgsl does
// not run (K-quants, 5-bit, IQ4, ternary), plus Q8_0 matrices too large for one binding,
// with f32 activations: each weight is dequantized in registers exactly as the CPU's
// dequantizers (`quant/kquant.rs`, `q5.rs`, `iq4.rs`, `ternary.rs`) compute it, then
// multiplied by the f32 activation. No activation quantization: results differ from
// "dequantize, then f32 dot" by the float summation order only.
//
// GPU weight layout (made at upload by kquant.rs): ggml's blocks, in order, each padded to
// a whole number of u32 words (BW words per block) so that every field starts word-aligned
// and every load is an aligned u32 load. Blocks whose f16 header would misalign the codes
// have it moved to the tail:
//   Q4_K (12) 36 w, Q5_K (13) 44 w, Q2_K (10) 21 w, IQ4_XS (23) 34 w, Q5_1 (7) 6 w:  as ggml
//   Q6_K (14) 53 w, Q3_K (11) 28 w, TQ1_0 (34) 14 w, TQ2_0 (35) 17 w:  as ggml + 2 zero bytes
//   Q5_0 (6)  6 w:  [ qh: u32 | qs: 16 | d: f16 | 0 0 ]       (ggml: d | qh | qs)
//   IQ4_NL (20) 5 w: [ qs: 16 | d: f16 | 0 0 ]                (ggml: d | qs)
//   Q8_0 (8)  9 w:  [ qs: 32 | d: f16 | 0 0 ]                 (ggml: d | qs)
//
// Work split (as matmul.wgsl): a workgroup owns 4 rows, 16 lanes share a row, and a lane
// takes 32-weight units (one sub-block of a super-block, or one 32-weight block) u = lane,
// lane+16, ...; it dequantizes the unit once into registers and applies it to up to 4
// tokens. Partial sums meet in workgroup memory. The type switch is on the WTYPE override
// constant, resolved when the pipeline is compiled.

override WTYPE: u32 = 12u;

@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

const LANES: u32 = 16u;
const TT: u32 = 4u;

var<workgroup> part: array<f32, 256>;
// The 32 dequantized weights of the current unit.
var<private> wv: array<f32, 32>;

// The 16 levels of IQ4_NL / IQ4_XS codes (llama.cpp's kvalues_iq4nl); private, not const,
// so that it may be indexed by a runtime value on every WGSL compiler.
var<private> LEVELS: array<f32, 16> = array<f32, 16>(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
                              1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);

// Words per block.
fn block_words() -> u32 {
    switch (WTYPE) {
        case 12u: { return 36u; }
        case 13u: { return 44u; }
        case 14u: { return 53u; }
        case 10u: { return 21u; }
        case 11u: { return 28u; }
        case 23u: { return 34u; }
        case 34u: { return 14u; }
        case 35u: { return 17u; }
        case 6u, 7u: { return 6u; }
        case 20u: { return 5u; }
        default: { return 9u; } // Q8_0
    }
}

// 32-weight units per block.
fn units_per_block() -> u32 {
    if (WTYPE == 6u || WTYPE == 7u || WTYPE == 20u || WTYPE == 8u) {
        return 1u;
    }
    return 8u;
}

// Byte i of the block starting at word b.
fn bt(b: u32, i: u32) -> u32 {
    return byte_of(W[b + i / 4u], i % 4u);
}

// The f16 at (even) byte i of the block starting at word b.
fn hf(b: u32, i: u32) -> f32 {
    return f16_of(W[b + i / 4u], (i % 4u) / 2u);
}

// Q4_K/Q5_K's 6-bit (scale, min) of sub-block j from the 12 bytes at byte 4.
fn scale_min_k4(b: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(bt(b, 4u + j) & 63u, bt(b, 8u + j) & 63u);
    }
    let sc = (bt(b, 8u + j) & 15u) | ((bt(b, j) >> 6u) << 4u);
    let mn = (bt(b, 8u + j) >> 4u) | ((bt(b, 4u + j) >> 6u) << 4u);
    return vec2<u32>(sc, mn);
}

// Q3_K's signed 6-bit scale j (0..16) from the 12 bytes at byte 96.
fn q3k_scale(b: u32, j: u32) -> f32 {
    let low = select(bt(b, 96u + j - 8u) >> 4u, bt(b, 96u + j) & 15u, j < 8u);
    let high = (bt(b, 104u + j % 4u) >> (2u * (j / 4u))) & 3u;
    return f32(i32(low | (high << 4u)) - 32);
}

// Trit n (0..5) of a TQ1_0 byte, as -1, 0 or +1.
fn trit(q: u32, n: u32) -> f32 {
    var p = 1u;
    for (var i = 0u; i < n; i++) {
        p *= 3u;
    }
    let v = (q * p) & 255u;
    return f32(i32((v * 3u) >> 8u) - 1);
}

// Dequantize unit s (weights 32s..32s+32) of the block at word b into wv.
fn dequant_unit(b: u32, s: u32) {
    switch (WTYPE) {
        case 12u, 13u: { // Q4_K, Q5_K
            let sm = scale_min_k4(b, s);
            let d1 = hf(b, 0u) * f32(sm.x);
            let m1 = hf(b, 2u) * f32(sm.y);
            let p = s / 2u;
            let shift = 4u * (s % 2u);
            let five = WTYPE == 13u;
            let qs = select(16u, 48u, five) + 32u * p;
            for (var l = 0u; l < 32u; l++) {
                var q = (bt(b, qs + l) >> shift) & 15u;
                if (five) {
                    q |= ((bt(b, 16u + l) >> s) & 1u) << 4u;
                }
                wv[l] = d1 * f32(q) - m1;
            }
        }
        case 14u: { // Q6_K
            let d = hf(b, 208u);
            let h = s / 4u;
            let j = s % 4u;
            let ql = 64u * h + 32u * (j % 2u);
            let shift = 4u * (j / 2u);
            for (var l = 0u; l < 32u; l++) {
                let lo = (bt(b, ql + l) >> shift) & 15u;
                let hi = (bt(b, 128u + 32u * h + l) >> (2u * j)) & 3u;
                let q = i32(lo | (hi << 4u)) - 32;
                let sc = f32(i8_of(W[b + 48u + (8u * h + l / 16u + 2u * j) / 4u],
                                   (8u * h + l / 16u + 2u * j) % 4u));
                wv[l] = d * sc * f32(q);
            }
        }
        case 10u: { // Q2_K
            let d = hf(b, 80u);
            let dmin = hf(b, 82u);
            let h = s / 4u;
            let sh = 2u * (s % 4u);
            for (var l = 0u; l < 32u; l++) {
                let sc = bt(b, 8u * h + 2u * (s % 4u) + l / 16u);
                let q = (bt(b, 16u + 32u * h + l) >> sh) & 3u;
                wv[l] = d * f32(sc & 15u) * f32(q) - dmin * f32(sc >> 4u);
            }
        }
        case 11u: { // Q3_K
            let d = hf(b, 108u);
            let h = s / 4u;
            let sh = s % 4u;
            let bit = 1u << (4u * h + sh);
            for (var l = 0u; l < 32u; l++) {
                let dl = d * q3k_scale(b, 8u * h + 2u * sh + l / 16u);
                let low = i32((bt(b, 32u + 32u * h + l) >> (2u * sh)) & 3u);
                let q = low - select(4, 0, (bt(b, l) & bit) != 0u);
                wv[l] = dl * f32(q);
            }
        }
        case 23u: { // IQ4_XS
            let scales_h = bt(b, 2u) | (bt(b, 3u) << 8u);
            let low = (bt(b, 4u + s / 2u) >> (4u * (s % 2u))) & 15u;
            let high = (scales_h >> (2u * s)) & 3u;
            let dl = hf(b, 0u) * f32(i32(low | (high << 4u)) - 32);
            for (var j = 0u; j < 16u; j++) {
                let q = bt(b, 8u + 16u * s + j);
                wv[j] = dl * LEVELS[q & 15u];
                wv[j + 16u] = dl * LEVELS[q >> 4u];
            }
        }
        case 20u: { // IQ4_NL (repacked: qs, then d)
            let d = hf(b, 16u);
            for (var j = 0u; j < 16u; j++) {
                let q = bt(b, j);
                wv[j] = d * LEVELS[q & 15u];
                wv[j + 16u] = d * LEVELS[q >> 4u];
            }
        }
        case 34u: { // TQ1_0
            let d = hf(b, 52u);
            for (var l = 0u; l < 32u; l++) {
                let e = 32u * s + l;
                var t = 0.0;
                if (e < 160u) {
                    t = trit(bt(b, l), s);
                } else if (e < 240u) {
                    t = trit(bt(b, 32u + (e - 160u) % 16u), (e - 160u) / 16u);
                } else {
                    t = trit(bt(b, 48u + (e - 240u) % 4u), (e - 240u) / 4u);
                }
                wv[l] = t * d;
            }
        }
        case 35u: { // TQ2_0
            let d = hf(b, 64u);
            let h = s / 4u;
            let sh = 2u * (s % 4u);
            for (var l = 0u; l < 32u; l++) {
                let q = i32((bt(b, 32u * h + l) >> sh) & 3u) - 1;
                wv[l] = f32(q) * d;
            }
        }
        case 6u: { // Q5_0 (repacked: qh, qs, d)
            let qh = W[b];
            let d = hf(b, 20u);
            for (var j = 0u; j < 16u; j++) {
                let q = bt(b, 4u + j);
                let c0 = (q & 15u) | (((qh >> j) & 1u) << 4u);
                let c1 = (q >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
                wv[j] = d * f32(i32(c0) - 16);
                wv[j + 16u] = d * f32(i32(c1) - 16);
            }
        }
        case 7u: { // Q5_1
            let d = hf(b, 0u);
            let m = hf(b, 2u);
            let qh = W[b + 1u];
            for (var j = 0u; j < 16u; j++) {
                let q = bt(b, 8u + j);
                let c0 = (q & 15u) | (((qh >> j) & 1u) << 4u);
                let c1 = (q >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
                wv[j] = d * f32(c0) + m;
                wv[j + 16u] = d * f32(c1) + m;
            }
        }
        default: { // Q8_0 (repacked: qs, then d)
            let d = hf(b, 32u);
            for (var j = 0u; j < 32u; j++) {
                wv[j] = d * f32(i8_of(W[b + j / 4u], j % 4u));
            }
        }
    }
}

// a.x = rows of this part, a.y = cols (a multiple of the block length), a.z = tokens,
// a.w = first output row of this part; b.y = output row stride. Workgroups: x(+z) over row
// quads, y over token quads.
// params: rows=a.x cols=a.y n=a.z row0=a.w y_stride=b.y
@compute @workgroup_size(64)
fn matmul_k(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = l.x;
    let row = flat_group(wid, nwg) * (WG / LANES) + lid / LANES;
    let lane = lid % LANES;
    let cols = P.a.y;
    let t0 = wid.y * TT;
    let nt = min(TT, P.a.z - t0);
    let upb = units_per_block();
    let nu = cols / 32u;
    let bw = block_words();
    var acc: array<f32, 4>;
    for (var tt = 0u; tt < TT; tt++) {
        acc[tt] = 0.0;
    }
    if (row < P.a.x) {
        let row_blk = row * (nu / upb);
        for (var u = lane; u < nu; u += LANES) {
            dequant_unit((row_blk + u / upb) * bw, u % upb);
            for (var tt = 0u; tt < nt; tt++) {
                let xb = (t0 + tt) * cols + 32u * u;
                var s = 0.0;
                for (var j = 0u; j < 32u; j++) {
                    s += wv[j] * X[xb + j];
                }
                acc[tt] += s;
            }
        }
    }
    for (var tt = 0u; tt < TT; tt++) {
        part[tt * WG + lid] = acc[tt];
    }
    workgroupBarrier();
    for (var st = LANES / 2u; st > 0u; st = st >> 1u) {
        if (lane < st) {
            for (var tt = 0u; tt < TT; tt++) {
                part[tt * WG + lid] += part[tt * WG + lid + st];
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < P.a.x) {
        for (var tt = 0u; tt < nt; tt++) {
            Y[(t0 + tt) * P.b.y + P.a.w + row] = part[tt * WG + lid];
        }
    }
}
