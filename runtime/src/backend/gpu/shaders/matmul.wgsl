// matmul.wgsl: Y[t][r] = W[r] . X[t] for ggml weight types, and embedding rows.
//
// GPU weight layout (made at upload from the GGUF blocks; same bits, reordered so that
// every load is an aligned u32):
//   F32  (WTYPE 0):  [rows][cols] f32
//   F16  (1), BF16 (30): [rows][cols] halves, two per word
//   Q4_0 (2): qs [rows][nb][4 words] then, at word P.a.w, d [rows*nb] f16 (two per word)
//   Q4_1 (3): qs [rows][nb][4 words] then, at word P.a.w, (d | m << 16) [rows*nb] words
//   Q8_0 (8): qs [rows][nb][8 words] then, at word P.a.w, d [rows*nb] f16 (two per word)
//   df12 (matmul_df12 only): table | sign|mantissa | codes | block starts | exceptions
//             (backend/gpu/df12.rs), decoded to the BF16 value in registers
// (nb = cols/32; the qs bytes keep ggml's order: byte j holds elements j and j+16.)
// Quantized weights take activations from quant_act.wgsl (Q8_1 for Q4_1, else Q8_0):
// integer block dot products exactly as llama.cpp and the CPU backend compute them, then
// d_w * d_x * sum (+ m_w * s_x), so only the float summation order differs.
//
// Shaped for real GPUs: a workgroup owns 4 rows and 16 invocations share a row; they take
// consecutive blocks (lane, lane+16, ...), so the 16 lanes of a row read one contiguous
// run of 16 blocks per step (256 bytes for Q4) — coalesced. Each weight block is loaded
// into registers once and applied to up to 4 tokens (prefill reuses weights 4x per load).
// Partial sums meet in workgroup memory (4 halving steps). Every lane of a row runs the
// same trip count; the type switch is on an override constant, resolved at compile time.

override WTYPE: u32 = 3u;

@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<u32>;
@group(0) @binding(3) var<storage, read> XD: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

const LANES: u32 = 16u;
const TT: u32 = 4u;

var<workgroup> part: array<f32, 256>;

fn half_at(i: u32) -> f32 {
    return f16_of(W[i / 2u], i % 2u);
}

// One dense element of row `row`.
fn dense_at(row: u32, cols: u32, k: u32) -> f32 {
    let i = row * cols + k;
    if (WTYPE == 0u) {
        return bitcast<f32>(W[i]);
    } else if (WTYPE == 1u) {
        return f16_of(W[i / 2u], i % 2u);
    }
    return bf16_of(W[i / 2u], i % 2u);
}

// Element k of row `row` of any supported type, dequantized (embedding lookup).
fn dequant_at(row: u32, cols: u32, k: u32, soff: u32) -> f32 {
    if (WTYPE == 0u || WTYPE == 1u || WTYPE == 30u) {
        return dense_at(row, cols, k);
    }
    let nb = cols / 32u;
    let b = row * nb + k / 32u;
    let j = k % 32u;
    if (WTYPE == 8u) {
        return half_at(2u * soff + b) * f32(i8_of(W[b * 8u + j / 4u], j % 4u));
    }
    let byte = byte_of(W[b * 4u + (j % 16u) / 4u], j % 4u);
    let q = select(byte >> 4u, byte & 15u, j < 16u);
    if (WTYPE == 2u) {
        return half_at(2u * soff + b) * (f32(q) - 8.0);
    }
    let dm = unpack2x16float(W[soff + b]);
    return dm.x * f32(q) + dm.y;
}

// Embedding rows: Y[t][k] = W[ids[t]][k], ids in X. a.x = cols, a.y = tokens, a.w = scale
// offset (words). One invocation per output element.
// params: cols=a.x n=a.y scale_off=a.w
@compute @workgroup_size(64)
fn get_rows(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * WG + l.x;
    let cols = P.a.x;
    if (i >= cols * P.a.y) {
        return;
    }
    Y[i] = dequant_at(X[i / cols], cols, i % cols, P.a.w);
}

// Sum the 16 lanes of each row for each token and write Y. Called by all invocations.
fn finish_rows(acc: array<f32, 4>, lid: u32, row: u32, t0: u32, nt: u32) {
    let lane = lid % LANES;
    for (var tt = 0u; tt < TT; tt++) {
        part[tt * WG + lid] = acc[tt];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            for (var tt = 0u; tt < TT; tt++) {
                part[tt * WG + lid] += part[tt * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < P.a.x) {
        for (var tt = 0u; tt < nt; tt++) {
            Y[(t0 + tt) * P.b.y + row] = part[tt * WG + lid];
        }
    }
}

// Quantized weights x Q8 activations. a.x = rows, a.y = cols, a.z = tokens, a.w = scale
// offset (words); b.y = output row stride. Workgroups: x(+z) over row quads, y over token
// quads.
// params: rows=a.x cols=a.y n=a.z scale_off=a.w y_stride=b.y
@compute @workgroup_size(64)
fn matmul_q(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = l.x;
    let row = flat_group(wid, nwg) * (WG / LANES) + lid / LANES;
    let lane = lid % LANES;
    let cols = P.a.y;
    let nb = cols / 32u;
    let t0 = wid.y * TT;
    let nt = min(TT, P.a.z - t0);
    let xw = cols / 4u;
    var acc: array<f32, 4>;
    for (var tt = 0u; tt < TT; tt++) {
        acc[tt] = 0.0;
    }
    if (row < P.a.x) {
        for (var b = lane; b < nb; b += LANES) {
            let blk = row * nb + b;
            if (WTYPE == 8u) {
                var wq: array<u32, 8>;
                for (var i = 0u; i < 8u; i++) {
                    wq[i] = W[blk * 8u + i];
                }
                let dw = half_at(2u * P.a.w + blk);
                for (var tt = 0u; tt < nt; tt++) {
                    let xb = (t0 + tt) * xw + b * 8u;
                    var s = 0i;
                    for (var i = 0u; i < 8u; i++) {
                        let xv = X[xb + i];
                        for (var k = 0u; k < 4u; k++) {
                            s += i8_of(wq[i], k) * i8_of(xv, k);
                        }
                    }
                    acc[tt] += dw * XD[2u * ((t0 + tt) * nb + b)] * f32(s);
                }
            } else {
                var wq: array<u32, 4>;
                for (var i = 0u; i < 4u; i++) {
                    wq[i] = W[blk * 4u + i];
                }
                var dw = 0.0;
                var mw = 0.0;
                var off = 0i;
                if (WTYPE == 2u) {
                    dw = half_at(2u * P.a.w + blk);
                    off = 8i;
                } else {
                    let dm = unpack2x16float(W[P.a.w + blk]);
                    dw = dm.x;
                    mw = dm.y;
                }
                for (var tt = 0u; tt < nt; tt++) {
                    let xb = (t0 + tt) * xw + b * 8u;
                    var s = 0i;
                    for (var i = 0u; i < 4u; i++) {
                        let lo = X[xb + i];
                        let hi = X[xb + 4u + i];
                        for (var k = 0u; k < 4u; k++) {
                            let byte = byte_of(wq[i], k);
                            s += (i32(byte & 15u) - off) * i8_of(lo, k);
                            s += (i32(byte >> 4u) - off) * i8_of(hi, k);
                        }
                    }
                    let xs = 2u * ((t0 + tt) * nb + b);
                    acc[tt] += dw * XD[xs] * f32(s) + mw * XD[xs + 1u];
                }
            }
        }
    }
    finish_rows(acc, lid, row, t0, nt);
}

// Dense weights (F32/F16/BF16) x f32 activations (X holds f32 bits). Same parameters and
// grid as matmul_q; lanes stride over elements, so a row's 16 lanes read 16 consecutive
// elements per step.
// params: rows=a.x cols=a.y n=a.z y_stride=b.y
@compute @workgroup_size(64)
fn matmul_dense(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = l.x;
    let row = flat_group(wid, nwg) * (WG / LANES) + lid / LANES;
    let lane = lid % LANES;
    let cols = P.a.y;
    let t0 = wid.y * TT;
    let nt = min(TT, P.a.z - t0);
    var acc: array<f32, 4>;
    for (var tt = 0u; tt < TT; tt++) {
        acc[tt] = 0.0;
    }
    if (row < P.a.x) {
        for (var k = lane; k < cols; k += LANES) {
            let w = dense_at(row, cols, k);
            for (var tt = 0u; tt < nt; tt++) {
                acc[tt] += w * bitcast<f32>(X[(t0 + tt) * cols + k]);
            }
        }
    }
    finish_rows(acc, lid, row, t0, nt);
}

// df12 (backend/gpu/df12.rs has the layout): the tensor's exponent per code, pre-shifted
// into BF16 position, loaded once per workgroup.
var<workgroup> df12_exp: array<u32, 16>;

// Exponent of escaped value i: binary search of its block's entries (offset in the low 24
// bits, exponent in the high 8). Corrupt data cannot loop forever or read out of bounds
// (WGSL clamps); it decodes to a wrong value, and the host validates the file first.
fn df12_escape(i: u32) -> u32 {
    let b = i / P.a.w;
    let key = i - b * P.a.w;
    var lo = W[P.c.y + b];
    var hi = W[P.c.y + b + 1u];
    while (lo < hi) {
        let mid = lo + (hi - lo) / 2u;
        let e = W[P.c.z + mid];
        let off = e & 0xffffffu;
        if (off == key) {
            return e >> 24u;
        }
        if (off < key) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return 0u;
}

// Value i of a df12 matrix as f32: exactly the BF16 value the CPU decoder gives.
fn df12_at(i: u32) -> f32 {
    let sm = byte_of(W[4u + i / 4u], i % 4u);
    let code = (W[P.c.x + i / 8u] >> (4u * (i % 8u))) & 15u;
    var e = df12_exp[code];
    if (code == 15u) {
        e = df12_escape(i) << 7u;
    }
    return bitcast<f32>((((sm & 0x80u) << 8u) | e | (sm & 0x7fu)) << 16u);
}

// df12 weights x f32 activations: matmul_dense's BF16 loop and reduction with each weight
// decoded from df12 (same products in the same order, so the same bits as the BF16 kernel
// on the decoded matrix). a.w = values per exception block; c.x/c.y/c.z = word offsets of
// the codes, the block starts and the exception entries. Same grid as matmul_dense.
// params: rows=a.x cols=a.y n=a.z block=a.w y_stride=b.y codes_off=c.x starts_off=c.y exc_off=c.z
@compute @workgroup_size(64)
fn matmul_df12(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = l.x;
    if (lid < 16u) {
        df12_exp[lid] = byte_of(W[lid / 4u], lid % 4u) << 7u;
    }
    workgroupBarrier();
    let row = flat_group(wid, nwg) * (WG / LANES) + lid / LANES;
    let lane = lid % LANES;
    let cols = P.a.y;
    let t0 = wid.y * TT;
    let nt = min(TT, P.a.z - t0);
    var acc: array<f32, 4>;
    for (var tt = 0u; tt < TT; tt++) {
        acc[tt] = 0.0;
    }
    if (row < P.a.x) {
        for (var k = lane; k < cols; k += LANES) {
            let w = df12_at(row * cols + k);
            for (var tt = 0u; tt < nt; tt++) {
                acc[tt] += w * bitcast<f32>(X[(t0 + tt) * cols + k]);
            }
        }
    }
    finish_rows(acc, lid, row, t0, nt);
}
