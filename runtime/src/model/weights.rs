//! The tensors of a decoder model, checked against the config and kept where they lie in
//! the mapped file (matrices are never copied; only small norm vectors are decoded to f32).

use crate::backend::cpu::dfloat::Df12Decode;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::config::{Arch, ModelConfig};
use crate::backend::cpu::dfloat::transcode_df11;
use crate::backend::cpu::dfloat::{decode_elems, Df11Decoder};
use crate::backend::cpu::rows::WeightView;
use crate::dfloat::df12::Df12View;
use crate::dfloat::Df11View;
use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile, TensorInfo};
use crate::lut::LutMatrix;
use crate::quant::ggml::dequantize_row;

/// A matrix of `rows` output features by `cols` input features inside the model file, with
/// an optional f32 bias. Stored row-major in a ggml block format, as a LUT matrix (bit
/// planes in kernel order, [`GgmlType::Lut`]), DFloat11-compressed BF16 ([`GgmlType::Df11`])
/// or df12 ([`GgmlType::Df12`], in the file or transcoded from DF11 at load and then held in
/// memory); every form was validated at load.
#[derive(Clone, Debug)]
pub struct Linear {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    bytes: Range<usize>,
    pub bias: Option<Vec<f32>>,
    /// The decoder of a DFloat11 matrix (its tables are built once, at load).
    df11: Option<Arc<Df11Decoder>>,
    /// Bytes held in memory instead of the file's (a DF11 matrix transcoded to df12).
    owned: Option<Arc<Vec<u8>>>,
}

impl Linear {
    /// The tensor's bytes in the file.
    pub fn data<'a>(&'a self, file: &'a GgufFile) -> &'a [u8] {
        match &self.owned {
            Some(b) => b,
            None => &file.bytes()[self.bytes.clone()],
        }
    }

    /// The matrix as a df12 view (`ty` must be [`GgmlType::Df12`]; validated at load).
    pub fn df12<'a>(&'a self, file: &'a GgufFile) -> Result<Df12View<'a>> {
        if self.ty != GgmlType::Df12 {
            return Err(Error::Internal(format!(
                "{} is not a df12 matrix",
                self.name
            )));
        }
        Df12View::parse_layout(self.data(file))
    }

    /// The matrix as a LUT matrix borrowing the file (`ty` must be [`GgmlType::Lut`]).
    pub fn lut<'a>(&'a self, file: &'a GgufFile) -> Result<LutMatrix<'a>> {
        match self.ty {
            GgmlType::Lut { bits, group } => LutMatrix::from_bytes(
                bits as usize,
                group as usize,
                self.rows,
                self.cols,
                self.data(file),
            ),
            _ => Err(Error::Internal(format!(
                "{} is not a LUT matrix",
                self.name
            ))),
        }
    }

    /// The matrix as a DFloat11 view and its decoder (`ty` must be [`GgmlType::Df11`]).
    pub fn df11<'a>(&'a self, file: &'a GgufFile) -> Result<(Df11View<'a>, &'a Df11Decoder)> {
        match &self.df11 {
            Some(d) => Ok((Df11View::parse(self.data(file))?, d)),
            None => Err(Error::Internal(format!(
                "{} is not a DFloat11 matrix",
                self.name
            ))),
        }
    }

    /// Row `r` as f32 (embedding lookup) for any storage; `tmp` is reused scratch.
    pub fn row_into(
        &self,
        file: &GgufFile,
        r: usize,
        out: &mut [f32],
        tmp: &mut RowScratch,
    ) -> Result<()> {
        if r >= self.rows || out.len() != self.cols {
            return Err(Error::invalid(format!(
                "row {r} of {} ({}×{}) into {} values",
                self.name,
                self.rows,
                self.cols,
                out.len()
            )));
        }
        match self.ty {
            GgmlType::Lut { .. } => {
                let m = self.lut(file)?;
                m.dequantize_row(r, out);
            }
            GgmlType::Df11 => {
                let (t, dec) = self.df11(file)?;
                let n = self.cols;
                tmp.row.resize(n, 0);
                decode_elems(dec, t, r * n..(r + 1) * n, &mut tmp.chunks, &mut tmp.row)?;
                for (o, &v) in out.iter_mut().zip(&tmp.row) {
                    *o = f32::from_bits((v as u32) << 16);
                }
            }
            GgmlType::Df12 => {
                let n = self.cols;
                tmp.row.resize(n, 0);
                self.df12(file)?
                    .decode_range(r * n..(r + 1) * n, &mut tmp.row)?;
                for (o, &v) in out.iter_mut().zip(&tmp.row) {
                    *o = f32::from_bits((v as u32) << 16);
                }
            }
            ty => {
                let v = self.view(file);
                let rb = v.row_bytes();
                if !dequantize_row(ty, &v.data[r * rb..(r + 1) * rb], out) {
                    return Err(Error::bad_model(format!(
                        "{}: cannot read rows of type {ty}",
                        self.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Borrow a ggml-format matrix from the file it was loaded from.
    pub fn view<'a>(&self, file: &'a GgufFile) -> WeightView<'a> {
        WeightView {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: &file.bytes()[self.bytes.clone()],
        }
    }

    /// Bytes the matrix occupies.
    pub fn n_bytes(&self) -> usize {
        match &self.owned {
            Some(b) => b.len(),
            None => self.bytes.len(),
        }
    }

    /// A DFloat11 matrix becomes df12 held in memory (lossless); other types are left as
    /// they are. Returns the BF16 bytes transcoded (0 when nothing was).
    pub fn transcode_df11(&mut self, file: &GgufFile) -> Result<usize> {
        if self.ty != GgmlType::Df11 {
            return Ok(0);
        }
        let (t, dec) = self.df11(file)?;
        let blob = transcode_df11(dec, t)?.to_bytes();
        Df12View::parse(&blob)?;
        self.owned = Some(Arc::new(blob));
        self.ty = GgmlType::Df12;
        self.df11 = None;
        Ok(2 * self.rows * self.cols)
    }
}

/// Reused buffers for [`Linear::row_into`].
#[derive(Default)]
pub struct RowScratch {
    chunks: Vec<u16>,
    row: Vec<u16>,
}

/// One transformer block.
#[derive(Clone, Debug)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    /// Qwen3: per-head RMSNorm weights applied to Q and K before RoPE.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    /// Gemma: RMSNorm weights on the attention output and on the FFN output.
    pub post_attn_norm: Option<Vec<f32>>,
    pub post_ffn_norm: Option<Vec<f32>>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

/// All weights of a decoder.
#[derive(Clone, Debug)]
pub struct Weights {
    /// `n_vocab` rows of `n_embd`.
    pub token_embd: Linear,
    pub layers: Vec<Layer>,
    pub output_norm: Vec<f32>,
    /// The LM head; a clone of `token_embd` when the model ties them.
    pub output: Linear,
    pub tied_output: bool,
    /// Llama 3.1-style per-frequency RoPE divisors.
    pub rope_freqs: Option<Vec<f32>>,
}

fn find<'f>(f: &'f GgufFile, name: &str) -> Result<&'f TensorInfo> {
    f.tensor(name)
        .ok_or_else(|| Error::bad_model(format!("tensor {name} is missing")))
}

fn check_type(t: &TensorInfo) -> Result<()> {
    if !t.ty.is_supported() {
        return Err(Error::bad_model(format!(
            "tensor {} has type {}, which suanpan does not support yet (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K-Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, suanpan LUT1-4 and DF11)",
            t.name, t.ty
        )));
    }
    Ok(())
}

/// A 1-D tensor of `n` values decoded to f32.
fn vector(f: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = find(f, name)?;
    check_type(t)?;
    if matches!(t.ty, GgmlType::Lut { .. } | GgmlType::Df11 | GgmlType::Df12) {
        return Err(Error::bad_model(format!(
            "tensor {name} is {}; vectors must be F32, F16, BF16 or a ggml quant type",
            t.ty
        )));
    }
    if t.dims != [n as u64] {
        return Err(Error::bad_model(format!(
            "tensor {name} has shape {:?}, expected [{n}]",
            t.dims
        )));
    }
    let mut out = vec![0f32; n];
    dequantize_row(t.ty, f.tensor_data(t), &mut out);
    if out.iter().any(|v| !v.is_finite()) {
        return Err(Error::bad_model(format!(
            "tensor {name} holds NaN or infinite values"
        )));
    }
    Ok(out)
}

fn optional_vector(f: &GgufFile, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
    match f.tensor(name) {
        None => Ok(None),
        Some(_) => vector(f, name, n).map(Some),
    }
}

fn linear(f: &GgufFile, name: &str, rows: usize, cols: usize, with_bias: bool) -> Result<Linear> {
    let t = find(f, &format!("{name}.weight"))?;
    check_type(t)?;
    let want = [cols as u64, rows as u64];
    let dims_ok = match t.ty {
        // A DFloat11 tensor is a byte blob; its logical shape is in the metadata.
        GgmlType::Df11 | GgmlType::Df12 => df11_dims(f, &t.name)? == want,
        _ => t.dims == want,
    };
    if !dims_ok {
        return Err(Error::bad_model(format!(
            "tensor {} has shape {:?}, expected [{cols}, {rows}]",
            t.name, t.dims
        )));
    }
    if !cols.is_multiple_of(32)
        && !matches!(
            t.ty,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Df11 | GgmlType::Df12
        )
    {
        return Err(Error::bad_model(format!(
            "tensor {} rows of {cols} are not whole blocks",
            t.name
        )));
    }
    let start = (f.data_start + t.offset) as usize;
    let bias = if with_bias {
        optional_vector(f, &format!("{name}.bias"), rows)?
    } else {
        None
    };
    let mut l = Linear {
        name: t.name.clone(),
        ty: t.ty,
        rows,
        cols,
        bytes: start..start + t.size as usize,
        bias,
        df11: None,
        owned: None,
    };
    match t.ty {
        // Validates the length against shape, bits and group.
        GgmlType::Lut { .. } => drop(l.lut(f)?),
        GgmlType::Df11 => {
            let v = Df11View::parse(l.data(f))?;
            v.validate()?;
            if v.n as u64 != want[0] * want[1] {
                return Err(Error::bad_model(format!(
                    "tensor {}: DFloat11 blob holds {} values for a {rows}×{cols} matrix",
                    t.name, v.n
                )));
            }
            l.df11 = Some(Arc::new(Df11Decoder::new(v.lengths)?));
        }
        GgmlType::Df12 => {
            let v = Df12View::parse(l.data(f))?;
            if v.n as u64 != want[0] * want[1] {
                return Err(Error::bad_model(format!(
                    "tensor {}: df12 blob holds {} values for a {rows}×{cols} matrix",
                    t.name, v.n
                )));
            }
        }
        _ => {}
    }
    Ok(l)
}

/// Metadata key holding the logical dims of DFloat11 (or df12) tensor `name`.
pub fn df11_dims_key(name: &str) -> String {
    format!("suanpan.df11.dims.{name}")
}

/// The logical dims (`ne[0]` first) of DFloat11 (or df12) tensor `name`.
pub fn df11_dims(f: &GgufFile, name: &str) -> Result<Vec<u64>> {
    let key = df11_dims_key(name);
    let v = f.get(&key).and_then(|v| v.as_array()).ok_or_else(|| {
        Error::bad_model(format!("DFloat11 tensor {name}: metadata {key} missing"))
    })?;
    v.iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| Error::bad_model(format!("{key}: not an array of integers")))
        })
        .collect()
}

impl Weights {
    /// Find and check every tensor the config calls for.
    pub fn from_gguf(f: &GgufFile, c: &ModelConfig) -> Result<Self> {
        let token_embd = linear(f, "token_embd", c.n_vocab, c.n_embd, false)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        let qkv_bias = c.arch == Arch::Qwen2;
        for i in 0..c.n_layer {
            let p = format!("blk.{i}");
            let (q_norm, k_norm) = if c.qk_norm() {
                (
                    Some(vector(f, &format!("{p}.attn_q_norm.weight"), c.head_dim)?),
                    Some(vector(f, &format!("{p}.attn_k_norm.weight"), c.head_dim)?),
                )
            } else {
                (None, None)
            };
            layers.push(Layer {
                attn_norm: vector(f, &format!("{p}.attn_norm.weight"), c.n_embd)?,
                wq: linear(f, &format!("{p}.attn_q"), c.q_dim(), c.n_embd, qkv_bias)?,
                wk: linear(f, &format!("{p}.attn_k"), c.kv_dim(), c.n_embd, qkv_bias)?,
                wv: linear(f, &format!("{p}.attn_v"), c.kv_dim(), c.n_embd, qkv_bias)?,
                wo: linear(f, &format!("{p}.attn_output"), c.n_embd, c.q_dim(), false)?,
                q_norm,
                k_norm,
                ffn_norm: vector(f, &format!("{p}.ffn_norm.weight"), c.n_embd)?,
                post_attn_norm: c
                    .post_norms
                    .then(|| vector(f, &format!("{p}.post_attention_norm.weight"), c.n_embd))
                    .transpose()?,
                post_ffn_norm: c
                    .post_norms
                    .then(|| vector(f, &format!("{p}.post_ffw_norm.weight"), c.n_embd))
                    .transpose()?,
                w_gate: linear(f, &format!("{p}.ffn_gate"), c.n_ff, c.n_embd, false)?,
                w_up: linear(f, &format!("{p}.ffn_up"), c.n_ff, c.n_embd, false)?,
                w_down: linear(f, &format!("{p}.ffn_down"), c.n_embd, c.n_ff, false)?,
            });
        }
        let output_norm = vector(f, "output_norm.weight", c.n_embd)?;
        let (output, tied_output) = if f.tensor("output.weight").is_some() {
            (linear(f, "output", c.n_vocab, c.n_embd, false)?, false)
        } else {
            (token_embd.clone(), true)
        };
        let rope_freqs = optional_vector(f, "rope_freqs.weight", c.n_rot / 2)?;
        Ok(Weights {
            token_embd,
            layers,
            output_norm,
            output,
            tied_output,
            rope_freqs,
        })
    }

    /// Transcode every DFloat11 matrix to df12 in memory (see [`Linear::transcode_df11`]),
    /// one matrix per thread on `threads` threads, largest first; a tied head shares the
    /// embedding's. Returns the BF16 bytes transcoded.
    pub fn transcode_df11(&mut self, file: &GgufFile, threads: usize) -> Result<usize> {
        let mut mats: Vec<&mut Linear> = vec![&mut self.token_embd];
        for l in &mut self.layers {
            mats.extend([
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.w_gate,
                &mut l.w_up,
                &mut l.w_down,
            ]);
        }
        if !self.tied_output {
            mats.push(&mut self.output);
        }
        mats.retain(|m| m.ty == GgmlType::Df11);
        // Popped from the end: the largest last in the vector.
        mats.sort_by_key(|m| m.rows * m.cols);
        let queue = Mutex::new(mats);
        let total = AtomicUsize::new(0);
        let err: Mutex<Option<Error>> = Mutex::new(None);
        let work = || loop {
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(m) = next else { break };
            match m.transcode_df11(file) {
                Ok(b) => drop(total.fetch_add(b, Ordering::Relaxed)),
                Err(e) => {
                    err.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    break;
                }
            }
        };
        if threads <= 1 {
            // On the caller: also where no thread can be started (the browser build).
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(work);
                }
            });
        }
        if let Some(e) = err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        if self.tied_output {
            self.output = self.token_embd.clone();
        }
        Ok(total.into_inner())
    }

    /// Bytes of weights read to compute one token (all matrices, the LM head once).
    pub fn bytes_per_token(&self) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .iter()
                    .map(|m| m.n_bytes())
                    .sum::<usize>()
            })
            .sum();
        per_layer + self.output.n_bytes()
    }
}
