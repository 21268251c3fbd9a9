//! A conversation with a model: it owns a KV cache, scratch buffers and a sampler, ingests
//! prompts in batches and streams generated text as whole UTF-8 code points.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::kv::{KvCache, KvParams, Overflow};
use crate::model::graph::{forward, Logits, Scratch};
use crate::model::Model;
use crate::sample::{Sampler, SamplingParams};
use crate::tokenizer::StreamDecoder;

/// Stops a running generation from any thread; the session stays usable afterwards.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask the generation to stop at the next token boundary.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// Clear a cancellation (done at the start of each generation).
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Shape of a session.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Context length in tokens (0 = the model's trained length, capped at 4096; with a KV
    /// budget, as many tokens as the budget buys up to the trained length).
    pub n_ctx: usize,
    /// Most tokens per forward pass while ingesting a prompt.
    pub n_batch: usize,
    /// Keep logits for every token of a batch (perplexity, scoring). Costs n_batch × vocab floats.
    pub all_logits: bool,
    /// KV cache mode (f16 or quantized), memory budget and overflow policy.
    pub kv: KvParams,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            n_ctx: 0,
            n_batch: 512,
            all_logits: false,
            kv: KvParams::default(),
        }
    }
}

/// What one generation does.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Add BOS/EOS around the prompt as the model's metadata says.
    pub add_special: bool,
    /// Let special-token text in the prompt (e.g. `<|im_start|>`) become special tokens.
    pub parse_special: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            add_special: true,
            parse_special: false,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The callback returned `ControlFlow::Break`.
    Callback,
}

/// Counts and timings of one generation.
#[derive(Clone, Debug)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    pub generated_tokens: usize,
    pub generate_ms: f64,
    pub stop: StopReason,
    /// The generated token ids.
    pub tokens: Vec<u32>,
}

impl GenerateStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / (self.prompt_ms / 1e3).max(1e-9)
    }
    /// Decode speed: tokens after the first (whose logits came from the prompt pass).
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / (self.generate_ms / 1e3).max(1e-9)
    }
}

/// A model plus the state of one conversation.
pub struct Session {
    model: Arc<Model>,
    kv: KvCache,
    scratch: Scratch,
    tokens: Vec<u32>,
    n_batch: usize,
    cancel: CancelToken,
    /// KV cache and scratch on the GPU when the model runs there (then `kv` and `scratch`
    /// are empty placeholders).
    #[cfg(feature = "gpu")]
    gpu: Option<crate::backend::gpu::GpuState>,
}

impl Model {
    /// Start a session on a shared model.
    pub fn session(self: &Arc<Self>, params: &SessionParams) -> Result<Session> {
        Session::new(self.clone(), params)
    }
}

impl Session {
    pub fn new(model: Arc<Model>, params: &SessionParams) -> Result<Session> {
        let c = model.config();
        if params.n_ctx > c.n_ctx_train {
            return Err(Error::invalid(format!(
                "context of {} tokens exceeds the {} the model was trained for",
                params.n_ctx, c.n_ctx_train
            )));
        }
        if params.n_batch == 0 || params.n_batch > 8192 {
            return Err(Error::invalid(format!(
                "batch size {} (1..=8192)",
                params.n_batch
            )));
        }
        // The GPU backend keeps its own f16 cache; the CPU cache is then a 1-token placeholder.
        let on_gpu = model.on_gpu();
        if on_gpu
            && (params.kv.mode != crate::kv::KvMode::F16
                || params.kv.budget.is_some()
                || params.kv.overflow != Overflow::Error)
        {
            return Err(Error::Backend(
                "the GPU backend keeps an f16 KV cache: quantized modes, budgets and sliding \
                 windows need the CPU backend (--backend cpu)"
                    .into(),
            ));
        }
        let kv = KvCache::for_model(
            c,
            model.weights.rope_freqs.as_deref(),
            &params.kv,
            if on_gpu { 1 } else { params.n_ctx },
            if on_gpu { 1 } else { params.n_batch },
            model.n_threads(),
        )?;
        let (n_ctx, n_batch) = if on_gpu {
            let n_ctx = match params.n_ctx {
                0 => c.n_ctx_train.min(4096),
                n => n,
            };
            (n_ctx, params.n_batch.min(n_ctx))
        } else {
            (kv.capacity(), kv.n_batch())
        };
        #[cfg(feature = "gpu")]
        let gpu = match model.gpu() {
            Some(g) => Some(crate::backend::gpu::GpuState::new(
                g,
                n_batch,
                n_ctx,
                params.all_logits,
                false,
            )?),
            None => None,
        };
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
            n_batch,
            cancel: CancelToken::new(),
            #[cfg(feature = "gpu")]
            gpu,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tokens fed since the last reset (generated ones included). When the KV window slid,
    /// only the sinks and the last `kv().len() - sinks` of them are still in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Most tokens one forward pass takes (prompts are split into batches of this size).
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Context capacity in tokens.
    pub fn n_ctx(&self) -> usize {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return g.n_ctx();
        }
        self.kv.capacity()
    }

    /// The KV cache (mode, fill, positions, bytes); a placeholder when the GPU runs the model.
    pub fn kv(&self) -> &KvCache {
        &self.kv
    }

    /// Positions in the KV cache.
    fn kv_len(&self) -> usize {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return g.len();
        }
        self.kv.len()
    }

    /// Bytes held by the KV cache (in device memory when the model runs on the GPU).
    pub fn kv_bytes(&self) -> usize {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return g.kv_bytes() as usize;
        }
        self.kv.bytes()
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
        let st = crate::backend::gpu::GpuState::new(g, self.n_batch, self.n_ctx(), false, on)?;
        let profiling = st.profiling();
        self.gpu = Some(st);
        self.tokens.clear();
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

    /// A handle that cancels this session's generation from any thread.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Forget the conversation.
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.kv.reset();
        #[cfg(feature = "gpu")]
        if let Some(g) = &mut self.gpu {
            g.set_len(0);
        }
    }

    /// Append `tokens` to the context and return logits: the last token's for
    /// [`Logits::Last`], every token's for [`Logits::All`] (at most one batch of tokens).
    pub fn eval(&mut self, tokens: &[u32], logits: Logits) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(Error::invalid("nothing to evaluate"));
        }
        if logits == Logits::All && tokens.len() > self.n_batch {
            return Err(Error::invalid(format!(
                "all-token logits need at most {} tokens per call",
                self.n_batch
            )));
        }
        #[cfg(feature = "gpu")]
        if self.gpu.is_some() && self.kv_len() + tokens.len() > self.n_ctx() {
            return Err(Error::ContextFull(format!(
                "{} tokens in context + {} new exceed the context size {}",
                self.kv_len(),
                tokens.len(),
                self.n_ctx()
            )));
        }
        // Refusing happens before anything is ingested; sliding happens per batch.
        if !self.model.on_gpu() && self.kv.params().overflow == Overflow::Error {
            self.kv.make_room(tokens.len())?;
        }
        let m = &*self.model;
        let last = tokens.len().div_ceil(self.n_batch) - 1;
        let mut last_len = 0;
        for (i, chunk) in tokens.chunks(self.n_batch).enumerate() {
            let want = if i == last { logits } else { Logits::None };
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            #[cfg(feature = "gpu")]
            if let (Some(g), Some(st)) = (&m.gpu, &mut self.gpu) {
                crate::backend::gpu::forward::forward(g, st, chunk, want)?;
                self.tokens.extend_from_slice(chunk);
                last_len = chunk.len();
                continue;
            }
            self.kv.make_room(chunk.len())?;
            forward(
                &m.config,
                &m.weights,
                &m.file,
                &m.pool,
                chunk,
                &mut self.kv,
                &mut self.scratch,
                want,
            )?;
            self.tokens.extend_from_slice(chunk);
            last_len = chunk.len();
        }
        let n = match logits {
            Logits::None => 0,
            Logits::Last => m.config.n_vocab,
            Logits::All => last_len * m.config.n_vocab,
        };
        Ok(self.last_logits(n))
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
        let ids = self
            .model
            .tokenizer
            .encode(prompt, params.add_special, params.parse_special)?;
        self.generate_tokens(&ids, params, on_piece)
    }

    /// [`Session::generate`] from prompt token ids.
    pub fn generate_tokens(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        mut on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerateStats> {
        params.sampling.validate()?;
        if prompt.is_empty() {
            return Err(Error::invalid("the prompt is empty"));
        }
        self.cancel.reset();
        let model = self.model.clone();
        let tok = &model.tokenizer;
        let mut sampler = Sampler::new(params.sampling.clone(), model.config.n_vocab);
        let t0 = Instant::now();
        let mut next = {
            let logits = self.eval(prompt, Logits::Last)?;
            sampler.sample(logits, prompt)
        };
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let mut out = Vec::with_capacity(params.max_tokens.min(4096));
        let mut dec = StreamDecoder::new();
        let mut stop = StopReason::MaxTokens;
        while out.len() < params.max_tokens {
            if tok.is_eog(next) {
                stop = StopReason::EndOfGeneration;
                break;
            }
            out.push(next);
            let piece = dec.push(tok.token_bytes(next));
            if !piece.is_empty() && on_piece(piece).is_break() {
                stop = StopReason::Callback;
                break;
            }
            if out.len() == params.max_tokens {
                break;
            }
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            self.eval(&[next], Logits::Last)?;
            let logits = self.last_logits(model.config.n_vocab);
            next = sampler.sample(logits, &self.tokens);
        }
        let tail = dec.finish();
        if !tail.is_empty() && stop != StopReason::Callback {
            let _ = on_piece(&tail);
        }
        Ok(GenerateStats {
            prompt_tokens: prompt.len(),
            prompt_ms,
            generated_tokens: out.len(),
            generate_ms: t1.elapsed().as_secs_f64() * 1e3,
            stop,
            tokens: out,
        })
    }
}
