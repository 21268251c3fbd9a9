//! The row kernel every ggml-block matmul ends in: weight rows against activation rows,
//! one dot product each (four tokens at a time), on the calling thread.

use super::dot::{dot, dot4};
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

/// `out[t][r0 + i] = w[i] · x[t]` for the `w.rows` rows of `w`, which are rows
/// `r0..r0 + w.rows` of a matrix of `rows_total` rows, on the calling thread: the row
/// kernel of [`super::matmul::matmul_many`], for callers that produce weight rows themselves (the DFloat11
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
