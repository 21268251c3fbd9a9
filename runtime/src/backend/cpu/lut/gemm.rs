//! `Y = W·X` for a batch of activation vectors (prefill) and for several matrices sharing
//! one input (Q/K/V, gate/up), in one pass over the thread pool.
//!
//! Each thread takes a run of 32-row chunks of the concatenated matrices; for every chunk
//! it applies the chunk's bit planes (a few KiB, hot in L1 after the first token) to every
//! token's tables in turn, so the weights stream from memory once per batch whatever the
//! batch size, and each token's tables are reused by every row. Per token and chunk the
//! work is exactly [`gemv_chunks`] (or, with AVX-512, [`gemv_pair`]: two tokens per pass
//! over the chunk's weights, the same arithmetic), so a GEMM row equals the GEMV of that
//! token bit for bit.
//!
//! ```text
//!            chunk 0     chunk 1     ...   (32 rows each, all matrices concatenated)
//! token 0   gemv_chunks gemv_chunks
//! token 1   gemv_chunks gemv_chunks        ← same planes, still in cache
//! ...
//! ```

use super::acts8::Acts8;
use super::gemv::{chunk_rows, gemv_chunks, gemv_pair};
use super::table::LutTables;
use super::tiled;
use crate::backend::cpu::pool::{split_range, Pool};
use crate::error::{Error, Result};
use crate::lut::layout::{LutMatrix, CHUNK_ROWS};

/// Output pointer shared by the pool's threads; each writes only the rows of its chunks.
struct OutPtr(*mut f32);
// SAFETY: threads write disjoint (token, row) elements: rows of distinct chunks.
unsafe impl Sync for OutPtr {}

/// Largest number of matrices one pass takes.
pub const MAX_JOBS: usize = 4;

/// For every matrix `m_j` and token `t < tables.len()`: `out_j[t·rows_j + r] = (m_j · x_t)[r]`
/// where `tables[t]` was built from `x_t`. All matrices must take the tables' column count
/// and group; at most [`MAX_JOBS`] matrices. Errors (no partial writes) when a shape does
/// not match.
///
/// Tables built with int8 activations ([`LutTables::rebuild_int8`], which
/// [`super::table::rebuild_many`] picks for large batches) run the tiled int8 GEMM
/// ([`tiled`]) instead of the lookups; tables holding both forms
/// ([`LutTables::rebuild_both`]) run it for the matrices [`tiled::prefers`] it for. All
/// tokens must hold the form used.
pub fn gemm_many<'m, 'o>(
    pool: &Pool,
    jobs: impl IntoIterator<Item = (LutMatrix<'m>, &'o mut [f32])>,
    tables: &[LutTables],
) -> Result<()> {
    let n = tables.len();
    let acts: Vec<&Acts8> = tables.iter().filter_map(|t| t.int8()).collect();
    let has_int8 = n > 0 && acts.len() == n;
    let has_lookup = tables.iter().all(|t| t.has_lookup());
    if !has_int8 && !has_lookup {
        return Err(Error::invalid(
            "LUT GEMM: tokens' tables mix lookup tables and int8 activations",
        ));
    }
    // Per matrix: int8 when only that form is built, else when it wins at this batch size.
    let int8 = |m: &LutMatrix| has_int8 && (!has_lookup || tiled::prefers(m, n));
    let mut ptrs: [Option<(LutMatrix<'m>, OutPtr)>; MAX_JOBS] = [const { None }; MAX_JOBS];
    let mut total = 0;
    for (i, (m, out)) in jobs.into_iter().enumerate() {
        if i >= MAX_JOBS {
            return Err(Error::invalid(format!(
                "LUT GEMM: more than {MAX_JOBS} matrices in one pass"
            )));
        }
        if out.len() < n * m.rows() {
            return Err(Error::invalid(format!(
                "LUT GEMM: output of {} for {n} tokens × {} rows",
                out.len(),
                m.rows()
            )));
        }
        for t in tables {
            if t.cols() != m.cols() || t.group() != m.group() {
                return Err(Error::invalid(format!(
                    "LUT GEMM: tables for {} columns in groups of {}, matrix {}×{} in groups of {}",
                    t.cols(),
                    t.group(),
                    m.rows(),
                    m.cols(),
                    m.group()
                )));
            }
        }
        total += m.chunks();
        ptrs[i] = Some((m, OutPtr(out.as_mut_ptr())));
    }
    if n == 0 || total == 0 {
        return Ok(());
    }
    pool.run(|ith, nth| {
        let mine = split_range(total, 1, ith, nth);
        let mut base = 0;
        for (m, p) in ptrs.iter().flatten() {
            let lo = mine.start.max(base).min(base + m.chunks()) - base;
            let hi = mine.end.max(base).min(base + m.chunks()) - base;
            base += m.chunks();
            for c in lo..hi {
                let rows = chunk_rows(m, &(c..c + 1));
                // SAFETY: `t·rows_m + rows` lies inside the output (length checked above)
                // and only this thread owns chunk `c` of this matrix.
                let row = |t: usize| unsafe {
                    std::slice::from_raw_parts_mut(p.0.add(t * m.rows() + rows.start), rows.len())
                };
                if int8(m) {
                    tiled::chunk(m, c, &acts, |t, vals| {
                        row(t).copy_from_slice(&vals[..rows.len()])
                    });
                    continue;
                }
                let mut t = 0;
                while t < n {
                    let mut out = [[0f32; CHUNK_ROWS]; 2];
                    if t + 1 < n && gemv_pair(m, [&tables[t], &tables[t + 1]], c, &mut out) {
                        row(t).copy_from_slice(&out[0][..rows.len()]);
                        row(t + 1).copy_from_slice(&out[1][..rows.len()]);
                        t += 2;
                    } else {
                        // Cannot fail: shapes were checked above for every token.
                        let _ = gemv_chunks(m, &tables[t], c..c + 1, row(t));
                        t += 1;
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::lut::gemv::gemv_ref;
    use crate::lut::Method;
    use crate::testutil::Rng;

    /// Every (matrix, token) of a GEMM equals the reference GEMV of that token, bit for bit.
    #[test]
    fn gemm_many_equals_reference_gemv() {
        let pool = Pool::new(2).unwrap();
        let mut rng = Rng(5);
        let cols = 192;
        let shapes = [(70usize, 3usize), (32, 2), (5, 4)];
        let mats: Vec<LutMatrix> = shapes
            .iter()
            .map(|&(rows, bits)| {
                let w: Vec<f32> = (0..rows * cols).map(|_| 0.1 * rng.heavy()).collect();
                LutMatrix::quantize_with(&w, rows, cols, bits, 64, Method::Search).unwrap()
            })
            .collect();
        for n in [1usize, 3, 6] {
            let xs: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..cols).map(|_| rng.normal()).collect())
                .collect();
            let tables: Vec<LutTables> = xs
                .iter()
                .map(|x| LutTables::build(x, 64).unwrap())
                .collect();
            let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; n * m.rows()]).collect();
            let jobs = mats
                .iter()
                .cloned()
                .zip(outs.iter_mut().map(|o| o.as_mut_slice()));
            gemm_many(&pool, jobs, &tables).unwrap();
            for (m, out) in mats.iter().zip(&outs) {
                for (t, tab) in tables.iter().enumerate() {
                    let mut want = vec![0f32; m.rows()];
                    gemv_ref(m, tab, &mut want).unwrap();
                    assert_eq!(&out[t * m.rows()..(t + 1) * m.rows()], &want[..]);
                }
            }
        }
    }

    #[test]
    fn gemm_shape_errors() {
        let pool = Pool::new(1).unwrap();
        let w = vec![0.5f32; 40 * 64];
        let m = LutMatrix::quantize(&w, 40, 64, 2, 32).unwrap();
        let t = LutTables::build(&[1.0; 64], 32).unwrap();
        let mut small = [0f32; 39];
        assert!(gemm_many(
            &pool,
            [(m.clone(), &mut small[..])],
            std::slice::from_ref(&t)
        )
        .is_err());
        let t64 = LutTables::build(&[1.0; 64], 64).unwrap();
        let mut out = [0f32; 40];
        assert!(gemm_many(&pool, [(m.clone(), &mut out[..])], &[t64]).is_err());
        gemm_many(&pool, [(m, &mut out[..])], &[t]).unwrap();
        assert!(
            out.iter().all(|v| (v - 32.0).abs() < 0.5),
            "{:?}",
            &out[..4]
        );
    }
}
