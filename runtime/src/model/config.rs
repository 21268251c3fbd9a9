//! Model hyper-parameters read from GGUF metadata (`{arch}.*` keys), never hard-coded.

use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile};

/// Architectures the decoder graph runs. They differ only by the flags in [`ModelConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM, Mistral (GGUF calls Mistral "llama" too).
    Llama,
    /// Qwen2 / Qwen2.5: biases on Q, K, V; NeoX RoPE.
    Qwen2,
    /// Qwen3: per-head RMSNorm on Q and K; NeoX RoPE.
    Qwen3,
    /// Gemma 3: embeddings scaled by √n_embd, Q/K norms, norms after attention and after
    /// the FFN too, GELU (tanh) gated FFN, NeoX RoPE, and sliding-window attention on five
    /// layers of six (RoPE base 10,000 there, as llama.cpp sets it).
    Gemma3,
}

/// The gate's activation in the gated FFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) · up`.
    Silu,
    /// GeGLU with the tanh approximation of GELU: `gelu(gate) · up`.
    GeluTanh,
}

impl Arch {
    fn parse(s: &str) -> Result<Arch> {
        Ok(match s {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::bad_model(format!(
                "architecture {other:?} is not supported (supported: llama, mistral, qwen2, qwen3, gemma3)"
            )))
            }
        })
    }

    /// The GGUF architecture name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// How rotary dimensions are paired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama.cpp's "normal" mode, used with GGUF Llama
    /// weights whose Q/K rows are permuted at conversion.
    Interleaved,
    /// Halves (x[i], x[i + d/2]): GPT-NeoX style, used by Qwen2/Qwen3.
    Neox,
}

/// Everything the graph needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    /// The GGUF `general.architecture` string as written in the file.
    pub arch_name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    pub rope_base: f32,
    /// Rotated dimensions per head (usually `head_dim`).
    pub n_rot: usize,
    pub rope_style: RopeStyle,
    /// Linear RoPE scaling: positions are multiplied by this (1.0 = none).
    pub rope_freq_scale: f32,
    pub norm_eps: f32,
    /// The gated FFN's activation.
    pub act: Activation,
    /// Factor on the token embeddings (Gemma: √n_embd; else 1).
    pub embd_scale: f32,
    /// RMSNorm on the attention output and on the FFN output before each residual add
    /// (Gemma 2/3's `post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    /// Keys a sliding-window layer attends to (itself included); 0 when no layer slides.
    pub sliding_window: usize,
    /// Every `swa_pattern`-th layer (the last of each group) attends globally; the others
    /// slide. 0 = no sliding layers.
    pub swa_pattern: usize,
    /// RoPE base of the sliding layers.
    pub rope_base_swa: f32,
}

/// Upper bounds that no real model of this decade exceeds; anything larger is hostile.
const MAX_DIM: u64 = 1 << 20;
const MAX_LAYERS: u64 = 4096;

impl ModelConfig {
    /// Read and check the hyper-parameters of a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch_name = f
            .get_str("general.architecture")
            .ok_or_else(|| Error::bad_model("metadata general.architecture is missing"))?
            .to_string();
        let arch = Arch::parse(&arch_name)?;
        let a = &arch_name;
        let req = |key: &str| -> Result<u64> {
            let k = format!("{a}.{key}");
            let v = f
                .get_u64(&k)?
                .ok_or_else(|| Error::bad_model(format!("metadata {k} is missing")))?;
            if v == 0 || v > MAX_DIM {
                return Err(Error::bad_model(format!(
                    "metadata {k} = {v} is out of range"
                )));
            }
            Ok(v)
        };
        let n_layer = req("block_count")?;
        if n_layer > MAX_LAYERS {
            return Err(Error::bad_model(format!("{n_layer} layers is absurd")));
        }
        let n_embd = req("embedding_length")? as usize;
        let n_ff = req("feed_forward_length")? as usize;
        let n_head = req("attention.head_count")? as usize;
        let n_kv_head = match f.get_u64(&format!("{a}.attention.head_count_kv"))? {
            Some(v) => v as usize,
            None => n_head,
        };
        if n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
            return Err(Error::bad_model(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_kv_head}"
            )));
        }
        let head_dim = match f.get_u64(&format!("{a}.attention.key_length"))? {
            Some(v) => v as usize,
            None => {
                if !n_embd.is_multiple_of(n_head) {
                    return Err(Error::bad_model(format!(
                        "embedding_length {n_embd} is not a multiple of head_count {n_head}"
                    )));
                }
                n_embd / n_head
            }
        };
        if head_dim == 0 || head_dim > 512 || head_dim % 2 != 0 {
            return Err(Error::bad_model(format!(
                "head dimension {head_dim} is not supported (even, ≤ 512)"
            )));
        }
        let n_rot = f
            .get_u64(&format!("{a}.rope.dimension_count"))?
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if n_rot == 0 || n_rot > head_dim || n_rot % 2 != 0 {
            return Err(Error::bad_model(format!(
                "rope.dimension_count {n_rot} does not fit head dimension {head_dim} (RoPE \
                 needs an even count from 2 to the head dimension)"
            )));
        }
        let n_ctx_train = f.get_u64(&format!("{a}.context_length"))?.unwrap_or(2048) as usize;
        if n_ctx_train == 0 {
            return Err(Error::bad_model(format!(
                "{a}.context_length is 0: the model was trained on no context"
            )));
        }
        let rope_base = f
            .get_f64(&format!("{a}.rope.freq_base"))?
            .unwrap_or(10000.0) as f32;
        let norm_eps = f
            .get_f64(&format!("{a}.attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5) as f32;
        let rope_freq_scale = match f.get_str(&format!("{a}.rope.scaling.type")) {
            None | Some("none") => 1.0,
            Some("linear") => {
                let factor = f
                    .get_f64(&format!("{a}.rope.scaling.factor"))?
                    .unwrap_or(1.0) as f32;
                if !(factor > 0.0 && factor.is_finite()) {
                    return Err(Error::bad_model(format!(
                        "rope.scaling.factor {factor} is invalid"
                    )));
                }
                1.0 / factor
            }
            Some(other) => {
                return Err(Error::bad_model(format!(
                    "RoPE scaling {other:?} is not supported yet (none, linear)"
                )))
            }
        };
        if !(rope_base > 0.0 && rope_base.is_finite() && (0.0..1.0).contains(&norm_eps)) {
            return Err(Error::bad_model(format!(
                "rope.freq_base {rope_base} or rms epsilon {norm_eps} is invalid"
            )));
        }
        let n_vocab = match f.get_u64(&format!("{a}.vocab_size"))? {
            Some(v) => v as usize,
            None => {
                let t = f
                    .tensor("token_embd.weight")
                    .ok_or_else(|| Error::bad_model("tensor token_embd.weight is missing"))?;
                // A DFloat11 tensor's GGUF dims are its byte length; its shape is metadata.
                let dims = match t.ty {
                    GgmlType::Df11 | GgmlType::Df12 => {
                        super::weights::df11_dims(f, "token_embd.weight")?
                    }
                    _ => t.dims.clone(),
                };
                dims.get(1).copied().unwrap_or(0) as usize
            }
        };
        let rope_style = match arch {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 => RopeStyle::Neox,
        };
        let gemma = arch == Arch::Gemma3;
        let sliding_window = if gemma {
            let w = f
                .get_u64(&format!("{a}.attention.sliding_window"))?
                .unwrap_or(0);
            if w > MAX_DIM {
                return Err(Error::bad_model(format!(
                    "attention.sliding_window {w} is out of range"
                )));
            }
            w as usize
        } else {
            0
        };
        Ok(ModelConfig {
            arch,
            arch_name,
            n_layer: n_layer as usize,
            n_embd,
            n_ff,
            n_head,
            n_kv_head,
            head_dim,
            n_vocab,
            n_ctx_train,
            rope_base,
            n_rot,
            rope_style,
            rope_freq_scale,
            norm_eps,
            act: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            embd_scale: if gemma { (n_embd as f32).sqrt() } else { 1.0 },
            post_norms: gemma,
            sliding_window,
            // llama.cpp's gemma3 hparams: five sliding layers, then one global.
            swa_pattern: if sliding_window > 0 { 6 } else { 0 },
            rope_base_swa: if gemma { 10_000.0 } else { rope_base },
        })
    }

    /// Whether layer `layer` attends over a sliding window ([`Self::sliding_window`]).
    pub fn is_swa(&self, layer: usize) -> bool {
        self.sliding_window > 0
            && self.swa_pattern > 0
            && !(layer + 1).is_multiple_of(self.swa_pattern)
    }

    /// Whether the queries and keys get a per-head RMSNorm before RoPE (Qwen3, Gemma 3).
    pub fn qk_norm(&self) -> bool {
        matches!(self.arch, Arch::Qwen3 | Arch::Gemma3)
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}
