//! Chat templates: the Jinja template in `tokenizer.chat_template`, rendered the way
//! Hugging Face's `apply_chat_template` does.
//!
//! HF renders with jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls) and the variables
//! `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, plus the functions
//! `raise_exception(msg)` and `strftime_now(fmt)`. We do the same with minijinja; Python
//! string/dict methods used by real templates (`.strip()`, `.startswith()`, `.items()`,
//! `.split()` ...) come from `minijinja_contrib::pycompat`. A template that does not parse,
//! or that fails or raises while rendering, is an [`Error::Template`].
//!
//! Templates come with model files, so rendering is bounded in work, memory and output and
//! can be cancelled ([`render`], [`RenderLimits`]).

pub mod render;

use crate::clock::{SystemTime, UNIX_EPOCH};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use render::RenderLimits;

use minijinja::{Environment, ErrorKind, Value};

use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::format::gguf::GgufFile;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `"system"`, `"user"`, `"assistant"` (or whatever roles the template knows).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The ChatML template (`<|im_start|>role\n...<|im_end|>\n`), used when a model has none.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat_template";

/// Renders over the memory budget after which a template is refused without rendering:
/// each leaves a sleeping thread holding up to its budget, so a hostile template in a
/// long-lived process costs at most this many budgets.
pub const MAX_MEMORY_TRIPS: usize = 3;

/// A parsed chat template, ready to render conversations (cheap to clone: the parsed
/// template is shared).
#[derive(Clone)]
pub struct ChatTemplate(Arc<Inner>);

struct Inner {
    env: Environment<'static>,
    limits: RenderLimits,
    /// Renders that went over their memory budget (each leaves its thread asleep).
    memory_trips: AtomicUsize,
    source: String,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.0.source.len())
            .field("bos", &self.0.bos)
            .field("eos", &self.0.eos)
            .finish()
    }
}

fn template_err(e: minijinja::Error) -> Error {
    // minijinja's message has the kind, the detail and "(in chat_template:LINE)".
    Error::Template(e.to_string())
}

/// Bytes of text in a conversation.
pub(crate) fn input_bytes(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum()
}

/// `raise_exception(msg)`: what HF templates call to reject a conversation.
fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `strftime_now(fmt)` (UTC) for the common directives templates use.
fn strftime_now(fmt: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_time(secs, &fmt)
}

fn format_time(secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (tod / 3600, (tod / 60) % 60, tod % 60);
    let month = MONTHS[(m - 1) as usize];
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(other) => {
                    out.push_str("%-");
                    out.push(other);
                }
                None => out.push_str("%-"),
            },
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    /// Parse a template. `bos` and `eos` are the texts bound to `bos_token` / `eos_token`.
    /// Renders are bounded by [`RenderLimits::default`].
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        Self::with_limits(source, bos, eos, &RenderLimits::default())
    }

    /// [`ChatTemplate::new`] with other bounds for [`ChatTemplate::render`] (the fuel
    /// holds for every render of this template).
    pub fn with_limits(source: &str, bos: &str, eos: &str, limits: &RenderLimits) -> Result<Self> {
        let mut env = Environment::new();
        env.set_fuel(Some(limits.fuel));
        env.set_recursion_limit(limits.recursion);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        // Parsed under the memory budget too: compiling folds constants (`'a' * 10**8`).
        let src = source.to_string();
        let env = render::on_guarded_thread(limits, None, move || {
            env.add_template_owned(TEMPLATE_NAME, src)
                .map_err(template_err)?;
            Ok(env)
        })?;
        Ok(ChatTemplate(Arc::new(Inner {
            env,
            limits: limits.clone(),
            memory_trips: AtomicUsize::new(0),
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
        })))
    }

    /// The generic ChatML template, for models whose file has no template.
    pub fn chatml() -> Self {
        Self::new(CHATML_TEMPLATE, "", "<|im_end|>").expect("the built-in ChatML template parses")
    }

    /// The template in `tokenizer.chat_template`, with `bos_token`/`eos_token` taken from
    /// the vocabulary; `Ok(None)` when the file has no template.
    pub fn from_gguf(f: &GgufFile) -> Result<Option<ChatTemplate>> {
        let Some(v) = f.get("tokenizer.chat_template") else {
            return Ok(None);
        };
        let source = v.as_str().ok_or_else(|| {
            Error::BadModel(format!(
                "metadata \"tokenizer.chat_template\" should be a string, is {v:?}"
            ))
        })?;
        let token = |key: &str| -> String {
            let id = f.get(key).and_then(|v| v.as_u64());
            let tokens = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array());
            match (id, tokens) {
                (Some(id), Some(toks)) => toks
                    .get(id as usize)
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            }
        };
        let bos = token("tokenizer.ggml.bos_token_id");
        let eos = token("tokenizer.ggml.eos_token_id");
        Self::new(source, &bos, &eos).map(Some)
    }

    /// Render a conversation; with `add_generation_prompt` the text ends where the
    /// assistant's reply begins. Bounded by the template's limits widened for the
    /// messages' size ([`RenderLimits::for_input`]); see [`ChatTemplate::render_limited`].
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let limits = self.0.limits.for_input(input_bytes(messages));
        self.render_limited(messages, add_generation_prompt, &limits, None)
    }

    /// [`ChatTemplate::render`] within `limits` (but with the fuel and recursion limit the
    /// template was built with), returning [`Error::Cancelled`] as soon as `cancel` is set.
    /// Running out of fuel, output or memory is an [`Error::Template`] that says which.
    pub fn render_limited(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        limits: &RenderLimits,
        cancel: Option<&CancelToken>,
    ) -> Result<String> {
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Error::Cancelled);
        }
        if self.0.memory_trips.load(Ordering::Relaxed) >= MAX_MEMORY_TRIPS {
            return Err(Error::OutOfMemory(format!(
                "the chat template went over its memory budget {MAX_MEMORY_TRIPS} times; it \
                 is not rendered again (each time leaves up to the budget behind)"
            )));
        }
        let inner = self.0.clone();
        let messages = messages.to_vec();
        let r = render::guarded(limits, cancel, move |out| {
            let msgs: Vec<Value> = messages
                .iter()
                .map(|m| {
                    Value::from_iter([
                        ("role", Value::from(m.role.as_str())),
                        ("content", Value::from(m.content.as_str())),
                    ])
                })
                .collect();
            let ctx = Value::from_iter([
                ("messages", Value::from(msgs)),
                ("add_generation_prompt", Value::from(add_generation_prompt)),
                ("bos_token", Value::from(inner.bos.as_str())),
                ("eos_token", Value::from(inner.eos.as_str())),
            ]);
            let tmpl = inner
                .env
                .get_template(TEMPLATE_NAME)
                .map_err(template_err)?;
            tmpl.render_captured_to(ctx, out).map_err(template_err)?;
            Ok(())
        });
        if matches!(r, Err(Error::OutOfMemory(_))) {
            self.0.memory_trips.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.0.source
    }
    /// The text bound to `bos_token`.
    pub fn bos_token(&self) -> &str {
        &self.0.bos
    }
    /// The text bound to `eos_token`.
    pub fn eos_token(&self) -> &str {
        &self.0.eos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        // 2024-07-26 12:34:56 UTC is a Friday.
        let t = 1_721_997_296;
        assert_eq!(
            format_time(t, "%d %b %Y %H:%M:%S %A"),
            "26 Jul 2024 12:34:56 Friday"
        );
        assert_eq!(format_time(t, "%-d %B %%"), "26 July %");
    }

    #[test]
    fn chatml_renders() {
        let t = ChatTemplate::chatml();
        let s = t.render(&[ChatMessage::user("Hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }
}
