//! Every WGSL entry point's interface, declared once: which buffer goes to which
//! `@binding(n)`, whether the kernel writes it, and which field of the `Params` slot
//! (`common.wgsl`: `a`, `b`, `c`: `vec4<u32>`, `f`: `vec4<f32>`) carries which parameter.
//!
//! [`kernels!`] turns each declaration into a struct with one named field per buffer and
//! per parameter, implementing [`Kernel`]; [`Recorder::run`](super::record::Recorder::run)
//! dispatches it. So a call site reads
//!
//! ```text
//! r.run(&RmsNorm { x, w, out, n, rows, w_len, first, eps }, grid(rows))?;
//! ```
//!
//! and cannot swap two bindings or two parameters by position. The declarations are
//! checked against the shaders, not trusted: `tests/gpu_bindings.rs` parses every WGSL
//! family with naga and requires, for each [`KernelDecl`] in [`ALL`], that its entry point
//! exists, that the bindings it uses are exactly binding 0 (the parameter slot) plus the
//! declared ones, that a buffer declared `read` is never written by the entry point and one
//! declared `read_write` is, that the declared overrides exist, and that the comment line
//! `// params: name=a.x ...` above the entry point names the same parameters in the same
//! fields; and that every entry point of every shader has a declaration.

use super::buffer::GpuBuffer;
use super::pipeline::{PipeKey, Shader};

/// One buffer of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferDecl {
    /// Field name in the kernel struct.
    pub name: &'static str,
    /// `@binding(n)` in the shader.
    pub binding: u32,
    /// Whether the entry point writes it (`read_write`); `false`: it only reads it.
    pub writes: bool,
}

/// One parameter of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamDecl {
    /// Field name in the kernel struct (and in the shader's `// params:` line).
    pub name: &'static str,
    /// The `Params` field, e.g. `"a.x"` or `"f.y"`.
    pub field: &'static str,
}

/// A kernel's interface (what [`kernels!`] records for the binding test).
#[derive(Clone, Copy, Debug)]
pub struct KernelDecl {
    /// The Rust struct.
    pub name: &'static str,
    /// Its shader family.
    pub shader: Shader,
    /// The WGSL entry point.
    pub entry: &'static str,
    /// Buffers by binding (binding 0, the parameter slot, is implicit).
    pub buffers: &'static [BufferDecl],
    /// Parameters by `Params` field.
    pub params: &'static [ParamDecl],
    /// WGSL `override` constants the kernel is specialized on (`WTYPE`, `BITS`).
    pub overrides: &'static [&'static str],
}

/// Bytes of the `Params` struct.
pub const PARAMS_BYTES: usize = 64;

/// Parameters of one dispatch: `u[0..12]` are `Params.a/b/c`, `f[0..4]` is `Params.f`
/// (filled by a [`Kernel`]'s declared field names, never by position).
#[derive(Clone, Copy, Debug, Default)]
pub struct Params {
    /// `a.xyzw`, `b.xyzw`, `c.xyzw`.
    pub u: [u32; 12],
    /// `f.xyzw`.
    pub f: [f32; 4],
}

impl Params {
    pub(crate) fn bytes(&self) -> [u8; PARAMS_BYTES] {
        let mut b = [0u8; PARAMS_BYTES];
        for (i, v) in self.u.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        for (i, v) in self.f.iter().enumerate() {
            b[48 + 4 * i..52 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// A kernel dispatch: buffers and parameters of one WGSL entry point.
pub trait Kernel {
    /// The declaration this struct was generated from.
    const DECL: KernelDecl;
    /// The pipeline to run (entry point and override values).
    fn key(&self) -> PipeKey;
    /// The parameter slot's contents.
    fn params(&self) -> Params;
    /// `(binding, buffer)` for every declared buffer.
    fn buffers(&self) -> Vec<(u32, &GpuBuffer)>;
}

/// Declares kernels: per kernel a struct (buffers, then parameters, then override values as
/// fields) and its [`Kernel`] impl, and the list [`ALL`] of their declarations.
///
/// ```text
/// Name: Family "entry" [override(WTYPE: field)] {
///     bind { buffer: binding read|read_write, ... }
///     params { name: a.x, ..., name: f.x }     // a/b/c fields are u32, f fields f32
/// }
/// ```
macro_rules! kernels {
    (@slot a x) => { 0 }; (@slot a y) => { 1 }; (@slot a z) => { 2 }; (@slot a w) => { 3 };
    (@slot b x) => { 4 }; (@slot b y) => { 5 }; (@slot b z) => { 6 }; (@slot b w) => { 7 };
    (@slot c x) => { 8 }; (@slot c y) => { 9 }; (@slot c z) => { 10 }; (@slot c w) => { 11 };
    (@slot f x) => { 0 }; (@slot f y) => { 1 }; (@slot f z) => { 2 }; (@slot f w) => { 3 };
    (@ty f) => { f32 };
    (@ty $v:ident) => { u32 };
    (@set $p:ident f $c:ident $val:expr) => { $p.f[kernels!(@slot f $c)] = $val; };
    (@set $p:ident $v:ident $c:ident $val:expr) => { $p.u[kernels!(@slot $v $c)] = $val; };
    (@writes read) => { false };
    (@writes read_write) => { true };
    (@ovr $k:ident WTYPE $val:expr) => { $k = $k.dtype($val); };
    (@ovr $k:ident BITS $val:expr) => { $k = $k.bits($val); };
    ($(
        $(#[$doc:meta])*
        $name:ident: $shader:ident $entry:literal $(override($($ovr:ident: $ofield:ident),+))? {
            bind { $($buf:ident: $b:literal $acc:ident),+ $(,)? }
            params { $($par:ident: $v:ident . $c:ident),+ $(,)? }
        }
    )+) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug)]
            pub struct $name<'a> {
                $(
                    #[doc = concat!("`@binding(", stringify!($b), ")`, ", stringify!($acc), ".")]
                    pub $buf: &'a GpuBuffer,
                )+
                $(
                    #[doc = concat!("`P.", stringify!($v), ".", stringify!($c), "`.")]
                    pub $par: kernels!(@ty $v),
                )+
                $($(
                    #[doc = concat!("The `", stringify!($ovr), "` override.")]
                    pub $ofield: u32,
                )+)?
            }

            impl Kernel for $name<'_> {
                const DECL: KernelDecl = KernelDecl {
                    name: stringify!($name),
                    shader: Shader::$shader,
                    entry: $entry,
                    buffers: &[$(BufferDecl {
                        name: stringify!($buf),
                        binding: $b,
                        writes: kernels!(@writes $acc),
                    }),+],
                    params: &[$(ParamDecl {
                        name: stringify!($par),
                        field: concat!(stringify!($v), ".", stringify!($c)),
                    }),+],
                    overrides: &[$($(stringify!($ovr)),+)?],
                };

                #[allow(unused_mut)]
                fn key(&self) -> PipeKey {
                    let mut k = PipeKey::new(Shader::$shader, $entry);
                    $($(kernels!(@ovr k $ovr self.$ofield);)+)?
                    k
                }

                fn params(&self) -> Params {
                    let mut p = Params::default();
                    $(kernels!(@set p $v $c self.$par);)+
                    p
                }

                fn buffers(&self) -> Vec<(u32, &GpuBuffer)> {
                    vec![$(($b, self.$buf)),+]
                }
            }
        )+

        /// Every declared kernel.
        pub const ALL: &[KernelDecl] = &[$(<$name<'static> as Kernel>::DECL),+];
    };
}

kernels! {
    // elementwise.wgsl

    /// `out[r] = x[first + r] / rms(x[first + r]) · w[k % w_len]`, one workgroup per row.
    RmsNorm: Elementwise "rms_norm" {
        bind { x: 1 read, w: 2 read, out: 3 read_write }
        params { n: a.x, rows: a.y, w_len: a.z, first: a.w, eps: f.x }
    }
    /// [`RmsNorm`] in place on `x` (per-head norms).
    RmsNormInplace: Elementwise "rms_norm_inplace" {
        bind { x: 1 read_write, w: 2 read }
        params { n: a.x, rows: a.y, w_len: a.z, eps: f.x }
    }
    /// RoPE in place on `rows` heads of `head_dim`; `neox` 0 interleaved, 1 NeoX halves.
    Rope: Elementwise "rope" {
        bind { x: 1 read_write, cos_sin: 2 read }
        params { rows: a.x, head_dim: a.y, n_rot: a.z, neox: a.w, heads_per_token: b.x }
    }
    /// `gate = silu(gate) · up`.
    SiluMul: Elementwise "silu_mul" {
        bind { gate: 1 read_write, up: 2 read }
        params { n: a.x }
    }
    /// `gate = gelu_tanh(gate) · up`.
    GeluTanhMul: Elementwise "gelu_tanh_mul" {
        bind { gate: 1 read_write, up: 2 read }
        params { n: a.x }
    }
    /// `x *= s`.
    Scale: Elementwise "scale" {
        bind { x: 1 read_write }
        params { n: a.x, s: f.x }
    }
    /// `x += y`.
    Add: Elementwise "add" {
        bind { x: 1 read_write, y: 2 read }
        params { n: a.x }
    }
    /// `x[i] += bias[i % bias_len]`.
    AddBias: Elementwise "add_bias" {
        bind { x: 1 read_write, bias: 2 read }
        params { n: a.x, bias_len: a.y }
    }

    // attention.wgsl

    /// `n` keys and values to f16 at value `dst` of the caches.
    KvStore: Attention "kv_store" {
        bind { k_cache: 2 read_write, v_cache: 3 read_write, k: 5 read, v: 6 read }
        params { n: a.x, dst: a.y }
    }
    /// Causal GQA attention over the f16 caches.
    Attention: Attention "attention" {
        bind { q: 1 read, k_cache: 2 read, v_cache: 3 read, out: 4 read_write }
        params {
            n_head: a.x, n_kv_head: a.y, head_dim: a.z, pos0: a.w,
            n_tokens: b.x, layer_base: b.y, kv_dim: b.z, window: b.w, scale: f.x,
        }
    }

    // quant_act.wgsl

    /// Activation rows to Q8 blocks: codes and (d, s) pairs.
    QuantQ8: QuantAct "quant_q8" {
        bind { x: 1 read, codes: 2 read_write, scales: 3 read_write }
        params { cols: a.x, rows: a.y }
    }

    // matmul.wgsl

    /// Embedding rows `out[t] = W[ids[t]]`.
    GetRows: Matmul "get_rows" override(WTYPE: wtype) {
        bind { w: 1 read, ids: 2 read, out: 4 read_write }
        params { cols: a.x, n: a.y, scale_off: a.w }
    }
    /// Quantized weights × Q8 activations.
    MatmulQ: Matmul "matmul_q" override(WTYPE: wtype) {
        bind { w: 1 read, codes: 2 read, scales: 3 read, y: 4 read_write }
        params { rows: a.x, cols: a.y, n: a.z, scale_off: a.w, y_stride: b.y }
    }
    /// Dense (F32/F16/BF16) weights × f32 activations.
    MatmulDense: Matmul "matmul_dense" override(WTYPE: wtype) {
        bind { w: 1 read, x: 2 read, y: 4 read_write }
        params { rows: a.x, cols: a.y, n: a.z, y_stride: b.y }
    }
    /// df12 weights × f32 activations: [`MatmulDense`]'s BF16 GEMV, decoding df12
    /// ([`super::df12`]: the packed layout and its section offsets in words).
    MatmulDf12: Matmul "matmul_df12" {
        bind { w: 1 read, x: 2 read, y: 4 read_write }
        params {
            rows: a.x, cols: a.y, n: a.z, block: a.w, y_stride: b.y,
            codes_off: c.x, starts_off: c.y, exc_off: c.z,
        }
    }

    // kquant.wgsl

    /// K-quant / Q5 / IQ4 / ternary blocks (and split Q8_0) × f32 activations, one row
    /// range (`row0..row0 + rows`) of a matrix per dispatch ([`super::kquant`]).
    MatmulK: KQuant "matmul_k" override(WTYPE: wtype) {
        bind { w: 1 read, x: 2 read, y: 4 read_write }
        params { rows: a.x, cols: a.y, n: a.z, row0: a.w, y_stride: b.y }
    }

    // lut.wgsl

    /// T-MAC tables of `n` activation rows.
    LutTables: Lut "lut_tables" {
        bind { x: 1 read, tables: 2 read_write, half_scales: 3 read_write, sums: 4 read_write }
        params { cols: a.x, group: a.y, n: a.z }
    }
    /// T-MAC lookup GEMV.
    LutGemv: Lut "lut_gemv" override(BITS: bits) {
        bind { tables: 2 read, half_scales: 3 read, sums: 4 read, w: 5 read, y: 6 read_write }
        params { rows: a.x, cols: a.y, group: a.z, n: a.w, param_off: b.x, y_stride: b.y }
    }

    // df11.wgsl

    /// Zero `words` words of `out`.
    Df11Zero: Df11 "df11_zero" {
        bind { out: 5 read_write }
        params { words: a.x }
    }
    /// Decode `units` DFloat11 units into BF16.
    Df11Decode: Df11 "df11_decode" {
        bind {
            bitstream: 1 read, sign_mantissa: 2 read, tables: 3 read, index: 4 read,
            out: 5 read_write,
        }
        params { units: a.x }
    }

    // kv_attention.wgsl

    /// Hadamard rotation of `heads` key heads in place.
    KvRotate: KvAttention "kv_rotate" {
        bind { keys: 8 read_write, signs: 9 read }
        params { heads: a.x, head_dim: a.y, norm: f.x }
    }
    /// A batch's keys and values into the f16 sinks and window ring.
    KvqStore: KvAttention "kvq_store" {
        bind { k_cache: 1 read_write, v_cache: 2 read_write, k: 3 read, v: 4 read }
        params {
            n: a.x, kv_dim: a.y, sink_take: a.z, n_sink_before: a.w,
            row0: b.x, sink_cap: b.y, tail_cap: b.z, ring0: b.w,
        }
    }
    /// Attention over sinks, quantized pages and the f16 window.
    KvqAttention: KvAttention "kvq_attention" override(BITS: bits) {
        bind {
            k_cache: 1 read, v_cache: 2 read, q: 5 read, pages: 6 read, span: 7 read,
            out: 8 read_write, signs: 9 read,
        }
        params {
            n_head: a.x, n_kv_head: a.y, head_dim: a.z, n_tokens: a.w,
            row0: b.x, sink_cap: b.y, tail_cap: b.z, ring: b.w,
            page_word: c.x, page: c.y, vgroup: c.z, k_outliers: c.w,
            scale: f.x, rotated: f.y, inv_sqrt_hd: f.z,
        }
    }
}
