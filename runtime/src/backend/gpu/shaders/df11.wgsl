// df11.wgsl: DFloat11 -> BF16 decode on the GPU, byte-exact with the CPU decoder.
//
// Inputs (see runtime/src/dfloat for the format): the exponent bitstream (MSB-first bytes,
// four per word), the sign|mantissa bytes, the decoder's per-symbol tables (256-entry
// blocks of u32: a leaf (len << 8 | exponent), or LINK | block for codes longer than 8
// bits), and a start index: per unit k the first element and the absolute bit where its
// code starts, plus a final (n, end) sentinel. The upload refines the file's 4 KiB chunk
// index into units of a few dozen bytes (a CPU walk over the code lengths), so one tensor
// decodes with thousands of independent invocations.
//
// Shaped for real GPUs: each invocation decodes one unit sequentially (Huffman codes
// cannot be split) with two aligned word loads per code and table lookups that hit the
// same few hundred words (cache resident); outputs of neighbouring invocations are
// neighbouring. The BF16 output is packed two per word; an invocation stores whole words
// and uses an atomic OR only for the half words it shares with a neighbour, so the output
// must be zeroed first (`df11_zero`). Corrupt data cannot read or write out of bounds
// (every index is bounded); it only decodes to wrong values, and the host validates the
// structure before upload.

@group(0) @binding(1) var<storage, read> BS: array<u32>;
@group(0) @binding(2) var<storage, read> SM: array<u32>;
@group(0) @binding(3) var<storage, read> TAB: array<u32>;
@group(0) @binding(4) var<storage, read> IDX: array<u32>;
@group(0) @binding(5) var<storage, read_write> OUT: array<atomic<u32>>;

const LINK: u32 = 0x80000000u;

fn bs_byte(i: u32) -> u32 {
    return byte_of(BS[i / 4u], i % 4u);
}

// The 32 bits of the stream starting at bit `pos` (bits past the end read as 0).
fn peek32(pos: u32) -> u32 {
    let b0 = pos / 8u;
    let hi = (bs_byte(b0) << 24u) | (bs_byte(b0 + 1u) << 16u) | (bs_byte(b0 + 2u) << 8u) | bs_byte(b0 + 3u);
    let sh = pos % 8u;
    if (sh == 0u) {
        return hi;
    }
    return (hi << sh) | (bs_byte(b0 + 4u) >> (8u - sh));
}

// a.x = words to zero.
// params: words=a.x
@compute @workgroup_size(64)
fn df11_zero(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * WG + l.x;
    if (i < P.a.x) {
        atomicStore(&OUT[i], 0u);
    }
}

// a.x = units. Unit k decodes elements IDX[2k] .. IDX[2k+2] from bit IDX[2k+1].
// params: units=a.x
@compute @workgroup_size(64)
fn df11_decode(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = flat_group(wid, nwg) * WG + l.x;
    if (k >= P.a.x) {
        return;
    }
    let e0 = IDX[2u * k];
    let e1 = IDX[2u * k + 2u];
    var pos = IDX[2u * k + 1u];
    var pending = 0u;
    for (var i = e0; i < e1; i++) {
        let b = peek32(pos);
        var block = 0u;
        var e = 0u;
        for (var level = 0u; level < 4u; level++) {
            e = TAB[block * 256u + ((b << (8u * level)) >> 24u)];
            if ((e & LINK) == 0u) {
                break;
            }
            block = e & ~LINK;
        }
        pos += (e >> 8u) & 63u;
        let sm = byte_of(SM[i / 4u], i % 4u);
        let v = ((sm & 0x80u) << 8u) | ((e & 0xffu) << 7u) | (sm & 0x7fu);
        if ((i & 1u) == 0u) {
            pending = v;
            if (i + 1u == e1) {
                atomicOr(&OUT[i / 2u], pending);
            }
        } else if (i == e0) {
            atomicOr(&OUT[i / 2u], v << 16u);
        } else {
            atomicStore(&OUT[i / 2u], pending | (v << 16u));
        }
    }
}
