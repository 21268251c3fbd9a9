//! `out[t][r] = W[r] · x[t]` for a weight matrix in a ggml block format and `n_tokens`
//! activation rows already converted to the matching 8-bit (or f32) format.
//! Rows are split over the pool's threads; each thread streams its weight rows once and
//! applies every row to all tokens while it is hot in L1.

use super::dot::{dot, dot4};
use super::pool::Pool;
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

/// `out` is `n_tokens × w.rows`, `acts` is `n_tokens` rows of `act_row_bytes` each.
pub fn matmul(pool: &Pool, w: WeightView, acts: &[u8], act_row_bytes: usize, n_tokens: usize, out: &mut [f32]) {
    assert!(out.len() >= n_tokens * w.rows, "matmul output too small");
    assert!(acts.len() >= n_tokens * act_row_bytes, "matmul activations too small");
    let rb = w.row_bytes();
    assert!(w.data.len() >= rb * w.rows, "matmul weights too small");
    let ptr = OutPtr(out.as_mut_ptr());
    let rows = w.rows;
    pool.run_ranges(rows, 8, |_, range| {
        let p = &ptr;
        for r in range {
            let wrow = &w.data[r * rb..(r + 1) * rb];
            let act = |t: usize| &acts[t * act_row_bytes..(t + 1) * act_row_bytes];
            let mut t = 0;
            while t + 4 <= n_tokens {
                let v = dot4(w.ty, wrow, [act(t), act(t + 1), act(t + 2), act(t + 3)]);
                for (k, vk) in v.into_iter().enumerate() {
                    // SAFETY: t + k < n_tokens and r < rows, so the index is inside `out`
                    // (checked above), and no other thread writes row r.
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
    });
}
