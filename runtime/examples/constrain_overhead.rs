//! What constrained decoding costs per token: the same model and prompt decoded without a
//! constraint, with a JSON schema, and with a regex that spells out the unconstrained
//! greedy output (so both runs evaluate exactly the same tokens and the difference is the
//! mask alone). Prints ms/token; run in release mode:
//!
//!     cargo run --release -p suanpan --example constrain_overhead [-- MODEL|"" [THREADS]]

use std::ops::ControlFlow;
use std::sync::Arc;

use suanpan::chat::ChatMessage;
use suanpan::{Constraint, GenerateParams, Model, ModelParams, SamplingParams, SessionParams};

fn main() -> suanpan::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .filter(|p| !p.is_empty())
        .map(Into::into)
        .unwrap_or_else(suanpan::install::default_model_path);
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let model = Arc::new(Model::load(
        &path,
        &ModelParams {
            n_threads: threads,
            ..Default::default()
        },
    )?);
    let msgs = [ChatMessage::user(
        "Describe a fantasy character as JSON with name, age, class and a long backstory.",
    )];
    let run = |c: Option<Constraint>, n: usize| -> suanpan::Result<(String, usize, f64, f64)> {
        let mut s = model.session(&SessionParams {
            n_ctx: 1024,
            ..Default::default()
        })?;
        let p = GenerateParams {
            max_tokens: n,
            sampling: SamplingParams::greedy(),
            constraint: c,
            ..Default::default()
        };
        let mut text = String::new();
        let st = s.chat(&msgs, &p, |piece| {
            text.push_str(piece);
            ControlFlow::Continue(())
        })?;
        // Decode time per token after the first (whose logits came from the prompt).
        let per = st.generate_ms / st.generated_tokens.saturating_sub(1).max(1) as f64;
        let mask = st.mask_ms / st.generated_tokens.max(1) as f64;
        Ok((text, st.generated_tokens, per, mask))
    };
    let schema = r#"{"type":"object","properties":{"name":{"type":"string"},
        "age":{"type":"integer"},"class":{"type":"string"},"backstory":{"type":"string"}},
        "required":["name","age","class","backstory"]}"#;
    // Build the vocabulary tables once before timing.
    run(Some(Constraint::Regex("a".into())), 1)?;
    let n = 96;
    for rep in 0..3 {
        let (text, n0, free, _) = run(None, n)?;
        let literal = regex_escape(&text);
        let (text2, n1, lit, lit_mask) = run(Some(Constraint::Regex(literal)), n)?;
        assert_eq!(
            text, text2,
            "the literal regex must reproduce the greedy output"
        );
        let (_, n2, json, json_mask) = run(Some(Constraint::JsonSchema(schema.into())), n)?;
        println!(
            "rep {rep}: unconstrained {free:.2} ms/token ({n0} tokens) | same tokens under a \
             literal regex {lit:.2} ms/token ({n1}, {:+.1}%, mask {lit_mask:.2} ms/token) | \
             JSON schema {json:.2} ms/token ({n2} tokens, {:+.1}%, mask {json_mask:.2} ms/token)",
            (lit / free - 1.0) * 100.0,
            (json / free - 1.0) * 100.0
        );
    }
    println!("backend: {}", model.backend_name());
    Ok(())
}

fn regex_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~\n\t".contains(c) {
            match c {
                '\n' => o.push_str("\\n"),
                '\t' => o.push_str("\\t"),
                _ => {
                    o.push('\\');
                    o.push(c);
                }
            }
        } else {
            o.push(c);
        }
    }
    o
}
