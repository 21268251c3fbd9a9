//! BF16 weights × many activation rows (prefill) as a register-blocked GEMM.
//!
//! The decode path ([`super::matmul`]) applies each BF16 weight row to the tokens four at a
//! time; in prefill that re-reads every activation row once per weight row and keeps the
//! FMA units waiting on loads. Here a tile of `R` weight rows × `T` tokens is multiplied in
//! registers (`R·T` accumulators), so each loaded vector feeds `T` (weights) or `R`
//! (activations) multiply-adds. Two arithmetics, chosen once per process:
//!
//! - [`Bf16Kernel::Avx512Bf16`] (x86 with AVX-512 BF16): activations are rounded to BF16
//!   (ties to even, [`crate::dfloat::f32_to_bf16_rne`]) and multiplied with `vdpbf16ps`, 32
//!   values per instruction into 16 f32 lanes (lane `l` takes values `32c + 2l + 1`, then
//!   `32c + 2l`; denormals flushed), then one fixed horizontal sum ([`ref_avx512bf16`] is
//!   the scalar model of exactly that). Rounding the activations changes results by about
//!   BF16's precision relative to `Σ|w·x|` (llama.cpp does the same for BF16 weights).
//! - [`Bf16Kernel::Avx2F32`] / [`Bf16Kernel::NeonF32`]: weights widened to f32 per tile,
//!   f32 activations, each result in exactly the order of the decode row kernel
//!   (`dot::dot4`), so the GEMM gives the decode path's bits.
//!
//! In both, a result depends only on its weight row and its activation row, never on the
//! tile it was computed in: the df12 and DFloat11 decoders feed their decoded row blocks
//! through [`dense_rows_raw`] and get bitwise the BF16 matrix's results.
//!
//! ```text
//!            cols (K) ──────────────▶              tokens (n)
//!  W rows r..r+R   [bf16 bf16 ...]        X rows t..t+T  [x x x ...]   (BF16 or f32)
//!        │  R·T accumulators, one per (row, token), each a vector over K
//!        ▼
//!  out[t][r] = hsum(acc[r][t])       (tokens outer in blocks of TOKEN_BLOCK, for L2)
//! ```

use crate::backend::cpu::rows::{matmul_rows_raw, WeightView};
use crate::format::GgmlType;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_bf16;

/// From this many tokens on, BF16-class matmuls go through [`Bf16Kernel::best`]. Below it
/// (decode) they go through an f32 kernel where the CPU has one ([`Bf16Kernel::for_tokens`]):
/// its tile of 4 rows × 1 token keeps 4 FMA chains busy where the row kernel has one, with
/// the row kernel's bits, and the activations stay f32 (no BF16 rounding at decode).
pub const GEMM_MIN_TOKENS: usize = 2;

/// Tokens per L2 block: each weight tile is applied to this many activation rows before
/// the next tile is loaded.
const TOKEN_BLOCK: usize = 64;

/// The GEMM arithmetic of this machine (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// `vdpbf16ps` on BF16-rounded activations.
    Avx512Bf16,
    /// f32 FMAs in the AVX2 decode kernel's order.
    Avx2F32,
    /// f32 FMAs in the NEON decode kernel's order.
    NeonF32,
}

impl Bf16Kernel {
    /// The kernel this process uses, `None` when there is no SIMD (the row kernels then).
    pub fn best() -> Option<Self> {
        let f = super::features::cpu();
        if f.avx512bf16 {
            Some(Bf16Kernel::Avx512Bf16)
        } else if f.avx2 {
            Some(Bf16Kernel::Avx2F32)
        } else if f.neon {
            Some(Bf16Kernel::NeonF32)
        } else {
            None
        }
    }

    /// The kernel for a pass of `n_tokens`: [`Self::best`] from [`GEMM_MIN_TOKENS`] on;
    /// below, only an f32 kernel (the decode row kernel's bits, without rounding the
    /// activations to BF16), `None` where there is none (the row kernels then).
    pub fn for_tokens(n_tokens: usize) -> Option<Self> {
        let best = Self::best()?;
        if n_tokens >= GEMM_MIN_TOKENS || !best.wants_bf16_acts() {
            Some(best)
        } else {
            [Bf16Kernel::Avx2F32, Bf16Kernel::NeonF32]
                .into_iter()
                .find(|k| k.available())
        }
    }

    /// Whether this machine can run `self` (tests run every available one).
    pub fn available(self) -> bool {
        let f = super::features::cpu();
        match self {
            Bf16Kernel::Avx512Bf16 => f.avx512bf16,
            Bf16Kernel::Avx2F32 => f.avx2,
            Bf16Kernel::NeonF32 => f.neon,
        }
    }

    /// Rows × tokens of a full tile for a pass of `n_tokens` (as many accumulators as the
    /// registers hold; one token: 4 rows, four independent FMA chains).
    fn tile_shape(self, n_tokens: usize) -> (usize, usize) {
        if n_tokens == 1 {
            return (4, 1);
        }
        match self {
            Bf16Kernel::Avx512Bf16 => (4, 4),
            Bf16Kernel::Avx2F32 => (3, 4),
            Bf16Kernel::NeonF32 => (4, 2),
        }
    }

    /// Whether this kernel reads BF16-rounded activations.
    fn wants_bf16_acts(self) -> bool {
        self == Bf16Kernel::Avx512Bf16
    }
}

/// F32 activation rows prepared for the BF16-class matmuls of one pass: the GEMM (with a
/// BF16 copy of the rows for [`Bf16Kernel::Avx512Bf16`]) or, for few tokens or no SIMD,
/// the decode row kernels on the f32 rows as they are.
pub struct DenseActs<'a> {
    /// `n_tokens` rows of `row_bytes` bytes, f32 values.
    pub f32_rows: &'a [u8],
    /// Bytes per activation row (at least `4 · cols`).
    pub row_bytes: usize,
    /// Number of rows (tokens).
    pub n_tokens: usize,
    /// Values used per row.
    pub cols: usize,
    kernel: Option<Bf16Kernel>,
    /// `n_tokens × cols` BF16 bits (RNE) when the kernel wants them.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    bf16: Vec<u16>,
}

impl<'a> DenseActs<'a> {
    /// Prepare with the process's kernel for `n_tokens` ([`Bf16Kernel::for_tokens`]).
    /// `None` if the rows are too short for `cols` values.
    pub fn prepare(
        f32_rows: &'a [u8],
        row_bytes: usize,
        n_tokens: usize,
        cols: usize,
    ) -> Option<Self> {
        let k = Bf16Kernel::for_tokens(n_tokens);
        Self::with_kernel(k, f32_rows, row_bytes, n_tokens, cols)
    }

    /// Prepare for a chosen kernel (`None`: the row kernels), e.g. to compare them.
    /// `None` if the rows are too short or the kernel is not available here.
    pub fn with_kernel(
        kernel: Option<Bf16Kernel>,
        f32_rows: &'a [u8],
        row_bytes: usize,
        n_tokens: usize,
        cols: usize,
    ) -> Option<Self> {
        if row_bytes < 4 * cols
            || f32_rows.len() < n_tokens * row_bytes
            || kernel.is_some_and(|k| !k.available())
        {
            return None;
        }
        let mut bf16 = Vec::new();
        if kernel.is_some_and(Bf16Kernel::wants_bf16_acts) {
            bf16.reserve_exact(n_tokens * cols);
            for t in 0..n_tokens {
                let row: &[f32] =
                    bytemuck::cast_slice(&f32_rows[t * row_bytes..t * row_bytes + 4 * cols]);
                bf16.extend(row.iter().map(|&x| crate::dfloat::f32_to_bf16_rne(x)));
            }
        }
        Some(DenseActs {
            f32_rows,
            row_bytes,
            n_tokens,
            cols,
            kernel,
            bf16,
        })
    }

    /// The GEMM kernel these activations go through, `None` for the row kernels.
    pub fn kernel(&self) -> Option<Bf16Kernel> {
        self.kernel
    }

    fn f32_row(&self, t: usize) -> &[f32] {
        bytemuck::cast_slice(&self.f32_rows[t * self.row_bytes..t * self.row_bytes + 4 * self.cols])
    }
}

/// `out[t][r0 + i] = w[i] · x[t]` for the rows of the BF16 matrix slice `w` (rows
/// `r0..r0 + w.rows` of a matrix of `rows_total` rows) and every prepared token, on the
/// calling thread: the GEMM or the row kernels, as `a` was prepared. The result of a row
/// does not depend on which other rows `w` holds.
///
/// # Safety
/// `out` points to `a.n_tokens × rows_total` writable f32s, `r0 + w.rows <= rows_total`,
/// and no other thread writes rows `r0..r0 + w.rows` of it meanwhile.
pub unsafe fn dense_rows_raw(
    w: &WeightView,
    r0: usize,
    rows_total: usize,
    a: &DenseActs,
    out: *mut f32,
) {
    assert!(
        r0 + w.rows <= rows_total && w.cols == a.cols,
        "dense_rows_raw: rows or columns out of range"
    );
    let Some(kernel) = a.kernel.filter(|_| w.ty == GgmlType::BF16) else {
        // SAFETY: the caller's contract is matmul_rows_raw's.
        unsafe { matmul_rows_raw(w, r0, rows_total, a.f32_rows, a.row_bytes, a.n_tokens, out) };
        return;
    };
    let cols = w.cols;
    assert!(
        w.data.len() >= 2 * cols * w.rows,
        "dense_rows_raw: weights too small"
    );
    let n = a.n_tokens;
    let (mr, mt) = kernel.tile_shape(n);
    let mut tb = 0;
    while tb < n {
        let te = (tb + TOKEN_BLOCK).min(n);
        let mut r = 0;
        while r < w.rows {
            let nr = (w.rows - r).min(mr);
            let wr = &w.data[2 * cols * r..2 * cols * (r + nr)];
            let mut t = tb;
            while t < te {
                let nt = (te - t).min(mt);
                let mut res = [[0f32; 4]; 4];
                // SAFETY: the kernel is available (checked when `a` was prepared); `wr`
                // holds nr rows of cols values and tokens t..t + nt are prepared rows.
                unsafe { tile(kernel, wr, nr, a, t, nt, &mut res) };
                for (i, row) in res.iter().enumerate().take(nr) {
                    for (k, &v) in row.iter().enumerate().take(nt) {
                        // SAFETY: t + k < n and r0 + r + i < rows_total (caller's contract).
                        unsafe { *out.add((t + k) * rows_total + r0 + r + i) = v };
                    }
                }
                t += nt;
            }
            r += nr;
        }
        tb = te;
    }
}

/// One tile: `res[i][k] = row i of wr · token t + k`, `nr, nt <= 4`.
///
/// # Safety
/// `kernel` is available; `wr` holds `nr` rows of `a.cols` BF16 values; `t + nt <= a.n_tokens`.
unsafe fn tile(
    kernel: Bf16Kernel,
    wr: &[u8],
    nr: usize,
    a: &DenseActs,
    t: usize,
    nt: usize,
    res: &mut [[f32; 4]; 4],
) {
    let c = a.cols;
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_variables)
    )]
    let wp: [*const u8; 4] = std::array::from_fn(|i| wr[2 * c * i.min(nr - 1)..].as_ptr());
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx512Bf16 => {
            let xp: [*const u16; 4] =
                std::array::from_fn(|k| a.bf16[(t + k.min(nt - 1)) * c..].as_ptr());
            // SAFETY: AVX-512 BF16 available; every pointer has `c` values behind it.
            unsafe { x86_bf16::tile_dispatch(wp, nr, xp, nt, c, res) }
        }
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx2F32 => {
            let xp: [*const f32; 4] =
                std::array::from_fn(|k| a.f32_row(t + k.min(nt - 1)).as_ptr());
            // SAFETY: AVX2/FMA available; every pointer has `c` values behind it.
            unsafe { x86_avx2::tile_dispatch(wp, nr, xp, nt, c, res) }
        }
        #[cfg(target_arch = "aarch64")]
        Bf16Kernel::NeonF32 => {
            let xp: [*const f32; 4] =
                std::array::from_fn(|k| a.f32_row(t + k.min(nt - 1)).as_ptr());
            // SAFETY: NEON is baseline; every pointer has `c` values behind it.
            unsafe { neon::tile_dispatch(wp, nr, xp, nt, c, res) }
        }
        #[allow(unreachable_patterns)]
        _ => {
            // Not available on this architecture (`available` said no).
            for (i, row) in res.iter_mut().enumerate().take(nr) {
                let w = &wr[2 * c * i..2 * c * (i + 1)];
                for (k, v) in row.iter_mut().enumerate().take(nt) {
                    *v = crate::backend::cpu::dot::dot_dense_ref(
                        GgmlType::BF16,
                        w,
                        a.f32_row(t + k),
                    );
                }
            }
        }
    }
}

/// BF16 value `i` of a little-endian row as f32.
#[inline]
fn bf16_at(w: &[u8], i: usize) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])) << 16)
}

/// `x` with a subnormal flushed to a zero of the same sign (`vdpbf16ps`'s DAZ/FTZ).
#[inline]
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// Scalar model of [`Bf16Kernel::Avx512Bf16`] for one weight row (`cols` BF16 values) and
/// one BF16 activation row: 16 lanes, lane `l` adds the products of values `32c + 2l + 1`
/// then `32c + 2l` (each rounded add flushed to zero if subnormal, inputs too), then the
/// horizontal sum `s8[i] = a[i] + a[i+8]; s4[i] = s8[i] + s8[i+4]; s2[i] = s4[i] + s4[i+2];
/// s2[0] + s2[1]`.
pub fn ref_avx512bf16(w: &[u8], x: &[u16]) -> f32 {
    let cols = x.len().min(w.len() / 2);
    let mut lanes = [0f32; 16];
    let mut c = 0;
    while c < cols {
        for (l, acc) in lanes.iter_mut().enumerate() {
            for j in [2 * l + 1, 2 * l] {
                let i = c + j;
                // Past the row's end the kernel's masked loads give zeros: `acc + 0`.
                let p = if i < cols {
                    let wv = ftz(bf16_at(w, i));
                    let xv = ftz(f32::from_bits(u32::from(x[i]) << 16));
                    ftz(wv * xv)
                } else {
                    0.0
                };
                *acc = ftz(*acc + p);
            }
        }
        c += 32;
    }
    let s8: [f32; 8] = std::array::from_fn(|i| lanes[i] + lanes[i + 8]);
    let s4: [f32; 4] = std::array::from_fn(|i| s8[i] + s8[i + 4]);
    let s2: [f32; 2] = std::array::from_fn(|i| s4[i] + s4[i + 2]);
    s2[0] + s2[1]
}

/// Scalar model of [`Bf16Kernel::Avx2F32`] (and of the AVX2 decode kernel): 8 lanes of
/// fused multiply-adds over whole groups of 8, the sum `t[i] = a[i] + a[i+4]`,
/// `(t0 + t2) + (t1 + t3)`, plus the tail `j ≥ 8·⌊cols/8⌋` summed from 0.
pub fn ref_avx2_order(w: &[u8], x: &[f32]) -> f32 {
    let cols = x.len().min(w.len() / 2);
    let mut lanes = [0f32; 8];
    let full = cols / 8 * 8;
    for j in 0..full {
        lanes[j % 8] = bf16_at(w, j).mul_add(x[j], lanes[j % 8]);
    }
    let t: [f32; 4] = std::array::from_fn(|i| lanes[i] + lanes[i + 4]);
    let h = (t[0] + t[2]) + (t[1] + t[3]);
    let mut s = 0f32;
    for (j, &xv) in x.iter().enumerate().take(cols).skip(full) {
        s += bf16_at(w, j) * xv;
    }
    h + s
}
