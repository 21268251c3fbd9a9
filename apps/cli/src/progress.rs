//! Progress bars on stderr: installing the default model, loading a model, perplexity.
//!
//! indicatif draws only when stderr is a terminal; when it is not (logs, CI, pipes), each
//! helper falls back to plain lines on stderr, so nothing is lost and stdout never changes.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use suanpan::model::LoadProgress;

/// The default model's path, installing it first (pip runs under a spinner that shows
/// pip's latest line; suanpan's own steps stay printed above it).
pub fn ensure_default_model() -> suanpan::Result<PathBuf> {
    let mut bar: Option<ProgressBar> = None;
    let r = suanpan::install::ensure_default_model(|line| {
        let bar = bar.get_or_insert_with(|| {
            let b = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {elapsed:>3} {wide_msg}")
                    .expect("static template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            if line.starts_with("suanpan:") {
                bar.println(line);
            }
            bar.set_message(line.trim_start_matches("suanpan: ").to_string());
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r
}

/// A bar for [`suanpan::ModelParams::progress`] (the load reports fractions 0..=1); clear
/// it with `finish_and_clear` once the load returns.
pub fn load_bar() -> (ProgressBar, LoadProgress) {
    let bar = ProgressBar::new(1000).with_style(
        ProgressStyle::with_template("loading [{bar:30}] {percent:>3}% {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let b = bar.clone();
    let progress = LoadProgress::new(move |f| {
        b.set_position((f.clamp(0.0, 1.0) * 1000.0) as u64);
        true
    });
    (bar, progress)
}

/// Perplexity over chunks: a bar with the running PPL, or `[i/n]ppl` lines when stderr is
/// not a terminal (as llama-perplexity prints them).
pub struct ChunkBar {
    bar: ProgressBar,
    /// The chunk count is known once the first chunk is done; a spinner until then.
    counting: std::cell::Cell<bool>,
}

impl ChunkBar {
    pub fn new() -> Self {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} tokenizing, first chunk ({elapsed})")
                .expect("static template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        ChunkBar {
            bar,
            counting: std::cell::Cell::new(false),
        }
    }

    /// Chunk `i` of `n` is done; the running perplexity is `ppl`.
    pub fn chunk(&self, i: usize, n: usize, ppl: f64) {
        if self.bar.is_hidden() {
            use std::io::Write;
            eprint!("[{i}/{n}]{ppl:.4} ");
            let _ = std::io::stderr().flush();
            return;
        }
        if !self.counting.replace(true) {
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {pos}/{len} chunks, {msg}, {elapsed} (eta {eta})",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
        }
        self.bar.set_message(format!("PPL {ppl:.4}"));
        self.bar.set_length(n as u64);
        self.bar.set_position(i as u64);
    }

    pub fn finish(&self) {
        if self.bar.is_hidden() {
            eprintln!();
        } else {
            self.bar.finish_and_clear();
        }
    }
}
