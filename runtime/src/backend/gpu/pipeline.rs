//! Compute pipelines, compiled once and cached, keyed by kernel, data type, bit width and
//! device features.
//!
//! Every WGSL family in `shaders/` is compiled as `common.wgsl` + `<family>.wgsl` (WGSL has
//! no include). Variants of one entry point (weight type, LUT bits) are WGSL `override`
//! constants (`WTYPE`, `BITS`) fixed at pipeline creation, so the driver compiles a
//! specialized kernel without branches on the type in the inner loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::device::GpuDevice;
use crate::error::{Error, Result};

/// A WGSL file (one kernel family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// RMSNorm, RoPE, SwiGLU, adds, KV store, embedding rows.
    Elementwise,
    /// Activation rows → llama.cpp's Q8_0 / Q8_1 blocks.
    QuantAct,
    /// GEMV / small-batch GEMM for ggml weight types.
    Matmul,
    /// Causal grouped-query attention over the f16 KV cache.
    Attention,
    /// The quantized KV cache: f16 rows store, attention over sinks, pages and window.
    KvAttention,
    /// T-MAC table-lookup GEMV: table build and lookup.
    Lut,
    /// DFloat11 → BF16 decode.
    Df11,
    /// GEMV / small-batch GEMM for the K-quants, 5-bit, IQ4 and ternary blocks (f32 inputs).
    KQuant,
}

const COMMON: &str = include_str!("shaders/common.wgsl");

impl Shader {
    /// Every family (the binding test parses each).
    pub const ALL: [Shader; 8] = [
        Shader::Elementwise,
        Shader::QuantAct,
        Shader::Matmul,
        Shader::KQuant,
        Shader::Attention,
        Shader::KvAttention,
        Shader::Lut,
        Shader::Df11,
    ];

    /// The WGSL source of this family (with the shared helpers prepended).
    pub fn source(self) -> String {
        let body = match self {
            Shader::Elementwise => include_str!("shaders/elementwise.wgsl"),
            Shader::QuantAct => include_str!("shaders/quant_act.wgsl"),
            Shader::Matmul => include_str!("shaders/matmul.wgsl"),
            Shader::Attention => include_str!("shaders/attention.wgsl"),
            Shader::KvAttention => include_str!("shaders/kv_attention.wgsl"),
            Shader::Lut => include_str!("shaders/lut.wgsl"),
            Shader::Df11 => include_str!("shaders/df11.wgsl"),
            Shader::KQuant => include_str!("shaders/kquant.wgsl"),
        };
        format!("{COMMON}\n{body}")
    }
}

/// Feature set a pipeline was specialized for. Bit 0: subgroups (no kernel has a subgroup
/// variant yet, so this is always 0; the key already separates them).
pub type FeatureBits = u32;

/// What identifies a compiled pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PipeKey {
    pub shader: Shader,
    pub entry: &'static str,
    /// `WTYPE` override: a GGUF type id (matmul, embedding).
    pub dtype: Option<u32>,
    /// `BITS` override (LUT kernels, quantized KV attention).
    pub bits: Option<u32>,
    pub features: FeatureBits,
}

impl PipeKey {
    pub const fn new(shader: Shader, entry: &'static str) -> Self {
        PipeKey {
            shader,
            entry,
            dtype: None,
            bits: None,
            features: 0,
        }
    }
    pub const fn dtype(mut self, t: u32) -> Self {
        self.dtype = Some(t);
        self
    }
    pub const fn bits(mut self, b: u32) -> Self {
        self.bits = Some(b);
        self
    }
}

/// A compiled pipeline and a small id for bind-group caching.
pub struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) id: u64,
}

/// Shader modules and pipelines of one device.
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipes: Mutex<HashMap<PipeKey, Arc<Pipeline>>>,
}

fn lock_err<T>(_: T) -> Error {
    Error::Internal("GPU pipeline cache lock poisoned".into())
}

impl PipelineCache {
    /// Number of pipelines compiled so far.
    pub fn len(&self) -> usize {
        self.pipes.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pipeline for `key`, compiling its module and pipeline on first use. A WGSL or
    /// validation error is an [`Error::Backend`] naming the kernel.
    pub fn get(&self, dev: &GpuDevice, key: PipeKey) -> Result<Arc<Pipeline>> {
        if let Some(p) = self.pipes.lock().map_err(lock_err)?.get(&key) {
            return Ok(p.clone());
        }
        let d = &dev.device;
        let scope = d.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut mods = self.modules.lock().map_err(lock_err)?;
            mods.entry(key.shader)
                .or_insert_with(|| {
                    d.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&format!("{:?}", key.shader)),
                        source: wgpu::ShaderSource::Wgsl(key.shader.source().into()),
                    })
                })
                .clone()
        };
        let mut consts: Vec<(&str, f64)> = Vec::new();
        if let Some(t) = key.dtype {
            consts.push(("WTYPE", t as f64));
        }
        if let Some(b) = key.bits {
            consts.push(("BITS", b as f64));
        }
        let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry),
            layout: None,
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &consts,
                // Every kernel writes workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            // Drop the module too: a broken module must not stay cached.
            self.modules.lock().map_err(lock_err)?.remove(&key.shader);
            return Err(Error::Backend(format!(
                "compiling kernel {:?}/{}: {e}",
                key.shader, key.entry
            )));
        }
        // The browser answers the scope later: GpuDevice::check_async awaits it.
        #[cfg(target_arch = "wasm32")]
        dev.defer_scope(
            format!("{:?}/{}", key.shader, key.entry),
            Box::pin(scope.pop()),
        );
        let p = Arc::new(Pipeline {
            pipeline,
            id: dev.next_id(),
        });
        self.pipes.lock().map_err(lock_err)?.insert(key, p.clone());
        Ok(p)
    }
}
