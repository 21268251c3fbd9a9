//! Fuzz chat templates and messages: any template text and any conversation must render to
//! `Ok` or an error (template, out of memory), never panic, hang or abort. Renders run
//! with small limits (fuel 200,000 instructions, 1 MB of memory and of output) so that
//! each execution is short.
//!
//! Input layout: template text, a NUL byte, then message contents separated by NUL bytes
//! (roles alternate user / assistant). Invalid UTF-8 becomes U+FFFD.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suanpan::chat::{ChatMessage, ChatTemplate, RenderLimits};
use suanpan::Error;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let source = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let messages: Vec<ChatMessage> = parts
        .take(8)
        .enumerate()
        .map(|(i, p)| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            ChatMessage::new(role, String::from_utf8_lossy(p))
        })
        .collect();
    let limits = RenderLimits {
        fuel: 200_000,
        recursion: 100,
        max_output: 1 << 20,
        max_memory: 1 << 20,
    };
    let Ok(t) = ChatTemplate::with_limits(&source, "<s>", "</s>", &limits) else {
        return;
    };
    match t.render_limited(&messages, true, &limits, None) {
        Ok(text) => assert!(text.len() <= limits.max_output),
        Err(Error::Template(m) | Error::OutOfMemory(m)) => assert!(!m.is_empty()),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
