//! Frame timing: when each frame started, how long it took on the UI thread, and whether
//! a reply was streaming meanwhile; summarised as percentiles for the state dump.

use std::time::Instant;

use serde_json::{json, Value};

/// One drawn frame.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub start: Instant,
    /// egui layout + tessellation, milliseconds.
    pub ui_ms: f64,
    /// Texture upload, GPU submit and present (and the capture, when asked), milliseconds.
    pub gpu_ms: f64,
    pub generating: bool,
}

/// All frames of a run (a few per second while idle, a steady rate while generating).
#[derive(Default, Debug)]
pub struct FrameLog {
    frames: Vec<Frame>,
}

impl FrameLog {
    pub fn push(&mut self, f: Frame) {
        // A long interactive session should not grow without bound.
        if self.frames.len() == 1 << 20 {
            self.frames.drain(..1 << 19);
        }
        self.frames.push(f);
    }

    /// Time of the last frame's work, for the status line.
    pub fn last_cpu_ms(&self) -> f64 {
        self.frames.last().map_or(0.0, |f| f.ui_ms + f.gpu_ms)
    }

    /// Percentiles of frame work and of the gaps between frames, over the frames drawn
    /// while a reply was streaming (`generating`) or all frames.
    pub fn summary(&self, generating_only: bool) -> Value {
        let sel: Vec<&Frame> = self
            .frames
            .iter()
            .filter(|f| !generating_only || f.generating)
            .collect();
        let work: Vec<f64> = sel.iter().map(|f| f.ui_ms + f.gpu_ms).collect();
        let ui: Vec<f64> = sel.iter().map(|f| f.ui_ms).collect();
        let gpu: Vec<f64> = sel.iter().map(|f| f.gpu_ms).collect();
        // Gaps only between consecutive selected frames that were also consecutive overall.
        let mut gaps = Vec::new();
        for w in self.frames.windows(2) {
            if !generating_only || (w[0].generating && w[1].generating) {
                gaps.push((w[1].start - w[0].start).as_secs_f64() * 1e3);
            }
        }
        json!({
            "frames": sel.len(),
            "frame_work_ms": percentiles(&work),
            "ui_ms": percentiles(&ui),
            "gpu_ms": percentiles(&gpu),
            "frame_interval_ms": percentiles(&gaps),
        })
    }
}

/// p50 / p95 / max / mean of `v` (nulls when empty).
pub fn percentiles(v: &[f64]) -> Value {
    if v.is_empty() {
        return json!({"n": 0, "p50": null, "p95": null, "max": null, "mean": null});
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    let r = |x: f64| (x * 100.0).round() / 100.0;
    json!({"n": s.len(), "p50": r(at(0.5)), "p95": r(at(0.95)), "max": r(s[s.len() - 1]), "mean": r(mean)})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_of_known_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&v);
        assert_eq!(p["n"], 100);
        assert_eq!(p["p50"], 51.0); // index round(99 * 0.5) = 50 → the value 51
        assert_eq!(p["p95"], 95.0);
        assert_eq!(p["max"], 100.0);
        assert_eq!(p["mean"], 50.5);
        assert!(percentiles(&[])["p50"].is_null());
    }

    #[test]
    fn intervals_count_only_frames_inside_generation() {
        let t0 = Instant::now();
        let mut log = FrameLog::default();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        for (t, g) in [
            (0, false),
            (100, true),
            (110, true),
            (130, true),
            (500, false),
        ] {
            log.push(Frame {
                start: ms(t),
                ui_ms: 1.0,
                gpu_ms: 0.5,
                generating: g,
            });
        }
        let s = log.summary(true);
        assert_eq!(s["frames"], 3);
        assert_eq!(s["frame_work_ms"]["max"], 1.5);
        assert_eq!(s["frame_interval_ms"]["n"], 2);
        assert_eq!(s["frame_interval_ms"]["max"], 20.0);
        assert_eq!(log.summary(false)["frame_interval_ms"]["max"], 370.0);
    }
}
