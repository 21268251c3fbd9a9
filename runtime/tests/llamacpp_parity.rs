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

// The tie margin, logit tolerance and 16 matching steps are in `common::parity`: a step
// whose top-2 margin in llama.cpp is below 0.1 is a near tie (llama.cpp itself picks
// differently there depending on how the prompt is batched: the golden diagnostics show
// `same_argmax: false` for the code and German prompts, first-step margins 0.057 and 0.033).

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
        let (r, w) = common::parity::check_greedy(&m, p, 512);
        report.push(r);
        worst = worst.max(w);
    }
    eprintln!("greedy tokens matched: {}", report.join(", "));
    eprintln!("largest first-step top-10 logit difference: {worst:.3}");
}
