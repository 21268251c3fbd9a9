//! Perplexity on real English text, against llama.cpp's figure on the same file and model
//! (`tests/golden/smollm2_q4_1_ppl.json`, made by `tests/golden/make_ppl.py`).
//! Requirement: within 1%. Token and chunk counts must match exactly (same tokenizer,
//! same chunking).

mod common;

#[test]
fn perplexity_within_one_percent_of_llamacpp() {
    let g = common::golden("smollm2_q4_1_ppl.json");
    let m = common::model();
    let runs = g["runs"].as_array().expect("runs");
    assert!(!runs.is_empty());
    for run in runs {
        let label = run["label"].as_str().unwrap();
        let mut bytes = Vec::new();
        for f in run["files"].as_array().unwrap() {
            let p = f.as_str().unwrap();
            bytes.extend(std::fs::read(p).unwrap_or_else(|e| panic!("{label}: reading {p}: {e}")));
        }
        let text = String::from_utf8(bytes).expect("the reference texts are UTF-8");
        let n_ctx = run["n_ctx"].as_u64().unwrap() as usize;
        let r = suanpan::perplexity::perplexity(&m, &text, n_ctx, |_, _, _| true).unwrap();
        let want = run["ppl"].as_f64().unwrap();
        assert_eq!(
            r.n_tokens as u64,
            run["n_tokens"].as_u64().unwrap(),
            "{label}: token count"
        );
        assert_eq!(
            r.n_chunks as u64,
            run["n_chunks"].as_u64().unwrap(),
            "{label}: chunk count"
        );
        let rel = (r.ppl - want).abs() / want;
        eprintln!(
            "{label}: suanpan PPL {:.4}, llama.cpp {want:.4}, difference {:.3}%",
            r.ppl,
            rel * 100.0
        );
        assert!(
            rel < 0.01,
            "{label}: PPL {:.4} vs llama.cpp {want:.4} ({:.2}% apart)",
            r.ppl,
            rel * 100.0
        );
    }
}
