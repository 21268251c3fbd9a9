//! The forward pass against llama.cpp on the real default model (SmolLM2-135M-Instruct Q4_1).
//! Reference data: `tests/golden/smollm2_q4_1_greedy.json` and `smollm2_q4_1_ppl.json`,
//! made by `tests/golden/make_golden.py` / `make_ppl.py` with llama-cpp-python.
//!
//! Fairness (see MODELS.md): both engines quantize activations to Q8_0/Q8_1 blocks for the
//! Q4_1/Q8_0 weights, and attention rounds Q and the probabilities to f16 as llama.cpp's
//! default (non-flash) path does; float summation order still differs. Greedy tokens must
//! agree for the first 16 steps; a disagreement there is tolerated only where llama.cpp's own
//! top-2 margin is below `TIE_MARGIN`, a near tie that summation order may flip.

mod common;

use suanpan::model::Logits;
use suanpan::sample::argmax;
use suanpan::SessionParams;

/// A step whose top-2 margin in llama.cpp is below this is a near tie: llama.cpp itself picks
/// differently there depending on how the prompt is batched (the golden diagnostics show
/// `same_argmax: false` for the code and German prompts, whose first-step margins are 0.057
/// and 0.033), so neither engine's choice is the right one.
const TIE_MARGIN: f64 = 0.1;
/// Largest allowed |our logit − llama.cpp's| on llama.cpp's first-step top-10. llama.cpp does
/// not agree with itself more closely: the golden file's diagnostics show its logits move by
/// up to 0.92 between whole-prompt and token-at-a-time evaluation of the same prompt.
const LOGIT_TOL: f64 = 1.0;
const MUST_MATCH: usize = 16;

#[test]
fn prompt_tokens_match_llamacpp() {
    let g = common::golden("smollm2_q4_1_greedy.json");
    let m = common::model();
    for p in g["prompts"].as_array().unwrap() {
        let text = p["prompt"].as_str().unwrap();
        let want = common::ids(&p["prompt_ids"]);
        let special = p["tokenize_special"].as_bool().unwrap_or(false);
        let got = m.tokenizer().encode(text, true, special).unwrap();
        assert_eq!(got, want, "tokens of {text:?}");
    }
}

#[test]
fn greedy_tokens_match_llamacpp() {
    let g = common::golden("smollm2_q4_1_greedy.json");
    let m = common::model();
    let mut report = Vec::new();
    let mut worst = 0f64;
    for p in g["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let prompt = common::ids(&p["prompt_ids"]);
        let want = common::ids(&p["generated_ids"]);
        let margins: Vec<f64> = p["margin_top1_top2"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let mut s = m
            .session(&SessionParams {
                n_ctx: 512,
                ..Default::default()
            })
            .unwrap();
        let mut logits = s.eval(&prompt, Logits::Last).unwrap().to_vec();
        // First step: our logits close to llama.cpp's top-10.
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
        report.push(format!("{name}: {matched}/{}", want.len()));
    }
    eprintln!("greedy tokens matched: {}", report.join(", "));
    eprintln!("largest first-step top-10 logit difference: {worst:.3}");
}
