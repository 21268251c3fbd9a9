//! `Session`: generation, one token per call, on either backend. A step on WebGPU records
//! and submits the forward pass, then awaits the logits (the browser maps them only once
//! control returns to its event loop), so the methods that run the model return promises
//! and the session's state sits behind an `Rc<RefCell<…>>` that a pending step holds.

use std::cell::RefCell;
use std::rc::Rc;

use suanpan::clock::Instant;
use suanpan::model::Logits;
use suanpan::sample::Sampler;
use suanpan::tokenizer::StreamDecoder;
use suanpan::SamplingParams;
use wasm_bindgen::prelude::*;

use crate::web::{js, parse_messages};

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

/// The session and its generation: what a pending step holds.
struct Inner {
    s: suanpan::Session,
    gen: Option<Gen>,
}

type Shared = Rc<RefCell<Inner>>;

fn busy() -> JsError {
    JsError::new("this session is busy with another call (await it first)")
}

/// The last token's logits after `ids`: on the CPU at once, on WebGPU recorded and
/// submitted now and awaited (no borrow of the session is held while waiting).
async fn eval_last(inner: &Shared, ids: &[u32]) -> Result<Vec<f32>, JsError> {
    let pending = {
        let mut i = inner.try_borrow_mut().map_err(|_| busy())?;
        if !i.s.model().on_gpu() {
            return Ok(i.s.eval(ids, Logits::Last).map_err(js)?.to_vec());
        }
        i.s.eval_submit(ids).map_err(js)?
    };
    pending.f32s().await.map_err(js)
}

/// Evaluate the prompt `ids` and draw the first token.
async fn start(inner: Shared, ids: Vec<u32>, options: String) -> Result<JsValue, JsError> {
    let (max_tokens, params) = parse_options(&options)?;
    if ids.is_empty() {
        return Err(JsError::new("the prompt is empty"));
    }
    let n_vocab = {
        let i = inner.try_borrow().map_err(|_| busy())?;
        i.s.model().config().n_vocab
    };
    let mut sampler = Sampler::new(params, n_vocab);
    let t0 = Instant::now();
    let logits = eval_last(&inner, &ids).await?;
    let mut i = inner.try_borrow_mut().map_err(|_| busy())?;
    let top2 = top2(&logits);
    let next = sampler.sample(&logits, i.s.tokens());
    i.gen = Some(Gen {
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
    Ok(JsValue::UNDEFINED)
}

/// Hand out the next token's piece and run it through the model (see [`Session::step`]).
async fn step(inner: Shared) -> Result<JsValue, JsError> {
    let (t, piece) = {
        let mut guard = inner.try_borrow_mut().map_err(|_| busy())?;
        let Inner { s, gen } = &mut *guard;
        let Some(g) = gen.as_mut() else {
            return Err(JsError::new("no generation started"));
        };
        let Some(t) = g.next.take() else {
            return Ok(JsValue::UNDEFINED);
        };
        let model = s.model().clone();
        let tok = model.tokenizer();
        if tok.is_eog(t) || g.out.len() >= g.max_tokens {
            g.stop = if tok.is_eog(t) { "eog" } else { "max_tokens" };
            let tail = g.dec.finish();
            g.decode_ms = g.decode_start.elapsed().as_secs_f64() * 1e3;
            return Ok(if tail.is_empty() {
                JsValue::UNDEFINED
            } else {
                JsValue::from_str(&tail)
            });
        }
        g.out.push(t);
        let piece = g.dec.push(tok.token_bytes(t)).to_string();
        if g.out.len() >= g.max_tokens {
            g.next = Some(t); // ends at the next call (max_tokens reached)
            g.decode_ms = g.decode_start.elapsed().as_secs_f64() * 1e3;
            return Ok(JsValue::from_str(&piece));
        }
        (t, piece)
    };
    let logits = eval_last(&inner, &[t]).await;
    let mut guard = inner.try_borrow_mut().map_err(|_| busy())?;
    let Inner { s, gen } = &mut *guard;
    let Some(g) = gen.as_mut() else {
        return Err(JsError::new("the generation was reset during a step"));
    };
    let logits = match logits {
        Ok(l) => l,
        Err(e) => {
            g.stop = "error";
            return Err(e);
        }
    };
    g.top2.push(top2(&logits));
    g.next = Some(g.sampler.sample(&logits, s.tokens()));
    g.decode_ms = g.decode_start.elapsed().as_secs_f64() * 1e3;
    Ok(JsValue::from_str(&piece))
}

fn promise(
    f: impl std::future::Future<Output = Result<JsValue, JsError>> + 'static,
) -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(async move { f.await.map_err(JsValue::from) })
}

/// A conversation or completion state (KV cache) over a model.
#[wasm_bindgen]
pub struct Session {
    inner: Shared,
}

impl Session {
    pub(crate) fn new(s: suanpan::Session) -> Session {
        Session {
            inner: Rc::new(RefCell::new(Inner { s, gen: None })),
        }
    }
}

#[wasm_bindgen]
impl Session {
    /// Start a completion of `prompt` from an empty context (as `suanpan run`: the
    /// model's BOS added, special-token text kept as text): evaluates the prompt and draws
    /// the first token. `options` is JSON: maxTokens, temperature, topK, topP, minP,
    /// repeatPenalty, seed. A `Promise` (WebGPU awaits the logits).
    #[wasm_bindgen(js_name = startPrompt)]
    pub fn start_prompt(&self, prompt: &str, options: &str) -> Result<js_sys::Promise, JsError> {
        let ids = {
            let mut i = self.inner.try_borrow_mut().map_err(|_| busy())?;
            i.gen = None;
            i.s.reset();
            i.s.model()
                .tokenizer()
                .encode(prompt, true, false)
                .map_err(js)?
        };
        Ok(promise(start(self.inner.clone(), ids, options.to_string())))
    }

    /// Start the assistant's reply to a conversation (JSON `[{"role", "content"}, …]`,
    /// the whole conversation each turn): rendered with the chat template; the prefix the
    /// context already holds is kept. A `Promise`.
    #[wasm_bindgen(js_name = startChat)]
    pub fn start_chat(
        &self,
        messages_json: &str,
        options: &str,
    ) -> Result<js_sys::Promise, JsError> {
        let msgs = parse_messages(messages_json)?;
        let ids = {
            let mut i = self.inner.try_borrow_mut().map_err(|_| busy())?;
            i.gen = None;
            let ids = i.s.chat_tokens(&msgs).map_err(js)?;
            let ctx = i.s.tokens();
            let mut keep = ctx.iter().zip(&ids).take_while(|(a, b)| a == b).count();
            if keep == ids.len() {
                keep -= 1; // one token must go through the model to give logits
            }
            if i.s.truncate(keep).is_err() {
                i.s.reset();
            }
            let have = i.s.tokens().len();
            ids[have..].to_vec()
        };
        Ok(promise(start(self.inner.clone(), ids, options.to_string())))
    }

    /// Hand out the next token's text and run it through the model (drawing the one
    /// after): a `Promise` of a string of whole UTF-8 code points (possibly empty while a
    /// code point is split over tokens), or of `undefined` when the generation is over
    /// (end of generation or `maxTokens`).
    pub fn step(&self) -> js_sys::Promise {
        promise(step(self.inner.clone()))
    }

    /// Ids of the tokens handed out by the current generation.
    pub fn generated(&self) -> Vec<u32> {
        let Ok(i) = self.inner.try_borrow() else {
            return Vec::new();
        };
        i.gen.as_ref().map(|g| g.out.clone()).unwrap_or_default()
    }

    /// `[id1, logit1, id2, logit2]` per draw of the current generation: the two best
    /// logits (for near-tie checks against other backends).
    pub fn top2(&self) -> Vec<f64> {
        let Ok(i) = self.inner.try_borrow() else {
            return Vec::new();
        };
        let Some(g) = &i.gen else {
            return Vec::new();
        };
        g.top2
            .iter()
            .flat_map(|&[(a, la), (b, lb)]| [a as f64, la as f64, b as f64, lb as f64])
            .collect()
    }

    /// Statistics of the current generation as JSON (tokens, ms, tok/s, stop reason).
    pub fn stats(&self) -> String {
        let Ok(i) = self.inner.try_borrow() else {
            return "null".into();
        };
        let Some(g) = &i.gen else {
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
        self.inner.try_borrow().map_or(0, |i| i.s.tokens().len())
    }

    /// Forget the conversation.
    pub fn reset(&self) -> Result<(), JsError> {
        let mut i = self.inner.try_borrow_mut().map_err(|_| busy())?;
        i.gen = None;
        i.s.reset();
        Ok(())
    }
}
