//! `--json-schema FILE`, `--regex RE`, `--grammar FILE` of `run` and `chat`: output that
//! matches a JSON schema, a regular expression or a Lark-style grammar.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use suanpan::Constraint;

#[derive(Args, Clone, Default)]
pub struct ConstrainArgs {
    /// Output is JSON matching the JSON schema in FILE.
    #[arg(long = "json-schema", value_name = "FILE")]
    json_schema: Option<PathBuf>,
    /// Output matches this regular expression (Rust regex syntax), as a whole.
    #[arg(long = "regex", value_name = "RE")]
    regex: Option<String>,
    /// Output matches the Lark-style grammar in FILE (llguidance syntax).
    #[arg(long = "grammar", value_name = "FILE")]
    grammar: Option<PathBuf>,
}

impl ConstrainArgs {
    /// The constraint asked for (at most one of the three flags).
    pub fn constraint(&self) -> Result<Option<Constraint>> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        Ok(match (&self.json_schema, &self.regex, &self.grammar) {
            (None, None, None) => None,
            (Some(f), None, None) => Some(Constraint::JsonSchema(read(f)?)),
            (None, Some(r), None) => Some(Constraint::Regex(r.clone())),
            (None, None, Some(f)) => Some(Constraint::Grammar(read(f)?)),
            _ => bail!("--json-schema, --regex and --grammar exclude each other"),
        })
    }
}
