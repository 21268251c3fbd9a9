//! A model's weights on the GPU ([`GpuModel`]), uploaded once and shared by sessions, and
//! the one place that says what the GPU backend cannot run ([`GpuModel::supports`]).
//!
//! Weight forms: ggml matrices (F32/F16/BF16/Q4_0/Q4_1/Q8_0) in the layouts of
//! [`matrix`]; the other ggml block types (and Q8_0 matrices too large for one binding) in
//! [`kquant`]'s, split by rows; suanpan's LUT matrices permuted for `lut.wgsl` ([`GpuLut`],
//! straight from the file's bit planes); DFloat11 matrices kept compressed in device memory
//! ([`GpuDf11`]) and decoded to BF16 into one scratch buffer of the session just before
//! each projection, inside the same submission, where the BF16 matmul reads them (so
//! device memory is the compressed model plus one matrix, the largest DF11 one); df12
//! matrices kept compressed and multiplied by `matmul_df12`, which decodes each weight
//! as it reads it ([`GpuDf12`]: no scratch, bitwise the BF16 GEMV).
//!
//! The token embedding is read on the GPU (`get_rows`) when `matmul.wgsl` runs its type
//! and it fits one binding. A DFloat11, df12, LUT or other ggml embedding (K-quants, Gemma
//! 3's 178 MB Q8_0 table) is looked up on the host instead ([`Linear::row_into`],
//! as the CPU backend does) and the rows are written as the forward's f32 input: a forward
//! needs only `n` rows (2.3 KB of f32 per token for SmolLM2), which the CPU decodes in
//! microseconds from the mapped file, while on the GPU a DFloat11 lookup would need a
//! row-level index or a decode of the whole table (28 M values for SmolLM2) every forward,
//! and a LUT lookup a gather kernel of its own. A tied LM head of such a type is uploaded
//! and run on the GPU like any projection (the embedding itself is not uploaded twice).

use std::sync::Arc;

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::df11::{GpuDf11, UNIT_BYTES};
use super::df12::GpuDf12;
use super::kquant::{self, GpuKMatrix};
use super::lut::GpuLut;
use super::matrix::{self, GpuMatrix};
use super::ops;
use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile};
use crate::kv::KvParams;
use crate::lut::LutMatrix;
use crate::model::config::ModelConfig;
use crate::model::weights::{Linear, Weights};

/// Weights of one projection on the GPU.
#[derive(Debug)]
pub enum GpuWeights {
    /// A ggml-typed matrix (F32/F16/BF16/Q4_0/Q4_1/Q8_0).
    Ggml(GpuMatrix),
    /// Another ggml block type (K-quants, Q5, IQ4, ternary), or a Q8_0 matrix larger than
    /// one binding, for `kquant.wgsl`.
    K(GpuKMatrix),
    /// A T-MAC LUT matrix.
    Lut(GpuLut),
    /// A DFloat11 matrix, decoded to BF16 into the session's scratch before each use.
    Df11(GpuDf11),
    /// A df12 matrix, multiplied in its compressed form.
    Df12(GpuDf12),
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
            GpuWeights::K(m) => m.bytes(),
            GpuWeights::Lut(m) => m.bytes(),
            GpuWeights::Df11(m) => m.bytes(),
            GpuWeights::Df12(m) => m.bytes(),
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
pub(super) struct GpuLayer {
    pub(super) attn_norm: GpuBuffer,
    pub(super) wq: GpuLinear,
    pub(super) wk: GpuLinear,
    pub(super) wv: GpuLinear,
    pub(super) wo: GpuLinear,
    pub(super) q_norm: Option<GpuBuffer>,
    pub(super) k_norm: Option<GpuBuffer>,
    pub(super) post_attn_norm: Option<GpuBuffer>,
    pub(super) ffn_norm: GpuBuffer,
    pub(super) post_ffn_norm: Option<GpuBuffer>,
    pub(super) w_gate: GpuLinear,
    pub(super) w_up: GpuLinear,
    pub(super) w_down: GpuLinear,
}

/// Where the token embedding is read (see the module docs).
#[derive(Debug)]
pub(super) enum GpuEmbedding {
    /// On the GPU, by `get_rows`.
    Device(GpuMatrix),
    /// On the host from the model file ([`Linear::row_into`]), rows uploaded per forward.
    Host(Linear),
}

impl GpuLayer {
    pub(super) fn linears(&self) -> [&GpuLinear; 7] {
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

/// Whether `l`'s ggml bytes (which `matrix.rs` only rearranges) fit one storage binding.
fn fits_one_binding(d: &GpuDevice, l: &Linear, file: &GgufFile) -> bool {
    let caps = d.caps();
    l.view(file).data.len() as u64 + 4 <= caps.max_binding.min(caps.max_buffer)
}

/// A model's weights on one GPU device.
#[derive(Debug)]
pub struct GpuModel {
    pub(super) dev: Arc<GpuDevice>,
    pub(super) cfg: ModelConfig,
    pub(super) embd: GpuEmbedding,
    pub(super) layers: Vec<GpuLayer>,
    pub(super) output_norm: GpuBuffer,
    pub(super) output: GpuLinear,
    pub(super) rope_freqs: Option<Vec<f32>>,
    bytes: u64,
    /// BF16 values of the largest DFloat11 projection (the decode scratch), 0 if none.
    pub(super) df11_scratch: usize,
    /// DFloat11 projections per forward (each adds two dispatches).
    pub(super) n_df11: usize,
    /// Dispatches per forward beyond one per projection: matrices split over several
    /// bindings run one GEMV per part.
    pub(super) n_split_extra: usize,
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
                    GgmlType::Df12 => GpuWeights::Df12(GpuDf12::upload(
                        d,
                        &l.name,
                        &l.df12(file)?,
                        l.rows,
                        l.cols,
                    )?),
                    ty if matrix::supported(ty)
                        && (fits_one_binding(d, l, file) || !kquant::supported(ty)) =>
                    {
                        if ops::takes_q8(ty) && !l.cols.is_multiple_of(32) {
                            return Err(Error::bad_model(format!("{}: partial blocks", l.name)));
                        }
                        let v = l.view(file);
                        GpuWeights::Ggml(GpuMatrix::upload(d, &l.name, ty, l.rows, l.cols, v.data)?)
                    }
                    ty if kquant::supported(ty) => {
                        let v = l.view(file);
                        GpuWeights::K(GpuKMatrix::upload(d, &l.name, ty, l.rows, l.cols, v.data)?)
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
                post_attn_norm: l
                    .post_attn_norm
                    .as_ref()
                    .map(|v| floats(d, "post_attn_norm", v))
                    .transpose()?,
                post_ffn_norm: l
                    .post_ffn_norm
                    .as_ref()
                    .map(|v| floats(d, "post_ffn_norm", v))
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
            ty if matrix::supported(ty) && fits_one_binding(d, e, file) => GpuEmbedding::Device(
                GpuMatrix::upload(d, &e.name, ty, e.rows, e.cols, e.view(file).data)?,
            ),
            // The other block types, and tables beyond one binding (Gemma 3's 262144×640
            // Q8_0), are read on the host like a DFloat11 table.
            ty if kquant::supported(ty) => GpuEmbedding::Host(e.clone()),
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
        let n_split_extra = all
            .iter()
            .map(|l| match &l.w {
                GpuWeights::K(m) => m.parts() - 1,
                _ => 0,
            })
            .sum();
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
            n_split_extra,
        })
    }

    /// Whether sessions with KV cache `kv` can run on this model (the one answer to "what
    /// can the GPU backend not do" for a session; what it cannot upload, [`Self::upload`]
    /// refuses with the tensor's name).
    pub fn supports(&self, kv: &KvParams) -> Result<()> {
        let c = &self.cfg;
        let refuse = |what: String| {
            Err(Error::Backend(format!(
                "the GPU backend does not support {what}; use --backend cpu"
            )))
        };
        if c.head_dim > 512 || !c.head_dim.is_multiple_of(2) {
            return refuse(format!("attention heads of {} values", c.head_dim));
        }
        let geom = crate::kv::KvGeom {
            n_layer: c.n_layer,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
        };
        if let Some(pg) = kv.page_geom(&geom)? {
            if pg.kbits != pg.vbits || !pg.vgroup.is_power_of_two() {
                return refuse(format!(
                    "a quantized KV cache with {}-bit keys, {}-bit values and value groups of {}",
                    pg.kbits.bits(),
                    pg.vbits.bits(),
                    pg.vgroup
                ));
            }
        }
        Ok(())
    }

    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }

    /// Device bytes of the matrices.
    pub fn weight_bytes(&self) -> u64 {
        self.bytes
    }
}
