//! The decoder forward pass on the GPU, op for op the one of `model/graph.rs`:
//! embed → N × (RMSNorm → Q/K/V (+bias) → [Q/K norm] → RoPE → KV store → attention →
//! output projection → residual → RMSNorm → gate/up → SwiGLU → down → residual) → norm →
//! LM head. One forward is one submission; only the logits come back to the host.
//!
//! [`GpuModel`] holds the uploaded weights (shared by sessions); [`GpuState`] is one
//! session's KV cache, scratch buffers and recorded-dispatch cache. The KV cache is f16
//! (`attention.wgsl`) or quantized pages behind an f16 window ([`GpuQuantKv`],
//! `kv_attention.wgsl`), as the session's [`KvParams`] say.
//!
//! Weight forms: ggml matrices (F32/F16/BF16/Q4_0/Q4_1/Q8_0) in the layouts of
//! [`matrix`]; suanpan's LUT matrices permuted for `lut.wgsl` ([`GpuLut`], straight from
//! the file's bit planes); DFloat11 matrices kept compressed in device memory
//! ([`GpuDf11`]) and decoded to BF16 into one scratch buffer of the session just before
//! each projection, inside the same submission, where the BF16 matmul reads them (so
//! device memory is the compressed model plus one matrix, the largest DF11 one).
//!
//! The token embedding is read on the GPU (`get_rows`) when its type is a ggml one. A
//! DFloat11 or LUT embedding is looked up on the host instead ([`Linear::row_into`], as
//! the CPU backend does) and the rows are written as the forward's f32 input: a forward
//! needs only `n` rows (2.3 KB of f32 per token for SmolLM2), which the CPU decodes in
//! microseconds from the mapped file, while on the GPU a DFloat11 lookup would need a
//! row-level index or a decode of the whole table (28 M values for SmolLM2) every forward,
//! and a LUT lookup a gather kernel of its own. A tied LM head of such a type is uploaded
//! and run on the GPU like any projection (the embedding itself is not uploaded twice).

use std::sync::Arc;

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::df11::{GpuDf11, UNIT_BYTES};
use super::kv_quant::GpuQuantKv;
use super::lut::{lut_gemv, lut_tables, GpuLut, LutScratch};
use super::matrix::{self, GpuMatrix};
use super::ops::{self, AttnCall};
use super::record::{Frame, Recorder};
use crate::backend::cpu::ops::rope_cos_sin;
use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile};
use crate::kv::{KvGeom, KvMode, KvParams};
use crate::lut::LutMatrix;
use crate::model::config::ModelConfig;
use crate::model::graph::Logits;
use crate::model::weights::{Linear, RowScratch, Weights};

/// Weights of one projection on the GPU.
#[derive(Debug)]
pub enum GpuWeights {
    /// A ggml-typed matrix (F32/F16/BF16/Q4_0/Q4_1/Q8_0).
    Ggml(GpuMatrix),
    /// A T-MAC LUT matrix.
    Lut(GpuLut),
    /// A DFloat11 matrix, decoded to BF16 into the session's scratch before each use.
    Df11(GpuDf11),
}

/// A projection: weights and an optional bias.
#[derive(Debug)]
pub struct GpuLinear {
    pub w: GpuWeights,
    pub bias: Option<GpuBuffer>,
    pub rows: usize,
    pub cols: usize,
}

impl GpuLinear {
    fn bytes(&self) -> u64 {
        match &self.w {
            GpuWeights::Ggml(m) => m.bytes(),
            GpuWeights::Lut(m) => m.bytes(),
            GpuWeights::Df11(m) => m.bytes(),
        }
    }

    /// BF16 values of scratch this projection needs (DFloat11), else 0.
    fn df11_values(&self) -> usize {
        match &self.w {
            GpuWeights::Df11(_) => self.rows * self.cols,
            _ => 0,
        }
    }
}

#[derive(Debug)]
struct GpuLayer {
    attn_norm: GpuBuffer,
    wq: GpuLinear,
    wk: GpuLinear,
    wv: GpuLinear,
    wo: GpuLinear,
    q_norm: Option<GpuBuffer>,
    k_norm: Option<GpuBuffer>,
    ffn_norm: GpuBuffer,
    w_gate: GpuLinear,
    w_up: GpuLinear,
    w_down: GpuLinear,
}

/// Where the token embedding is read (see the module docs).
#[derive(Debug)]
enum GpuEmbedding {
    /// On the GPU, by `get_rows`.
    Device(GpuMatrix),
    /// On the host from the model file ([`Linear::row_into`]), rows uploaded per forward.
    Host(Linear),
}

impl GpuLayer {
    fn linears(&self) -> [&GpuLinear; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }
}

/// Upload DFloat11 matrix `l` compressed; errors name the tensor.
fn upload_df11(d: &GpuDevice, l: &Linear, file: &GgufFile) -> Result<GpuDf11> {
    let (t, _) = l.df11(file)?;
    if t.n != l.rows * l.cols {
        return Err(Error::bad_model(format!(
            "{}: DFloat11 tensor of {} values for a {}×{} matrix",
            l.name, t.n, l.rows, l.cols
        )));
    }
    d.check_binding(&format!("{} decoded to BF16", l.name), 2 * t.n as u64)?;
    GpuDf11::upload(d, &t, UNIT_BYTES).map_err(|e| match e {
        Error::Backend(m) => Error::Backend(format!("{}: {m}", l.name)),
        Error::BadModel(m) => Error::BadModel(format!("{}: {m}", l.name)),
        e => e,
    })
}

/// A model's weights on one GPU device.
#[derive(Debug)]
pub struct GpuModel {
    dev: Arc<GpuDevice>,
    cfg: ModelConfig,
    embd: GpuEmbedding,
    layers: Vec<GpuLayer>,
    output_norm: GpuBuffer,
    output: GpuLinear,
    rope_freqs: Option<Vec<f32>>,
    bytes: u64,
    /// BF16 values of the largest DFloat11 projection (the decode scratch), 0 if none.
    df11_scratch: usize,
    /// DFloat11 projections per forward (each adds two dispatches).
    n_df11: usize,
}

/// Chooses LUT weights for a projection: `Some(matrix)` uploads it as LUT instead of its
/// tensor in the file (a matrix quantized in memory, without a converted file); `None`
/// uploads the file's tensor, whatever its type (LUT and DFloat11 included).
pub type LutChooser<'a> = dyn FnMut(&Linear) -> Result<Option<LutMatrix>> + 'a;

fn floats(dev: &GpuDevice, what: &str, v: &[f32]) -> Result<GpuBuffer> {
    dev.upload(what, bytemuck::cast_slice(v))
}

impl GpuModel {
    /// Upload every tensor of `w` (read from `file`) to `dev`.
    pub fn upload(
        dev: Arc<GpuDevice>,
        cfg: &ModelConfig,
        w: &Weights,
        file: &GgufFile,
    ) -> Result<GpuModel> {
        Self::upload_with(dev, cfg, w, file, &mut |_| Ok(None))
    }

    /// [`Self::upload`], with projections for which `lut` returns a matrix uploaded as LUT.
    pub fn upload_with(
        dev: Arc<GpuDevice>,
        cfg: &ModelConfig,
        w: &Weights,
        file: &GgufFile,
        lut: &mut LutChooser<'_>,
    ) -> Result<GpuModel> {
        // The WGSL graph has SwiGLU, no post-norms, no embedding scale and no sliding window.
        if cfg.act != crate::model::config::Activation::Silu
            || cfg.post_norms
            || cfg.embd_scale != 1.0
            || cfg.sliding_window > 0
        {
            return Err(Error::Backend(format!(
                "architecture {} is not supported by the GPU backend yet (GELU FFN, post-norms, embedding scale or sliding-window attention)",
                cfg.arch_name
            )));
        }
        let d = &*dev;
        let mut linear = |l: &Linear| -> Result<GpuLinear> {
            let weights = match lut(l)? {
                Some(m) => {
                    if m.rows() != l.rows || m.cols() != l.cols {
                        return Err(Error::invalid(format!(
                            "LUT matrix for {} is {}×{}, expected {}×{}",
                            l.name,
                            m.rows(),
                            m.cols(),
                            l.rows,
                            l.cols
                        )));
                    }
                    GpuWeights::Lut(GpuLut::upload(d, &l.name, &m)?)
                }
                None => match l.ty {
                    GgmlType::Lut { .. } => {
                        GpuWeights::Lut(GpuLut::upload(d, &l.name, &l.lut(file)?)?)
                    }
                    GgmlType::Df11 => GpuWeights::Df11(upload_df11(d, l, file)?),
                    // No df12 shader yet: decoded to BF16 on the host at upload.
                    GgmlType::Df12 => {
                        let bits = l.df12(file)?.decode()?;
                        GpuWeights::Ggml(GpuMatrix::upload(
                            d,
                            &l.name,
                            GgmlType::BF16,
                            l.rows,
                            l.cols,
                            bytemuck::cast_slice(&bits),
                        )?)
                    }
                    ty if matrix::supported(ty) => {
                        if ops::takes_q8(ty) && !l.cols.is_multiple_of(32) {
                            return Err(Error::bad_model(format!("{}: partial blocks", l.name)));
                        }
                        let v = l.view(file);
                        GpuWeights::Ggml(GpuMatrix::upload(d, &l.name, ty, l.rows, l.cols, v.data)?)
                    }
                    ty => {
                        return Err(Error::Backend(format!(
                            "tensor {} has type {ty}, which the GPU backend does not support",
                            l.name
                        )))
                    }
                },
            };
            Ok(GpuLinear {
                w: weights,
                bias: match &l.bias {
                    Some(b) => Some(floats(d, "bias", b)?),
                    None => None,
                },
                rows: l.rows,
                cols: l.cols,
            })
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            layers.push(GpuLayer {
                attn_norm: floats(d, "attn_norm", &l.attn_norm)?,
                wq: linear(&l.wq)?,
                wk: linear(&l.wk)?,
                wv: linear(&l.wv)?,
                wo: linear(&l.wo)?,
                q_norm: l
                    .q_norm
                    .as_ref()
                    .map(|v| floats(d, "q_norm", v))
                    .transpose()?,
                k_norm: l
                    .k_norm
                    .as_ref()
                    .map(|v| floats(d, "k_norm", v))
                    .transpose()?,
                ffn_norm: floats(d, "ffn_norm", &l.ffn_norm)?,
                w_gate: linear(&l.w_gate)?,
                w_up: linear(&l.w_up)?,
                w_down: linear(&l.w_down)?,
            });
        }
        let e = &w.token_embd;
        let embd = match e.ty {
            GgmlType::Lut { .. } | GgmlType::Df11 | GgmlType::Df12 => {
                // Check now that every row can be read (the forward relies on it).
                match e.ty {
                    GgmlType::Lut { .. } => drop(e.lut(file)?),
                    GgmlType::Df12 => drop(e.df12(file)?),
                    _ => {
                        let (t, _) = e.df11(file)?;
                        t.validate()?;
                    }
                }
                GpuEmbedding::Host(e.clone())
            }
            ty if matrix::supported(ty) => GpuEmbedding::Device(GpuMatrix::upload(
                d,
                &e.name,
                ty,
                e.rows,
                e.cols,
                e.view(file).data,
            )?),
            ty => {
                return Err(Error::Backend(format!(
                    "token embedding type {ty} is not supported by the GPU backend"
                )))
            }
        };
        let output = linear(&w.output)?;
        let output_norm = floats(d, "output_norm", &w.output_norm)?;
        let all: Vec<&GpuLinear> = layers
            .iter()
            .flat_map(GpuLayer::linears)
            .chain([&output])
            .collect();
        let mut bytes = all.iter().map(|l| l.bytes()).sum::<u64>();
        if let GpuEmbedding::Device(m) = &embd {
            bytes += m.bytes();
        }
        let df11_scratch = all.iter().map(|l| l.df11_values()).max().unwrap_or(0);
        let n_df11 = all.iter().filter(|l| l.df11_values() > 0).count();
        if df11_scratch > 0 {
            d.check_binding("the DFloat11 decode scratch", 2 * df11_scratch as u64)?;
        }
        dev.wait()?;
        Ok(GpuModel {
            dev: dev.clone(),
            cfg: cfg.clone(),
            embd,
            layers,
            output_norm,
            output,
            rope_freqs: w.rope_freqs.clone(),
            bytes,
            df11_scratch,
            n_df11,
        })
    }

    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }

    /// Device bytes of the matrices.
    pub fn weight_bytes(&self) -> u64 {
        self.bytes
    }
}

/// A session's KV cache on the GPU.
enum GpuKv {
    /// f16 keys and values of every position, `[layer][n_ctx][kv_dim]`.
    F16 { kc: GpuBuffer, vc: GpuBuffer },
    /// q8/q4/q2 pages behind an f16 window and sinks.
    Quant(Box<GpuQuantKv>),
}

/// One session's GPU state: KV cache, scratch, recorded dispatches, logits.
pub struct GpuState {
    n_ctx: usize,
    cap: usize,
    len: usize,
    kv: GpuKv,
    mode: KvMode,
    ids: GpuBuffer,
    cs: GpuBuffer,
    x: GpuBuffer,
    xn: GpuBuffer,
    q: GpuBuffer,
    k: GpuBuffer,
    v: GpuBuffer,
    attn: GpuBuffer,
    tmp: GpuBuffer,
    gate: GpuBuffer,
    up: GpuBuffer,
    xq: GpuBuffer,
    xd: GpuBuffer,
    lut: Option<LutScratch>,
    /// BF16 scratch for the DFloat11 matrix being applied (one, reused by every one).
    df11: Option<GpuBuffer>,
    /// Host-side embedding rows (models whose embedding is read on the host).
    embd_rows: Vec<f32>,
    embd_scratch: RowScratch,
    logits_gpu: GpuBuffer,
    logits: Vec<f32>,
    frame: Frame,
}

impl GpuState {
    /// Buffers for batches of up to `cap` tokens in a context of `n_ctx` with an f16 KV
    /// cache; `all_logits` keeps every token's logits; `profile` collects kernel timestamps.
    pub fn new(
        m: &GpuModel,
        cap: usize,
        n_ctx: usize,
        all_logits: bool,
        profile: bool,
    ) -> Result<GpuState> {
        Self::with_kv(m, cap, n_ctx, all_logits, profile, &KvParams::default())
    }

    /// [`Self::new`] with the KV cache `kv` describes: f16, or q8/q4/q2 (then `cap` must
    /// not exceed the window; [`KvParams::gpu_unsupported`] lists what is refused).
    pub fn with_kv(
        m: &GpuModel,
        cap: usize,
        n_ctx: usize,
        all_logits: bool,
        profile: bool,
        kv: &KvParams,
    ) -> Result<GpuState> {
        let d = &*m.dev;
        let c = &m.cfg;
        let f = |what: &str, n: usize| d.buffer(what, 4 * n as u64);
        let widest = c.n_embd.max(c.n_ff).max(c.q_dim());
        if let Some(what) = kv.gpu_unsupported() {
            return Err(Error::Backend(format!(
                "the GPU backend does not support {what}; use --backend cpu"
            )));
        }
        let kv_cache = if kv.mode == KvMode::F16 {
            let kv_vals = c.n_layer * n_ctx * c.kv_dim();
            GpuKv::F16 {
                kc: d.buffer("k cache", 2 * kv_vals as u64)?,
                vc: d.buffer("v cache", 2 * kv_vals as u64)?,
            }
        } else {
            let geom = KvGeom {
                n_layer: c.n_layer,
                n_kv_head: c.n_kv_head,
                head_dim: c.head_dim,
            };
            GpuKv::Quant(Box::new(GpuQuantKv::new(d, geom, kv, n_ctx, cap)?))
        };
        let has_lut = m
            .layers
            .iter()
            .flat_map(GpuLayer::linears)
            .chain([&m.output])
            .any(|x| matches!(x.w, GpuWeights::Lut(_)));
        let n_logits = if all_logits { cap } else { 1 } * c.n_vocab;
        Ok(GpuState {
            n_ctx,
            cap,
            len: 0,
            kv: kv_cache,
            mode: kv.mode,
            ids: f("token ids", cap)?,
            cs: f("rope cos/sin", cap * c.n_rot)?,
            x: f("x", cap * c.n_embd)?,
            xn: f("xn", cap * c.n_embd)?,
            q: f("q", cap * c.q_dim())?,
            k: f("k", cap * c.kv_dim())?,
            v: f("v", cap * c.kv_dim())?,
            attn: f("attn", cap * c.q_dim())?,
            tmp: f("tmp", cap * c.n_embd)?,
            gate: f("gate", cap * c.n_ff)?,
            up: f("up", cap * c.n_ff)?,
            xq: d.buffer("act codes", (cap * widest) as u64)?,
            xd: f("act scales", cap * widest / 16)?,
            lut: if has_lut {
                Some(LutScratch::new(d, widest, cap)?)
            } else {
                None
            },
            df11: if m.df11_scratch > 0 {
                Some(d.buffer("DFloat11 decode scratch", 2 * m.df11_scratch as u64)?)
            } else {
                None
            },
            embd_rows: Vec::new(),
            embd_scratch: RowScratch::default(),
            logits_gpu: f("logits", n_logits)?,
            logits: vec![0.0; n_logits],
            // At most 24 dispatches per layer and 16 outside, plus 2 per DFloat11 decode.
            frame: Frame::new(d, 24 * c.n_layer + 16 + 2 * m.n_df11, profile)?,
        })
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Mark positions `0..len` valid (reset, or roll back an f16 cache). A quantized cache
    /// only resets (`len == 0`); other lengths leave it as it is: see [`Self::truncate`].
    pub fn set_len(&mut self, len: usize) {
        match &mut self.kv {
            GpuKv::F16 { .. } => self.len = len.min(self.n_ctx),
            GpuKv::Quant(q) => {
                if len == 0 {
                    q.reset();
                    self.len = 0;
                }
            }
        }
    }

    /// Keep the first `n` positions (`n >= len` keeps everything). Quantized pages cannot
    /// be cut: a quantized cache only empties (`n == 0`), anything else is an error.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n >= self.len {
            return Ok(());
        }
        if n > 0 && matches!(self.kv, GpuKv::Quant(_)) {
            return Err(Error::invalid(format!(
                "truncating the context needs an f16 KV cache (this one is {})",
                self.mode
            )));
        }
        self.set_len(n);
        Ok(())
    }

    /// The KV cache mode.
    pub fn kv_mode(&self) -> KvMode {
        self.mode
    }

    /// The quantized KV cache, when the session has one.
    pub fn quant_kv(&self) -> Option<&GpuQuantKv> {
        match &self.kv {
            GpuKv::Quant(q) => Some(q),
            GpuKv::F16 { .. } => None,
        }
    }

    /// Marginal KV bytes per token of context (all layers).
    pub fn kv_bytes_per_token(&self, c: &ModelConfig) -> f64 {
        match &self.kv {
            GpuKv::F16 { .. } => (4 * c.n_layer * c.kv_dim()) as f64,
            GpuKv::Quant(q) => q.bytes_per_token(),
        }
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes of the KV cache.
    pub fn kv_bytes(&self) -> u64 {
        match &self.kv {
            GpuKv::F16 { kc, vc } => kc.bytes() + vc.bytes(),
            GpuKv::Quant(q) => q.bytes(),
        }
    }

    /// The logits of the last forward.
    pub fn last_logits(&self, n: usize) -> &[f32] {
        &self.logits[..n.min(self.logits.len())]
    }

    /// Kernel timings collected so far (when created with `profile`).
    pub fn timings(&self) -> Vec<(&'static str, u64, f64)> {
        self.frame.timings()
    }

    /// Whether kernel timestamps are collected (profile asked and the adapter has them).
    pub fn profiling(&self) -> bool {
        self.frame.profiling()
    }
}

/// Which prepared forms of the current projection input exist (reset when it changes).
#[derive(Default)]
struct Prepared {
    q8: bool,
    lut_group: Option<usize>,
}

/// `out = W · x` for `n` tokens (plus bias), preparing the input form W needs.
#[allow(clippy::too_many_arguments)]
fn project(
    r: &mut Recorder,
    s: &GpuBuffers<'_>,
    prep: &mut Prepared,
    w: &GpuLinear,
    x: &GpuBuffer,
    n: usize,
    out: &GpuBuffer,
    y_stride: usize,
) -> Result<()> {
    match &w.w {
        GpuWeights::Ggml(m) if ops::takes_q8(m.ty) => {
            if !prep.q8 {
                ops::quant_act(r, x, s.xq, s.xd, w.cols, n)?;
                prep.q8 = true;
            }
            ops::matmul(r, m, s.xq, Some(s.xd), out, n, y_stride)?;
        }
        GpuWeights::Ggml(m) => ops::matmul(r, m, x, None, out, n, y_stride)?,
        GpuWeights::Df11(m) => {
            let Some(scratch) = s.df11 else {
                return Err(Error::Internal("DFloat11 scratch missing".into()));
            };
            m.decode(r, scratch)?;
            ops::matmul_bf16(r, scratch, w.rows, w.cols, x, out, n, y_stride)?;
        }
        GpuWeights::Lut(m) => {
            let Some(ls) = s.lut else {
                return Err(Error::Internal("LUT scratch missing".into()));
            };
            if prep.lut_group != Some(m.group) {
                lut_tables(r, x, ls, m.cols, m.group, n)?;
                prep.lut_group = Some(m.group);
            }
            lut_gemv(r, m, ls, out, n, y_stride)?;
        }
    }
    if let Some(b) = &w.bias {
        ops::add_bias(r, out, b, n * w.rows, w.rows)?;
    }
    Ok(())
}

struct GpuBuffers<'a> {
    xq: &'a GpuBuffer,
    xd: &'a GpuBuffer,
    lut: Option<&'a LutScratch>,
    df11: Option<&'a GpuBuffer>,
}

/// Run `tokens` at positions `st.len()..` through the model on the GPU, store their keys
/// and values, and return the requested logits (`n_vocab` per token). `file` is the file
/// the model was uploaded from (a DFloat11 or LUT embedding is read from it on the host).
pub fn forward<'s>(
    m: &GpuModel,
    st: &'s mut GpuState,
    file: &GgufFile,
    tokens: &[u32],
    logits: Logits,
) -> Result<&'s [f32]> {
    let c = &m.cfg;
    let d = &*m.dev;
    let n = tokens.len();
    let pos0 = st.len;
    if n == 0 {
        return Err(Error::invalid("forward pass on zero tokens"));
    }
    if n > st.cap {
        return Err(Error::invalid(format!(
            "batch of {n} tokens exceeds the batch size {}",
            st.cap
        )));
    }
    if logits == Logits::All && st.logits.len() < n * c.n_vocab {
        return Err(Error::invalid(
            "this session was not created for all-token logits",
        ));
    }
    if pos0 + n > st.n_ctx {
        return Err(Error::ContextFull(format!(
            "{pos0} tokens in context + {n} new exceed the context size {}",
            st.n_ctx
        )));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
        return Err(Error::invalid(format!(
            "token id {t} is outside the vocabulary of {}",
            c.n_vocab
        )));
    }
    // RoPE angles on the host, exactly as the CPU graph computes them.
    let half = c.n_rot / 2;
    let mut cs = vec![(0f32, 0f32); n * half];
    for i in 0..n {
        let pos = (pos0 + i) as f32 * c.rope_freq_scale;
        rope_cos_sin(
            pos,
            c.n_rot,
            c.rope_base,
            m.rope_freqs.as_deref(),
            &mut cs[i * half..(i + 1) * half],
        );
    }
    let flat: Vec<f32> = cs.iter().flat_map(|&(a, b)| [a, b]).collect();
    d.write(&st.cs, 0, bytemuck::cast_slice(&flat))?;
    match &m.embd {
        GpuEmbedding::Device(_) => d.write(&st.ids, 0, bytemuck::cast_slice(tokens))?,
        GpuEmbedding::Host(e) => {
            let de = c.n_embd;
            st.embd_rows.resize(n * de, 0.0);
            for (&t, row) in tokens.iter().zip(st.embd_rows.chunks_exact_mut(de)) {
                e.row_into(file, t as usize, row, &mut st.embd_scratch)?;
            }
            d.write(&st.x, 0, bytemuck::cast_slice(&st.embd_rows))?;
        }
    }

    let (de, qd, kvd) = (c.n_embd, c.q_dim(), c.kv_dim());
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    if let GpuKv::Quant(q) = &mut st.kv {
        // Pages leaving the window during this batch are quantized now (kv_quant.rs).
        q.begin(d, n)?;
    }
    let GpuState {
        kv,
        ids,
        cs: csb,
        x,
        xn,
        q,
        k,
        v,
        attn,
        tmp,
        gate,
        up,
        xq,
        xd,
        lut,
        df11,
        logits_gpu,
        logits: host_logits,
        frame,
        n_ctx,
        ..
    } = st;
    let bufs = GpuBuffers {
        xq,
        xd,
        lut: lut.as_ref(),
        df11: df11.as_ref(),
    };
    let mut r = Recorder::new(d, frame);
    if let GpuEmbedding::Device(e) = &m.embd {
        ops::get_rows(&mut r, e, ids, x, n)?;
    }
    for (li, l) in m.layers.iter().enumerate() {
        ops::rms_norm(&mut r, x, &l.attn_norm, xn, de, n, de, c.norm_eps)?;
        let mut prep = Prepared::default();
        project(&mut r, &bufs, &mut prep, &l.wq, xn, n, q, qd)?;
        project(&mut r, &bufs, &mut prep, &l.wk, xn, n, k, kvd)?;
        project(&mut r, &bufs, &mut prep, &l.wv, xn, n, v, kvd)?;
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            ops::rms_norm_inplace(&mut r, q, qn, c.head_dim, n * c.n_head, c.norm_eps)?;
            ops::rms_norm_inplace(&mut r, k, kn, c.head_dim, n * c.n_kv_head, c.norm_eps)?;
        }
        ops::rope(
            &mut r,
            q,
            csb,
            n * c.n_head,
            c.head_dim,
            c.n_rot,
            c.rope_style,
            c.n_head,
        )?;
        ops::rope(
            &mut r,
            k,
            csb,
            n * c.n_kv_head,
            c.head_dim,
            c.n_rot,
            c.rope_style,
            c.n_kv_head,
        )?;
        match &*kv {
            GpuKv::F16 { kc, vc } => {
                let layer_base = li * *n_ctx * kvd;
                ops::kv_store(&mut r, k, v, kc, vc, n * kvd, layer_base + pos0 * kvd)?;
                ops::attention(
                    &mut r,
                    AttnCall {
                        n_head: c.n_head,
                        n_kv_head: c.n_kv_head,
                        head_dim: c.head_dim,
                        pos0,
                        n_tokens: n,
                        layer_base,
                        scale,
                    },
                    q,
                    kc,
                    vc,
                    attn,
                )?;
            }
            GpuKv::Quant(qkv) => {
                qkv.store(&mut r, li, k, v)?;
                qkv.attend(&mut r, li, c.n_head, q, attn, scale)?;
            }
        }
        let mut prep = Prepared::default();
        project(&mut r, &bufs, &mut prep, &l.wo, attn, n, tmp, de)?;
        ops::add(&mut r, x, tmp, n * de)?;
        ops::rms_norm(&mut r, x, &l.ffn_norm, xn, de, n, de, c.norm_eps)?;
        let mut prep = Prepared::default();
        project(&mut r, &bufs, &mut prep, &l.w_gate, xn, n, gate, c.n_ff)?;
        project(&mut r, &bufs, &mut prep, &l.w_up, xn, n, up, c.n_ff)?;
        ops::silu_mul(&mut r, gate, up, n * c.n_ff)?;
        let mut prep = Prepared::default();
        project(&mut r, &bufs, &mut prep, &l.w_down, gate, n, tmp, de)?;
        ops::add(&mut r, x, tmp, n * de)?;
    }
    let first = match logits {
        Logits::None => {
            r.submit()?;
            if let GpuKv::Quant(qkv) = kv {
                qkv.commit();
            }
            st.len = pos0 + n;
            return Ok(&st.logits[..0]);
        }
        Logits::Last => n - 1,
        Logits::All => 0,
    };
    let rows = n - first;
    ops::rms_norm_rows(&mut r, x, &m.output_norm, xn, de, first, rows, c.norm_eps)?;
    let mut prep = Prepared::default();
    project(
        &mut r, &bufs, &mut prep, &m.output, xn, rows, logits_gpu, c.n_vocab,
    )?;
    r.submit()?;
    if let GpuKv::Quant(qkv) = kv {
        qkv.commit();
    }
    let got = d.read_f32(logits_gpu, 0, rows * c.n_vocab)?;
    host_logits[..got.len()].copy_from_slice(&got);
    st.len = pos0 + n;
    Ok(&st.logits[..rows * c.n_vocab])
}
