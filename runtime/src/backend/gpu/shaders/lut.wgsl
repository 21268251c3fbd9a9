// lut.wgsl: T-MAC table-lookup GEMV for 1-4-bit weights (DESIGN.md sections 3-4).
//
// lut_tables builds, per token and quantization group, the CPU's symmetric 16-entry
// tables T[m] = sum_j (2 bit_j(m) - 1) x_j for every 4 activations, quantized to int8 with
// one scale per group (ts = max|T| / 127, round half to even, mirrored T[15-m] = -T[m]),
// stored biased (+128) as 16 bytes = 4 words per table: byte for byte the CPU's
// `LutTables::entries`, plus the per-group ts/2 and sum of x. The arithmetic is the CPU's
// (same operation order, no multiply-adds), so the tables are the same bits.
//
// GPU weight layout (a permutation of the same bits as the CPU's `LutMatrix`, made at upload):
//   planes [group][plane][word w < group/32][row] u32: nibble j of the word = 4 bits of
//          plane p for columns 32w + 4j .. 32w + 4j + 3 of the group (bit i = column +i)
//   params at word P.b.x: [group][row] u32 = scale f16 | zero f16 << 16
// Consecutive invocations own consecutive rows, so at every step the workgroup reads 64
// consecutive words: fully coalesced u32 loads, each weight byte read exactly once.
//
// lut_gemv: a workgroup owns 64 rows (one per invocation) of one token. For each group it
// first copies that group's tables (at most 32 tables = 512 entries, 2 KiB as i32) into
// workgroup memory, where all 64 rows and all BITS planes look them up (table reuse across
// rows and planes); then every invocation runs the same fixed loop: BITS planes x group/32
// words x 8 nibbles, one shared-memory lookup and one integer add per nibble, no
// multiplications and no data-dependent branches. Per group the integer sums of the planes
// are combined as sum_p acc_p << p (exact) and the float epilogue is the CPU's:
//   y += s * (total * ts/2 + ((2^b - 1)/2 - z) * sum_x).

override BITS: u32 = 4u;

@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> TB: array<u32>;
@group(0) @binding(3) var<storage, read_write> HS: array<f32>;
@group(0) @binding(4) var<storage, read_write> SUMS: array<f32>;
@group(0) @binding(5) var<storage, read> PW: array<u32>;
@group(0) @binding(6) var<storage, read_write> Y: array<f32>;

var<workgroup> tab: array<i32, 512>;
var<workgroup> flag: array<u32, 1>;

fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// a.x = cols, a.y = group, a.z = tokens. One workgroup per (token, group); invocation s
// builds the table of k-step s.
// params: cols=a.x group=a.y n=a.z
@compute @workgroup_size(64)
fn lut_tables(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = l.x;
    let cols = P.a.x;
    let group = P.a.y;
    let groups = cols / group;
    let g = flat_group(wid, nwg);
    if (g >= groups * P.a.z) {
        return;
    }
    let steps = group / 4u;
    let x0 = g * group;
    var x = vec4<f32>(0.0);
    var mag = 0.0;
    var bad = 0.0;
    if (lid < steps) {
        x = vec4<f32>(X[x0 + 4u * lid], X[x0 + 4u * lid + 1u], X[x0 + 4u * lid + 2u], X[x0 + 4u * lid + 3u]);
        mag = ((abs(x.x) + abs(x.y)) + abs(x.z)) + abs(x.w);
        if (!(is_finite(x.x) && is_finite(x.y) && is_finite(x.z) && is_finite(x.w))) {
            bad = 1.0;
        }
    }
    let amax = wg_max(mag, lid);
    let any_bad = wg_max(bad, lid);
    if (lid == 0u) {
        var s = 0.0;
        for (var k = 0u; k < group; k++) {
            s = s + X[x0 + k];
        }
        SUMS[g] = s;
        var ts = 0.0;
        if (any_bad > 0.0) {
            ts = bitcast<f32>(0x7fc00000u);
        } else if (amax > 0.0) {
            ts = amax / 127.0;
        }
        HS[g] = 0.5 * ts;
    }
    if (lid < steps) {
        var inv = 0.0;
        if (any_bad == 0.0 && amax > 0.0) {
            inv = 127.0 / amax;
        }
        let lo = array<f32, 4>((-x.x) - x.y, x.x - x.y, (-x.x) + x.y, x.x + x.y);
        var q: array<u32, 16>;
        for (var m = 0u; m < 4u; m++) {
            let t0 = (lo[m] - x.z) - x.w;
            let t1 = (lo[m] + x.z) - x.w;
            // A non-finite activation poisons its group: all entries 0 (biased 128).
            let ok = any_bad == 0.0;
            let v0 = select(0i, clamp(i32(round(t0 * inv)), -127, 127), ok);
            let v1 = select(0i, clamp(i32(round(t1 * inv)), -127, 127), ok);
            q[m] = u32(v0 + 128);
            q[15u - m] = u32(128 - v0);
            q[m + 4u] = u32(v1 + 128);
            q[11u - m] = u32(128 - v1);
        }
        let at = (x0 / 4u + lid) * 4u;
        for (var w = 0u; w < 4u; w++) {
            TB[at + w] = q[4u * w] | (q[4u * w + 1u] << 8u) | (q[4u * w + 2u] << 16u) | (q[4u * w + 3u] << 24u);
        }
    }
}

// a.x = rows, a.y = cols, a.z = group, a.w = tokens; b.x = params word offset; b.y = output
// row stride. Workgroups: x(+z) over 64-row blocks, y over tokens.
// params: rows=a.x cols=a.y group=a.z n=a.w param_off=b.x y_stride=b.y
@compute @workgroup_size(64)
fn lut_gemv(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = l.x;
    let rows = P.a.x;
    let cols = P.a.y;
    let group = P.a.z;
    let groups = cols / group;
    let t = wid.y;
    let row = flat_group(wid, nwg) * WG + lid;
    let steps = group / 4u;
    let wpg = group / 32u;
    let half_range = f32((1u << BITS) - 1u) * 0.5;
    var y = 0.0;
    for (var gi = 0u; gi < groups; gi++) {
        // This group's tables (steps x 4 words) into workgroup memory as signed ints.
        let tbase = (t * cols + gi * group) / 4u * 4u;
        for (var w = lid; w < steps * 4u; w += WG) {
            let word = TB[tbase + w];
            for (var b = 0u; b < 4u; b++) {
                tab[4u * w + b] = i32((word >> (8u * b)) & 0xffu) - 128;
            }
        }
        workgroupBarrier();
        if (row < rows) {
            var total = 0i;
            for (var p = 0u; p < BITS; p++) {
                var acc = 0i;
                for (var w = 0u; w < wpg; w++) {
                    let word = PW[((gi * BITS + p) * wpg + w) * rows + row];
                    for (var j = 0u; j < 8u; j++) {
                        acc += tab[(8u * w + j) * 16u + ((word >> (4u * j)) & 15u)];
                    }
                }
                total += acc << p;
            }
            let sz = unpack2x16float(PW[P.b.x + gi * rows + row]);
            let hs = HS[t * groups + gi];
            let sum = SUMS[t * groups + gi];
            let c = half_range - sz.y;
            y += sz.x * (f32(total) * hs + c * sum);
        }
        workgroupBarrier();
    }
    if (row < rows) {
        Y[t * P.b.y + row] = y;
    }
}
