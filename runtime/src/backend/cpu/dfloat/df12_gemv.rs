//! `out = W · x` for df12 matrices on the thread pool, decode fused into the GEMV: each
//! thread decodes a few of its rows at a time into a small per-thread BF16 block (L1-sized)
//! and runs them through the BF16 row kernel of [`crate::backend::cpu::matmul`] while they
//! are in cache, so the results are bitwise those of the BF16 matrix. No full BF16 copy.

use crate::backend::cpu::dfloat::Df12Decode;
use std::cell::RefCell;
use std::sync::Mutex;

use crate::backend::cpu::gemm_bf16::{dense_rows_raw, DenseActs};
use crate::backend::cpu::pool::{split_range, Pool};
use crate::backend::cpu::rows::WeightView;
use crate::dfloat::df12::Df12View;
use crate::error::{Error, Result};
use crate::format::GgmlType;

/// One df12 matrix of a [`df12_matmul_many`] pass.
pub struct Df12Job<'a, 'o> {
    /// The encoded `rows × cols` weights, row-major.
    pub t: Df12View<'a>,
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
    /// `n_tokens × rows` results.
    pub out: &'o mut [f32],
}

struct F32Ptr(*mut f32);
// SAFETY: threads write disjoint rows of every output.
unsafe impl Sync for F32Ptr {}

/// BF16 values decoded per step for the row kernels: 16 KiB, half of a typical L1d.
const BLOCK_VALUES: usize = 8192;
/// BF16 values decoded per step for the GEMM (64 KiB, L2): more rows per pass over the
/// activations, in whole GEMM tiles.
const GEMM_BLOCK_VALUES: usize = 32768;

thread_local! {
    static BUF: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Up to four df12 matrices applied to the same `n_tokens` rows of F32 activations
/// (`act_row_bytes` each) in one pass over the pool, rows split as
/// [`crate::backend::cpu::matmul::matmul_many`] splits them.
pub fn df12_matmul_many(
    pool: &Pool,
    jobs: &mut [Df12Job<'_, '_>],
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
) -> Result<()> {
    for j in jobs.iter() {
        if j.rows.checked_mul(j.cols) != Some(j.t.n) || j.out.len() < n_tokens * j.rows {
            return Err(Error::invalid(format!(
                "df12: {}×{} matrix of {} values into {} outputs",
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
        return Err(Error::invalid("df12: activations too small"));
    };
    let (da, gemm) = (&da, da.kernel().is_some());
    let total: usize = jobs.iter().map(|j| j.rows).sum();
    let ptrs: Vec<F32Ptr> = jobs
        .iter_mut()
        .map(|j| F32Ptr(j.out.as_mut_ptr()))
        .collect();
    let (jobs, ptrs) = (&*jobs, &ptrs);
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
            let step = if gemm && n_tokens > 1 {
                (GEMM_BLOCK_VALUES / j.cols.max(1) / 4 * 4).max(4)
            } else {
                (BLOCK_VALUES / j.cols.max(1)).max(1)
            };
            let res = BUF.with(|b| -> Result<()> {
                let mut buf = b.borrow_mut();
                #[cfg(target_arch = "x86_64")]
                if n_tokens == 1 && fused_x86_ok(j.cols) {
                    // SAFETY: as below, rows lo..hi of job j's output are this thread's.
                    return unsafe { fused_rows_x86(j, lo..hi, da, p.0, &mut buf) };
                }
                let mut r = lo;
                while r < hi {
                    let r1 = (r + step).min(hi);
                    let len = (r1 - r) * j.cols;
                    if buf.len() < len {
                        buf.resize(len, 0);
                    }
                    j.t.decode_range(r * j.cols..r1 * j.cols, &mut buf[..len])?;
                    let w = WeightView {
                        ty: GgmlType::BF16,
                        rows: r1 - r,
                        cols: j.cols,
                        data: bytemuck::cast_slice(&buf[..len]),
                    };
                    // SAFETY: `p` is job j's output of n_tokens × rows f32 (checked above);
                    // this thread alone writes rows lo..hi of it, and r..r1 lies in them.
                    unsafe { dense_rows_raw(&w, r, j.rows, da, p.0) };
                    r = r1;
                }
                Ok(())
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

/// Whether the fused AVX2 kernel applies to a decode pass: the BF16 kernels it mirrors are
/// the AVX2 ones (same dispatch as `backend::cpu::dot` and the f32 GEMM tile), the
/// table-lookup decode is on, and rows are whole 32-value steps.
#[cfg(target_arch = "x86_64")]
fn fused_x86_ok(cols: usize) -> bool {
    crate::backend::cpu::dot::has_avx2()
        && super::df12_kernel::Kernel::best() == super::df12_kernel::Kernel::Avx2
        && cols.is_multiple_of(32)
}

/// Rows `rows` of job `j` against one token through [`super::df12_fused_x86::dot_rows`],
/// rows without escapes four at a time; a row holding an escape is decoded into `buf` and
/// goes through the BF16 kernels themselves.
///
/// # Safety
/// As [`dense_rows_raw`] for `out` and rows `rows` of `j`; [`fused_x86_ok`] holds and `da`
/// holds one token.
#[cfg(target_arch = "x86_64")]
unsafe fn fused_rows_x86(
    j: &Df12Job<'_, '_>,
    rows: std::ops::Range<usize>,
    da: &DenseActs,
    out: *mut f32,
    buf: &mut Vec<u16>,
) -> Result<()> {
    use super::df12_fused_x86::dot_rows;
    let c = j.cols;
    let t = &j.t;
    let n = t.n;
    if t.sign_mantissa.len() < n
        || 2 * t.codes.len() < n
        || rows.end * c > n
        || da.n_tokens != 1
        || da.f32_rows.len() < 4 * c
    {
        return Err(Error::Internal("df12: view smaller than its matrix".into()));
    }
    let x: &[f32] = bytemuck::cast_slice(&da.f32_rows[..4 * c]);
    let (tb, sm, codes) = (&t.table, t.sign_mantissa, t.codes);
    let mut esc = t
        .exceptions_in(rows.start * c..rows.end * c)
        .map(|i| i / c)
        .peekable();
    if buf.len() < c {
        buf.resize(c, 0);
    }
    // Clean rows waiting for a group of four.
    let mut held = [0usize; 4];
    let mut nh = 0;
    let flush = |held: &[usize]| {
        let st = |k: usize| held[k] * c;
        // SAFETY: AVX2/FMA detected (fused_x86_ok); values r·c..(r+1)·c of every held row
        // lie within the checked sections, c is a multiple of 32, x holds c f32.
        let v: &[f32] = &match held.len() {
            4 => unsafe { dot_rows::<4>(tb, sm, codes, [st(0), st(1), st(2), st(3)], c, x) },
            3 => {
                let v = unsafe { dot_rows::<3>(tb, sm, codes, [st(0), st(1), st(2)], c, x) };
                [v[0], v[1], v[2], 0.0]
            }
            2 => {
                let v = unsafe { dot_rows::<2>(tb, sm, codes, [st(0), st(1)], c, x) };
                [v[0], v[1], 0.0, 0.0]
            }
            _ => {
                let v = unsafe { dot_rows::<1>(tb, sm, codes, [st(0)], c, x) };
                [v[0], 0.0, 0.0, 0.0]
            }
        }[..held.len()];
        for (&r, &vr) in held.iter().zip(v) {
            // SAFETY: one token, r < j.rows and row r is the caller's to write.
            unsafe { *out.add(r) = vr };
        }
    };
    for r in rows {
        while esc.next_if(|&e| e < r).is_some() {}
        if esc.peek() == Some(&r) {
            t.decode_range(r * c..(r + 1) * c, &mut buf[..c])?;
            let w = WeightView {
                ty: GgmlType::BF16,
                rows: 1,
                cols: c,
                data: bytemuck::cast_slice(&buf[..c]),
            };
            // SAFETY: row r is the caller's to write.
            unsafe { dense_rows_raw(&w, r, j.rows, da, out) };
            continue;
        }
        held[nh] = r;
        nh += 1;
        if nh == 4 {
            flush(&held);
            nh = 0;
        }
    }
    if nh > 0 {
        flush(&held[..nh]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::matmul::matmul_many;
    use crate::dfloat::df12::{encode_with, Df12View};

    /// Bitwise the BF16 matmul's results, whatever the shape, thread and token count, with
    /// escapes in the data.
    #[test]
    fn df12_matmul_equals_the_bf16_matmul() {
        let shapes = [(37usize, 96usize), (300, 64), (5, 1000), (130, 256)];
        let mats: Vec<Vec<u16>> = shapes
            .iter()
            .enumerate()
            .map(|(k, &(r, c))| {
                (0..r * c)
                    .map(|i| {
                        let s = ((i * 7919 + k * 31) as f32).sin();
                        let x = if k % 2 == 0 {
                            // Wide dynamic range: many exponents, escapes in most rows.
                            s * 2f32.powi((i % 40) as i32 - 20)
                        } else if i % 1001 == 0 {
                            // A few escapes in a narrow matrix (most rows have none).
                            s * 2f32.powi((i / 1001) as i32 % 40 + 10)
                        } else {
                            0.01 + 0.005 * s
                        };
                        half::bf16::from_f32(x).to_bits()
                    })
                    .collect()
            })
            .collect();
        let blobs: Vec<Vec<u8>> = mats.iter().map(|m| encode_with(m, 64).to_bytes()).collect();
        let views: Vec<Df12View> = blobs.iter().map(|b| Df12View::parse(b).unwrap()).collect();
        assert!(views.iter().all(|v| v.n_exceptions() > 0));
        // Rows without escapes too (the fused AVX2 kernel's case).
        let clean_rows = |k: usize| {
            let c = shapes[k].1;
            (0..shapes[k].0)
                .filter(|&r| views[k].exceptions_in(r * c..(r + 1) * c).next().is_none())
                .count()
        };
        assert!(clean_rows(1) > 200 && clean_rows(3) > 100);
        for group in [0..1, 1..2, 2..4] {
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
                    let wv = group.clone().zip(want.iter_mut()).map(|(k, o)| {
                        let v = WeightView {
                            ty: GgmlType::BF16,
                            rows: shapes[k].0,
                            cols,
                            data: bytemuck::cast_slice(&mats[k]),
                        };
                        (v, &mut o[..])
                    });
                    matmul_many(&pool, wv, acts, rb, n);
                    let mut got: Vec<Vec<f32>> = group
                        .clone()
                        .map(|k| vec![f32::NAN; n * shapes[k].0])
                        .collect();
                    let mut jobs: Vec<Df12Job> = group
                        .clone()
                        .zip(got.iter_mut())
                        .map(|(k, o)| Df12Job {
                            t: views[k],
                            rows: shapes[k].0,
                            cols,
                            out: &mut o[..],
                        })
                        .collect();
                    df12_matmul_many(&pool, &mut jobs, acts, rb, n).unwrap();
                    for (a, b) in want.iter().zip(&got) {
                        assert!(
                            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "group {group:?}, n {n}, {threads} threads"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let m: Vec<u16> = (0..64).map(|i| i as u16).collect();
        let blob = encode_with(&m, 64).to_bytes();
        let v = Df12View::parse(&blob).unwrap();
        let pool = Pool::new(1).unwrap();
        let acts = vec![0u8; 4 * 64];
        let mut out = vec![0f32; 2];
        let mut jobs = [Df12Job {
            t: v,
            rows: 2,
            cols: 33,
            out: &mut out,
        }];
        assert!(df12_matmul_many(&pool, &mut jobs, &acts, 4 * 33, 1).is_err());
    }
}
