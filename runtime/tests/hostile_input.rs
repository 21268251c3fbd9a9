//! Hostile input from model files and callers (issue 18): chat templates that loop, recurse
//! or allocate without end, prompts far larger than the context, conversions aimed at their
//! own input, and hyperparameters that make no sense. Each must end with a clear error in
//! bounded work and memory, and leave the process and the session usable.

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use common::synth::Synth;
use suanpan::chat::{ChatMessage, ChatTemplate, RenderLimits};
use suanpan::convert::{convert, ConvertParams, Target};
use suanpan::format::gguf::{GgufFile, Value};
use suanpan::{CancelToken, Error, GenerateParams, Model, ModelParams, SessionParams};

// ---------------------------------------------------------------------------------------------
// Templates from the issue and their relatives.

const NESTED_LOOPS: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x";
const MACRO_RECURSION: &str =
    "{% macro f(n) %}{% if n < 40 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}{{ f(0) }}";
const LIST_DOUBLING: &str = "{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}";
const STRING_DOUBLING: &str = "{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
const CAPTURE_DOUBLING: &str = "{% macro f(n) %}{% if n < 30 %}{% set x = f(n+1) %}{{ x }}{{ x }}{% else %}ab{% endif %}{% endmacro %}{{ f(0)|length }}";
const HUGE_INDENT: &str = "{{ 'a\nb'|indent(1000000000) }}";
const REPEATED_STRINGS: &str = "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + ['a' * (100000000 - i)] %}{% endfor %}{{ ns.l|length }}";
const JOIN_OF_REPEATED_LIST: &str = "{{ (['xxxxxxxxxx'] * 100000000)|join }}";
const HUGE_OUTPUT: &str = "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}";

fn tmpl(src: &str) -> ChatTemplate {
    ChatTemplate::new(src, "<s>", "</s>").unwrap()
}

fn hi() -> Vec<ChatMessage> {
    vec![ChatMessage::user("hi")]
}

/// Peak resident memory of this process (Linux), in bytes.
fn peak_rss() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Every hostile template ends with the error that says why, one after the other in this
/// process, and the process's peak memory stays far below what they ask for (the list
/// doubling alone asks for 206 GB in one allocation).
#[test]
fn hostile_templates_fail_cleanly_in_bounded_memory() {
    let cases: &[(&str, &str, &str)] = &[
        ("nested loops", NESTED_LOOPS, "instructions"),
        ("macro recursion", MACRO_RECURSION, "instructions|recursion"),
        ("list doubling", LIST_DOUBLING, "memory"),
        ("string doubling", STRING_DOUBLING, "memory"),
        ("capture doubling", CAPTURE_DOUBLING, "memory"),
        ("indent", HUGE_INDENT, "memory"),
        ("repeated strings", REPEATED_STRINGS, "memory"),
        ("join", JOIN_OF_REPEATED_LIST, "memory"),
        ("output", HUGE_OUTPUT, "rendered text is over"),
    ];
    for (name, src, want) in cases {
        let e = tmpl(src).render(&hi(), true).unwrap_err();
        eprintln!("{name}: {e}");
        let ok = match &e {
            Error::Template(m) => want.split('|').any(|w| m.contains(w)),
            Error::OutOfMemory(m) => *want == "memory" && m.contains("chat template"),
            _ => false,
        };
        assert!(ok, "{name}: want an error about {want:?}, got {e:?}");
    }
    // The same template object still renders a conversation afterwards.
    let t = ChatTemplate::chatml();
    assert!(t.render(&hi(), true).unwrap().contains("hi"));
    if let Some(peak) = peak_rss() {
        eprintln!("peak RSS {:.0} MB", peak as f64 / 1e6);
        assert!(peak < 1 << 30, "peak RSS {peak} bytes");
    }
}

/// minijinja folds constant expressions while compiling: a template of many
/// `'a' * 100000000` would allocate gigabytes at load. Parsing runs under the budget too.
#[test]
fn constant_folding_at_parse_time_is_bounded() {
    let src = "{{ 'a' * 100000000 }}".repeat(30);
    match ChatTemplate::new(&src, "", "") {
        Err(Error::OutOfMemory(m)) => assert!(m.contains("chat template"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Loaded in a model, it only breaks chat.
    let m = with_template(&src);
    assert!(m.chat_template_error().is_some());
}

/// A template that keeps going over its memory budget is refused without rendering after
/// `MAX_MEMORY_TRIPS` times, so the memory its sleeping threads hold stays bounded.
#[test]
fn repeated_memory_trips_disable_the_template() {
    let t = tmpl(LIST_DOUBLING);
    for _ in 0..suanpan::chat::MAX_MEMORY_TRIPS {
        let e = t.render(&hi(), true).unwrap_err();
        assert!(
            matches!(&e, Error::OutOfMemory(m) if m.contains("needs more")),
            "{e:?}"
        );
    }
    let e = t.render(&hi(), true).unwrap_err();
    assert!(
        matches!(&e, Error::OutOfMemory(m) if m.contains("not rendered again")),
        "{e:?}"
    );
}

/// A memory budget smaller than the default is honoured.
#[test]
fn memory_budget_is_per_render() {
    let limits = RenderLimits {
        max_memory: 8 << 20,
        ..RenderLimits::default()
    };
    let t = tmpl("{{ 'x' * (20000000 + messages|length) }}");
    match t.render_limited(&hi(), true, &limits, None) {
        Err(Error::OutOfMemory(m)) => assert!(m.contains(&(8u64 << 20).to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
    // Within the default budget the same template renders.
    assert_eq!(t.render(&hi(), true).unwrap().len(), 20_000_001);
}

/// A long conversation still renders: the limits grow with the input.
#[test]
fn long_conversations_render() {
    let content = "word ".repeat(4 << 20); // 20 MB
    let msgs = vec![ChatMessage::user(content.clone()); 3];
    let out = ChatTemplate::chatml().render(&msgs, true).unwrap();
    assert!(out.len() > 3 * content.len());
}

/// Slow enough (~10 MB filled per iteration, 3000 iterations) that a cancel given right
/// after the start always lands first.
const SLOW: &str = "{% for i in range(3000) %}{% set x = 'x' * (10000000 + i) %}{% endfor %}done";

#[test]
fn cancel_stops_a_running_render() {
    let t = tmpl(SLOW);
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.cancel();
    });
    let r = t.render_limited(&hi(), true, &RenderLimits::default(), Some(&cancel));
    canceller.join().unwrap();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    // Cancelled before it starts.
    let r = t.render_limited(&hi(), true, &RenderLimits::default(), Some(&cancel));
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Through a model and a session.

fn synth_model(meta: Vec<(&str, Value)>) -> Result<Arc<Model>, Error> {
    let s = Synth {
        meta: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    };
    let f = GgufFile::from_bytes(s.gguf())?;
    let m = Model::from_file(
        f,
        &ModelParams {
            n_threads: 1,
            backend: suanpan::BackendKind::Cpu,
            ..Default::default()
        },
    )?;
    Ok(Arc::new(m))
}

fn with_template(src: &str) -> Arc<Model> {
    synth_model(vec![("tokenizer.chat_template", Value::String(src.into()))]).unwrap()
}

fn gp(n: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: n,
        ..Default::default()
    }
}

fn ignore(_: &str) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[test]
fn hostile_template_fails_chat_and_the_session_lives_on() {
    for src in [NESTED_LOOPS, LIST_DOUBLING] {
        let m = with_template(src);
        let mut s = m.session(&SessionParams::default()).unwrap();
        let e = s.chat(&hi(), &gp(4), ignore).unwrap_err();
        assert!(
            matches!(e, Error::Template(_) | Error::OutOfMemory(_)),
            "{e:?}"
        );
        let st = s.generate("the", &gp(3), ignore).unwrap();
        assert_eq!(st.generated_tokens, 3);
    }
}

#[test]
fn broken_template_only_breaks_chat() {
    let m = with_template("{% if %}");
    let err = m.chat_template_error().expect("the parse error is kept");
    assert!(err.contains("syntax error"), "{err}");
    let mut s = m.session(&SessionParams::default()).unwrap();
    match s.chat(&hi(), &gp(2), ignore) {
        Err(Error::Template(msg)) => assert!(msg.contains("does not parse"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.generate("the", &gp(2), ignore).unwrap().generated_tokens,
        2
    );
}

#[test]
fn cancel_stops_chat_while_the_template_renders() {
    let m = with_template(SLOW);
    let mut s = m.session(&SessionParams::default()).unwrap();
    let c = s.cancel_token();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.cancel();
    });
    let r = s.chat(&hi(), &gp(4), ignore);
    canceller.join().unwrap();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(s.last_generated(), 0);
    assert_eq!(
        s.generate("the", &gp(2), ignore).unwrap().generated_tokens,
        2
    );
}

/// A prompt far larger than the context is refused before it is tokenized: nothing near
/// its size is allocated.
#[test]
fn oversized_prompt_is_refused_before_tokenizing() {
    // A plain template: the synthetic vocabulary has no ChatML tokens to fall back on.
    let m = synth_model(vec![(
        "tokenizer.chat_template",
        Value::String("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
    )])
    .unwrap();
    let mut s = m
        .session(&SessionParams {
            n_ctx: 64,
            ..Default::default()
        })
        .unwrap();
    let prompt = "the ".repeat(2_500_000); // 10 MB
    let (r, stats) = suanpan::alloc_guard::measure(|| s.generate(&prompt, &gp(2), ignore));
    match r {
        Err(Error::ContextFull(m)) => assert!(m.contains("bytes"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(stats.largest < 1 << 20, "{stats:?}");
    // Just over the room: tokenized, then refused by count.
    let e = s.generate(&"t".repeat(65), &gp(2), ignore).unwrap_err();
    assert!(matches!(e, Error::ContextFull(_)), "{e:?}");
    // The session still works.
    assert_eq!(
        s.generate("the", &gp(2), ignore).unwrap().generated_tokens,
        2
    );
    // A chat whose rendered conversation cannot fit is refused the same way.
    let big = vec![ChatMessage::user(prompt.clone())];
    let e = s.chat(&big, &gp(2), ignore).unwrap_err();
    assert!(matches!(e, Error::ContextFull(_)), "{e:?}");
}

#[test]
fn tokens_generated_before_an_error_are_reported() {
    let m = synth_model(vec![]).unwrap();
    let mut s = m
        .session(&SessionParams {
            n_ctx: 16,
            ..Default::default()
        })
        .unwrap();
    let mut streamed = 0;
    let e = s
        .generate("the", &gp(100), |_| {
            streamed += 1;
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(matches!(e, Error::ContextFull(_)), "{e:?}");
    assert!(s.last_generated() > 0);
    assert!(streamed <= s.last_generated());
    // Cancelled after some tokens.
    s.reset();
    let c = s.cancel_token();
    let mut n = 0;
    let e = s
        .generate("the", &gp(10), |_| {
            n += 1;
            if n == 3 {
                c.cancel();
            }
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e:?}");
    assert!(s.last_generated() >= 3, "{}", s.last_generated());
}

// ---------------------------------------------------------------------------------------------
// Hyperparameters.

#[test]
fn senseless_hyperparameters_are_bad_models() {
    for (key, v, want) in [
        ("llama.context_length", 0u32, "context_length"),
        ("llama.rope.dimension_count", 0, "rope.dimension_count"),
        ("llama.rope.dimension_count", 7, "rope.dimension_count"),
        ("llama.rope.dimension_count", 64, "rope.dimension_count"),
    ] {
        match synth_model(vec![(key, Value::U32(v))]) {
            Err(Error::BadModel(m)) => assert!(m.contains(want), "{key}={v}: {m}"),
            other => panic!("{key}={v}: {other:?}"),
        }
    }
}

#[test]
fn far_too_many_threads_is_an_error() {
    let s = Synth::default();
    let f = GgufFile::from_bytes(s.gguf()).unwrap();
    let r = Model::from_file(
        f,
        &ModelParams {
            n_threads: 1000,
            backend: suanpan::BackendKind::Cpu,
            ..Default::default()
        },
    );
    match r {
        Err(Error::InvalidArg(m)) => assert!(m.contains("cores"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_folder_is_not_a_model() {
    let e = Model::load(std::env::temp_dir(), &ModelParams::default()).unwrap_err();
    assert!(e.to_string().contains("is a folder"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Conversion outputs.

fn conv_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("suanpan-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_synth(path: &std::path::Path) -> Vec<u8> {
    let bytes = Synth {
        ty: suanpan::format::GgmlType::BF16,
        ..Default::default()
    }
    .gguf();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn to_f16() -> ConvertParams {
    ConvertParams::new(Target::F16)
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".suanpan-"))
        .collect()
}

#[test]
fn convert_refuses_to_overwrite_its_input() {
    let d = conv_dir("self");
    let input = d.join("m.gguf");
    let bytes = write_synth(&input);
    let mut p = to_f16();
    p.overwrite = true;
    let e = convert(&input, &input, &p, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("is the input"), "{e}");
    // Through a symbolic link and a hard link.
    #[cfg(unix)]
    {
        let link = d.join("link.gguf");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let e = convert(&input, &link, &p, &|_| {}).unwrap_err();
        assert!(e.to_string().contains("is the input"), "{e}");
        let hard = d.join("hard.gguf");
        std::fs::hard_link(&input, &hard).unwrap();
        let e = convert(&input, &hard, &p, &|_| {}).unwrap_err();
        assert!(e.to_string().contains("is the input"), "{e}");
    }
    assert_eq!(std::fs::read(&input).unwrap(), bytes, "the input changed");
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn convert_asks_before_overwriting_and_keeps_inputs_named_partial() {
    let d = conv_dir("force");
    // An input named like the old temporary file of the output.
    let input = d.join("x.partial");
    let bytes = write_synth(&input);
    let out = d.join("x.gguf");
    convert(&input, &out, &to_f16(), &|_| {}).unwrap();
    assert_eq!(std::fs::read(&input).unwrap(), bytes);
    let first = std::fs::read(&out).unwrap();
    // Exists: refused without overwrite, the file untouched.
    std::fs::write(&out, b"keep me").unwrap();
    let e = convert(&input, &out, &to_f16(), &|_| {}).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let mut p = to_f16();
    p.overwrite = true;
    convert(&input, &out, &p, &|_| {}).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), first);
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
    // A conversion killed outright (pid 4294967295 never runs) left its file: the next
    // conversion to that output removes it; one of a live process stays.
    let stale = d.join(".x.gguf.suanpan-4294967295-0.tmp");
    let live = d.join(format!(".x.gguf.suanpan-{}-999999.tmp", std::process::id()));
    std::fs::write(&stale, b"half a model").unwrap();
    std::fs::write(&live, b"in progress").unwrap();
    convert(&input, &out, &p, &|_| {}).unwrap();
    assert!(!stale.exists());
    assert!(live.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[cfg(unix)]
#[test]
fn convert_refuses_device_and_folder_outputs() {
    let d = conv_dir("dev");
    let input = d.join("m.gguf");
    write_synth(&input);
    let mut p = to_f16();
    p.overwrite = true;
    for out in [PathBuf::from("/dev/null"), d.clone()] {
        let e = convert(&input, &out, &p, &|_| {}).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    assert!(leftovers(&d).is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The deterministic counterpart of `fuzz/fuzz_targets/chat_template.rs`.

/// Templates assembled from fragments of real and hostile templates by a seeded generator
/// (600 executions): each renders or fails with a template / memory error, never a panic,
/// hang or abort. Small limits keep every execution short.
#[test]
fn generated_templates_render_or_fail_cleanly() {
    const FRAGMENTS: &[&str] = &[
        "{% for m in messages %}",
        "{% endfor %}",
        "{% if add_generation_prompt %}",
        "{% endif %}",
        "{{ m.role }}",
        "{{ m['content'] }}",
        "{{ '<|im_start|>' + m.role + '\\n' }}",
        "{% set ns = namespace(l=[1], s='ab') %}",
        "{% set ns.l = ns.l + ns.l %}",
        "{% set ns.s = ns.s ~ ns.s %}",
        "{% for i in range(100000) %}",
        "{{ ns.l|length }}",
        "{{ ns.s|length }}",
        "{{ 'x' * 100000 }}",
        "{{ 'a\\nb'|indent(100000) }}",
        "{{ messages|tojson }}",
        "{{ (['xy'] * 1000000)|join }}",
        "{% macro f(n) %}{% if n < 30 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}",
        "{{ f(0) }}",
        "{{ raise_exception('no') }}",
        "{{ messages[0].content.strip().split(' ')|length }}",
        "{{ bos_token }}{{ eos_token }}",
        "{% if",
        "}}",
        "text\n",
    ];
    let limits = RenderLimits {
        fuel: 200_000,
        recursion: 100,
        max_output: 1 << 20,
        max_memory: 1 << 20,
    };
    let msgs = vec![
        ChatMessage::system("be brief"),
        ChatMessage::user("hello there"),
        ChatMessage::assistant("hi"),
    ];
    let mut x: u64 = 0x5eed_cafe_f00d_1234;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut ok, mut template_err, mut oom, mut parse_err) = (0, 0, 0, 0);
    for _ in 0..600 {
        let n = 1 + (next() % 8) as usize;
        let src: String = (0..n)
            .map(|_| FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize])
            .collect();
        let Ok(t) = ChatTemplate::with_limits(&src, "<s>", "</s>", &limits) else {
            parse_err += 1;
            continue;
        };
        match t.render_limited(&msgs, true, &limits, None) {
            Ok(text) => {
                assert!(text.len() <= limits.max_output, "{src}");
                ok += 1;
            }
            Err(Error::Template(m)) => {
                assert!(!m.is_empty());
                template_err += 1;
            }
            Err(Error::OutOfMemory(_)) => oom += 1,
            Err(e) => panic!("{src}: {e:?}"),
        }
    }
    eprintln!(
        "600 executions: {ok} rendered, {template_err} template errors, {oom} over memory, \
         {parse_err} did not parse"
    );
    assert!(ok > 0 && template_err > 0 && oom > 0 && parse_err > 0);
}

/// A model with no chat template and no ChatML tokens in its vocabulary (a base model such
/// as Gemma 3 270M): chat says so instead of rendering ChatML as plain text; plain
/// generation still works.
#[test]
fn chat_on_a_base_model_says_it_has_no_template() {
    let m = synth_model(vec![]).unwrap();
    assert!(m.chat_template().is_none() && m.effective_chat_template().is_none());
    let mut s = m.session(&SessionParams::default()).unwrap();
    match s.chat(&hi(), &gp(2), ignore) {
        Err(Error::Template(msg)) => assert!(msg.contains("base model"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.generate("the", &gp(2), ignore).unwrap().generated_tokens,
        2
    );
}
