// elementwise.wgsl: RMSNorm, RoPE, SwiGLU, residual and bias adds.
//
// Shaped for real GPUs: these ops are memory-bound, so each invocation handles one element
// (or one rotation pair) and consecutive invocations touch consecutive addresses: every
// warp/wavefront load is one coalesced transaction. RMSNorm gives a whole workgroup to a row
// and reduces the sum of squares in workgroup memory; invocations stride over the row by
// the workgroup size, so the loads of one step are again contiguous. No loop has a
// data-dependent trip count.

@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

fn gid1(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return flat_group(wid, nwg) * WG + lid;
}

// C[row] = A[row + a.w] / sqrt(mean(A[row + a.w]^2) + eps) * B[k % a.z]
// a.x = row length, a.y = rows, a.z = weight length (= row length, or head_dim for
// per-head norms), a.w = first input row; f.x = eps. One workgroup per row.
// params: n=a.x rows=a.y w_len=a.z first=a.w eps=f.x
@compute @workgroup_size(64)
fn rms_norm(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_group(wid, nwg);
    let n = P.a.x;
    if (row >= P.a.y) {
        return;
    }
    var ss = 0.0;
    for (var k = l.x; k < n; k += WG) {
        let v = A[(row + P.a.w) * n + k];
        ss += v * v;
    }
    let sum = wg_sum(ss, l.x);
    let scale = 1.0 / sqrt(sum / f32(n) + P.f.x);
    for (var k = l.x; k < n; k += WG) {
        C[row * n + k] = (A[(row + P.a.w) * n + k] * scale) * B[k % P.a.z];
    }
}

// The same in place on A (Qwen3's per-head q_norm / k_norm).
// params: n=a.x rows=a.y w_len=a.z eps=f.x
@compute @workgroup_size(64)
fn rms_norm_inplace(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_group(wid, nwg);
    let n = P.a.x;
    if (row >= P.a.y) {
        return;
    }
    var ss = 0.0;
    for (var k = l.x; k < n; k += WG) {
        let v = A[row * n + k];
        ss += v * v;
    }
    let sum = wg_sum(ss, l.x);
    let scale = 1.0 / sqrt(sum / f32(n) + P.f.x);
    for (var k = l.x; k < n; k += WG) {
        A[row * n + k] = (A[row * n + k] * scale) * B[k % P.a.z];
    }
}

// RoPE in place on A: rows of a.y (head_dim) values, the first a.z (n_rot) rotated;
// a.w = 0 interleaved pairs (2i, 2i+1), 1 NeoX halves (i, i + n_rot/2); a.x = rows;
// b.x = heads per token. B holds (cos, sin) per token and frequency, computed on the host
// exactly as the CPU backend does (GPU sin/cos are not accurate enough for large angles).
// params: rows=a.x head_dim=a.y n_rot=a.z neox=a.w heads_per_token=b.x
@compute @workgroup_size(64)
fn rope(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid1(wid, nwg, l.x);
    let half = P.a.z / 2u;
    if (i >= P.a.x * half) {
        return;
    }
    let row = i / half;
    let p = i % half;
    let tok = row / P.b.x;
    let c = B[(tok * half + p) * 2u];
    let s = B[(tok * half + p) * 2u + 1u];
    let base = row * P.a.y;
    var i0 = base + 2u * p;
    var i1 = i0 + 1u;
    if (P.a.w == 1u) {
        i0 = base + p;
        i1 = base + p + half;
    }
    let a = A[i0];
    let b = A[i1];
    A[i0] = a * c - b * s;
    A[i1] = a * s + b * c;
}

// A = silu(A) * B over a.x elements.
// params: n=a.x
@compute @workgroup_size(64)
fn silu_mul(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid1(wid, nwg, l.x);
    if (i >= P.a.x) {
        return;
    }
    let v = A[i];
    A[i] = v / (1.0 + exp(-v)) * B[i];
}

// A = gelu_tanh(A) * B over a.x elements (the CPU's gelu_tanh_mul expression).
// params: n=a.x
@compute @workgroup_size(64)
fn gelu_tanh_mul(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid1(wid, nwg, l.x);
    if (i >= P.a.x) {
        return;
    }
    let v = A[i];
    A[i] = 0.5 * v * (1.0 + tanh(0.7978846 * v * (1.0 + 0.044715 * v * v))) * B[i];
}

// A *= f.x over a.x elements.
// params: n=a.x s=f.x
@compute @workgroup_size(64)
fn scale(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid1(wid, nwg, l.x);
    if (i >= P.a.x) {
        return;
    }
    A[i] = A[i] * P.f.x;
}

// A += B over a.x elements.
// params: n=a.x
@compute @workgroup_size(64)
fn add(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid1(wid, nwg, l.x);
    if (i >= P.a.x) {
        return;
    }
    A[i] = A[i] + B[i];
}

// A[i] += B[i % a.y] over a.x elements (a bias broadcast over rows).
// params: n=a.x bias_len=a.y
@compute @workgroup_size(64)
fn add_bias(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid1(wid, nwg, l.x);
    if (i >= P.a.x) {
        return;
    }
    A[i] = A[i] + B[i % P.a.y];
}
