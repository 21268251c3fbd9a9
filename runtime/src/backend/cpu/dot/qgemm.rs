//! Prefill GEMM for the ggml block types of llama.cpp's K-quant mixes (Q4_K, Q5_K, Q6_K
//! against Q8_K activations, Q5_0 and Q8_0 against Q8_0): tiles of 2 weight rows × 4 tokens
//! (`qgemm_x86`), each weight block unpacked once per tile, the per-block integer sums of
//! the tile reduced together and the float update vectorized over the tile. Every result
//! equals the scalar reference dot ([`super::dot_ref`]) bit for bit, so the token count
//! that switches between this and the row kernels changes no result.
//!
//! ```text
//!   weights (rows × blocks)      activations (tokens × blocks)
//!   r   [blk0][blk1]...   ×      t..t+4 [blk0][blk1]...     → out[t..t+4][r..r+2]
//!   r+1 [blk0][blk1]...          (tokens in blocks of 64 for L2, row pairs inside)
//! ```

use crate::backend::cpu::rows::WeightView;
use crate::format::GgmlType;

/// From this many tokens on, [`super::super::matmul::matmul_many`] uses the GEMM for the
/// types of [`has_gemm`].
pub const QGEMM_MIN_TOKENS: usize = 2;

/// Tokens per L2 block.
const TOKEN_BLOCK: usize = 64;

/// Whether this machine has a GEMM tile for weights of type `ty`.
pub fn has_gemm(ty: GgmlType) -> bool {
    super::has_avx2()
        && matches!(
            ty,
            GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K
        )
}

/// One tile: lane `4r + t` = `w[r] · a[t]`; `vnni`: the AVX-512 VNNI tile where there is
/// one.
///
/// # Safety
/// [`has_gemm`]`(ty)` holds, and AVX-512 VNNI/VL are available if `vnni`.
#[cfg(target_arch = "x86_64")]
unsafe fn tile(ty: GgmlType, w: [&[u8]; 2], a: [&[u8]; 4], vnni: bool) -> [f32; 8] {
    use super::qgemm_x86 as k;
    // SAFETY: AVX2, FMA and F16C were detected (has_gemm), VNNI if `vnni` (caller); the
    // tiles check the lengths.
    unsafe {
        match ty {
            GgmlType::Q5_0 if vnni => super::qgemm_vnni::q5_0_tile::<false>(w, a),
            GgmlType::Q8_0 if vnni => super::qgemm_vnni::q5_0_tile::<true>(w, a),
            GgmlType::Q5_0 => k::q5_0_tile::<false>(w, a),
            GgmlType::Q8_0 => k::q5_0_tile::<true>(w, a),
            GgmlType::Q4K => k::q4_k_tile::<false>(w, a),
            GgmlType::Q5K => k::q4_k_tile::<true>(w, a),
            GgmlType::Q6K => k::q6_k_tile(w, a),
            _ => [f32::NAN; 8],
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(ty: GgmlType, w: [&[u8]; 2], a: [&[u8]; 4], _vnni: bool) -> [f32; 8] {
    std::array::from_fn(|k| super::dot_ref(ty, w[k / 4], a[k % 4]))
}

/// `out[t][r0 + i] = w[i] · a[t]` for the rows of `w` (rows `r0..r0 + w.rows` of a matrix
/// of `rows_total` rows) and `n_tokens` activation rows of `act_row_bytes` each, on the
/// calling thread.
///
/// # Safety
/// [`has_gemm`]`(w.ty)` holds; `out` points to `n_tokens × rows_total` writable f32s,
/// `r0 + w.rows <= rows_total`, and no other thread writes rows `r0..r0 + w.rows` meanwhile.
pub unsafe fn gemm_rows_raw(
    w: &WeightView,
    r0: usize,
    rows_total: usize,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
    out: *mut f32,
) {
    let vnni = crate::backend::cpu::features::cpu().avx512vnni;
    // SAFETY: the caller's contract; VNNI only where detected.
    unsafe { rows_with(w, r0, rows_total, acts, act_row_bytes, n_tokens, out, vnni) }
}

/// [`gemm_rows_raw`] with the tile set chosen (tests run both).
///
/// # Safety
/// As [`gemm_rows_raw`], and AVX-512 VNNI/VL are available if `vnni`.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_with(
    w: &WeightView,
    r0: usize,
    rows_total: usize,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
    out: *mut f32,
    vnni: bool,
) {
    assert!(
        acts.len() >= n_tokens * act_row_bytes && r0 + w.rows <= rows_total,
        "gemm_rows_raw: activations or rows out of range"
    );
    let rb = w.row_bytes();
    assert!(
        w.data.len() >= rb * w.rows,
        "gemm_rows_raw: weights too small"
    );
    let wrow = |r: usize| &w.data[r * rb..(r + 1) * rb];
    let act = |t: usize| &acts[t * act_row_bytes..(t + 1) * act_row_bytes];
    let mut tb = 0;
    while tb < n_tokens {
        let te = (tb + TOKEN_BLOCK).min(n_tokens);
        let mut r = 0;
        while r < w.rows {
            let nr = (w.rows - r).min(2);
            // A missing second row or token repeats the last one; its lanes are dropped.
            let ws = [wrow(r), wrow(r + nr - 1)];
            let mut t = tb;
            while t < te {
                let nt = (te - t).min(4);
                let a = std::array::from_fn(|k| act(t + k.min(nt - 1)));
                // SAFETY: has_gemm(w.ty), VNNI if `vnni` (caller's contract).
                let v = unsafe { tile(w.ty, ws, a, vnni) };
                for i in 0..nr {
                    for k in 0..nt {
                        // SAFETY: t + k < n_tokens and r0 + r + i < rows_total.
                        unsafe { *out.add((t + k) * rows_total + r0 + r + i) = v[4 * i + k] };
                    }
                }
                t += nt;
            }
            r += nr;
        }
        tb = te;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::ggml::{quantize_row, ActFormat};

    fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// Random but valid blocks: random bytes with every f16 scale field set to a finite,
    /// moderate value.
    fn random_rows(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let (bl, bb) = ty.block_geometry();
        let mut bytes: Vec<u8> = rand_vec(rows * cols / bl * bb, seed, 1.0)
            .iter()
            .map(|&x| ((x + 1.0) * 127.9) as u8)
            .collect();
        let f16_fields: &[usize] = match ty {
            GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
            GgmlType::Q6K => &[208],
            _ => &[],
        };
        for (k, b) in bytes.chunks_exact_mut(bb).enumerate() {
            if ty == GgmlType::Q8_0 {
                // llama.cpp's Q8_0 codes are -127..=127 (the kernels' sign trick needs it).
                for c in &mut b[2..] {
                    if *c == 0x80 {
                        *c = 0x81;
                    }
                }
            }
            for &at in f16_fields {
                let v = half::f16::from_f32(0.001 + 0.01 * ((k * 7 + at) % 13) as f32);
                b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        bytes
    }

    /// Every tile type against the scalar reference dot, bit for bit: odd row counts,
    /// 1..=17 tokens, several super-block counts.
    #[test]
    fn gemm_equals_the_reference_dot() {
        for ty in [
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            if !has_gemm(ty) {
                continue;
            }
            for (si, &(rows, cols)) in [(1usize, 256usize), (3, 512), (7, 768), (5, 256)]
                .iter()
                .enumerate()
            {
                let wd = random_rows(ty, rows, cols, 11 + si as u64);
                let w = WeightView {
                    ty,
                    rows,
                    cols,
                    data: &wd,
                };
                let fmt = ActFormat::for_weights(ty);
                let arb = fmt.row_bytes(cols);
                for n in 1..=17usize {
                    let x = rand_vec(n * cols, 40 + n as u64, 3.0);
                    let mut acts = vec![0u8; n * arb];
                    for (xr, ar) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(arb)) {
                        quantize_row(fmt, xr, ar);
                    }
                    for vnni in [false, crate::backend::cpu::features::cpu().avx512vnni] {
                        let mut out = vec![f32::NAN; n * rows];
                        // SAFETY: has_gemm(ty); VNNI only where detected; out holds n × rows.
                        unsafe { rows_with(&w, 0, rows, &acts, arb, n, out.as_mut_ptr(), vnni) };
                        for r in 0..rows {
                            let wr = &wd[r * w.row_bytes()..(r + 1) * w.row_bytes()];
                            for t in 0..n {
                                let want =
                                    super::super::dot_ref(ty, wr, &acts[t * arb..(t + 1) * arb]);
                                let got = out[t * rows + r];
                                assert!(want.is_finite());
                                assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{ty:?} {rows}×{cols} n {n} row {r} token {t} (vnni {vnni}): {got} vs {want}"
                            );
                            }
                        }
                    }
                }
            }
        }
    }
}
