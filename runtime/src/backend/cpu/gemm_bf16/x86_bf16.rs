//! AVX-512 BF16 GEMM tile: `R` BF16 weight rows × `T` BF16 activation rows, `vdpbf16ps`
//! over 32 values per step into one 16-lane accumulator per (row, token), a masked step
//! for the last `cols % 32` values, then a fixed horizontal sum. [`super::ref_avx512bf16`]
//! is the scalar model of each result.

use std::arch::x86_64::*;

/// The horizontal sum modelled by [`super::ref_avx512bf16`]: halves, quarters, pairs.
#[inline]
#[target_feature(enable = "avx512f")]
fn hsum16(v: __m512) -> f32 {
    // Lanes 0..8 of `h` are lanes 8..16 of `v`.
    let h = _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v);
    let s8 = _mm512_castps512_ps256(_mm512_add_ps(v, h));
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
}

/// `res[i][k] = Σ_j w_i[j]·x_k[j]` for `R` weight rows and `T` activation rows of `cols`
/// BF16 values each.
///
/// # Safety
/// AVX-512 F, BW and BF16 are available; each pointer has `cols` values (2 bytes each)
/// readable behind it.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile<const R: usize, const T: usize>(
    w: [*const u8; 4],
    x: [*const u16; 4],
    cols: usize,
    res: &mut [[f32; 4]; 4],
) {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut i = 0;
    // SAFETY (loads): i + 32 <= cols values lie behind every pointer (caller's contract).
    while i + 32 <= cols {
        let wv: [__m512bh; R] = std::array::from_fn(|r| unsafe {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                w[r].add(2 * i) as *const __m512i
            ))
        });
        for k in 0..T {
            let xv = unsafe {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    x[k].add(i) as *const __m512i
                ))
            };
            for r in 0..R {
                acc[r][k] = _mm512_dpbf16_ps(acc[r][k], wv[r], xv);
            }
        }
        i += 32;
    }
    if i < cols {
        let m: __mmask32 = (1u32 << (cols - i)) - 1;
        // SAFETY: masked loads touch only the cols - i values left.
        let wv: [__m512bh; R] = std::array::from_fn(|r| unsafe {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(
                m,
                w[r].add(2 * i) as *const i16,
            ))
        });
        for k in 0..T {
            let xv = unsafe {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(
                    m,
                    x[k].add(i) as *const i16,
                ))
            };
            for r in 0..R {
                acc[r][k] = _mm512_dpbf16_ps(acc[r][k], wv[r], xv);
            }
        }
    }
    for r in 0..R {
        for k in 0..T {
            res[r][k] = hsum16(acc[r][k]);
        }
    }
}

/// [`tile`] for `nr` rows and `nt` tokens (each 1..=4).
///
/// # Safety
/// As [`tile`] for the first `nr` weight and `nt` activation pointers.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub unsafe fn tile_dispatch(
    w: [*const u8; 4],
    nr: usize,
    x: [*const u16; 4],
    nt: usize,
    cols: usize,
    res: &mut [[f32; 4]; 4],
) {
    macro_rules! go {
        ($($r:literal, $t:literal);*) => {
            match (nr, nt) {
                // SAFETY: the caller's contract, for R = nr and T = nt.
                $(($r, $t) => unsafe { tile::<$r, $t>(w, x, cols, res) },)*
                _ => unreachable!("tile of {nr}×{nt}"),
            }
        };
    }
    go!(4,4; 4,3; 4,2; 4,1; 3,4; 3,3; 3,2; 3,1; 2,4; 2,3; 2,2; 2,1; 1,4; 1,3; 1,2; 1,1)
}
