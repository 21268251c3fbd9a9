//! AVX-512 VNNI kernels of the tiled int8 GEMM ([`super::tiled`]): the bit-plane
//! expansion of a chunk and the `vpdpbusd` register tile.
//!
//! Expansion: a plane's 16-byte lane holds one k-step's nibble of 32 rows (low nibbles:
//! slots 0..16, high: 16..32). Widened to one dword per slot, a nibble `n` becomes the
//! four code bytes of its columns with one multiply — `n·0x00204081` puts bit `j` at bit
//! `8j` with no carries (the four shifted copies of 4 bits do not overlap) — masked with
//! `0x01010101` and shifted by the plane index; the planes are OR-ed together.
//!
//! Tile: 16 slots (one zmm of dwords) × up to 8 tokens. Per k-step one 64-byte load of
//! codes (16 rows × 4 columns, u8) meets each token's 4 int8 activations broadcast to all
//! lanes in a `vpdpbusd` (u8 × i8, four products summed into each i32 lane); the float
//! epilogue per group is the reference's: `cvt(dot)·d`, then two FMAs.

use std::arch::x86_64::*;

use super::acts8::Acts8;
use super::tiled::{Tile, SLOT_ROW, TILE};
use crate::lut::layout::{LutMatrix, CHUNK_ROWS};

/// Expand chunk `c` of `m` into `tile` (already sized for `m`).
///
/// # Safety
/// AVX-512 F and BW and F16C must be available.
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
pub unsafe fn expand(m: &LutMatrix, c: usize, tile: &mut Tile) {
    let (bits, groups, steps, pairs) = (m.bits(), m.groups(), m.group() / 4, m.group() / 8);
    let planes = m.planes();
    assert!(
        c < m.chunks()
            && planes.len() >= m.chunks() * m.chunk_bytes()
            && tile.codes.len() >= CHUNK_ROWS * m.cols()
            && tile.scales.len() >= CHUNK_ROWS * groups
            && tile.szs.len() >= CHUNK_ROWS * groups
            && m.scales().len() >= m.chunks() * groups * CHUNK_ROWS
            && m.zeros().len() >= m.chunks() * groups * CHUNK_ROWS
    );
    let spread = _mm512_set1_epi32(0x0020_4081);
    let ones = _mm512_set1_epi32(0x0101_0101);
    let nib = _mm_set1_epi8(15);
    let base = c * m.chunk_bytes();
    let dst = tile.codes.as_mut_ptr();
    for gi in 0..groups {
        for st in 0..steps {
            let (q, lane) = (st / 2, st % 2);
            let mut acc = [_mm512_setzero_si512(); 2];
            for p in 0..bits {
                let off = base + ((gi * bits + p) * pairs + q) * 32 + lane * 16;
                // SAFETY: off + 16 <= (c + 1)·chunk_bytes <= planes.len() (asserted): the
                // layout's k-pair block of (group gi, plane p) inside chunk c.
                let x = unsafe { _mm_loadu_si128(planes.as_ptr().add(off) as *const __m128i) };
                let sh = _mm_cvtsi32_si128(p as i32);
                for (h, a) in acc.iter_mut().enumerate() {
                    let n = if h == 0 { x } else { _mm_srli_epi16::<4>(x) };
                    let n = _mm512_cvtepu8_epi32(_mm_and_si128(n, nib));
                    let codes = _mm512_and_si512(_mm512_mullo_epi32(n, spread), ones);
                    *a = _mm512_or_si512(*a, _mm512_sll_epi32(codes, sh));
                }
            }
            for (h, a) in acc.iter().enumerate() {
                // SAFETY: ((gi·steps + st)·2 + h)·64 + 64 <= groups·steps·128 = 32·cols
                // <= tile.codes.len() (asserted).
                unsafe {
                    _mm512_storeu_si512(
                        dst.add(((gi * steps + st) * 2 + h) * 64) as *mut __m512i,
                        *a,
                    )
                };
            }
        }
    }
    // Scales in slot order (a few per row and group: scalar).
    for gi in 0..groups {
        let at = (c * groups + gi) * CHUNK_ROWS;
        for (slot, &rr) in SLOT_ROW.iter().enumerate() {
            let (s, z) = (m.scales()[at + rr].to_f32(), m.zeros()[at + rr].to_f32());
            tile.scales[gi * CHUNK_ROWS + slot] = s;
            tile.szs[gi * CHUNK_ROWS + slot] = s * z;
        }
    }
}

/// `out[i][slot]` for the tokens `acts` (1 to [`TILE`]) over the expanded chunk `tile`.
///
/// # Safety
/// AVX-512 F, BW and VNNI must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn tile(m: &LutMatrix, tile: &Tile, acts: &[&Acts8], out: &mut [[f32; CHUNK_ROWS]]) {
    assert!(acts.len() <= TILE && out.len() >= acts.len());
    macro_rules! go {
        ($($n:literal)*) => {
            match acts.len() {
                $($n => {
                    let a: [&Acts8; $n] = std::array::from_fn(|i| acts[i]);
                    let o: &mut [[f32; CHUNK_ROWS]; $n] = (&mut out[..$n]).try_into().unwrap();
                    // SAFETY: the caller guarantees the features.
                    unsafe { tile_n::<$n>(m, tile, a, o) }
                })*
                _ => {}
            }
        };
    }
    go!(1 2 3 4 5 6 7 8);
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_n<const T: usize>(
    m: &LutMatrix,
    tile: &Tile,
    acts: [&Acts8; T],
    out: &mut [[f32; CHUNK_ROWS]; T],
) {
    let (groups, group, steps) = (m.groups(), m.group(), m.group() / 4);
    assert!(
        tile.codes.len() >= CHUNK_ROWS * m.cols()
            && tile.scales.len() >= CHUNK_ROWS * groups
            && tile.szs.len() >= CHUNK_ROWS * groups
            && acts.iter().all(|a| a.codes().len() >= m.cols()
                && a.scales().len() >= groups
                && a.zsums().len() >= groups)
    );
    let codes = tile.codes.as_ptr();
    let xp: [*const i8; T] = std::array::from_fn(|i| acts[i].codes().as_ptr());
    for h in 0..2 {
        let mut yacc = [_mm512_setzero_ps(); T];
        for gi in 0..groups {
            let mut dot = [_mm512_setzero_si512(); T];
            for st in 0..steps {
                // SAFETY: ((gi·steps + st)·2 + h)·64 + 64 <= 32·cols <= codes.len(); the
                // activations' 4 bytes at gi·g + 4·st + 4 <= cols <= their length (asserted).
                let w = unsafe {
                    _mm512_loadu_si512(codes.add(((gi * steps + st) * 2 + h) * 64) as *const _)
                };
                for i in 0..T {
                    let x = unsafe {
                        std::ptr::read_unaligned(xp[i].add(gi * group + 4 * st) as *const i32)
                    };
                    dot[i] = _mm512_dpbusd_epi32(dot[i], w, _mm512_set1_epi32(x));
                }
            }
            let at = gi * CHUNK_ROWS + 16 * h;
            // SAFETY: at + 16 <= 32·groups <= the scales' and szs' lengths (asserted).
            let (s, sz) = unsafe {
                (
                    _mm512_loadu_ps(tile.scales.as_ptr().add(at)),
                    _mm512_loadu_ps(tile.szs.as_ptr().add(at)),
                )
            };
            for i in 0..T {
                let f = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(dot[i]),
                    _mm512_set1_ps(acts[i].scales()[gi]),
                );
                let y = _mm512_fmadd_ps(f, s, yacc[i]);
                yacc[i] = _mm512_fnmadd_ps(sz, _mm512_set1_ps(acts[i].zsums()[gi]), y);
            }
        }
        for i in 0..T {
            // SAFETY: out[i] has 32 floats; 16h + 16 <= 32.
            unsafe { _mm512_storeu_ps(out[i].as_mut_ptr().add(16 * h), yacc[i]) };
        }
    }
}
