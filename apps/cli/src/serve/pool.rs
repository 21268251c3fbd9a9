//! Sessions shared by the server's requests: a fixed pool of `parallel` sessions on one
//! model, a bounded queue in front of it, and generation on blocking threads.
//!
//! Admission: a request is admitted while fewer than `parallel + queue` requests are
//! admitted (running or waiting); otherwise it is refused at once (503). An admitted request
//! waits for a free session, takes the idle session whose context shares the longest
//! prefix with its prompt (a conversation's next turn lands on the session that holds its
//! earlier turns), cuts that context to the shared prefix and evaluates only the rest.
//!
//! Cancellation: the [`Job`]'s [`Cancel`] handle stops the generation when dropped (the
//! HTTP response or stream went away with its client); the piece channel closing stops it
//! too.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use suanpan::{CancelToken, GenerateParams, Model, Session, SessionParams, StopReason};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// What a generation sends to its request.
#[derive(Debug)]
pub enum Event {
    /// Text, in whole UTF-8 code points.
    Piece(String),
    /// The generation ended.
    Done(Outcome),
    /// It failed (the message is for the client).
    Failed(suanpan::Error),
}

/// Counts and finish reason of a finished generation.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys/values were already in the session (prefix reuse).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// OpenAI's `finish_reason`: `stop` or `length`.
    pub finish: &'static str,
}

/// One generation request.
pub struct Job {
    /// The response id, for the log line.
    pub id: String,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
}

/// The session pool.
pub struct Pool {
    model: Arc<Model>,
    idle: Mutex<Vec<Session>>,
    slots: Arc<Semaphore>,
    admitted: AtomicUsize,
    limit: usize,
    n_ctx: usize,
}

/// A place in the pool (running or queued); gives it back when dropped.
pub struct Admission {
    pool: Arc<Pool>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.pool.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops the generation it belongs to when dropped (or on [`Cancel::cancel`]).
pub struct Cancel {
    flag: Arc<AtomicBool>,
    token: Arc<Mutex<Option<CancelToken>>>,
}

impl Cancel {
    fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Some(t) = &*self.token.lock().unwrap_or_else(|e| e.into_inner()) {
            t.cancel();
        }
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Pool {
    /// `parallel` sessions of `params` shape (created now, so a model that cannot hold
    /// them fails at start-up), `queue` more requests may wait.
    pub fn new(
        model: Arc<Model>,
        params: &SessionParams,
        parallel: usize,
        queue: usize,
    ) -> suanpan::Result<Pool> {
        let parallel = parallel.max(1);
        let idle = (0..parallel)
            .map(|_| model.session(params))
            .collect::<suanpan::Result<Vec<_>>>()?;
        let n_ctx = idle[0].n_ctx();
        Ok(Pool {
            model,
            idle: Mutex::new(idle),
            slots: Arc::new(Semaphore::new(parallel)),
            admitted: AtomicUsize::new(0),
            limit: parallel + queue,
            n_ctx,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Context length of every session.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Requests admitted now (running or queued).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// A place for one more request, or `None` when running + queued requests are at the
    /// limit.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        let mut n = self.admitted.load(Ordering::SeqCst);
        loop {
            if n >= self.limit {
                return None;
            }
            match self
                .admitted
                .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Some(Admission { pool: self.clone() }),
                Err(now) => n = now,
            }
        }
    }

    /// Start `job` once a session is free; events arrive on the receiver. Dropping the
    /// returned [`Cancel`] (or the receiver) stops the generation.
    pub fn start(
        self: &Arc<Self>,
        admission: Admission,
        job: Job,
    ) -> (mpsc::UnboundedReceiver<Event>, Cancel) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Cancel {
            flag: Arc::new(AtomicBool::new(false)),
            token: Arc::new(Mutex::new(None)),
        };
        let (flag, slot) = (cancel.flag.clone(), cancel.token.clone());
        let pool = self.clone();
        tokio::spawn(async move {
            let Ok(permit) = pool.slots.clone().acquire_owned().await else {
                return;
            };
            if flag.load(Ordering::SeqCst) || tx.is_closed() {
                eprintln!("[serve] {}: cancelled before it started", job.id);
                return; // the client left while queued
            }
            let _ = tokio::task::spawn_blocking(move || {
                pool.run(permit, job, tx, flag, slot);
                drop(admission);
            })
            .await;
        });
        (rx, cancel)
    }

    /// The idle session sharing the longest prefix with `prompt`.
    fn take(&self, prompt: &[u32]) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let shared = |s: &Session| {
            s.context_tokens()
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let best = (0..idle.len()).max_by_key(|&i| shared(&idle[i]))?;
        Some(idle.swap_remove(best))
    }

    fn run(
        &self,
        _permit: OwnedSemaphorePermit,
        job: Job,
        tx: mpsc::UnboundedSender<Event>,
        flag: Arc<AtomicBool>,
        slot: Arc<Mutex<Option<CancelToken>>>,
    ) {
        let Some(mut s) = self.take(&job.prompt) else {
            let _ = tx.send(Event::Failed(suanpan::Error::Internal(
                "no idle session for a granted slot".into(),
            )));
            return;
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.cancel_token());
        let mut pieces = 0;
        let r = generate(&mut s, &job, &tx, &flag, &mut pieces);
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let id = &job.id;
        let _ = tx.send(match r {
            Ok(o) => {
                eprintln!(
                    "[serve] {id}: {} prompt tokens ({} cached), {} generated, {}",
                    o.prompt_tokens, o.cached_tokens, o.completion_tokens, o.finish
                );
                Event::Done(o)
            }
            Err(e) => {
                match e {
                    suanpan::Error::Cancelled => {
                        eprintln!("[serve] {id}: cancelled after {pieces} pieces")
                    }
                    ref e => eprintln!("[serve] {id}: error after {pieces} pieces: {e}"),
                }
                // A failed or cancelled generation may leave a partial context: start the
                // next request on this session from scratch.
                s.reset();
                Event::Failed(e)
            }
        });
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
}

/// Reuse the shared prefix of the session's context, evaluate the rest, stream pieces.
fn generate(
    s: &mut Session,
    job: &Job,
    tx: &mpsc::UnboundedSender<Event>,
    flag: &AtomicBool,
    pieces: &mut usize,
) -> suanpan::Result<Outcome> {
    let ids = &job.prompt;
    let ctx = s.context_tokens();
    let mut keep = ctx.iter().zip(ids).take_while(|(a, b)| a == b).count();
    if keep == ids.len() {
        keep -= 1; // at least one token must go through the model to give logits
    }
    if s.truncate(keep).is_err() {
        s.reset(); // a quantized or slid cache cannot be cut
    }
    let have = s.context_tokens().len();
    let stats = s.generate_tokens(&ids[have..], &job.params, |piece| {
        if flag.load(Ordering::SeqCst) || tx.send(Event::Piece(piece.to_string())).is_err() {
            flag.store(true, Ordering::SeqCst);
            ControlFlow::Break(())
        } else {
            *pieces += 1;
            ControlFlow::Continue(())
        }
    })?;
    if flag.load(Ordering::SeqCst) {
        return Err(suanpan::Error::Cancelled);
    }
    Ok(Outcome {
        prompt_tokens: ids.len(),
        cached_tokens: have,
        completion_tokens: stats.generated_tokens,
        finish: match stats.stop {
            StopReason::MaxTokens => "length",
            _ => "stop",
        },
    })
}
