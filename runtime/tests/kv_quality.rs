//! Quality of the quantized KV caches on real text: perplexity and top-1 agreement against
//! the f16 cache, checked against the goals and the figures recorded in
//! `tests/golden/smollm2_kv_quality.json` (made by `bench/kv_quality.sh`).
//!
//! CI runs on 2 cores in debug builds, so this re-measures only the JSON's "short" entry (one
//! 1024-token chunk of GPL-3, 511 scored positions); the full `-c 2048` comparison with
//! llama.cpp's q8_0/q4_0 caches is the bench script's job and its figures are in the JSON.

mod common;

use std::path::Path;

use suanpan::kv::{KvMode, KvParams};
use suanpan::perplexity::{perplexity_with, read_text_file, top1_agreement};

#[test]
fn kv_modes_meet_their_perplexity_goals_on_a_short_text() {
    let g = common::golden("smollm2_kv_quality.json");
    let short = &g["short"];
    let file = short["file"].as_str().expect("file");
    let n_ctx = short["n_ctx"].as_u64().expect("n_ctx") as usize;
    let chunks = short["chunks"].as_u64().expect("chunks") as usize;
    let recorded = short["runs"].as_array().expect("runs");
    let rec = |label: &str| {
        recorded
            .iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| panic!("no recorded run {label}"))
    };
    let m = common::model();
    let text = read_text_file(Path::new(file)).unwrap();
    let run = |mode: KvMode| {
        let p = KvParams {
            mode,
            ..Default::default()
        };
        perplexity_with(&m, &text, n_ctx, &p, |i, _, _| i < chunks).unwrap()
    };
    let f16 = run(KvMode::F16);
    let want = rec("f16")["ppl"].as_f64().unwrap();
    assert!(
        (f16.ppl / want - 1.0).abs() < 0.005,
        "f16 PPL {} vs recorded {want}",
        f16.ppl
    );
    for mode in [KvMode::Q8, KvMode::Q4, KvMode::Q2] {
        let r = run(mode);
        let change = (r.ppl / f16.ppl - 1.0) * 100.0;
        let agree = top1_agreement(&r.top1, &f16.top1);
        let goal = g["goals_pct"][mode.name()].as_f64().unwrap();
        let was = rec(mode.name());
        let (was_change, was_agree) = (
            was["ppl_change_vs_f16_pct"].as_f64().unwrap(),
            was["top1_agreement_vs_f16"].as_f64().unwrap(),
        );
        eprintln!(
            "{mode}: PPL {:.4} ({change:+.3}% vs f16, goal ≤ {goal}%; recorded {was_change:+.3}%), \
             top-1 agreement {:.2}% (recorded {:.2}%)",
            r.ppl,
            agree * 100.0,
            was_agree * 100.0
        );
        assert!(
            change <= goal,
            "{mode}: PPL +{change:.3}% exceeds the goal {goal}%"
        );
        // The same code on the same text should reproduce the recorded figures; a drift beyond
        // float noise means the cache changed without re-measuring.
        assert!(
            (change - was_change).abs() < 0.25,
            "{mode}: {change:+.3}% vs recorded {was_change:+.3}%: re-run bench/kv_quality.sh"
        );
        assert!(
            agree >= was_agree - 0.01,
            "{mode}: top-1 {agree} < recorded {was_agree}"
        );
    }
}
