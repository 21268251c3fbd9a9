//! Causal grouped-query attention over an f16 KV cache, for a batch of new tokens.
//!
//! ```text
//! q    [n_tokens][n_head][head_dim]      f32 (rounded to f16 first, as llama.cpp does)
//! k, v [n_ctx][n_kv_head][head_dim]      f16, positions 0..pos0+n_tokens filled
//! out  [n_tokens][n_head][head_dim]      f32
//! ```
//! Token t (at position pos0 + t) attends to positions 0..=pos0+t, or with a sliding window
//! of w keys to pos0+t+1−w..=pos0+t. Query head h reads KV head h / (n_head / n_kv_head).
//! Work is split over (token, head) pairs.

use half::f16;

use super::dot::{axpy_f16, dot_f16};
use super::ops::softmax;
use super::pool::Pool;

/// Head geometry of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

struct OutPtr(*mut f32);
// SAFETY: every (token, head) pair writes its own head_dim-long slice of the output.
unsafe impl Sync for OutPtr {}

/// `scores` is scratch of at least `n_threads × (pos0 + n_tokens)` floats; `window` 0 means
/// no sliding window.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &Pool,
    shape: AttnShape,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    pos0: usize,
    n_tokens: usize,
    scale: f32,
    window: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let AttnShape {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = shape;
    let kv_dim = n_kv_head * hd;
    let n_keys_max = pos0 + n_tokens;
    assert!(q.len() >= n_tokens * n_head * hd && out.len() >= n_tokens * n_head * hd);
    assert!(k.len() >= n_keys_max * kv_dim && v.len() >= n_keys_max * kv_dim);
    assert!(scores.len() >= pool.n_threads() * n_keys_max);
    assert!(n_head % n_kv_head == 0 && hd <= 512);
    let group = n_head / n_kv_head;
    let out_ptr = OutPtr(out.as_mut_ptr());
    let scores_ptr = OutPtr(scores.as_mut_ptr());
    pool.run_ranges(n_tokens * n_head, 1, |ith, range| {
        let (op, sp) = (&out_ptr, &scores_ptr);
        // SAFETY: thread ith owns scores[ith*n_keys_max ..][..n_keys_max] (checked above).
        let sc = unsafe { std::slice::from_raw_parts_mut(sp.0.add(ith * n_keys_max), n_keys_max) };
        let mut qh = [0f32; 512];
        for pair in range {
            let (t, h) = (pair / n_head, pair % n_head);
            let kvh = h / group;
            let end = pos0 + t + 1;
            let first = if window > 0 {
                end.saturating_sub(window)
            } else {
                0
            };
            let n_keys = end - first;
            let qsrc = &q[(t * n_head + h) * hd..][..hd];
            for (d, &s) in qh.iter_mut().zip(qsrc) {
                *d = f16::from_f32(s).to_f32();
            }
            let qh = &qh[..hd];
            for (j, s) in (first..end).zip(sc[..n_keys].iter_mut()) {
                *s = dot_f16(&k[j * kv_dim + kvh * hd..][..hd], qh) * scale;
            }
            softmax(&mut sc[..n_keys]);
            // SAFETY: pair < n_tokens*n_head, so this head_dim slice is inside `out` and
            // belongs to this pair alone.
            let o = unsafe { std::slice::from_raw_parts_mut(op.0.add(pair * hd), hd) };
            o.fill(0.0);
            for (j, &p) in (first..end).zip(sc[..n_keys].iter()) {
                // llama.cpp multiplies V by the probabilities converted to f16.
                let p = f16::from_f32(p).to_f32();
                axpy_f16(o, p, &v[j * kv_dim + kvh * hd..][..hd]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain f64 attention for one query against explicit keys/values, with the
    /// probabilities rounded to f16 before weighting V, as the kernel (and llama.cpp) do.
    fn naive(q: &[f32], ks: &[Vec<f32>], vs: &[Vec<f32>], scale: f32) -> Vec<f32> {
        let s: Vec<f64> = ks
            .iter()
            .map(|k| {
                k.iter()
                    .zip(q)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        let mut out = vec![0f64; q.len()];
        for (p, v) in e.iter().zip(vs) {
            let p = f16::from_f64(p / z).to_f64();
            for (o, x) in out.iter_mut().zip(v) {
                *o += p * *x as f64;
            }
        }
        out.into_iter().map(|x| x as f32).collect()
    }

    #[test]
    fn matches_naive_gqa_causal() {
        let shape = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 8,
        };
        let (pos0, nt) = (3usize, 2usize);
        let kv_dim = 16;
        let val = |i: usize| (((i * 7919) % 101) as f32 - 50.0) / 40.0;
        let k: Vec<f16> = (0..(pos0 + nt) * kv_dim)
            .map(|i| f16::from_f32(val(i)))
            .collect();
        let v: Vec<f16> = (0..(pos0 + nt) * kv_dim)
            .map(|i| f16::from_f32(val(i + 333)))
            .collect();
        let q: Vec<f32> = (0..nt * 4 * 8)
            .map(|i| f16::from_f32(val(i + 77)).to_f32())
            .collect();
        let pool = Pool::new(2).unwrap();
        let mut scores = vec![0f32; 2 * (pos0 + nt)];
        let mut out = vec![0f32; nt * 32];
        // Window 0 (all keys), and a sliding window of 2 keys that cuts both tokens' view.
        for window in [0usize, 2] {
            attention(
                &pool,
                shape,
                &q,
                &k,
                &v,
                pos0,
                nt,
                0.35,
                window,
                &mut scores,
                &mut out,
            );
            for t in 0..nt {
                for h in 0..4 {
                    let kvh = h / 2;
                    let n = pos0 + t + 1;
                    let first = if window > 0 {
                        n.saturating_sub(window)
                    } else {
                        0
                    };
                    let ks: Vec<Vec<f32>> = (first..n)
                        .map(|j| {
                            k[j * kv_dim + kvh * 8..][..8]
                                .iter()
                                .map(|x| x.to_f32())
                                .collect()
                        })
                        .collect();
                    let vs: Vec<Vec<f32>> = (first..n)
                        .map(|j| {
                            v[j * kv_dim + kvh * 8..][..8]
                                .iter()
                                .map(|x| x.to_f32())
                                .collect()
                        })
                        .collect();
                    let want = naive(&q[(t * 4 + h) * 8..][..8], &ks, &vs, 0.35);
                    let got = &out[(t * 4 + h) * 8..][..8];
                    for (a, b) in want.iter().zip(got) {
                        assert!((a - b).abs() < 1e-5, "w{window} t{t} h{h}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
