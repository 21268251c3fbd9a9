//! A conversation with a model: it owns a KV cache, scratch buffers and a sampler, ingests
//! prompts in batches and streams generated text as whole UTF-8 code points.
//!
//! The context of a session is the token ids in its KV cache plus at most one *pending*
//! token: the last token a generation produced and handed out, which is part of the
//! conversation but has not been run through the model yet (it will be, first thing, by the
//! next `generate`/`eval`). Every token whose text a callback saw is in the context, so a
//! follow-up prompt continues exactly after it.
//!
//! Submodules: [`stop`] (stop strings), [`state`] (save/restore), [`chat`] (chat messages
//! through the model's template), [`constrain`] (output matching a JSON schema, regex or
//! grammar).

pub mod chat;
pub mod constrain;
pub mod estimate;
pub(crate) mod params;
pub mod state;
pub mod stop;

use crate::clock::Instant;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::backend::profile::OpProfile;
pub use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::kv::{KvCache, KvMode, KvParams, KvStore, Overflow};
use crate::model::graph::{forward, Logits, Scratch};
use crate::model::Model;
use crate::sample::Sampler;
use crate::tokenizer::StreamDecoder;
use constrain::Guide;
use estimate::session_shape;
pub use estimate::MemoryEstimate;
pub use params::{GenerateParams, GenerateStats, SessionParams, StopReason, Usage};
use stop::StopMatcher;

/// A model plus the state of one conversation.
///
/// A session is `Send` (move it to a worker thread) but not shared: one thread drives it,
/// others may only [`CancelToken::cancel`] it. Several sessions may run on one model at
/// once; their forward passes take turns on the model's thread pool.
pub struct Session {
    model: Arc<Model>,
    kv: KvCache,
    scratch: Scratch,
    /// Tokens whose keys/values are in `kv`.
    tokens: Vec<u32>,
    /// The last generated token, in the conversation but not yet in `kv` (see module docs).
    pending: Option<u32>,
    n_batch: usize,
    all_logits: bool,
    cancel: CancelToken,
    /// Tokens the last generation handed out (kept when it ends with an error).
    generated: usize,
    /// KV cache and scratch on the GPU when the model runs there (then `kv` and `scratch`
    /// are empty placeholders).
    #[cfg(feature = "gpu")]
    gpu: Option<crate::backend::gpu::GpuState>,
    /// Time per op of the CPU forward passes, when profiling is on.
    op_profile: Option<OpProfile>,
}

impl Model {
    /// Start a session on a shared model.
    pub fn session(self: &Arc<Self>, params: &SessionParams) -> Result<Session> {
        Session::new(self.clone(), params)
    }
}

impl Session {
    /// A new, empty session. Fails with [`Error::InvalidArg`] on a bad context or batch
    /// size and with [`Error::OutOfMemory`] when the memory budget or the allocator says no.
    pub fn new(model: Arc<Model>, params: &SessionParams) -> Result<Session> {
        let c = model.config();
        let on_gpu = model.on_gpu();
        // Checks the request (context, batch, memory budget) for either backend; the KV
        // cache plans the same context and batch on both.
        let shape = session_shape(c, params, model.n_threads())?;
        let (n_ctx, n_batch) = (shape.n_ctx, shape.n_batch);
        // The GPU backend keeps its own cache; the CPU cache is then an unused 1-token f16
        // placeholder.
        let kv = if on_gpu {
            KvCache::for_model(c, None, &KvParams::default(), 1, 1, 1)?
        } else {
            KvCache::for_model(
                c,
                model.weights.rope_freqs.as_deref(),
                &params.kv,
                params.n_ctx,
                params.n_batch,
                model.n_threads(),
            )?
        };
        debug_assert!(on_gpu || (kv.capacity(), kv.n_batch()) == (n_ctx, n_batch));
        #[cfg(feature = "gpu")]
        let gpu = match model.gpu() {
            Some(g) => {
                let st = crate::backend::gpu::GpuState::with_kv(
                    g,
                    params.n_batch,
                    params.n_ctx,
                    params.all_logits,
                    false,
                    &params.kv,
                )?;
                // The same context; a quantized GPU cache may take smaller batches.
                debug_assert!(st.n_ctx() == n_ctx && st.n_batch() <= n_batch);
                Some(st)
            }
            None => None,
        };
        #[cfg(feature = "gpu")]
        let n_batch = gpu.as_ref().map_or(n_batch, |st| st.n_batch());
        let scratch = if on_gpu {
            Scratch::new(c, 0, 0, 0, false)
        } else {
            Scratch::new(c, n_batch, n_ctx, model.n_threads(), params.all_logits)
        };
        Ok(Session {
            model,
            kv,
            scratch,
            tokens: Vec::new(),
            pending: None,
            n_batch,
            all_logits: params.all_logits,
            cancel: CancelToken::new(),
            generated: 0,
            #[cfg(feature = "gpu")]
            gpu,
            op_profile: None,
        })
    }

    /// The KV cache of the backend that runs the model.
    pub(crate) fn store(&self) -> &dyn KvStore {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return g.kv();
        }
        &self.kv
    }

    pub(crate) fn store_mut(&mut self) -> &mut dyn KvStore {
        #[cfg(feature = "gpu")]
        if let Some(g) = &mut self.gpu {
            return g.kv_mut();
        }
        &mut self.kv
    }

    /// The parameters that make a session of the same shape as this one.
    pub fn params(&self) -> SessionParams {
        SessionParams {
            n_ctx: self.n_ctx(),
            n_batch: self.n_batch,
            all_logits: self.all_logits,
            kv: self.store().params().clone(),
            memory_budget: 0,
        }
    }

    /// An independent copy of this session: same model, same context, its own cancel
    /// token. An f16 cache is copied (on either backend); a quantized cache is rebuilt by
    /// running the context again (its pages come out bit-identical, since a batch is
    /// ingested exactly as token by token). A context whose window slid cannot be copied
    /// (the evicted tokens are gone).
    pub fn try_clone(&self) -> Result<Session> {
        if self.store().evicted() > 0 {
            return Err(Error::invalid(
                "cannot copy a session whose KV window slid (the evicted tokens are gone)",
            ));
        }
        let mut s = Session::new(self.model.clone(), &self.params())?;
        if self.store().params().mode != KvMode::F16 {
            if !self.tokens.is_empty() {
                s.eval_raw(&self.tokens, Logits::None)?;
            }
        } else {
            let (k, v) = self.store().snapshot()?;
            s.store_mut().restore(self.store().len(), &k, &v)?;
            s.tokens = self.tokens.clone();
        }
        s.pending = self.pending;
        Ok(s)
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tokens whose keys and values went into the KV cache since the last reset (the
    /// context without the pending token; see the module docs). When the KV window slid,
    /// only the sinks and the last `kv().len() - sinks` of them are still in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Most tokens one forward pass takes (prompts are split into batches of this size).
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Every token of the context, the pending one included.
    pub fn context_tokens(&self) -> Vec<u32> {
        let mut v = self.tokens.clone();
        v.extend(self.pending);
        v
    }

    /// The last generated token if it is not in the KV cache yet.
    pub fn pending_token(&self) -> Option<u32> {
        self.pending
    }

    /// Tokens in context, capacity and KV memory.
    pub fn usage(&self) -> Usage {
        let bpt = self.store().bytes_per_token();
        Usage {
            tokens: self.kv_len() + usize::from(self.pending.is_some()),
            n_ctx: self.n_ctx(),
            kv_bytes: self.kv_bytes(),
            kv_bytes_used: ((self.kv_len() as f64 * bpt) as usize).min(self.kv_bytes()),
        }
    }

    /// Context capacity in tokens.
    pub fn n_ctx(&self) -> usize {
        self.store().capacity()
    }

    /// The CPU KV cache (mode, fill, positions, bytes); a placeholder when the GPU runs the
    /// model (see [`Session::kv_store`]).
    pub fn kv(&self) -> &KvCache {
        &self.kv
    }

    /// The KV cache of the backend that runs the model (fill, positions, bytes).
    pub fn kv_store(&self) -> &dyn KvStore {
        self.store()
    }

    /// Positions in the KV cache.
    fn kv_len(&self) -> usize {
        self.store().len()
    }

    /// Bytes held by the KV cache (in device memory when the model runs on the GPU).
    pub fn kv_bytes(&self) -> usize {
        self.store().bytes()
    }

    /// Time each op of this session's CPU forward passes from now on (`on`), or stop and
    /// forget the times. See [`Session::op_profile`].
    pub fn set_op_profiling(&mut self, on: bool) {
        self.op_profile = on.then(OpProfile::default);
    }

    /// Time per op of the CPU forward passes since profiling was turned on (`None` when it
    /// is off). A model on the GPU records its ops and has no per-op host times: its
    /// kernels have timestamp queries instead (`Session::gpu_timings`).
    pub fn op_profile(&self) -> Option<&OpProfile> {
        self.op_profile.as_ref()
    }

    /// GPU kernel timings collected by this session: (kernel, dispatches, ms), slowest
    /// first. Empty unless profiling was enabled with [`Session::set_gpu_profiling`].
    #[cfg(feature = "gpu")]
    pub fn gpu_timings(&self) -> Vec<(&'static str, u64, f64)> {
        self.gpu.as_ref().map(|g| g.timings()).unwrap_or_default()
    }

    /// Collect GPU kernel timestamps (where the adapter supports them; returns whether it
    /// does). Rebuilds the GPU state, so the context is cleared.
    #[cfg(feature = "gpu")]
    pub fn set_gpu_profiling(&mut self, on: bool) -> Result<bool> {
        let Some(g) = self.model.gpu() else {
            return Ok(false);
        };
        let st = crate::backend::gpu::GpuState::with_kv(
            g,
            self.n_batch,
            self.n_ctx(),
            false,
            on,
            &self.store().params().clone(),
        )?;
        let profiling = st.profiling();
        self.gpu = Some(st);
        self.tokens.clear();
        self.pending = None;
        Ok(profiling)
    }

    /// The last forward pass's logits (first `n`).
    fn last_logits(&self, n: usize) -> &[f32] {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return g.last_logits(n);
        }
        self.scratch.last_logits(n)
    }

    /// Bytes the session allocated: KV cache plus activation buffers (what
    /// [`MemoryEstimate::session_bytes`] predicts; lookup tables and DFloat11
    /// decode buffers of converted models come on top at the first forward pass).
    pub fn memory_bytes(&self) -> usize {
        self.kv_bytes() + self.scratch.bytes()
    }

    /// Tokens the last generation produced and handed out, also when it ended with an
    /// error (cancelled, context full): they are in the context.
    pub fn last_generated(&self) -> usize {
        self.generated
    }

    /// A handle that cancels this session's generation from any thread.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Show the block matrices' inputs of every CPU forward pass to `tap` (calibration);
    /// `None` removes it.
    pub(crate) fn set_tap(&mut self, tap: Option<crate::model::graph::Tap>) {
        self.scratch.tap = tap;
    }

    /// Forget the conversation.
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.pending = None;
        self.store_mut().reset();
    }

    /// Keep only the first `n` tokens of the context (e.g. to re-use a shared prefix).
    /// Quantized caches and windows that slid cannot be cut (an error; nothing changes).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.tokens.len() {
            return Ok(()); // keeps everything (n covers the KV tokens and maybe the pending one)
        }
        self.store_mut().truncate(n)?;
        self.pending = None;
        self.tokens.truncate(n);
        Ok(())
    }

    /// Run the pending token (if any) through the model so the KV cache holds the whole
    /// context.
    pub fn flush_pending(&mut self) -> Result<()> {
        if let Some(t) = self.pending {
            self.eval_raw(&[t], Logits::None)?;
            self.pending = None;
        }
        Ok(())
    }

    /// Append `tokens` to the context and return logits: the last token's for
    /// [`Logits::Last`], every token's for [`Logits::All`] (at most one batch of tokens).
    /// A pending token is evaluated first.
    pub fn eval(&mut self, tokens: &[u32], logits: Logits) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(Error::invalid("nothing to evaluate"));
        }
        self.flush_pending()?;
        self.eval_raw(tokens, logits)
    }

    fn eval_raw(&mut self, tokens: &[u32], logits: Logits) -> Result<&[f32]> {
        let (last_len, _) = self.ingest(tokens, logits, false)?;
        let n = match logits {
            Logits::None => 0,
            Logits::Last => self.model.config.n_vocab,
            Logits::All => last_len * self.model.config.n_vocab,
        };
        Ok(self.last_logits(n))
    }

    /// [`Self::eval`] of `tokens` with [`Logits::Last`] on the GPU, without waiting for the
    /// logits: the passes are recorded and submitted, the tokens join the context, and the
    /// returned [`crate::backend::gpu::Readback`] yields the last token's logits when
    /// awaited. Nothing blocks, so this is the browser's way to run the GPU backend (its
    /// WebGPU maps results only once control returns to the event loop). An error for a
    /// model on the CPU (use [`Self::eval`]).
    #[cfg(feature = "gpu")]
    pub fn eval_submit(&mut self, tokens: &[u32]) -> Result<crate::backend::gpu::Readback> {
        if tokens.is_empty() {
            return Err(Error::invalid("nothing to evaluate"));
        }
        if self.gpu.is_none() {
            return Err(Error::invalid("eval_submit needs a model on the GPU"));
        }
        self.flush_pending()?;
        let (_, readback) = self.ingest(tokens, Logits::Last, true)?;
        readback.ok_or_else(|| Error::Internal("no GPU read-back".into()))
    }

    /// Run `tokens` through the model batch by batch, the last batch with `logits`; with
    /// `defer` (GPU only) the last batch's logits are left to the returned read-back.
    /// Returns the last batch's length.
    fn ingest(&mut self, tokens: &[u32], logits: Logits, defer: bool) -> Result<(usize, Deferred)> {
        if tokens.is_empty() {
            return Err(Error::invalid("nothing to evaluate"));
        }
        if logits == Logits::All && tokens.len() > self.n_batch {
            return Err(Error::invalid(format!(
                "all-token logits need at most {} tokens per call",
                self.n_batch
            )));
        }
        // Refusing happens before anything is ingested; sliding happens per batch.
        if self.store().params().overflow == Overflow::Error {
            self.store_mut().make_room(tokens.len())?;
        }
        let model = self.model.clone();
        let m = &*model;
        let last = tokens.len().div_ceil(self.n_batch) - 1;
        let mut last_len = 0;
        #[cfg(feature = "gpu")]
        let mut readback = None;
        #[cfg(not(feature = "gpu"))]
        let readback = {
            let _ = defer;
            None
        };
        for (i, chunk) in tokens.chunks(self.n_batch).enumerate() {
            let want = if i == last { logits } else { Logits::None };
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            self.store_mut().make_room(chunk.len())?;
            #[cfg(feature = "gpu")]
            if let (Some(g), Some(st)) = (&m.gpu, &mut self.gpu) {
                use crate::backend::gpu::forward::{forward, forward_submit};
                if defer && i == last {
                    readback = Some(forward_submit(g, st, &m.file, chunk)?);
                } else {
                    forward(g, st, &m.file, chunk, want)?;
                }
                self.tokens.extend_from_slice(chunk);
                last_len = chunk.len();
                continue;
            }
            forward(
                &m.config,
                &m.weights,
                &m.file,
                &m.pool,
                chunk,
                &mut self.kv,
                &mut self.scratch,
                want,
                self.op_profile.as_mut(),
            )?;
            self.tokens.extend_from_slice(chunk);
            last_len = chunk.len();
        }
        Ok((last_len, readback))
    }

    /// Run `f` on the backend of this session (its KV cache and buffers), outside of any
    /// forward pass: for the backend-ops test, which feeds every backend the same inputs
    /// op by op. Not a stable API.
    #[doc(hidden)]
    pub fn with_backend<R>(
        &mut self,
        f: impl FnOnce(&mut dyn crate::backend::Backend) -> Result<R>,
    ) -> Result<R> {
        let model = self.model.clone();
        let m = &*model;
        #[cfg(feature = "gpu")]
        if let (Some(g), Some(st)) = (&m.gpu, &mut self.gpu) {
            let r = f(&mut crate::backend::gpu::GpuBackend::new(g, st, &m.file));
            st.kv_mut().abort();
            return r;
        }
        let mut b = crate::backend::cpu::exec::CpuBackend::new(
            &m.config,
            &m.weights,
            &m.file,
            &m.pool,
            &mut self.kv,
            &mut self.scratch,
        );
        let r = f(&mut b);
        self.kv.abort();
        r
    }

    /// Tokenize `prompt`, ingest it, and generate up to `max_tokens`, calling `on_piece`
    /// with each piece of text (always whole UTF-8 code points). Returning
    /// `ControlFlow::Break` from the callback stops generation normally.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
        on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerateStats> {
        let room = self.prompt_room(self.context_tokens().len());
        let ids = (self.model.tokenizer).encode_bounded(
            prompt,
            params.add_special,
            params.parse_special,
            room,
        )?;
        self.generate_tokens(&ids, params, on_piece)
    }

    /// [`Session::generate`] from prompt token ids. A pending token from the previous
    /// generation goes in first. `prompt` may be empty when there is a pending token
    /// (continue the text where it stopped).
    pub fn generate_tokens(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerateStats> {
        self.cancel.reset();
        self.generate_uncleared(prompt, params, on_piece)
    }

    /// [`Session::generate_tokens`] without clearing the cancel token first (for callers
    /// that cleared it earlier and did work that a cancel must also stop, e.g. `chat`).
    fn generate_uncleared(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        mut on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerateStats> {
        self.generated = 0;
        params.sampling.validate()?;
        if params.stop.iter().any(|s| s.is_empty()) {
            return Err(Error::invalid("a stop string is empty"));
        }
        let mut input = Vec::with_capacity(prompt.len() + 1);
        input.extend(self.pending);
        input.extend_from_slice(prompt);
        if input.is_empty() {
            return Err(Error::invalid("the prompt is empty"));
        }
        let model = self.model.clone();
        let tok = &model.tokenizer;
        let mut sampler = Sampler::new(params.sampling.clone(), model.config.n_vocab);
        let mut guide = match &params.constraint {
            Some(c) => Some(Guide::new(&model, c)?),
            None => None,
        };
        let t0 = Instant::now();
        let mut next = {
            let pending = self.pending.take();
            let before = self.tokens.len();
            // The first mask is computed while the prompt runs.
            let (r, mask) = match &mut guide {
                Some(g) => g.overlapped(|| self.eval_raw(&input, Logits::Last).map(|_| ())),
                None => (self.eval_raw(&input, Logits::Last).map(|_| ()), Ok(())),
            };
            if let Err(e) = r.and(mask) {
                if self.tokens.len() == before {
                    self.pending = pending; // nothing went in: the context is unchanged
                }
                return Err(e);
            }
            let logits = self.last_logits(model.config.n_vocab);
            let mask = guide.as_ref().map(|g| g.mask());
            match sampler.sample_masked(logits, &input, mask) {
                Some(t) => t,
                None => return Err(guide.as_ref().map_or_else(dead_end, Guide::dead_end)),
            }
        };
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let mut out = Vec::with_capacity(params.max_tokens.min(4096));
        let mut dec = StreamDecoder::new();
        let mut stopper = StopMatcher::new(&params.stop);
        let mut stop = StopReason::MaxTokens;
        while out.len() < params.max_tokens {
            if tok.is_eog(next) {
                stop = StopReason::EndOfGeneration;
                break;
            }
            let full = self.store().params().overflow == Overflow::Error;
            if full && self.kv_len() >= self.n_ctx() {
                // No room for the token: it is neither streamed nor kept.
                return Err(Error::ContextFull(format!(
                    "the context of {} tokens is full after {} generated tokens",
                    self.n_ctx(),
                    out.len()
                )));
            }
            out.push(next);
            self.generated = out.len();
            self.pending = Some(next);
            // A complete output ends the generation (as an end-of-generation token would).
            let complete = match &mut guide {
                Some(g) => g.commit(next)?,
                None => false,
            };
            let piece = dec.push(tok.token_bytes(next));
            if !piece.is_empty() {
                let (text, hit) = stopper.push(piece);
                if !text.is_empty() && on_piece(text).is_break() {
                    stop = StopReason::Callback;
                    break;
                }
                if hit {
                    stop = StopReason::StopString;
                    break;
                }
            }
            if complete {
                stop = StopReason::EndOfGeneration;
                break;
            }
            if out.len() == params.max_tokens {
                break;
            }
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            match &mut guide {
                Some(g) => {
                    // The next mask is computed while the token runs through the model.
                    let (r, mask) =
                        g.overlapped(|| self.eval_raw(&[next], Logits::Last).map(|_| ()));
                    r?;
                    self.pending = None;
                    mask?;
                }
                None => {
                    self.eval_raw(&[next], Logits::Last)?;
                    self.pending = None;
                }
            }
            let logits = self.last_logits(model.config.n_vocab);
            let mask = guide.as_ref().map(|g| g.mask());
            next = match sampler.sample_masked(logits, &self.tokens, mask) {
                Some(t) => t,
                None => return Err(guide.as_ref().map_or_else(dead_end, Guide::dead_end)),
            };
        }
        if !matches!(stop, StopReason::Callback | StopReason::StopString) {
            // Bytes of an unfinished code point, then text held back for a stop string.
            let tail = dec.finish();
            let (text, hit) = stopper.push(&tail);
            if hit {
                stop = StopReason::StopString;
            }
            let mut rest = text.to_string();
            if !hit {
                rest.push_str(stopper.finish());
            }
            if !rest.is_empty() {
                let _ = on_piece(&rest);
            }
        }
        Ok(GenerateStats {
            prompt_tokens: input.len(),
            prompt_ms,
            generated_tokens: out.len(),
            generate_ms: t1.elapsed().as_secs_f64() * 1e3,
            stop,
            tokens: out,
            mask_ms: guide.as_ref().map_or(0.0, Guide::mask_ms),
        })
    }
}

/// A GPU read-back left for the caller to await ([`Session::eval_submit`]).
#[cfg(feature = "gpu")]
type Deferred = Option<crate::backend::gpu::Readback>;
#[cfg(not(feature = "gpu"))]
type Deferred = Option<std::convert::Infallible>;

/// A draw without candidates (only a constrained draw can have none).
fn dead_end() -> Error {
    Error::Internal("the sampler had no candidate token".into())
}
