//! How much memory a model and a session will take, known before either is created.
//!
//! [`Model::estimate_memory`] parses only the file's header (the file is mapped, its
//! tensor data is not read) and computes what [`Model::load`] and
//! [`Model::session`] will hold; [`Session::new`](crate::Session::new) uses the same
//! numbers to enforce [`SessionParams::memory_budget`].

use std::path::Path;

use super::params::SessionParams;
use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile};
use crate::kv::KvCache;
use crate::model::config::ModelConfig;
use crate::model::Model;
use crate::model::ModelParams;

/// Largest accepted prompt batch.
const MAX_BATCH: usize = 8192;

/// Memory a model and one session need, in bytes.
///
/// ```no_run
/// use suanpan::{Model, ModelParams, SessionParams};
/// let e = Model::estimate_memory("model.gguf", &ModelParams::default(), &SessionParams::default())?;
/// println!("{} MiB for the model and one session", e.total_bytes() >> 20);
/// # Ok::<(), suanpan::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Size of the file (it is memory-mapped).
    pub file_bytes: u64,
    /// Bytes of tensor data, all of which is read at load time and stays resident while
    /// the system has the memory (it is a clean, file-backed mapping the OS may evict).
    pub weights_bytes: u64,
    /// Heap bytes of the df12 copies the CPU makes of DFloat11 matrices at load (0 with
    /// [`ModelParams::keep_df11`] or the GPU backend): 12 bits per value plus the block
    /// index; escapes (a few in 10⁴ values on trained weights) are not counted.
    pub transcode_bytes: u64,
    /// The context the session would get (`n_ctx = 0` resolved).
    pub n_ctx: usize,
    /// The KV cache of one session (allocated up front for `n_ctx` positions).
    pub kv_bytes: u64,
    /// KV bytes one token of context costs.
    pub kv_bytes_per_token: u64,
    /// Activation buffers of one session.
    pub scratch_bytes: u64,
}

impl MemoryEstimate {
    /// One session's own memory: KV cache plus activation buffers.
    pub fn session_bytes(&self) -> u64 {
        self.kv_bytes + self.scratch_bytes
    }
    /// The model's weights plus one session. Tokenizer tables and the chat template (a
    /// few MiB for large vocabularies) are not counted.
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.transcode_bytes + self.session_bytes()
    }
}

/// What a session of `params` on a model of config `c` with `n_threads` workers takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionShape {
    pub n_ctx: usize,
    pub n_batch: usize,
    pub kv_bytes: usize,
    pub kv_bytes_per_token: f64,
    pub scratch_bytes: usize,
}

/// Resolve and check `params` against the model; the byte counts match what
/// [`KvCache::for_model`] and [`super::graph::Scratch::new`] allocate.
pub(crate) fn session_shape(
    c: &ModelConfig,
    params: &SessionParams,
    n_threads: usize,
) -> Result<SessionShape> {
    if params.n_ctx > c.n_ctx_train {
        return Err(Error::invalid(format!(
            "context of {} tokens exceeds the {} the model was trained for",
            params.n_ctx, c.n_ctx_train
        )));
    }
    if params.n_batch == 0 || params.n_batch > MAX_BATCH {
        return Err(Error::invalid(format!(
            "batch size {} (1..={MAX_BATCH})",
            params.n_batch
        )));
    }
    // The KV cache decides the context (a byte budget buys one) and the batch (quantized
    // caches stage a bounded number of f16 rows).
    let (geom, n_ctx, n_batch) = KvCache::plan(c, &params.kv, params.n_ctx, params.n_batch)?;
    let fp = params.kv.footprint(&geom, n_ctx, n_batch)?;
    let kv_bytes = fp.bytes;
    let cap = n_batch;
    let widest = c.n_embd.max(c.n_ff).max(c.q_dim());
    let f32s = cap * (3 * c.n_embd + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.n_ff)
        + n_threads * n_ctx
        + if params.all_logits { cap } else { 1 } * c.n_vocab;
    let scratch_bytes = f32s * 4 + cap * widest * 4 + cap * (c.n_rot / 2) * 8;
    let shape = SessionShape {
        n_ctx,
        n_batch,
        kv_bytes,
        kv_bytes_per_token: fp.bytes_per_token,
        scratch_bytes,
    };
    let need = kv_bytes + scratch_bytes;
    if params.memory_budget != 0 && need > params.memory_budget {
        return Err(Error::OutOfMemory(format!(
            "a session of {n_ctx} tokens needs {need} bytes ({kv_bytes} KV + {scratch_bytes} buffers), over the budget of {} bytes; lower n_ctx or raise the budget",
            params.memory_budget
        )));
    }
    Ok(shape)
}

/// Threads a pool of `n` gets (0 = one per core), as [`crate::backend::cpu::Pool::new`].
fn resolve_threads(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        n
    }
}

/// Bytes of df12 copies of `file`'s DFloat11 tensors, escapes not counted.
fn df12_bytes_of_df11(file: &GgufFile) -> Result<u64> {
    let mut total = 0;
    for t in file.tensors.iter().filter(|t| t.ty == GgmlType::Df11) {
        let n: u64 = crate::model::weights::df11_dims(file, &t.name)?
            .iter()
            .product();
        let blocks = n.div_ceil(crate::dfloat::df12::DEFAULT_BLOCK as u64);
        total += crate::dfloat::df12::DF12_HEADER_LEN as u64 + n + n.div_ceil(2) + 4 * (blocks + 1);
    }
    Ok(total)
}

impl Model {
    /// Memory that loading `path` and opening one session with `session` would take,
    /// without loading anything: only the header is parsed. Fails as `load` /
    /// `session` would on a bad file or bad parameters (including an exceeded
    /// [`SessionParams::memory_budget`]).
    pub fn estimate_memory(
        path: impl AsRef<Path>,
        params: &ModelParams,
        session: &SessionParams,
    ) -> Result<MemoryEstimate> {
        let path = path.as_ref();
        let file_bytes = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        let file = GgufFile::open(path)?;
        let c = ModelConfig::from_gguf(&file)?;
        let s = session_shape(&c, session, resolve_threads(params.n_threads))?;
        Ok(MemoryEstimate {
            file_bytes,
            weights_bytes: file.tensors.iter().map(|t| t.size).sum(),
            transcode_bytes: if params.keep_df11 || params.backend == crate::model::BackendKind::Gpu
            {
                0
            } else {
                df12_bytes_of_df11(&file)?
            },
            n_ctx: s.n_ctx,
            kv_bytes: s.kv_bytes as u64,
            kv_bytes_per_token: s.kv_bytes_per_token.ceil() as u64,
            scratch_bytes: s.scratch_bytes as u64,
        })
    }
}
