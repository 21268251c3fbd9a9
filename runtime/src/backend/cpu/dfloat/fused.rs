//! DFloat11 decoding on the runtime's persistent thread pool (the inference path), and
//! decoding of an element range alone (embedding rows).

use std::ops::Range;
use std::sync::Mutex;

use std::cell::RefCell;

use super::decode::Df11Decoder;
use crate::backend::cpu::gemm_bf16::{dense_rows_raw, DenseActs};
use crate::backend::cpu::pool::{split_range, Pool};
use crate::backend::cpu::rows::WeightView;
use crate::dfloat::Df11View;
use crate::error::{Error, Result};
use crate::format::GgmlType;

/// One DFloat11 matrix of a [`decode_matmul_many`] pass: `rows × cols` BF16 weights and
/// its output (`n_tokens × rows` f32).
pub struct Df11Job<'a, 'o> {
    /// Decoder built for `t`'s code.
    pub dec: &'a Df11Decoder,
    /// The encoded weights, row-major, validated (as at model load).
    pub t: Df11View<'a>,
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
    /// `n_tokens × rows` results.
    pub out: &'o mut [f32],
}

/// Output pointer of a job, shared by the pool's threads (each writes its own rows).
struct F32Ptr(*mut f32);
// SAFETY: threads write disjoint rows of every output.
unsafe impl Sync for F32Ptr {}

/// Chunks decoded per step of the fused pass (a multiple of the decoder's 4-way interleave;
/// 8 chunks of 4 KiB are ~100 K values, ~200 KB of BF16: they stay in L2 for the GEMV).
const FUSED_CHUNKS: usize = 8;

thread_local! {
    /// Per-thread BF16 block of the fused pass (grows to its working size once).
    static FUSED_BUF: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// `out = W · x` for up to four DFloat11 matrices, decode fused into the GEMV: one pass over
/// the pool, each thread decoding the chunks that cover its rows a few at a time into a
/// small per-thread buffer and applying the complete rows at once while they are in cache.
/// No full BF16 copy of the weights, one synchronisation per call. The rows go through the
/// BF16 row kernel of [`crate::backend::cpu::matmul::matmul_many`], so the results are
/// bitwise those of the BF16 matrix. `acts` holds `n_tokens` rows of F32 activations,
/// `act_row_bytes` each. Rows are split over the threads as `matmul_many` splits them.
pub fn decode_matmul_many(
    pool: &Pool,
    jobs: &mut [Df11Job<'_, '_>],
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
) -> Result<()> {
    for j in jobs.iter() {
        if j.rows.checked_mul(j.cols) != Some(j.t.n) || j.out.len() < n_tokens * j.rows {
            return Err(Error::invalid(format!(
                "DFloat11: {}×{} matrix of {} values into {} outputs",
                j.rows,
                j.cols,
                j.t.n,
                j.out.len()
            )));
        }
    }
    let cols = jobs.first().map_or(0, |j| j.cols);
    // The BF16 matrix's arithmetic: the GEMM for a prefill batch, else the row kernels.
    let Some(da) = DenseActs::prepare(acts, act_row_bytes, n_tokens, cols)
        .filter(|_| jobs.iter().all(|j| j.cols == cols))
    else {
        return Err(Error::invalid("DFloat11: activations too small"));
    };
    let da = &da;
    let total: usize = jobs.iter().map(|j| j.rows).sum();
    let ptrs: Vec<F32Ptr> = jobs
        .iter_mut()
        .map(|j| F32Ptr(j.out.as_mut_ptr()))
        .collect();
    let jobs = &*jobs;
    let ptrs = &ptrs;
    let err: Mutex<Option<Error>> = Mutex::new(None);
    pool.run(|ith, nth| {
        let mine = split_range(total, 8, ith, nth);
        let mut base = 0;
        for (j, p) in jobs.iter().zip(ptrs) {
            let lo = mine.start.max(base).min(base + j.rows) - base;
            let hi = mine.end.max(base).min(base + j.rows) - base;
            base += j.rows;
            if lo >= hi {
                continue;
            }
            let res = FUSED_BUF.with(|b| {
                let mut buf = b.borrow_mut();
                // SAFETY: `p` is job j's output of n_tokens × rows f32 (checked above);
                // this thread alone writes rows lo..hi of it.
                unsafe { fused_rows(j, lo..hi, da, p.0, &mut buf) }
            });
            if let Err(e) = res {
                let mut g = err.lock().unwrap_or_else(|p| p.into_inner());
                g.get_or_insert(e);
                return;
            }
        }
    });
    match err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Rows `rows` of job `j`: decode the covering chunks `FUSED_CHUNKS` at a time into `buf`
/// (after the carried partial row), apply every complete row of `rows` in it.
///
/// # Safety
/// As [`dense_rows_raw`] for `out` and rows `rows` of `j`.
unsafe fn fused_rows(
    j: &Df11Job<'_, '_>,
    rows: Range<usize>,
    da: &DenseActs,
    out: *mut f32,
    buf: &mut Vec<u16>,
) -> Result<()> {
    let c = j.cols;
    let want = rows.start * c..rows.end * c;
    let chunks = chunks_covering(&j.t, &want);
    let covered = j.t.elem_range(chunks.clone())?;
    if covered.start > want.start || covered.end < want.end {
        return Err(Error::bad_model(
            "DFloat11: chunk index does not cover the rows",
        ));
    }
    // buf[..held] = elements held_start..held_start + held.
    let mut held_start = covered.start;
    let mut held = 0usize;
    let mut k = chunks.start;
    while k < chunks.end {
        let step = k..(k + FUSED_CHUNKS).min(chunks.end);
        let r = j.t.elem_range(step.clone())?;
        if r.start != held_start + held {
            return Err(Error::bad_model("DFloat11: chunk index is not contiguous"));
        }
        if buf.len() < held + r.len() {
            buf.resize(held + r.len(), 0);
        }
        j.dec
            .decode_range(j.t, step.clone(), &mut buf[held..held + r.len()])?;
        held += r.len();
        k = step.end;
        // Complete rows of `rows` inside the held elements.
        let end = held_start + held;
        let row_a = held_start.max(want.start).div_ceil(c);
        let row_b = (end.min(want.end) / c).max(row_a);
        if row_b > row_a {
            let data = &buf[row_a * c - held_start..row_b * c - held_start];
            let w = WeightView {
                ty: GgmlType::BF16,
                rows: row_b - row_a,
                cols: c,
                data: bytemuck::cast_slice(data),
            };
            // SAFETY: rows row_a..row_b lie in `rows` (the caller's to write).
            unsafe { dense_rows_raw(&w, row_a, j.rows, da, out) };
        }
        // Keep the partial row after row_b (if any) at the front of the buffer.
        let keep_from = (row_b * c).max(held_start);
        if keep_from < end {
            buf.copy_within(keep_from - held_start..held, 0);
        }
        held = end - keep_from.min(end);
        held_start = keep_from.min(end);
    }
    Ok(())
}

/// Chunks whose decoded elements cover `elems` (the smallest such run).
pub fn chunks_covering(t: &Df11View<'_>, elems: &Range<usize>) -> Range<usize> {
    let nch = t.num_chunks();
    let first = |e: usize| {
        // Number of chunks whose first element is <= e.
        let (mut lo, mut hi) = (0usize, nch);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if (t.chunk_elem.get(mid) as usize) <= e {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let k0 = first(elems.start).saturating_sub(1);
    // First chunk starting at or after the end.
    let (mut lo, mut hi) = (k0 + 1, nch);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if (t.chunk_elem.get(mid) as usize) < elems.end {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    k0..lo.max(k0 + 1).min(nch)
}

/// Decode elements `elems` of `t` into `out` (`out.len() == elems.len()`), decoding the
/// covering chunks into `tmp` (grown as needed, reused across calls).
pub fn decode_elems(
    dec: &Df11Decoder,
    t: Df11View<'_>,
    elems: Range<usize>,
    tmp: &mut Vec<u16>,
    out: &mut [u16],
) -> Result<()> {
    if elems.start > elems.end || elems.end > t.n || out.len() != elems.len() {
        return Err(Error::invalid(format!(
            "DFloat11: element range {elems:?} of {} into {} values",
            t.n,
            out.len()
        )));
    }
    if elems.is_empty() {
        return Ok(());
    }
    let chunks = chunks_covering(&t, &elems);
    let r = t.elem_range(chunks.clone())?;
    if r.start > elems.start || r.end < elems.end {
        return Err(Error::bad_model(
            "DFloat11: chunk index does not cover the range",
        ));
    }
    if tmp.len() < r.len() {
        tmp.resize(r.len(), 0);
    }
    dec.decode_range(t, chunks, &mut tmp[..r.len()])?;
    out.copy_from_slice(&tmp[elems.start - r.start..elems.end - r.start]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dfloat::{encode_with, EncodeParams};

    fn values(n: usize) -> Vec<u16> {
        (0..n)
            .map(|i| half::bf16::from_f32(((i * 7919) as f32).sin() * 0.03).to_bits())
            .collect()
    }

    #[test]
    fn ranges_equal_the_input() {
        let v = values(50_000);
        let p = EncodeParams {
            chunk_bytes: 64,
            ..Default::default()
        };
        let t = encode_with(&v, &p).unwrap();
        let dec = Df11Decoder::new(&t.lengths).unwrap();
        let mut tmp = Vec::new();
        for r in [
            0..1,
            0..576,
            1000..1576,
            49_000..50_000,
            49_999..50_000,
            7..7,
        ] {
            let mut out = vec![0u16; r.len()];
            decode_elems(&dec, t.view(), r.clone(), &mut tmp, &mut out).unwrap();
            assert_eq!(out, &v[r]);
        }
        let mut out = vec![0u16; 2];
        assert!(decode_elems(&dec, t.view(), 49_999..50_001, &mut tmp, &mut out).is_err());
    }

    /// The fused decode + GEMV gives bitwise the results of the BF16 matrices through
    /// `matmul_many`, whatever the chunk/row alignment, thread count and token count.
    #[test]
    fn fused_decode_matmul_equals_the_bf16_matmul() {
        use crate::backend::cpu::matmul::matmul_many;
        let shapes = [(37usize, 96usize), (300, 64), (5, 1000), (130, 256)];
        let mats: Vec<Vec<u16>> = shapes
            .iter()
            .enumerate()
            .map(|(k, &(r, c))| {
                (0..r * c)
                    .map(|i| {
                        let x = ((i * 7919 + k * 31) as f32).sin() * 0.05;
                        half::bf16::from_f32(x).to_bits()
                    })
                    .collect()
            })
            .collect();
        for chunk_bytes in [4u32, 64, 4096] {
            let p = EncodeParams {
                chunk_bytes,
                ..Default::default()
            };
            let ts: Vec<_> = mats.iter().map(|m| encode_with(m, &p).unwrap()).collect();
            let decs: Vec<_> = ts
                .iter()
                .map(|t| Df11Decoder::new(&t.lengths).unwrap())
                .collect();
            for group in [0..1, 1..2, 0..2, 2..4] {
                let cols = shapes[group.start].1;
                if shapes[group.clone()].iter().any(|s| s.1 != cols) {
                    continue;
                }
                for n in [1usize, 5, 9, 17] {
                    let acts: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).cos()).collect();
                    let acts: &[u8] = bytemuck::cast_slice(&acts);
                    let rb = 4 * cols;
                    for threads in [1, 2, 3] {
                        let pool = Pool::new(threads).unwrap();
                        let mut want: Vec<Vec<f32>> =
                            group.clone().map(|k| vec![0f32; n * shapes[k].0]).collect();
                        let views = group.clone().zip(want.iter_mut()).map(|(k, o)| {
                            let v = WeightView {
                                ty: GgmlType::BF16,
                                rows: shapes[k].0,
                                cols,
                                data: bytemuck::cast_slice(&mats[k]),
                            };
                            (v, &mut o[..])
                        });
                        matmul_many(&pool, views, acts, rb, n);
                        let mut got: Vec<Vec<f32>> = group
                            .clone()
                            .map(|k| vec![f32::NAN; n * shapes[k].0])
                            .collect();
                        let mut jobs: Vec<Df11Job> = group
                            .clone()
                            .zip(got.iter_mut())
                            .map(|(k, o)| Df11Job {
                                dec: &decs[k],
                                t: ts[k].view(),
                                rows: shapes[k].0,
                                cols,
                                out: &mut o[..],
                            })
                            .collect();
                        decode_matmul_many(&pool, &mut jobs, acts, rb, n).unwrap();
                        for (a, b) in want.iter().zip(&got) {
                            assert!(
                                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                                "chunk {chunk_bytes}, group {group:?}, n {n}, {threads} threads"
                            );
                        }
                    }
                }
            }
        }
    }
}
