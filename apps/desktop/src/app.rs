//! The winit application: one window, egui for widgets, wgpu for drawing, the inference
//! worker behind a channel. Worker events arrive as winit user events through the
//! event-loop proxy, so the loop only ever sleeps on winit.
//!
//! Frames: at once on input; on worker events and egui's own repaint requests (spinner,
//! progress bar), but while a model loads or a reply streams at most every
//! [`MIN_FRAME`] (every [`MIN_FRAME_SOFTWARE`] when the adapter rasterizes on the CPU, as
//! lavapipe does: a 900×640 frame costs it ~50 ms of CPU), so that drawing leaves the
//! cores to inference.
//!
//! The `--demo-prompt` mode drives the same window the way a person would (types the
//! prompt, presses Send, waits for the reply), then captures the frame and dumps the state.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use winit::application::ApplicationHandler;
use winit::event::WindowEvent;
use winit::event_loop::{ActiveEventLoop, ControlFlow, EventLoopProxy};
use winit::window::{Window, WindowId};

use crate::engine::{Command, EngineEvent, ModelSource, Sink};
use crate::frames::{Frame, FrameLog};
use crate::gpu::Gpu;
use crate::state::{AppState, LoadState, Role};
use crate::ui::{self, Action};

/// Events the event loop receives from other threads.
#[derive(Debug)]
pub enum UserEvent {
    Engine(EngineEvent),
    /// The file dialog closed: a path, nothing (cancelled), or why it could not open.
    Picked(Result<Option<PathBuf>, String>),
}

/// The worker's sink: each event wakes the event loop.
#[derive(Clone)]
pub struct ProxySink(pub EventLoopProxy<UserEvent>);

impl Sink for ProxySink {
    fn send(&self, ev: EngineEvent) -> bool {
        self.0.send_event(UserEvent::Engine(ev)).is_ok()
    }
}

/// What `--demo-prompt` / `--screenshot` / `--state-json` ask for.
#[derive(Clone, Debug)]
pub struct Demo {
    pub prompt: Option<String>,
    pub screenshot: Option<PathBuf>,
    pub state_json: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    WaitModel,
    Streaming,
    /// Draw this many more frames so the last piece is laid out, then capture.
    Settle(u32),
    Capture,
    Finished,
}

/// A text egui laid out in the captured frame, with its place in pixels.
struct RenderedText {
    text: String,
    rect_px: [f32; 4],
}

/// Shortest gap between frames that are not answers to input while the model works (30 fps).
pub const MIN_FRAME: Duration = Duration::from_millis(33);
/// The same on a software rasterizer (10 fps).
pub const MIN_FRAME_SOFTWARE: Duration = Duration::from_millis(100);

pub struct App {
    proxy: EventLoopProxy<UserEvent>,
    commands: Sender<Command>,
    pub state: AppState,
    initial: Option<Command>,
    window: Option<Arc<Window>>,
    gpu: Option<Gpu>,
    egui_ctx: egui::Context,
    egui_winit: Option<egui_winit::State>,
    frames: FrameLog,
    next_repaint: Option<Instant>,
    last_frame: Option<Instant>,
    rss: Option<u64>,
    rss_at: Option<Instant>,
    size: (u32, u32),
    demo: Option<Demo>,
    phase: Phase,
    started: Instant,
    /// Why the demo failed (the process then exits non-zero).
    failure: Option<String>,
    rendered: Vec<RenderedText>,
    /// CPU and wall time at the start of the reply in flight, and the split of the last one.
    gen_cpu_start: Option<(crate::mem::CpuSplit, Instant)>,
    gen_cpu: Option<Value>,
    pub exit_code: i32,
}

impl App {
    pub fn new(
        proxy: EventLoopProxy<UserEvent>,
        commands: Sender<Command>,
        mut state: AppState,
        model: Option<PathBuf>,
        demo: Option<Demo>,
        size: (u32, u32),
    ) -> App {
        let initial = state.load(match model {
            Some(p) => ModelSource::File(p),
            None => ModelSource::Default,
        });
        App {
            proxy,
            commands,
            state,
            initial,
            window: None,
            gpu: None,
            egui_ctx: egui::Context::default(),
            egui_winit: None,
            frames: FrameLog::default(),
            next_repaint: None,
            last_frame: None,
            rss: None,
            rss_at: None,
            size,
            demo,
            phase: Phase::WaitModel,
            started: Instant::now(),
            failure: None,
            rendered: Vec::new(),
            gen_cpu_start: None,
            gen_cpu: None,
            exit_code: 0,
        }
    }

    fn send(&mut self, cmd: Option<Command>) {
        if let Some(cmd) = cmd {
            if self.commands.send(cmd).is_err() {
                self.state
                    .errors
                    .push("the inference thread has stopped; restart the app".into());
            }
        }
    }

    fn act(&mut self, a: Action) {
        let was = self.state.is_generating();
        self.act_inner(a);
        if !was && self.state.is_generating() {
            self.gen_cpu_start = crate::mem::cpu_split().map(|c| (c, Instant::now()));
        }
    }

    /// Called after each worker event: closes the CPU account of a finished reply.
    fn note_generation_end(&mut self) {
        if self.state.is_generating() {
            return;
        }
        let (Some((c0, t0)), Some(c1)) = (self.gen_cpu_start.take(), crate::mem::cpu_split())
        else {
            return;
        };
        let d = c1.since(&c0);
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        self.gen_cpu = Some(json!({
            "wall_s": r(t0.elapsed().as_secs_f64()),
            "inference_cpu_s": r(d.inference),
            "ui_thread_cpu_s": r(d.ui),
            "other_threads_cpu_s": r(d.other),
        }));
    }

    fn act_inner(&mut self, a: Action) {
        match a {
            Action::Submit => {
                let c = self.state.submit();
                self.send(c)
            }
            Action::Stop => self.state.stop(),
            Action::Regenerate => {
                let c = self.state.regenerate();
                self.send(c)
            }
            Action::Load(src) => {
                let c = self.state.load(src);
                self.send(c)
            }
            Action::LoadField => {
                let c = self.state.load_from_field();
                self.send(c)
            }
            Action::Browse => {
                let proxy = self.proxy.clone();
                std::thread::spawn(move || {
                    let _ = proxy.send_event(UserEvent::Picked(crate::pick::pick_gguf()));
                });
            }
        }
    }

    fn redraw(&mut self, el: &ActiveEventLoop) {
        let (Some(window), Some(gpu), Some(egui_winit)) =
            (&self.window, &mut self.gpu, &mut self.egui_winit)
        else {
            return;
        };
        let t0 = Instant::now();
        if self
            .rss_at
            .is_none_or(|t| t.elapsed() > Duration::from_millis(500))
        {
            self.rss = crate::mem::rss_bytes();
            self.rss_at = Some(t0);
        }
        if let Ok(mut errs) = gpu.errors.lock() {
            self.state.errors.append(&mut errs);
        }
        let generating = self.state.is_generating();
        let status = ui::Status {
            ui_adapter: &gpu.adapter,
            rss_bytes: self.rss,
            frame_ms: self.frames.last_cpu_ms(),
        };
        let raw = egui_winit.take_egui_input(window);
        let mut actions = Vec::new();
        let state = &mut self.state;
        let mut out = self.egui_ctx.run_ui(raw, |ui| {
            actions = ui::draw(ui, state, &status);
        });
        egui_winit.handle_platform_output(window, out.platform_output);
        let capture = self.phase == Phase::Capture;
        if capture {
            self.rendered = collect_texts(&out.shapes, out.pixels_per_point);
        }
        let ppp = out.pixels_per_point;
        let jobs = self.egui_ctx.tessellate(out.shapes, ppp);
        let clear = self.egui_ctx.global_style().visuals.panel_fill;
        let ui_ms = t0.elapsed().as_secs_f64() * 1e3;
        window.pre_present_notify();
        let shot = gpu.render(&jobs, &mut out.textures_delta, ppp, clear, capture);
        self.frames.push(Frame {
            start: t0,
            ui_ms,
            gpu_ms: t0.elapsed().as_secs_f64() * 1e3 - ui_ms,
            generating,
        });

        let delay = out
            .viewport_output
            .get(&egui::ViewportId::ROOT)
            .map_or(Duration::MAX, |v| v.repaint_delay);
        self.last_frame = Some(t0);
        self.next_repaint = None;
        if let Some(at) = Instant::now().checked_add(delay) {
            self.schedule(at);
        }

        for a in actions {
            self.act(a);
        }
        match shot {
            Ok(Some(cap)) => self.finish_demo(el, Some(cap)),
            Ok(None) => {}
            Err(e) => {
                if capture {
                    self.failure = Some(e.clone());
                    self.finish_demo(el, None);
                }
                self.state.errors.push(e);
            }
        }
        self.drive_demo();
    }

    /// Ask for a frame at `at`, no sooner than [`MIN_FRAME`] after the last one while the
    /// model is busy.
    fn schedule(&mut self, at: Instant) {
        let busy =
            self.state.is_generating() || matches!(self.state.load, LoadState::Loading { .. });
        let gap = if self.gpu.as_ref().is_some_and(|g| g.software) {
            MIN_FRAME_SOFTWARE
        } else {
            MIN_FRAME
        };
        let at = match self.last_frame {
            Some(last) if busy => at.max(last + gap),
            _ => at,
        };
        self.next_repaint = Some(self.next_repaint.map_or(at, |t| t.min(at)));
    }

    /// Move the demo along after a frame or an event.
    fn drive_demo(&mut self) {
        let Some(demo) = self.demo.clone() else {
            return;
        };
        if matches!(self.phase, Phase::Capture | Phase::Finished) {
            return;
        }
        if self.started.elapsed() > demo.timeout {
            self.failure = Some(format!("the demo did not finish within {:?}", demo.timeout));
            self.phase = Phase::Capture;
            return;
        }
        match self.phase {
            Phase::WaitModel => match &self.state.load {
                LoadState::Ready(_) => match &demo.prompt {
                    Some(p) => {
                        // As a person would: type into the input box and press Send.
                        self.state.input = p.clone();
                        self.act(Action::Submit);
                        self.phase = Phase::Streaming;
                    }
                    None => self.phase = Phase::Settle(3),
                },
                LoadState::Failed(msg) => {
                    self.failure = Some(format!("loading the model failed: {msg}"));
                    self.phase = Phase::Settle(3);
                }
                _ => {}
            },
            Phase::Streaming => {
                if !self.state.is_generating() {
                    let reply = self.state.last_reply().unwrap_or_default();
                    if let Some(note) = self.state.turns.last().and_then(|t| t.note.clone()) {
                        if note.starts_with("error") {
                            self.failure = Some(note);
                        }
                    }
                    if reply.trim().is_empty() && self.failure.is_none() {
                        self.failure = Some("the reply is empty".into());
                    }
                    self.phase = Phase::Settle(3);
                }
            }
            Phase::Settle(0) => self.phase = Phase::Capture,
            Phase::Settle(n) => self.phase = Phase::Settle(n - 1),
            Phase::Capture | Phase::Finished => {}
        }
        if let Some(w) = &self.window {
            if !matches!(self.phase, Phase::WaitModel | Phase::Streaming) {
                w.request_redraw();
            }
        }
    }

    /// Write the screenshot and the state dump, then leave.
    fn finish_demo(&mut self, el: &ActiveEventLoop, cap: Option<crate::gpu::Capture>) {
        let Some(demo) = self.demo.clone() else {
            return;
        };
        self.phase = Phase::Finished;
        if let (Some(path), Some(cap)) = (&demo.screenshot, &cap) {
            if let Err(e) = cap.save_png(path) {
                self.failure.get_or_insert(e);
            }
        }
        if let Some(path) = &demo.state_json {
            let dump = serde_json::to_string_pretty(&self.dump(&demo)).unwrap_or_default();
            if let Err(e) = std::fs::write(path, dump) {
                self.failure
                    .get_or_insert(format!("cannot write {}: {e}", path.display()));
            }
        }
        if let Some(f) = &self.failure {
            eprintln!("suanpan-desktop: demo failed: {f}");
            self.exit_code = 1;
        }
        el.exit();
    }

    fn dump(&self, demo: &Demo) -> Value {
        let st = &self.state;
        let info = st.model_info();
        json!({
            "ok": self.failure.is_none(),
            "failure": self.failure,
            "prompt": demo.prompt,
            "reply": st.last_reply(),
            "system_prompt": st.settings.system_prompt,
            "stop_strings": crate::state::parse_stops(&st.settings.stop),
            "turns": st.turns.iter().map(|t| json!({
                "role": match t.role { Role::User => "user", Role::Assistant => "assistant" },
                "text": t.text,
                "note": t.note,
            })).collect::<Vec<_>>(),
            "errors": st.errors,
            "model": info.map(|i| json!({
                "path": i.path,
                "arch": i.arch,
                "n_params": i.n_params,
                "backend": i.backend,
                "on_gpu": i.on_gpu,
                "backend_note": i.backend_note,
                "load_ms": i.load_ms,
                "n_ctx": i.n_ctx,
                "kv_bytes": i.kv_bytes,
            })),
            "ui_adapter": self.gpu.as_ref().map(|g| g.adapter.clone()),
            "metrics": {
                "ttft_ms": st.metrics.ttft.map(|d| d.as_secs_f64() * 1e3),
                "decode_tps": st.metrics.decode_tps,
                "prompt_tokens": st.metrics.prompt_tokens,
                "reused_tokens": st.metrics.reused_tokens,
                "prompt_ms": st.metrics.prompt_ms,
                "generated_tokens": st.metrics.generated_tokens,
                "ctx_used": st.metrics.ctx_used,
                "stop": st.metrics.last_stop,
                "rss_bytes": self.rss,
            },
            "frames": {
                "during_generation": self.frames.summary(true),
                "all": self.frames.summary(false),
            },
            "cpu_during_generation": self.gen_cpu,
            "window_px": self.gpu.as_ref().map(|g| g.size()),
            "screenshot": demo.screenshot,
            "rendered_texts": self.rendered.iter().map(|r| json!({
                "text": r.text,
                "rect_px": r.rect_px,
            })).collect::<Vec<_>>(),
            "wall_s": self.started.elapsed().as_secs_f64(),
        })
    }

    fn fail_start(&mut self, el: &ActiveEventLoop, msg: String) {
        eprintln!("suanpan-desktop: {msg}");
        self.failure = Some(msg);
        if self.demo.is_some() {
            self.finish_demo(el, None);
        }
        self.exit_code = 1;
        el.exit();
    }
}

impl ApplicationHandler<UserEvent> for App {
    fn resumed(&mut self, el: &ActiveEventLoop) {
        if self.window.is_some() {
            return;
        }
        let attrs = Window::default_attributes()
            .with_title("suanpan")
            .with_inner_size(winit::dpi::PhysicalSize::new(self.size.0, self.size.1));
        let window = match el.create_window(attrs) {
            Ok(w) => Arc::new(w),
            Err(e) => return self.fail_start(el, format!("cannot open a window: {e}")),
        };
        let gpu = match Gpu::new(window.clone(), el.owned_display_handle()) {
            Ok(g) => g,
            Err(e) => return self.fail_start(el, e),
        };
        self.egui_winit = Some(egui_winit::State::new(
            self.egui_ctx.clone(),
            egui::ViewportId::ROOT,
            el,
            Some(window.scale_factor() as f32),
            None,
            None,
        ));
        self.gpu = Some(gpu);
        window.request_redraw();
        self.window = Some(window);
        let cmd = self.initial.take();
        self.send(cmd);
    }

    fn window_event(&mut self, el: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        let Some(window) = self.window.clone() else {
            return;
        };
        if let Some(s) = &mut self.egui_winit {
            // egui asks for a repaint on RedrawRequested too; honouring that would redraw
            // forever. Frames it wants after this one come from its repaint delay.
            if s.on_window_event(&window, &event).repaint
                && !matches!(event, WindowEvent::RedrawRequested)
            {
                window.request_redraw();
            }
        }
        match event {
            WindowEvent::CloseRequested => {
                self.state.stop();
                el.exit();
            }
            WindowEvent::Resized(size) => {
                if let Some(g) = &mut self.gpu {
                    g.resize(size.width, size.height);
                }
                window.request_redraw();
            }
            WindowEvent::DroppedFile(path) => self.act(Action::Load(ModelSource::File(path))),
            WindowEvent::RedrawRequested => self.redraw(el),
            _ => {}
        }
    }

    fn user_event(&mut self, _el: &ActiveEventLoop, ev: UserEvent) {
        match ev {
            UserEvent::Engine(ev) => {
                self.state.apply(ev);
                self.note_generation_end();
            }
            UserEvent::Picked(Ok(Some(path))) => self.act(Action::Load(ModelSource::File(path))),
            UserEvent::Picked(Ok(None)) => {}
            UserEvent::Picked(Err(e)) => self.state.errors.push(e),
        }
        self.drive_demo();
        self.schedule(Instant::now());
    }

    fn about_to_wait(&mut self, el: &ActiveEventLoop) {
        match self.next_repaint {
            Some(t) if t <= Instant::now() => {
                self.next_repaint = None;
                if let Some(w) = &self.window {
                    w.request_redraw();
                }
                el.set_control_flow(ControlFlow::Wait);
            }
            Some(t) => el.set_control_flow(ControlFlow::WaitUntil(t)),
            None => el.set_control_flow(ControlFlow::Wait),
        }
    }
}

/// Every text shape of a frame (recursively), with its laid-out glyphs and pixel rect.
/// Rows that egui wrapped are joined as they are (a space at a wrap point stays on the
/// row it ends).
fn collect_texts(shapes: &[egui::epaint::ClippedShape], ppp: f32) -> Vec<RenderedText> {
    fn walk(shape: &egui::Shape, ppp: f32, out: &mut Vec<RenderedText>) {
        match shape {
            egui::Shape::Vec(v) => v.iter().for_each(|s| walk(s, ppp, out)),
            egui::Shape::Text(t) => {
                let text: String = t
                    .galley
                    .rows
                    .iter()
                    .map(|r| {
                        let mut s = r.text();
                        if r.ends_with_newline {
                            s.push('\n');
                        }
                        s
                    })
                    .collect();
                let r = t.galley.rect.translate(t.pos.to_vec2());
                out.push(RenderedText {
                    text: text.trim_end().to_string(),
                    rect_px: [r.min.x * ppp, r.min.y * ppp, r.max.x * ppp, r.max.y * ppp],
                });
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for s in shapes {
        walk(&s.shape, ppp, &mut out);
    }
    out
}
