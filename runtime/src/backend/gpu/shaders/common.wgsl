// common.wgsl: prepended to every kernel family (WGSL has no include).
//
// Binding 0 of every kernel is its parameter slot: 12 u32 (a, b, c) and 4 f32 (f). Each
// entry point documents what the fields mean. All storage buffers are arrays of 32-bit
// words: data narrower than 32 bits (f16, bf16, i8, nibbles) is packed little-endian and
// unpacked in registers, so every load is a full, aligned u32 load.

struct Params {
    a: vec4<u32>,
    b: vec4<u32>,
    c: vec4<u32>,
    f: vec4<f32>,
}

@group(0) @binding(0) var<uniform> P: Params;

// Workgroup size of every kernel: 64 invocations, a multiple of every GPU's SIMD width
// (32 on NVIDIA/Apple, 64 on AMD, 8-16 on mobile and CPU rasterizers).
const WG: u32 = 64u;

// Byte i (0..3) of a word.
fn byte_of(w: u32, i: u32) -> u32 {
    return (w >> (8u * i)) & 0xffu;
}

// Byte i (0..3) of a word as a signed 8-bit value.
fn i8_of(w: u32, i: u32) -> i32 {
    return bitcast<i32>(w << (24u - 8u * i)) >> 24u;
}

// Half h (0..1) of a word as an f16 value widened to f32 (exact).
fn f16_of(w: u32, h: u32) -> f32 {
    return unpack2x16float(w >> (16u * h)).x;
}

// Half h (0..1) of a word as a bf16 value widened to f32 (exact).
fn bf16_of(w: u32, h: u32) -> f32 {
    return bitcast<f32>(((w >> (16u * h)) & 0xffffu) << 16u);
}

// f32 -> f16 bits, round to nearest even, in integer arithmetic: the same bits as the CPU's
// `half::f16::from_f32` on every driver (pack2x16float leaves the rounding to the driver).
fn f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let e = i32((b >> 23u) & 0xffu);
    let m = b & 0x7fffffu;
    if (e == 255) {
        return sign | 0x7c00u | select(0u, 0x200u | (m >> 13u), m != 0u);
    }
    let he = e - 112;
    if (he >= 31) {
        return sign | 0x7c00u;
    }
    if (he <= 0) {
        if (he < -10) {
            return sign;
        }
        let mm = m | 0x800000u;
        let shift = u32(14 - he);
        var q = mm >> shift;
        let rem = mm & ((1u << shift) - 1u);
        let halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u) == 1u)) {
            q = q + 1u;
        }
        return sign | q;
    }
    var r = (u32(he) << 10u) | (m >> 13u);
    let rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u) == 1u)) {
        r = r + 1u;
    }
    return sign | r;
}

// x rounded to the nearest f16 value (ties to even), as f32.
fn f16_round(x: f32) -> f32 {
    return unpack2x16float(f16_bits(x)).x;
}

// Workgroup reductions through workgroup memory (a tree of log2(64) = 6 steps). They work
// on every adapter; with subgroups a GPU would do most steps in registers.
var<workgroup> red_buf: array<f32, 64>;

fn wg_sum(v: f32, lid: u32) -> f32 {
    red_buf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_buf[lid] = red_buf[lid] + red_buf[lid + s];
        }
        workgroupBarrier();
    }
    let r = red_buf[0];
    workgroupBarrier();
    return r;
}

fn wg_max(v: f32, lid: u32) -> f32 {
    red_buf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_buf[lid] = max(red_buf[lid], red_buf[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red_buf[0];
    workgroupBarrier();
    return r;
}

// Workgroup index of a dispatch that may be split over x and z (x ≤ 65535 groups).
fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.z * nwg.x;
}
