//! Model conversion: GGUF (any type suanpan loads) or a Hugging Face `model.safetensors`
//! in, a GGUF with LUT low-bit, DFloat11, BF16, F16 or F32 tensors out.
//!
//! # Which tensors change (the policy)
//!
//! * Vectors (norm weights, biases: 1-D tensors) always keep their source type: they are
//!   tiny and read as f32. So do integer (and F64) tensors such as `position_ids`.
//! * `--to lut1..4 | tern`: the matrices of the transformer blocks
//!   (`blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight`) are
//!   quantized; their input width K must be a multiple of the group (an error, never a
//!   silent fallback to another type). The token embedding and the output head follow
//!   [`Rest`] (default: keep the source type, as llama.cpp keeps them at higher precision)
//!   unless `quantize_embeddings` is set.
//! * `--to bf16 | f16 | f32 | df11 | df12`: every matrix (2-D or more) is converted.
//!   DFloat11 and df12 are lossless only from BF16: a tensor of another type is rounded to BF16
//!   first only when `cast` is set (otherwise it is an error that says so).
//! * Mix (default on, like llama.cpp's `_M` mixes): below 4 bits, `attn_v` and `ffn_down`
//!   (the matrices whose error hurts most; measured on SmolLM2, GPL-3, 2 chunks of 512:
//!   lut3 g32 PPL 49.7 → 28.3 with them at 4 bits) get one more bit. `mix = false` quantizes
//!   every block matrix to the same width.
//! * `keep`: tensors whose name contains any of these substrings keep their source type.
//! * `calib` (`--calib TEXT`): with input statistics from running the source model over a
//!   text ([`Calibration`]), the block matrices are quantized with GPTQ instead of the
//!   per-group search alone (same format, same kernels; measured in `bench/lut_quality.sh`).
//!
//! ```no_run
//! use suanpan::convert::{convert, ConvertParams, Target};
//! use suanpan::lut::Method;
//! let p = ConvertParams::new(Target::Lut { bits: 2, method: Method::Search });
//! let report = convert("model.gguf".as_ref(), "model.lut2.gguf".as_ref(), &p, &|_| {})?;
//! println!("{} tensors converted", report.converted);
//! # Ok::<(), suanpan::Error>(())
//! ```

pub mod calib;
pub mod output;
mod safetensors;
mod tensor_io;

use crate::clock::Instant;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::dfloat;
use crate::error::{Error, Result};
use crate::format::{GgmlType, GgufFile, GgufWriter, Value};
use crate::lut::{gptq, LutMatrix, Method};
use crate::model::weights::df11_dims_key;

pub use calib::{CalibParams, Calibration};
pub use tensor_io::{read_bf16_bits, read_f32, Source, SourceTensor};

/// What the converted tensors become.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// LUT low-bit (`bits` 1..=4); [`Method::Ternary`] for BitNet b1.58 ternary (2 bits).
    Lut {
        bits: usize,
        method: Method,
    },
    /// DFloat11 (lossless BF16).
    Df11,
    /// df12 (lossless BF16, ~12 bits, decoded by table lookup; [`dfloat::df12`]).
    Df12,
    Bf16,
    F16,
    F32,
}

impl Target {
    /// Parse a `--to` value: `lut1..lut4`, `tern`, `df11`, `df12`, `bf16`, `f16`, `f32`.
    pub fn parse(s: &str) -> Result<Target> {
        Ok(match s {
            "lut1" | "lut2" | "lut3" | "lut4" => Target::Lut {
                bits: (s.as_bytes()[3] - b'0') as usize,
                method: Method::Search,
            },
            "tern" => Target::Lut {
                bits: 2,
                method: Method::Ternary,
            },
            "df11" => Target::Df11,
            "df12" => Target::Df12,
            "bf16" => Target::Bf16,
            "f16" => Target::F16,
            "f32" => Target::F32,
            _ => {
                return Err(Error::invalid(format!(
                "unknown target {s:?} (lut1, lut2, lut3, lut4, tern, df11, df12, bf16, f16, f32)"
            )))
            }
        })
    }

    /// Short name (as `--to` takes it).
    pub fn name(&self) -> String {
        match self {
            Target::Lut {
                method: Method::Ternary,
                ..
            } => "tern".into(),
            Target::Lut { bits, .. } => format!("lut{bits}"),
            Target::Df11 => "df11".into(),
            Target::Df12 => "df12".into(),
            Target::Bf16 => "bf16".into(),
            Target::F16 => "f16".into(),
            Target::F32 => "f32".into(),
        }
    }
}

/// What LUT conversions do with the matrices they do not quantize (embedding, head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rest {
    /// Keep the source type.
    Source,
    /// BF16.
    Bf16,
    /// DFloat11 (lossless from BF16; other sources need `cast`).
    Df11,
}

/// Conversion settings; [`ConvertParams::new`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ConvertParams {
    pub target: Target,
    /// LUT quantization group (32, 64 or 128). Default 64.
    pub group: usize,
    /// LUT: format of the embedding and head when they are not quantized. Default Source.
    pub rest: Rest,
    /// LUT: quantize the token embedding and output head too. Default false.
    pub quantize_embeddings: bool,
    /// Tensors whose name contains one of these keep their source type.
    pub keep: Vec<String>,
    /// Allow rounding non-BF16 tensors to BF16 for DFloat11. Default false.
    pub cast: bool,
    /// LUT below 4 bits: `attn_v` and `ffn_down` one bit wider. Default true.
    pub mix: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// LUT (error-minimizing method): input statistics of the block matrices; the matrices
    /// they cover are quantized with GPTQ ([`crate::lut::gptq`]). Default none.
    pub calib: Option<Arc<Calibration>>,
    /// Replace an existing output file (never the input, never a non-regular file; see
    /// [`output`]). Default false.
    pub overwrite: bool,
}

impl ConvertParams {
    pub fn new(target: Target) -> Self {
        ConvertParams {
            target,
            group: 64,
            rest: Rest::Source,
            quantize_embeddings: false,
            keep: Vec::new(),
            cast: false,
            mix: true,
            threads: 0,
            calib: None,
            overwrite: false,
        }
    }
}

/// Progress of a conversion, reported after each tensor.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub tensor: &'a str,
}

/// What a conversion did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub tensors: usize,
    /// Tensors whose type changed.
    pub converted: usize,
    /// Bytes of tensor data in and out.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Elements of the converted tensors and the bytes they became.
    pub converted_elements: u64,
    pub converted_bytes: u64,
    pub seconds: f64,
}

impl Report {
    /// Bits per weight of the converted tensors (scales, zeros and indexes included).
    pub fn bits_per_weight(&self) -> f64 {
        if self.converted_elements == 0 {
            return 0.0;
        }
        8.0 * self.converted_bytes as f64 / self.converted_elements as f64
    }
}

/// What happens to one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Keep,
    Lut { bits: usize, method: Method },
    Df11,
    Df12,
    Float(GgmlType),
}

const BLOCK_MATRICES: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

fn is_block_matrix(name: &str) -> bool {
    name.starts_with("blk.")
        && BLOCK_MATRICES
            .iter()
            .any(|m| name.ends_with(&format!(".{m}.weight")))
}

fn rest_action(rest: Rest) -> Action {
    match rest {
        Rest::Source => Action::Keep,
        Rest::Bf16 => Action::Float(GgmlType::BF16),
        Rest::Df11 => Action::Df11,
    }
}

fn action(p: &ConvertParams, t: &SourceTensor) -> Action {
    let integer = matches!(
        t.ty,
        GgmlType::I8 | GgmlType::I16 | GgmlType::I32 | GgmlType::I64 | GgmlType::F64
    );
    if integer || t.dims.len() < 2 || p.keep.iter().any(|k| t.name.contains(k.as_str())) {
        return Action::Keep;
    }
    match p.target {
        Target::Lut { bits, method } => {
            if is_block_matrix(&t.name) || p.quantize_embeddings {
                let sensitive =
                    t.name.ends_with(".attn_v.weight") || t.name.ends_with(".ffn_down.weight");
                let bits = if p.mix && sensitive && bits < 4 && method != Method::Ternary {
                    bits + 1
                } else {
                    bits
                };
                Action::Lut { bits, method }
            } else {
                rest_action(p.rest)
            }
        }
        Target::Df11 => Action::Df11,
        Target::Df12 => Action::Df12,
        Target::Bf16 => Action::Float(GgmlType::BF16),
        Target::F16 => Action::Float(GgmlType::F16),
        Target::F32 => Action::Float(GgmlType::F32),
    }
}

/// The converted tensor: dims, type, bytes (and extra metadata for DFloat11).
struct Out {
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
    df11_dims: Option<Vec<u64>>,
    converted: bool,
}

fn convert_one(src: &Source, t: &SourceTensor, a: Action, p: &ConvertParams) -> Result<Out> {
    let logical = t.logical_dims();
    let elems: u64 = logical.iter().product();
    let cols = logical[0] as usize;
    let rows = (elems / logical[0].max(1)) as usize;
    let out = |dims: Vec<u64>, ty, data| Out {
        dims,
        ty,
        data,
        df11_dims: None,
        converted: true,
    };
    Ok(match a {
        Action::Keep => Out {
            dims: t.dims.clone(),
            ty: t.ty,
            data: src.raw(t).to_vec(),
            df11_dims: if matches!(t.ty, GgmlType::Df11 | GgmlType::Df12) {
                Some(logical.clone())
            } else {
                None
            },
            converted: false,
        },
        Action::Lut { bits, method } => {
            if !cols.is_multiple_of(p.group) {
                return Err(Error::invalid(format!(
                    "{}: {cols} columns is not a multiple of the group {} (use --group 32 or \
                     --keep {})",
                    t.name, p.group, t.name
                )));
            }
            let ternary_src = matches!(t.ty, GgmlType::TQ1_0 | GgmlType::TQ2_0);
            if method == Method::Ternary && ternary_src {
                // BitNet blocks hold ternary codes already: re-pack them, no re-quantizing.
                let m = ternary_lossless(src.raw(t), t.ty, rows, cols, p.group)
                    .map_err(|e| Error::invalid(format!("{}: {e}", t.name)))?;
                return Ok(out(
                    logical,
                    GgmlType::Lut {
                        bits: 2,
                        group: p.group as u16,
                    },
                    m.to_bytes(),
                ));
            }
            let w = read_f32(src, t)?;
            let m = match &p.calib {
                Some(c) if method == Method::Search && c.covers(&t.name) => {
                    let f = c.factor(&t.name)?;
                    gptq::quantize_gptq(&w, rows, cols, bits, p.group, &f)
                }
                _ => LutMatrix::quantize_with(&w, rows, cols, bits, p.group, method),
            }
            .map_err(|e| Error::invalid(format!("{}: {e}", t.name)))?;
            out(
                logical,
                GgmlType::Lut {
                    bits: bits as u8,
                    group: p.group as u16,
                },
                m.to_bytes(),
            )
        }
        Action::Df11 | Action::Df12 => {
            let bits = match read_bf16_bits(src, t)? {
                Some(b) => b,
                None if p.cast => read_f32(src, t)?
                    .iter()
                    .map(|&v| dfloat::f32_to_bf16_rne(v))
                    .collect(),
                None => {
                    return Err(Error::invalid(format!(
                        "{} is {}: DFloat11 and df12 are lossless only from BF16; pass --cast to round \
                         it to BF16 first (or convert with --to bf16)",
                        t.name, t.ty
                    )))
                }
            };
            let (blob, ty) = if a == Action::Df12 {
                (dfloat::df12::encode(&bits).to_bytes(), GgmlType::Df12)
            } else {
                (dfloat::encode(&bits)?.to_bytes(), GgmlType::Df11)
            };
            let mut o = out(vec![blob.len() as u64], ty, blob);
            o.df11_dims = Some(logical);
            o
        }
        Action::Float(ty) => {
            if t.ty == ty {
                let mut o = out(t.dims.clone(), ty, src.raw(t).to_vec());
                o.converted = false;
                return Ok(o);
            }
            let data: Vec<u8> = match (ty, read_bf16_bits(src, t)?) {
                (GgmlType::BF16, Some(b)) => bytemuck::cast_slice(&b).to_vec(),
                _ => {
                    let w = read_f32(src, t)?;
                    match ty {
                        GgmlType::BF16 => w
                            .iter()
                            .flat_map(|&v| dfloat::f32_to_bf16_rne(v).to_le_bytes())
                            .collect(),
                        GgmlType::F16 => w
                            .iter()
                            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                            .collect(),
                        _ => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    }
                }
            };
            out(logical, ty, data)
        }
    })
}

/// Convert `input` (GGUF, or `.safetensors` for float/DFloat11 targets) into `output`.
/// `progress` is called after each tensor (from worker threads).
pub fn convert(
    input: &Path,
    output: &Path,
    p: &ConvertParams,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Report> {
    let t0 = Instant::now();
    if !crate::lut::layout::GROUPS.contains(&p.group) {
        return Err(Error::invalid(format!(
            "group {} is not one of {:?}",
            p.group,
            crate::lut::layout::GROUPS
        )));
    }
    output::check(input, output, p.overwrite)?;
    let src = Source::open(input)?;
    if src.is_safetensors() && matches!(p.target, Target::Lut { .. }) {
        return Err(Error::invalid(
            "LUT conversion needs a GGUF model (architecture and tokenizer); safetensors input \
             is accepted for --to bf16|f16|f32|df11|df12",
        ));
    }
    let tensors = src.tensors()?;
    let actions: Vec<Action> = tensors.iter().map(|t| action(p, t)).collect();
    let threads = if p.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        p.threads
    };
    // Workers take tensors largest first so the last ones to finish are small.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tensors[i].n_elements()));
    let results: Vec<Mutex<Option<Result<Out>>>> =
        tensors.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(tensors.len()).max(1) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                let r = convert_one(&src, &tensors[i], actions[i], p);
                let failed = r.is_err();
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(Progress {
                    done: d,
                    total: tensors.len(),
                    tensor: &tensors[i].name,
                });
                if failed {
                    // Stop handing out work; the first error is returned below.
                    next.store(order.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_meta(&k, v);
    }
    w.add_meta("suanpan.convert.target", Value::String(p.target.name()));
    if let Target::Lut { .. } = p.target {
        w.add_meta("suanpan.convert.group", Value::U32(p.group as u32));
        w.add_meta("suanpan.convert.mix", Value::Bool(p.mix));
        w.add_meta(
            "suanpan.convert.rest",
            Value::String(format!("{:?}", p.rest).to_lowercase()),
        );
    }
    if let Some(name) = input.file_name() {
        w.add_meta(
            "suanpan.convert.source",
            Value::String(name.to_string_lossy().into_owned()),
        );
    }
    let mut report = Report {
        tensors: tensors.len(),
        ..Default::default()
    };
    let mut outs = Vec::with_capacity(tensors.len());
    for r in results {
        // The first error in file order wins; tensors skipped after it have no result.
        match r.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Err(e)) => return Err(e),
            o => outs.push(o),
        }
    }
    for (t, o) in tensors.iter().zip(outs) {
        let o = o.ok_or_else(|| Error::Internal("conversion stopped early".into()))??;
        report.bytes_in += src.raw(t).len() as u64;
        report.bytes_out += o.data.len() as u64;
        if o.converted {
            report.converted += 1;
            report.converted_elements += t.n_elements();
            report.converted_bytes += o.data.len() as u64;
        }
        if let Some(d) = &o.df11_dims {
            w.add_meta(
                &df11_dims_key(&t.name),
                Value::Array(d.iter().map(|&v| Value::U64(v)).collect()),
            );
        }
        w.add_tensor(&t.name, &o.dims, o.ty, o.data);
    }
    // Checked again: the output may have appeared while converting.
    output::check(input, output, p.overwrite)?;
    let mut tmp = output::TempOutput::create(output)?;
    let tmp_path = tmp.path().to_path_buf();
    let write = |f: &mut std::fs::File| -> std::io::Result<()> {
        let mut bw = std::io::BufWriter::new(f);
        w.write_to(&mut bw)?;
        use std::io::Write;
        bw.flush()
    };
    write(tmp.file()).map_err(|e| Error::io(&tmp_path, e))?;
    tmp.commit()?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Open `path` as a GGUF and check it parses (used after writing).
pub fn verify(path: &Path) -> Result<GgufFile> {
    GgufFile::open(path)
}

/// A TQ1_0 / TQ2_0 matrix as a 2-bit LUT matrix with the same values: each 256-weight
/// block's codes `u` (weight `d·(u − 1)`) become LUT codes with scale `d` (the same f16)
/// and zero 1 for every group of the block (`group` divides 256), so `s·(u − z)` is the
/// block's dequantized value bit for bit.
fn ternary_lossless(
    raw: &[u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    group: usize,
) -> Result<LutMatrix<'static>> {
    use crate::quant::ternary::{codes_tq1_0, codes_tq2_0, TQ1_0_BYTES, TQ2_0_BYTES};
    type CodesOf = fn(&[u8], &mut [u8]) -> u16;
    let (bytes, codes_of): (usize, CodesOf) = match ty {
        GgmlType::TQ1_0 => (TQ1_0_BYTES, codes_tq1_0),
        GgmlType::TQ2_0 => (TQ2_0_BYTES, codes_tq2_0),
        other => return Err(Error::Internal(format!("{other} is not ternary"))),
    };
    if !cols.is_multiple_of(256) || !256usize.is_multiple_of(group) {
        return Err(Error::invalid(format!(
            "{cols} columns in 256-weight blocks into groups of {group}"
        )));
    }
    let blocks = rows * cols / 256;
    if raw.len() != blocks * bytes {
        return Err(Error::bad_model(format!(
            "{} bytes for {blocks} {ty} blocks",
            raw.len()
        )));
    }
    let mut codes = vec![0u8; rows * cols];
    let mut scales = Vec::with_capacity(rows * cols / group);
    for (b, c) in raw.chunks_exact(bytes).zip(codes.chunks_exact_mut(256)) {
        let d = half::f16::from_bits(codes_of(b, c));
        if !d.is_finite() {
            return Err(Error::bad_model(format!("{ty} block scale {d}")));
        }
        scales.extend(std::iter::repeat_n(d, 256 / group));
    }
    let zeros = vec![half::f16::ONE; scales.len()];
    LutMatrix::pack(2, group, rows, cols, &codes, &scales, &zeros)
}
