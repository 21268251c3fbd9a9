//! Perplexity computed the way llama.cpp's `llama-perplexity` computes it, so the two
//! numbers can be compared directly:
//!
//! 0. read the file as llama.cpp's `-f` does ([`read_text_file`]: one trailing newline dropped);
//! 1. tokenize the whole text once, adding BOS if the model's metadata says so;
//! 2. cut it into non-overlapping chunks of `n_ctx` tokens (a partial last chunk is dropped);
//! 3. evaluate each chunk from an empty cache, with its first token replaced by BOS when the
//!    model adds BOS;
//! 4. score only the second half: positions `n_ctx/2 .. n_ctx-1` predict the next token;
//! 5. PPL = exp(mean negative log-likelihood), accumulated in f64.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::kv::KvParams;
use crate::model::{Logits, Model};
use crate::session::{Session, SessionParams};

/// The outcome of a perplexity run.
#[derive(Clone, Debug)]
pub struct PerplexityResult {
    pub n_tokens: usize,
    pub n_chunks: usize,
    pub n_ctx: usize,
    /// Running perplexity after each chunk (what llama.cpp prints as `[i]value`).
    pub chunk_ppl: Vec<f64>,
    pub ppl: f64,
    /// Number of scored tokens.
    pub n_scored: usize,
    /// The most likely next token at every scored position, in order (for top-1 agreement
    /// between two runs, e.g. a quantized KV cache against f16).
    pub top1: Vec<u32>,
}

/// Fraction of positions where two runs' most likely tokens agree.
pub fn top1_agreement(a: &[u32], b: &[u32]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n as f64
}

/// Read a text file the way llama.cpp's `-f` does: the bytes as UTF-8, with one trailing
/// newline removed (so token counts agree with `llama-perplexity` on the same file).
pub fn read_text_file(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::from_utf8(bytes)
        .map_err(|e| Error::invalid(format!("{} is not UTF-8: {e}", path.display())))?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// `-log p(target)` under `logits` (log-softmax with the max subtracted, sum in f64).
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    -((logits[target as usize] - max) as f64 - sum.ln())
}

/// Run perplexity over `text`; `progress(chunk, n_chunks, running_ppl)` after each chunk
/// returns false to stop early (then the result covers the chunks done).
pub fn perplexity(
    model: &Arc<Model>,
    text: &str,
    n_ctx: usize,
    progress: impl FnMut(usize, usize, f64) -> bool,
) -> Result<PerplexityResult> {
    perplexity_with(model, text, n_ctx, &KvParams::default(), progress)
}

/// [`perplexity`] with a given KV cache (mode, window, rotation). Each chunk is one batch, and
/// a quantized cache attends for every position exactly as if the chunk had been fed token
/// by token (see [`crate::kv::quant::BatchPlan`]).
pub fn perplexity_with(
    model: &Arc<Model>,
    text: &str,
    n_ctx: usize,
    kv: &KvParams,
    mut progress: impl FnMut(usize, usize, f64) -> bool,
) -> Result<PerplexityResult> {
    if n_ctx < 8 {
        return Err(Error::invalid(format!(
            "context {n_ctx} is too small for perplexity"
        )));
    }
    let tok = model.tokenizer();
    let tokens = tok.encode(text, true, false)?;
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(Error::invalid(format!(
            "the text has {} tokens, fewer than one context of {n_ctx}",
            tokens.len()
        )));
    }
    let mut session = Session::new(
        model.clone(),
        &SessionParams {
            n_ctx,
            n_batch: n_ctx,
            all_logits: true,
            kv: KvParams {
                budget: None,
                ..kv.clone()
            },
            memory_budget: 0,
        },
    )?;
    let n_vocab = model.config().n_vocab;
    let first = n_ctx / 2;
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let mut total = 0f64;
    let mut count = 0usize;
    let mut chunk_ppl = Vec::with_capacity(n_chunks);
    let mut top1 = Vec::with_capacity(n_chunks * (n_ctx - 1 - first));
    let mut chunk = vec![0u32; n_ctx];
    for i in 0..n_chunks {
        chunk.copy_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset();
        // One batch per chunk when the session takes it (f16); quantized caches ingest at
        // most their staging batch at a time, which attends exactly the same way.
        let nb = session.n_batch();
        let mut pos = 0;
        while pos < n_ctx {
            let end = (pos + nb).min(n_ctx);
            let want = if end > first {
                Logits::All
            } else {
                Logits::None
            };
            let logits = session.eval(&chunk[pos..end], want)?;
            for j in first.max(pos)..end.min(n_ctx - 1) {
                // The original token (not the BOS substitute) is the target.
                let target = tokens[i * n_ctx + j + 1];
                let row = &logits[(j - pos) * n_vocab..(j - pos + 1) * n_vocab];
                total += nll(row, target);
                top1.push(crate::sample::argmax(row));
                count += 1;
            }
            pos = end;
        }
        let ppl = (total / count as f64).exp();
        chunk_ppl.push(ppl);
        if !progress(i + 1, n_chunks, ppl) {
            break;
        }
    }
    Ok(PerplexityResult {
        n_tokens: tokens.len(),
        n_chunks: chunk_ppl.len(),
        n_ctx,
        ppl: (total / count as f64).exp(),
        chunk_ppl,
        n_scored: count,
        top1,
    })
}

#[cfg(test)]
mod tests {
    use super::nll;

    #[test]
    fn nll_of_uniform_is_log_n() {
        let l = [0.5f32; 8];
        assert!((nll(&l, 3) - 8f64.ln()).abs() < 1e-9);
    }
}
