//! A randomized Hadamard rotation of attention heads: `x ↦ H·D·x / sqrt(n)`, with `H` the
//! Walsh–Hadamard matrix of order `n` (a power of two) and `D` a fixed diagonal of ±1.
//!
//! The map is orthogonal, so rotating both queries and keys leaves every score `q·k`
//! unchanged, while an outlier channel of the keys is spread evenly over all channels
//! before quantization (QuaRot, llama.cpp's rotated KV). The signs break the structure of
//! plain `H` (which would map a constant vector onto a single channel).

/// Signs of `D`, one per channel, from a fixed xorshift sequence (the same for every run).
pub fn signs(n: usize) -> Vec<f32> {
    let mut s = 0x2545F4914F6CDD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if s >> 63 == 0 {
                1.0
            } else {
                -1.0
            }
        })
        .collect()
}

/// Rotate one head in place: `x ← H·(signs ⊙ x) / sqrt(n)` (fast transform, n·log2 n adds).
/// `x.len()` must be a power of two equal to `signs.len()`.
pub fn rotate(x: &mut [f32], signs: &[f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two() && signs.len() == n);
    for (v, s) in x.iter_mut().zip(signs) {
        *v *= s;
    }
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let norm = 1.0 / (n as f32).sqrt();
    for v in x.iter_mut() {
        *v *= norm;
    }
}

/// Rotate every head (`head_dim` values each) of a row.
pub fn rotate_heads(row: &mut [f32], signs: &[f32]) {
    for head in row.chunks_exact_mut(signs.len()) {
        rotate(head, signs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_and_spreads_an_outlier() {
        for n in [1usize, 2, 8, 64, 128] {
            let s = signs(n);
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 17 % 7) as f32 - 3.0) / 2.0).collect();
            let (mut ra, mut rb) = (a.clone(), b.clone());
            rotate(&mut ra, &s);
            rotate(&mut rb, &s);
            let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
            assert!(
                (dot(&a, &b) - dot(&ra, &rb)).abs() < 1e-4 * n as f32,
                "n={n}"
            );
            assert!(
                (dot(&a, &a) - dot(&ra, &ra)).abs() < 1e-4 * n as f32,
                "n={n}"
            );
        }
        // A single spike becomes ±1/sqrt(n) everywhere.
        let n = 64;
        let mut x = vec![0f32; n];
        x[9] = 8.0;
        rotate(&mut x, &signs(n));
        assert!(x.iter().all(|v| (v.abs() - 1.0).abs() < 1e-6));
    }

    #[test]
    fn applying_the_transpose_undoes_it() {
        // H is symmetric, so (H D)^T = D H: rotate, apply H, then the signs, gives x back.
        let n = 32;
        let s = signs(n);
        let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 3.0).collect();
        let mut y = x.clone();
        rotate(&mut y, &s);
        rotate(&mut y, &vec![1.0; n]);
        for (v, sg) in y.iter_mut().zip(&s) {
            *v *= sg;
        }
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
        assert!(s.iter().any(|&v| v < 0.0) && s.iter().any(|&v| v > 0.0));
    }
}
