//! The CPU backend's executor: [`CpuBackend`] runs each op of the graph at once, on a
//! session's [`Scratch`] buffers, its KV cache and the model's thread pool.
//!
//! Projections dispatch on the weight's class (ggml blocks, LUT planes, DFloat11, df12):
//! consecutive matrices of one class that read the same input share one conversion of it
//! and one pass over the pool.

use super::attention::AttnShape;
use super::matmul::matmul_many;
use super::ops::{
    add_bias_rows, add_inplace, gelu_tanh_mul, rms_norm, rms_norm_heads, rope, rope_cos_sin,
    silu_mul,
};
use super::Pool;
use crate::backend::cpu::dfloat::{decode_matmul_many, Df11Job};
use crate::backend::cpu::dfloat::{df12_matmul_many, Df12Job};
use crate::backend::cpu::lut::gemm::gemm_many;
use crate::backend::cpu::lut::table::rebuild_many;
use crate::backend::cpu::lut::LutTables;
use crate::backend::{Act, Backend, Logits, Mat, Norm};
use crate::backend::{Tap, TapSite};
use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile};
use crate::kv::KvCache;
use crate::model::config::{Activation, ModelConfig};
use crate::model::weights::{Linear, RowScratch, Weights};
use crate::quant::ggml::{quantize_row, ActFormat};

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
    /// One row for in-place norms.
    norm_row: Vec<f32>,
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
            norm_row: vec![0.0; c.n_embd],
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

    /// Bytes the buffers hold (what [`crate::session::MemoryEstimate`] predicts).
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

/// Several projections of the same input. Matrices of the same class (activation format,
/// LUT group, DFloat11, df12) run in one pass over the thread pool.
pub(crate) fn project_many(
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

/// The CPU backend for one forward pass: the model's weights and pool, a session's KV
/// cache and scratch. Cheap to build (borrows only); build one per pass.
pub struct CpuBackend<'a> {
    c: &'a ModelConfig,
    w: &'a Weights,
    file: &'a GgufFile,
    pool: &'a Pool,
    kv: &'a mut KvCache,
    s: &'a mut Scratch,
    /// Tokens of the batch.
    n: usize,
}

impl<'a> CpuBackend<'a> {
    pub fn new(
        c: &'a ModelConfig,
        w: &'a Weights,
        file: &'a GgufFile,
        pool: &'a Pool,
        kv: &'a mut KvCache,
        s: &'a mut Scratch,
    ) -> Self {
        CpuBackend {
            c,
            w,
            file,
            pool,
            kv,
            s,
            n: 0,
        }
    }

    /// Row width of buffer `a`.
    fn width(&self, a: Act) -> usize {
        let c = self.c;
        match a {
            Act::X | Act::Xn | Act::Tmp => c.n_embd,
            Act::Q | Act::Attn => c.q_dim(),
            Act::K | Act::V => c.kv_dim(),
            Act::Gate | Act::Up => c.n_ff,
        }
    }

    /// The scratch vector behind `a`.
    fn buf(&mut self, a: Act) -> &mut Vec<f32> {
        let s = &mut *self.s;
        match a {
            Act::X => &mut s.x,
            Act::Xn => &mut s.xn,
            Act::Q => &mut s.q,
            Act::K => &mut s.k,
            Act::V => &mut s.v,
            Act::Attn => &mut s.attn,
            Act::Tmp => &mut s.tmp,
            Act::Gate => &mut s.gate,
            Act::Up => &mut s.up,
        }
    }

    /// The `n` rows of `a`.
    fn rows(&mut self, a: Act) -> &mut [f32] {
        let len = self.n * self.width(a);
        &mut self.buf(a)[..len]
    }

    /// Take `a`'s vector out of the scratch (put it back with [`Self::put`]), so that an op
    /// can read one buffer while it writes another.
    fn take(&mut self, a: Act) -> Vec<f32> {
        std::mem::take(self.buf(a))
    }

    fn put(&mut self, a: Act, v: Vec<f32>) {
        *self.buf(a) = v;
    }

    /// Put back the outputs [`Backend::project`] took.
    fn restore(&mut self, jobs: &[(Mat, Act)], outs: [Vec<f32>; 3]) {
        for (&(_, a), v) in jobs.iter().zip(outs) {
            self.put(a, v);
        }
    }

    fn norm(&self, w: Norm) -> Result<&'a [f32]> {
        let model = self.w;
        select_norm!(&model.layers, &model.output_norm, w).map(|v| v.as_slice())
    }

    fn linear(&self, m: Mat) -> Result<&'a Linear> {
        let model = self.w;
        Ok(select_mat!(&model.layers, &model.output, m))
    }
}

impl Backend for CpuBackend<'_> {
    fn begin(&mut self, tokens: &[u32], logits: Logits) -> Result<()> {
        let (c, s, kv) = (self.c, &mut *self.s, &mut *self.kv);
        let n = tokens.len();
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
        if s.scores.len() < self.pool.n_threads() * (kv.len() + n) {
            return Err(Error::Internal(
                "attention scratch smaller than the context".into(),
            ));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(Error::invalid(format!(
                "token id {t} is outside the vocabulary of {}",
                c.n_vocab
            )));
        }
        let pos0 = kv.next_pos();
        kv.begin(n)?;
        // RoPE angles for the batch, shared by all layers.
        let half = c.n_rot / 2;
        for i in 0..n {
            let pos = (pos0 + i) as f32 * c.rope_freq_scale;
            let factors = self.w.rope_freqs.as_deref();
            let cs = &mut s.rope_cs[i * half..(i + 1) * half];
            rope_cos_sin(pos, c.n_rot, c.rope_base, factors, cs);
            if !s.rope_cs_swa.is_empty() {
                let cs = &mut s.rope_cs_swa[i * half..(i + 1) * half];
                rope_cos_sin(pos, c.n_rot, c.rope_base_swa, factors, cs);
            }
        }
        self.n = n;
        Ok(())
    }

    fn embed(&mut self, tokens: &[u32], scale: f32) -> Result<()> {
        let d = self.c.n_embd;
        let s = &mut *self.s;
        for (i, &t) in tokens.iter().enumerate() {
            let row = &mut s.x[i * d..(i + 1) * d];
            self.w
                .token_embd
                .row_into(self.file, t as usize, row, &mut s.rows)?;
            if scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(())
    }

    fn rms_norm(&mut self, w: Norm, src: Act, dst: Act) -> Result<()> {
        let (wv, eps, d) = (self.norm(w)?, self.c.norm_eps, self.width(src));
        if wv.len() != d || self.width(dst) != d {
            return Err(Error::Internal(format!("{w:?} over {src:?} → {dst:?}")));
        }
        if src == dst {
            let mut x = self.take(src);
            let tmp = &mut self.s.norm_row;
            tmp.resize(d, 0.0);
            for row in x[..self.n * d].chunks_exact_mut(d) {
                rms_norm(row, wv, eps, tmp);
                row.copy_from_slice(tmp);
            }
            self.put(src, x);
        } else {
            let x = self.take(src);
            let out = self.rows(dst);
            for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
                rms_norm(xr, wv, eps, or);
            }
            self.put(src, x);
        }
        Ok(())
    }

    fn head_norm(&mut self, w: Norm, buf: Act) -> Result<()> {
        let (wv, eps) = (self.norm(w)?, self.c.norm_eps);
        rms_norm_heads(self.rows(buf), wv, eps);
        Ok(())
    }

    fn project(&mut self, x: Act, jobs: &[(Mat, Act)]) -> Result<()> {
        // At most three matrices share an input (Q/K/V); fixed arrays keep the decode loop
        // free of allocations.
        if jobs.is_empty() || jobs.len() > 3 {
            return Err(Error::Internal(format!(
                "{} projections in one call",
                jobs.len()
            )));
        }
        let mut lins: [Option<&Linear>; 3] = [None; 3];
        let mut outs: [Vec<f32>; 3] = Default::default();
        for (i, &(m, a)) in jobs.iter().enumerate() {
            if a == x || jobs[..i].iter().any(|&(_, b)| b == a) {
                return Err(Error::Internal(format!("projection into {a:?} twice")));
            }
            lins[i] = Some(self.linear(m)?);
        }
        for (o, &(_, a)) in outs.iter_mut().zip(jobs) {
            *o = self.take(a);
        }
        let xv = self.take(x);
        let (n, pool, file, ps) = (self.n, self.pool, self.file, &mut self.s.proj);
        let [o0, o1, o2] = &mut outs;
        let r = match lins {
            [Some(a), None, None] => project_many(pool, file, &mut [(a, o0)], &xv, n, ps),
            [Some(a), Some(b), None] => {
                project_many(pool, file, &mut [(a, o0), (b, o1)], &xv, n, ps)
            }
            [Some(a), Some(b), Some(c)] => {
                project_many(pool, file, &mut [(a, o0), (b, o1), (c, o2)], &xv, n, ps)
            }
            _ => Err(Error::Internal("projection jobs".into())),
        };
        self.put(x, xv);
        self.restore(jobs, outs);
        r
    }

    fn rope(&mut self, buf: Act, sliding: bool) -> Result<()> {
        let c = self.c;
        let (n, w, half) = (self.n, self.width(buf), c.n_rot / 2);
        let mut v = self.take(buf);
        let cs = if sliding {
            &self.s.rope_cs_swa
        } else {
            &self.s.rope_cs
        };
        for (i, row) in v[..n * w].chunks_exact_mut(w).enumerate() {
            let cs = &cs[i * half..(i + 1) * half];
            rope(row, c.head_dim, c.n_rot, cs, c.rope_style);
        }
        self.put(buf, v);
        Ok(())
    }

    fn attend(&mut self, layer: usize, window: usize) -> Result<()> {
        let c = self.c;
        let (n, kvd) = (self.n, c.kv_dim());
        let s = &mut *self.s;
        self.kv.store(layer, &s.k[..n * kvd], &s.v[..n * kvd])?;
        let shape = AttnShape {
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
        };
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        self.kv.attend(
            self.pool,
            layer,
            shape,
            &s.q,
            n,
            scale,
            window,
            &mut s.scores,
            &mut s.attn,
        )
    }

    fn glu(&mut self, act: Activation) -> Result<()> {
        let m = self.n * self.c.n_ff;
        let s = &mut *self.s;
        match act {
            Activation::Silu => silu_mul(&mut s.gate[..m], &s.up[..m]),
            Activation::GeluTanh => gelu_tanh_mul(&mut s.gate[..m], &s.up[..m]),
        }
        Ok(())
    }

    fn add(&mut self, dst: Act, src: Act) -> Result<()> {
        if dst == src || self.width(dst) != self.width(src) {
            return Err(Error::Internal(format!("add {src:?} to {dst:?}")));
        }
        let y = self.take(src);
        let len = self.n * self.width(dst);
        add_inplace(self.rows(dst), &y[..len]);
        self.put(src, y);
        Ok(())
    }

    fn observe(&mut self, layer: usize, site: TapSite, src: Act) {
        let n = self.n;
        let len = n * self.width(src);
        let v = self.take(src);
        if let Some(tap) = &mut self.s.tap {
            tap(layer, site, &v[..len], n);
        }
        self.put(src, v);
    }

    fn logits(&mut self, first: usize) -> Result<()> {
        let (c, n) = (self.c, self.n);
        let d = c.n_embd;
        let m = n - first;
        let norm = self.norm(Norm::Output)?;
        let s = &mut *self.s;
        for i in 0..m {
            let src = &s.x[(first + i) * d..(first + i + 1) * d];
            rms_norm(src, norm, c.norm_eps, &mut s.xn[i * d..(i + 1) * d]);
        }
        let out = self.linear(Mat::Output)?;
        let s = &mut *self.s;
        project_many(
            self.pool,
            self.file,
            &mut [(out, &mut s.logits)],
            &s.xn,
            m,
            &mut s.proj,
        )
    }

    fn end(&mut self) -> Result<()> {
        self.kv.commit();
        Ok(())
    }

    fn load(&mut self, a: Act, rows: &[f32]) -> Result<()> {
        let dst = self.rows(a);
        if rows.len() != dst.len() {
            return Err(Error::invalid(format!(
                "{} values for {a:?} ({} expected)",
                rows.len(),
                dst.len()
            )));
        }
        dst.copy_from_slice(rows);
        Ok(())
    }

    fn fetch(&mut self, a: Act) -> Result<Vec<f32>> {
        Ok(self.rows(a).to_vec())
    }

    fn fetch_logits(&mut self, rows: usize) -> Result<Vec<f32>> {
        let len = rows * self.c.n_vocab;
        self.s
            .logits
            .get(..len)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| Error::invalid(format!("{rows} rows of logits")))
    }
}
