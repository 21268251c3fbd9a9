//! `suanpan serve`: an OpenAI-compatible HTTP server on one model.
//!
//! Endpoints: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`
//! (whole responses or server-sent events ending in `data: [DONE]`). Requests run on a pool
//! of sessions ([`pool`]); bodies are parsed in [`api`]. Loopback by default; with
//! `--api-key`, every request needs `Authorization: Bearer KEY` (401 otherwise). Each
//! finished, failed or cancelled generation is logged on stderr as one `[serve]` line.

pub mod api;
pub mod pool;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use serde_json::{json, Value};
use suanpan::chat::RenderLimits;
use suanpan::SessionParams;

use api::{ApiError, Meta};
use pool::{Event, Job, Pool};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: crate::ModelArgs,
    /// Address to listen on (loopback by default; another address exposes the model).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every request.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Requests generated at once (one session each, sharing the model).
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// Requests that may wait for a session; more are refused with 503.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Most tokens one request may generate (`max_tokens` above it is a 400).
    #[arg(long = "max-tokens-limit", default_value_t = 2048)]
    max_tokens_limit: usize,
    /// Largest request body in bytes (413 above it).
    #[arg(long = "max-body", default_value_t = 1 << 20)]
    max_body: usize,
}

struct App {
    pool: Arc<Pool>,
    name: String,
    api_key: Option<String>,
    max_tokens_limit: usize,
    /// The template of models whose file has none.
    next_id: AtomicU64,
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, json_body(&e.body())).into_response()
}

fn json_body(v: &Value) -> ([(header::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn run(a: ServeArgs) -> Result<()> {
    let model = crate::load(&a.model)?;
    let params = SessionParams {
        n_ctx: a.model.ctx,
        kv: a.model.kv.params()?,
        ..Default::default()
    };
    let pool = Arc::new(Pool::new(model.clone(), &params, a.parallel, a.queue)?);
    // Build the constrained-decoding tables now, not in the first request's handler.
    suanpan::Constraint::JsonObject
        .check(&model)
        .context("preparing constrained decoding")?;
    let name = model
        .path()
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let app = Arc::new(App {
        pool: pool.clone(),
        name,
        api_key: a.api_key.clone(),
        max_tokens_limit: a.max_tokens_limit.max(1),
        next_id: AtomicU64::new(1),
    });
    let router = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(DefaultBodyLimit::max(a.max_body))
        .with_state(app);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("binding {}:{}", a.host, a.port))?;
        let addr: SocketAddr = listener.local_addr()?;
        eprintln!(
            "[serve] listening on http://{addr} ({} sessions of {} tokens, queue {})",
            a.parallel.max(1),
            pool.n_ctx(),
            a.queue
        );
        axum::serve(listener, router).await.context("serving HTTP")
    })
}

/// `--api-key`: a missing or wrong bearer token is a 401.
async fn auth(State(app): State<Arc<App>>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            let e = ApiError {
                status: 401,
                message: if given.is_none() {
                    "Missing API key: send 'Authorization: Bearer KEY'.".into()
                } else {
                    "Incorrect API key provided.".into()
                },
                kind: "invalid_request_error",
                code: Some("invalid_api_key"),
                param: None,
            };
            return error_response(&e);
        }
    }
    next.run(req).await
}

async fn not_found() -> Response {
    error_response(&ApiError {
        status: 404,
        message: "Unknown endpoint: this server has /v1/models, /v1/chat/completions and \
                  /v1/completions."
            .into(),
        kind: "invalid_request_error",
        code: Some("unknown_url"),
        param: None,
    })
}

async fn models(State(app): State<Arc<App>>) -> Response {
    json_body(&json!({
        "object": "list",
        "data": [{"id": app.name, "object": "model", "created": 0, "owned_by": "suanpan"}],
    }))
    .into_response()
}

async fn chat(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    respond(app, headers, body, true).await
}

async fn completions(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    respond(app, headers, body, false).await
}

/// Parse, check against the context, admit, generate, answer.
async fn respond(app: Arc<App>, _headers: HeaderMap, body: Bytes, chat: bool) -> Response {
    match prepare(&app, &body, chat) {
        Ok((req, job)) => {
            let Some(admission) = app.pool.admit() else {
                return error_response(&ApiError {
                    status: 503,
                    message: format!(
                        "The server is busy ({} requests running or queued); retry later.",
                        app.pool.admitted()
                    ),
                    kind: "server_error",
                    code: Some("server_busy"),
                    param: None,
                });
            };
            let meta = Meta {
                id: format!(
                    "{}-{}",
                    if chat { "chatcmpl" } else { "cmpl" },
                    app.next_id.fetch_add(1, Ordering::Relaxed)
                ),
                created: now(),
                model: app.name.clone(),
                chat,
            };
            let (rx, cancel) = app.pool.start(
                admission,
                Job {
                    id: meta.id.clone(),
                    ..job
                },
            );
            if req.stream {
                stream(meta, rx, cancel, req.include_usage)
            } else {
                whole(meta, rx, cancel).await
            }
        }
        Err(e) => error_response(&e),
    }
}

/// The request and its generation job: prompt tokens within the context, `max_tokens`
/// within the server's limit and the context left.
fn prepare(app: &App, body: &[u8], chat: bool) -> Result<(api::Request, Job), ApiError> {
    let mut req = api::parse(body, chat)?;
    let model = app.pool.model();
    let tok = model.tokenizer();
    let internal = |e: suanpan::Error| match e {
        suanpan::Error::ContextFull(m) => ApiError {
            code: Some("context_length_exceeded"),
            param: Some(if chat { "messages" } else { "prompt" }),
            ..ApiError::bad(format!(
                "This model's maximum context length is {} tokens: {m}. Shorten the prompt \
                 or the conversation.",
                app.pool.n_ctx()
            ))
        },
        other => ApiError::bad(other.to_string()),
    };
    let prompt = match &req.messages {
        Some(m) => {
            // Bounded like Session::chat (issue 18): fuel, output and memory limits on the
            // render, and no tokenizing of text that cannot fit the context.
            let template = model.effective_chat_template().ok_or_else(|| {
                ApiError::bad("the model has no chat template (a base model): use /v1/completions")
            })?;
            let bytes: usize = m.iter().map(|x| x.role.len() + x.content.len()).sum();
            let limits = RenderLimits::default().for_input(bytes);
            let text = template
                .render_limited(m, true, &limits, None)
                .map_err(internal)?;
            tok.encode_bounded(&text, true, true, app.pool.n_ctx())
                .map_err(internal)?
        }
        None => tok
            .encode_bounded(&req.prompt, true, false, app.pool.n_ctx())
            .map_err(internal)?,
    };
    let n_ctx = app.pool.n_ctx();
    if prompt.len() >= n_ctx {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            param: Some(if chat { "messages" } else { "prompt" }),
            ..ApiError::bad(format!(
                "This model's maximum context length is {n_ctx} tokens, but the prompt has \
                 {} tokens (at least one token must be left to generate). Shorten the \
                 prompt or the conversation.",
                prompt.len()
            ))
        });
    }
    if let Some(n) = req.max_tokens {
        if n > app.max_tokens_limit {
            return Err(ApiError::param(
                "max_tokens",
                format!(
                    "'max_tokens' is {n}; this server allows at most {}",
                    app.max_tokens_limit
                ),
            ));
        }
    }
    let left = n_ctx - prompt.len();
    req.params.max_tokens = req
        .max_tokens
        .unwrap_or(app.max_tokens_limit)
        .min(app.max_tokens_limit)
        .min(left);
    req.params.parse_special = chat;
    if let Some(c) = &req.params.constraint {
        // Refuse a schema that does not compile before taking a place in the queue.
        c.check(model)
            .map_err(|e| ApiError::param("response_format", e.to_string()))?;
    }
    let job = Job {
        id: String::new(),
        prompt,
        params: req.params.clone(),
    };
    Ok((req, job))
}

fn failure(e: &suanpan::Error) -> ApiError {
    match e {
        suanpan::Error::InvalidArg(m) | suanpan::Error::ContextFull(m) => ApiError::bad(m.clone()),
        other => ApiError {
            status: 500,
            message: other.to_string(),
            kind: "server_error",
            code: None,
            param: None,
        },
    }
}

/// Collect the whole reply, then answer.
async fn whole(
    meta: Meta,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    cancel: pool::Cancel,
) -> Response {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Piece(p) => text.push_str(&p),
            Event::Done(o) => {
                drop(cancel);
                return json_body(&meta.full(&text, &o)).into_response();
            }
            Event::Failed(e) => {
                return error_response(&failure(&e));
            }
        }
    }
    error_response(&failure(&suanpan::Error::Internal(
        "the generation ended without a result".into(),
    )))
}

/// Server-sent events: one chunk per piece, a final chunk with the finish reason, the
/// usage chunk when asked for, then `data: [DONE]`. An error after the stream started is
/// sent as an `error` object in a last event. The stream owns the [`pool::Cancel`]: a
/// client that disconnects drops it and stops its generation.
fn stream(
    meta: Meta,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    cancel: pool::Cancel,
    include_usage: bool,
) -> Response {
    struct St {
        meta: Meta,
        rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
        _cancel: pool::Cancel,
        first: bool,
        tail: Vec<String>,
        done: bool,
        include_usage: bool,
    }
    fn sse(v: &str) -> Result<Bytes, Infallible> {
        Ok(Bytes::from(format!("data: {v}\n\n")))
    }
    let st = St {
        meta,
        rx,
        _cancel: cancel,
        first: true,
        tail: Vec::new(),
        done: false,
        include_usage,
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(t) = st.tail.pop() {
            return Some((sse(&t), st));
        }
        if st.done {
            return None;
        }
        match st.rx.recv().await {
            Some(Event::Piece(p)) => {
                let v = st.meta.chunk(&p, st.first, None);
                st.first = false;
                Some((sse(&v.to_string()), st))
            }
            Some(Event::Done(o)) => {
                st.done = true;
                // `tail` is popped from the end.
                st.tail.push("[DONE]".into());
                if st.include_usage {
                    st.tail.push(st.meta.usage_chunk(&o).to_string());
                }
                let v = st.meta.chunk("", st.first, Some(o.finish));
                Some((sse(&v.to_string()), st))
            }
            Some(Event::Failed(e)) => {
                st.done = true;
                st.tail.push("[DONE]".into());
                Some((sse(&failure(&e).body().to_string()), st))
            }
            None => None,
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
