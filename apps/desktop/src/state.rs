//! The window's state, apart from drawing: the conversation, the settings, the model's
//! load state and the numbers of the status line. The UI reads it and turns clicks into
//! calls here; the worker's events land in [`AppState::apply`]. No GPU, no window: tested
//! directly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use suanpan::chat::ChatMessage;
use suanpan::{CancelToken, GenerateParams, SamplingParams};

use crate::engine::{
    Command, DoneStats, EngineEvent, GenerateRequest, ModelInfo, ModelSource, StopFlag,
};

/// Where the model is in its life.
#[derive(Clone, Debug)]
pub enum LoadState {
    /// Nothing asked yet.
    Empty,
    Loading {
        stage: String,
        fraction: Option<f32>,
        since: Instant,
    },
    Ready(ModelInfo),
    Failed(String),
}

/// One turn shown in the chat.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    /// Set on an assistant turn that ended early or failed ("stopped", an error).
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// The sampling controls of the side panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub system_prompt: String,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub seed: u64,
    pub max_tokens: usize,
    /// Stop strings, one per line; `\n`, `\t` and `\\` are escapes (see [`parse_stops`]).
    pub stop: String,
}

impl Default for Settings {
    fn default() -> Self {
        let s = SamplingParams::default();
        Settings {
            system_prompt: "You are a helpful assistant.".into(),
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            seed: s.seed,
            max_tokens: 256,
            stop: String::new(),
        }
    }
}

impl Settings {
    pub fn generate_params(&self) -> GenerateParams {
        GenerateParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                seed: self.seed,
                ..SamplingParams::default()
            },
            // The chat template writes BOS and special tokens itself.
            add_special: true,
            parse_special: true,
            stop: parse_stops(&self.stop),
            constraint: None,
        }
    }
}

/// The stop strings of the settings field: one per line, empty lines skipped, and `\n`,
/// `\t`, `\\` written as escapes (so a stop string can hold a newline).
pub fn parse_stops(field: &str) -> Vec<String> {
    field
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut out = String::new();
            let mut it = l.chars();
            while let Some(c) = it.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match it.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('\\') => out.push('\\'),
                    Some(o) => {
                        out.push('\\');
                        out.push(o);
                    }
                    None => out.push('\\'),
                }
            }
            out
        })
        .collect()
}

/// The generation in flight.
#[derive(Clone, Debug)]
pub struct Running {
    pub id: u64,
    pub submitted: Instant,
    pub first_token: Option<Instant>,
    pub pieces: usize,
    pub prompt_tokens: Option<usize>,
    pub stopping: bool,
}

/// Numbers of the last generation, for the status line.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Submit → first piece on screen's side of the channel.
    pub ttft: Option<Duration>,
    pub decode_tps: Option<f64>,
    pub ctx_used: usize,
    pub last_stop: Option<&'static str>,
    pub generated_tokens: usize,
    /// Tokens run through the model before the reply.
    pub prompt_tokens: usize,
    /// Tokens of the conversation kept from the context instead of being run again.
    pub reused_tokens: usize,
    /// Time to ingest the prompt, as the runtime measured it.
    pub prompt_ms: f64,
}

/// Everything the window shows.
#[derive(Debug)]
pub struct AppState {
    pub load: LoadState,
    pub turns: Vec<Turn>,
    pub input: String,
    pub settings: Settings,
    pub model_path_field: String,
    pub running: Option<Running>,
    pub metrics: Metrics,
    /// Errors to show in the window until dismissed.
    pub errors: Vec<String>,
    pub stop_flag: StopFlag,
    cancel: Option<CancelToken>,
    next_id: u64,
}

impl AppState {
    pub fn new(stop_flag: StopFlag) -> Self {
        AppState {
            load: LoadState::Empty,
            turns: Vec::new(),
            input: String::new(),
            settings: Settings::default(),
            model_path_field: String::new(),
            running: None,
            metrics: Metrics::default(),
            errors: Vec::new(),
            stop_flag,
            cancel: None,
            next_id: 1,
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.load, LoadState::Ready(_))
    }

    pub fn is_generating(&self) -> bool {
        self.running.is_some()
    }

    pub fn model_info(&self) -> Option<&ModelInfo> {
        match &self.load {
            LoadState::Ready(i) => Some(i),
            _ => None,
        }
    }

    /// Ask for a model; refused while a reply is streaming.
    pub fn load(&mut self, src: ModelSource) -> Option<Command> {
        if self.is_generating() {
            self.errors
                .push("stop the running reply before loading another model".into());
            return None;
        }
        if let ModelSource::File(p) = &src {
            self.model_path_field = p.display().to_string();
        }
        self.load = LoadState::Loading {
            stage: "starting".into(),
            fraction: None,
            since: Instant::now(),
        };
        self.cancel = None;
        self.turns.clear();
        self.metrics = Metrics::default();
        Some(Command::Load(src))
    }

    /// The path typed in the model field, as a load command.
    pub fn load_from_field(&mut self) -> Option<Command> {
        let p = self.model_path_field.trim();
        if p.is_empty() {
            return self.load(ModelSource::Default);
        }
        let path = PathBuf::from(p);
        if !path.is_file() {
            self.errors
                .push(format!("no such file: {}", path.display()));
            return None;
        }
        self.load(ModelSource::File(path))
    }

    /// Send the text in the input box as the user's turn.
    pub fn submit(&mut self) -> Option<Command> {
        let text = self.input.trim().to_string();
        if text.is_empty() || self.is_generating() {
            return None;
        }
        if !self.is_ready() {
            self.errors
                .push("the model is not loaded yet; wait for it or load one".into());
            return None;
        }
        self.input.clear();
        self.turns.push(Turn {
            role: Role::User,
            text,
            note: None,
        });
        self.start()
    }

    /// Drop the last reply and generate it again.
    pub fn regenerate(&mut self) -> Option<Command> {
        if self.is_generating() || !self.is_ready() {
            return None;
        }
        if self.turns.last().is_some_and(|t| t.role == Role::Assistant) {
            self.turns.pop();
        }
        if self.turns.last().is_none_or(|t| t.role != Role::User) {
            return None;
        }
        // A different reply: move the seed on (a fixed seed would repeat the same text).
        self.settings.seed = self.settings.seed.wrapping_add(1);
        self.start()
    }

    /// Stop the reply at the next token (Stop button, Esc).
    pub fn stop(&mut self) {
        if let Some(r) = &mut self.running {
            r.stopping = true;
            self.stop_flag.raise();
            // Also interrupts the prompt ingestion, before any token exists.
            if let Some(c) = &self.cancel {
                c.cancel();
            }
        }
    }

    fn start(&mut self) -> Option<Command> {
        let mut messages = Vec::new();
        let sys = self.settings.system_prompt.trim();
        if !sys.is_empty() {
            messages.push(ChatMessage::system(sys));
        }
        for t in &self.turns {
            messages.push(match t.role {
                Role::User => ChatMessage::user(t.text.clone()),
                Role::Assistant => ChatMessage::assistant(t.text.clone()),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stop_flag.clear();
        self.turns.push(Turn {
            role: Role::Assistant,
            text: String::new(),
            note: None,
        });
        self.running = Some(Running {
            id,
            submitted: Instant::now(),
            first_token: None,
            pieces: 0,
            prompt_tokens: None,
            stopping: false,
        });
        self.metrics.ttft = None;
        self.metrics.decode_tps = None;
        Some(Command::Generate(GenerateRequest {
            id,
            messages,
            params: self.settings.generate_params(),
        }))
    }

    /// Apply an event of the worker.
    pub fn apply(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::LoadProgress { stage, fraction } => {
                let since = match &self.load {
                    LoadState::Loading { since, .. } => *since,
                    _ => Instant::now(),
                };
                self.load = LoadState::Loading {
                    stage,
                    fraction,
                    since,
                };
            }
            EngineEvent::Loaded { info, cancel } => {
                self.model_path_field = info.path.display().to_string();
                self.metrics.ctx_used = 0;
                self.load = LoadState::Ready(info);
                self.cancel = Some(cancel);
            }
            EngineEvent::LoadFailed(msg) => {
                self.errors.push(format!("could not load the model: {msg}"));
                self.load = LoadState::Failed(msg);
                self.running = None;
            }
            EngineEvent::Started {
                id,
                prompt_tokens,
                reused_tokens,
                ctx_used,
            } => {
                if let Some(r) = self.running.as_mut().filter(|r| r.id == id) {
                    r.prompt_tokens = Some(prompt_tokens);
                    self.metrics.ctx_used = ctx_used;
                    self.metrics.prompt_tokens = prompt_tokens;
                    self.metrics.reused_tokens = reused_tokens;
                }
            }
            EngineEvent::Token { id, piece } => {
                let Some(r) = self.running.as_mut().filter(|r| r.id == id) else {
                    return;
                };
                let now = Instant::now();
                if r.first_token.is_none() {
                    r.first_token = Some(now);
                    self.metrics.ttft = Some(now - r.submitted);
                }
                r.pieces += 1;
                self.metrics.ctx_used += 1;
                if let Some(t) = self.turns.last_mut() {
                    t.text.push_str(&piece);
                }
            }
            EngineEvent::Done { id, stats } => {
                if self.running.as_ref().is_some_and(|r| r.id == id) {
                    self.finish(stats);
                }
            }
            EngineEvent::Failed { id, error } => {
                if self.running.as_ref().is_some_and(|r| r.id == id) {
                    self.running = None;
                    self.metrics.ctx_used = 0;
                    if let Some(t) = self.turns.last_mut() {
                        t.note = Some(format!("error: {error}"));
                    }
                    self.errors.push(error);
                }
            }
        }
    }

    fn finish(&mut self, stats: DoneStats) {
        self.running = None;
        self.metrics.decode_tps = Some(stats.decode_tps);
        self.metrics.ctx_used = stats.ctx_used;
        self.metrics.last_stop = Some(stats.stop);
        self.metrics.generated_tokens = stats.generated_tokens;
        self.metrics.prompt_tokens = stats.prompt_tokens;
        self.metrics.reused_tokens = stats.reused_tokens;
        self.metrics.prompt_ms = stats.prompt_ms;
        if let Some(t) = self.turns.last_mut() {
            match stats.stop {
                "stopped" => t.note = Some("stopped".into()),
                "max tokens" => t.note = Some(format!("cut at {} tokens", stats.generated_tokens)),
                "stop string" => t.note = Some("ended at a stop string".into()),
                _ => {}
            }
        }
    }

    /// Tokens per second while a reply streams (pieces ≈ tokens), else the last final rate.
    pub fn live_tps(&self) -> Option<f64> {
        match &self.running {
            Some(Running {
                first_token: Some(t0),
                pieces,
                ..
            }) if *pieces > 1 => Some((*pieces - 1) as f64 / t0.elapsed().as_secs_f64().max(1e-9)),
            Some(_) => None,
            None => self.metrics.decode_tps,
        }
    }

    /// The last assistant reply.
    pub fn last_reply(&self) -> Option<&str> {
        self.turns
            .iter()
            .rev()
            .find(|t| t.role == Role::Assistant)
            .map(|t| t.text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn info() -> ModelInfo {
        ModelInfo {
            path: PathBuf::from("m.gguf"),
            arch: "llama".into(),
            n_params: 1,
            backend: "cpu".into(),
            on_gpu: false,
            backend_note: None,
            load_ms: 1.0,
            n_ctx: 512,
            kv_bytes: 0,
            file_bytes: 0,
            has_template: true,
        }
    }

    fn ready() -> AppState {
        let mut s = AppState::new(StopFlag::default());
        s.load(ModelSource::Default);
        s.apply(EngineEvent::Loaded {
            info: info(),
            cancel: CancelToken::new(),
        });
        s
    }

    fn gen_id(cmd: Option<Command>) -> (u64, Vec<ChatMessage>) {
        match cmd {
            Some(Command::Generate(r)) => (r.id, r.messages),
            other => panic!("expected a generate command, got {other:?}"),
        }
    }

    fn done(id: u64, stop: &'static str) -> EngineEvent {
        EngineEvent::Done {
            id,
            stats: DoneStats {
                prompt_tokens: 5,
                reused_tokens: 0,
                prompt_ms: 1.0,
                generated_tokens: 2,
                decode_tps: 10.0,
                ctx_used: 7,
                stop,
            },
        }
    }

    #[test]
    fn submit_streams_and_finishes() {
        let mut s = ready();
        s.settings.system_prompt = "Be brief.".into();
        s.input = "  Hello  ".into();
        let (id, msgs) = gen_id(s.submit());
        assert_eq!(
            msgs,
            vec![ChatMessage::system("Be brief."), ChatMessage::user("Hello")]
        );
        assert!(s.input.is_empty());
        assert!(s.is_generating());
        // A second submit while streaming is refused.
        s.input = "again".into();
        assert!(s.submit().is_none());
        s.apply(EngineEvent::Token {
            id,
            piece: "Hi".into(),
        });
        s.apply(EngineEvent::Token {
            id,
            piece: " there".into(),
        });
        // Events of an older request are ignored.
        s.apply(EngineEvent::Token {
            id: id + 100,
            piece: "zzz".into(),
        });
        assert!(s.metrics.ttft.is_some());
        s.apply(done(id, "end of generation"));
        assert!(!s.is_generating());
        assert_eq!(s.last_reply(), Some("Hi there"));
        assert_eq!(s.metrics.ctx_used, 7);
        assert_eq!(s.turns.len(), 2);
    }

    #[test]
    fn stop_raises_the_flag_and_keeps_the_reply() {
        let mut s = ready();
        s.input = "Hello".into();
        let (id, _) = gen_id(s.submit());
        s.apply(EngineEvent::Token {
            id,
            piece: "Par".into(),
        });
        s.stop();
        assert!(s.stop_flag.is_raised());
        s.apply(done(id, "stopped"));
        assert_eq!(s.last_reply(), Some("Par"));
        assert_eq!(s.turns[1].note.as_deref(), Some("stopped"));
        // A new request clears the flag.
        s.input = "more".into();
        gen_id(s.submit());
        assert!(!s.stop_flag.is_raised());
    }

    #[test]
    fn regenerate_replaces_the_last_reply_with_a_new_seed() {
        let mut s = ready();
        s.input = "Hello".into();
        let (id, _) = gen_id(s.submit());
        s.apply(EngineEvent::Token {
            id,
            piece: "A".into(),
        });
        s.apply(done(id, "end of generation"));
        let seed = s.settings.seed;
        let (id2, msgs) = gen_id(s.regenerate());
        assert_ne!(id, id2);
        assert_eq!(s.settings.seed, seed.wrapping_add(1));
        // The conversation sent ends with the user's turn, not the old reply.
        assert_eq!(msgs.last(), Some(&ChatMessage::user("Hello")));
        assert_eq!(s.turns.len(), 2);
        assert_eq!(s.last_reply(), Some(""));
    }

    #[test]
    fn errors_are_shown_not_thrown() {
        let mut s = AppState::new(StopFlag::default());
        s.input = "Hello".into();
        assert!(s.submit().is_none());
        assert_eq!(s.errors.len(), 1);
        s.model_path_field = "/nonexistent/model.gguf".into();
        assert!(s.load_from_field().is_none());
        assert!(s.errors[1].contains("no such file"));
        s.load(ModelSource::Default);
        s.apply(EngineEvent::LoadFailed("bad model file: truncated".into()));
        assert!(matches!(s.load, LoadState::Failed(_)));
        let mut s = ready();
        s.input = "Hello".into();
        let (id, _) = gen_id(s.submit());
        s.apply(EngineEvent::Failed {
            id,
            error: "context full: 600 tokens".into(),
        });
        assert!(!s.is_generating());
        assert!(s.errors[0].contains("context full"));
        assert!(s.turns[1].note.as_deref().unwrap().contains("context full"));
    }

    #[test]
    fn stop_strings_are_lines_with_escapes() {
        assert!(parse_stops("").is_empty());
        assert_eq!(
            parse_stops("User:\n\\nEND\\n\n\na\\tb\\\\c\\x\\"),
            vec!["User:", "\nEND\n", "a\tb\\c\\x\\"]
        );
        let mut s = Settings {
            stop: "###".into(),
            ..Default::default()
        };
        assert_eq!(s.generate_params().stop, vec!["###"]);
        s.stop.clear();
        assert!(s.generate_params().stop.is_empty());
    }

    #[test]
    fn reuse_counts_reach_the_metrics() {
        let mut s = ready();
        s.input = "Hello".into();
        let (id, _) = gen_id(s.submit());
        s.apply(EngineEvent::Started {
            id,
            prompt_tokens: 1,
            reused_tokens: 30,
            ctx_used: 31,
        });
        assert_eq!((s.metrics.prompt_tokens, s.metrics.reused_tokens), (1, 30));
        s.apply(done(id, "stop string"));
        assert_eq!(s.metrics.reused_tokens, 0);
        assert_eq!(s.turns[1].note.as_deref(), Some("ended at a stop string"));
    }
}
