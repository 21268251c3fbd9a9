//! The wasm-bindgen classes (wasm32 only): `ModelLoader`, `Model`, `Session`.

use std::sync::Arc;

use suanpan::chat::ChatMessage;
use suanpan::clock::Instant;
use suanpan::format::GgufFile;
use suanpan::model::Logits;
use suanpan::sample::Sampler;
use suanpan::tokenizer::StreamDecoder;
use suanpan::{BackendKind, ModelParams, SamplingParams, SessionParams};
use wasm_bindgen::prelude::*;

/// The runtime's error as a JS exception (`Error` with the runtime's message).
fn js(e: suanpan::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A model file arriving in pieces (a `fetch` body, a `File` stream): the bytes go
/// straight into wasm memory, so the page never holds a second whole copy.
#[wasm_bindgen]
pub struct ModelLoader {
    bytes: Vec<u8>,
}

#[wasm_bindgen]
impl ModelLoader {
    /// A loader expecting about `expected` bytes (0 when unknown; only reserves memory).
    #[wasm_bindgen(constructor)]
    pub fn new(expected: f64) -> Result<ModelLoader, JsError> {
        let mut bytes = Vec::new();
        if expected > 0.0 {
            bytes.try_reserve_exact(expected as usize).map_err(|_| {
                JsError::new(&format!(
                    "cannot reserve {:.0} MB of WebAssembly memory for the model",
                    expected / 1e6
                ))
            })?;
        }
        Ok(ModelLoader { bytes })
    }

    /// Append the next piece of the file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsError> {
        self.bytes.try_reserve(chunk.len()).map_err(|_| {
            JsError::new(&format!(
                "out of WebAssembly memory after {:.0} MB of the model (the browser's \
                 limit is 4 GB per page, often less)",
                self.bytes.len() as f64 / 1e6
            ))
        })?;
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> f64 {
        self.bytes.len() as f64
    }

    /// Parse and prepare the model (CPU backend, one thread). Consumes the loader.
    pub fn finish(self) -> Result<Model, JsError> {
        let file = GgufFile::from_bytes(self.bytes).map_err(js)?;
        let params = ModelParams {
            n_threads: 1,
            backend: BackendKind::Cpu,
            ..Default::default()
        };
        let model = suanpan::Model::from_file(file, &params).map_err(js)?;
        Ok(Model {
            model: Arc::new(model),
        })
    }
}

/// A loaded model (immutable; sessions hold the state).
#[wasm_bindgen]
pub struct Model {
    model: Arc<suanpan::Model>,
}

#[wasm_bindgen]
impl Model {
    /// Load a whole GGUF image at once (`Uint8Array`; copied into wasm memory).
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Model, JsError> {
        ModelLoader { bytes }.finish()
    }

    /// Which backend runs it and with which kernels, e.g. `cpu (scalar, lut simd128, 1 threads)`.
    #[wasm_bindgen(js_name = backendName)]
    pub fn backend_name(&self) -> String {
        self.model.backend_name()
    }

    /// Facts about the model as JSON: arch, params, vocab, trained context, load time.
    pub fn describe(&self) -> String {
        let m = &self.model;
        let c = m.config();
        serde_json::json!({
            "arch": c.arch_name,
            "n_params": m.n_params(),
            "n_vocab": c.n_vocab,
            "n_ctx_train": c.n_ctx_train,
            "load_ms": m.load_ms(),
            "file_bytes": m.file().bytes().len(),
            "has_chat_template": m.effective_chat_template().is_some(),
        })
        .to_string()
    }

    /// Token ids of `text` (with the model's BOS if it adds one; special-token text kept
    /// as text).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.model.tokenizer().encode(text, true, false).map_err(js)
    }

    /// The conversation (JSON `[{"role", "content"}, …]`) rendered with the model's chat
    /// template, ending where the assistant's reply begins.
    #[wasm_bindgen(js_name = applyChatTemplate)]
    pub fn apply_chat_template(&self, messages_json: &str) -> Result<String, JsError> {
        let msgs = parse_messages(messages_json)?;
        let Some(t) = self.model.effective_chat_template() else {
            return Err(JsError::new("the model has no chat template"));
        };
        t.render(&msgs, true).map_err(js)
    }

    /// A new session with a context of `n_ctx` tokens (0: the model's, capped at 4096).
    #[wasm_bindgen(js_name = createSession)]
    pub fn create_session(&self, n_ctx: usize) -> Result<Session, JsError> {
        let s = self
            .model
            .session(&SessionParams {
                n_ctx,
                ..Default::default()
            })
            .map_err(js)?;
        Ok(Session { s, gen: None })
    }
}

fn parse_messages(json: &str) -> Result<Vec<ChatMessage>, JsError> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| JsError::new(&format!("messages are not JSON: {e}")))?;
    let arr = v
        .as_array()
        .ok_or_else(|| JsError::new("messages must be an array"))?;
    arr.iter()
        .map(|m| {
            let field = |k: &str| {
                m.get(k)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| JsError::new(&format!("a message needs a string \"{k}\": {m}")))
            };
            Ok(ChatMessage::new(field("role")?, field("content")?))
        })
        .collect()
}

/// Generation settings from the JS options object (as JSON; absent keys: defaults).
fn parse_options(json: &str) -> Result<(usize, SamplingParams), JsError> {
    let v: serde_json::Value = if json.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(json).map_err(|e| JsError::new(&format!("bad options: {e}")))?
    };
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let mut p = SamplingParams::default();
    if let Some(t) = f("temperature") {
        p.temperature = t as f32;
    }
    if let Some(x) = f("topK") {
        p.top_k = x as usize;
    }
    if let Some(x) = f("topP") {
        p.top_p = x as f32;
    }
    if let Some(x) = f("minP") {
        p.min_p = x as f32;
    }
    if let Some(x) = f("repeatPenalty") {
        p.repeat_penalty = x as f32;
    }
    if let Some(x) = f("seed") {
        p.seed = x as u64;
    }
    p.validate().map_err(js)?;
    let max_tokens = f("maxTokens").map_or(256, |x| x as usize);
    Ok((max_tokens, p))
}

/// One generation in progress.
struct Gen {
    sampler: Sampler,
    dec: StreamDecoder,
    /// The token drawn and not yet handed out.
    next: Option<u32>,
    out: Vec<u32>,
    max_tokens: usize,
    prompt_tokens: usize,
    prompt_ms: f64,
    decode_start: Instant,
    decode_ms: f64,
    /// Top two logits of every draw so far: (id, logit) each.
    top2: Vec<[(u32, f32); 2]>,
    stop: &'static str,
}

/// The two largest logits (ties: the lower id first, as greedy picks).
fn top2(logits: &[f32]) -> [(u32, f32); 2] {
    let mut best = [(0u32, f32::NEG_INFINITY); 2];
    for (i, &l) in logits.iter().enumerate() {
        if l > best[0].1 {
            best[1] = best[0];
            best[0] = (i as u32, l);
        } else if l > best[1].1 {
            best[1] = (i as u32, l);
        }
    }
    best
}

/// A conversation or completion state (KV cache) over a model.
#[wasm_bindgen]
pub struct Session {
    s: suanpan::Session,
    gen: Option<Gen>,
}

#[wasm_bindgen]
impl Session {
    /// Start a completion of `prompt` from an empty context (as `suanpan run`: the
    /// model's BOS added, special-token text kept as text): evaluates the prompt and draws
    /// the first token. `options` is JSON: maxTokens, temperature, topK, topP, minP,
    /// repeatPenalty, seed.
    #[wasm_bindgen(js_name = startPrompt)]
    pub fn start_prompt(&mut self, prompt: &str, options: &str) -> Result<(), JsError> {
        self.gen = None;
        self.s.reset();
        let ids = self
            .s
            .model()
            .tokenizer()
            .encode(prompt, true, false)
            .map_err(js)?;
        self.start(&ids, options)
    }

    /// Start the assistant's reply to a conversation (JSON `[{"role", "content"}, …]`,
    /// the whole conversation each turn): rendered with the chat template; the prefix the
    /// context already holds is kept.
    #[wasm_bindgen(js_name = startChat)]
    pub fn start_chat(&mut self, messages_json: &str, options: &str) -> Result<(), JsError> {
        self.gen = None;
        let msgs = parse_messages(messages_json)?;
        let ids = self.s.chat_tokens(&msgs).map_err(js)?;
        let ctx = self.s.tokens();
        let mut keep = ctx.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        if keep == ids.len() {
            keep -= 1; // one token must go through the model to give logits
        }
        if self.s.truncate(keep).is_err() {
            self.s.reset();
        }
        let have = self.s.tokens().len();
        self.start(&ids[have..], options)
    }

    fn start(&mut self, ids: &[u32], options: &str) -> Result<(), JsError> {
        let (max_tokens, params) = parse_options(options)?;
        if ids.is_empty() {
            return Err(JsError::new("the prompt is empty"));
        }
        let n_vocab = self.s.model().config().n_vocab;
        let mut sampler = Sampler::new(params, n_vocab);
        let t0 = Instant::now();
        // Copied (0.2 MB) so the context can be read beside them for the sampler.
        let logits = self.s.eval(ids, Logits::Last).map_err(js)?.to_vec();
        let top2 = top2(&logits);
        let next = sampler.sample(&logits, self.s.tokens());
        self.gen = Some(Gen {
            sampler,
            dec: StreamDecoder::new(),
            next: Some(next),
            out: Vec::new(),
            max_tokens,
            prompt_tokens: ids.len(),
            prompt_ms: t0.elapsed().as_secs_f64() * 1e3,
            decode_start: Instant::now(),
            decode_ms: 0.0,
            top2: vec![top2],
            stop: "",
        });
        Ok(())
    }

    /// Hand out the next token's text and run it through the model (drawing the one after):
    /// a string of whole UTF-8 code points (possibly empty while a code point is split over
    /// tokens), or `undefined` when the generation is over (end of generation or
    /// `maxTokens`).
    pub fn step(&mut self) -> Result<Option<String>, JsError> {
        let Some(g) = self.gen.as_mut() else {
            return Err(JsError::new("no generation started"));
        };
        let Some(t) = g.next.take() else {
            return Ok(None);
        };
        let model = self.s.model().clone();
        let tok = model.tokenizer();
        if tok.is_eog(t) || g.out.len() >= g.max_tokens {
            g.stop = if tok.is_eog(t) { "eog" } else { "max_tokens" };
            let tail = g.dec.finish();
            g.decode_ms = g.decode_start.elapsed().as_secs_f64() * 1e3;
            return Ok((!tail.is_empty()).then_some(tail));
        }
        g.out.push(t);
        let piece = g.dec.push(tok.token_bytes(t)).to_string();
        if g.out.len() < g.max_tokens {
            let logits = match self.s.eval(&[t], Logits::Last) {
                Ok(l) => l.to_vec(),
                Err(e) => {
                    g.stop = "error";
                    return Err(js(e));
                }
            };
            g.top2.push(top2(&logits));
            g.next = Some(g.sampler.sample(&logits, self.s.tokens()));
        } else {
            g.next = Some(t); // ends at the next call (max_tokens reached)
        }
        g.decode_ms = g.decode_start.elapsed().as_secs_f64() * 1e3;
        Ok(Some(piece))
    }

    /// Ids of the tokens handed out by the current generation.
    pub fn generated(&self) -> Vec<u32> {
        self.gen.as_ref().map(|g| g.out.clone()).unwrap_or_default()
    }

    /// `[id1, logit1, id2, logit2]` per draw of the current generation: the two best
    /// logits (for near-tie checks against other backends).
    pub fn top2(&self) -> Vec<f64> {
        let Some(g) = &self.gen else {
            return Vec::new();
        };
        g.top2
            .iter()
            .flat_map(|&[(a, la), (b, lb)]| [a as f64, la as f64, b as f64, lb as f64])
            .collect()
    }

    /// Statistics of the current generation as JSON (tokens, ms, tok/s, stop reason).
    pub fn stats(&self) -> String {
        let Some(g) = &self.gen else {
            return "null".into();
        };
        let n = g.out.len();
        let tps = |k: usize, ms: f64| if ms > 0.0 { k as f64 / ms * 1e3 } else { 0.0 };
        serde_json::json!({
            "prompt_tokens": g.prompt_tokens,
            "prompt_ms": g.prompt_ms,
            "prompt_tps": tps(g.prompt_tokens, g.prompt_ms),
            "generated_tokens": n,
            "decode_ms": g.decode_ms,
            // The first token came from the prompt pass: n tokens, n − 1 decode steps.
            "decode_tps": tps(n.saturating_sub(1), g.decode_ms),
            "stop": g.stop,
        })
        .to_string()
    }

    /// Tokens in the context.
    #[wasm_bindgen(js_name = contextLength)]
    pub fn context_length(&self) -> usize {
        self.s.tokens().len()
    }

    /// Forget the conversation.
    pub fn reset(&mut self) {
        self.gen = None;
        self.s.reset();
    }
}
