//! The embedding API on the real default model: load progress and cancellation, memory
//! estimates and budgets, stop strings, max tokens, usage, continuation, clone,
//! save/restore, chat, and several sessions on one model from several threads.

mod common;

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use suanpan::chat::ChatMessage;
use suanpan::format::GgufFile;
use suanpan::model::LoadProgress;
use suanpan::{
    Error, GenerateParams, Model, ModelParams, SamplingParams, Session, SessionParams, StopReason,
};

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: n,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    }
}

fn session(ctx: usize) -> Session {
    common::model()
        .session(&SessionParams {
            n_ctx: ctx,
            ..Default::default()
        })
        .unwrap()
}

/// Generate and return (pieces, stats).
fn run(
    s: &mut Session,
    prompt: &str,
    p: &GenerateParams,
) -> suanpan::Result<(Vec<String>, suanpan::GenerateStats)> {
    let mut pieces = Vec::new();
    let st = s.generate(prompt, p, |x| {
        pieces.push(x.to_string());
        ControlFlow::Continue(())
    })?;
    Ok((pieces, st))
}

#[test]
fn load_reports_progress_and_can_be_cancelled() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let params = ModelParams {
        n_threads: 1,
        progress: Some(LoadProgress::new(move |f| {
            s2.lock().unwrap().push(f);
            true
        })),
        ..Default::default()
    };
    let m = Model::load(common::model_path(), &params).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&0.0));
    assert_eq!(seen.last(), Some(&1.0));
    // One report per step and per tensor (SmolLM2 has 272 tensors).
    assert!(
        seen.len() > m.file().tensors.len(),
        "{} reports",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "not monotone: {seen:?}"
    );

    // Answering `false` half-way cancels the load.
    let calls = Arc::new(Mutex::new(0usize));
    let c2 = calls.clone();
    let params = ModelParams {
        n_threads: 1,
        progress: Some(LoadProgress::new(move |f| {
            *c2.lock().unwrap() += 1;
            f < 0.5
        })),
        ..Default::default()
    };
    let r = Model::load(common::model_path(), &params);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(*calls.lock().unwrap() < seen.len());
}

#[test]
fn missing_and_corrupt_files_are_errors_with_messages() {
    let r = Model::load("/nonexistent/model.gguf", &ModelParams::default());
    match r {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("/nonexistent/model.gguf")),
        other => panic!("expected Io, got {other:?}"),
    }
    // The real file cut in half: the tensor table points past the end.
    let bytes = std::fs::read(common::model_path()).unwrap();
    let dir = std::env::temp_dir().join(format!("suanpan-session-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    match Model::load(&cut, &ModelParams::default()) {
        Err(Error::BadModel(m)) => assert!(m.contains("truncated"), "{m}"),
        other => panic!("expected BadModel, got {other:?}"),
    }
    match Model::estimate_memory(&cut, &ModelParams::default(), &SessionParams::default()) {
        Err(Error::BadModel(_)) => {}
        other => panic!("expected BadModel, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn estimate_matches_what_load_and_session_allocate() {
    let m = common::model();
    for sp in [
        SessionParams {
            n_ctx: 256,
            ..Default::default()
        },
        SessionParams {
            n_ctx: 1024,
            n_batch: 64,
            all_logits: true,
            ..Default::default()
        },
        SessionParams::default(),
    ] {
        let mp = ModelParams {
            n_threads: m.n_threads(),
            ..Default::default()
        };
        let e = Model::estimate_memory(common::model_path(), &mp, &sp).unwrap();
        let s = m.session(&sp).unwrap();
        assert_eq!(e.n_ctx, s.n_ctx());
        assert_eq!(e.kv_bytes as usize, s.usage().kv_bytes);
        assert_eq!(e.session_bytes() as usize, s.memory_bytes());
        let tensor_bytes: u64 = m.file().tensors.iter().map(|t| t.size).sum();
        assert_eq!(e.weights_bytes, tensor_bytes);
        assert!(e.weights_bytes < e.file_bytes);
        // A budget one byte short is refused with OutOfMemory; the exact need is accepted.
        let need = e.session_bytes() as usize;
        let short = SessionParams {
            memory_budget: need - 1,
            ..sp.clone()
        };
        match m.session(&short) {
            Err(Error::OutOfMemory(msg)) => assert!(msg.contains("budget"), "{msg}"),
            Err(e) => panic!("expected OutOfMemory, got {e:?}"),
            Ok(_) => panic!("expected OutOfMemory, the session was created"),
        }
        let exact = SessionParams {
            memory_budget: need,
            ..sp
        };
        assert!(m.session(&exact).is_ok());
    }
}

#[test]
fn max_tokens_and_usage() {
    let mut s = session(256);
    let prompt_ids = s
        .model()
        .tokenizer()
        .encode("The capital of France is", true, false)
        .unwrap();
    let (_, st) = run(&mut s, "The capital of France is", &greedy(7)).unwrap();
    assert_eq!(st.generated_tokens, 7);
    assert_eq!(st.stop, StopReason::MaxTokens);
    let u = s.usage();
    // Every generated token is in the context; the last one is still pending.
    assert_eq!(u.tokens, prompt_ids.len() + 7);
    assert_eq!(s.pending_token(), st.tokens.last().copied());
    assert_eq!(u.n_ctx, 256);
    let per_token = u.kv_bytes / 256;
    assert_eq!(u.kv_bytes_used, per_token * (u.tokens - 1));
    s.reset();
    assert_eq!(s.usage().tokens, 0);
    assert_eq!(s.usage().kv_bytes_used, 0);
}

/// Continuing with an empty prompt picks up exactly where the last generation stopped:
/// 8 + 8 greedy tokens equal 16 in one go.
#[test]
fn continuation_equals_one_long_generation() {
    let prompt = "Here is a list of fruits: apple,";
    let (_, whole) = run(&mut session(128), prompt, &greedy(16)).unwrap();
    let mut s = session(128);
    let (_, a) = run(&mut s, prompt, &greedy(8)).unwrap();
    let b = s
        .generate_tokens(&[], &greedy(8), |_| ControlFlow::Continue(()))
        .unwrap();
    let joined: Vec<u32> = a.tokens.iter().chain(&b.tokens).copied().collect();
    assert_eq!(joined, whole.tokens);
}

/// A stop string that starts inside one streamed piece and ends inside a later one stops
/// generation, and nothing from the stop string on is streamed.
#[test]
fn stop_strings_split_across_tokens() {
    let prompt = "Once upon a time, in a small village,";
    let (pieces, plain) = run(&mut session(256), prompt, &greedy(48)).unwrap();
    let text: String = pieces.concat();
    // Find piece boundaries and choose a stop string crossing one of them, away from the
    // start, spanning the end of one piece (≥ 2 chars of it) and the start of the next.
    let mut bounds = Vec::new();
    let mut at = 0;
    for p in &pieces {
        at += p.len();
        bounds.push(at);
    }
    let (start, end) = bounds
        .iter()
        .skip(3)
        .find_map(|&b| {
            let s = text[..b].char_indices().rev().nth(1)?.0;
            let e = text[b..].char_indices().nth(2).map(|(i, _)| b + i)?;
            Some((s, e))
        })
        .unwrap_or_else(|| panic!("no piece boundary to cut at in {pieces:?}"));
    let stop = text[start..end].to_string();
    let first = text.find(&stop).unwrap();
    let params = GenerateParams {
        stop: vec!["never appears ✗".into(), stop.clone()],
        ..greedy(48)
    };
    let (got, st) = run(&mut session(256), prompt, &params).unwrap();
    assert_eq!(st.stop, StopReason::StopString, "stop {stop:?} in {text:?}");
    assert_eq!(got.concat(), text[..first]);
    assert!(st.generated_tokens < plain.generated_tokens);
    // An empty stop string is refused.
    let bad = GenerateParams {
        stop: vec![String::new()],
        ..greedy(4)
    };
    assert!(matches!(
        run(&mut session(64), prompt, &bad),
        Err(Error::InvalidArg(_))
    ));
}

/// Multi-byte characters split across tokens reach the callback whole.
#[test]
fn multibyte_output_split_across_tokens_streams_whole_chars() {
    let m = common::model();
    let mut s = session(256);
    let (pieces, st) = run(&mut s, "日本の首都は東京です。中国の首都は", &greedy(24)).unwrap();
    let split = st
        .tokens
        .iter()
        .filter(|&&t| std::str::from_utf8(m.tokenizer().token_bytes(t)).is_err())
        .count();
    assert!(
        split > 0,
        "the output should hold tokens that are partial UTF-8"
    );
    let bytes: Vec<u8> = st
        .tokens
        .iter()
        .flat_map(|&t| m.tokenizer().token_bytes(t).to_vec())
        .collect();
    assert_eq!(pieces.concat(), String::from_utf8_lossy(&bytes));
    assert!(
        pieces.concat().chars().any(|c| c as u32 > 0x2E80),
        "{pieces:?}"
    );
}

#[test]
fn clone_continues_like_the_original() {
    let mut a = session(128);
    run(&mut a, "The three primary colors are", &greedy(4)).unwrap();
    let mut b = a.try_clone().unwrap();
    assert_eq!(b.usage(), a.usage());
    assert_eq!(b.context_tokens(), a.context_tokens());
    let ta = a
        .generate_tokens(&[], &greedy(8), |_| ControlFlow::Continue(()))
        .unwrap();
    let before = b.usage();
    let tb = b
        .generate_tokens(&[], &greedy(8), |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(ta.tokens, tb.tokens);
    assert_eq!(before.tokens + 8, b.usage().tokens);
    // The clone has its own cancel token.
    b.cancel_token().cancel();
    assert!(!a.cancel_token().is_cancelled());
}

#[test]
fn save_restore_reproduces_the_continuation() {
    let mut a = session(128);
    run(&mut a, "Once upon a time, in a small village,", &greedy(6)).unwrap();
    let blob = a.save_state().unwrap();
    let want = a
        .generate_tokens(&[], &greedy(10), |_| ControlFlow::Continue(()))
        .unwrap()
        .tokens;

    // Restore into a fresh session with a different context size.
    let mut b = session(300);
    b.load_state(&blob).unwrap();
    let got = b
        .generate_tokens(&[], &greedy(10), |_| ControlFlow::Continue(()))
        .unwrap()
        .tokens;
    assert_eq!(got, want);

    // A session with a too-small context refuses it.
    let mut small = session(8);
    assert!(matches!(
        small.load_state(&blob),
        Err(Error::ContextFull(_))
    ));

    // Damaged blobs are refused and the session is left as it was.
    let mut c = session(128);
    run(&mut c, "Hello", &greedy(2)).unwrap();
    let before = (c.context_tokens(), c.usage());
    let mut flipped = blob.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    for bad in [
        flipped,
        blob[..blob.len() - 1].to_vec(),
        blob[..20].to_vec(),
        b"not a state".to_vec(),
        Vec::new(),
    ] {
        match c.load_state(&bad) {
            Err(Error::InvalidArg(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected InvalidArg, got {other:?}"),
        }
        assert_eq!((c.context_tokens(), c.usage()), before);
    }
    let mut v2 = blob.clone();
    v2[8] = 2;
    match c.load_state(&v2) {
        Err(Error::InvalidArg(msg)) => assert!(msg.contains("version"), "{msg}"),
        other => panic!("expected InvalidArg, got {other:?}"),
    }
}

/// A state saved on one model is refused by another of the very same shape whose weights
/// differ in one byte.
#[test]
fn state_of_another_model_is_refused() {
    let m = common::model();
    let mut bytes = std::fs::read(common::model_path()).unwrap();
    let t = &m.file().tensors[m.file().tensors.len() / 2];
    let at = (m.file().data_start + t.offset) as usize;
    bytes[at] ^= 1;
    let other = Arc::new(
        Model::from_file(
            GgufFile::from_bytes(bytes).unwrap(),
            &ModelParams {
                n_threads: 1,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    assert_ne!(other.fingerprint(), m.fingerprint());
    let mut a = session(64);
    run(&mut a, "Hi", &greedy(2)).unwrap();
    let blob = a.save_state().unwrap();
    let mut b = other
        .session(&SessionParams {
            n_ctx: 64,
            ..Default::default()
        })
        .unwrap();
    match b.load_state(&blob) {
        Err(Error::InvalidArg(msg)) => assert!(msg.contains("different model"), "{msg}"),
        other => panic!("expected InvalidArg, got {other:?}"),
    }
}

/// Two sessions on one shared model, driven from two threads at once, produce the same
/// tokens as the same two runs one after the other.
#[test]
fn two_sessions_two_threads_equal_serial() {
    let prompts = ["The sun is a", "My favourite programming language is"];
    let params = GenerateParams {
        max_tokens: 12,
        sampling: SamplingParams {
            temperature: 0.7,
            seed: 7,
            ..Default::default()
        },
        ..Default::default()
    };
    let one = |p: &str| run(&mut session(128), p, &params).unwrap().1.tokens;
    let serial: Vec<Vec<u32>> = prompts.iter().map(|p| one(p)).collect();
    let parallel: Vec<Vec<u32>> = std::thread::scope(|sc| {
        let hs: Vec<_> = prompts.iter().map(|p| sc.spawn(move || one(p))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(parallel, serial);
}

/// Chat messages go through the model's template; a second turn re-uses the context and
/// only evaluates the new part of the conversation.
#[test]
fn chat_reuses_the_shared_prefix() {
    let mut s = session(512);
    let mut msgs = vec![ChatMessage::user("What is the capital of France?")];
    let mut reply = String::new();
    let st = s
        .chat(&msgs, &greedy(24), |p| {
            reply.push_str(p);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(!reply.is_empty());
    let first_prompt = s.chat_tokens(&msgs).unwrap();
    assert_eq!(st.prompt_tokens, first_prompt.len());
    // The template wraps the message the ChatML way.
    let text = s
        .model()
        .tokenizer()
        .decode_opts(&first_prompt, true)
        .unwrap();
    assert!(text.contains("<|im_start|>user\nWhat is the capital of France?<|im_end|>"));
    assert!(text.ends_with("<|im_start|>assistant\n"));

    msgs.push(ChatMessage::assistant(reply.trim()));
    msgs.push(ChatMessage::user("And of Germany?"));
    let all = s.chat_tokens(&msgs).unwrap();
    let st2 = s
        .chat(&msgs, &greedy(16), |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(
        st2.prompt_tokens < all.len() - first_prompt.len() + 4,
        "{} of {} tokens evaluated",
        st2.prompt_tokens,
        all.len()
    );
    assert_eq!(&s.context_tokens()[..all.len()], &all[..]);
    // An empty conversation is an argument error.
    assert!(matches!(
        s.chat(&[], &greedy(4), |_| ControlFlow::Continue(())),
        Err(Error::InvalidArg(_))
    ));
}

/// A context that fills up during generation is an error, not a crash; the session keeps
/// its context and works after a reset.
#[test]
fn context_full_mid_generation() {
    let mut s = session(24);
    let r = run(&mut s, "Count: one, two, three, four,", &greedy(100));
    assert!(matches!(r, Err(Error::ContextFull(_))), "{r:?}");
    assert_eq!(s.usage().tokens, 24);
    s.reset();
    let (_, st) = run(&mut s, "Hi", &greedy(3)).unwrap();
    assert_eq!(st.generated_tokens, 3);
}

/// A session over a quantized KV cache: a copy is rebuilt by running the context again and
/// continues exactly like the original; saving, truncating into quantized pages are clear
/// errors that leave the session usable; chat still works when the prefix cannot be cut.
#[test]
fn quantized_cache_clone_save_truncate_chat() {
    use suanpan::kv::{KvMode, KvParams};
    let m = common::model();
    let params = SessionParams {
        n_ctx: 256,
        kv: KvParams {
            mode: KvMode::Q4,
            window: 32,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut a = m.session(&params).unwrap();
    // Enough context that pages leave the f16 window and get quantized.
    let (_, st) = run(
        &mut a,
        "The history of the printing press begins in the fifteenth century, when Johannes \
         Gutenberg combined movable metal type, oil-based ink and a wooden press adapted from \
         wine making. Within fifty years presses were running in more than two hundred cities",
        &greedy(6),
    )
    .unwrap();
    assert!(st.prompt_tokens > 40, "{}", st.prompt_tokens);
    assert!(a.kv().as_quant().is_some());
    let mut b = a.try_clone().unwrap();
    assert_eq!(b.context_tokens(), a.context_tokens());
    let ta = a
        .generate_tokens(&[], &greedy(8), |_| ControlFlow::Continue(()))
        .unwrap();
    let tb = b
        .generate_tokens(&[], &greedy(8), |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(ta.tokens, tb.tokens);

    let e = a.save_state().unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArg(m) if m.contains("f16 KV cache")),
        "{e}"
    );
    let before = a.context_tokens();
    let e = a.truncate(4).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArg(m) if m.contains("f16 KV cache")),
        "{e}"
    );
    assert_eq!(
        a.context_tokens(),
        before,
        "a refused truncate changes nothing"
    );
    // Keeping everything is fine.
    a.truncate(before.len() + 5).unwrap();

    // chat with a conversation that is not an extension of the context: the cache cannot be
    // cut, so it starts over and still answers.
    let msgs = vec![ChatMessage::user("What is the capital of France?")];
    let mut reply = String::new();
    let st = a
        .chat(&msgs, &greedy(8), |p| {
            reply.push_str(p);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(st.generated_tokens, 8);
    // Same as the conversation in a fresh session.
    let mut fresh = m.session(&params).unwrap();
    let want = fresh
        .chat(&msgs, &greedy(8), |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(st.tokens, want.tokens, "{reply}");
}
