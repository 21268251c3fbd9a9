//! Element-wise and row-wise ops of the decoder, as pure functions over slices.
//! Their arithmetic follows ggml's CPU ops (sums of squares in f64, softmax sums in f64)
//! so the reference path agrees with llama.cpp to the last few bits.

/// `out = x / sqrt(mean(x²) + eps) * w`, one row.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &xv), &wv) in out.iter_mut().zip(x).zip(w) {
        *o = (xv * scale) * wv;
    }
}

/// Per-head RMSNorm in place (Qwen3's q_norm/k_norm): `x` holds heads of `w.len()` values.
pub fn rms_norm_heads(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    let mut tmp = [0f32; 512];
    for head in x.chunks_exact_mut(d) {
        let t = &mut tmp[..d];
        rms_norm(head, w, eps, t);
        head.copy_from_slice(t);
    }
}

/// How rotary dimensions are paired (defined with the model's description).
pub use crate::model::config::RopeStyle;

/// Cosines and sines of one position for `n_rot/2` frequencies, computed as ggml does:
/// theta_i = pos · base^(-2i/n_rot), optionally divided by a per-frequency factor.
pub fn rope_cos_sin(
    pos: f32,
    n_rot: usize,
    base: f32,
    factors: Option<&[f32]>,
    out: &mut [(f32, f32)],
) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos;
    for (i, o) in out.iter_mut().enumerate().take(n_rot / 2) {
        let t = match factors {
            Some(f) => theta / f[i],
            None => theta,
        };
        *o = (t.cos(), t.sin());
        theta *= theta_scale;
    }
}

/// Rotate every head of `x` (heads of `head_dim` values; the first `n_rot` are rotated).
pub fn rope(x: &mut [f32], head_dim: usize, n_rot: usize, cs: &[(f32, f32)], style: RopeStyle) {
    for head in x.chunks_exact_mut(head_dim) {
        match style {
            RopeStyle::Interleaved => {
                for i in 0..n_rot / 2 {
                    let (c, s) = cs[i];
                    let (a, b) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = a * c - b * s;
                    head[2 * i + 1] = a * s + b * c;
                }
            }
            RopeStyle::Neox => {
                let half = n_rot / 2;
                for i in 0..half {
                    let (c, s) = cs[i];
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a * c - b * s;
                    head[i + half] = a * s + b * c;
                }
            }
        }
    }
}

/// `gate = silu(gate) * up`, in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let v = *g;
        *g = v / (1.0 + (-v).exp()) * u;
    }
}

/// `gate = gelu(gate) · up`, GELU by its tanh approximation (as llama.cpp's `ggml_gelu`):
/// `0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³)))`.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const A: f32 = 0.044_715;
    for (g, &u) in gate.iter_mut().zip(up) {
        let v = *g;
        *g = 0.5 * v * (1.0 + (SQRT_2_OVER_PI * v * (1.0 + A * v * v)).tanh()) * u;
    }
}

/// `x += y`.
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x += b` for every row of `x` (a bias broadcast over rows of `b.len()`).
pub fn add_bias_rows(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        add_inplace(row, b);
    }
}

/// Softmax in place; returns nothing, leaves probabilities summing to 1.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let mut out = [0f32; 4];
        rms_norm(&x, &[1.0; 4], 0.0, &mut out);
        let rms: f32 = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_preserves_norm_and_position_zero_is_identity() {
        let mut cs = vec![(0f32, 0f32); 4];
        rope_cos_sin(0.0, 8, 10000.0, None, &mut cs);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.3 - 2.0).collect();
        for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
            let mut x = orig.clone();
            rope(&mut x, 8, 8, &cs, style);
            assert_eq!(x, orig);
        }
        rope_cos_sin(17.0, 8, 10000.0, None, &mut cs);
        let mut x = orig.clone();
        rope(&mut x, 8, 8, &cs, RopeStyle::Interleaved);
        for (a, b) in x.chunks(8).zip(orig.chunks(8)) {
            let na: f32 = a.iter().map(|v| v * v).sum();
            let nb: f32 = b.iter().map(|v| v * v).sum();
            assert!((na - nb).abs() < 1e-4 * nb);
        }
        // The first pair at position 17 turns by exactly 17 radians.
        let (c, s) = (17f32.cos(), 17f32.sin());
        assert!((x[0] - (orig[0] * c - orig[1] * s)).abs() < 1e-5);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, -1e9];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }
}
