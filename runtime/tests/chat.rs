//! Chat template tests: the SmolLM2 template from the real GGUF, HF-style rendering
//! semantics (trim/lstrip blocks, Python string methods, raise_exception), and errors.
//!
//! The SmolLM2 tests need the default model (`$SUANPAN_MODEL`, or the installer's path
//! under `$SUANPAN_CACHE` / `~/.cache/suanpan`; `scripts/test` installs it) and
//! `tests/golden/smollm2_tokenize.json`; they FAIL, saying how to get it, when missing.

mod common;

use std::path::PathBuf;

use suanpan::chat::{ChatMessage, ChatTemplate};
use suanpan::format::gguf::{GgufFile, GgufWriter, Value};
use suanpan::Error;

fn smollm2_template() -> ChatTemplate {
    let f = GgufFile::open(common::model_path()).unwrap();
    ChatTemplate::from_gguf(&f)
        .unwrap()
        .expect("SmolLM2 ships a chat template")
}

fn expect_template_err(r: Result<impl std::fmt::Debug, Error>, needle: &str) {
    match r {
        Err(Error::Template(msg)) => assert!(
            msg.contains(needle),
            "message {msg:?} should mention {needle:?}"
        ),
        other => panic!("expected Error::Template mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn smollm2_system_and_user() {
    let t = smollm2_template();
    assert_eq!(t.bos_token(), "<|im_start|>");
    assert_eq!(t.eos_token(), "<|im_end|>");
    let msgs = [
        ChatMessage::system("You are a terse assistant."),
        ChatMessage::user("Hi"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&msgs, false).unwrap(),
        "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn smollm2_default_system_prompt() {
    // Without a system message the template inserts its own.
    let t = smollm2_template();
    let msgs = [
        ChatMessage::user("What is 2+2?"),
        ChatMessage::assistant("4"),
        ChatMessage::user("Thanks"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n4<|im_end|>\n\
         <|im_start|>user\nThanks<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn chatml_fallback() {
    let t = ChatTemplate::chatml();
    let msgs = [ChatMessage::system("S"), ChatMessage::user("U")];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(t.render(&[], false).unwrap(), "");
}

#[test]
fn syntax_error_is_template_error() {
    expect_template_err(
        ChatTemplate::new("{% for m in messages %}{{ m.content }", "", ""),
        "syntax error",
    );
    expect_template_err(ChatTemplate::new("{% if %}", "", ""), "syntax error");
    expect_template_err(
        ChatTemplate::new("{% for m in messages %}x", "", ""),
        "syntax error",
    );
}

#[test]
fn render_errors_are_template_errors() {
    let t = ChatTemplate::new(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok",
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "ok");
    expect_template_err(
        t.render(&[ChatMessage::system("x")], false),
        "first message must be from the user",
    );
    // Errors at render time (calling something that is not callable).
    let t = ChatTemplate::new("{{ messages() }}", "", "").unwrap();
    expect_template_err(t.render(&[], false), "");
    let t = ChatTemplate::new("{{ messages | no_such_filter }}", "", "").unwrap();
    expect_template_err(t.render(&[], false), "no_such_filter");
}

/// Llama-2's HF chat template: raise_exception, slicing, `.strip()`, bos/eos tokens.
const LLAMA2_TEMPLATE: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

#[test]
fn llama2_template_python_methods() {
    let t = ChatTemplate::new(LLAMA2_TEMPLATE, "<s>", "</s>").unwrap();
    let msgs = [
        ChatMessage::system("S"),
        ChatMessage::user("Hi  "),
        ChatMessage::assistant("  Hello"),
        ChatMessage::user("Q"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Q [/INST]"
    );
    expect_template_err(
        t.render(&[ChatMessage::user("a"), ChatMessage::user("b")], false),
        "Conversation roles must alternate",
    );
}

#[test]
fn hf_whitespace_control_and_extras() {
    // jinja2 with trim_blocks + lstrip_blocks, as HF renders.
    let t = ChatTemplate::new("{% if true %}\n  A\n    {% endif %}\nB", "", "").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "  A\nB");
    // Python string methods, tojson, loop controls, namespace.
    let src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.content.startswith('skip') %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}{{ m.role.upper() }}:{{ m.content.replace('a', 'b') | tojson }};{% endfor %}{{ ns.n }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let msgs = [
        ChatMessage::user("banana"),
        ChatMessage::user("skip me"),
        ChatMessage::assistant("ok \"q\""),
    ];
    assert_eq!(
        t.render(&msgs, false).unwrap(),
        "USER:\"bbnbnb\";ASSISTANT:\"ok \\\"q\\\"\";2"
    );
    // strftime_now exists (Llama 3.1 templates call it).
    let t = ChatTemplate::new("{{ strftime_now('%Y') | length }}", "", "").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "4");
}

#[test]
fn from_gguf_without_template_is_none() {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", Value::String("llama".into()));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(ChatTemplate::from_gguf(&f).unwrap().is_none());
}

#[test]
fn from_gguf_wrong_type_or_bad_template() {
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.chat_template", Value::U32(7));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    match ChatTemplate::from_gguf(&f) {
        Err(Error::BadModel(msg)) => assert!(msg.contains("tokenizer.chat_template"), "{msg}"),
        other => panic!("expected BadModel, got {other:?}"),
    }
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.chat_template", Value::String("{% for %}".into()));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    expect_template_err(ChatTemplate::from_gguf(&f), "");
}

#[test]
fn from_gguf_binds_bos_and_eos() {
    let mut w = GgufWriter::new();
    w.add_meta(
        "tokenizer.chat_template",
        Value::String("{{ bos_token }}|{{ eos_token }}".into()),
    );
    w.add_meta(
        "tokenizer.ggml.tokens",
        Value::Array(vec![
            Value::String("<unk>".into()),
            Value::String("<s>".into()),
            Value::String("</s>".into()),
        ]),
    );
    w.add_meta("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.add_meta("tokenizer.ggml.eos_token_id", Value::U32(2));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let t = ChatTemplate::from_gguf(&f).unwrap().unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "<s>|</s>");
}

#[test]
fn error_messages_are_readable() {
    let e = ChatTemplate::new("line one\n{% if %}", "", "").unwrap_err();
    eprintln!("{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("syntax error") && msg.contains("chat_template:2"),
        "{msg}"
    );
}

/// llama.cpp's own rendering of a SmolLM2 conversation (`llama_chat_apply_template`,
/// recorded in `tests/golden/smollm2_tokenize.json` by `tests/golden/make_golden.py`).
#[test]
fn smollm2_matches_llama_cpp_rendering() {
    let path = match std::env::var_os("SUANPAN_GOLDEN_TOKENIZE") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/smollm2_tokenize.json")
        }
    };
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}).\nMake it with llama.cpp's reference implementation:\n  \
             pip install llama-cpp-python==0.3.36 && python3 tests/golden/make_golden.py --out-dir tests/golden",
            path.display()
        )
    });
    let golden: serde_json::Value = serde_json::from_str(&src).unwrap();
    let ct = &golden["chat_template"];
    let Some(want) = ct["rendered_by_llama_chat_apply_template"].as_str() else {
        panic!(
            "{}: chat_template.rendered_by_llama_chat_apply_template is missing",
            path.display()
        );
    };
    let msgs: Vec<ChatMessage> = ct["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let add = ct["add_assistant"].as_bool().unwrap_or(true);
    let t = smollm2_template();
    if let Some(src) = ct["gguf_template"].as_str() {
        assert_eq!(t.source(), src);
    }
    assert_eq!(t.render(&msgs, add).unwrap(), want);
}

#[test]
fn chat_template_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ChatTemplate>();
    check::<ChatMessage>();
}
