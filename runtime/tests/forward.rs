//! Properties of the forward pass on the real default model.

mod common;

use std::ops::ControlFlow;

use suanpan::model::Logits;
use suanpan::sample::argmax;
use suanpan::{Error, GenerateParams, SamplingParams, SessionParams, StopReason};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A prompt ingested in one batch, in several batches, or one token at a time must give the
/// same logits: the KV cache and the batched kernels agree with the single-token path.
/// Tolerance: 2e-3 absolute on logits of magnitude ~10-30 (only f32 summation order differs;
/// activations are quantized per token in every case, so the integer parts are identical).
#[test]
fn batched_prefill_equals_token_by_token() {
    let m = common::model();
    let text = "The quick brown fox jumps over the lazy dog. In 2024, the 🦊 said: «Bonjour»!";
    let ids = m.tokenizer().encode(text, true, false).unwrap();
    assert!(ids.len() > 16);
    let run = |batch: usize| {
        let mut s = m
            .session(&SessionParams {
                n_ctx: 128,
                n_batch: batch,
                all_logits: false,
                ..Default::default()
            })
            .unwrap();
        s.eval(&ids, Logits::Last).unwrap().to_vec()
    };
    let one_batch = run(128);
    for batch in [1usize, 5, 7] {
        let other = run(batch);
        let d = max_abs_diff(&one_batch, &other);
        assert!(d < 2e-3, "batch {batch}: max |Δlogit| = {d}");
        assert_eq!(argmax(&one_batch), argmax(&other));
    }
}

/// All-token logits of a batch equal the last-token logits at each prefix.
#[test]
fn all_logits_match_prefix_last_logits() {
    let m = common::model();
    let ids = m
        .tokenizer()
        .encode("Hello world, it's 2024!", true, false)
        .unwrap();
    let mut s = m
        .session(&SessionParams {
            n_ctx: 64,
            n_batch: 64,
            all_logits: true,
            ..Default::default()
        })
        .unwrap();
    let all = s.eval(&ids, Logits::All).unwrap().to_vec();
    let v = m.config().n_vocab;
    for k in [1usize, 4, ids.len()] {
        let mut s2 = m
            .session(&SessionParams {
                n_ctx: 64,
                ..Default::default()
            })
            .unwrap();
        let last = s2.eval(&ids[..k], Logits::Last).unwrap();
        let d = max_abs_diff(&all[(k - 1) * v..k * v], last);
        assert!(d < 2e-3, "prefix {k}: {d}");
    }
}

#[test]
fn context_full_is_an_error_and_the_session_survives() {
    let m = common::model();
    let mut s = m
        .session(&SessionParams {
            n_ctx: 16,
            n_batch: 16,
            all_logits: false,
            ..Default::default()
        })
        .unwrap();
    let ids = m
        .tokenizer()
        .encode(
            "one two three four five six seven eight nine ten eleven twelve",
            true,
            false,
        )
        .unwrap();
    assert!(ids.len() < 16);
    let params = GenerateParams {
        max_tokens: 100,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let r = s.generate_tokens(&ids, &params, |_| ControlFlow::Continue(()));
    assert!(matches!(r, Err(Error::ContextFull(_))), "{r:?}");
    // Usable after a reset.
    s.reset();
    let st = s
        .generate_tokens(
            &ids[..4],
            &GenerateParams {
                max_tokens: 3,
                ..params
            },
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(st.generated_tokens, 3);
}

#[test]
fn oversized_context_and_bad_tokens_are_refused() {
    let m = common::model();
    let too_long = m.config().n_ctx_train + 1;
    assert!(matches!(
        m.session(&SessionParams {
            n_ctx: too_long,
            ..Default::default()
        }),
        Err(Error::InvalidArg(_))
    ));
    let mut s = m
        .session(&SessionParams {
            n_ctx: 32,
            ..Default::default()
        })
        .unwrap();
    let r = s.eval(&[u32::MAX], Logits::Last);
    assert!(
        matches!(r, Err(Error::InvalidArg(ref msg)) if msg.contains("vocabulary")),
        "{r:?}"
    );
    assert!(matches!(
        s.eval(&[], Logits::Last),
        Err(Error::InvalidArg(_))
    ));
}

/// Streaming hands out valid UTF-8 pieces whose concatenation is the decoded text, and a
/// callback Break stops generation.
#[test]
fn streaming_pieces_are_whole_code_points() {
    let m = common::model();
    let mut s = m
        .session(&SessionParams {
            n_ctx: 256,
            ..Default::default()
        })
        .unwrap();
    let params = GenerateParams {
        max_tokens: 40,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let mut pieces = Vec::new();
    let st = s
        .generate(
            "Translate to Japanese and add emoji: I love sushi 🍣 →",
            &params,
            |p| {
                pieces.push(p.to_string());
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    let joined: String = pieces.concat();
    let decoded = String::from_utf8_lossy(
        &st.tokens
            .iter()
            .flat_map(|&t| m.tokenizer().token_bytes(t).to_vec())
            .collect::<Vec<u8>>(),
    )
    .into_owned();
    assert_eq!(joined, decoded);
    let mut s = m
        .session(&SessionParams {
            n_ctx: 256,
            ..Default::default()
        })
        .unwrap();
    let mut n = 0;
    let st = s
        .generate("Once upon a time", &params, |_| {
            n += 1;
            if n == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(st.stop, StopReason::Callback);
    assert_eq!(n, 3);
}

/// A seeded sampler reproduces its tokens; cancellation from another thread stops the run
/// with Cancelled and the session continues to work.
#[test]
fn seeded_sampling_is_deterministic_and_cancel_works() {
    let m = common::model();
    let params = GenerateParams {
        max_tokens: 12,
        sampling: SamplingParams {
            temperature: 0.9,
            seed: 42,
            ..Default::default()
        },
        ..Default::default()
    };
    let gen = || {
        let mut s = m
            .session(&SessionParams {
                n_ctx: 128,
                ..Default::default()
            })
            .unwrap();
        s.generate("Write a story about a dragon:", &params, |_| {
            ControlFlow::Continue(())
        })
        .unwrap()
        .tokens
    };
    assert_eq!(gen(), gen());

    let mut s = m
        .session(&SessionParams {
            n_ctx: 512,
            ..Default::default()
        })
        .unwrap();
    let cancel = s.cancel_token();
    let long = GenerateParams {
        max_tokens: 400,
        ..params.clone()
    };
    let mut seen = 0;
    let r = s.generate("Count: one, two, three,", &long, |_| {
        seen += 1;
        if seen == 5 {
            let c = cancel.clone();
            std::thread::spawn(move || c.cancel()).join().unwrap();
        }
        ControlFlow::Continue(())
    });
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(s.tokens().len() < 100);
    let st = s
        .generate(" And then", &params, |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(st.generated_tokens > 0);
}

/// The block types run through the CPU reference kernels (no SIMD, no GPU yet): a random-
/// weight model whose matrices are each of these types gives the logits of the same model
/// converted to F32 by `convert` (which dequantizes them), up to the 8-bit activation
/// quantization of the quantized path. Tolerance: 3% of the largest logit magnitude
/// (measured 0.3% for Q4_K/Q5_K to 2.0% for TQ1_0: Q8_K/Q8_0 activation rounding through 2
/// layers of random weights; a wrong code or scale gives errors of the logits' own size).
#[test]
fn every_readable_block_type_runs_and_matches_its_f32_twin() {
    use suanpan::convert::{convert, ConvertParams, Target};
    use suanpan::format::GgmlType::*;
    let dir = std::env::temp_dir().join(format!("suanpan-blocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for ty in [
        Q5_0, Q5_1, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Nl, Iq4Xs, TQ1_0, TQ2_0,
    ] {
        let synth = common::synth::Synth {
            n_embd: 256,
            n_ff: 512,
            ty,
            ..Default::default()
        };
        let src = dir.join(format!("{}.gguf", ty.name()));
        std::fs::write(&src, synth.gguf()).unwrap();
        let twin = dir.join(format!("{}.f32.gguf", ty.name()));
        let p = ConvertParams::new(Target::F32);
        convert(&src, &twin, &p, &|_| {}).unwrap_or_else(|e| panic!("{ty}: convert: {e}"));
        let logits = |path: &std::path::Path| -> Vec<f32> {
            let model = std::sync::Arc::new(
                suanpan::Model::load(path, &Default::default())
                    .unwrap_or_else(|e| panic!("{ty}: load: {e}")),
            );
            let mut s = model.session(&SessionParams::default()).unwrap();
            s.eval(&[5, 40, 77, 3, 200], Logits::Last).unwrap().to_vec()
        };
        let (q, f) = (logits(&src), logits(&twin));
        let scale = f.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(&q, &f);
        assert!(q.iter().all(|v| v.is_finite()), "{ty}");
        assert!(
            d <= 0.03 * scale,
            "{ty}: max |Δlogit| {d} vs max |logit| {scale}"
        );
        eprintln!("{ty}: max |Δlogit| {d:.4} of {scale:.3}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
