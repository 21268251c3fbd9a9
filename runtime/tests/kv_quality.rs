//! Quality of the quantized KV caches on real text: perplexity and top-1 agreement against
//! the f16 cache, checked against the goals.
//!
//! CI runs on 2 cores in debug builds, so this measures one 1024-token chunk of GPL-3 (511
//! scored positions, llama-perplexity's protocol); the full `-c 2048` comparison with
//! llama.cpp's q8_0/q4_0 caches is `bench/kv_quality.sh`'s job.

mod common;

use std::path::Path;

use suanpan::kv::{KvMode, KvParams};
use suanpan::perplexity::{perplexity_with, read_text_file, top1_agreement};

const FILE: &str = "/usr/share/common-licenses/GPL-3";
const N_CTX: usize = 1024;

/// The goals: PPL change vs the f16 cache, percent.
fn goal_pct(mode: KvMode) -> f64 {
    match mode {
        KvMode::Q8 => 0.3,
        KvMode::Q4 => 1.0,
        KvMode::Q2 => 5.0,
        KvMode::F16 => 0.0,
    }
}

/// Floors for the share of positions whose most likely next token matches the f16 cache's.
/// Part of the disagreement is not quantization: the f16 baseline rounds queries and
/// probabilities to f16 as llama.cpp does, the quantized caches' kernel keeps them in f32
/// (that alone moves about 5% of the greedy picks on this text: a q8 cache whose window holds
/// the whole context, nothing quantized, agreed on 95.3% in `bench/kv_quality.sh`'s run). The floors sit at that level for 8/4 bits and 10 points lower for 2.
fn top1_floor(mode: KvMode) -> f64 {
    match mode {
        KvMode::Q8 => 0.95,
        KvMode::Q4 => 0.93,
        KvMode::Q2 => 0.85,
        KvMode::F16 => 1.0,
    }
}

#[test]
fn kv_modes_meet_their_perplexity_goals_on_a_short_text() {
    let m = common::model();
    let text = read_text_file(Path::new(FILE)).unwrap();
    let run = |mode: KvMode| {
        let p = KvParams {
            mode,
            ..Default::default()
        };
        perplexity_with(&m, &text, N_CTX, &p, |i, _, _| i < 1).unwrap()
    };
    let f16 = run(KvMode::F16);
    assert!(f16.ppl.is_finite() && f16.ppl > 1.0, "f16 PPL {}", f16.ppl);
    for mode in [KvMode::Q8, KvMode::Q4, KvMode::Q2] {
        let r = run(mode);
        let change = (r.ppl / f16.ppl - 1.0) * 100.0;
        let agree = top1_agreement(&r.top1, &f16.top1);
        eprintln!(
            "{mode}: PPL {:.4} vs f16 {:.4} ({change:+.3}%, goal ≤ {}%), top-1 agreement {:.2}%",
            r.ppl,
            f16.ppl,
            goal_pct(mode),
            agree * 100.0
        );
        assert!(
            change <= goal_pct(mode),
            "{mode}: PPL {change:+.3}% exceeds the goal {}%",
            goal_pct(mode)
        );
        assert!(
            agree >= top1_floor(mode),
            "{mode}: top-1 agreement {agree:.4} below {}",
            top1_floor(mode)
        );
    }
}
