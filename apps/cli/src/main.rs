//! `suanpan`: run, chat with, measure and inspect models from the command line.
//!
//! Generated text goes to stdout, everything else (progress, stats, errors) to stderr, so
//! `suanpan run ... > out.txt` captures only the model's words.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod constrain;
mod convert;
mod dfloat_sizes;
mod progress;
mod serve;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use suanpan::backend::profile::OpProfile;
use suanpan::chat::ChatMessage;
use suanpan::kv::{KvGeom, KvMode, KvParams, Overflow};
use suanpan::model::Logits;
use suanpan::sample::SamplingParams;
use suanpan::{
    BackendKind, GenerateParams, Model, ModelParams, Session, SessionParams, StopReason,
};

#[derive(Parser)]
#[command(
    name = "suanpan",
    version,
    about = "On-device LLM inference with table-lookup kernels"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Plain completion of a prompt (no chat template); generated text on stdout.
    Run(RunArgs),
    /// Chat with the model's chat template; interactive when no -p is given.
    Chat(ChatArgs),
    /// Perplexity of a text file, computed as llama.cpp's llama-perplexity does.
    Perplexity(PplArgs),
    /// Architecture, sizes, tensor types and memory of a model.
    Info(InfoArgs),
    /// Prompt and decode speed (tokens/s) on a synthetic prompt.
    Bench(BenchArgs),
    /// Convert a model: LUT low-bit (lut1..4, tern), DFloat11 (df11), df12, bf16/f16/f32.
    Convert(convert::ConvertArgs),
    /// KV cache bytes per token in each mode and the context a memory budget buys.
    Estimate(EstimateArgs),
    /// An OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models).
    Serve(serve::ServeArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model file (GGUF). Default: SmolLM2-135M-Instruct, installed on first use.
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Compute threads (default: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Context length in tokens (default: the model's, capped at 4096; with --kv-budget, what
    /// the budget buys).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    ctx: usize,
    /// Backend: cpu, gpu, or auto (the GPU when a hardware adapter can run the model,
    /// else the CPU, saying why).
    #[arg(short = 'b', long = "backend", default_value = "auto")]
    backend: BackendKind,
    /// Run DFloat11 matrices as stored instead of transcoding them to df12 at load.
    #[arg(long = "keep-df11")]
    keep_df11: bool,
    #[command(flatten)]
    kv: KvArgs,
}

#[derive(Args, Clone)]
struct KvArgs {
    /// KV cache mode: f16 (llama.cpp's default), or KIVI-style q8, q4, q2.
    #[arg(long = "kv", default_value = "f16")]
    kv: KvMode,
    /// Most recent tokens kept in f16 by a quantized cache.
    #[arg(long = "kv-window", default_value_t = 128)]
    window: usize,
    /// Quantization group: tokens per key group (page), channels per value group (32, 64, 128).
    #[arg(long = "kv-group", default_value_t = 32)]
    group: usize,
    /// Hadamard-rotate keys and queries before quantizing.
    #[arg(long = "kv-rotate")]
    rotate: bool,
    /// First tokens never quantized nor evicted (attention sinks).
    #[arg(long = "kv-sinks", default_value_t = 4)]
    sinks: usize,
    /// Key values per page kept exactly (largest quantization errors; default 64 for q2,
    /// 0 for q8/q4; at most 64).
    #[arg(long = "kv-outliers")]
    outliers: Option<usize>,
    /// Memory budget of the KV cache (e.g. 64M, 1.5G); sets the context length.
    #[arg(long = "kv-budget")]
    budget: Option<String>,
    /// When the context is full: error, or slide the window keeping the sinks.
    #[arg(long = "kv-overflow", default_value = "error")]
    overflow: Overflow,
}

impl KvArgs {
    fn params(&self) -> Result<KvParams> {
        Ok(KvParams {
            mode: self.kv,
            window: self.window,
            group: self.group,
            rotate: self.rotate,
            sinks: self.sinks,
            outliers: self.outliers,
            budget: self
                .budget
                .as_deref()
                .map(suanpan::kv::parse_bytes)
                .transpose()?,
            overflow: self.overflow,
            ..Default::default()
        })
    }
}

#[derive(Args, Clone)]
struct SampleArgs {
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n: usize,
    /// Temperature; 0 means greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    temp: f32,
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    repeat_last_n: usize,
    /// Stop before this text (repeatable); it is not printed.
    #[arg(long = "stop")]
    stop: Vec<String>,
    #[command(flatten)]
    constrain: constrain::ConstrainArgs,
}

impl SampleArgs {
    /// Generation settings; `parse_special` lets special-token text in the prompt (chat
    /// templates) become special tokens.
    fn generate_params(&self, parse_special: bool) -> Result<GenerateParams> {
        Ok(GenerateParams {
            max_tokens: self.n,
            sampling: self.params(),
            add_special: true,
            parse_special,
            stop: self.stop.clone(),
            constraint: self.constrain.constraint()?,
        })
    }

    fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long)]
    prompt: String,
    #[command(flatten)]
    sample: SampleArgs,
    /// Newline-delimited JSON events on stdout instead of text: load, token, done, error
    /// (schema in the README).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// One user message; without it, an interactive chat on stdin.
    #[arg(short = 'p', long)]
    prompt: Option<String>,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sample: SampleArgs,
}

#[derive(Args)]
struct PplArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Stop after this many chunks (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// Also run with the f16 cache and report the PPL change and top-1 agreement.
    #[arg(long = "compare-f16")]
    compare_f16: bool,
    /// One JSON line on stdout after the `PPL = x` line.
    #[arg(long)]
    json: bool,
    /// Write the most likely token at every scored position to this file, one id per line
    /// (for top-1 agreement between runs).
    #[arg(long = "save-top1")]
    save_top1: Option<PathBuf>,
}

#[derive(Args)]
struct InfoArgs {
    /// Model file (default: the default model).
    model: Option<PathBuf>,
    /// Backend to report (and load the model on): cpu, gpu or auto.
    #[arg(short = 'b', long = "backend", default_value = "auto")]
    backend: BackendKind,
    /// Load DFloat11 matrices as stored instead of transcoding them to df12.
    #[arg(long = "keep-df11")]
    keep_df11: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long = "prompt-tokens", default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long = "gen-tokens", default_value_t = 64)]
    gen_tokens: usize,
    /// GPU backend: also print per-kernel GPU times from timestamp queries.
    #[arg(long = "kernel-timings", default_value_t = true, action = clap::ArgAction::Set)]
    kernel_timings: bool,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Decode at this context: fill the cache to ctx − (reps+1)·gen tokens first, then time
    /// reps+1 decode runs of --gen-tokens (the first is warm-up).
    #[arg(long = "ctx", id = "bench_ctx")]
    bench_ctx: Option<usize>,
    /// One JSON line on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure memory read bandwidth and report decode as a fraction of the roofline.
    #[arg(long)]
    bandwidth: bool,
    /// CPU backend: time every op of the timed runs and print each op's share of a prompt
    /// token and of a decoded token (stderr).
    #[arg(long)]
    profile: bool,
}

#[derive(Args)]
struct EstimateArgs {
    /// Model file (default: the default model).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Memory budget for the KV cache (e.g. 64M, 1G).
    #[arg(long = "kv-budget", default_value = "64M")]
    budget: String,
    /// Tokens kept in f16 by quantized modes.
    #[arg(long = "kv-window", default_value_t = 128)]
    window: usize,
    /// Quantization group (32, 64, 128).
    #[arg(long = "kv-group", default_value_t = 32)]
    group: usize,
    /// Prompt batch size (quantized modes stage one batch in f16).
    #[arg(long = "batch", default_value_t = 512)]
    batch: usize,
}

fn model_path(p: &Option<PathBuf>) -> Result<PathBuf> {
    match p {
        Some(p) => Ok(p.clone()),
        None => Ok(progress::ensure_default_model()?),
    }
}

/// `Model::load` with a progress bar on stderr.
fn load_with_bar(path: &Path, params: ModelParams) -> Result<Model> {
    let (bar, progress) = progress::load_bar();
    let r = Model::load(
        path,
        &ModelParams {
            progress: Some(progress),
            ..params
        },
    );
    bar.finish_and_clear();
    r.with_context(|| format!("loading {}", path.display()))
}

fn load(args: &ModelArgs) -> Result<Arc<Model>> {
    let path = model_path(&args.model)?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    if args.threads > cores {
        eprintln!(
            "[suanpan] warning: --threads {} on {cores} cores: threads beyond the core count \
             wait on each other and make every token slower",
            args.threads
        );
    }
    let backend = args.backend;
    let model = load_with_bar(
        &path,
        ModelParams {
            n_threads: args.threads,
            backend,
            keep_df11: args.keep_df11,
            ..Default::default()
        },
    )?;
    if let Some(note) = model.backend_note() {
        eprintln!("[suanpan] {note}");
    }
    Ok(Arc::new(model))
}

fn session(model: &Arc<Model>, args: &ModelArgs) -> Result<Session> {
    let s = model.session(&SessionParams {
        n_ctx: args.ctx,
        kv: args.kv.params()?,
        ..Default::default()
    })?;
    let kv = s.kv();
    eprintln!(
        "[suanpan] KV cache {}: {} tokens, {:.1} MB{}",
        kv.mode(),
        kv.capacity(),
        kv.bytes() as f64 / 1e6,
        if kv.params().overflow == Overflow::Slide {
            ", sliding window"
        } else {
            ""
        }
    );
    Ok(s)
}

fn print_piece(piece: &str) -> ControlFlow<()> {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(piece.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        return ControlFlow::Break(()); // stdout closed (e.g. piped into `head`)
    }
    ControlFlow::Continue(())
}

fn report(model: &Model, stats: &suanpan::GenerateStats) {
    eprintln!(
        "\n[suanpan] load {:.0} ms | prompt {} tok, {:.1} tok/s | decode {} tok, {:.1} tok/s | {}",
        model.load_ms(),
        stats.prompt_tokens,
        stats.prompt_tps(),
        stats.generated_tokens,
        stats.decode_tps(),
        model.backend_name()
    );
}

fn run(a: RunArgs) -> Result<()> {
    if a.json {
        return run_json(&a).inspect_err(|e| {
            emit("error", &[("message", error_text(e).into())]);
        });
    }
    let model = load(&a.model)?;
    let mut s = session(&model, &a.model)?;
    let params = a.sample.generate_params(false)?;
    let stats = s.generate(&a.prompt, &params, print_piece)?;
    // stdout holds exactly the generated text; the line break goes to stderr.
    report(&model, &stats);
    Ok(())
}

/// One JSON event on its own line of stdout, `event` first and then `fields` in order;
/// false once stdout is closed.
fn emit(event: &str, fields: &[(&str, serde_json::Value)]) -> bool {
    let mut line = format!("{{\"event\":{}", serde_json::Value::from(event));
    for (k, v) in fields {
        line.push_str(&format!(",{}:{v}", serde_json::Value::from(*k)));
    }
    line.push_str("}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

/// Rounded for JSON output (milliseconds, tokens/s): no 17-digit noise.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn stop_name(s: StopReason) -> &'static str {
    match s {
        StopReason::EndOfGeneration => "eog",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopString => "stop_string",
        StopReason::Callback => "closed",
    }
}

/// `run --json`: the events the README documents, one JSON object per line on stdout.
fn run_json(a: &RunArgs) -> Result<()> {
    let model = load(&a.model)?;
    emit(
        "load",
        &[
            ("ms", round2(model.load_ms()).into()),
            ("model", model.path().display().to_string().into()),
            ("backend", model.backend_name().into()),
        ],
    );
    let mut s = session(&model, &a.model)?;
    let params = a.sample.generate_params(false)?;
    let mut index = 0usize;
    let stats = s.generate(&a.prompt, &params, |piece| {
        let ok = emit("token", &[("index", index.into()), ("text", piece.into())]);
        index += 1;
        if ok {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(()) // stdout closed
        }
    })?;
    emit(
        "done",
        &[
            ("prompt_tokens", stats.prompt_tokens.into()),
            ("generated_tokens", stats.generated_tokens.into()),
            ("prompt_ms", round2(stats.prompt_ms).into()),
            ("decode_ms", round2(stats.generate_ms).into()),
            ("prompt_tps", round2(stats.prompt_tps()).into()),
            ("decode_tps", round2(stats.decode_tps()).into()),
            ("stop", stop_name(stats.stop).into()),
            ("tokens", stats.tokens.into()),
        ],
    );
    Ok(())
}

/// Ctrl-C in the chat REPL. While a reply is being generated the first Ctrl-C stops it (the
/// session's cancel token, and `stop` for the callback in case the signal lands before
/// the generation has started and reset the token); a second one before it has stopped,
/// or one at the prompt, ends the process with status 130.
struct Interrupt {
    generating: AtomicBool,
    stop: AtomicBool,
}

impl Interrupt {
    fn install(cancel: suanpan::CancelToken) -> Result<Arc<Interrupt>> {
        let st = Arc::new(Interrupt {
            generating: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let h = st.clone();
        ctrlc::set_handler(move || {
            if h.generating.load(Ordering::SeqCst) && !h.stop.swap(true, Ordering::SeqCst) {
                cancel.cancel();
            } else {
                eprintln!();
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
        Ok(st)
    }

    fn begin(&self) {
        self.stop.store(false, Ordering::SeqCst);
        self.generating.store(true, Ordering::SeqCst);
    }

    fn end(&self) {
        self.generating.store(false, Ordering::SeqCst);
    }

    fn requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// One chat turn: the session renders the whole conversation, reuses the cached prefix
/// and generates the reply. With `interrupt` (the REPL), Ctrl-C stops the reply: the part
/// already printed stays in the conversation as the assistant's answer (it is in the
/// session's context too), so the next message follows it; a reply stopped before any
/// text is dropped together with its question.
fn chat_turn(
    model: &Arc<Model>,
    s: &mut Session,
    msgs: &mut Vec<ChatMessage>,
    params: &GenerateParams,
    interrupt: Option<&Interrupt>,
) -> Result<()> {
    let stopped = || interrupt.is_some_and(Interrupt::requested);
    let mut reply = String::new();
    if let Some(i) = interrupt {
        i.begin();
    }
    let r = s.chat(msgs, params, |piece| {
        reply.push_str(piece);
        let flow = print_piece(piece);
        if stopped() {
            return ControlFlow::Break(());
        }
        flow
    });
    if let Some(i) = interrupt {
        i.end();
    }
    println!();
    let interrupted = match r {
        Ok(stats) if stats.stop == StopReason::Callback && stopped() => true,
        Ok(stats) => {
            report(model, &stats);
            false
        }
        Err(suanpan::Error::Cancelled) if stopped() => true,
        Err(e @ suanpan::Error::ContextFull(_)) if interrupt.is_some() && reply.is_empty() => {
            // In the REPL a message too long for the context is dropped, not the chat.
            eprintln!("[suanpan] {e}; that message was not added");
            msgs.pop();
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if interrupted {
        eprintln!("[suanpan] reply stopped (Ctrl-C at the prompt quits)");
        if reply.is_empty() {
            msgs.pop(); // the user's message: nothing of an answer came
            return Ok(());
        }
    }
    msgs.push(ChatMessage::assistant(reply));
    Ok(())
}

fn chat(a: ChatArgs) -> Result<()> {
    let model = load(&a.model)?;
    let mut s = session(&model, &a.model)?;
    let params = a.sample.generate_params(true)?;
    let mut msgs = Vec::new();
    if let Some(sys) = &a.system {
        msgs.push(ChatMessage {
            role: "system".into(),
            content: sys.clone(),
        });
    }
    if let Some(p) = a.prompt {
        msgs.push(ChatMessage {
            role: "user".into(),
            content: p,
        });
        return chat_turn(&model, &mut s, &mut msgs, &params, None);
    }
    let interrupt = Interrupt::install(s.cancel_token())?;
    eprintln!(
        "suanpan chat: type a message and press Enter; Ctrl-C stops a reply; an empty line, \
         Ctrl-D or Ctrl-C at the prompt ends."
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut raw = Vec::new();
        if stdin.lock().read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        let line = match String::from_utf8(raw) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("[suanpan] that line is not UTF-8 text; invalid bytes became U+FFFD");
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        if line.trim().is_empty() {
            return Ok(());
        }
        msgs.push(ChatMessage {
            role: "user".into(),
            content: line.trim_end().to_string(),
        });
        chat_turn(&model, &mut s, &mut msgs, &params, Some(&interrupt))?;
    }
}

fn kv_geom(model: &Model) -> KvGeom {
    let c = model.config();
    KvGeom {
        n_layer: c.n_layer,
        n_kv_head: c.n_kv_head,
        head_dim: c.head_dim,
    }
}

fn perplexity(a: PplArgs) -> Result<()> {
    let model = load(&a.model)?;
    let text = suanpan::perplexity::read_text_file(&a.file)?;
    let n_ctx = if a.model.ctx == 0 { 512 } else { a.model.ctx };
    let kv = a.model.kv.params()?;
    if a.chunks == Some(0) {
        bail!("--chunks must be at least 1");
    }
    let limit = a.chunks.unwrap_or(usize::MAX);
    let run = |kv: &KvParams| -> Result<(suanpan::perplexity::PerplexityResult, f64)> {
        let t0 = Instant::now();
        eprintln!(
            "perplexity: {} with -c {n_ctx}, KV {}{}, {}",
            a.file.display(),
            kv.mode,
            if kv.rotate { " rotated" } else { "" },
            model.backend_name()
        );
        let bar = progress::ChunkBar::new();
        let r = suanpan::perplexity::perplexity_with(&model, &text, n_ctx, kv, |i, n, ppl| {
            bar.chunk(i, n.min(limit), ppl);
            i < limit
        });
        bar.finish();
        let r = r?;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "{} tokens, {} chunks of {}, {} scored, {:.1} s",
            r.n_tokens, r.n_chunks, r.n_ctx, r.n_scored, secs
        );
        Ok((r, secs))
    };
    let (r, secs) = run(&kv)?;
    println!("PPL = {:.4}", r.ppl);
    if let Some(path) = &a.save_top1 {
        let text: String = r.top1.iter().map(|t| format!("{t}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let base = if a.compare_f16 && kv.mode != KvMode::F16 {
        let (b, _) = run(&KvParams {
            mode: KvMode::F16,
            rotate: false,
            ..kv.clone()
        })?;
        let agree = suanpan::perplexity::top1_agreement(&r.top1, &b.top1);
        println!(
            "f16 PPL = {:.4}, change {:+.3}%, top-1 agreement with f16 {:.2}%",
            b.ppl,
            (r.ppl / b.ppl - 1.0) * 100.0,
            agree * 100.0
        );
        Some((b.ppl, agree))
    } else {
        None
    };
    if a.json {
        let g = kv_geom(&model);
        let fp = kv.footprint(&g, n_ctx, 512)?;
        let (f16_ppl, agree) = match base {
            Some((p, ag)) => (format!("{p:.6}"), format!("{ag:.6}")),
            None => ("null".into(), "null".into()),
        };
        println!(
            "{{\"engine\":\"suanpan\",\"file\":{:?},\"n_ctx\":{n_ctx},\"kv\":\"{}\",\"window\":{},\"group\":{},\"rotate\":{},\"sinks\":{},\"n_tokens\":{},\"n_chunks\":{},\"n_scored\":{},\"ppl\":{:.6},\"f16_ppl\":{f16_ppl},\"top1_agreement_vs_f16\":{agree},\"kv_bytes_per_token\":{:.1},\"kv_bytes_at_ctx_batch512\":{},\"seconds\":{secs:.1},\"threads\":{}}}",
            a.file.display().to_string(),
            kv.mode,
            kv.window,
            kv.group,
            kv.rotate,
            kv.sinks,
            r.n_tokens,
            r.n_chunks,
            r.n_scored,
            r.ppl,
            fp.bytes_per_token,
            fp.bytes,
            model.n_threads()
        );
    }
    Ok(())
}

/// Bytes per token and the context `budget` buys, per KV mode.
fn kv_table(model: &Model, base: &KvParams, budget: usize, n_batch: usize) -> Result<()> {
    let g = kv_geom(model);
    let train = model.config().n_ctx_train;
    println!(
        "KV cache (window {}, group {}, sinks {}, batch {n_batch}); budget {:.1} MiB:",
        base.window,
        base.group,
        base.sinks,
        budget as f64 / (1 << 20) as f64
    );
    println!("  mode  bytes/token  fixed MB  MB at {train:>5}  context for budget");
    for mode in KvMode::ALL {
        let p = KvParams {
            mode,
            ..base.clone()
        };
        let fp = p.footprint(&g, train, n_batch)?;
        let ctx = match p.capacity_for_budget(&g, budget, n_batch, train) {
            Ok(c) if c == train => format!("{c} (trained length)"),
            Ok(c) => c.to_string(),
            Err(e) => format!("none: {e}"),
        };
        println!(
            "  {:<4}  {:>11.0}  {:>8.1}  {:>11.1}  {}",
            mode.name(),
            fp.bytes_per_token,
            fp.fixed_bytes as f64 / 1e6,
            fp.bytes as f64 / 1e6,
            ctx
        );
    }
    Ok(())
}

fn estimate(a: EstimateArgs) -> Result<()> {
    let path = model_path(&a.model)?;
    let model = load_with_bar(
        &path,
        ModelParams {
            n_threads: 1,
            ..Default::default()
        },
    )?;
    let budget = suanpan::kv::parse_bytes(&a.budget)?;
    let base = KvParams {
        window: a.window,
        group: a.group,
        ..Default::default()
    };
    println!("model: {}", path.display());
    dfloat_sizes::print(&model);
    kv_table(&model, &base, budget, a.batch)
}

fn info(a: InfoArgs) -> Result<()> {
    let path = model_path(&a.model)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // The tensor types come from the header alone, so a file the runtime cannot run still
    // says what it holds and which of its types are missing kernels.
    let header = suanpan::format::gguf::GgufFile::open(&path)?;
    let types = tensor_types_line(&header);
    let model = match load_with_bar(
        &path,
        ModelParams {
            n_threads: 1,
            backend: a.backend,
            keep_df11: a.keep_df11,
            ..Default::default()
        },
    ) {
        Ok(m) => m,
        Err(e) => {
            println!(
                "file:          {} ({:.1} MB, GGUF v{})",
                path.display(),
                size as f64 / 1e6,
                header.version
            );
            if let Some(arch) = header.get_str("general.architecture") {
                println!("architecture:  {arch}");
            }
            println!("tensor types:  {types}");
            return Err(e);
        }
    };
    drop(header);
    let c = model.config();
    let f = model.file();
    println!(
        "file:          {} ({:.1} MB, GGUF v{})",
        path.display(),
        size as f64 / 1e6,
        f.version
    );
    if let Some(name) = f.get_str("general.name") {
        println!("name:          {name}");
    }
    println!(
        "architecture:  {} ({} layers, hidden {}, FFN {})",
        c.arch_name, c.n_layer, c.n_embd, c.n_ff
    );
    println!(
        "attention:     {} heads, {} KV heads, head dim {}, RoPE base {}, eps {}",
        c.n_head, c.n_kv_head, c.head_dim, c.rope_base, c.norm_eps
    );
    println!(
        "vocabulary:    {} tokens, context {} (trained)",
        c.n_vocab, c.n_ctx_train
    );
    println!("parameters:    {:.1} M", model.n_params() as f64 / 1e6);
    println!("tensor types:  {types}");
    println!("tied output:   {}", model.weights().tied_output);
    dfloat_sizes::print(&model);
    let kv_per_tok = c.n_layer * c.kv_dim() * 4;
    let ctx = c.n_ctx_train.min(4096);
    println!(
        "memory:        weights {:.1} MB (mapped) + KV cache f16 {:.1} KB/token = {:.1} MB at {ctx} tokens",
        size as f64 / 1e6,
        kv_per_tok as f64 / 1024.0,
        (kv_per_tok * ctx) as f64 / 1e6
    );
    kv_table(&model, &KvParams::default(), 64 << 20, 512)?;
    println!(
        "weights read per token: {:.1} MB",
        model.weights().bytes_per_token() as f64 / 1e6
    );
    let template = match (model.chat_template(), model.chat_template_error()) {
        (Some(_), _) => "yes".to_string(),
        (None, Some(e)) => format!("broken, chat unavailable ({e})"),
        (None, None) if model.effective_chat_template().is_some() => {
            "no (ChatML fallback)".to_string()
        }
        (None, None) => "no, and no ChatML tokens: a base model, chat unavailable".to_string(),
    };
    println!("chat template: {template}");
    println!("backend:       {}", model.backend_name());
    if let Some(note) = model.backend_note() {
        println!("               {note}");
    }
    print_gpu_adapters();
    Ok(())
}

/// `Q4_K×60 (CPU only), F32×61`: every tensor type of a file with its count, in order of
/// first use, marking the types the runtime cannot compute with, those only its CPU backend
/// runs, and those it runs through scalar reference kernels on this machine.
fn tensor_types_line(f: &suanpan::format::gguf::GgufFile) -> String {
    use suanpan::format::GgmlType::{Df11, Df12, Lut, BF16, F16, F32, Q4_0, Q4_1, Q8_0};
    let mut v: Vec<(suanpan::format::GgmlType, usize)> = Vec::new();
    for t in &f.tensors {
        match v.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some(e) => e.1 += 1,
            None => v.push((t.ty, 1)),
        }
    }
    v.iter()
        .map(|(t, n)| {
            if !t.is_supported() {
                format!("{t}×{n} (no kernels yet)")
            } else if t.cpu_only() && !suanpan::backend::cpu::dot::has_simd(*t) {
                format!("{t}×{n} (CPU only, scalar kernels)")
            } else if t.cpu_only() {
                format!("{t}×{n} (CPU only)")
            } else if !matches!(
                t,
                F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Lut { .. } | Df11 | Df12
            ) && !suanpan::backend::cpu::dot::has_simd(*t)
            {
                format!("{t}×{n} (scalar CPU kernels)")
            } else {
                format!("{t}×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The GPU adapters wgpu sees and what each can do (for `info`).
fn print_gpu_adapters() {
    use suanpan::backend::gpu::{GpuDevice, GpuOptions};
    match GpuDevice::new(&GpuOptions::default()) {
        Ok(d) => {
            let c = d.caps();
            println!("gpu adapter:   {}", d.adapter_name());
            println!(
                "gpu features:  shader-f16 {}, subgroups {}, timestamps {}; max binding {} MiB, workgroup memory {} KiB",
                c.shader_f16,
                c.subgroups,
                c.timestamps,
                c.max_binding >> 20,
                c.max_workgroup_storage >> 10
            );
        }
        Err(e) => println!("gpu adapter:   none ({e})"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(a: BenchArgs) -> Result<()> {
    if a.prompt_tokens == 0 || a.gen_tokens == 0 || a.reps == 0 {
        bail!("--prompt-tokens, --gen-tokens and --reps must be positive");
    }
    let model = load(&a.model)?;
    if let Some(ctx) = a.bench_ctx {
        return bench_ctx(&a, &model, ctx);
    }
    let n_ctx = a.prompt_tokens + a.gen_tokens + 1;
    let mut s = model.session(&SessionParams {
        n_ctx: n_ctx.max(a.model.ctx),
        n_batch: a.prompt_tokens,
        all_logits: false,
        kv: a.model.kv.params()?,
        ..Default::default()
    })?;
    let prompt = bench_prompt(model.config().n_vocab, a.prompt_tokens);
    let profiling = model.on_gpu() && a.kernel_timings && s.set_gpu_profiling(true)?;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    let ops = a.profile && !model.on_gpu();
    if a.profile && !ops {
        eprintln!("(--profile times the CPU backend's ops; on the GPU see the kernel timings)");
    }
    let (mut pp_ops, mut tg_ops) = (OpProfile::default(), OpProfile::default());
    for rep in 0..=a.reps {
        s.reset();
        s.set_op_profiling(ops);
        let t0 = Instant::now();
        s.eval(&prompt, Logits::Last)?;
        let t_pp = t0.elapsed().as_secs_f64();
        let pp_prof = s.op_profile().cloned();
        s.set_op_profiling(ops);
        let mut next = bench_prompt(model.config().n_vocab, 1)[0];
        let t1 = Instant::now();
        for _ in 0..a.gen_tokens {
            let logits = s.eval(&[next], Logits::Last)?;
            next = suanpan::sample::argmax(logits);
        }
        let t_tg = t1.elapsed().as_secs_f64();
        if rep > 0 {
            // rep 0 warms caches and the thread pool.
            pp.push(a.prompt_tokens as f64 / t_pp);
            tg.push(a.gen_tokens as f64 / t_tg);
            if let (Some(p), Some(t)) = (pp_prof, s.op_profile()) {
                pp_ops.merge(&p);
                tg_ops.merge(t);
            }
        }
    }
    s.set_op_profiling(false);
    if ops {
        print_op_profile("prompt", &pp_ops);
        print_op_profile("decode", &tg_ops);
    }
    let (pp, tg) = (median(pp), median(tg));
    let bpt = model.weights().bytes_per_token();
    let gbs = tg * bpt as f64 / 1e9;
    // 1 GiB: far beyond any cache of the phones and desktops we target.
    let bw = a.bandwidth.then(|| model.measure_bandwidth(1 << 30));
    let tc = model.transcode_stats();
    if a.json {
        let mut bw_json = bw.map_or(String::new(), |b| {
            format!(",\"bandwidth_gbps\":{b:.2},\"roofline\":{:.3}", gbs / b)
        });
        if let Some(t) = tc {
            bw_json += &format!(",\"transcode_gbps\":{:.3}", t.gb_per_s());
        }
        println!(
            "{{\"engine\":\"suanpan\",\"model\":{:?},\"threads\":{},\"prompt_tokens\":{},\"gen_tokens\":{},\"prompt_tps\":{:.2},\"decode_tps\":{:.2},\"weights_bytes_per_token\":{},\"weights_gbps\":{:.2},\"backend\":{:?}{bw_json}}}",
            model.path().display().to_string(),
            model.n_threads(),
            a.prompt_tokens,
            a.gen_tokens,
            pp,
            tg,
            bpt,
            gbs,
            model.backend_name()
        );
    } else {
        println!("model    {}", model.path().display());
        println!("backend  {}", model.backend_name());
        if let Some(t) = tc {
            println!(
                "load     DF11 → df12: {:.1} MB of BF16 in {:.2} s ({:.2} GB/s)",
                t.bf16_bytes as f64 / 1e6,
                t.seconds,
                t.gb_per_s()
            );
        }
        println!("prompt   {:>8.1} tok/s  ({} tokens)", pp, a.prompt_tokens);
        println!(
            "decode   {:>8.1} tok/s  ({} tokens, {:.1} MB of weights per token, {:.2} GB/s)",
            tg,
            a.gen_tokens,
            bpt as f64 / 1e6,
            gbs
        );
        if let Some(b) = bw {
            println!(
                "memory   {b:>8.2} GB/s read bandwidth; decode at {:.0}% of the roofline",
                100.0 * gbs / b
            );
        }
    }
    if profiling {
        let t = s.gpu_timings();
        let total: f64 = t.iter().map(|x| x.2).sum();
        eprintln!(
            "GPU kernel time over all {} runs (timestamp queries; one pass per dispatch):",
            a.reps + 1
        );
        eprintln!(
            "{:<18} {:>10} {:>12} {:>7}",
            "kernel", "dispatches", "total ms", "share"
        );
        for (name, n, ms) in t {
            eprintln!(
                "{name:<18} {n:>10} {ms:>12.2} {:>6.1}%",
                100.0 * ms / total.max(1e-9)
            );
        }
    } else if model.on_gpu() {
        eprintln!("(no GPU kernel timings: the adapter has no timestamp queries or they are off)");
    }
    Ok(())
}

/// One `--profile` table: each op's time per token and share of the pass (stderr).
fn print_op_profile(what: &str, p: &OpProfile) {
    let tokens = p.tokens().max(1) as f64;
    eprintln!(
        "{what}: time per op over {} passes, {} tokens ({:.3} ms per token in ops)",
        p.passes(),
        p.tokens(),
        1e3 * p.total_seconds() / tokens
    );
    eprintln!(
        "  {:<30} {:>12} {:>12} {:>7}",
        "op", "calls/token", "ms/token", "share"
    );
    for r in p.rows() {
        eprintln!(
            "  {:<30} {:>12.2} {:>12.4} {:>6.1}%",
            r.op,
            r.calls as f64 / tokens,
            1e3 * r.seconds / tokens,
            100.0 * r.share
        );
    }
}

/// Decode speed at a long context: one prefill to `ctx − (reps+1)·gen`, then reps+1 timed
/// decode runs (the first is warm-up) that end exactly at `ctx`.
fn bench_ctx(a: &BenchArgs, model: &Arc<Model>, ctx: usize) -> Result<()> {
    let gen = a.gen_tokens;
    let fill = match ctx.checked_sub((a.reps + 1) * gen) {
        Some(f) if f > 0 => f,
        _ => bail!("--ctx {ctx} leaves no room for a prompt before (reps+1)·gen-tokens"),
    };
    let kv = a.model.kv.params()?;
    let mut s = model.session(&SessionParams {
        n_ctx: ctx,
        n_batch: 512,
        all_logits: false,
        kv,
        ..Default::default()
    })?;
    let prompt = bench_prompt(model.config().n_vocab, fill);
    let t0 = Instant::now();
    s.eval(&prompt, Logits::Last)?;
    let pp = fill as f64 / t0.elapsed().as_secs_f64();
    let mut next = bench_prompt(model.config().n_vocab, 1)[0];
    let mut tg = Vec::new();
    for rep in 0..=a.reps {
        let t1 = Instant::now();
        for _ in 0..gen {
            let logits = s.eval(&[next], Logits::Last)?;
            next = suanpan::sample::argmax(logits);
        }
        if rep > 0 {
            tg.push(gen as f64 / t1.elapsed().as_secs_f64());
        }
    }
    let tg_all = tg.clone();
    let tg = median(tg);
    let kvc = s.kv();
    if a.json {
        println!(
            "{{\"engine\":\"suanpan\",\"kv\":\"{}\",\"rotate\":{},\"window\":{},\"group\":{},\"ctx\":{ctx},\"fill\":{fill},\"gen_tokens\":{gen},\"reps\":{},\"prefill_tps\":{pp:.2},\"decode_tps\":{tg:.2},\"decode_tps_runs\":{:?},\"kv_bytes\":{},\"threads\":{},\"backend\":{:?}}}",
            kvc.mode(),
            kvc.params().rotate,
            kvc.params().window,
            kvc.params().group,
            a.reps,
            tg_all.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>(),
            kvc.bytes(),
            model.n_threads(),
            model.backend_name()
        );
    } else {
        println!("model    {}", model.path().display());
        println!(
            "KV       {} ({:.1} MB for {ctx} tokens)",
            kvc.mode(),
            kvc.bytes() as f64 / 1e6
        );
        println!("prefill  {pp:>8.1} tok/s  ({fill} tokens)");
        println!(
            "decode   {tg:>8.1} tok/s  (context {}..{ctx}, median of {} runs of {gen})",
            ctx - a.reps * gen,
            a.reps
        );
    }
    Ok(())
}

/// A deterministic prompt of `n` ordinary tokens (as llama-bench uses random ids): ids in
/// 500..vocab−500 when the vocabulary is large enough, else anywhere in it (synthetic models).
fn bench_prompt(n_vocab: usize, n: usize) -> Vec<u32> {
    let (lo, span) = if n_vocab > 2000 {
        (500, n_vocab as u64 - 1000)
    } else {
        (0, n_vocab.max(1) as u64)
    };
    (0..n as u64)
        .map(|i| ((i * 7919 + 1000) % span) as u32 + lo)
        .collect()
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Perplexity(a) => perplexity(a),
        Cmd::Info(a) => info(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Convert(a) => convert::run(a),
        Cmd::Estimate(a) => estimate(a),
        Cmd::Serve(a) => serve::run(a),
    };
    if let Err(e) = r {
        eprintln!("error: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// An error and its causes on one line, each cause once: a runtime error that already
/// ends with its cause's text (`I/O error on X: No such file`) does not repeat it.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_prompt_ids_stay_in_the_vocabulary() {
        for v in [1usize, 2, 320, 1999, 2001, 49152] {
            let p = super::bench_prompt(v, 300);
            assert_eq!(p.len(), 300);
            assert!(p.iter().all(|&t| (t as usize) < v), "vocab {v}");
        }
        // Large vocabularies keep away from the special tokens at both ends.
        assert!(super::bench_prompt(49152, 300)
            .iter()
            .all(|&t| (500..49152 - 500).contains(&(t as usize))));
    }
}
