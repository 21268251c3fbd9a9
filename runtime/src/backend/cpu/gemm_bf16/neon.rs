//! NEON GEMM tile: `R` BF16 weight rows (widened to f32 per step) × `T` f32 activation
//! rows, each result in exactly the order of the NEON decode kernel (`dot::neon`'s
//! `dot_dense_lanes`: 8 lanes, multiply then add, the tail into lane `j % 8`, lanes summed
//! in order), so the GEMM gives the decode path's bits.

use std::arch::aarch64::*;

type Acc = (float32x4_t, float32x4_t);

/// `res[i][k] = Σ_j w_i[j]·x_k[j]`.
///
/// # Safety
/// Each `w` pointer has `cols` BF16 values (2 bytes each) and each `x` pointer `cols` f32
/// readable behind it.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize, const T: usize>(
    w: [*const u8; 4],
    x: [*const f32; 4],
    cols: usize,
    res: &mut [[f32; 4]; 4],
) {
    let z = vdupq_n_f32(0.0);
    let mut acc: [[Acc; T]; R] = [[(z, z); T]; R];
    let mut i = 0;
    while i + 8 <= cols {
        // SAFETY: i + 8 <= cols values lie behind every pointer; bf16 → f32 is a shift.
        let wv: [Acc; R] = std::array::from_fn(|r| unsafe {
            let v = vld1q_u16(w[r].add(2 * i) as *const u16);
            (
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(v))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(v)),
            )
        });
        for k in 0..T {
            // SAFETY: as above.
            let (x0, x1) = unsafe { (vld1q_f32(x[k].add(i)), vld1q_f32(x[k].add(i + 4))) };
            for r in 0..R {
                let a = &mut acc[r][k];
                a.0 = vaddq_f32(a.0, vmulq_f32(wv[r].0, x0));
                a.1 = vaddq_f32(a.1, vmulq_f32(wv[r].1, x1));
            }
        }
        i += 8;
    }
    for r in 0..R {
        for k in 0..T {
            let mut l = [0f32; 8];
            // SAFETY: `l` has 8 floats.
            unsafe {
                vst1q_f32(l.as_mut_ptr(), acc[r][k].0);
                vst1q_f32(l.as_mut_ptr().add(4), acc[r][k].1);
            }
            for j in i..cols {
                // SAFETY: j < cols.
                let (wb, xv) = unsafe {
                    (
                        std::ptr::read_unaligned(w[r].add(2 * j) as *const u16),
                        *x[k].add(j),
                    )
                };
                l[j % 8] += f32::from_bits(u32::from(wb) << 16) * xv;
            }
            res[r][k] = l.iter().sum();
        }
    }
}

/// [`tile`] for `nr` rows and `nt` tokens (each 1..=4).
///
/// # Safety
/// As [`tile`] for the first `nr` weight and `nt` activation pointers.
#[target_feature(enable = "neon")]
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
