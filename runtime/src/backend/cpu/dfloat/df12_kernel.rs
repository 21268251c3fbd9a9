//! df12 decode kernels: codes and sign|mantissa bytes to BF16 bit patterns, escapes left
//! with exponent `table[15] = 0` (the caller patches them). Pure functions over slices.
//!
//! Every kernel splits the exponent table into two byte tables, `hi[c] = e >> 1` and
//! `lo[c] = (e & 1) << 7`, so a value is two shuffles and two ors:
//! `bf16.hi = (sm & 0x80) | hi[c]`, `bf16.lo = (sm & 0x7f) | lo[c]`, then the bytes are
//! interleaved (x86 `pshufb` + `punpck`, NEON `tbl` + `st2`).

use std::ops::Range;

use crate::dfloat::df12::Df12View;
use crate::error::Result;

/// Decoding a parsed df12 tensor on the CPU: a dense kernel, then the escapes patched in.
pub trait Df12Decode {
    /// Decode values `r` into `out` (`out.len() == r.len()`), with [`Kernel::best`].
    fn decode_range(&self, r: Range<usize>, out: &mut [u16]) -> Result<()> {
        self.decode_range_with(Kernel::best(), r, out)
    }
    /// Decode values `r` with a chosen kernel (tests compare them).
    fn decode_range_with(&self, k: Kernel, r: Range<usize>, out: &mut [u16]) -> Result<()>;
    /// Decode every value.
    fn decode(&self) -> Result<Vec<u16>>;
}

impl Df12Decode for Df12View<'_> {
    fn decode_range_with(&self, k: Kernel, r: Range<usize>, out: &mut [u16]) -> Result<()> {
        if r.start > r.end || r.end > self.n || out.len() != r.len() {
            return Err(crate::error::Error::invalid(format!(
                "df12: value range {r:?} of {} into {} values",
                self.n,
                out.len()
            )));
        }
        decode_dense(
            k,
            &self.table,
            self.sign_mantissa,
            self.codes,
            r.clone(),
            out,
        );
        self.patch_escapes(r, out)
    }

    fn decode(&self) -> Result<Vec<u16>> {
        let mut out = vec![0u16; self.n];
        self.decode_range(0..self.n, &mut out)?;
        Ok(out)
    }
}

/// A decode kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// One value at a time (the reference).
    Reference,
    /// AVX2 `vpshufb`, 32 values per step.
    Avx2,
    /// NEON `tbl`, 16 values per step.
    Neon,
}

impl Kernel {
    /// The kernel decodes use: the fastest that [`crate::backend::cpu::features::cpu`]
    /// allows (the reference under `SUANPAN_FORCE_SCALAR`).
    pub fn best() -> Kernel {
        let f = crate::backend::cpu::features::cpu();
        if f.avx2 {
            Kernel::Avx2
        } else if f.neon {
            Kernel::Neon
        } else {
            Kernel::Reference
        }
    }

    /// The fastest kernel the CPU runs, whatever `SUANPAN_FORCE_SCALAR` says.
    fn fastest() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernel::Avx2;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Kernel::Neon;
        }
        Kernel::Reference
    }

    /// Every kernel this CPU runs, whatever `SUANPAN_FORCE_SCALAR` says (tests compare
    /// them with the reference).
    pub fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::Reference];
        if Kernel::fastest() != Kernel::Reference {
            v.push(Kernel::fastest());
        }
        v
    }
}

/// The scalar reference for one value.
#[inline]
pub fn decode_one(table: &[u8; 16], sm: u8, code: u8) -> u16 {
    (u16::from(sm & 0x80) << 8)
        | (u16::from(table[(code & 15) as usize]) << 7)
        | u16::from(sm & 0x7f)
}

/// Decode values `r` (`out.len() == r.len()`, `r` within `sm` and `codes`) without the
/// escapes. An unavailable kernel falls back to the reference.
pub fn decode_dense(
    k: Kernel,
    table: &[u8; 16],
    sm: &[u8],
    codes: &[u8],
    r: Range<usize>,
    out: &mut [u16],
) {
    assert!(
        r.start <= r.end && r.end <= sm.len() && r.end <= 2 * codes.len() && out.len() == r.len(),
        "df12 decode: range {r:?} outside the data"
    );
    let mut i = r.start;
    // Align to a whole code byte.
    if i % 2 == 1 && i < r.end {
        out[0] = decode_one(table, sm[i], codes[i / 2] >> 4);
        i += 1;
    }
    let done = match k {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: AVX2 detected; the kernel reads values i..i+32·steps, inside `r`,
            // hence inside `sm` and `codes` (asserted), and writes the matching part of `out`.
            unsafe { x86::decode_avx2(table, sm, codes, i, r.end, &mut out[i - r.start..]) }
        }
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => {
            // SAFETY: NEON is baseline on aarch64; bounds as for AVX2 (16 values per step).
            unsafe { neon::decode_neon(table, sm, codes, i, r.end, &mut out[i - r.start..]) }
        }
        _ => 0,
    };
    i += done;
    for j in i..r.end {
        out[j - r.start] = decode_one(table, sm[j], (codes[j / 2] >> (4 * (j % 2))) & 15);
    }
}

/// The split tables (`hi`, `lo`) of the module docs (for the SIMD kernels).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn split_tables(table: &[u8; 16]) -> ([u8; 16], [u8; 16]) {
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    for c in 0..16 {
        hi[c] = table[c] >> 1;
        lo[c] = (table[c] & 1) << 7;
    }
    (hi, lo)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Values `i..i + 32·s` for as many whole steps `s` as fit before `end` (`i` even);
    /// returns how many values it decoded. `out[0]` is value `i`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn decode_avx2(
        table: &[u8; 16],
        sm: &[u8],
        codes: &[u8],
        mut i: usize,
        end: usize,
        out: &mut [u16],
    ) -> usize {
        let (hi, lo) = super::split_tables(table);
        let start = i;
        // SAFETY (whole fn): loads read sm[i..i+32] and codes[i/2..i/2+16] with
        // i + 32 <= end <= sm.len() <= 2·codes.len() (caller), stores write
        // out[i-start..i-start+32] with end - start <= out.len().
        let hi_t = _mm256_broadcastsi128_si256(_mm_loadu_si128(hi.as_ptr() as *const __m128i));
        let lo_t = _mm256_broadcastsi128_si256(_mm_loadu_si128(lo.as_ptr() as *const __m128i));
        let m0f = _mm_set1_epi8(0x0f);
        let m80 = _mm256_set1_epi8(0x80u8 as i8);
        let m7f = _mm256_set1_epi8(0x7f);
        debug_assert!((i.is_multiple_of(2) || i >= end) && end.saturating_sub(start) <= out.len());
        while i + 32 <= end {
            let c = _mm_loadu_si128(codes.as_ptr().add(i / 2) as *const __m128i);
            let cl = _mm_and_si128(c, m0f);
            let ch = _mm_and_si128(_mm_srli_epi16(c, 4), m0f);
            let c = _mm256_set_m128i(_mm_unpackhi_epi8(cl, ch), _mm_unpacklo_epi8(cl, ch));
            let s = _mm256_loadu_si256(sm.as_ptr().add(i) as *const __m256i);
            let h = _mm256_or_si256(_mm256_and_si256(s, m80), _mm256_shuffle_epi8(hi_t, c));
            let l = _mm256_or_si256(_mm256_and_si256(s, m7f), _mm256_shuffle_epi8(lo_t, c));
            let u0 = _mm256_unpacklo_epi8(l, h); // values 0..8 | 16..24
            let u1 = _mm256_unpackhi_epi8(l, h); // values 8..16 | 24..32
            let o = out.as_mut_ptr().add(i - start) as *mut __m256i;
            _mm256_storeu_si256(o, _mm256_permute2x128_si256(u0, u1, 0x20));
            _mm256_storeu_si256(o.add(1), _mm256_permute2x128_si256(u0, u1, 0x31));
            i += 32;
        }
        i - start
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// As the AVX2 kernel, 16 values per step with `tbl` and an interleaving `st2`.
    #[target_feature(enable = "neon")]
    pub unsafe fn decode_neon(
        table: &[u8; 16],
        sm: &[u8],
        codes: &[u8],
        mut i: usize,
        end: usize,
        out: &mut [u16],
    ) -> usize {
        let (hi, lo) = super::split_tables(table);
        let start = i;
        // SAFETY (whole fn): loads read sm[i..i+16] and codes[i/2..i/2+8] with
        // i + 16 <= end (caller's bounds), stores write out[i-start..i-start+16].
        let hi_t = vld1q_u8(hi.as_ptr());
        let lo_t = vld1q_u8(lo.as_ptr());
        debug_assert!((i.is_multiple_of(2) || i >= end) && end.saturating_sub(start) <= out.len());
        while i + 16 <= end {
            let c = vld1_u8(codes.as_ptr().add(i / 2));
            let z = vzip_u8(vand_u8(c, vdup_n_u8(15)), vshr_n_u8::<4>(c));
            let c = vcombine_u8(z.0, z.1);
            let s = vld1q_u8(sm.as_ptr().add(i));
            let h = vorrq_u8(vandq_u8(s, vdupq_n_u8(0x80)), vqtbl1q_u8(hi_t, c));
            let l = vorrq_u8(vandq_u8(s, vdupq_n_u8(0x7f)), vqtbl1q_u8(lo_t, c));
            vst2q_u8(
                out.as_mut_ptr().add(i - start) as *mut u8,
                uint8x16x2_t(l, h),
            );
            i += 16;
        }
        i - start
    }
}
