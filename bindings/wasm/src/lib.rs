//! suanpan in the browser: the runtime compiled to `wasm32-unknown-unknown` with a small
//! wasm-bindgen surface. `js/suanpan.js` wraps it in the JS API (load with progress,
//! sessions, async-iterator streaming, `AbortSignal`), see the README there.
//!
//! The surface is step-wise so that JS can yield to the event loop between tokens:
//!
//! ```text
//! ModelLoader.new(size) ─ push(chunk)… ─ finish() ──► Model
//! Model.createSession(nCtx) ──► Session
//! Session.startPrompt(text, …) | startChat(json, …)   (prompt evaluated, first token drawn)
//! Session.step() → piece | undefined (done)           (one token per call)
//! ```
//!
//! Errors are thrown as JS `Error`s carrying the runtime's message. On other targets this
//! crate is empty (the workspace builds it everywhere).

#[cfg(target_arch = "wasm32")]
mod web;

#[cfg(target_arch = "wasm32")]
pub use web::*;
