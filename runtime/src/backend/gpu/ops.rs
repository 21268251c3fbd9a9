//! The graph's ops as GPU dispatches: each function records one kernel (a struct of
//! [`super::kernels`], buffers and parameters by name) into a [`Recorder`] with its
//! workgroup grid. Shapes are checked here against
//! the buffer sizes so a wrong call is an error, not an out-of-bounds shader access.

use super::buffer::GpuBuffer;
use super::kernels::{
    Add, AddBias, Attention, GeluTanhMul, GetRows, KvStore, MatmulDense, MatmulQ, QuantQ8, RmsNorm,
    RmsNormInplace, Rope, Scale, SiluMul,
};
use super::matrix::GpuMatrix;
use super::record::Recorder;
use crate::backend::cpu::ops::RopeStyle;
use crate::error::{Error, Result};
use crate::format::GgmlType;

/// Invocations per workgroup in every kernel.
pub const WG: usize = 64;
/// Workgroups per dimension we use before spilling into z (WebGPU's minimum limit).
const MAX_X: usize = 65535;

/// A grid of `n` workgroups: x up to 65535, the rest in z (kernels use `flat_group`; y
/// is left for token tiles).
pub fn grid(n: usize) -> [u32; 3] {
    let n = n.max(1);
    if n <= MAX_X {
        [n as u32, 1, 1]
    } else {
        [MAX_X as u32, 1, n.div_ceil(MAX_X) as u32]
    }
}

/// Workgroups of the row-quad GEMV kernels (`matmul.wgsl`): x(+z) over quads of rows, y
/// over quads of tokens.
pub fn matmul_grid(rows: usize, n: usize) -> [u32; 3] {
    let g = grid(rows.div_ceil(4));
    [g[0], u(n.div_ceil(4)), g[2]]
}

fn need(what: &str, b: &GpuBuffer, floats: usize) -> Result<()> {
    if (b.bytes() as usize) < 4 * floats {
        return Err(Error::invalid(format!(
            "GPU {what}: buffer of {} bytes, {} needed",
            b.bytes(),
            4 * floats
        )));
    }
    Ok(())
}

fn u(v: usize) -> u32 {
    v as u32
}

/// `out[r] = rms_norm(x[r]) * w[k % w_len]` for `rows` rows of `n`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    r: &mut Recorder,
    x: &GpuBuffer,
    w: &GpuBuffer,
    out: &GpuBuffer,
    n: usize,
    rows: usize,
    w_len: usize,
    eps: f32,
) -> Result<()> {
    norm(r, x, w, out, n, 0, rows, w_len, eps)
}

/// `out[i] = rms_norm(x[first + i]) * w` for `rows` rows of `n` (the last token's row).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_rows(
    r: &mut Recorder,
    x: &GpuBuffer,
    w: &GpuBuffer,
    out: &GpuBuffer,
    n: usize,
    first: usize,
    rows: usize,
    eps: f32,
) -> Result<()> {
    norm(r, x, w, out, n, first, rows, n, eps)
}

#[allow(clippy::too_many_arguments)]
fn norm(
    r: &mut Recorder,
    x: &GpuBuffer,
    w: &GpuBuffer,
    out: &GpuBuffer,
    n: usize,
    first: usize,
    rows: usize,
    w_len: usize,
    eps: f32,
) -> Result<()> {
    need("rms_norm x", x, n * (first + rows))?;
    need("rms_norm out", out, n * rows)?;
    need("rms_norm w", w, w_len)?;
    if w_len == 0 || !n.is_multiple_of(w_len) {
        return Err(Error::invalid(
            "GPU rms_norm: weight length must divide the row",
        ));
    }
    r.run(
        &RmsNorm {
            x,
            w,
            out,
            n: u(n),
            rows: u(rows),
            w_len: u(w_len),
            first: u(first),
            eps,
        },
        grid(rows),
    )
}

/// [`rms_norm`] in place (rows of `w.len()`, e.g. per-head norms).
pub fn rms_norm_inplace(
    r: &mut Recorder,
    x: &GpuBuffer,
    w: &GpuBuffer,
    n: usize,
    rows: usize,
    eps: f32,
) -> Result<()> {
    need("rms_norm x", x, n * rows)?;
    need("rms_norm w", w, n)?;
    r.run(
        &RmsNormInplace {
            x,
            w,
            n: u(n),
            rows: u(rows),
            w_len: u(n),
            eps,
        },
        grid(rows),
    )
}

/// Rotate `rows` heads of `head_dim` in `x` (the first `n_rot` dims); `cs` holds
/// `(cos, sin)` pairs per token and frequency, `heads_per_token` heads per token.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    r: &mut Recorder,
    x: &GpuBuffer,
    cs: &GpuBuffer,
    rows: usize,
    head_dim: usize,
    n_rot: usize,
    style: RopeStyle,
    heads_per_token: usize,
) -> Result<()> {
    need("rope x", x, rows * head_dim)?;
    need(
        "rope cos/sin",
        cs,
        rows.div_ceil(heads_per_token.max(1)) * n_rot,
    )?;
    let style = match style {
        RopeStyle::Interleaved => 0,
        RopeStyle::Neox => 1,
    };
    r.run(
        &Rope {
            x,
            cos_sin: cs,
            rows: u(rows),
            head_dim: u(head_dim),
            n_rot: u(n_rot),
            neox: style,
            heads_per_token: u(heads_per_token),
        },
        grid((rows * n_rot / 2).div_ceil(WG)),
    )
}

/// `gate = silu(gate) * up` over `n` elements.
pub fn silu_mul(r: &mut Recorder, gate: &GpuBuffer, up: &GpuBuffer, n: usize) -> Result<()> {
    need("silu_mul gate", gate, n)?;
    need("silu_mul up", up, n)?;
    r.run(&SiluMul { gate, up, n: u(n) }, grid(n.div_ceil(WG)))
}

/// `gate = gelu_tanh(gate) * up` over `n` elements (Gemma's FFN).
pub fn gelu_tanh_mul(r: &mut Recorder, gate: &GpuBuffer, up: &GpuBuffer, n: usize) -> Result<()> {
    need("gelu_tanh_mul gate", gate, n)?;
    need("gelu_tanh_mul up", up, n)?;
    r.run(&GeluTanhMul { gate, up, n: u(n) }, grid(n.div_ceil(WG)))
}

/// `x *= s` over `n` elements (Gemma's embedding scale).
pub fn scale(r: &mut Recorder, x: &GpuBuffer, s: f32, n: usize) -> Result<()> {
    need("scale x", x, n)?;
    r.run(&Scale { x, n: u(n), s }, grid(n.div_ceil(WG)))
}

/// `x += y` over `n` elements.
pub fn add(r: &mut Recorder, x: &GpuBuffer, y: &GpuBuffer, n: usize) -> Result<()> {
    need("add x", x, n)?;
    need("add y", y, n)?;
    r.run(&Add { x, y, n: u(n) }, grid(n.div_ceil(WG)))
}

/// `x[i] += b[i % b_len]` over `n` elements.
pub fn add_bias(
    r: &mut Recorder,
    x: &GpuBuffer,
    b: &GpuBuffer,
    n: usize,
    b_len: usize,
) -> Result<()> {
    need("add_bias x", x, n)?;
    need("add_bias b", b, b_len)?;
    r.run(
        &AddBias {
            x,
            bias: b,
            n: u(n),
            bias_len: u(b_len),
        },
        grid(n.div_ceil(WG)),
    )
}

/// Store `n` key and value floats (f16-rounded) at value index `dst` of the caches.
pub fn kv_store(
    r: &mut Recorder,
    k: &GpuBuffer,
    v: &GpuBuffer,
    kc: &GpuBuffer,
    vc: &GpuBuffer,
    n: usize,
    dst: usize,
) -> Result<()> {
    if !n.is_multiple_of(2) || !dst.is_multiple_of(2) {
        return Err(Error::invalid("GPU kv_store: odd length or offset"));
    }
    need("kv_store k", k, n)?;
    need("kv_store v", v, n)?;
    need("kv_store cache", kc, (dst + n) / 2)?;
    need("kv_store cache", vc, (dst + n) / 2)?;
    r.run(
        &KvStore {
            k_cache: kc,
            v_cache: vc,
            k,
            v,
            n: u(n),
            dst: u(dst),
        },
        grid((n / 2).div_ceil(WG)),
    )
}

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnCall {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Positions already in the cache before this batch.
    pub pos0: usize,
    pub n_tokens: usize,
    /// Value index of this layer's position 0 in the caches.
    pub layer_base: usize,
    pub scale: f32,
    /// Keys each query sees at most (itself included); 0 = all (sliding-window layers).
    pub window: usize,
}

/// Causal GQA attention of `q` over the caches into `out`.
pub fn attention(
    r: &mut Recorder,
    a: AttnCall,
    q: &GpuBuffer,
    kc: &GpuBuffer,
    vc: &GpuBuffer,
    out: &GpuBuffer,
) -> Result<()> {
    if !a.head_dim.is_multiple_of(2)
        || a.head_dim > 512
        || a.n_kv_head == 0
        || !a.n_head.is_multiple_of(a.n_kv_head)
    {
        return Err(Error::invalid(format!(
            "GPU attention: head_dim {} (even, ≤ 512), {} heads over {} KV heads",
            a.head_dim, a.n_head, a.n_kv_head
        )));
    }
    let kv_dim = a.n_kv_head * a.head_dim;
    let qn = a.n_tokens * a.n_head * a.head_dim;
    need("attention q", q, qn)?;
    need("attention out", out, qn)?;
    let end = a.layer_base + (a.pos0 + a.n_tokens) * kv_dim;
    need("attention k cache", kc, end / 2)?;
    need("attention v cache", vc, end / 2)?;
    r.run(
        &Attention {
            q,
            k_cache: kc,
            v_cache: vc,
            out,
            n_head: u(a.n_head),
            n_kv_head: u(a.n_kv_head),
            head_dim: u(a.head_dim),
            pos0: u(a.pos0),
            n_tokens: u(a.n_tokens),
            layer_base: u(a.layer_base),
            kv_dim: u(kv_dim),
            window: u(a.window),
            scale: a.scale,
        },
        grid(a.n_tokens * a.n_head),
    )
}

/// Quantize `rows` activation rows of `cols` (a multiple of 32) into Q8 blocks: codes in
/// `xq`, (d, s) pairs in `xd`.
pub fn quant_act(
    r: &mut Recorder,
    x: &GpuBuffer,
    xq: &GpuBuffer,
    xd: &GpuBuffer,
    cols: usize,
    rows: usize,
) -> Result<()> {
    if !cols.is_multiple_of(32) {
        return Err(Error::invalid(
            "GPU quant_act: columns not a multiple of 32",
        ));
    }
    need("quant_act x", x, cols * rows)?;
    need("quant_act codes", xq, cols * rows / 4)?;
    need("quant_act scales", xd, cols * rows / 16)?;
    r.run(
        &QuantQ8 {
            x,
            codes: xq,
            scales: xd,
            cols: u(cols),
            rows: u(rows),
        },
        grid((cols / 32 * rows).div_ceil(WG)),
    )
}

/// Which activation input a matrix takes.
pub fn takes_q8(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// `y[t][r] = W[r] · x[t]` for `n` tokens. Quantized weights read Q8 activations from
/// (`xq`, `Some(xd)`) made by [`quant_act`]; dense weights read f32 activations from `xq`.
/// `y_stride` is the distance between tokens' output rows (≥ `w.rows`).
pub fn matmul(
    r: &mut Recorder,
    w: &GpuMatrix,
    xq: &GpuBuffer,
    xd: Option<&GpuBuffer>,
    y: &GpuBuffer,
    n: usize,
    y_stride: usize,
) -> Result<()> {
    let dense = Dense {
        buf: &w.buf,
        ty: w.ty,
        rows: w.rows,
        cols: w.cols,
        scale_off: w.scale_off,
    };
    matmul_on(r, dense, xq, xd, y, n, y_stride)
}

/// [`matmul`] of a `rows × cols` BF16 matrix held in the first `2·rows·cols` bytes of `w`
/// (a scratch buffer: DFloat11 matrices are decoded into one before use), f32 input `x`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16(
    r: &mut Recorder,
    w: &GpuBuffer,
    rows: usize,
    cols: usize,
    x: &GpuBuffer,
    y: &GpuBuffer,
    n: usize,
    y_stride: usize,
) -> Result<()> {
    if (w.bytes() as usize) < 2 * rows * cols {
        return Err(Error::invalid(format!(
            "GPU matmul: a {rows}×{cols} BF16 matrix does not fit {} bytes",
            w.bytes()
        )));
    }
    let dense = Dense {
        buf: w,
        ty: GgmlType::BF16,
        rows,
        cols,
        scale_off: 0,
    };
    matmul_on(r, dense, x, None, y, n, y_stride)
}

/// A weight matrix as `matmul.wgsl` sees it.
struct Dense<'a> {
    buf: &'a GpuBuffer,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    scale_off: u32,
}

fn matmul_on(
    r: &mut Recorder,
    w: Dense<'_>,
    xq: &GpuBuffer,
    xd: Option<&GpuBuffer>,
    y: &GpuBuffer,
    n: usize,
    y_stride: usize,
) -> Result<()> {
    if y_stride < w.rows || n == 0 {
        return Err(Error::invalid("GPU matmul: output stride or token count"));
    }
    need("matmul out", y, (n - 1) * y_stride + w.rows)?;
    let groups = matmul_grid(w.rows, n);
    if takes_q8(w.ty) {
        let Some(xd) = xd else {
            return Err(Error::invalid(
                "GPU matmul: quantized weights need Q8 activations",
            ));
        };
        need("matmul codes", xq, w.cols * n / 4)?;
        need("matmul scales", xd, w.cols * n / 16)?;
        return r.run(
            &MatmulQ {
                w: w.buf,
                codes: xq,
                scales: xd,
                y,
                rows: u(w.rows),
                cols: u(w.cols),
                n: u(n),
                scale_off: w.scale_off,
                y_stride: u(y_stride),
                wtype: w.ty.id(),
            },
            groups,
        );
    }
    need("matmul x", xq, w.cols * n)?;
    r.run(
        &MatmulDense {
            w: w.buf,
            x: xq,
            y,
            rows: u(w.rows),
            cols: u(w.cols),
            n: u(n),
            y_stride: u(y_stride),
            wtype: w.ty.id(),
        },
        groups,
    )
}

/// `out[t] = W[ids[t]]` dequantized (embedding lookup) for `n` tokens.
pub fn get_rows(
    r: &mut Recorder,
    w: &GpuMatrix,
    ids: &GpuBuffer,
    out: &GpuBuffer,
    n: usize,
) -> Result<()> {
    need("get_rows ids", ids, n)?;
    need("get_rows out", out, n * w.cols)?;
    r.run(
        &GetRows {
            w: &w.buf,
            ids,
            out,
            cols: u(w.cols),
            n: u(n),
            scale_off: w.scale_off,
            wtype: w.ty.id(),
        },
        grid((n * w.cols).div_ceil(WG)),
    )
}
