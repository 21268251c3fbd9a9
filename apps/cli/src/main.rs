//! `suanpan`: run, chat with, measure and inspect models from the command line.
//!
//! Generated text goes to stdout, everything else (progress, stats, errors) to stderr, so
//! `suanpan run ... > out.txt` captures only the model's words.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use suanpan::chat::ChatMessage;
use suanpan::model::Logits;
use suanpan::sample::SamplingParams;
use suanpan::{GenerateParams, Model, ModelParams, Session, SessionParams};

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
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model file (GGUF). Default: SmolLM2-135M-Instruct, installed on first use.
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Compute threads (default: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Context length in tokens (default: the model's, capped at 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    ctx: usize,
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
}

impl SampleArgs {
    /// Generation settings; `parse_special` lets special-token text in the prompt (chat
    /// templates) become special tokens.
    fn generate_params(&self, parse_special: bool) -> GenerateParams {
        GenerateParams {
            max_tokens: self.n,
            sampling: self.params(),
            add_special: true,
            parse_special,
            stop: self.stop.clone(),
        }
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
}

#[derive(Args)]
struct InfoArgs {
    /// Model file (default: the default model).
    model: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long = "prompt-tokens", default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long = "gen-tokens", default_value_t = 64)]
    gen_tokens: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// One JSON line on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

fn model_path(p: &Option<PathBuf>) -> Result<PathBuf> {
    match p {
        Some(p) => Ok(p.clone()),
        None => Ok(suanpan::install::ensure_default_model(|line| {
            eprintln!("{line}")
        })?),
    }
}

fn load(args: &ModelArgs) -> Result<Arc<Model>> {
    let path = model_path(&args.model)?;
    let model = Model::load(
        &path,
        &ModelParams {
            n_threads: args.threads,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", path.display()))?;
    Ok(Arc::new(model))
}

fn session(model: &Arc<Model>, args: &ModelArgs) -> Result<Session> {
    Ok(model.session(&SessionParams {
        n_ctx: args.ctx,
        ..Default::default()
    })?)
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
    let model = load(&a.model)?;
    let mut s = session(&model, &a.model)?;
    let params = a.sample.generate_params(false);
    let stats = s.generate(&a.prompt, &params, print_piece)?;
    // stdout holds exactly the generated text; the line break goes to stderr.
    report(&model, &stats);
    Ok(())
}

/// One chat turn: the session renders the whole conversation, reuses the cached prefix
/// and generates the reply.
fn chat_turn(
    model: &Arc<Model>,
    s: &mut Session,
    msgs: &mut Vec<ChatMessage>,
    params: &GenerateParams,
) -> Result<()> {
    let mut reply = String::new();
    let stats = s.chat(msgs, params, |piece| {
        reply.push_str(piece);
        print_piece(piece)
    })?;
    println!();
    report(model, &stats);
    msgs.push(ChatMessage::assistant(reply));
    Ok(())
}

fn chat(a: ChatArgs) -> Result<()> {
    let model = load(&a.model)?;
    let mut s = session(&model, &a.model)?;
    let params = a.sample.generate_params(true);
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
        return chat_turn(&model, &mut s, &mut msgs, &params);
    }
    eprintln!("suanpan chat: type a message and press Enter; an empty line or Ctrl-D ends.");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        msgs.push(ChatMessage {
            role: "user".into(),
            content: line.trim_end().to_string(),
        });
        chat_turn(&model, &mut s, &mut msgs, &params)?;
    }
}

fn perplexity(a: PplArgs) -> Result<()> {
    let model = load(&a.model)?;
    let text = suanpan::perplexity::read_text_file(&a.file)?;
    let n_ctx = if a.model.ctx == 0 { 512 } else { a.model.ctx };
    let limit = a.chunks.unwrap_or(usize::MAX);
    let t0 = Instant::now();
    eprintln!(
        "perplexity: {} with -c {n_ctx}, {}",
        a.file.display(),
        model.backend_name()
    );
    let r = suanpan::perplexity::perplexity(&model, &text, n_ctx, |i, n, ppl| {
        eprint!("[{i}/{n}]{ppl:.4} ");
        let _ = std::io::stderr().flush();
        i < limit
    })?;
    eprintln!(
        "\n{} tokens, {} chunks of {}, {} scored, {:.1} s",
        r.n_tokens,
        r.n_chunks,
        r.n_ctx,
        r.n_scored,
        t0.elapsed().as_secs_f64()
    );
    println!("PPL = {:.4}", r.ppl);
    Ok(())
}

fn info(a: InfoArgs) -> Result<()> {
    let path = model_path(&a.model)?;
    let model = Model::load(
        &path,
        &ModelParams {
            n_threads: 1,
            ..Default::default()
        },
    )?;
    let c = model.config();
    let f = model.file();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
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
    let types: Vec<String> = model
        .tensor_types()
        .iter()
        .map(|(t, n)| format!("{t}×{n}"))
        .collect();
    println!("tensor types:  {}", types.join(", "));
    println!("tied output:   {}", model.weights().tied_output);
    let kv_per_tok = c.n_layer * c.kv_dim() * 4;
    let ctx = c.n_ctx_train.min(4096);
    println!(
        "memory:        weights {:.1} MB (mapped) + KV cache f16 {:.1} KB/token = {:.1} MB at {ctx} tokens",
        size as f64 / 1e6,
        kv_per_tok as f64 / 1024.0,
        (kv_per_tok * ctx) as f64 / 1e6
    );
    println!(
        "weights read per token: {:.1} MB",
        model.weights().bytes_per_token() as f64 / 1e6
    );
    println!(
        "chat template: {}",
        if model.chat_template().is_some() {
            "yes"
        } else {
            "no (ChatML fallback)"
        }
    );
    println!("backend:       {}", model.backend_name());
    Ok(())
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
    let n_ctx = a.prompt_tokens + a.gen_tokens + 1;
    let mut s = model.session(&SessionParams {
        n_ctx: n_ctx.max(a.model.ctx),
        n_batch: a.prompt_tokens,
        all_logits: false,
        ..Default::default()
    })?;
    // A deterministic prompt of ordinary tokens (as llama-bench uses random ids).
    let n_vocab = model.config().n_vocab as u64;
    let prompt: Vec<u32> = (0..a.prompt_tokens as u64)
        .map(|i| ((i * 7919 + 1000) % (n_vocab - 1000)) as u32 + 500)
        .collect();
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for rep in 0..=a.reps {
        s.reset();
        let t0 = Instant::now();
        s.eval(&prompt, Logits::Last)?;
        let t_pp = t0.elapsed().as_secs_f64();
        let mut next = 1000u32;
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
        }
    }
    let (pp, tg) = (median(pp), median(tg));
    let gbs = tg * model.weights().bytes_per_token() as f64 / 1e9;
    if a.json {
        println!(
            "{{\"engine\":\"suanpan\",\"model\":{:?},\"threads\":{},\"prompt_tokens\":{},\"gen_tokens\":{},\"prompt_tps\":{:.2},\"decode_tps\":{:.2},\"weights_gbps\":{:.2},\"backend\":{:?}}}",
            model.path().display().to_string(),
            model.n_threads(),
            a.prompt_tokens,
            a.gen_tokens,
            pp,
            tg,
            gbs,
            model.backend_name()
        );
    } else {
        println!("model    {}", model.path().display());
        println!("backend  {}", model.backend_name());
        println!("prompt   {:>8.1} tok/s  ({} tokens)", pp, a.prompt_tokens);
        println!(
            "decode   {:>8.1} tok/s  ({} tokens, {:.2} GB/s of weights)",
            tg, a.gen_tokens, gbs
        );
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Perplexity(a) => perplexity(a),
        Cmd::Info(a) => info(a),
        Cmd::Bench(a) => bench(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
