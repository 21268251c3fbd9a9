//! Which backend runs a model in the page: WebGPU (the runtime's GPU backend over wgpu's
//! `webgpu` backend: the same WGSL, no f16 needed) or the wasm CPU backend, and why.
//!
//! Opening WebGPU is asynchronous (`requestAdapter`, `requestDevice` are promises), so
//! this is awaited before the model is built on the device.

use suanpan::backend::gpu::{GpuDevice, GpuOptions};
use suanpan::format::GgufFile;
use suanpan::{BackendKind, ModelParams};
use wasm_bindgen::prelude::*;

use crate::web::{js, Model};

/// The backend asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    WebGpu,
    Cpu,
    Auto,
}

/// `finishOn`'s options.
#[derive(Clone, Debug)]
pub(crate) struct LoadOptions {
    pub(crate) backend: Want,
    /// Cap on the adapter's storage-binding limit, bytes.
    pub(crate) max_binding: Option<u64>,
}

impl LoadOptions {
    /// From JSON `{"backend": "webgpu"|"cpu"|"auto", "maxBinding": bytes}` (absent keys:
    /// auto, the adapter's limit).
    pub(crate) fn parse(json: &str) -> Result<LoadOptions, JsError> {
        let v: serde_json::Value = if json.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(json)
                .map_err(|e| JsError::new(&format!("bad load options: {e}")))?
        };
        let backend = match v.get("backend").and_then(|b| b.as_str()).unwrap_or("auto") {
            "webgpu" | "gpu" => Want::WebGpu,
            "cpu" => Want::Cpu,
            "auto" => Want::Auto,
            other => {
                return Err(JsError::new(&format!(
                    "backend {other:?}: use \"webgpu\", \"cpu\" or \"auto\""
                )))
            }
        };
        let max_binding = match v.get("maxBinding") {
            None | Some(serde_json::Value::Null) => None,
            Some(x) => match x.as_f64() {
                Some(b) if b >= 4.0 && b.fract() == 0.0 => Some(b as u64),
                _ => {
                    return Err(JsError::new(&format!(
                        "maxBinding {x}: give a whole number of bytes, at least 4"
                    )))
                }
            },
        };
        Ok(LoadOptions {
            backend,
            max_binding,
        })
    }
}

/// Parse `bytes` and build the model on the backend `o` asks for.
pub(crate) async fn open_model(bytes: Vec<u8>, o: &LoadOptions) -> Result<Model, JsError> {
    let file = GgufFile::from_bytes(bytes).map_err(js)?;
    let cpu = ModelParams {
        n_threads: 1,
        backend: BackendKind::Cpu,
        ..Default::default()
    };
    if o.backend == Want::Cpu {
        let m = suanpan::Model::from_file(file, &cpu).map_err(js)?;
        return Ok(Model::new(m, "backend=cpu was asked for".into()));
    }
    let gopts = GpuOptions {
        adapter: None,
        // In the page the adapter is whatever the browser gives (SwiftShader included).
        hardware_only: false,
        max_binding: o.max_binding,
    };
    let dev = match GpuDevice::open_async(&gopts).await {
        Ok(d) => d,
        Err(e) if o.backend == Want::Auto => {
            let m = suanpan::Model::from_file(file, &cpu).map_err(js)?;
            return Ok(Model::new(m, format!("auto: no WebGPU ({e})")));
        }
        Err(e) => return Err(js(e)),
    };
    let params = ModelParams {
        backend: if o.backend == Want::Auto {
            BackendKind::Auto
        } else {
            BackendKind::Gpu
        },
        ..cpu
    };
    let m = suanpan::Model::from_file_with_device(file, &params, dev.clone()).map_err(js)?;
    // Errors the browser reported while the weights went up (out of memory, validation).
    if m.on_gpu() {
        dev.check_async().await.map_err(js)?;
    }
    let why = match (m.backend_note(), o.backend) {
        (Some(note), _) => note.to_string(),
        (None, Want::Auto) => "auto: the WebGPU adapter fits the model".into(),
        (None, _) => "backend=webgpu was asked for".into(),
    };
    Ok(Model::new(m, why))
}
