//! [`LutMatrix`]: a quantized weight matrix with its bit planes packed as nibbles in exactly
//! the order the GEMV inner loop reads them.
//!
//! Code `u` of row `r`, column `k` has bits `u_0..u_{b−1}`; plane `p` holds bit `u_p`. Rows
//! are taken 32 at a time (a *chunk*; the last one is padded with zero codes), columns one
//! quantization group at a time, and within a group 4 consecutive columns (a *k-step*) of
//! one row and one plane form a nibble (bit `j` = column `4s + j`), which indexes the
//! 16-entry table of that k-step. Two k-steps (8 columns) of 32 rows fill 32 bytes, one
//! AVX2 register: the low 128-bit lane holds even k-step `2q`, the high lane odd k-step
//! `2q+1`, so one 32-byte load of two consecutive tables lines up with it.
//!
//! ```text
//! planes: [chunk c: rows 32c..32c+32]
//!           [group gi]
//!             [plane p = 0..b]
//!               [k-pair q = 0..g/8]  32 bytes:
//!
//!   byte:    0    1    2    3   ...  14   15 | 16   17  ...  30   31
//!   k-step: 2q   2q   2q   2q   ...  2q   2q | 2q+1 2q+1 ... 2q+1 2q+1
//!   lo nib: r0   r8   r1   r9   ...  r7   r15| r0   r8   ...  r7   r15
//!   hi nib: r16  r24  r17  r25  ...  r23  r31| r16  r24  ...  r23  r31
//!   (r = row within the chunk; nibble bit j = bit p of code at column 8q + 4·(k-step&1) + j)
//!
//! scales, zeros (f16): [chunk c][group gi][row r0..r31]
//! ```
//!
//! Rows sit at even/odd byte positions that way so that after the table lookup, masking
//! the even bytes of each 16-bit word gives rows 0..7 (lo) / 16..23 (hi) and shifting out
//! the odd bytes gives rows 8..15 / 24..31, in order, with no shuffle before the epilogue.

use std::borrow::Cow;

use half::f16;

use super::quantize::{self, Method};
use crate::error::{Error, Result};

/// Rows per chunk (one AVX2 register of nibble pairs).
pub const CHUNK_ROWS: usize = 32;

/// Group sizes the kernels accept.
pub const GROUPS: [usize; 3] = [32, 64, 128];

/// A `rows × cols` matrix quantized to `bits` bits per weight with one f16 scale and zero
/// per `group` consecutive weights of a row: `w[r][k] ≈ s·(u − z)`.
///
/// The buffers are either owned (after [`LutMatrix::quantize`]) or borrowed straight from
/// a mapped model file ([`LutMatrix::from_bytes`]), so a converted model runs with no
/// repacking at load.
#[derive(Clone, Debug, PartialEq)]
pub struct LutMatrix<'a> {
    bits: usize,
    group: usize,
    rows: usize,
    cols: usize,
    planes: Cow<'a, [u8]>,
    scales: Cow<'a, [f16]>,
    zeros: Cow<'a, [f16]>,
}

/// Byte size of the serialized form ([`LutMatrix::to_bytes`]) of a `rows × cols` matrix:
/// `[planes][scales: f16 LE][zeros: f16 LE]`, rows padded to whole 32-row chunks.
/// `None` if the shape is invalid or the size overflows.
pub fn serialized_len(bits: usize, group: usize, rows: u64, cols: u64) -> Option<u64> {
    if !(1..=4).contains(&bits) || !GROUPS.contains(&group) || cols == 0 || rows == 0 {
        return None;
    }
    if !cols.is_multiple_of(group as u64) {
        return None;
    }
    let padded = rows
        .div_ceil(CHUNK_ROWS as u64)
        .checked_mul(CHUNK_ROWS as u64)?;
    let groups = cols / group as u64;
    let per_group = (bits * group / 8 + 4) as u64;
    padded.checked_mul(groups)?.checked_mul(per_group)
}

/// Check `bits`, `group`, `cols` and `rows` for a LUT matrix.
pub(crate) fn check_shape(bits: usize, group: usize, rows: usize, cols: usize) -> Result<()> {
    if !(1..=4).contains(&bits) {
        return Err(Error::invalid(format!(
            "LUT matrix: bits {bits} outside 1..=4"
        )));
    }
    if !GROUPS.contains(&group) {
        return Err(Error::invalid(format!(
            "LUT matrix: group {group} not one of {GROUPS:?}"
        )));
    }
    if cols == 0 || !cols.is_multiple_of(group) {
        return Err(Error::invalid(format!(
            "LUT matrix: {cols} columns is not a positive multiple of the group {group}"
        )));
    }
    if rows == 0 {
        return Err(Error::invalid("LUT matrix: zero rows"));
    }
    Ok(())
}

impl<'a> LutMatrix<'a> {
    /// Quantize a row-major `rows × cols` matrix with the error-minimizing search.
    pub fn quantize(
        w: &[f32],
        rows: usize,
        cols: usize,
        bits: usize,
        group: usize,
    ) -> Result<LutMatrix<'static>> {
        LutMatrix::quantize_with(w, rows, cols, bits, group, Method::Search)
    }

    /// Quantize with an explicit [`Method`] ([`Method::Ternary`] requires `bits == 2`).
    pub fn quantize_with(
        w: &[f32],
        rows: usize,
        cols: usize,
        bits: usize,
        group: usize,
        method: Method,
    ) -> Result<LutMatrix<'static>> {
        check_shape(bits, group, rows, cols)?;
        if method == Method::Ternary && bits != 2 {
            return Err(Error::invalid("LUT matrix: ternary weights take 2 bits"));
        }
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(Error::invalid(format!(
                "LUT matrix: {} weights for a {rows}×{cols} matrix",
                w.len()
            )));
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("LUT matrix: non-finite weight"));
        }
        let groups = cols / group;
        let mut codes = vec![0u8; w.len()];
        let mut scales = vec![f16::ZERO; rows * groups];
        let mut zeros = vec![f16::ZERO; rows * groups];
        let gamma = quantize::absmean(w);
        for (i, (wg, cg)) in w
            .chunks_exact(group)
            .zip(codes.chunks_exact_mut(group))
            .enumerate()
        {
            (scales[i], zeros[i]) = match method {
                Method::Rtn => quantize::quantize_group_rtn(wg, bits, cg),
                Method::Search => quantize::quantize_group_search(wg, bits, cg),
                Method::Ternary => quantize::quantize_group_ternary(wg, gamma, cg),
            };
        }
        LutMatrix::pack(bits, group, rows, cols, &codes, &scales, &zeros)
    }

    /// Pack row-major codes (`rows × cols`, each `< 2^bits`) and row-major per-group scales
    /// and zeros (`rows × cols/group`) into the kernel layout.
    pub fn pack(
        bits: usize,
        group: usize,
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: &[f16],
        zeros: &[f16],
    ) -> Result<LutMatrix<'static>> {
        check_shape(bits, group, rows, cols)?;
        let groups = cols / group;
        if codes.len() != rows * cols
            || scales.len() != rows * groups
            || zeros.len() != rows * groups
        {
            return Err(Error::invalid(
                "LUT matrix: code/scale/zero buffer lengths do not match the shape",
            ));
        }
        if codes.iter().any(|&c| (c as usize) >> bits != 0) {
            return Err(Error::invalid(format!(
                "LUT matrix: code does not fit {bits} bits"
            )));
        }
        let mut m = LutMatrix {
            bits,
            group,
            rows,
            cols,
            planes: Cow::Owned(Vec::new()),
            scales: Cow::Owned(Vec::new()),
            zeros: Cow::Owned(Vec::new()),
        };
        let chunks = m.chunks();
        let mut planes = vec![0u8; chunks * m.chunk_bytes()];
        let mut sc = vec![f16::ZERO; chunks * CHUNK_ROWS * groups];
        let mut ze = vec![f16::ZERO; chunks * CHUNK_ROWS * groups];
        for r in 0..rows {
            for k in 0..cols {
                let u = codes[r * cols + k];
                for p in 0..bits {
                    let (at, shift) = m.bit_position(r, k, p);
                    planes[at] |= ((u >> p) & 1) << shift;
                }
            }
            for gi in 0..groups {
                let at = m.param_index(r, gi);
                sc[at] = scales[r * groups + gi];
                ze[at] = zeros[r * groups + gi];
            }
        }
        m.planes = Cow::Owned(planes);
        m.scales = Cow::Owned(sc);
        m.zeros = Cow::Owned(ze);
        Ok(m)
    }

    /// Reassemble a matrix from already packed buffers (as read from a file): every length
    /// is checked, so a malformed input is an [`Error::BadModel`], never a panic later.
    pub fn from_packed(
        bits: usize,
        group: usize,
        rows: usize,
        cols: usize,
        planes: Vec<u8>,
        scales: Vec<f16>,
        zeros: Vec<f16>,
    ) -> Result<LutMatrix<'static>> {
        check_shape(bits, group, rows, cols).map_err(|e| Error::bad_model(e.to_string()))?;
        let m = LutMatrix {
            bits,
            group,
            rows,
            cols,
            planes: Cow::Owned(planes),
            scales: Cow::Owned(scales),
            zeros: Cow::Owned(zeros),
        };
        // u128: a hostile shape must not overflow the size computation.
        let chunks = rows.div_ceil(CHUNK_ROWS) as u128;
        let params = chunks * (CHUNK_ROWS * (cols / group)) as u128;
        let plane_bytes = params * (bits * group / 8) as u128;
        if m.planes.len() as u128 != plane_bytes
            || m.scales.len() as u128 != params
            || m.zeros.len() as u128 != params
        {
            return Err(Error::bad_model(format!(
                "LUT matrix {rows}×{cols} b{bits} g{group}: packed buffer lengths do not match"
            )));
        }
        Ok(m)
    }

    /// Borrow a matrix from its serialized form ([`LutMatrix::to_bytes`]), e.g. a tensor
    /// of a mapped GGUF file: no copy when `data` is 2-byte aligned (GGUF tensor data is
    /// 32-byte aligned), a copy of the scales and zeros otherwise. A length that does not
    /// match the shape is an [`Error::BadModel`].
    pub fn from_bytes(
        bits: usize,
        group: usize,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<LutMatrix<'a>> {
        check_shape(bits, group, rows, cols).map_err(|e| Error::bad_model(e.to_string()))?;
        let want = serialized_len(bits, group, rows as u64, cols as u64);
        if want != Some(data.len() as u64) {
            return Err(Error::bad_model(format!(
                "LUT matrix {rows}×{cols} b{bits} g{group}: {} bytes, expected {want:?}",
                data.len()
            )));
        }
        let params = rows.div_ceil(CHUNK_ROWS) * CHUNK_ROWS * (cols / group);
        let plane_bytes = data.len() - 4 * params;
        let (planes, rest) = data.split_at(plane_bytes);
        let (sc, ze) = rest.split_at(2 * params);
        let half = |b: &'a [u8]| -> Cow<'a, [f16]> {
            match bytemuck::try_cast_slice::<u8, f16>(b) {
                Ok(v) if cfg!(target_endian = "little") => Cow::Borrowed(v),
                _ => Cow::Owned(
                    b.chunks_exact(2)
                        .map(|p| f16::from_le_bytes([p[0], p[1]]))
                        .collect(),
                ),
            }
        };
        Ok(LutMatrix {
            bits,
            group,
            rows,
            cols,
            planes: Cow::Borrowed(planes),
            scales: half(sc),
            zeros: half(ze),
        })
    }

    /// The serialized form: `[planes][scales][zeros]`, f16 little-endian, exactly
    /// [`serialized_len`] bytes; [`LutMatrix::from_bytes`] reads it back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.planes.len() + 4 * self.scales.len());
        out.extend_from_slice(&self.planes);
        for v in self.scales.iter().chain(self.zeros.iter()) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn bits(&self) -> usize {
        self.bits
    }
    pub fn group(&self) -> usize {
        self.group
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Packed bit planes in kernel order (see the module docs).
    pub fn planes(&self) -> &[u8] {
        &self.planes
    }
    /// Scales in kernel order `[chunk][group][32 rows]`.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }
    /// Zero points in kernel order `[chunk][group][32 rows]`.
    pub fn zeros(&self) -> &[f16] {
        &self.zeros
    }
    /// Number of 32-row chunks (the last may be padded).
    pub fn chunks(&self) -> usize {
        self.rows.div_ceil(CHUNK_ROWS)
    }
    /// Quantization groups per row.
    pub fn groups(&self) -> usize {
        self.cols / self.group
    }
    /// Bytes of bit planes per 32-row chunk.
    pub fn chunk_bytes(&self) -> usize {
        self.groups() * self.bits * self.group * CHUNK_ROWS / 8
    }
    /// Bytes the GEMV streams: planes plus f16 scales and zeros.
    pub fn stream_bytes(&self) -> usize {
        self.planes.len() + 2 * (self.scales.len() + self.zeros.len())
    }

    /// Byte index and bit shift of bit `p` of the code at `(r, k)`.
    #[inline]
    pub(crate) fn bit_position(&self, r: usize, k: usize, p: usize) -> (usize, u32) {
        let (c, rr) = (r / CHUNK_ROWS, r % CHUNK_ROWS);
        let (gi, kk) = (k / self.group, k % self.group);
        let (step, j) = (kk / 4, kk % 4);
        let (pair, lane) = (step / 2, step % 2);
        let t = rr % 16;
        let byte = if t < 8 { 2 * t } else { 2 * (t - 8) + 1 };
        let nib_shift = if rr >= 16 { 4 } else { 0 };
        let block = ((c * self.groups() + gi) * self.bits + p) * (self.group / 8) + pair;
        (block * 32 + lane * 16 + byte, nib_shift + j as u32)
    }

    /// Nibble (4 bits of plane `p`, columns `4·step..4·step+4` of group `gi`) of row `r`.
    #[inline]
    pub(crate) fn nibble(&self, r: usize, gi: usize, p: usize, step: usize) -> usize {
        let (at, shift) = self.bit_position(r, gi * self.group + 4 * step, p);
        ((self.planes[at] >> shift) & 15) as usize
    }

    /// Index of row `r`, group `gi` in the scale and zero arrays.
    #[inline]
    pub(crate) fn param_index(&self, r: usize, gi: usize) -> usize {
        ((r / CHUNK_ROWS) * self.groups() + gi) * CHUNK_ROWS + r % CHUNK_ROWS
    }

    /// The code at `(r, k)`, read back from the planes.
    pub fn code(&self, r: usize, k: usize) -> u8 {
        (0..self.bits).fold(0u8, |u, p| {
            let (at, shift) = self.bit_position(r, k, p);
            u | (((self.planes[at] >> shift) & 1) << p)
        })
    }

    /// Scale and zero of row `r`, group `gi` as f32.
    pub fn scale_zero(&self, r: usize, gi: usize) -> (f32, f32) {
        let i = self.param_index(r, gi);
        (self.scales[i].to_f32(), self.zeros[i].to_f32())
    }

    /// Row `r` dequantized into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (k, o) in out.iter_mut().enumerate().take(self.cols) {
            let (s, z) = self.scale_zero(r, k / self.group);
            *o = s * (self.code(r, k) as f32 - z);
        }
    }

    /// The dequantized matrix, row-major `rows × cols`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for r in 0..self.rows {
            for k in 0..self.cols {
                let (s, z) = self.scale_zero(r, k / self.group);
                out[r * self.cols + k] = s * (self.code(r, k) as f32 - z);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn pack_roundtrips_codes_and_params() {
        let mut rng = Rng(77);
        for bits in 1..=4 {
            for &(rows, cols, group) in &[(1, 32, 32), (33, 64, 32), (45, 128, 64), (70, 256, 128)]
            {
                let groups = cols / group;
                let codes: Vec<u8> = (0..rows * cols)
                    .map(|_| (rng.next() % (1 << bits)) as u8)
                    .collect();
                let scales: Vec<f16> = (0..rows * groups)
                    .map(|_| f16::from_f32(rng.normal()))
                    .collect();
                let zeros: Vec<f16> = (0..rows * groups)
                    .map(|_| f16::from_f32(rng.normal()))
                    .collect();
                let m = LutMatrix::pack(bits, group, rows, cols, &codes, &scales, &zeros).unwrap();
                for r in 0..rows {
                    for k in 0..cols {
                        assert_eq!(m.code(r, k), codes[r * cols + k]);
                    }
                    for gi in 0..groups {
                        let (s, z) = m.scale_zero(r, gi);
                        assert_eq!(s, scales[r * groups + gi].to_f32());
                        assert_eq!(z, zeros[r * groups + gi].to_f32());
                    }
                }
                // Every bit of the planes is used exactly once by a real or a padding row.
                assert_eq!(m.planes().len() * 8, m.chunks() * CHUNK_ROWS * cols * bits);
                let again = LutMatrix::from_packed(
                    bits,
                    group,
                    rows,
                    cols,
                    m.planes().to_vec(),
                    m.scales().to_vec(),
                    m.zeros().to_vec(),
                )
                .unwrap();
                assert_eq!(again, m);
            }
        }
    }

    #[test]
    fn layout_matches_the_picture() {
        // Row 8 at column 4 (k-step 1 → high lane) in plane 0: byte 16 + 1, low nibble bit 0.
        let m = LutMatrix::pack(
            1,
            32,
            32,
            32,
            &[0; 1024],
            &[f16::ZERO; 32],
            &[f16::ZERO; 32],
        )
        .unwrap();
        assert_eq!(m.bit_position(8, 4, 0), (17, 0));
        // Row 17, column 11 (k-step 2 → pair 1, low lane), bit j = 3: byte 32 + 2, high nibble.
        assert_eq!(m.bit_position(17, 11, 0), (34, 7));
    }

    #[test]
    fn bad_input_is_an_error() {
        let w = vec![0.5f32; 4 * 64];
        let inv = |r: Result<LutMatrix>| matches!(r, Err(Error::InvalidArg(_)));
        assert!(inv(LutMatrix::quantize(&w, 4, 64, 0, 32)));
        assert!(inv(LutMatrix::quantize(&w, 4, 64, 5, 32)));
        assert!(inv(LutMatrix::quantize(&w, 8, 32, 2, 64))); // K not a multiple of the group
        assert!(inv(LutMatrix::quantize(&w, 2, 96, 2, 32))); // 192 weights expected, 256 given
        assert!(inv(LutMatrix::quantize(&w, 4, 64, 2, 48))); // unsupported group
        assert!(inv(LutMatrix::quantize(&w, 0, 64, 2, 32)));
        assert!(inv(LutMatrix::quantize_with(
            &w,
            4,
            64,
            3,
            32,
            Method::Ternary
        )));
        let mut nan = w.clone();
        nan[3] = f32::NAN;
        assert!(inv(LutMatrix::quantize(&nan, 4, 64, 2, 32)));
        assert!(inv(LutMatrix::pack(
            2,
            32,
            1,
            32,
            &[4; 32],
            &[f16::ONE],
            &[f16::ONE]
        ))); // code ≥ 2^bits
        assert!(inv(LutMatrix::pack(
            2,
            32,
            1,
            32,
            &[0; 31],
            &[f16::ONE],
            &[f16::ONE]
        )));
        let bad = |r: Result<LutMatrix>| matches!(r, Err(Error::BadModel(_)));
        let m = LutMatrix::quantize(&w, 4, 64, 2, 32).unwrap();
        assert!(bad(LutMatrix::from_packed(
            2,
            32,
            4,
            64,
            m.planes()[1..].to_vec(),
            m.scales().to_vec(),
            m.zeros().to_vec()
        )));
        assert!(bad(LutMatrix::from_packed(
            2,
            32,
            4,
            64,
            m.planes().to_vec(),
            m.scales().to_vec(),
            vec![]
        )));
        assert!(bad(LutMatrix::from_packed(
            7,
            32,
            4,
            64,
            vec![],
            vec![],
            vec![]
        )));
        assert!(bad(LutMatrix::from_packed(
            2,
            32,
            4,
            60,
            vec![],
            vec![],
            vec![]
        )));
    }
}
