//! df12: lossless BF16 in ~12 bits per value, decoded by table lookup at SIMD speed.
//!
//! DFloat11 (the parent module) Huffman-codes the exponent: smallest, but a bit-serial
//! decoder. df12 trades ~1.3 bits per value for a decode that is one byte shuffle: the 15
//! most frequent exponents of a tensor get a 4-bit code each, every other exponent is coded
//! 15 ("escape") and stored in an exception list. A value is rebuilt as
//! `bf16 = (sm & 0x80) << 8 | table[code] << 7 | (sm & 0x7f)` and escapes are patched after.
//!
//! # Blob ([`Df12Tensor::to_bytes`], [`Df12View::parse`]), integers little-endian
//!
//! ```text
//! offset         size          field
//!      0         4             magic "DF12"
//!      4         1             version = 1
//!      5         3             reserved, 0
//!      8         8             n           u64  number of values (< 2^32)
//!     16         4             block       u32  values per exception block (64 ..= 2^24,
//!                                               a multiple of 64)
//!     20         4             n_exc       u32  number of escaped values
//!     24         16            table       u8 × 16: exponent of codes 0..14; entry 15 is 0
//!     40         n             sign_mantissa  one byte per value, sign in bit 7
//!     40+n       ceil(n/2)     codes       4 bits per value: value 2i in the low nibble
//!                                          of byte i, value 2i+1 in the high nibble; a
//!                                          padding nibble (odd n) is 0
//!                4·(nb+1)      exc_start   u32: escapes of block b are entries
//!                                          exc_start[b] .. exc_start[b+1] (nb = ceil(n/block))
//!                4·n_exc       exc_index   u32: value index, strictly increasing
//!                n_exc         exc_exp     u8: the escaped value's exponent
//!                              (end: the blob is exactly this long)
//!
//!  value i:  sm[i] = s|m6..m0      code = nibble i      exponent = table[code]
//!            ┌─┬────────┬───────┐                       (code 15: exc_exp[k] where
//!   bf16  =  │s│exponent│m6..m0 │                        exc_index[k] = i)
//!            └─┴────────┴───────┘
//! ```
//!
//! [`Df12View::parse`] checks everything, in one pass over the codes (every escape has
//! exactly one exception entry in its block and every entry points at an escape), so a
//! parsed view decodes without further checks; the decoders (the CPU backend's
//! `backend::cpu::dfloat::df12_kernel`, the GPU's df12 shader) stay memory-safe on any view.
//! Every malformed blob is an [`Error::BadModel`](crate::Error::BadModel), never a panic.
//!
//! ```
//! use suanpan::backend::cpu::dfloat::Df12Decode;
//! use suanpan::dfloat::df12::{encode, Df12View};
//! let bf16: Vec<u16> = (0..1000u32).map(|i| half::bf16::from_f32((i as f32).sin()).to_bits()).collect();
//! let blob = encode(&bf16).to_bytes();
//! let v = Df12View::parse(&blob)?;
//! let mut out = vec![0u16; v.n];
//! v.decode_range(0..v.n, &mut out)?;
//! assert_eq!(out, bf16);
//! # Ok::<(), suanpan::Error>(())
//! ```

use std::ops::Range;

use crate::error::{Error, Result};

/// Blob magic.
pub const DF12_MAGIC: &[u8; 4] = b"DF12";
/// The blob version written and read.
pub const DF12_VERSION: u8 = 1;
/// Fixed header bytes before the sign|mantissa section.
pub const DF12_HEADER_LEN: usize = 40;
/// Default values per exception block.
pub const DEFAULT_BLOCK: u32 = 4096;
/// The escape code.
pub const ESCAPE: u8 = 15;

/// An owned df12 tensor (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Df12Tensor {
    /// Number of values.
    pub n: usize,
    /// Values per exception block.
    pub block: u32,
    /// Exponent of each code (entry 15 unused, 0).
    pub table: [u8; 16],
    /// Sign|mantissa byte per value.
    pub sign_mantissa: Vec<u8>,
    /// Packed 4-bit codes, two per byte, low nibble first.
    pub codes: Vec<u8>,
    /// Per block, first exception entry; `n_blocks + 1` entries.
    pub exc_start: Vec<u32>,
    /// Escaped value indices, increasing.
    pub exc_index: Vec<u32>,
    /// Their exponents.
    pub exc_exp: Vec<u8>,
}

/// Encode BF16 bit patterns with the default block.
pub fn encode(values: &[u16]) -> Df12Tensor {
    encode_with(values, DEFAULT_BLOCK)
}

/// Encode with `block` values per exception block (clamped to a valid size).
pub fn encode_with(values: &[u16], block: u32) -> Df12Tensor {
    let block = (block.clamp(64, 1 << 24) / 64) * 64;
    let mut counts = [0u64; 256];
    for &v in values {
        counts[((v >> 7) & 0xff) as usize] += 1;
    }
    // The 15 most frequent exponents (ties: smaller exponent first).
    let mut order: Vec<usize> = (0..256).filter(|&e| counts[e] > 0).collect();
    order.sort_by_key(|&e| (std::cmp::Reverse(counts[e]), e));
    let mut table = [0u8; 16];
    let mut code_of = [ESCAPE; 256];
    for (c, &e) in order.iter().take(15).enumerate() {
        table[c] = e as u8;
        code_of[e] = c as u8;
    }
    let n = values.len();
    let sm: Vec<u8> = values
        .iter()
        .map(|&v| (((v >> 8) & 0x80) | (v & 0x7f)) as u8)
        .collect();
    let code = |v: u16| code_of[((v >> 7) & 0xff) as usize];
    let mut codes = vec![0u8; n.div_ceil(2)];
    let n_blocks = n.div_ceil(block as usize);
    let mut exc_start = Vec::with_capacity(n_blocks + 1);
    let mut exc_index = Vec::new();
    let mut exc_exp = Vec::new();
    // Blocks are a multiple of 64 values: a code byte never straddles two.
    for (b, vals) in values.chunks(block as usize).enumerate() {
        exc_start.push(exc_index.len() as u32);
        let base = b * block as usize;
        for (k, pair) in vals.chunks(2).enumerate() {
            let c0 = code(pair[0]);
            let c1 = pair.get(1).map_or(0, |&v| code(v));
            codes[base / 2 + k] = c0 | (c1 << 4);
            if c0 == ESCAPE || c1 == ESCAPE {
                for (j, &v) in pair.iter().enumerate() {
                    if code(v) == ESCAPE {
                        exc_index.push((base + 2 * k + j) as u32);
                        exc_exp.push(((v >> 7) & 0xff) as u8);
                    }
                }
            }
        }
    }
    exc_start.push(exc_index.len() as u32);
    Df12Tensor {
        n,
        block,
        table,
        sign_mantissa: sm,
        codes,
        exc_start,
        exc_index,
        exc_exp,
    }
}

impl Df12Tensor {
    /// Size of [`Self::to_bytes`].
    pub fn serialized_len(&self) -> usize {
        serialized_len(self.n, self.exc_start.len() - 1, self.exc_index.len())
    }

    /// Serialize (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.serialized_len());
        b.extend_from_slice(DF12_MAGIC);
        b.push(DF12_VERSION);
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&(self.n as u64).to_le_bytes());
        b.extend_from_slice(&self.block.to_le_bytes());
        b.extend_from_slice(&(self.exc_index.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.table);
        b.extend_from_slice(&self.sign_mantissa);
        b.extend_from_slice(&self.codes);
        for a in [&self.exc_start, &self.exc_index] {
            for &v in a.iter() {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b.extend_from_slice(&self.exc_exp);
        b
    }

    /// Number of escaped values.
    pub fn n_exceptions(&self) -> usize {
        self.exc_index.len()
    }
}

fn serialized_len(n: usize, n_blocks: usize, n_exc: usize) -> usize {
    DF12_HEADER_LEN + n + n.div_ceil(2) + 4 * (n_blocks + 1) + 5 * n_exc
}

/// Bits per value of a serialized blob of `blob_len` bytes holding `n` values.
pub fn bits_per_value(blob_len: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        8.0 * blob_len as f64 / n as f64
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_model(format!("df12: {}", msg.into()))
}

/// A parsed, fully validated df12 blob, borrowing it (e.g. straight from an mmapped GGUF).
#[derive(Clone, Copy, Debug)]
pub struct Df12View<'a> {
    /// Number of values.
    pub n: usize,
    /// Values per exception block.
    pub block: usize,
    /// Exponent per code.
    pub table: [u8; 16],
    /// Sign|mantissa bytes (`n`).
    pub sign_mantissa: &'a [u8],
    /// Packed codes (`ceil(n/2)`).
    pub codes: &'a [u8],
    exc_start: &'a [u8],
    exc_index: &'a [u8],
    exc_exp: &'a [u8],
}

#[inline]
fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

impl<'a> Df12View<'a> {
    /// Parse and validate a blob (O(n): one pass over the codes).
    pub fn parse(blob: &'a [u8]) -> Result<Self> {
        let v = Self::parse_layout(blob)?;
        v.validate()?;
        Ok(v)
    }

    /// Parse the header and check the section sizes only (O(1)), for a blob that passed
    /// [`Self::parse`] before (the model load does it once). Decoding an unvalidated view
    /// is memory-safe but may give wrong values or panic on an out-of-range exception entry.
    pub fn parse_layout(blob: &'a [u8]) -> Result<Self> {
        if blob.len() < DF12_HEADER_LEN {
            return Err(bad(format!(
                "blob of {} bytes is shorter than the {DF12_HEADER_LEN}-byte header",
                blob.len()
            )));
        }
        if &blob[0..4] != DF12_MAGIC {
            return Err(bad("bad magic (expected \"DF12\")"));
        }
        if blob[4] != DF12_VERSION {
            return Err(bad(format!(
                "unsupported version {} (this build reads {DF12_VERSION})",
                blob[4]
            )));
        }
        if blob[5..8] != [0, 0, 0] {
            return Err(bad("reserved header bytes are not zero"));
        }
        let n = u64::from_le_bytes(blob[8..16].try_into().expect("8 bytes"));
        let block = le32(blob, 4) as usize;
        let n_exc = le32(blob, 5) as usize;
        let table: [u8; 16] = blob[24..40].try_into().expect("16 bytes");
        if table[ESCAPE as usize] != 0 {
            return Err(bad("table entry 15 (the escape) is not 0"));
        }
        if !(64..=1 << 24).contains(&block) || !block.is_multiple_of(64) {
            return Err(bad(format!(
                "block of {block} values (want a multiple of 64 in 64..=2^24)"
            )));
        }
        if n > u32::MAX as u64 {
            return Err(bad(format!("{n} values exceed the u32 index")));
        }
        let n = n as usize;
        if n_exc > n {
            return Err(bad(format!("{n_exc} exceptions for {n} values")));
        }
        let nb = n.div_ceil(block);
        let want = serialized_len(n, nb, n_exc);
        if want != blob.len() {
            return Err(bad(format!(
                "blob is {} bytes but its header (n={n}, block={block}, exceptions={n_exc}) \
                 needs {want} (truncated or corrupt)",
                blob.len()
            )));
        }
        let mut off = DF12_HEADER_LEN;
        let mut take = |len: usize| {
            let s = &blob[off..off + len];
            off += len;
            s
        };
        let v = Df12View {
            n,
            block,
            table,
            sign_mantissa: take(n),
            codes: take(n.div_ceil(2)),
            exc_start: take(4 * (nb + 1)),
            exc_index: take(4 * n_exc),
            exc_exp: take(n_exc),
        };
        Ok(v)
    }

    /// Number of exception blocks.
    pub fn n_blocks(&self) -> usize {
        self.exc_start.len() / 4 - 1
    }

    /// Number of escaped values.
    pub fn n_exceptions(&self) -> usize {
        self.exc_exp.len()
    }

    #[inline]
    fn code(&self, i: usize) -> u8 {
        (self.codes[i / 2] >> (4 * (i % 2))) & 15
    }

    /// The O(n) checks of [`Self::parse`]: exception index against the escape codes.
    pub fn validate(&self) -> Result<()> {
        let nb = self.n_blocks();
        let n_exc = self.n_exceptions();
        if le32(self.exc_start, 0) != 0 || le32(self.exc_start, nb) as usize != n_exc {
            return Err(bad(format!(
                "exception index runs {}..{}, expected 0..{n_exc}",
                le32(self.exc_start, 0),
                le32(self.exc_start, nb)
            )));
        }
        if self.n % 2 == 1 && self.codes[self.n / 2] >> 4 != 0 {
            return Err(bad("padding nibble is not 0"));
        }
        let mut prev: Option<usize> = None;
        for b in 0..nb {
            let (k0, k1) = (
                le32(self.exc_start, b) as usize,
                le32(self.exc_start, b + 1) as usize,
            );
            if k0 > k1 || k1 > n_exc {
                return Err(bad(format!("exception index of block {b} is {k0}..{k1}")));
            }
            let vals = b * self.block..((b + 1) * self.block).min(self.n);
            for k in k0..k1 {
                let i = le32(self.exc_index, k) as usize;
                if !vals.contains(&i) || prev.is_some_and(|p| p >= i) {
                    return Err(bad(format!(
                        "exception {k} at value {i}: outside block {b} ({vals:?}) or not increasing"
                    )));
                }
                if self.code(i) != ESCAPE {
                    return Err(bad(format!(
                        "exception {k} at value {i}, whose code is not the escape"
                    )));
                }
                prev = Some(i);
            }
            let escapes = count_escapes(self.codes, vals);
            if escapes != k1 - k0 {
                return Err(bad(format!(
                    "block {b} holds {escapes} escape codes but {} exceptions",
                    k1 - k0
                )));
            }
        }
        Ok(())
    }

    /// Exception entries that may fall in values `r` (those of the blocks covering it).
    fn exceptions_near(&self, r: &Range<usize>) -> Range<usize> {
        if r.is_empty() {
            return 0..0;
        }
        let b0 = r.start / self.block;
        let b1 = (r.end - 1) / self.block + 1;
        let nb = self.n_blocks();
        le32(self.exc_start, b0.min(nb)) as usize..le32(self.exc_start, b1.min(nb)) as usize
    }

    /// First exception entry of each block, then the total: `n_blocks + 1` entries.
    pub fn block_starts(&self) -> impl Iterator<Item = u32> + '_ {
        (0..=self.n_blocks()).map(|b| le32(self.exc_start, b))
    }

    /// Every exception entry in order: (value index, exponent).
    pub fn exceptions(&self) -> impl Iterator<Item = (u32, u8)> + '_ {
        (0..self.n_exceptions()).map(|k| (le32(self.exc_index, k), self.exc_exp[k]))
    }

    /// Indices of the escaped values in `r`, increasing.
    pub fn exceptions_in(&self, r: Range<usize>) -> impl Iterator<Item = usize> + '_ {
        self.exceptions_near(&r)
            .map(|e| le32(self.exc_index, e) as usize)
            .filter(move |i| r.contains(i))
    }

    /// Write the escaped exponents of values `r` into `out` (`out.len() == r.len()`),
    /// whose other values a dense decode (`backend::cpu::dfloat::df12_kernel`) produced with
    /// exponent 0 for the escape code.
    pub fn patch_escapes(&self, r: Range<usize>, out: &mut [u16]) -> Result<()> {
        if r.start > r.end || r.end > self.n || out.len() != r.len() {
            return Err(Error::invalid(format!(
                "df12: value range {r:?} of {} into {} values",
                self.n,
                out.len()
            )));
        }
        for e in self.exceptions_near(&r) {
            let i = le32(self.exc_index, e) as usize;
            if r.contains(&i) {
                let o = &mut out[i - r.start];
                *o = (*o & 0x807f) | (u16::from(self.exc_exp[e]) << 7);
            }
        }
        Ok(())
    }
}

/// Number of escape codes (15) among values `r` of the packed `codes`.
fn count_escapes(codes: &[u8], r: Range<usize>) -> usize {
    (r.start..r.end)
        .filter(|&i| (codes[i / 2] >> (4 * (i % 2))) & 15 == ESCAPE)
        .count()
}
