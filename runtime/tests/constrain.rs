//! Constrained decoding on the real default model: JSON schemas, regexes and Lark grammars
//! over varied prompts and seeds (every output parses and matches), and the clear errors
//! for constraints that cannot compile or cannot be satisfied.

mod common;

use std::ops::ControlFlow;

use serde_json::{json, Value};
use suanpan::chat::ChatMessage;
use suanpan::{
    Constraint, Error, GenerateParams, GenerateStats, SamplingParams, SessionParams, StopReason,
};

fn params(c: Constraint, seed: Option<u64>, max_tokens: usize) -> GenerateParams {
    let sampling = match seed {
        None => SamplingParams::greedy(),
        Some(seed) => SamplingParams {
            temperature: 0.9,
            seed,
            ..Default::default()
        },
    };
    GenerateParams {
        max_tokens,
        sampling,
        constraint: Some(c),
        ..Default::default()
    }
}

/// Chat with one user message; returns the reply text and the stats.
fn chat(prompt: &str, p: &GenerateParams) -> suanpan::Result<(String, GenerateStats)> {
    let mut s = common::model()
        .session(&SessionParams {
            n_ctx: 512,
            ..Default::default()
        })
        .unwrap();
    let mut text = String::new();
    let stats = s.chat(&[ChatMessage::new("user", prompt)], p, |piece| {
        text.push_str(piece);
        ControlFlow::Continue(())
    })?;
    Ok((text, stats))
}

/// A small JSON-schema checker for the keywords the test schemas use (type, properties,
/// required, additionalProperties: false, enum, minimum/maximum, minLength/maxLength,
/// items, minItems/maxItems). Returns what does not match.
fn check(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let fail = |m: String| Err(format!("{at}: {m} (value {v})"));
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => return fail(format!("checker does not know type {t}")),
        };
        if !ok {
            return fail(format!("not of type {t}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return fail(format!("not one of {e:?}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            return fail("below minimum".into());
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            return fail("above maximum".into());
        }
    }
    if let Some(s) = v.as_str() {
        let n = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            return fail("shorter than minLength".into());
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            return fail("longer than maxLength".into());
        }
    }
    if let Some(a) = v.as_array() {
        let n = a.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            return fail("fewer than minItems".into());
        }
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            return fail("more than maxItems".into());
        }
        if let Some(items) = schema.get("items") {
            for (i, x) in a.iter().enumerate() {
                check(items, x, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let Some(o) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !o.contains_key(r) {
                return fail(format!("missing required {r}"));
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(s, x, &format!("{at}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&json!(false)) => {
                    return fail(format!("unexpected property {k}"))
                }
                None => {}
            }
        }
    }
    Ok(())
}

#[test]
fn json_schema_outputs_parse_and_match() {
    let person = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string", "maxLength": 20}
        },
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let weather = json!({
        "type": "object",
        "properties": {
            "sky": {"enum": ["sunny", "cloudy", "rainy"]},
            "celsius": {"type": "number", "minimum": -50, "maximum": 60},
            "windy": {"type": "boolean"}
        },
        "required": ["sky", "celsius", "windy"],
        "additionalProperties": false
    });
    let list = json!({
        "type": "object",
        "properties": {
            "colors": {
                "type": "array",
                "items": {"type": "string", "maxLength": 12},
                "minItems": 2,
                "maxItems": 4
            }
        },
        "required": ["colors"],
        "additionalProperties": false
    });
    let cases = [
        (&person, "Describe a person as JSON.", None),
        (&person, "Invent a character from a novel.", Some(11)),
        (
            &weather,
            "What is the weather like today? Answer in JSON.",
            None,
        ),
        (&weather, "Report the weather in Paris.", Some(5)),
        (&list, "List some colors of the rainbow.", None),
        (&list, "Name a few colors.", Some(99)),
    ];
    for (schema, prompt, seed) in cases {
        let p = params(Constraint::JsonSchema(schema.to_string()), seed, 96);
        let (text, stats) = chat(prompt, &p).unwrap();
        assert_eq!(
            stats.stop,
            StopReason::EndOfGeneration,
            "{prompt:?} seed {seed:?}: output not complete in 96 tokens: {text}"
        );
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{prompt:?} seed {seed:?}: {e}: {text}"));
        check(schema, &v, "$").unwrap_or_else(|e| panic!("{prompt:?} seed {seed:?}: {e}"));
    }
}

#[test]
fn json_object_is_an_object() {
    for seed in [None, Some(3)] {
        let p = params(Constraint::JsonObject, seed, 96);
        let (text, stats) = chat("Give me a JSON object about cats.", &p).unwrap();
        if stats.stop == StopReason::EndOfGeneration {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(v.is_object(), "{text}");
        } else {
            // Cut by max_tokens: still a prefix of an object.
            assert_eq!(stats.stop, StopReason::MaxTokens);
            assert!(text.starts_with('{'), "{text}");
        }
    }
}

#[test]
fn regex_outputs_match() {
    let cases = [
        (r"\d{3}-\d{4}", "What is your phone number?"),
        (r"(yes|no)", "Is the sky blue? Answer yes or no."),
        (
            r"[A-Z][a-z]{1,10} [A-Z][a-z]{1,12}",
            "Name a famous scientist.",
        ),
        (r"(red|green|blue), (red|green|blue)", "Two colors please."),
    ];
    for (rx, prompt) in cases {
        let full = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
        for seed in [None, Some(1), Some(2)] {
            let p = params(Constraint::Regex(rx.into()), seed, 40);
            let (text, stats) = chat(prompt, &p).unwrap();
            assert_eq!(stats.stop, StopReason::EndOfGeneration, "{rx}: {text:?}");
            assert!(full.is_match(&text), "{rx} seed {seed:?}: {text:?}");
        }
    }
}

#[test]
fn lark_grammar_outputs_parse() {
    // A sum of 1..=4 small numbers, then "=" and a result.
    let grammar = r#"
start: sum "=" NUMBER
sum: NUMBER ("+" NUMBER)~0..3
NUMBER: /[0-9]{1,3}/
"#;
    for (prompt, seed) in [
        ("Write an addition.", None),
        ("What is two plus two?", Some(4)),
        ("Add some numbers.", Some(8)),
    ] {
        let p = params(Constraint::Grammar(grammar.into()), seed, 40);
        let (text, stats) = chat(prompt, &p).unwrap();
        assert_eq!(stats.stop, StopReason::EndOfGeneration, "{text:?}");
        let (lhs, rhs) = text.split_once('=').unwrap_or_else(|| panic!("{text:?}"));
        let num = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
        assert!(num(rhs), "{text:?}");
        let terms: Vec<&str> = lhs.split('+').collect();
        assert!((1..=4).contains(&terms.len()), "{text:?}");
        assert!(terms.iter().all(|t| num(t)), "{text:?}");
    }
}

#[test]
fn constraints_that_do_not_compile_are_refused() {
    let bad = [
        Constraint::JsonSchema("{not json".into()),
        Constraint::JsonSchema("[1, 2]".into()),
        Constraint::Regex("(unclosed".into()),
        Constraint::Regex(String::new()),
        Constraint::Grammar("start: undefined_rule".into()),
        Constraint::Grammar("   ".into()),
    ];
    for c in bad {
        let kind = c.kind();
        match chat("Hello", &params(c.clone(), None, 8)) {
            Err(Error::InvalidArg(m)) => assert!(m.starts_with(kind), "{c:?}: {m}"),
            other => panic!("{c:?}: {other:?}"),
        }
    }
}

#[test]
fn unsatisfiable_constraints_end_with_a_clear_error() {
    // Languages with no string at all: a rule that never ends, an empty character class,
    // contradictory schema bounds. Each ends with an error naming the constraint (at
    // compile time or at the first draw), never a hang or a silent unconstrained output.
    let cases = [
        Constraint::Grammar("start: a\na: \"x\" a".into()),
        Constraint::Regex(r"[^\s\S]".into()),
        Constraint::JsonSchema(
            json!({"type": "string", "minLength": 5, "maxLength": 2}).to_string(),
        ),
    ];
    for c in cases {
        let kind = c.kind();
        match chat("Hello", &params(c.clone(), None, 16)) {
            Err(Error::InvalidArg(m)) => {
                eprintln!("{c:?}: {m}");
                assert!(m.starts_with(kind), "{c:?}: {m}")
            }
            other => panic!("{c:?}: {other:?}"),
        }
    }
}

#[test]
fn session_stays_usable_after_a_constrained_error() {
    let model = common::model();
    let mut s = model
        .session(&SessionParams {
            n_ctx: 256,
            ..Default::default()
        })
        .unwrap();
    let bad = params(Constraint::Regex("(unclosed".into()), None, 8);
    assert!(s
        .generate("Hello", &bad, |_| ControlFlow::Continue(()))
        .is_err());
    assert!(
        s.tokens().is_empty(),
        "a refused constraint ingests nothing"
    );
    let good = params(Constraint::Regex("[0-9]{2}".into()), None, 8);
    let mut text = String::new();
    s.generate("My age is", &good, |p| {
        text.push_str(p);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(
        regex::Regex::new("^[0-9]{2}$").unwrap().is_match(&text),
        "{text:?}"
    );
}
