//! The GPU backend's executor: [`GpuBackend`] records each op of the graph as WGSL
//! dispatches into one submission, submitted by [`Backend::end`]; only the logits come
//! back to the host.

use super::buffer::GpuBuffer;
use super::kquant;
use super::kv::GpuKvCache;
use super::lut::{lut_gemv, lut_tables};
use super::model::{GpuEmbedding, GpuLinear, GpuModel, GpuWeights};
use super::ops;
use super::readback::Readback;
use super::record::Recorder;
use super::state::{GpuActs, GpuState, HostSide};
use crate::backend::cpu::ops::rope_cos_sin;
use crate::backend::{Act, Backend, Logits, Mat, Norm};
use crate::error::{Error, Result};
use crate::format::GgufFile;
use crate::kv::KvStore;
use crate::model::config::Activation;

/// The GPU backend for one forward pass over a session's [`GpuState`].
pub struct GpuBackend<'a> {
    m: &'a GpuModel,
    file: &'a GgufFile,
    acts: &'a GpuActs,
    host: &'a mut HostSide,
    kv: &'a mut GpuKvCache,
    cap: usize,
    r: Option<Recorder<'a>>,
    n: usize,
    /// Rows of logits recorded by [`Backend::logits`] (0: none).
    logit_rows: usize,
    /// Leave the logits on the device at [`Backend::end`] and start a [`Readback`] of
    /// them instead of waiting (the browser's path).
    defer: bool,
    readback: Option<Readback>,
}

impl<'a> GpuBackend<'a> {
    /// A backend recording into `st`'s buffers; `file` is the file the model was uploaded
    /// from (a DFloat11, df12 or LUT embedding is read from it on the host).
    pub fn new(m: &'a GpuModel, st: &'a mut GpuState, file: &'a GgufFile) -> Self {
        let GpuState {
            cap,
            kv,
            acts,
            host,
            frame,
        } = st;
        GpuBackend {
            m,
            file,
            acts,
            host,
            kv,
            cap: *cap,
            r: Some(Recorder::new(&m.dev, frame)),
            n: 0,
            logit_rows: 0,
            defer: false,
            readback: None,
        }
    }

    /// Do not wait for the logits at the end of the pass: submit, and start reading them
    /// back for [`Self::take_readback`] ([`super::forward::forward_submit`]).
    pub(super) fn defer_logits(&mut self) {
        self.defer = true;
    }

    /// The read-back of the logits a deferred pass started.
    pub(super) fn take_readback(&mut self) -> Option<Readback> {
        self.readback.take()
    }

    fn rec(&mut self) -> Result<&mut Recorder<'a>> {
        self.r
            .as_mut()
            .ok_or_else(|| Error::Internal("GPU op after the end of the pass".into()))
    }

    /// The buffer behind `a` and its row width.
    fn act(&self, a: Act) -> (&'a GpuBuffer, usize) {
        let (b, c) = (self.acts, &self.m.cfg);
        match a {
            Act::X => (&b.x, c.n_embd),
            Act::Xn => (&b.xn, c.n_embd),
            Act::Tmp => (&b.tmp, c.n_embd),
            Act::Q => (&b.q, c.q_dim()),
            Act::Attn => (&b.attn, c.q_dim()),
            Act::K => (&b.k, c.kv_dim()),
            Act::V => (&b.v, c.kv_dim()),
            Act::Gate => (&b.gate, c.n_ff),
            Act::Up => (&b.up, c.n_ff),
        }
    }

    fn norm(&self, w: Norm) -> Result<&'a GpuBuffer> {
        let model = self.m;
        select_norm!(&model.layers, &model.output_norm, w)
    }

    fn linear(&self, mat: Mat) -> Result<&'a GpuLinear> {
        let model = self.m;
        Ok(select_mat!(&model.layers, &model.output, mat))
    }
}

/// Which prepared forms of a projection input exist (the input is converted once per
/// [`Backend::project`] call, for the first matrix that needs each form).
#[derive(Default)]
struct Prepared {
    q8: bool,
    lut_group: Option<usize>,
}

/// Record `out = W · x` for `n` tokens (plus bias), preparing the input form W needs.
#[allow(clippy::too_many_arguments)]
fn project_one(
    r: &mut Recorder,
    acts: &GpuActs,
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
                ops::quant_act(r, x, &acts.xq, &acts.xd, w.cols, n)?;
                prep.q8 = true;
            }
            ops::matmul(r, m, &acts.xq, Some(&acts.xd), out, n, y_stride)?;
        }
        GpuWeights::Ggml(m) => ops::matmul(r, m, x, None, out, n, y_stride)?,
        GpuWeights::K(m) => kquant::matmul_k(r, m, x, out, n, y_stride)?,
        GpuWeights::Df11(m) => {
            let Some(scratch) = &acts.df11 else {
                return Err(Error::Internal("DFloat11 scratch missing".into()));
            };
            m.decode(r, scratch)?;
            ops::matmul_bf16(r, scratch, w.rows, w.cols, x, out, n, y_stride)?;
        }
        GpuWeights::Df12(m) => m.matmul(r, x, out, n, y_stride)?,
        GpuWeights::Lut(m) => {
            let Some(ls) = &acts.lut else {
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

impl Backend for GpuBackend<'_> {
    fn begin(&mut self, tokens: &[u32], logits: Logits) -> Result<()> {
        let (m, c) = (self.m, &self.m.cfg);
        let d = &*m.dev;
        let n = tokens.len();
        let pos0 = self.kv.next_pos();
        if n == 0 {
            return Err(Error::invalid("forward pass on zero tokens"));
        }
        if n > self.cap {
            return Err(Error::invalid(format!(
                "batch of {n} tokens exceeds the batch size {}",
                self.cap
            )));
        }
        if logits == Logits::All && self.host.logits.len() < n * c.n_vocab {
            return Err(Error::invalid(
                "this session was not created for all-token logits",
            ));
        }
        let len = self.kv.len();
        if len + n > self.kv.capacity() {
            return Err(Error::ContextFull(format!(
                "{len} tokens in context + {n} new exceed the context size {}",
                self.kv.capacity()
            )));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(Error::invalid(format!(
                "token id {t} is outside the vocabulary of {}",
                c.n_vocab
            )));
        }
        // RoPE angles on the host, exactly as the CPU backend computes them.
        let half = c.n_rot / 2;
        let mut cs = [(0f32, 0f32); 256];
        let sliding = c.sliding_window > 0;
        for (base, buf) in [
            (c.rope_base, &self.acts.cs),
            (c.rope_base_swa, &self.acts.cs_swa),
        ]
        .into_iter()
        .take(if sliding { 2 } else { 1 })
        {
            let flat = &mut self.host.cs;
            flat.clear();
            for i in 0..n {
                let pos = (pos0 + i) as f32 * c.rope_freq_scale;
                let cs = &mut cs[..half];
                rope_cos_sin(pos, c.n_rot, base, m.rope_freqs.as_deref(), cs);
                flat.extend(cs.iter().flat_map(|&(a, b)| [a, b]));
            }
            d.write(buf, 0, bytemuck::cast_slice(flat))?;
        }
        match &m.embd {
            GpuEmbedding::Device(_) => d.write(&self.acts.ids, 0, bytemuck::cast_slice(tokens))?,
            GpuEmbedding::Host(e) => {
                let de = c.n_embd;
                let h = &mut *self.host;
                h.embd_rows.resize(n * de, 0.0);
                for (&t, row) in tokens.iter().zip(h.embd_rows.chunks_exact_mut(de)) {
                    e.row_into(self.file, t as usize, row, &mut h.embd_scratch)?;
                }
                d.write(&self.acts.x, 0, bytemuck::cast_slice(&h.embd_rows))?;
            }
        }
        self.kv.begin(n)?;
        self.n = n;
        Ok(())
    }

    fn embed(&mut self, _tokens: &[u32], scale: f32) -> Result<()> {
        let (n, de) = (self.n, self.m.cfg.n_embd);
        let (m, x, ids) = (self.m, &self.acts.x, &self.acts.ids);
        let r = self.rec()?;
        if let GpuEmbedding::Device(e) = &m.embd {
            ops::get_rows(r, e, ids, x, n)?;
        }
        if scale != 1.0 {
            ops::scale(r, x, scale, n * de)?;
        }
        Ok(())
    }

    fn rms_norm(&mut self, w: Norm, src: Act, dst: Act) -> Result<()> {
        let (wb, (x, d), (out, d2)) = (self.norm(w)?, self.act(src), self.act(dst));
        let (n, eps) = (self.n, self.m.cfg.norm_eps);
        if d != d2 {
            return Err(Error::Internal(format!("{w:?} over {src:?} → {dst:?}")));
        }
        let r = self.rec()?;
        if src == dst {
            ops::rms_norm_inplace(r, x, wb, d, n, eps)
        } else {
            ops::rms_norm(r, x, wb, out, d, n, d, eps)
        }
    }

    fn head_norm(&mut self, w: Norm, buf: Act) -> Result<()> {
        let (wb, (x, width)) = (self.norm(w)?, self.act(buf));
        let c = &self.m.cfg;
        let (hd, heads, eps) = (c.head_dim, self.n * width / c.head_dim, c.norm_eps);
        ops::rms_norm_inplace(self.rec()?, x, wb, hd, heads, eps)
    }

    fn project(&mut self, x: Act, jobs: &[(Mat, Act)]) -> Result<()> {
        let (xb, _) = self.act(x);
        let n = self.n;
        let mut prep = Prepared::default();
        for &(m, a) in jobs {
            let w = self.linear(m)?;
            let (out, width) = self.act(a);
            let acts = self.acts;
            project_one(self.rec()?, acts, &mut prep, w, xb, n, out, width)?;
        }
        Ok(())
    }

    fn rope(&mut self, buf: Act, sliding: bool) -> Result<()> {
        let c = &self.m.cfg;
        let (x, width) = self.act(buf);
        let heads = width / c.head_dim;
        let cs = if sliding {
            &self.acts.cs_swa
        } else {
            &self.acts.cs
        };
        let (rows, hd, nr, st) = (self.n * heads, c.head_dim, c.n_rot, c.rope_style);
        ops::rope(self.rec()?, x, cs, rows, hd, nr, st, heads)
    }

    fn attend(&mut self, layer: usize, window: usize) -> Result<()> {
        let a = self.acts;
        let r = self
            .r
            .as_mut()
            .ok_or_else(|| Error::Internal("GPU op after the end of the pass".into()))?;
        let qkv = (&a.q, &a.k, &a.v);
        self.kv.attend(r, &self.m.cfg, layer, window, qkv, &a.attn)
    }

    fn glu(&mut self, act: Activation) -> Result<()> {
        let (g, u, len) = (&self.acts.gate, &self.acts.up, self.n * self.m.cfg.n_ff);
        let r = self.rec()?;
        match act {
            Activation::Silu => ops::silu_mul(r, g, u, len),
            Activation::GeluTanh => ops::gelu_tanh_mul(r, g, u, len),
        }
    }

    fn add(&mut self, dst: Act, src: Act) -> Result<()> {
        let ((x, w1), (y, w2)) = (self.act(dst), self.act(src));
        if dst == src || w1 != w2 {
            return Err(Error::Internal(format!("add {src:?} to {dst:?}")));
        }
        let len = self.n * w1;
        ops::add(self.rec()?, x, y, len)
    }

    fn logits(&mut self, first: usize) -> Result<()> {
        let c = &self.m.cfg;
        let (de, rows) = (c.n_embd, self.n - first);
        let (wn, out) = (&self.m.output_norm, &self.m.output);
        let a = self.acts;
        let r = self.rec()?;
        ops::rms_norm_rows(r, &a.x, wn, &a.xn, de, first, rows, c.norm_eps)?;
        let mut prep = Prepared::default();
        project_one(r, a, &mut prep, out, &a.xn, rows, &a.logits, c.n_vocab)?;
        self.logit_rows = rows;
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        let r = self
            .r
            .take()
            .ok_or_else(|| Error::Internal("GPU pass ended twice".into()))?;
        r.submit()?;
        self.kv.commit();
        if self.logit_rows > 0 && self.defer {
            let bytes = 4 * (self.logit_rows * self.m.cfg.n_vocab) as u64;
            self.readback = Some(self.m.dev.start_read(&self.acts.logits, 0, bytes)?);
        } else if self.logit_rows > 0 {
            let nv = self.m.cfg.n_vocab;
            let got = self
                .m
                .dev
                .read_f32(&self.acts.logits, 0, self.logit_rows * nv)?;
            self.host.logits[..got.len()].copy_from_slice(&got);
        }
        Ok(())
    }

    fn load(&mut self, a: Act, rows: &[f32]) -> Result<()> {
        let (b, w) = self.act(a);
        if rows.len() != self.n * w {
            return Err(Error::invalid(format!(
                "{} values for {a:?} ({} expected)",
                rows.len(),
                self.n * w
            )));
        }
        // Writes land before the next submission: submit what was recorded first.
        self.rec()?.flush()?;
        self.m.dev.write(b, 0, bytemuck::cast_slice(rows))
    }

    fn fetch(&mut self, a: Act) -> Result<Vec<f32>> {
        let (b, w) = self.act(a);
        self.rec()?.flush()?;
        self.m.dev.read_f32(b, 0, self.n * w)
    }

    fn fetch_logits(&mut self, rows: usize) -> Result<Vec<f32>> {
        self.rec()?.flush()?;
        let nv = self.m.cfg.n_vocab;
        self.m.dev.read_f32(&self.acts.logits, 0, rows * nv)
    }
}
