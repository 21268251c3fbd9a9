//! `out[t][r] = W[r] · x[t]` for a weight matrix in a ggml block format and `n_tokens`
//! activation rows already converted to the matching 8-bit (or f32) format.
//! Rows are split over the pool's threads; each thread streams its weight rows once and
//! applies every row to all tokens while it is hot in L1.

use super::dot::qgemm::{gemm_rows_raw, has_gemm, QGEMM_MIN_TOKENS};
use super::gemm_bf16::{dense_rows_raw, DenseActs};
use super::pool::{split_range, Pool};
use super::rows::{matmul_rows_raw, WeightView};
use crate::format::GgmlType;

/// Raw output pointer shared by the threads; each writes only its own rows.
struct OutPtr(*mut f32);
// SAFETY: threads write disjoint elements (distinct rows r for every token t).
unsafe impl Sync for OutPtr {}
// SAFETY: as above; the pointer is only used while the output borrow is alive.
unsafe impl Send for OutPtr {}

/// `out` is `n_tokens × w.rows`, `acts` is `n_tokens` rows of `act_row_bytes` each.
pub fn matmul(
    pool: &Pool,
    w: WeightView,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
    out: &mut [f32],
) {
    matmul_many(pool, [(w, out)], acts, act_row_bytes, n_tokens);
}

/// Several matrices applied to the same activations (Q/K/V, gate/up) in one pass over the
/// pool: one synchronisation instead of one per matrix. All must take the same activation
/// format; each output is `n_tokens × rows` of its matrix.
pub fn matmul_many<'a, 'w>(
    pool: &Pool,
    jobs: impl IntoIterator<Item = (WeightView<'w>, &'a mut [f32])>,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
) {
    assert!(
        acts.len() >= n_tokens * act_row_bytes,
        "matmul activations too small"
    );
    let mut ptrs: [Option<(WeightView, OutPtr)>; 4] = [const { None }; 4];
    let mut total = 0;
    for (i, (w, out)) in jobs.into_iter().enumerate() {
        assert!(i < ptrs.len(), "at most 4 matrices per pass");
        assert!(out.len() >= n_tokens * w.rows, "matmul output too small");
        assert!(
            w.data.len() >= w.row_bytes() * w.rows,
            "matmul weights too small"
        );
        total += w.rows;
        ptrs[i] = Some((w, OutPtr(out.as_mut_ptr())));
    }
    // BF16 matrices of a prefill batch go through the GEMM (activations prepared once).
    let dense = ptrs
        .iter()
        .flatten()
        .find(|(w, _)| w.ty == GgmlType::BF16)
        .and_then(|(w, _)| DenseActs::prepare(acts, act_row_bytes, n_tokens, w.cols))
        .filter(|d| d.kernel().is_some());
    let dense = dense.as_ref();
    pool.run(|ith, nth| {
        // Split the concatenated rows of all matrices evenly.
        let mine = split_range(total, 8, ith, nth);
        let mut base = 0;
        for (w, p) in ptrs.iter().flatten() {
            let lo = mine.start.max(base).min(base + w.rows) - base;
            let hi = mine.end.max(base).min(base + w.rows) - base;
            base += w.rows;
            if lo >= hi {
                continue;
            }
            match dense {
                Some(d) if w.ty == GgmlType::BF16 && w.cols == d.cols => {
                    let rb = w.row_bytes();
                    let sub = WeightView {
                        rows: hi - lo,
                        data: &w.data[lo * rb..hi * rb],
                        ..*w
                    };
                    // SAFETY: the output holds n_tokens × w.rows f32 (checked above) and
                    // this thread alone writes rows lo..hi of it.
                    unsafe { dense_rows_raw(&sub, lo, w.rows, d, p.0) };
                }
                _ if n_tokens >= QGEMM_MIN_TOKENS && has_gemm(w.ty) => {
                    let rb = w.row_bytes();
                    let sub = WeightView {
                        rows: hi - lo,
                        data: &w.data[lo * rb..hi * rb],
                        ..*w
                    };
                    // SAFETY: has_gemm(w.ty); the output holds n_tokens × w.rows f32
                    // (checked above) and this thread alone writes rows lo..hi of it.
                    unsafe { gemm_rows_raw(&sub, lo, w.rows, acts, act_row_bytes, n_tokens, p.0) };
                }
                _ => rows_kernel(w, p, lo..hi, acts, act_row_bytes, n_tokens),
            }
        }
    });
}

/// Rows `range` of `w` against every token (the row kernel on this thread's share).
fn rows_kernel(
    w: &WeightView,
    p: &OutPtr,
    range: std::ops::Range<usize>,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
) {
    let rb = w.row_bytes();
    let part = WeightView {
        rows: range.len(),
        data: &w.data[range.start * rb..range.end * rb],
        ..*w
    };
    // SAFETY: `p` points to `n_tokens × w.rows` f32s (checked by `matmul_many`), `range` is
    // within `w.rows`, and each thread gets its own rows.
    unsafe {
        matmul_rows_raw(
            &part,
            range.start,
            w.rows,
            acts,
            act_row_bytes,
            n_tokens,
            p.0,
        )
    };
}
