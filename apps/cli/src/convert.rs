//! `suanpan convert`: GGUF or safetensors in, LUT / DFloat11 / float GGUF out.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use suanpan::convert::{convert, CalibParams, Calibration, ConvertParams, Rest, Target};

#[derive(Args)]
pub struct ConvertArgs {
    /// Input: a GGUF model, or a Hugging Face model.safetensors (for --to bf16|f16|f32|df11|df12).
    input: PathBuf,
    /// Output GGUF.
    output: PathBuf,
    /// Target: lut1, lut2, lut3, lut4, tern (BitNet b1.58 ternary), df11, df12, bf16, f16, f32.
    #[arg(long)]
    to: String,
    /// LUT quantization group size (32, 64 or 128).
    #[arg(long, default_value_t = 64)]
    group: usize,
    /// LUT: plain round-to-nearest min/max quantization instead of the error-minimizing
    /// search (for comparison).
    #[arg(long)]
    rtn: bool,
    /// LUT: format of the token embedding and output head: source, bf16 or df11.
    #[arg(long, default_value = "source")]
    rest: String,
    /// LUT: quantize the token embedding and output head too.
    #[arg(long)]
    quantize_embeddings: bool,
    /// Keep tensors whose name contains this text at their source type (repeatable).
    #[arg(long)]
    keep: Vec<String>,
    /// DFloat11: round F32/F16/quantized tensors to BF16 first (lossy; DFloat11 itself is
    /// lossless from BF16 only).
    #[arg(long)]
    cast: bool,
    /// LUT below 4 bits: quantize attn_v and ffn_down to the same width as the rest
    /// (by default they get one more bit, like llama.cpp's _M mixes).
    #[arg(long)]
    no_mix: bool,
    /// LUT: calibrate on this text file (run the source model over it, then quantize the
    /// block matrices with GPTQ, which moves rounding errors where the real inputs make them
    /// cost least). Use text other than what you evaluate on. GGUF input only.
    #[arg(long, value_name = "TEXT_FILE")]
    calib: Option<PathBuf>,
    /// Most tokens of the calibration text to use (chunks of 512).
    #[arg(long, default_value_t = 4096)]
    calib_tokens: usize,
    /// Worker threads (default: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Replace the output file if it exists (never the input, never a device or folder).
    #[arg(long)]
    force: bool,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let mut target = Target::parse(&a.to)?;
    if let Target::Lut { method, .. } = &mut target {
        if a.rtn && *method == suanpan::lut::Method::Search {
            *method = suanpan::lut::Method::Rtn;
        }
    }
    // Before any work (calibration can take minutes); convert() checks again.
    suanpan::convert::output::check(&a.input, &a.output, a.force)?;
    let rest = match a.rest.as_str() {
        "source" => Rest::Source,
        "bf16" => Rest::Bf16,
        "df11" => Rest::Df11,
        r => anyhow::bail!("--rest {r:?}: expected source, bf16 or df11"),
    };
    let calib = match &a.calib {
        None => None,
        Some(path) => {
            if !matches!(
                target,
                Target::Lut {
                    method: suanpan::lut::Method::Search,
                    ..
                }
            ) {
                anyhow::bail!("--calib applies to lut1..lut4 with the default search (not --rtn, tern, df11 or float targets)");
            }
            let text = suanpan::perplexity::read_text_file(path)?;
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} calibrating [{bar:30}] {pos}/{len} tokens")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            let cp = CalibParams {
                tokens: a.calib_tokens,
                threads: a.threads,
                ..CalibParams::default()
            };
            let c = Calibration::collect(&a.input, &text, &cp, &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .with_context(|| format!("calibrating on {}", path.display()))?;
            bar.finish_and_clear();
            eprintln!("calibrated on {} tokens of {}", c.tokens(), path.display());
            Some(std::sync::Arc::new(c))
        }
    };
    let params = ConvertParams {
        calib,
        group: a.group,
        rest,
        quantize_embeddings: a.quantize_embeddings,
        keep: a.keep.clone(),
        cast: a.cast,
        mix: !a.no_mix,
        threads: a.threads,
        overwrite: a.force,
        ..ConvertParams::new(target)
    };
    // Ctrl-C: remove the temporary output file before exiting (nothing else to undo).
    let _ = ctrlc::set_handler(|| {
        suanpan::convert::output::remove_temporaries();
        std::process::exit(130);
    });
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} converting [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let report = convert(&a.input, &a.output, &params, &|p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.tensor.to_string());
    })
    .with_context(|| format!("converting {}", a.input.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} of {} tensors converted to {} ({:.3} bits/weight), {:.1} MB -> {:.1} MB in {:.1} s",
        a.output.display(),
        report.converted,
        report.tensors,
        target.name(),
        report.bits_per_weight(),
        report.bytes_in as f64 / 1e6,
        report.bytes_out as f64 / 1e6,
        report.seconds
    );
    Ok(())
}
