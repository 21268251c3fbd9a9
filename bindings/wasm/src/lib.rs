//! suanpan in the browser: the runtime compiled to `wasm32-unknown-unknown` with a small
//! wasm-bindgen surface. `js/suanpan.js` wraps it in the JS API (load with progress,
//! sessions, async-iterator streaming, `AbortSignal`), see the README there.
//!
//! The surface is step-wise so that JS can yield to the event loop between tokens:
//!
//! ```text
//! ModelLoader.new(size) ─ push(chunk)… ─ finishOn({backend}) ──► Promise<Model>
//! Model.createSession(nCtx) ──► Session
//! Session.startPrompt(text, …) | startChat(json, …)   (Promise: prompt evaluated, first token drawn)
//! Session.step() → Promise<piece | undefined (done)>  (one token per call)
//! ```
//!
//! The backend is WebGPU (the runtime's GPU backend over the browser's adapter) or the
//! wasm CPU; the calls that run the model return promises because a WebGPU result can only
//! be awaited (see [`session`]).
//!
//! Errors are thrown as JS `Error`s carrying the runtime's message. On other targets this
//! crate is empty (the workspace builds it everywhere).

#[cfg(target_arch = "wasm32")]
mod backend;
#[cfg(target_arch = "wasm32")]
mod session;
#[cfg(target_arch = "wasm32")]
mod web;

#[cfg(target_arch = "wasm32")]
pub use session::Session;
#[cfg(target_arch = "wasm32")]
pub use web::*;
