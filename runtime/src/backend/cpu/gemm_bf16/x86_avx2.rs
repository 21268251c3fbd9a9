//! AVX2/FMA GEMM tile: `R` BF16 weight rows (widened to f32 per step) × `T` f32
//! activation rows, each result computed in exactly the order of the AVX2 decode kernel
//! (`dot::x86::dot4_dense`): one 8-lane FMA accumulator, element `j` in lane `j % 8`, the
//! same horizontal sum, plus the scalar tail summed from 0. So the GEMM gives the decode
//! path's bits.

use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `res[i][k] = Σ_j w_i[j]·x_k[j]`.
///
/// # Safety
/// AVX2 and FMA are available; each `w` pointer has `cols` BF16 values (2 bytes each) and
/// each `x` pointer `cols` f32 readable behind it.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const T: usize>(
    w: [*const u8; 4],
    x: [*const f32; 4],
    cols: usize,
    res: &mut [[f32; 4]; 4],
) {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut i = 0;
    while i + 8 <= cols {
        // SAFETY: i + 8 <= cols values lie behind every pointer.
        let wv: [__m256; R] = std::array::from_fn(|r| unsafe {
            let h = _mm_loadu_si128(w[r].add(2 * i) as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        });
        for k in 0..T {
            // SAFETY: as above.
            let xv = unsafe { _mm256_loadu_ps(x[k].add(i)) };
            for r in 0..R {
                acc[r][k] = _mm256_fmadd_ps(wv[r], xv, acc[r][k]);
            }
        }
        i += 8;
    }
    for r in 0..R {
        for k in 0..T {
            let mut s = 0f32;
            for j in i..cols {
                // SAFETY: j < cols.
                let (wb, xv) = unsafe {
                    (
                        std::ptr::read_unaligned(w[r].add(2 * j) as *const u16),
                        *x[k].add(j),
                    )
                };
                s += f32::from_bits(u32::from(wb) << 16) * xv;
            }
            res[r][k] = hsum(acc[r][k]) + s;
        }
    }
}

/// [`tile`] for `nr` rows and `nt` tokens (each 1..=4).
///
/// # Safety
/// As [`tile`] for the first `nr` weight and `nt` activation pointers.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_dispatch(
    w: [*const u8; 4],
    nr: usize,
    x: [*const f32; 4],
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
