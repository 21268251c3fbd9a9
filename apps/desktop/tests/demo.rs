//! The desktop demo end to end, as CI runs it: a real window under Xvfb (or the current
//! display), drawn by wgpu (Mesa's lavapipe in CI), the default model answering a prompt.
//!
//! Checks what a person would see: the process exits 0, the captured frame is a real
//! picture, the prompt and the reply were laid out by egui *and* their rectangles in the
//! PNG hold drawn glyphs, and the UI kept drawing frames while the reply streamed.
//! A bad model file must end as a message in the window, not a crash.
//!
//! Artifacts (kept for CI): `target/desktop-demo.png`, `target/desktop-demo.json`,
//! `target/desktop-bad-model.png`, `target/desktop-bad-model.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_suanpan-desktop");

fn target_dir() -> PathBuf {
    // BIN is target/<profile>/suanpan-desktop.
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("binary inside target/")
        .to_path_buf()
}

/// `xvfb-run -a` is not safe to start twice at once (display number and temp dir races).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run the app with a display: under `xvfb-run` when it exists, else on `$DISPLAY`.
fn run_app(args: &[&str]) -> Output {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let has_xvfb = Command::new("xvfb-run").arg("--help").output().is_ok();
    let mut cmd = if has_xvfb {
        let mut c = Command::new("xvfb-run");
        c.args(["-a", "-s", "-screen 0 1280x800x24", BIN]);
        c
    } else {
        assert!(
            std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some(),
            "the desktop test needs a display: install Xvfb (apt-get install xvfb) or run it in a desktop session"
        );
        Command::new(BIN)
    };
    cmd.args(args);
    let out = cmd.output().expect("running suanpan-desktop");
    eprintln!(
        "--- suanpan-desktop stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Png {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

fn read_png(path: &Path) -> Png {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dec = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = dec.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG pixels");
    assert_eq!(info.color_type, png::ColorType::Rgba);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Png {
        width: info.width,
        height: info.height,
        rgba: buf,
    }
}

impl Png {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 4) as usize;
        [self.rgba[i], self.rgba[i + 1], self.rgba[i + 2]]
    }

    /// Standard deviation of luma over the whole image.
    fn luma_std(&self) -> f64 {
        let l: Vec<f64> = self
            .rgba
            .chunks_exact(4)
            .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
            .collect();
        let mean = l.iter().sum::<f64>() / l.len() as f64;
        (l.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / l.len() as f64).sqrt()
    }

    /// Pixels of the rectangle `[x0, y0, x1, y1]` that differ clearly from its most
    /// common color (the background): glyph ink.
    fn ink_in(&self, r: [f64; 4]) -> usize {
        let x0 = r[0].floor().max(0.0) as u32;
        let y0 = r[1].floor().max(0.0) as u32;
        let x1 = (r[2].ceil() as u32).min(self.width);
        let y1 = (r[3].ceil() as u32).min(self.height);
        let mut counts = std::collections::HashMap::new();
        for y in y0..y1 {
            for x in x0..x1 {
                *counts.entry(self.pixel(x, y)).or_insert(0usize) += 1;
            }
        }
        let Some((&bg, _)) = counts.iter().max_by_key(|(_, &n)| n) else {
            return 0;
        };
        let mut ink = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                let p = self.pixel(x, y);
                let d: i32 = (0..3).map(|c| (p[c] as i32 - bg[c] as i32).abs()).sum();
                if d > 60 {
                    ink += 1;
                }
            }
        }
        ink
    }
}

/// Text without its whitespace: wrapping may add or drop spaces at row ends.
fn norm(s: &str) -> String {
    s.split_whitespace().collect()
}

/// The rectangle of the first laid-out text equal to `text` (whitespace aside).
fn rendered_rect(state: &Value, text: &str) -> Option<[f64; 4]> {
    let want = norm(text);
    state["rendered_texts"].as_array()?.iter().find_map(|t| {
        (norm(t["text"].as_str()?) == want).then(|| {
            let r = t["rect_px"].as_array().unwrap();
            [0, 1, 2, 3].map(|i| r[i].as_f64().unwrap())
        })
    })
}

fn read_state(path: &Path) -> Value {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).expect("the state dump is JSON")
}

#[test]
fn demo_prompt_streams_a_reply_and_renders_it() {
    let model = suanpan::install::default_model_path();
    assert!(
        model.is_file(),
        "the default model is missing at {}; scripts/test installs it (or run `suanpan info`)",
        model.display()
    );
    let dir = target_dir();
    let png_path = dir.join("desktop-demo.png");
    let json_path = dir.join("desktop-demo.json");
    let _ = std::fs::remove_file(&png_path);
    let _ = std::fs::remove_file(&json_path);
    let prompt = "Describe the sea in two sentences.";
    let out = run_app(&[
        "--demo-prompt",
        prompt,
        "--max-tokens",
        "24",
        "--temp",
        "0",
        "--size",
        "900x640",
        "--screenshot",
        png_path.to_str().unwrap(),
        "--state-json",
        json_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "exit status {:?}", out.status);

    let st = read_state(&json_path);
    eprintln!(
        "frames during generation: {}\nmetrics: {}",
        st["frames"]["during_generation"], st["metrics"]
    );
    assert_eq!(st["ok"], true, "{st:#}");
    assert_eq!(st["prompt"], prompt);
    assert_eq!(st["turns"][0]["role"], "user");
    assert_eq!(st["turns"][0]["text"], prompt);
    assert_eq!(st["turns"][1]["role"], "assistant");
    let reply = st["reply"].as_str().expect("a reply");
    assert!(!reply.trim().is_empty(), "empty reply");
    assert_eq!(st["turns"][1]["text"], reply);
    assert!(st["metrics"]["generated_tokens"].as_u64().unwrap() >= 1);
    assert!(st["metrics"]["generated_tokens"].as_u64().unwrap() <= 24);
    // The window kept drawing while the reply streamed.
    assert!(
        st["frames"]["during_generation"]["frames"]
            .as_u64()
            .unwrap()
            >= 2,
        "{}",
        st["frames"]
    );

    let img = read_png(&png_path);
    let win = &st["window_px"];
    assert_eq!(img.width as u64, win[0].as_u64().unwrap());
    assert_eq!(img.height as u64, win[1].as_u64().unwrap());
    let std = img.luma_std();
    assert!(std > 5.0, "the capture looks blank (luma std {std:.2})");

    // egui laid the prompt and the reply out, and glyphs are in those places of the PNG.
    for (what, text) in [("prompt", prompt), ("reply", reply)] {
        let rect = rendered_rect(&st, text).unwrap_or_else(|| {
            panic!(
                "the {what} {text:?} is not among the laid-out texts: {}",
                st["rendered_texts"]
            )
        });
        let ink = img.ink_in(rect);
        assert!(
            ink >= 20,
            "the {what}'s rectangle {rect:?} holds {ink} ink pixels"
        );
    }
}

#[test]
fn a_bad_model_file_is_an_error_in_the_window_not_a_crash() {
    let dir = target_dir();
    let bad = dir.join("desktop-bad-model.gguf");
    std::fs::write(&bad, b"GGUF but not really a model").unwrap();
    let png_path = dir.join("desktop-bad-model.png");
    let json_path = dir.join("desktop-bad-model.json");
    let _ = std::fs::remove_file(&png_path);
    let _ = std::fs::remove_file(&json_path);
    let out = run_app(&[
        "--model",
        bad.to_str().unwrap(),
        "--demo-prompt",
        "hello",
        "--size",
        "800x500",
        "--screenshot",
        png_path.to_str().unwrap(),
        "--state-json",
        json_path.to_str().unwrap(),
    ]);
    // The demo could not do its job: exit 1, but cleanly (not killed by a signal).
    assert_eq!(out.status.code(), Some(1), "{:?}", out.status);
    let st = read_state(&json_path);
    assert_eq!(st["ok"], false);
    assert!(
        st["failure"]
            .as_str()
            .unwrap()
            .contains("loading the model failed"),
        "{st:#}"
    );
    let err = st["errors"][0].as_str().expect("an error message");
    assert!(err.contains("desktop-bad-model.gguf"), "{err}");
    // The message is on screen.
    let rect = rendered_rect(&st, err)
        .unwrap_or_else(|| panic!("error not laid out: {}", st["rendered_texts"]));
    let img = read_png(&png_path);
    assert!(img.ink_in(rect) >= 20);
}
