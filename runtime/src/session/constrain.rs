//! Constrained decoding: output that matches a JSON schema, a regular expression or a
//! Lark-style grammar, through [`llguidance`] (the library llama.cpp uses).
//!
//! How it works: the model's vocabulary becomes a [`TokTrie`] (the byte string of every
//! token id; control tokens are marked special so no grammar matches them as text), built
//! once per model. Each generation compiles its [`Constraint`] into a matcher; before every
//! draw the matcher computes the set of tokens that keep the output a prefix of some string
//! of the language (a bitmask, one bit per token id: bit `i % 32` of word `i / 32`), the
//! sampler drops the others, and the drawn token advances the matcher. End-of-generation
//! tokens are allowed exactly when the output so far is a complete string of the language.
//!
//! The mask for token `n + 1` depends only on tokens `..= n`, so it is computed on a
//! helper thread while the forward pass of token `n` runs ([`Guide::overlapped`]).
//!
//! A grammar with no valid continuation (an empty language, or a dead end) ends the
//! generation with [`Error::InvalidArg`] naming the constraint, never a hang; a grammar that
//! does not compile is refused before any token is evaluated.

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::SimpleVob;
use llguidance::{JsonCompileOptions, Matcher};

use crate::error::{Error, Result};
use crate::model::Model;

/// What the generated text must match (as a whole: the output is a complete string of the
/// language when generation ends by itself; `max_tokens` may still cut it short).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// A JSON schema, as JSON text (llguidance's supported subset: types, properties,
    /// required, enum/const, items, anyOf/oneOf, `#/...` references, string and number
    /// bounds). Output is compact JSON unless the schema carries its own `x-guidance`
    /// options.
    JsonSchema(String),
    /// Any JSON object (`response_format: json_object`).
    JsonObject,
    /// A regular expression (Rust `regex` syntax) the whole output matches.
    Regex(String),
    /// A grammar in llguidance's Lark-like syntax (`start: ...`, `/regex/` terminals,
    /// `%json { schema }` embeds).
    Grammar(String),
}

impl Constraint {
    /// The short name used in errors ("JSON schema", "regex", "grammar").
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonSchema(_) | Constraint::JsonObject => "JSON schema",
            Constraint::Regex(_) => "regex",
            Constraint::Grammar(_) => "grammar",
        }
    }

    /// Compile the constraint for `model`'s vocabulary without generating: the
    /// [`Error::InvalidArg`] a generation with it would fail with, or `Ok`. (Servers use it
    /// to refuse a bad schema before streaming.)
    pub fn check(&self, model: &Model) -> Result<()> {
        Guide::new(model, self).map(|_| ())
    }

    fn to_grammar(&self) -> Result<TopLevelGrammar> {
        let compact = |mut schema: serde_json::Value| -> Result<TopLevelGrammar> {
            let Some(obj) = schema.as_object() else {
                return Err(Error::invalid(
                    "JSON schema: the schema must be a JSON object",
                ));
            };
            // Compact output: flexible whitespace lets a small model wander into endless
            // newlines before it ever closes the object.
            if !obj.contains_key("x-guidance") {
                JsonCompileOptions {
                    whitespace_flexible: false,
                    ..Default::default()
                }
                .apply_to(&mut schema);
            }
            Ok(TopLevelGrammar::from_json_schema(schema))
        };
        match self {
            Constraint::JsonSchema(text) => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| Error::invalid(format!("JSON schema is not valid JSON: {e}")))?;
                compact(v)
            }
            Constraint::JsonObject => compact(serde_json::json!({"type": "object"})),
            Constraint::Regex(rx) => {
                if rx.is_empty() {
                    return Err(Error::invalid("regex: the expression is empty"));
                }
                Ok(TopLevelGrammar::from_regex(rx))
            }
            Constraint::Grammar(g) => {
                if g.trim().is_empty() {
                    return Err(Error::invalid("grammar: the grammar is empty"));
                }
                Ok(TopLevelGrammar::from_lark(g.clone()))
            }
        }
    }
}

/// One constrained generation: the matcher and the mask of allowed next tokens.
pub(crate) struct Guide {
    matcher: Matcher,
    kind: &'static str,
    mask: Option<SimpleVob>,
    /// Tokens accepted so far (for error messages).
    n: usize,
    /// Time spent in [`Guide::compute_mask`], in ms.
    mask_ms: f64,
}

impl Guide {
    /// Compile `c` for `model`'s vocabulary. A grammar that does not compile is an
    /// [`Error::InvalidArg`] naming what is wrong.
    pub(crate) fn new(model: &Model, c: &Constraint) -> Result<Guide> {
        let grammars = model.grammars()?;
        let grammar = c.to_grammar()?;
        let kind = c.kind();
        let matcher = Matcher::new(grammars.factory().create_parser(grammar));
        if let Some(e) = matcher.get_error() {
            return Err(Error::invalid(format!("{kind}: {}", first_line(&e))));
        }
        Ok(Guide {
            matcher,
            kind,
            mask: None,
            n: 0,
            mask_ms: 0.0,
        })
    }

    /// Compute the mask of tokens allowed next (end-of-generation tokens only, once the
    /// output is complete).
    pub(crate) fn compute_mask(&mut self) -> Result<()> {
        let t = crate::clock::Instant::now();
        let r = self.compute_mask_inner();
        self.mask_ms += t.elapsed().as_secs_f64() * 1e3;
        r
    }

    /// Total time spent computing masks, in ms.
    pub(crate) fn mask_ms(&self) -> f64 {
        self.mask_ms
    }

    fn compute_mask_inner(&mut self) -> Result<()> {
        self.mask = None;
        let m = self.matcher.compute_mask_or_eos().map_err(|e| {
            Error::invalid(format!(
                "{}: no token can continue the output after {} tokens (the constraint \
                 cannot be satisfied: {})",
                self.kind,
                self.n,
                first_line(&e)
            ))
        })?;
        self.mask = Some(m);
        Ok(())
    }

    /// Run `f` (a forward pass) while the next mask is computed on a helper thread.
    /// Where no thread can be started (e.g. wasm without threads) it runs `f`, then the
    /// mask.
    pub(crate) fn overlapped<T>(&mut self, f: impl FnOnce() -> T) -> (T, Result<()>) {
        let done = std::thread::scope(|s| {
            match std::thread::Builder::new().spawn_scoped(s, || self.compute_mask()) {
                Ok(h) => {
                    let r = f();
                    let m = h.join().unwrap_or_else(|_| {
                        Err(Error::Internal("the grammar mask thread panicked".into()))
                    });
                    Ok((r, m))
                }
                Err(_) => Err(f),
            }
        });
        match done {
            Ok(rm) => rm,
            Err(f) => {
                let r = f();
                (r, self.compute_mask())
            }
        }
    }

    /// The allowed tokens (bit `i % 32` of word `i / 32` is token `i`); empty before the
    /// first [`Guide::compute_mask`].
    pub(crate) fn mask(&self) -> &[u32] {
        self.mask.as_ref().map(|m| m.as_slice()).unwrap_or(&[])
    }

    /// The error for a draw that found no allowed token.
    pub(crate) fn dead_end(&self) -> Error {
        Error::invalid(format!(
            "{}: no token of the vocabulary can continue the output after {} tokens \
             (the constraint cannot be satisfied)",
            self.kind, self.n
        ))
    }

    /// Advance past a drawn token; returns whether the output is now complete (the
    /// language allows nothing more).
    pub(crate) fn commit(&mut self, token: u32) -> Result<bool> {
        self.matcher.consume_token(token).map_err(|e| {
            Error::invalid(format!(
                "{}: token {token} rejected after {} tokens: {}",
                self.kind,
                self.n,
                first_line(&e)
            ))
        })?;
        self.n += 1;
        Ok(self.matcher.is_stopped())
    }
}

/// llguidance appends its parser state (many lines) to some errors: keep the message.
fn first_line(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().trim().to_string()
}
