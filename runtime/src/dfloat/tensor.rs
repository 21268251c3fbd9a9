//! The encoded tensor ([`Df11Tensor`], owned), a borrowed view of it ([`Df11View`], which
//! can also point straight into a serialized blob, e.g. an mmapped GGUF tensor), the flat
//! blob format, and the structural validation every decode relies on.

use std::ops::Range;

use super::huffman::{validate_lengths, NSYM};
use crate::error::{Error, Result};

/// Blob magic.
pub const DF11_MAGIC: &[u8; 4] = b"DF11";
/// Blob format version written by [`Df11Tensor::to_bytes`]; the only one accepted.
pub const DF11_VERSION: u8 = 1;
/// Size of the fixed blob header (magic .. code lengths).
pub const DF11_HEADER_LEN: usize = 32 + NSYM;
/// Default chunk size of the bitstream, in bytes.
pub const DEFAULT_CHUNK_BYTES: u32 = 4096;
/// Smallest chunk: 4 bytes = 32 bits ≥ the longest code, so no chunk but the last can be
/// without a code that starts in it.
pub const MIN_CHUNK_BYTES: u32 = 4;
/// Largest chunk (keeps bit offsets within a chunk far from u32 overflow).
pub const MAX_CHUNK_BYTES: u32 = 1 << 28;

/// One BF16 tensor (or block of tensors) in DFloat11 form. See the [module docs](super).
///
/// Fields are public so callers can build or inspect one; every decoder entry point
/// re-validates what it uses, so an inconsistent value is an error, never a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Df11Tensor {
    /// Number of BF16 values.
    pub n: usize,
    /// Bitstream chunk size C in bytes (the unit of parallel decode).
    pub chunk_bytes: u32,
    /// Code length (0 = unused) of each exponent value; codes are canonical.
    pub lengths: [u8; NSYM],
    /// Exponent codes, MSB-first, zero-padded to a whole byte.
    pub bitstream: Vec<u8>,
    /// Per value: sign in bit 7, mantissa in bits 0..7.
    pub sign_mantissa: Vec<u8>,
    /// Per chunk k: index of the first value whose code starts in bytes [kC, (k+1)C)
    /// (`n` for a trailing chunk in which no code starts).
    pub chunk_elem: Vec<u32>,
    /// Per chunk k: bit offset of that value's code, relative to bit 8kC (0 for an empty chunk).
    pub chunk_bit: Vec<u32>,
}

/// A little-endian u32 array that is either native (from a [`Df11Tensor`]) or raw bytes
/// (from a blob, possibly unaligned).
#[derive(Clone, Copy, Debug)]
pub enum U32s<'a> {
    /// Native-endian values.
    Native(&'a [u32]),
    /// 4 little-endian bytes per value.
    Le(&'a [u8]),
}

impl U32s<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            U32s::Native(v) => v.len(),
            U32s::Le(b) => b.len() / 4,
        }
    }
    /// True if there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Value `i`; panics if out of range (callers check `len` first).
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            U32s::Native(v) => v[i],
            U32s::Le(b) => u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes")),
        }
    }
}

/// A borrowed DFloat11 tensor: what the decoder works on.
#[derive(Clone, Copy, Debug)]
pub struct Df11View<'a> {
    /// Number of BF16 values.
    pub n: usize,
    /// Chunk size in bytes.
    pub chunk_bytes: u32,
    /// Code lengths per exponent.
    pub lengths: &'a [u8; NSYM],
    /// Exponent bitstream.
    pub bitstream: &'a [u8],
    /// Sign|mantissa bytes.
    pub sign_mantissa: &'a [u8],
    /// First element of each chunk.
    pub chunk_elem: U32s<'a>,
    /// Bit offset of that element within its chunk.
    pub chunk_bit: U32s<'a>,
}

impl<'a> From<&'a Df11Tensor> for Df11View<'a> {
    fn from(t: &'a Df11Tensor) -> Self {
        t.view()
    }
}

impl Df11Tensor {
    /// Borrow as a view.
    pub fn view(&self) -> Df11View<'_> {
        Df11View {
            n: self.n,
            chunk_bytes: self.chunk_bytes,
            lengths: &self.lengths,
            bitstream: &self.bitstream,
            sign_mantissa: &self.sign_mantissa,
            chunk_elem: U32s::Native(&self.chunk_elem),
            chunk_bit: U32s::Native(&self.chunk_bit),
        }
    }

    /// Number of chunks (= parallel work units).
    pub fn num_chunks(&self) -> usize {
        self.chunk_elem.len()
    }

    /// Size of [`Self::to_bytes`] output.
    pub fn serialized_len(&self) -> usize {
        DF11_HEADER_LEN + 8 * self.chunk_elem.len() + self.bitstream.len() + self.n
    }

    /// Serialize to the flat blob described in the [module docs](super).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.serialized_len());
        b.extend_from_slice(DF11_MAGIC);
        b.push(DF11_VERSION);
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&(self.n as u64).to_le_bytes());
        b.extend_from_slice(&self.chunk_bytes.to_le_bytes());
        b.extend_from_slice(&(self.chunk_elem.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.bitstream.len() as u64).to_le_bytes());
        b.extend_from_slice(&self.lengths);
        for &e in &self.chunk_elem {
            b.extend_from_slice(&e.to_le_bytes());
        }
        for &e in &self.chunk_bit {
            b.extend_from_slice(&e.to_le_bytes());
        }
        b.extend_from_slice(&self.bitstream);
        b.extend_from_slice(&self.sign_mantissa);
        b
    }

    /// Parse and validate a blob into an owned tensor (see [`Df11View::parse`]).
    pub fn from_bytes(blob: &[u8]) -> Result<Self> {
        Ok(Df11View::parse(blob)?.to_owned())
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_model(format!("DFloat11: {}", msg.into()))
}

/// Read `N` bytes at `off` (caller checked the length).
fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    b[off..off + N].try_into().expect("checked length")
}

impl<'a> Df11View<'a> {
    /// Parse a blob without copying and validate its structure (header, sizes, code
    /// lengths, chunk index). The bitstream itself is checked while decoding.
    pub fn parse(blob: &'a [u8]) -> Result<Self> {
        if blob.len() < DF11_HEADER_LEN {
            return Err(bad(format!(
                "blob of {} bytes is shorter than the {DF11_HEADER_LEN}-byte header",
                blob.len()
            )));
        }
        if &blob[0..4] != DF11_MAGIC {
            return Err(bad("bad magic (expected \"DF11\")"));
        }
        if blob[4] != DF11_VERSION {
            return Err(bad(format!(
                "unsupported version {} (this build reads {DF11_VERSION})",
                blob[4]
            )));
        }
        if blob[5..8] != [0, 0, 0] {
            return Err(bad("reserved header bytes are not zero"));
        }
        let n = u64::from_le_bytes(arr(blob, 8));
        let chunk_bytes = u32::from_le_bytes(arr(blob, 16));
        let n_chunks = u32::from_le_bytes(arr(blob, 20)) as u64;
        let bs_len = u64::from_le_bytes(arr(blob, 24));
        let lengths: &'a [u8; NSYM] = blob[32..DF11_HEADER_LEN]
            .try_into()
            .expect("header checked");
        // Sum the section sizes in u128: no overflow whatever the header says.
        let want = DF11_HEADER_LEN as u128 + 8 * n_chunks as u128 + bs_len as u128 + n as u128;
        if want != blob.len() as u128 {
            return Err(bad(format!(
                "blob is {} bytes but its header (n={n}, chunks={n_chunks}, bitstream={bs_len}) \
                 needs {want} (truncated or corrupt)",
                blob.len()
            )));
        }
        // All sizes are now bounded by blob.len(), so they fit usize.
        let (n, n_chunks, bs_len) = (n as usize, n_chunks as usize, bs_len as usize);
        let mut off = DF11_HEADER_LEN;
        let chunk_elem = U32s::Le(&blob[off..off + 4 * n_chunks]);
        off += 4 * n_chunks;
        let chunk_bit = U32s::Le(&blob[off..off + 4 * n_chunks]);
        off += 4 * n_chunks;
        let bitstream = &blob[off..off + bs_len];
        off += bs_len;
        let sign_mantissa = &blob[off..off + n];
        let v = Df11View {
            n,
            chunk_bytes,
            lengths,
            bitstream,
            sign_mantissa,
            chunk_elem,
            chunk_bit,
        };
        v.validate()?;
        Ok(v)
    }

    /// Copy into an owned tensor.
    pub fn to_owned(&self) -> Df11Tensor {
        let get = |a: U32s<'_>| (0..a.len()).map(|i| a.get(i)).collect::<Vec<u32>>();
        Df11Tensor {
            n: self.n,
            chunk_bytes: self.chunk_bytes,
            lengths: *self.lengths,
            bitstream: self.bitstream.to_vec(),
            sign_mantissa: self.sign_mantissa.to_vec(),
            chunk_elem: get(self.chunk_elem),
            chunk_bit: get(self.chunk_bit),
        }
    }

    /// Number of chunks.
    pub fn num_chunks(&self) -> usize {
        self.chunk_elem.len()
    }

    /// Everything but the bitstream contents: sizes, code lengths and the whole chunk index.
    /// O(chunks); `Df11Decoder::decode_into` (CPU backend) runs it on every call.
    pub fn validate(&self) -> Result<()> {
        validate_lengths(self.lengths)?;
        self.validate_sizes()?;
        for k in 0..self.num_chunks() {
            self.check_chunk(k)?;
        }
        Ok(())
    }

    /// Sizes that do not depend on the chunk contents. O(1).
    pub(crate) fn validate_sizes(&self) -> Result<()> {
        let c = self.chunk_bytes;
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&c) {
            return Err(bad(format!(
                "chunk size {c} not in {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}"
            )));
        }
        if self.n > u32::MAX as usize {
            return Err(bad(format!("{} values exceed the u32 index", self.n)));
        }
        if self.sign_mantissa.len() != self.n {
            return Err(bad(format!(
                "sign_mantissa has {} bytes for {} values",
                self.sign_mantissa.len(),
                self.n
            )));
        }
        let bs = self.bitstream.len();
        if self.n == 0 && bs != 0 {
            return Err(bad("empty tensor with a non-empty bitstream"));
        }
        if self.n > 0 && bs == 0 {
            return Err(bad(format!(
                "{} values but an empty bitstream (truncated)",
                self.n
            )));
        }
        if bs > usize::MAX / 16 {
            return Err(bad(format!(
                "bitstream of {bs} bytes is too large to address in bits"
            )));
        }
        if bs as u128 > 4 * self.n as u128 {
            return Err(bad(format!(
                "bitstream of {bs} bytes is longer than 32 bits per value allows"
            )));
        }
        let want_chunks = bs.div_ceil(c as usize);
        if self.chunk_elem.len() != want_chunks || self.chunk_bit.len() != want_chunks {
            return Err(bad(format!(
                "chunk index has {}/{} entries, bitstream of {bs} bytes in {c}-byte chunks needs {want_chunks}",
                self.chunk_elem.len(),
                self.chunk_bit.len()
            )));
        }
        Ok(())
    }

    /// End element (exclusive) of chunk `k` as stored (not yet validated).
    #[inline]
    fn raw_end(&self, k: usize) -> usize {
        if k + 1 < self.num_chunks() {
            self.chunk_elem.get(k + 1) as usize
        } else {
            self.n
        }
    }

    /// Checks chunk `k`'s index entry against its neighbour and `n`. Every chunk but the last
    /// must contain the start of at least one code (true for any chunk of ≥ 4 bytes), so
    /// elements are strictly increasing; the last may be empty (its first element is `n`).
    pub(crate) fn check_chunk(&self, k: usize) -> Result<()> {
        let nch = self.num_chunks();
        if k >= nch {
            return Err(bad(format!("chunk {k} out of range ({nch} chunks)")));
        }
        let e = self.chunk_elem.get(k) as usize;
        let bit = self.chunk_bit.get(k);
        let end = self.raw_end(k);
        if k == 0 && (e != 0 || bit != 0) {
            return Err(bad(format!(
                "chunk 0 starts at element {e} bit {bit}, expected 0/0"
            )));
        }
        if end > self.n {
            return Err(bad(format!(
                "chunk {} starts at element {end}, beyond n = {}",
                k + 1,
                self.n
            )));
        }
        if e >= end {
            let last_empty = k + 1 == nch && e == self.n && bit == 0 && k > 0;
            if !last_empty {
                return Err(bad(format!(
                    "chunk index not increasing: chunk {k} holds elements {e}..{end}"
                )));
            }
        } else if bit as u64 >= 8 * self.chunk_bytes as u64 {
            return Err(bad(format!(
                "chunk {k}: bit offset {bit} outside its {}-byte chunk",
                self.chunk_bytes
            )));
        }
        Ok(())
    }

    /// Absolute bit where chunk `k`'s first code starts (chunk checked).
    #[inline]
    pub(crate) fn start_bit(&self, k: usize) -> usize {
        k * 8 * self.chunk_bytes as usize + self.chunk_bit.get(k) as usize
    }

    /// The element range decoded by chunks `chunks` (checks those index entries).
    pub fn elem_range(&self, chunks: Range<usize>) -> Result<Range<usize>> {
        let nch = self.num_chunks();
        if chunks.start > chunks.end || chunks.end > nch {
            return Err(Error::invalid(format!(
                "DFloat11: chunk range {chunks:?} not within 0..{nch}"
            )));
        }
        if chunks.is_empty() {
            return Ok(0..0);
        }
        self.check_chunk(chunks.start)?;
        self.check_chunk(chunks.end - 1)?;
        let r = self.chunk_elem.get(chunks.start) as usize..self.raw_end(chunks.end - 1);
        if r.start > r.end {
            return Err(bad(format!(
                "chunk index not increasing over chunks {chunks:?}"
            )));
        }
        Ok(r)
    }
}
