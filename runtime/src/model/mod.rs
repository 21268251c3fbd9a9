//! A loaded model: the mapped file, its config, weights, tokenizer and chat template, and
//! the thread pool its forward passes run on. Immutable once loaded and shareable across
//! threads (`Arc<Model>`); sessions hold the mutable state.

pub mod config;
pub mod graph;
pub mod load;
pub mod weights;

use crate::clock::Instant;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use config::{Arch, ModelConfig};
pub use graph::Logits;
pub use load::LoadProgress;
pub use weights::Weights;

use crate::backend::cpu::Pool;
use crate::chat::ChatTemplate;
use crate::error::Result;
use crate::format::{GgmlType, GgufFile};
use crate::tokenizer::Tokenizer;

/// Which backend runs the forward passes of a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// The CPU backend (the default).
    #[default]
    Cpu,
    /// The GPU backend (feature `gpu`); loading fails with [`crate::Error::Backend`] when
    /// no adapter can run the model.
    Gpu,
    /// The GPU when a hardware adapter can run the model, else the CPU; the reason for a
    /// fallback is kept in [`Model::backend_note`].
    Auto,
}

impl std::str::FromStr for BackendKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "gpu" => Ok(BackendKind::Gpu),
            "auto" => Ok(BackendKind::Auto),
            other => Err(crate::Error::invalid(format!(
                "backend {other:?} (cpu, gpu or auto)"
            ))),
        }
    }
}

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct ModelParams {
    /// Worker threads for compute (0 = one per core).
    pub n_threads: usize,
    /// Backend for the forward pass.
    pub backend: BackendKind,
    /// Called with the fraction loaded (0.0 ..= 1.0) after each step of the load; returning
    /// `false` cancels the load ([`crate::Error::Cancelled`]). See [`LoadProgress`].
    pub progress: Option<LoadProgress>,
    /// Run DFloat11 matrices as they are stored (Huffman decode fused into the GEMV)
    /// instead of transcoding them to df12 in memory at load, which the CPU decodes
    /// several times faster for ~12% more memory ([`crate::dfloat::df12`]). Default false.
    pub keep_df11: bool,
}

/// Bytes of the lossless BF16 forms in a model ([`Model::dfloat_sizes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DfloatSizes {
    /// BF16 values stored as DF11 or df12 in the file.
    pub values: u64,
    /// DFloat11 tensor bytes in the file.
    pub df11_file_bytes: u64,
    /// df12 tensor bytes in the file.
    pub df12_file_bytes: u64,
    /// df12 bytes of the matrices as the model runs them (file or transcoded).
    pub df12_memory_bytes: u64,
}

/// What the load-time DFloat11 → df12 transcode did ([`Model::transcode_stats`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TranscodeStats {
    /// BF16 bytes of the matrices transcoded.
    pub bf16_bytes: usize,
    /// Wall time of the transcode, seconds.
    pub seconds: f64,
}

impl TranscodeStats {
    /// Transcode rate in GB/s of BF16 weights.
    pub fn gb_per_s(&self) -> f64 {
        self.bf16_bytes as f64 / self.seconds.max(1e-9) / 1e9
    }
}

/// A model ready to run.
///
/// ```no_run
/// use std::sync::Arc;
/// use suanpan::{Model, ModelParams, SessionParams, GenerateParams};
/// let model = Arc::new(Model::load("model.gguf", &ModelParams::default())?);
/// let mut session = model.session(&SessionParams::default())?;
/// session.generate("Once upon a time", &GenerateParams::default(), |piece| {
///     print!("{piece}");
///     std::ops::ControlFlow::Continue(())
/// })?;
/// # Ok::<(), suanpan::Error>(())
/// ```
pub struct Model {
    pub(crate) path: PathBuf,
    pub(crate) file: GgufFile,
    pub(crate) config: ModelConfig,
    pub(crate) weights: Weights,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) chat_template: Option<ChatTemplate>,
    /// Why the file's chat template does not parse (chat fails with it; the rest works).
    pub(crate) chat_template_error: Option<String>,
    pub(crate) pool: Pool,
    pub(crate) load_ms: f64,
    /// The DFloat11 → df12 transcode at load, if one ran.
    pub(crate) transcode: Option<TranscodeStats>,
    /// The weights on the GPU when the GPU backend runs this model.
    #[cfg(feature = "gpu")]
    pub(crate) gpu: Option<std::sync::Arc<crate::backend::gpu::GpuModel>>,
    /// Why `Auto` fell back to the CPU.
    pub(crate) backend_note: Option<String>,
    /// Identity of the file for saved session states, computed on first use.
    pub(crate) fingerprint: OnceLock<u64>,
    /// Constrained decoding's tables for this vocabulary, built on first use.
    pub(crate) grammars: OnceLock<std::result::Result<crate::tokenizer::grammar::Grammars, String>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("arch", &self.config.arch_name)
            .finish()
    }
}

impl Model {
    /// Map, validate and prepare a GGUF model, reading every page of its tensor data
    /// once (so the first token does not stall on page faults, and an unreadable file
    /// fails here). `params.progress` hears how far the load got and can cancel it.
    pub fn load(path: impl AsRef<Path>, params: &ModelParams) -> Result<Model> {
        let t0 = Instant::now();
        let path = path.as_ref();
        load::report(params.progress.as_ref(), 0.0)?;
        let file = GgufFile::open(path)?;
        Self::from_gguf(file, path, params, t0, None)
    }

    /// Build a model from an already parsed file (tests, in-memory models).
    pub fn from_file(file: GgufFile, params: &ModelParams) -> Result<Model> {
        Self::from_gguf(file, Path::new("<memory>"), params, Instant::now(), None)
    }

    /// [`Self::from_file`] on a GPU device the caller opened: the browser's way, where
    /// [`crate::backend::gpu::GpuDevice::open_async`] is awaited first (nothing may block
    /// there). `params.backend` says what a model the device cannot run does: `Gpu` fails,
    /// `Auto` runs on the CPU with the reason in [`Self::backend_note`], `Cpu` ignores the
    /// device.
    #[cfg(feature = "gpu")]
    pub fn from_file_with_device(
        file: GgufFile,
        params: &ModelParams,
        dev: std::sync::Arc<crate::backend::gpu::GpuDevice>,
    ) -> Result<Model> {
        Self::from_gguf(
            file,
            Path::new("<memory>"),
            params,
            Instant::now(),
            Some(dev),
        )
    }

    fn from_gguf(
        file: GgufFile,
        path: &Path,
        params: &ModelParams,
        t0: Instant,
        dev: DeviceSlot,
    ) -> Result<Model> {
        // Steps and the share of the progress bar each ends at; touching the tensor data
        // (reading every page of the mapping) is the long part and reports per tensor.
        let progress = params.progress.as_ref();
        let step = |at: f32| load::report(progress, at);
        step(load::PARSED)?;
        let config = ModelConfig::from_gguf(&file)?;
        let weights = Weights::from_gguf(&file, &config)?;
        step(load::WEIGHTS_CHECKED)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        if tokenizer.vocab_size() > config.n_vocab {
            return Err(crate::Error::bad_model(format!(
                "tokenizer has {} tokens but the embedding only {} rows",
                tokenizer.vocab_size(),
                config.n_vocab
            )));
        }
        step(load::TOKENIZER_BUILT)?;
        // A template that does not parse only breaks chat, not plain prompts.
        let (chat_template, chat_template_error) = match ChatTemplate::from_gguf(&file) {
            Ok(t) => (t, None),
            Err(e @ (crate::Error::Template(_) | crate::Error::OutOfMemory(_))) => {
                (None, Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        load::touch_tensors(&file, progress)?;
        let pool = Pool::new(params.n_threads)?;
        let (gpu, backend_note) = gpu_for(params.backend, &config, &weights, &file, dev)?;
        // The CPU runs DFloat11 matrices faster as df12 (the GPU decodes DF11 itself).
        let mut weights = weights;
        let mut transcode = None;
        if gpu.is_none() && !params.keep_df11 {
            let t = Instant::now();
            let bf16_bytes = weights.transcode_df11(&file, pool.n_threads())?;
            if bf16_bytes > 0 {
                transcode = Some(TranscodeStats {
                    bf16_bytes,
                    seconds: t.elapsed().as_secs_f64(),
                });
            }
        }
        #[cfg(not(feature = "gpu"))]
        let _ = gpu;
        step(1.0)?;
        Ok(Model {
            path: path.to_path_buf(),
            file,
            config,
            weights,
            tokenizer,
            chat_template,
            chat_template_error,
            pool,
            load_ms: t0.elapsed().as_secs_f64() * 1e3,
            transcode,
            #[cfg(feature = "gpu")]
            gpu,
            backend_note,
            fingerprint: OnceLock::new(),
            grammars: OnceLock::new(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template from the file, if it has one that parses.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The template chat uses: the file's, else ChatML when the vocabulary has ChatML's
    /// `<|im_start|>` token. `None` for a model with neither, which is most likely a base
    /// model (chat then fails with [`crate::Error::Template`] saying so; plain prompts work).
    pub fn effective_chat_template(&self) -> Option<ChatTemplate> {
        match &self.chat_template {
            Some(t) => Some(t.clone()),
            None => self
                .tokenizer
                .token_id("<|im_start|>")
                .map(|_| ChatTemplate::chatml()),
        }
    }

    /// Why the file's chat template does not parse, if it does not (then
    /// [`crate::Session::chat`] fails with [`crate::Error::Template`]).
    pub fn chat_template_error(&self) -> Option<&str> {
        self.chat_template_error.as_deref()
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Threads the forward pass uses.
    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Sizes of the losslessly compressed BF16 matrices (DFloat11, df12) on disk and as run.
    pub fn dfloat_sizes(&self) -> DfloatSizes {
        let mut s = DfloatSizes::default();
        for t in &self.file.tensors {
            match t.ty {
                GgmlType::Df11 => s.df11_file_bytes += t.size,
                GgmlType::Df12 => s.df12_file_bytes += t.size,
                _ => continue,
            }
            s.values += weights::df11_dims(&self.file, &t.name)
                .map(|d| d.iter().product())
                .unwrap_or(0);
        }
        let w = &self.weights;
        let mut mats: Vec<&weights::Linear> = vec![&w.token_embd];
        for l in &w.layers {
            mats.extend([&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
        }
        if !w.tied_output {
            mats.push(&w.output);
        }
        s.df12_memory_bytes = mats
            .iter()
            .filter(|m| m.ty == GgmlType::Df12)
            .map(|m| m.n_bytes() as u64)
            .sum();
        s
    }

    /// The DFloat11 → df12 transcode the load ran (`None`: no DF11 matrix, the GPU runs
    /// the model, or [`ModelParams::keep_df11`]).
    pub fn transcode_stats(&self) -> Option<TranscodeStats> {
        self.transcode
    }

    /// Milliseconds `load` took.
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// Number of parameters (elements of every tensor; DFloat11 blobs by their logical
    /// shape).
    pub fn n_params(&self) -> u64 {
        self.file
            .tensors
            .iter()
            .map(|t| match t.ty {
                GgmlType::Df11 | GgmlType::Df12 => weights::df11_dims(&self.file, &t.name)
                    .map(|d| d.iter().product())
                    .unwrap_or(0),
                _ => t.n_elements(),
            })
            .sum()
    }

    /// Count of tensors per type, for `info`.
    pub fn tensor_types(&self) -> Vec<(GgmlType, usize)> {
        let mut v: Vec<(GgmlType, usize)> = Vec::new();
        for t in &self.file.tensors {
            match v.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some(e) => e.1 += 1,
                None => v.push((t.ty, 1)),
            }
        }
        v
    }

    /// Memory read bandwidth (GB/s) of this model's threads streaming `bytes` (see
    /// [`crate::backend::cpu::bandwidth`]); for reading decode speed against the roofline.
    pub fn measure_bandwidth(&self, bytes: usize) -> f64 {
        crate::backend::cpu::bandwidth::read_bandwidth(&self.pool, bytes, 3)
    }

    /// The backend that runs this model: the GPU adapter, or the CPU's SIMD kernels.
    pub fn backend_name(&self) -> String {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return format!("gpu ({})", g.device().adapter_name());
        }
        let dot = crate::backend::cpu::dot::simd_level();
        let lut = crate::backend::cpu::lut::gemv::simd_level();
        if lut == dot {
            format!("cpu ({dot}, {} threads)", self.n_threads())
        } else {
            // LUT kernels have an AVX-512 version; the ggml block dots do not.
            format!("cpu ({dot}, lut {lut}, {} threads)", self.n_threads())
        }
    }

    /// Why `BackendKind::Auto` chose the CPU, if it did.
    pub fn backend_note(&self) -> Option<&str> {
        self.backend_note.as_deref()
    }

    /// True when forward passes run on the GPU.
    pub fn on_gpu(&self) -> bool {
        #[cfg(feature = "gpu")]
        return self.gpu.is_some();
        #[cfg(not(feature = "gpu"))]
        false
    }

    /// The model's weights on the GPU, when the GPU backend runs it.
    #[cfg(feature = "gpu")]
    pub fn gpu(&self) -> Option<&std::sync::Arc<crate::backend::gpu::GpuModel>> {
        self.gpu.as_ref()
    }
}

#[cfg(feature = "gpu")]
type GpuSlot = Option<std::sync::Arc<crate::backend::gpu::GpuModel>>;
#[cfg(not(feature = "gpu"))]
type GpuSlot = Option<()>;

/// A GPU device opened by the caller ([`Model::from_file_with_device`]).
#[cfg(feature = "gpu")]
type DeviceSlot = Option<std::sync::Arc<crate::backend::gpu::GpuDevice>>;
#[cfg(not(feature = "gpu"))]
type DeviceSlot = Option<std::convert::Infallible>;

/// Open the GPU backend for `kind`: `Gpu` fails loudly, `Auto` falls back with a reason.
fn gpu_for(
    kind: BackendKind,
    config: &ModelConfig,
    weights: &Weights,
    file: &GgufFile,
    dev: DeviceSlot,
) -> Result<(GpuSlot, Option<String>)> {
    if kind == BackendKind::Cpu {
        return Ok((None, None));
    }
    #[cfg(feature = "gpu")]
    {
        use crate::backend::gpu::{GpuDevice, GpuModel, GpuOptions};
        let opts = GpuOptions {
            adapter: None,
            // A software rasterizer is slower than the CPU backend: auto never picks one.
            hardware_only: kind == BackendKind::Auto,
            ..Default::default()
        };
        let r = dev
            .map_or_else(|| GpuDevice::new(&opts), Ok)
            .and_then(|d| GpuModel::upload(d, config, weights, file))
            .map(std::sync::Arc::new);
        match (r, kind) {
            (Ok(g), _) => Ok((Some(g), None)),
            (Err(e), BackendKind::Gpu) => Err(e),
            (Err(e), _) => Ok((None, Some(format!("auto: running on the CPU because {e}")))),
        }
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (config, weights, file, dev);
        let why = "this build has no GPU backend (cargo feature `gpu`)";
        match kind {
            BackendKind::Gpu => Err(crate::Error::Backend(why.into())),
            _ => Ok((
                None,
                Some(format!("auto: running on the CPU because {why}")),
            )),
        }
    }
}

impl Model {
    /// The constrained-decoding tables, built on first use (about a second for a 50k
    /// vocabulary in a debug build) and shared by every session of the model.
    pub(crate) fn grammars(&self) -> Result<&crate::tokenizer::grammar::Grammars> {
        self.grammars
            .get_or_init(|| {
                crate::tokenizer::grammar::Grammars::new(&self.tokenizer, self.config.n_vocab)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| crate::Error::Internal(e.clone()))
    }
}
