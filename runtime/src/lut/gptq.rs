//! Calibrated quantization (GPTQ, Frantar et al. 2022) for the LUT formats.
//!
//! Plain group-wise quantization minimizes the error of the *weights*. What matters is the
//! error of the layer's *outputs* on real inputs, `‖(W − Q)·X‖²`, which depends on the
//! second moments of the inputs, `H = Σ_t x_t x_tᵀ` ([`Hessian`], collected by running the
//! source model over calibration text, see `convert::calib`). GPTQ quantizes one column at
//! a time and moves each column's rounding error onto the columns not yet quantized, in the
//! proportions that minimize the output error under `H`:
//!
//! ```text
//!   U = upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), H damped by 1% of its mean diagonal
//!   for column j = 0..K:
//!     at a group start: (scale, zero) of every row from the search of `quantize.rs` on
//!                        the current (already corrected) weights of the group
//!     q_j   = code of W[:, j]                      e = (W[:, j] − s·(q_j − z)) / U[j, j]
//!     W[:, j+1..] −= e · U[j, j+1..]               (lazily, 128 columns at a time)
//! ```
//!
//! The result is an ordinary [`LutMatrix`]: same codes, scales and zeros, same kernels. With
//! a diagonal `H` no error moves and GPTQ gives exactly the codes of [`Method::Search`]
//! weighted by `H_jj` (a unit test checks it).
//!
//! [`Method::Search`]: super::Method::Search

use half::f16;

use super::layout::LutMatrix;
use super::quantize::{code_of, quantize_group_search_weighted};
use crate::error::{Error, Result};

/// Columns whose error moves at once (a multiple of every group size).
const BLOCK: usize = 128;

/// Damping added to the diagonal, as a fraction of its mean (GPTQ's `percdamp`).
pub const DAMP: f64 = 0.01;

/// Second moments of a matrix's inputs: `H = Σ_t x_t x_tᵀ` over `n` calibration tokens,
/// `K × K` f32, row-major.
#[derive(Clone, Debug)]
pub struct Hessian {
    k: usize,
    h: Vec<f32>,
    n: usize,
}

/// Rows of H per thread task.
const ROW_TILE: usize = 64;

impl Hessian {
    /// An empty accumulator for inputs of width `k`.
    pub fn new(k: usize) -> Self {
        Hessian {
            k,
            h: vec![0.0; k * k],
            n: 0,
        }
    }

    /// Input width.
    pub fn width(&self) -> usize {
        self.k
    }

    /// Tokens accumulated.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// Add the `n` rows of `x` (`n × k`, row-major): `H += xᵀx`, tiles of rows of H split
    /// over `threads`.
    pub fn add(&mut self, x: &[f32], n: usize, threads: usize) {
        let k = self.k;
        assert!(
            x.len() >= n * k,
            "Hessian::add: {} values for {n}×{k}",
            x.len()
        );
        if n == 0 || k == 0 {
            return;
        }
        let x = &x[..n * k];
        self.n += n;
        let tiles: Vec<(usize, &mut [f32])> = self
            .h
            .chunks_mut(ROW_TILE * k)
            .enumerate()
            .map(|(t, rows)| (t * ROW_TILE, rows))
            .collect();
        let threads = threads.clamp(1, tiles.len());
        let mut per: Vec<Vec<(usize, &mut [f32])>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, t) in tiles.into_iter().enumerate() {
            per[i % threads].push(t);
        }
        let work = |mine: Vec<(usize, &mut [f32])>| {
            for (i0, rows) in mine {
                add_rows(rows, i0, x, n, k);
            }
        };
        if threads == 1 {
            per.into_iter().for_each(work);
        } else {
            std::thread::scope(|s| {
                for mine in per {
                    s.spawn(move || work(mine));
                }
            });
        }
    }

    /// `H / n` as a full symmetric f64 matrix.
    fn mean_f64(&self) -> Vec<f64> {
        let k = self.k;
        let inv = 1.0 / self.n.max(1) as f64;
        let mut a = vec![0f64; k * k];
        for i in 0..k {
            for j in i..k {
                let v = self.h[i * k + j] as f64 * inv;
                a[i * k + j] = v;
                a[j * k + i] = v;
            }
        }
        a
    }

    /// The factor GPTQ needs: upper-triangular `U` with `H⁻¹ = UᵀU`, for `H` damped by
    /// [`DAMP`] of its mean diagonal (columns never seen in calibration get the mean).
    pub fn factor(&self) -> Result<InvFactor> {
        let k = self.k;
        if self.n == 0 {
            return Err(Error::invalid("GPTQ: no calibration tokens"));
        }
        let mut a = self.mean_f64();
        let mean_diag = (0..k).map(|i| a[i * k + i]).sum::<f64>() / k as f64;
        if !(mean_diag.is_finite() && mean_diag > 0.0) {
            return Err(Error::invalid(
                "GPTQ: calibration inputs are all zero or not finite",
            ));
        }
        for i in 0..k {
            if a[i * k + i] <= 0.0 {
                a[i * k + i] = mean_diag;
            }
            a[i * k + i] += DAMP * mean_diag;
        }
        // H = R Rᵀ with R upper ⇔ (J H J) = L Lᵀ with L = J R J lower (J reverses the order).
        // Then H⁻¹ = R⁻ᵀ R⁻¹, so U = R⁻¹ = J L⁻¹ J.
        let mut rev = vec![0f64; k * k];
        for i in 0..k {
            for j in 0..k {
                rev[i * k + j] = a[(k - 1 - i) * k + (k - 1 - j)];
            }
        }
        cholesky_lower(&mut rev, k)?;
        let linv = invert_lower(&rev, k);
        let mut u = vec![0f32; k * k];
        for i in 0..k {
            for j in i..k {
                u[i * k + j] = linv[(k - 1 - i) * k + (k - 1 - j)] as f32;
            }
        }
        Ok(InvFactor { k, u })
    }
}

/// `rows` (the rows of H from row `i0`) += `x[:, i0..]ᵀ · x`.
fn add_rows(rows: &mut [f32], i0: usize, x: &[f32], n: usize, k: usize) {
    let m = rows.len() / k;
    assert!(rows.len() == m * k && i0 + m <= k && x.len() == n * k);
    // SAFETY: A = x[:, i0..i0+m]ᵀ is m × n with element (i, t) at x[t·k + i0 + i]
    // (row stride 1, column stride k), the largest index (n−1)·k + i0 + m − 1 < n·k;
    // B = x is n × k with strides (k, 1); C = rows is m × k with strides (k, 1), exactly
    // `rows.len()` elements. C does not alias A or B.
    unsafe {
        matrixmultiply::sgemm(
            m,
            n,
            k,
            1.0,
            x.as_ptr().add(i0),
            1,
            k as isize,
            x.as_ptr(),
            k as isize,
            1,
            1.0,
            rows.as_mut_ptr(),
            k as isize,
            1,
        );
    }
}

/// In-place lower Cholesky factor of the symmetric positive definite `a` (`k × k`); the
/// strict upper triangle is left as is and never read afterwards.
fn cholesky_lower(a: &mut [f64], k: usize) -> Result<()> {
    let mut rj = vec![0f64; k];
    for j in 0..k {
        rj[..j].copy_from_slice(&a[j * k..j * k + j]);
        let d = a[j * k + j] - rj[..j].iter().map(|v| v * v).sum::<f64>();
        if !(d > 0.0 && d.is_finite()) {
            return Err(Error::invalid(format!(
                "GPTQ: the damped Hessian is not positive definite (column {j})"
            )));
        }
        let d = d.sqrt();
        a[j * k + j] = d;
        // Column j below the diagonal: a[i][j] = (a[i][j] − Σ_p a[i][p]·a[j][p]) / d.
        for i in j + 1..k {
            let ri = &mut a[i * k..i * k + k];
            let dot: f64 = ri[..j].iter().zip(&rj[..j]).map(|(x, y)| x * y).sum();
            ri[j] = (ri[j] - dot) / d;
        }
    }
    Ok(())
}

/// Inverse of the lower-triangular `l` (its lower triangle; `k × k`), as a lower-triangular
/// matrix (upper triangle zero).
fn invert_lower(l: &[f64], k: usize) -> Vec<f64> {
    let mut inv = vec![0f64; k * k];
    // Row i of L⁻¹: solve by forward substitution on the identity's columns, row by row:
    // inv[i][j] = (δ_ij − Σ_{p=j}^{i−1} l[i][p]·inv[p][j]) / l[i][i].
    for i in 0..k {
        let lii = l[i * k + i];
        inv[i * k + i] = 1.0 / lii;
        for p in 0..i {
            let lip = l[i * k + p];
            if lip == 0.0 {
                continue;
            }
            // inv[i][..=p] −= lip · inv[p][..=p]
            let (top, bottom) = inv.split_at_mut(i * k);
            let src = &top[p * k..p * k + p + 1];
            for (d, &s) in bottom[..p + 1].iter_mut().zip(src) {
                *d -= lip * s;
            }
        }
        for j in 0..i {
            inv[i * k + j] /= lii;
        }
    }
    inv
}

/// `U` with `H⁻¹ = UᵀU` (upper triangular, `k × k` f32, row-major); see [`Hessian::factor`].
#[derive(Clone, Debug)]
pub struct InvFactor {
    k: usize,
    u: Vec<f32>,
}

impl InvFactor {
    /// Input width.
    pub fn width(&self) -> usize {
        self.k
    }
}

/// GPTQ-quantize the row-major `rows × cols` matrix `w` to `bits` with groups of `group`
/// (see the module docs). `f` comes from the inputs' [`Hessian`].
pub fn quantize_gptq(
    w: &[f32],
    rows: usize,
    cols: usize,
    bits: usize,
    group: usize,
    f: &InvFactor,
) -> Result<LutMatrix<'static>> {
    if f.k != cols {
        return Err(Error::invalid(format!(
            "GPTQ: calibration inputs are {} wide, the matrix has {cols} columns",
            f.k
        )));
    }
    if rows.checked_mul(cols) != Some(w.len()) {
        return Err(Error::invalid(format!(
            "GPTQ: {} weights for a {rows}×{cols} matrix",
            w.len()
        )));
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("LUT matrix: non-finite weight"));
    }
    // Shape checks (bits, group, K % group) are LutMatrix::pack's; check them before work.
    if !(1..=4).contains(&bits) || ![32, 64, 128].contains(&group) || !cols.is_multiple_of(group) {
        return LutMatrix::quantize(w, rows, cols, bits, group);
    }
    let qmax = ((1u32 << bits) - 1) as f32;
    let groups = cols / group;
    let mut w = w.to_vec();
    let mut codes = vec![0u8; rows * cols];
    let mut scales = vec![f16::ZERO; rows * groups];
    let mut zeros = vec![f16::ZERO; rows * groups];
    let mut gcodes = vec![0u8; group];
    let u = &f.u;
    // What an error e in column j costs once the columns after it have compensated it:
    // e² / [H_F⁻¹]_jj over the remaining columns F = j.., which is e² / U_jj². The group
    // search minimizes the sum of these costs.
    let imp: Vec<f32> = (0..cols)
        .map(|j| {
            let d = u[j * cols + j];
            1.0 / (d * d)
        })
        .collect();
    let mut err = vec![0f32; rows * BLOCK];
    for b0 in (0..cols).step_by(BLOCK) {
        let b1 = (b0 + BLOCK).min(cols);
        let bw = b1 - b0;
        for j in b0..b1 {
            if j.is_multiple_of(group) {
                let g = j / group;
                for r in 0..rows {
                    let wg = &w[r * cols + j..r * cols + j + group];
                    let (s, z) =
                        quantize_group_search_weighted(wg, &imp[j..j + group], bits, &mut gcodes);
                    scales[r * groups + g] = s;
                    zeros[r * groups + g] = z;
                }
            }
            let g = j / group;
            let d = u[j * cols + j];
            let urow = &u[j * cols + j + 1..j * cols + b1];
            for r in 0..rows {
                let (s, z) = (
                    scales[r * groups + g].to_f32(),
                    zeros[r * groups + g].to_f32(),
                );
                let inv = if s != 0.0 { 1.0 / s } else { 0.0 };
                let row = &mut w[r * cols..(r + 1) * cols];
                let q = code_of(row[j], inv, z, qmax);
                codes[r * cols + j] = q as u8;
                let e = (row[j] - s * (q - z)) / d;
                err[r * BLOCK + (j - b0)] = e;
                for (x, &uv) in row[j + 1..b1].iter_mut().zip(urow) {
                    *x -= e * uv;
                }
            }
        }
        // The block's errors onto every later column: W[:, b1..] −= E · U[b0..b1, b1..].
        if b1 < cols {
            let rest = cols - b1;
            // SAFETY: A = err is rows × bw with strides (BLOCK, 1) inside its rows·BLOCK
            // elements (bw ≤ BLOCK); B = U[b0..b1, b1..] is bw × rest with strides (cols, 1),
            // its last element (b1−1)·cols + cols − 1 < cols²; C = W[:, b1..] is rows × rest
            // with strides (cols, 1), its last element (rows−1)·cols + cols − 1 < rows·cols.
            // C (w) aliases neither err nor u.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    bw,
                    rest,
                    -1.0,
                    err.as_ptr(),
                    BLOCK as isize,
                    1,
                    u.as_ptr().add(b0 * cols + b1),
                    cols as isize,
                    1,
                    1.0,
                    w.as_mut_ptr().add(b1),
                    cols as isize,
                    1,
                );
            }
        }
    }
    LutMatrix::pack(bits, group, rows, cols, &codes, &scales, &zeros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    /// ‖(W − deq(Q))·Xᵀ‖² over the rows of `x` (`n × cols`).
    fn output_error(w: &[f32], m: &LutMatrix, x: &[f32], n: usize) -> f64 {
        let (rows, cols) = (m.rows(), m.cols());
        let dq = m.dequantize();
        let mut e = 0f64;
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            for r in 0..rows {
                let d: f64 = (0..cols)
                    .map(|c| (w[r * cols + c] - dq[r * cols + c]) as f64 * xt[c] as f64)
                    .sum();
                e += d * d;
            }
        }
        e
    }

    /// A distribution of inputs with strongly correlated, unevenly scaled columns (as LLM
    /// activations are): `x = (z·M)·scale + noise` for a few latent factors `z`.
    struct Inputs {
        mix: Vec<f32>,
        scale: Vec<f32>,
        cols: usize,
    }

    const FACTORS: usize = 6;

    impl Inputs {
        fn new(rng: &mut Rng, cols: usize) -> Self {
            Inputs {
                mix: (0..FACTORS * cols).map(|_| rng.normal()).collect(),
                scale: (0..cols)
                    .map(|c| if c % 17 == 3 { 8.0 } else { 0.5 + rng.unit() })
                    .collect(),
                cols,
            }
        }

        fn draw(&self, rng: &mut Rng, n: usize) -> Vec<f32> {
            let cols = self.cols;
            let mut x = vec![0f32; n * cols];
            for t in 0..n {
                let z: Vec<f32> = (0..FACTORS).map(|_| rng.normal()).collect();
                for c in 0..cols {
                    let v: f32 = (0..FACTORS)
                        .map(|i| z[i] * self.mix[i * cols + c])
                        .sum::<f32>()
                        * 0.4
                        + 0.3 * rng.normal();
                    x[t * cols + c] = v * self.scale[c];
                }
            }
            x
        }
    }

    #[test]
    fn hessian_accumulates_xtx() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for &(k, n, threads) in &[
            (5usize, 3usize, 1usize),
            (70, 9, 2),
            (130, 4, 3),
            (200, 7, 2),
        ] {
            let x: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
            let mut h = Hessian::new(k);
            h.add(&x[..(n / 2) * k], n / 2, threads);
            h.add(&x[(n / 2) * k..], n - n / 2, threads);
            assert_eq!(h.tokens(), n);
            for i in 0..k {
                for j in 0..k {
                    let got = h.h[i * k + j];
                    let want: f32 = (0..n).map(|t| x[t * k + i] * x[t * k + j]).sum();
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{i},{j}");
                }
            }
        }
    }

    #[test]
    fn factor_inverts_the_damped_hessian() {
        let mut rng = Rng(42);
        let (k, n) = (40, 200);
        let x = Inputs::new(&mut rng, k).draw(&mut rng, n);
        let mut h = Hessian::new(k);
        h.add(&x, n, 1);
        let f = h.factor().unwrap();
        // Uᵀ U · H_damped = I.
        let mut a = h.mean_f64();
        let md = (0..k).map(|i| a[i * k + i]).sum::<f64>() / k as f64;
        for i in 0..k {
            a[i * k + i] += DAMP * md;
        }
        for i in 0..k {
            for j in 0..k {
                assert!(j >= i || f.u[i * k + j] == 0.0, "U not upper");
                let mut v = 0f64;
                for p in 0..k {
                    // (UᵀU)[i][p]
                    let utu: f64 = (0..k)
                        .map(|q| f.u[q * k + i] as f64 * f.u[q * k + p] as f64)
                        .sum();
                    v += utu * a[p * k + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-3, "({i},{j}): {v}");
            }
        }
    }

    #[test]
    fn diagonal_hessian_gives_the_search_codes_exactly() {
        let mut rng = Rng(7);
        let (rows, cols) = (6, 192);
        let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.heavy()).collect();
        let mut h = Hessian::new(cols);
        // One token per column: H diagonal with uneven entries.
        let mut x = vec![0f32; cols * cols];
        for c in 0..cols {
            x[c * cols + c] = 1.0 + (c % 5) as f32;
        }
        h.add(&x, cols, 2);
        let f = h.factor().unwrap();
        // No error moves: each group is the weighted search's, weights 1/U_jj² (∝ H_jj).
        let imp: Vec<f32> = (0..cols)
            .map(|j| 1.0 / (f.u[j * cols + j] * f.u[j * cols + j]))
            .collect();
        for bits in 1..=4 {
            for group in [32, 64] {
                let g = quantize_gptq(&w, rows, cols, bits, group, &f).unwrap();
                let mut codes = vec![0u8; rows * cols];
                let (mut sc, mut zs) = (Vec::new(), Vec::new());
                for r in 0..rows {
                    for c0 in (0..cols).step_by(group) {
                        let i = r * cols + c0;
                        let (s, z) = crate::lut::quantize::quantize_group_search_weighted(
                            &w[i..i + group],
                            &imp[c0..c0 + group],
                            bits,
                            &mut codes[i..i + group],
                        );
                        sc.push(s);
                        zs.push(z);
                    }
                }
                let want = LutMatrix::pack(bits, group, rows, cols, &codes, &sc, &zs).unwrap();
                assert_eq!(g.to_bytes(), want.to_bytes(), "bits {bits} group {group}");
            }
        }
    }

    #[test]
    fn gptq_lowers_the_output_error_on_correlated_inputs() {
        let mut rng = Rng(0xdead_beef);
        let (rows, cols) = (24, 256);
        let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.heavy()).collect();
        let dist = Inputs::new(&mut rng, cols);
        let calib = dist.draw(&mut rng, 512);
        let mut h = Hessian::new(cols);
        h.add(&calib, 512, 2);
        let f = h.factor().unwrap();
        // Held-out inputs: new draws from the same distribution.
        let test = dist.draw(&mut rng, 256);
        for bits in [2, 3] {
            let g = quantize_gptq(&w, rows, cols, bits, 32, &f).unwrap();
            let s = LutMatrix::quantize(&w, rows, cols, bits, 32).unwrap();
            let (eg, es) = (
                output_error(&w, &g, &calib, 512),
                output_error(&w, &s, &calib, 512),
            );
            assert!(eg < 0.8 * es, "bits {bits}: gptq {eg} vs search {es}");
            let (tg, ts) = (
                output_error(&w, &g, &test, 256),
                output_error(&w, &s, &test, 256),
            );
            assert!(
                tg < 0.9 * ts,
                "bits {bits} held out: gptq {tg} vs search {ts}"
            );
        }
    }

    #[test]
    fn bad_calibration_is_an_error() {
        let h = Hessian::new(8);
        assert!(h.factor().is_err()); // no tokens
        let mut z = Hessian::new(8);
        z.add(&[0.0; 16], 2, 1);
        assert!(z.factor().is_err()); // all zero
        let mut ok = Hessian::new(8);
        ok.add(&[1.0; 16], 2, 1);
        let f = ok.factor().unwrap();
        let w = vec![0.1f32; 4 * 64];
        assert!(quantize_gptq(&w, 4, 64, 2, 32, &f).is_err()); // width mismatch
    }
}
