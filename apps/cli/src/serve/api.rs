//! The OpenAI request and response bodies the server speaks (the subset local clients use),
//! parsed from and written as `serde_json` values.
//!
//! Requests: `messages` (chat; `content` a string or a list of `{"type":"text"}` parts) or
//! `prompt` (completions; a string), `max_tokens` / `max_completion_tokens`,
//! `temperature`, `top_p`, `seed`, `stop` (a string or up to 4 strings), `stream`,
//! `stream_options.include_usage`, `response_format` (`text`, `json_object`,
//! `json_schema` with `json_schema.schema`), `n` (only 1). Unknown fields are ignored, as
//! OpenAI does; a known field of the wrong type is a 400.

use serde_json::{json, Value};
use suanpan::chat::ChatMessage;
use suanpan::{Constraint, GenerateParams, SamplingParams};

use super::pool::Outcome;

/// An error answer: HTTP status plus OpenAI's error body.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            param: None,
        }
    }
    pub fn param(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param),
            ..Self::bad(message)
        }
    }
    /// The body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// What the request asks for, independent of the endpoint.
pub struct Request {
    /// Chat messages, or `None` for a completion of `prompt`.
    pub messages: Option<Vec<ChatMessage>>,
    pub prompt: String,
    pub stream: bool,
    pub include_usage: bool,
    /// `None`: as many as the context and the server's limit allow.
    pub max_tokens: Option<usize>,
    pub params: GenerateParams,
}

fn opt_f32(v: &Value, key: &'static str, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => match x.as_f64() {
            Some(f) if (lo as f64..=hi as f64).contains(&f) => Ok(Some(f as f32)),
            _ => Err(ApiError::param(
                key,
                format!("'{key}' must be a number in [{lo}, {hi}]"),
            )),
        },
    }
}

fn opt_uint(v: &Value, key: &'static str) -> Result<Option<u64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::param(key, format!("'{key}' must be a non-negative integer"))),
    }
}

fn opt_bool(v: &Value, key: &'static str) -> Result<bool, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        _ => Err(ApiError::param(key, format!("'{key}' must be a boolean"))),
    }
}

/// The text of a message's `content`: a string, or the `text` parts of a list.
fn content(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut s = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => s.push_str(t),
                    _ => {
                        return Err(ApiError::param(
                            "messages",
                            "only text content parts are supported",
                        ))
                    }
                }
            }
            Ok(s)
        }
        _ => Err(ApiError::param(
            "messages",
            "a message's content must be a string or a list of text parts",
        )),
    }
}

fn constraint(v: &Value) -> Result<Option<Constraint>, ApiError> {
    let Some(rf) = v.get("response_format").filter(|x| !x.is_null()) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::param(
            "response_format",
            "'response_format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\"}, \
             json_schema with {\"json_schema\": {\"schema\": {...}}}",
        )
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonObject)),
        Some("json_schema") => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .filter(|s| s.is_object())
                .ok_or_else(bad)?;
            Ok(Some(Constraint::JsonSchema(schema.to_string())))
        }
        _ => Err(bad()),
    }
}

/// Parse a chat (`chat = true`) or completions request body.
pub fn parse(body: &[u8], chat: bool) -> Result<Request, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "We could not parse the JSON body of your request ({e}). The body must be a \
             JSON object."
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad("the request body must be a JSON object"));
    }
    let (messages, prompt) = if chat {
        let list = v
            .get("messages")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::param("messages", "'messages' must be a non-empty list"))?;
        let mut out = Vec::with_capacity(list.len());
        for m in list {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::param("messages", "each message needs a 'role'"))?;
            let role = if role == "developer" { "system" } else { role };
            out.push(ChatMessage::new(
                role,
                content(m.get("content").unwrap_or(&Value::Null))?,
            ));
        }
        (Some(out), String::new())
    } else {
        let p = match v.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            _ => {
                return Err(ApiError::param(
                    "prompt",
                    "'prompt' must be a string (one prompt per request)",
                ))
            }
        };
        if p.is_empty() {
            return Err(ApiError::param("prompt", "'prompt' is empty"));
        }
        (None, p)
    };
    if opt_uint(&v, "n")?.is_some_and(|n| n != 1) {
        return Err(ApiError::param("n", "only n = 1 is supported"));
    }
    let max_tokens = match opt_uint(&v, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_uint(&v, "max_tokens")?,
    };
    if max_tokens == Some(0) {
        return Err(ApiError::param(
            "max_tokens",
            "'max_tokens' must be at least 1",
        ));
    }
    let stop = match v.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => {
            return Err(ApiError::param(
                "stop",
                "'stop' must be a string or a list of up to 4 strings",
            ))
        }
    };
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::param("stop", "a stop string is empty"));
    }
    let temperature = opt_f32(&v, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = opt_f32(&v, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    let seed = match v.get("seed") {
        // No seed: a different draw each request, as OpenAI does.
        None | Some(Value::Null) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5EED),
        Some(x) => x
            .as_i64()
            .map(|s| s as u64)
            .ok_or_else(|| ApiError::param("seed", "'seed' must be an integer"))?,
    };
    let stream = opt_bool(&v, "stream")?;
    let include_usage = v
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Request {
        messages,
        prompt,
        stream,
        include_usage,
        max_tokens: max_tokens.map(|n| n as usize),
        params: GenerateParams {
            max_tokens: 0, // set by the server from the context left
            sampling: SamplingParams {
                temperature,
                top_p,
                // OpenAI samples from the whole distribution: no top-k / min-p cut.
                top_k: 0,
                min_p: 0.0,
                seed,
                ..Default::default()
            },
            add_special: true,
            parse_special: false,
            stop,
            constraint: constraint(&v)?,
        },
    })
}

/// `usage` of a response.
pub fn usage(o: &Outcome) -> Value {
    json!({
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "total_tokens": o.prompt_tokens + o.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": o.cached_tokens},
    })
}

/// Ids and names one response carries in every chunk.
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub chat: bool,
}

impl Meta {
    /// A whole (non-streamed) response.
    pub fn full(&self, text: &str, o: &Outcome) -> Value {
        if self.chat {
            json!({
                "id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": null,
                    "finish_reason": o.finish,
                }],
                "usage": usage(o),
            })
        } else {
            json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": o.finish}],
                "usage": usage(o),
            })
        }
    }

    /// One streamed chunk: a piece of text (`first` adds the assistant role), or the final
    /// chunk with its finish reason.
    pub fn chunk(&self, text: &str, first: bool, finish: Option<&str>) -> Value {
        if self.chat {
            let delta = match (first, finish) {
                (_, Some(_)) => json!({}),
                (true, None) => json!({"role": "assistant", "content": text}),
                (false, None) => json!({"content": text}),
            };
            json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        } else {
            json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
            })
        }
    }

    /// The usage chunk (`stream_options.include_usage`): no choices.
    pub fn usage_chunk(&self, o: &Outcome) -> Value {
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created, "model": self.model, "choices": [], "usage": usage(o),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_chat_request() {
        let r = parse(
            br#"{"model":"x","messages":[{"role":"user","content":"hi"},
                {"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "max_tokens":5,"temperature":0,"top_p":0.5,"seed":7,"stop":"END","stream":true,
                "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"}}}}"#,
            true,
        )
        .unwrap();
        let m = r.messages.unwrap();
        assert_eq!((m[0].role.as_str(), m[0].content.as_str()), ("user", "hi"));
        assert_eq!(
            (m[1].role.as_str(), m[1].content.as_str()),
            ("system", "ab")
        );
        assert_eq!(r.max_tokens, Some(5));
        assert!(r.stream);
        assert_eq!(r.params.sampling.temperature, 0.0);
        assert_eq!(r.params.sampling.top_p, 0.5);
        assert_eq!(r.params.sampling.seed, 7);
        assert_eq!(r.params.stop, vec!["END"]);
        assert_eq!(
            r.params.constraint,
            Some(Constraint::JsonSchema(r#"{"type":"object"}"#.into()))
        );
    }

    #[test]
    fn bad_requests_are_400_with_the_param_named() {
        let cases: [(&[u8], bool, Option<&str>); 9] = [
            (b"{not json", true, None),
            (b"[1]", true, None),
            (br#"{"messages":[]}"#, true, Some("messages")),
            (br#"{"messages":[{"content":"x"}]}"#, true, Some("messages")),
            (br#"{"prompt":5}"#, false, Some("prompt")),
            (
                br#"{"prompt":"x","max_tokens":-1}"#,
                false,
                Some("max_tokens"),
            ),
            (
                br#"{"prompt":"x","temperature":9}"#,
                false,
                Some("temperature"),
            ),
            (br#"{"prompt":"x","stop":[1]}"#, false, Some("stop")),
            (
                br#"{"prompt":"x","response_format":{"type":"xml"}}"#,
                false,
                Some("response_format"),
            ),
        ];
        for (body, chat, param) in cases {
            let e = parse(body, chat).err().expect("an error");
            assert_eq!(e.status, 400);
            assert_eq!(e.param, param, "{}", String::from_utf8_lossy(body));
            assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        }
    }
}
