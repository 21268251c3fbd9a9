//! Greedy decoding against a llama.cpp golden record (`make_golden.py`, `make_gemma3.py`):
//! the same rules for every model.
//!
//! A step whose top-2 margin in llama.cpp is below [`TIE_MARGIN`] is a near tie that float
//! summation order may flip, so a disagreement there ends the comparison; anywhere else in
//! the first [`MUST_MATCH`] steps it fails. First-step logits of llama.cpp's top 10 must be
//! within [`LOGIT_TOL`] (llama.cpp itself moves them by up to 0.92 between whole-prompt and
//! token-at-a-time evaluation of the same prompt, see `llamacpp_parity.rs`).

use std::sync::Arc;
use suanpan::model::Logits;
use suanpan::sample::argmax;

use suanpan::{Model, SessionParams};

pub const TIE_MARGIN: f64 = 0.1;
pub const LOGIT_TOL: f64 = 1.0;
pub const MUST_MATCH: usize = 16;

/// Decode record `p` greedily in a fresh session of `n_ctx` and check it; returns
/// `"name: matched/len"` and the largest first-step top-10 logit difference.
pub fn check_greedy(m: &Arc<Model>, p: &serde_json::Value, n_ctx: usize) -> (String, f64) {
    let name = p["name"].as_str().unwrap();
    let prompt = super::ids(&p["prompt_ids"]);
    let want = super::ids(&p["generated_ids"]);
    let margins: Vec<f64> = p["margin_top1_top2"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut s = m
        .session(&SessionParams {
            n_ctx,
            ..Default::default()
        })
        .unwrap();
    let mut logits = s.eval(&prompt, Logits::Last).unwrap().to_vec();
    let mut worst = 0f64;
    for pair in p["first_step_top10"].as_array().unwrap() {
        let (id, l) = (
            pair[0].as_u64().unwrap() as usize,
            pair[1].as_f64().unwrap(),
        );
        let d = (logits[id] as f64 - l).abs();
        worst = worst.max(d);
        assert!(
            d < LOGIT_TOL,
            "{name}: first-step logit of token {id}: ours {} llama.cpp {l}",
            logits[id]
        );
    }
    let mut matched = 0;
    for (i, &w) in want.iter().enumerate() {
        let ours = argmax(&logits);
        if ours != w {
            eprintln!("{name}: diverged at step {i}: ours {ours} ({:.3}) llama.cpp {w} ({:.3}), llama.cpp margin {:.4}", logits[ours as usize], logits[w as usize], margins[i]);
            assert!(
                i >= MUST_MATCH || margins[i] < TIE_MARGIN,
                "{name}: step {i} we chose {ours}, llama.cpp {w} (its margin {:.4}); matched {i} tokens: {:?}",
                margins[i],
                &want[..i]
            );
            break;
        }
        matched += 1;
        if i + 1 < want.len() {
            logits = s.eval(&[w], Logits::Last).unwrap().to_vec();
        }
    }
    (format!("{name}: {matched}/{}", want.len()), worst)
}
