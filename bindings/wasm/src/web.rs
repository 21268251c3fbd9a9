//! The wasm-bindgen classes (wasm32 only): `ModelLoader` and `Model`; the backend choice
//! is in [`crate::backend`], `Session` in [`crate::session`].

use std::sync::Arc;

use suanpan::chat::ChatMessage;
use suanpan::format::GgufFile;
use suanpan::{BackendKind, ModelParams, SessionParams};
use wasm_bindgen::prelude::*;

use crate::backend::{open_model, LoadOptions};
use crate::session::Session;

/// The runtime's error as a JS exception (`Error` with the runtime's message).
pub(crate) fn js(e: suanpan::Error) -> JsError {
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

    /// Parse and prepare the model on the wasm CPU backend (one thread). Consumes the
    /// loader.
    pub fn finish(self) -> Result<Model, JsError> {
        let file = GgufFile::from_bytes(self.bytes).map_err(js)?;
        let params = ModelParams {
            n_threads: 1,
            backend: BackendKind::Cpu,
            ..Default::default()
        };
        let model = suanpan::Model::from_file(file, &params).map_err(js)?;
        Ok(Model::new(model, "backend=cpu was asked for".into()))
    }

    /// Parse and prepare the model on the backend `options` (JSON) names: `backend`
    /// `"webgpu"` (the GPU backend on the page's WebGPU adapter; an error when there is
    /// none or the model exceeds its limits), `"cpu"` (wasm CPU) or `"auto"` (WebGPU when
    /// it has an adapter that fits the model, else the CPU with the reason); `maxBinding`
    /// caps the adapter's storage-binding limit in bytes (to check a model against a
    /// smaller device). A `Promise` of a [`Model`]; consumes the loader.
    #[wasm_bindgen(js_name = finishOn)]
    pub fn finish_on(self, options: &str) -> Result<js_sys::Promise, JsError> {
        let opts = LoadOptions::parse(options)?;
        let bytes = self.bytes;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let m = open_model(bytes, &opts).await.map_err(JsValue::from)?;
            Ok(JsValue::from(m))
        }))
    }
}

/// A loaded model (immutable; sessions hold the state).
#[wasm_bindgen]
pub struct Model {
    model: Arc<suanpan::Model>,
    /// Why this backend: what was asked for, or why WebGPU was not taken.
    why: String,
}

impl Model {
    pub(crate) fn new(model: suanpan::Model, why: String) -> Model {
        Model {
            model: Arc::new(model),
            why,
        }
    }
}

#[wasm_bindgen]
impl Model {
    /// Load a whole GGUF image at once (`Uint8Array`; copied into wasm memory) on the wasm
    /// CPU backend.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Model, JsError> {
        ModelLoader { bytes }.finish()
    }

    /// Which backend runs it and with which kernels, e.g. `cpu (scalar, lut simd128, 1
    /// threads)` or `gpu (SwiftShader …, BrowserWebGpu, …)`.
    #[wasm_bindgen(js_name = backendName)]
    pub fn backend_name(&self) -> String {
        self.model.backend_name()
    }

    /// The backend in use as JSON: `kind` (`"webgpu"` or `"cpu"`), `name`
    /// ([`Self::backend_name`]), `why` (what was asked for, or why not WebGPU), and for
    /// WebGPU `adapter` (name, shader_f16, subgroups, max_binding, max_buffer).
    #[wasm_bindgen(js_name = backendInfo)]
    pub fn backend_info(&self) -> String {
        let m = &self.model;
        let adapter = m.gpu().map(|g| {
            let d = g.device();
            let c = d.caps();
            serde_json::json!({
                "name": d.adapter_name(),
                "shader_f16": c.shader_f16,
                "subgroups": c.subgroups,
                "max_binding": c.max_binding,
                "max_buffer": c.max_buffer,
                "weight_bytes": g.weight_bytes(),
            })
        });
        serde_json::json!({
            "kind": if m.on_gpu() { "webgpu" } else { "cpu" },
            "name": m.backend_name(),
            "why": self.why,
            "adapter": adapter,
        })
        .to_string()
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
        Ok(Session::new(s))
    }
}

pub(crate) fn parse_messages(json: &str) -> Result<Vec<ChatMessage>, JsError> {
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
