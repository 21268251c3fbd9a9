// quant_act.wgsl: activation rows to llama.cpp's 8-bit blocks (Q8_0 / Q8_1), the input of
// the quantized GEMV. Per block of 32 values: d = amax/127 (rounded to f16), codes
// round_half_even(x * 127/amax), and for Q8_1 s = d * sum(codes) (rounded to f16) — the
// same arithmetic as the CPU's `quantize_row_q8_*`, so the integer dot products of the two
// backends see the same codes.
//
// One invocation per block: it reads 32 consecutive floats (128 contiguous bytes) and
// writes 8 packed words; neighbouring invocations handle neighbouring blocks. The loop has
// a fixed trip count of 32.
//
// Output: codes [n][cols] i8 packed 4 per word; scales [n][cols/32] pairs (d, s) of f32.

@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> XQ: array<u32>;
@group(0) @binding(3) var<storage, read_write> XD: array<f32>;

// a.x = cols (a multiple of 32), a.y = rows (tokens).
// params: cols=a.x rows=a.y
@compute @workgroup_size(64)
fn quant_q8(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = flat_group(wid, nwg) * WG + l.x;
    let nb = P.a.x / 32u;
    if (blk >= nb * P.a.y) {
        return;
    }
    let x0 = blk * 32u;
    var amax = 0.0;
    for (var j = 0u; j < 32u; j++) {
        amax = max(amax, abs(X[x0 + j]));
    }
    let d = amax / 127.0;
    let id = select(0.0, 127.0 / amax, amax != 0.0);
    var sum = 0i;
    for (var w = 0u; w < 8u; w++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let r = i32(round(X[x0 + 4u * w + k] * id));
            sum += r;
            word |= (bitcast<u32>(r) & 0xffu) << (8u * k);
        }
        XQ[blk * 8u + w] = word;
    }
    XD[2u * blk] = f16_round(d);
    XD[2u * blk + 1u] = f16_round(d * f32(sum));
}
