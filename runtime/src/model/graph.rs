//! The decoder forward pass: embed → N × block → norm → LM head.
//!
//! One graph for every supported architecture; they differ by config flags (biases, Q/K
//! norms, RoPE style), never by copies of this code. It decides what runs; the CPU backend
//! decides how. A batch of tokens (prefill) and a single token (decode) take the same path.

use super::config::{Activation, ModelConfig};
use super::weights::{Linear, RowScratch, Weights};
use crate::backend::cpu::attention::AttnShape;
use crate::backend::cpu::matmul::matmul_many;
use crate::backend::cpu::ops::{
    add_bias_rows, add_inplace, gelu_tanh_mul, rms_norm, rms_norm_heads, rope, rope_cos_sin,
    silu_mul,
};
use crate::backend::cpu::Pool;
use crate::dfloat::df12::{df12_matmul_many, Df12Job};
use crate::dfloat::{decode_matmul_many, Df11Job};
use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile};
use crate::kv::KvCache;
use crate::lut::gemm::gemm_many;
use crate::lut::table::rebuild_many;
use crate::lut::LutTables;
use crate::quant::ggml::{quantize_row, ActFormat};

/// Which logits a forward pass produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, scoring).
    All,
    /// None (prompt chunks before the last one).
    None,
}

/// Where a forward pass shows a block matrix's input to a [`Tap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TapSite {
    /// The normed input of `attn_q`, `attn_k`, `attn_v` (width `n_embd`).
    AttnIn,
    /// The attention output, input of `attn_output` (width `q_dim`).
    AttnOut,
    /// The normed input of `ffn_gate`, `ffn_up` (width `n_embd`).
    FfnIn,
    /// The SwiGLU output, input of `ffn_down` (width `n_ff`).
    FfnDown,
}

impl TapSite {
    /// The site whose values are the input of block matrix `matrix` (`attn_q`, ...).
    pub fn of_matrix(matrix: &str) -> Option<TapSite> {
        Some(match matrix {
            "attn_q" | "attn_k" | "attn_v" => TapSite::AttnIn,
            "attn_output" => TapSite::AttnOut,
            "ffn_gate" | "ffn_up" => TapSite::FfnIn,
            "ffn_down" => TapSite::FfnDown,
            _ => return None,
        })
    }
}

/// Observer of the block matrices' inputs: `(layer, site, rows, n_rows)`, `rows` being
/// `n_rows` inputs back to back. Calibration (`convert::calib`) uses it; inference has none.
pub type Tap = Box<dyn FnMut(usize, TapSite, &[f32], usize) + Send>;

/// Buffers for one batch of up to `cap` tokens, allocated once per session so the decode
/// loop allocates nothing.
pub struct Scratch {
    /// Observer of the matrices' inputs (calibration only).
    pub(crate) tap: Option<Tap>,
    cap: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    proj: ProjScratch,
    rows: RowScratch,
    scores: Vec<f32>,
    rope_cs: Vec<(f32, f32)>,
    /// RoPE angles at the sliding layers' base (empty without sliding layers).
    rope_cs_swa: Vec<(f32, f32)>,
    logits: Vec<f32>,
}

impl Scratch {
    /// Buffers for batches of up to `cap` tokens in a context of `n_ctx`.
    pub fn new(
        c: &ModelConfig,
        cap: usize,
        n_ctx: usize,
        n_threads: usize,
        all_logits: bool,
    ) -> Self {
        let widest = c.n_embd.max(c.n_ff).max(c.q_dim());
        Scratch {
            tap: None,
            cap,
            x: vec![0.0; cap * c.n_embd],
            xn: vec![0.0; cap * c.n_embd],
            q: vec![0.0; cap * c.q_dim()],
            k: vec![0.0; cap * c.kv_dim()],
            v: vec![0.0; cap * c.kv_dim()],
            attn: vec![0.0; cap * c.q_dim()],
            tmp: vec![0.0; cap * c.n_embd],
            gate: vec![0.0; cap * c.n_ff],
            up: vec![0.0; cap * c.n_ff],
            proj: ProjScratch {
                acts: vec![0; cap * widest * 4],
                tables: Vec::new(),
            },
            rows: RowScratch::default(),
            scores: vec![0.0; n_threads * n_ctx],
            rope_cs: vec![(0.0, 0.0); cap * c.n_rot / 2],
            rope_cs_swa: vec![
                (0.0, 0.0);
                if c.sliding_window > 0 {
                    cap * c.n_rot / 2
                } else {
                    0
                }
            ],
            logits: vec![0.0; if all_logits { cap } else { 1 } * c.n_vocab],
        }
    }

    /// The first `n` logits of the last forward pass.
    pub fn last_logits(&self, n: usize) -> &[f32] {
        &self.logits[..n]
    }

    /// Largest batch these buffers hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes the buffers hold (what [`crate::model::MemoryEstimate`] predicts).
    pub fn bytes(&self) -> usize {
        let f32s = [
            &self.x,
            &self.xn,
            &self.q,
            &self.k,
            &self.v,
            &self.attn,
            &self.tmp,
            &self.gate,
            &self.up,
            &self.scores,
            &self.logits,
        ];
        f32s.iter().map(|b| b.len() * 4).sum::<usize>()
            + self.proj.acts.len()
            + (self.rope_cs.len() + self.rope_cs_swa.len()) * std::mem::size_of::<(f32, f32)>()
    }
}

/// Buffers of the projections: converted activations (ggml formats), per-token lookup
/// tables (LUT matrices). They grow to their working size on the first pass and are reused
/// after. (DFloat11 matrices decode into small per-thread blocks, `dfloat::decode_matmul_many`:
/// peak memory is the compressed model plus ~200 KB per thread.)
pub(crate) struct ProjScratch {
    acts: Vec<u8>,
    tables: Vec<LutTables>,
}

/// How a matrix is applied; consecutive jobs of one class share a pool pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Ggml(ActFormat),
    Lut(u16),
    Df11,
    Df12,
}

impl Class {
    fn of(ty: GgmlType) -> Class {
        match ty {
            GgmlType::Lut { group, .. } => Class::Lut(group),
            GgmlType::Df11 => Class::Df11,
            GgmlType::Df12 => Class::Df12,
            ty => Class::Ggml(ActFormat::for_weights(ty)),
        }
    }
}

/// The first `n` rows of `x` (`cols` wide) converted to `fmt` into `acts`; returns the bytes
/// of one converted row.
fn convert_acts(fmt: ActFormat, x: &[f32], cols: usize, n: usize, acts: &mut [u8]) -> usize {
    let rb = fmt.row_bytes(cols);
    for (xr, ar) in x.chunks_exact(cols).take(n).zip(acts.chunks_exact_mut(rb)) {
        quantize_row(fmt, xr, ar);
    }
    rb
}

/// `out[t] = W · x[t] (+ bias)` for `n` rows of `x`, converting activations first.
fn project(
    pool: &Pool,
    file: &GgufFile,
    w: &Linear,
    x: &[f32],
    n: usize,
    ps: &mut ProjScratch,
    out: &mut [f32],
) -> Result<()> {
    project_many(pool, file, &mut [(w, out)], x, n, ps)
}

/// Several projections of the same input. Matrices of the same class (activation format,
/// LUT group, DFloat11, df12) run in one pass over the thread pool.
fn project_many(
    pool: &Pool,
    file: &GgufFile,
    jobs: &mut [(&Linear, &mut [f32])],
    x: &[f32],
    n: usize,
    ps: &mut ProjScratch,
) -> Result<()> {
    let mut i = 0;
    while i < jobs.len() {
        let class = Class::of(jobs[i].0.ty);
        let mut j = i + 1;
        while j < jobs.len() && Class::of(jobs[j].0.ty) == class {
            j += 1;
        }
        let cols = jobs[i].0.cols;
        match class {
            Class::Ggml(fmt) => {
                let rb = convert_acts(fmt, x, cols, n, &mut ps.acts);
                let views = jobs[i..j]
                    .iter_mut()
                    .map(|(w, out)| (w.view(file), &mut **out));
                matmul_many(pool, views, &ps.acts, rb, n);
            }
            Class::Lut(group) => {
                if ps.tables.len() < n {
                    ps.tables.resize_with(n, LutTables::default);
                }
                rebuild_many(pool, &mut ps.tables[..n], x, cols, group as usize)?;
                let mut mats = [const { None }; 4];
                for (slot, (w, _)) in mats.iter_mut().zip(jobs[i..j].iter()) {
                    *slot = Some(w.lut(file)?);
                }
                let pairs = mats
                    .into_iter()
                    .flatten()
                    .zip(jobs[i..j].iter_mut().map(|(_, out)| &mut **out));
                gemm_many(pool, pairs, &ps.tables[..n])?;
            }
            Class::Df11 => {
                let rb = convert_acts(ActFormat::F32, x, cols, n, &mut ps.acts);
                // Decode fused into the GEMV: each thread decodes the chunks of its rows a
                // block at a time and applies them while they are in cache (bitwise the
                // BF16 matrix's results, through the same row kernel).
                let mut dj = Vec::with_capacity(j - i);
                for (w, out) in jobs[i..j].iter_mut() {
                    let (t, dec) = w.df11(file)?;
                    dj.push(Df11Job {
                        dec,
                        t,
                        rows: w.rows,
                        cols: w.cols,
                        out,
                    });
                }
                decode_matmul_many(pool, &mut dj, &ps.acts, rb, n)?;
            }
            Class::Df12 => {
                let rb = convert_acts(ActFormat::F32, x, cols, n, &mut ps.acts);
                // Table-lookup decode of a few rows at a time into L1, then the BF16 row
                // kernel: bitwise the BF16 matrix's results.
                let mut dj = Vec::with_capacity(j - i);
                for (w, out) in jobs[i..j].iter_mut() {
                    dj.push(Df12Job {
                        t: w.df12(file)?,
                        rows: w.rows,
                        cols: w.cols,
                        out,
                    });
                }
                df12_matmul_many(pool, &mut dj, &ps.acts, rb, n)?;
            }
        }
        for (w, out) in jobs[i..j].iter_mut() {
            if let Some(b) = &w.bias {
                add_bias_rows(&mut out[..n * w.rows], b);
            }
        }
        i = j;
    }
    Ok(())
}

/// Run `tokens` (at RoPE positions `kv.next_pos()..`) through the model, store their
/// keys/values in `kv`, and return the requested logits (`n_vocab` per token). The caller
/// applies the overflow policy first ([`KvCache::make_room`]).
#[allow(clippy::too_many_arguments)]
pub fn forward<'s>(
    c: &ModelConfig,
    w: &Weights,
    file: &GgufFile,
    pool: &Pool,
    tokens: &[u32],
    kv: &mut KvCache,
    s: &'s mut Scratch,
    logits: Logits,
) -> Result<&'s [f32]> {
    let n = tokens.len();
    let pos0 = kv.next_pos();
    if n == 0 {
        return Err(Error::invalid("forward pass on zero tokens"));
    }
    if n > s.cap {
        return Err(Error::invalid(format!(
            "batch of {n} tokens exceeds the batch size {}",
            s.cap
        )));
    }
    if logits == Logits::All && s.logits.len() < n * c.n_vocab {
        return Err(Error::invalid(
            "this session was not created for all-token logits",
        ));
    }
    if kv.len() + n > kv.capacity() {
        return Err(Error::ContextFull(format!(
            "{} tokens in context + {n} new exceed the context size {}",
            kv.len(),
            kv.capacity()
        )));
    }
    if s.scores.len() < pool.n_threads() * (kv.len() + n) {
        return Err(Error::Internal(
            "attention scratch smaller than the context".into(),
        ));
    }
    let d = c.n_embd;
    // Embeddings.
    for (i, &t) in tokens.iter().enumerate() {
        if t as usize >= c.n_vocab {
            return Err(Error::invalid(format!(
                "token id {t} is outside the vocabulary of {}",
                c.n_vocab
            )));
        }
        let row = &mut s.x[i * d..(i + 1) * d];
        w.token_embd.row_into(file, t as usize, row, &mut s.rows)?;
        if c.embd_scale != 1.0 {
            row.iter_mut().for_each(|v| *v *= c.embd_scale);
        }
    }
    kv.begin(n)?;
    // RoPE angles for the batch, shared by all layers.
    let half = c.n_rot / 2;
    for i in 0..n {
        let pos = (pos0 + i) as f32 * c.rope_freq_scale;
        rope_cos_sin(
            pos,
            c.n_rot,
            c.rope_base,
            w.rope_freqs.as_deref(),
            &mut s.rope_cs[i * half..(i + 1) * half],
        );
        if !s.rope_cs_swa.is_empty() {
            rope_cos_sin(
                pos,
                c.n_rot,
                c.rope_base_swa,
                w.rope_freqs.as_deref(),
                &mut s.rope_cs_swa[i * half..(i + 1) * half],
            );
        }
    }
    let shape = AttnShape {
        n_head: c.n_head,
        n_kv_head: c.n_kv_head,
        head_dim: c.head_dim,
    };
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    let (qd, kvd) = (c.q_dim(), c.kv_dim());
    for (li, l) in w.layers.iter().enumerate() {
        let swa = c.is_swa(li);
        let (window, layer_cs) = if swa {
            (c.sliding_window, &s.rope_cs_swa)
        } else {
            (0, &s.rope_cs)
        };
        for i in 0..n {
            rms_norm(
                &s.x[i * d..(i + 1) * d],
                &l.attn_norm,
                c.norm_eps,
                &mut s.xn[i * d..(i + 1) * d],
            );
        }
        if let Some(tap) = &mut s.tap {
            tap(li, TapSite::AttnIn, &s.xn[..n * d], n);
        }
        project_many(
            pool,
            file,
            &mut [(&l.wq, &mut s.q), (&l.wk, &mut s.k), (&l.wv, &mut s.v)],
            &s.xn,
            n,
            &mut s.proj,
        )?;
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            rms_norm_heads(&mut s.q[..n * qd], qn, c.norm_eps);
            rms_norm_heads(&mut s.k[..n * kvd], kn, c.norm_eps);
        }
        for i in 0..n {
            let cs = &layer_cs[i * half..(i + 1) * half];
            rope(
                &mut s.q[i * qd..(i + 1) * qd],
                c.head_dim,
                c.n_rot,
                cs,
                c.rope_style,
            );
            rope(
                &mut s.k[i * kvd..(i + 1) * kvd],
                c.head_dim,
                c.n_rot,
                cs,
                c.rope_style,
            );
        }
        kv.store(li, &s.k[..n * kvd], &s.v[..n * kvd])?;
        kv.attend(
            pool,
            li,
            shape,
            &s.q,
            n,
            scale,
            window,
            &mut s.scores,
            &mut s.attn,
        )?;
        if let Some(tap) = &mut s.tap {
            tap(li, TapSite::AttnOut, &s.attn[..n * qd], n);
        }
        project(pool, file, &l.wo, &s.attn, n, &mut s.proj, &mut s.tmp)?;
        if let Some(pn) = &l.post_attn_norm {
            norm_rows_inplace(&mut s.tmp[..n * d], pn, c.norm_eps, &mut s.xn[..n * d]);
        }
        add_inplace(&mut s.x[..n * d], &s.tmp[..n * d]);

        for i in 0..n {
            rms_norm(
                &s.x[i * d..(i + 1) * d],
                &l.ffn_norm,
                c.norm_eps,
                &mut s.xn[i * d..(i + 1) * d],
            );
        }
        if let Some(tap) = &mut s.tap {
            tap(li, TapSite::FfnIn, &s.xn[..n * d], n);
        }
        project_many(
            pool,
            file,
            &mut [(&l.w_gate, &mut s.gate), (&l.w_up, &mut s.up)],
            &s.xn,
            n,
            &mut s.proj,
        )?;
        match c.act {
            Activation::Silu => silu_mul(&mut s.gate[..n * c.n_ff], &s.up[..n * c.n_ff]),
            Activation::GeluTanh => gelu_tanh_mul(&mut s.gate[..n * c.n_ff], &s.up[..n * c.n_ff]),
        }
        if let Some(tap) = &mut s.tap {
            tap(li, TapSite::FfnDown, &s.gate[..n * c.n_ff], n);
        }
        project(pool, file, &l.w_down, &s.gate, n, &mut s.proj, &mut s.tmp)?;
        if let Some(pn) = &l.post_ffn_norm {
            norm_rows_inplace(&mut s.tmp[..n * d], pn, c.norm_eps, &mut s.xn[..n * d]);
        }
        add_inplace(&mut s.x[..n * d], &s.tmp[..n * d]);
    }
    kv.commit();
    let first = match logits {
        Logits::None => return Ok(&s.logits[..0]),
        Logits::Last => n - 1,
        Logits::All => 0,
    };
    let m = n - first;
    for i in 0..m {
        let src = &s.x[(first + i) * d..(first + i + 1) * d];
        rms_norm(
            src,
            &w.output_norm,
            c.norm_eps,
            &mut s.xn[i * d..(i + 1) * d],
        );
    }
    project(pool, file, &w.output, &s.xn, m, &mut s.proj, &mut s.logits)?;
    Ok(&s.logits[..m * c.n_vocab])
}

/// RMSNorm of every `w.len()`-wide row of `x` in place (through `tmp`, same size).
fn norm_rows_inplace(x: &mut [f32], w: &[f32], eps: f32, tmp: &mut [f32]) {
    let d = w.len();
    for (row, t) in x.chunks_exact_mut(d).zip(tmp.chunks_exact_mut(d)) {
        rms_norm(row, w, eps, t);
        row.copy_from_slice(t);
    }
}
