//! Perplexity on real English text, against llama.cpp's figure on the same file and model
//! (`tests/golden/smollm2_q4_1_ppl.json`, made by `tests/golden/make_ppl.py` and checked there
//! against the real `llama-perplexity` binary). Requirement: within 1%. Token and chunk counts
//! must match exactly (same tokenizer, same file reading, same chunking). To keep CI light the
//! test scores the first 4 chunks of the smallest reference text (GPL-3, 14 chunks of 512) and
//! compares the running PPL with every llama.cpp run on that text (flash attention on and off)
//! after as many chunks; the whole texts are compared with `suanpan perplexity` in release
//! builds (README, "How it compares with llama.cpp").

mod common;

use std::collections::BTreeMap;
use std::path::Path;

/// Chunks scored in CI.
const CHUNKS: usize = 4;

#[test]
fn perplexity_within_one_percent_of_llamacpp() {
    let g = common::golden("smollm2_q4_1_ppl.json");
    let m = common::model();
    let runs = g["runs"].as_array().expect("runs");
    assert!(!runs.is_empty());
    let mut by_text: BTreeMap<(Vec<String>, u64), Vec<&serde_json::Value>> = BTreeMap::new();
    for run in runs {
        let files = run["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        by_text
            .entry((files, run["n_ctx"].as_u64().unwrap()))
            .or_default()
            .push(run);
    }
    let smallest = by_text
        .iter()
        .min_by_key(|(_, runs)| runs[0]["n_tokens"].as_u64().unwrap())
        .map(|(k, _)| k.clone())
        .unwrap();
    by_text.retain(|k, _| *k == smallest);
    for ((files, n_ctx), runs) in by_text {
        // Concatenate like `cat`, then read as llama.cpp's -f does.
        let joined = std::env::temp_dir().join(format!("suanpan-ppl-{}.txt", std::process::id()));
        let bytes: Vec<u8> = files
            .iter()
            .flat_map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect();
        std::fs::write(&joined, bytes).unwrap();
        let text = suanpan::perplexity::read_text_file(Path::new(&joined)).unwrap();
        // The first CHUNKS chunks, compared with llama.cpp's running PPL after as many.
        let r = suanpan::perplexity::perplexity(&m, &text, n_ctx as usize, |i, _, _| i < CHUNKS)
            .unwrap();
        for run in runs {
            let label = run["label"].as_str().unwrap();
            assert_eq!(
                r.n_tokens as u64,
                run["n_tokens"].as_u64().unwrap(),
                "{label}: token count"
            );
            assert_eq!(
                r.n_tokens as u64 / n_ctx,
                run["n_chunks"].as_u64().unwrap(),
                "{label}: chunk count"
            );
            assert_eq!(r.n_chunks, CHUNKS, "{label}: chunks scored");
            let want = run["running_ppl"][CHUNKS - 1].as_f64().unwrap();
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
}
