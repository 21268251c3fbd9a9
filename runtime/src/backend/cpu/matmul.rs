//! `out[t][r] = W[r] · x[t]` for a weight matrix in a ggml block format and `n_tokens`
//! activation rows already converted to the matching 8-bit (or f32) format.
//! Rows are split over the pool's threads; each thread streams its weight rows once and
//! applies every row to all tokens while it is hot in L1.

use super::dot::qgemm::{gemm_rows_raw, has_gemm, QGEMM_MIN_TOKENS};
use super::dot::{dot, dot4};
use super::gemm_bf16::{dense_rows_raw, DenseActs};
use super::pool::{split_range, Pool};
use crate::format::GgmlType;

/// A borrowed weight matrix: `rows` rows of `cols` elements of type `ty`.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl WeightView<'_> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        let (bl, bb) = self.ty.block_geometry();
        self.cols / bl * bb
    }
}

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

/// `out[t][r0 + i] = w[i] · x[t]` for the `w.rows` rows of `w`, which are rows
/// `r0..r0 + w.rows` of a matrix of `rows_total` rows, on the calling thread: the row
/// kernel of [`matmul_many`], for callers that produce weight rows themselves (the DFloat11
/// decoder applies each decoded block while it is in cache, with exactly the arithmetic,
/// and so the results, of the BF16 matrix).
///
/// # Safety
/// `out` points to `n_tokens × rows_total` writable f32s, `r0 + w.rows <= rows_total`, and
/// no other thread writes rows `r0..r0 + w.rows` of it meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_rows_raw(
    w: &WeightView,
    r0: usize,
    rows_total: usize,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
    out: *mut f32,
) {
    assert!(
        acts.len() >= n_tokens * act_row_bytes && r0 + w.rows <= rows_total,
        "matmul_rows_raw: activations or rows out of range"
    );
    assert!(
        w.data.len() >= w.row_bytes() * w.rows,
        "matmul weights too small"
    );
    let rb = w.row_bytes();
    for r in 0..w.rows {
        let wrow = &w.data[r * rb..(r + 1) * rb];
        let act = |t: usize| &acts[t * act_row_bytes..(t + 1) * act_row_bytes];
        let at = |t: usize| t * rows_total + r0 + r;
        let mut t = 0;
        while t + 4 <= n_tokens {
            let v = dot4(w.ty, wrow, [act(t), act(t + 1), act(t + 2), act(t + 3)]);
            for (k, vk) in v.into_iter().enumerate() {
                // SAFETY: t + k < n_tokens and r0 + r < rows_total (caller's contract).
                unsafe { *out.add(at(t + k)) = vk };
            }
            t += 4;
        }
        for t in t..n_tokens {
            let v = dot(w.ty, wrow, act(t));
            // SAFETY: as above.
            unsafe { *out.add(at(t)) = v };
        }
    }
}

/// Rows `range` of `w` against every token.
fn rows_kernel(
    w: &WeightView,
    p: &OutPtr,
    range: std::ops::Range<usize>,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
) {
    let rb = w.row_bytes();
    let rows = w.rows;
    for r in range {
        let wrow = &w.data[r * rb..(r + 1) * rb];
        let act = |t: usize| &acts[t * act_row_bytes..(t + 1) * act_row_bytes];
        let mut t = 0;
        while t + 4 <= n_tokens {
            let v = dot4(w.ty, wrow, [act(t), act(t + 1), act(t + 2), act(t + 3)]);
            for (k, vk) in v.into_iter().enumerate() {
                // SAFETY: t + k < n_tokens and r < rows, so the index is inside the output
                // (checked by the caller), and no other thread writes row r.
                unsafe { *p.0.add((t + k) * rows + r) = vk };
            }
            t += 4;
        }
        for t in t..n_tokens {
            let v = dot(w.ty, wrow, act(t));
            // SAFETY: as above.
            unsafe { *p.0.add(t * rows + r) = v };
        }
    }
}
