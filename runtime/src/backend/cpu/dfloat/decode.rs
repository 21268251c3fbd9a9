//! DFloat11 → BF16 decoder: table driven, chunk parallel.
//!
//! Two tables are built once per code (per [`Df11Decoder`]):
//!
//! * **Per-symbol tables** (the format's reference decoder; the same shape a GPU kernel uses):
//!   256-entry blocks of `u32`. Block 0 is indexed by the next 8 bits of the stream; an entry
//!   is a leaf `(symbol, code length)` for codes of ≤ 8 bits, or a link to another block
//!   indexed by the following 8 bits, and so on (4 levels cover 32-bit codes). An entry of 0
//!   is a bit pattern that no code starts with (possible only for the single-symbol code).
//! * **Multi-symbol table** (the default kernel, [`Kernel::Multi12`]): 4096 `u64` entries,
//!   one per 12-bit window, holding every code that is *completely* inside the window (up to
//!   6, codes of up to 12 bits included) as exponent bytes 0..6, the bits they use in byte 6
//!   and their count in byte 7. LLM exponent codes average ~2.6 bits, so one lookup yields
//!   ~4 exponents. An entry of 0 (the window starts with a code longer than 12 bits, or with
//!   no code) takes the per-symbol path.
//!
//! Multi12 hot loop: one unaligned big-endian 64-bit load per refill gives ≥ 57 valid bits,
//! enough for four 12-bit lookups (or short lookups followed by one code of up to 32 bits).
//! Each lookup stores its whole entry as 8 exponent bytes (bytes past the count land on
//! slots a later store overwrites), and its top 16 bits shift the bit buffer directly
//! (shifts use the low 6 bits = code bits). The only per-lookup branch is the rarely taken
//! "long code" one; the dependency chain per lookup is shift → load → shift, and each
//! thread interleaves four chunks so four such chains overlap. The exponent bytes go to the
//! upper half of the chunk's own output (viewed as bytes); a second pass, still in cache,
//! widens them in place with the sign|mantissa bytes into BF16 (SIMD with AVX2 where the
//! CPU has it; the portable loop auto-vectorizes elsewhere).

use std::ops::Range;

use crate::dfloat::huffman::{canonical_codes, validate_lengths, NSYM};
use crate::dfloat::Df11View;
use crate::error::{Error, Result};

const LINK: u32 = 1 << 31;
/// Chunks decoded at once by one thread (independent dependency chains).
const INTERLEAVE: usize = 4;

/// Window of the multi-symbol table, in bits.
const MULTI_BITS: u32 = 12;
/// Most codes one multi-symbol entry holds (bytes 0..6 of the entry).
const MULTI_MAX: u32 = 6;
/// Lookups per refill: as many windows as fit in the 57 valid bits of a refill.
const MULTI_LOOKUPS: usize = (57 / MULTI_BITS) as usize;
/// Most values one refill writes.
const MULTI_ADVANCE: usize = MULTI_LOOKUPS * MULTI_MAX as usize;
/// Bytes one refill may store to: 8-byte stores at offsets ≤ (lookups - 1) × 6.
const MULTI_STORE: usize = (MULTI_LOOKUPS - 1) * MULTI_MAX as usize + 8;
/// Output room the checked refill asks for (a power of two ≥ MULTI_STORE).
const MULTI_MARGIN: usize = MULTI_STORE.next_power_of_two();

/// Which decoding loop to run. [`Kernel::Multi12`] is the default everywhere; the
/// reference is for tests and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// One code at a time through the per-symbol tables (the reference decoder).
    Reference,
    /// 12-bit multi-symbol table, exponent bytes widened in place by a SIMD pass.
    Multi12,
}

/// Decode state of one span: next bit, next output index.
struct Stream {
    pos: usize,
    i: usize,
}

/// Decoding tables for one code. Build once per code (cheap: a few KiB), reuse for every
/// call; decoding allocates nothing.
#[derive(Clone, Debug)]
pub struct Df11Decoder {
    lengths: [u8; NSYM],
    nsym: usize,
    /// 12-bit multi-symbol table (see module docs).
    multi: Box<[u64; 1 << MULTI_BITS]>,
    /// Per-symbol tables: 256-entry blocks, block 0 first.
    tables: Vec<u32>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_model(format!("DFloat11: {}", msg.into()))
}

/// 64 bits of `bs` starting at bit `pos`, MSB-first; bits past the end read as 0.
#[inline]
fn peek(bs: &[u8], pos: usize) -> u64 {
    let byte = pos >> 3;
    let w = if byte + 8 <= bs.len() {
        u64::from_be_bytes(bs[byte..byte + 8].try_into().expect("8 bytes"))
    } else {
        let mut tmp = [0u8; 8];
        if byte < bs.len() {
            let rest = &bs[byte..];
            tmp[..rest.len()].copy_from_slice(rest);
        }
        u64::from_be_bytes(tmp)
    };
    w << (pos & 7)
}

/// What to decode for one chunk.
#[derive(Default)]
struct ChunkPlan {
    index: usize,
    elems: Range<usize>,
    start: usize,
}

/// Check chunk `k`'s index entry; `None` for the empty last chunk.
fn plan(t: &Df11View<'_>, k: usize, r: &Range<usize>) -> Result<Option<ChunkPlan>> {
    t.check_chunk(k)?;
    let e0 = t.chunk_elem.get(k) as usize;
    let e1 = if k + 1 < t.num_chunks() {
        t.chunk_elem.get(k + 1) as usize
    } else {
        t.n
    };
    if e0 >= e1 {
        return Ok(None); // check_chunk allows this only for the last chunk
    }
    // check_chunk of k and k-1 keep e0..e1 inside r; keep the slicing panic-free anyway.
    if e0 < r.start || e1 > r.end {
        return Err(bad(format!("chunk {k} elements {e0}..{e1} outside {r:?}")));
    }
    Ok(Some(ChunkPlan {
        index: k,
        elems: e0..e1,
        start: t.start_bit(k),
    }))
}

/// Chunk `k`'s codes ended at bit `end`: that must be where the next chunk's first code
/// starts, or for the last codes of the stream, inside its final byte.
fn check_end(t: &Df11View<'_>, k: usize, end: usize) -> Result<()> {
    let nch = t.num_chunks();
    let e1 = if k + 1 < nch {
        t.chunk_elem.get(k + 1) as usize
    } else {
        t.n
    };
    if k + 1 < nch && e1 < t.n {
        let want = t.start_bit(k + 1);
        if end != want {
            return Err(bad(format!(
                "chunk {k} ends at bit {end} but chunk {} starts at bit {want}",
                k + 1
            )));
        }
        return Ok(());
    }
    let total_bits = t.bitstream.len() * 8;
    if end > total_bits || end + 8 <= total_bits {
        return Err(bad(format!(
            "last code ends at bit {end}, bitstream has {total_bits} bits"
        )));
    }
    Ok(())
}

/// out[i] |= sign and mantissa of sm[i], in BF16 position.
#[inline]
fn combine(out: &mut [u16], sm: &[u8]) {
    for (o, &s) in out.iter_mut().zip(sm) {
        let s = s as u16;
        *o |= ((s & 0x80) << 8) | (s & 0x7f);
    }
}

/// Run `$self.$f` on the first `$m` (1..=4) spans, interleaved, storing their end bits.
macro_rules! interleave {
    ($self:ident, $f:ident, $bs:expr, $st:expr, $ends:expr, $m:expr, $o0:ident, $o1:ident, $o2:ident, $o3:ident) => {
        match $m {
            0 => {}
            1 => $ends[..1].copy_from_slice(&$self.$f($bs, [$st[0]], [&mut **$o0])?),
            2 => $ends[..2].copy_from_slice(&$self.$f(
                $bs,
                [$st[0], $st[1]],
                [&mut **$o0, &mut **$o1],
            )?),
            3 => $ends[..3].copy_from_slice(&$self.$f(
                $bs,
                [$st[0], $st[1], $st[2]],
                [&mut **$o0, &mut **$o1, &mut **$o2],
            )?),
            _ => $ends.copy_from_slice(&$self.$f(
                $bs,
                $st,
                [&mut **$o0, &mut **$o1, &mut **$o2, &mut **$o3],
            )?),
        }
    };
}

/// BF16 from sign|mantissa byte `s` and exponent byte `e`.
#[inline(always)]
fn bf16_of(s: u8, e: u8) -> u16 {
    let s = s as u16;
    ((s & 0x80) << 8) | ((e as u16) << 7) | (s & 0x7f)
}

/// Block of the in-place merge.
const MERGE_BLOCK: usize = 32;

/// `out` holds its exponents as bytes in its upper half (bytes `n..2n` of `out` viewed as
/// bytes); replace them with the BF16 values, merging in `sm`. Forward, block by block:
/// writing values `i..i+B` (bytes `2i..2i+2B`) overwrites exponent bytes `2i-n..2i+2B-n`,
/// all `< i+B` (as `i + B <= n`), i.e. only ones this or an earlier block already read.
#[inline(always)]
fn merge_in_place_body(out: &mut [u16], sm: &[u8]) {
    let n = out.len().min(sm.len());
    let mut i = 0;
    while i + MERGE_BLOCK <= n {
        let bytes: &[u8] = bytemuck::cast_slice(&*out);
        let e: [u8; MERGE_BLOCK] = bytes[n + i..n + i + MERGE_BLOCK].try_into().expect("block");
        let s: &[u8; MERGE_BLOCK] = sm[i..i + MERGE_BLOCK].try_into().expect("block");
        let o: &mut [u16; MERGE_BLOCK] = (&mut out[i..i + MERGE_BLOCK]).try_into().expect("block");
        for k in 0..MERGE_BLOCK {
            o[k] = bf16_of(s[k], e[k]);
        }
        i += MERGE_BLOCK;
    }
    // Tail: value i overwrites exponent bytes 2i-n and 2i+1-n, both <= i.
    while i < n {
        let e = bytemuck::cast_slice::<u16, u8>(&*out)[out.len() + i];
        out[i] = bf16_of(sm[i], e);
        i += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn merge_in_place_avx2(out: &mut [u16], sm: &[u8]) {
    merge_in_place_body(out, sm)
}

/// BMI2, unless `SUANPAN_FORCE_SCALAR` (see [`crate::backend::cpu::features`]).
#[cfg(target_arch = "x86_64")]
fn has_bmi2() -> bool {
    crate::backend::cpu::features::cpu().bmi2
}

/// AVX2, unless `SUANPAN_FORCE_SCALAR`.
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    crate::backend::cpu::features::cpu().avx2
}

/// See [`merge_in_place_body`]; AVX2 code where the CPU has it.
fn merge_in_place(out: &mut [u16], sm: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time); the function is safe code.
        unsafe { merge_in_place_avx2(out, sm) };
        return;
    }
    merge_in_place_body(out, sm)
}

impl Df11Decoder {
    /// Build the tables for `lengths` after checking they form a valid prefix code
    /// (see [`validate_lengths`]); invalid lengths are [`Error::BadModel`].
    pub fn new(lengths: &[u8; NSYM]) -> Result<Self> {
        let nsym = validate_lengths(lengths)?;
        let codes = canonical_codes(lengths);
        let mut tables = vec![0u32; 256];
        for s in 0..NSYM {
            let l = lengths[s] as u32;
            if l == 0 {
                continue;
            }
            let c = codes[s];
            let mut block = 0usize;
            let mut depth = 0u32;
            loop {
                let rem = l - depth;
                if rem <= 8 {
                    let base = ((c & ((1u32 << rem) - 1)) << (8 - rem)) as usize;
                    let leaf = (l << 8) | s as u32;
                    for e in &mut tables[block * 256 + base..block * 256 + base + (1 << (8 - rem))]
                    {
                        if *e != 0 {
                            return Err(Error::Internal("DFloat11: table collision".into()));
                        }
                        *e = leaf;
                    }
                    break;
                }
                let idx = block * 256 + ((c >> (rem - 8)) & 0xff) as usize;
                let e = tables[idx];
                block = if e & LINK != 0 {
                    (e & !LINK) as usize
                } else if e == 0 {
                    let nb = tables.len() / 256;
                    tables[idx] = LINK | nb as u32;
                    tables.resize(tables.len() + 256, 0);
                    nb
                } else {
                    return Err(Error::Internal("DFloat11: table collision".into()));
                };
                depth += 8;
            }
        }
        let mut dec = Df11Decoder {
            lengths: *lengths,
            nsym,
            multi: Box::new([0u64; 1 << MULTI_BITS]),
            tables,
        };
        for x in 0..1usize << MULTI_BITS {
            let mut used = 0u32;
            let mut k = 0u32;
            let mut entry = 0u64;
            while k < MULTI_MAX {
                // The window's bits after `used` at the top of a u64, zeros after it: a code
                // found with a length inside the window is made of real window bits only.
                let b = ((x as u64) << (64 - MULTI_BITS)) << used;
                match dec.decode_one(b) {
                    Some((sym, len)) if len <= MULTI_BITS - used => {
                        entry |= (sym as u64) << (8 * k);
                        used += len;
                        k += 1;
                    }
                    _ => break,
                }
            }
            if k > 0 {
                dec.multi[x] = entry | (used as u64) << 48 | (k as u64) << 56;
            }
        }
        Ok(dec)
    }

    /// The code lengths this decoder was built for.
    pub fn lengths(&self) -> &[u8; NSYM] {
        &self.lengths
    }

    /// Number of symbols in the code.
    pub fn num_symbols(&self) -> usize {
        self.nsym
    }

    /// The per-symbol tables (module docs): 256-entry blocks, block 0 first; an entry is a
    /// leaf `len << 8 | exponent`, `1 << 31 | block` for a longer code, or 0 for no code.
    /// The GPU decoder uploads exactly these.
    pub fn symbol_tables(&self) -> &[u32] {
        &self.tables
    }

    /// Memory held by the tables, in bytes.
    pub fn table_bytes(&self) -> usize {
        256 * 8 + 8 * (1 << MULTI_BITS) + 4 * self.tables.len()
    }

    /// Decode one code from the top of `b` (≥ 32 valid bits): (exponent, length).
    #[inline]
    fn decode_one(&self, b: u64) -> Option<(u8, u32)> {
        let mut block = 0usize;
        for level in 0..4 {
            let idx = ((b << (8 * level)) >> 56) as usize;
            let e = self.tables[block * 256 + idx];
            if e & LINK != 0 {
                block = (e & !LINK) as usize;
                continue;
            }
            let len = (e >> 8) & 63;
            return (len != 0).then_some((e as u8, len));
        }
        None
    }

    /// One refill of the Multi12 loop on stream `s`, writing exponent bytes to `eb`: an
    /// unaligned 64-bit load, then up to four 12-bit lookups (or short lookups followed by
    /// one long code). Requires `s.i + MULTI_MARGIN <= eb.len()` and
    /// `s.pos / 8 + 8 <= bs.len()`. `None`: a bit pattern that is no code.
    #[inline(always)]
    fn multi_step(&self, bs: &[u8], eb: &mut [u8], s: &mut Stream) -> Option<()> {
        let byte = s.pos >> 3;
        let w = u64::from_be_bytes(bs[byte..byte + 8].try_into().expect("8 bytes"));
        // ≥ 57 valid bits at the top of b.
        let mut b = w << (s.pos & 7);
        let o: &mut [u8; MULTI_MARGIN] = (&mut eb[s.i..s.i + MULTI_MARGIN])
            .try_into()
            .expect("margin");
        // Σ (bits | count << 8) of the entries used.
        let mut acc = 0u64;
        let mut k = 0usize;
        for _ in 0..MULTI_LOOKUPS {
            let e = self.multi[(b >> (64 - MULTI_BITS)) as usize];
            if e == 0 {
                // A code longer than 12 bits (or no code) needs 32 valid bits: 57 - 25.
                if acc & 0xff <= 25 {
                    let (sym, len) = self.decode_one(b)?;
                    o[k & (MULTI_MARGIN - 1)] = sym;
                    k += 1;
                    acc += len as u64;
                }
                break;
            }
            // k ≤ MULTI_STORE - 8 here, so the store stays inside the margin; the `min`
            // (a no-op) only lets the compiler drop the bounds check.
            let at = k.min(MULTI_MARGIN - 8);
            o[at..at + 8].copy_from_slice(&e.to_le_bytes());
            let meta = e >> 48;
            k += (meta >> 8) as usize;
            acc += meta;
            b = b.wrapping_shl(meta as u32); // shifts by meta & 63 = code bits
        }
        s.pos += (acc & 0xff) as usize;
        s.i += k;
        Some(())
    }

    /// [`Self::multi_step`] without bounds checks, for the unchecked rounds of
    /// [`Self::multi_spans`]. `false`: a bit pattern that is no code (nothing consumed at it).
    ///
    /// # Safety
    /// The 8 bytes at `bs + *pos / 8` are readable and the `MULTI_STORE` bytes at
    /// `eb + *idx` writable.
    #[inline(always)]
    unsafe fn multi_step_raw(
        &self,
        bs: *const u8,
        eb: *mut u8,
        pos: &mut usize,
        idx: &mut usize,
    ) -> bool {
        // SAFETY: the caller guarantees the 8 bytes at pos/8.
        let w = unsafe { bs.add(*pos >> 3).cast::<u64>().read_unaligned() };
        let mut b = u64::from_be(w) << (*pos & 7);
        // SAFETY: the caller guarantees MULTI_STORE writable bytes at idx.
        let o = unsafe { eb.add(*idx) };
        let mut acc = 0u64;
        let mut k = 0usize;
        let mut ok = true;
        for _ in 0..MULTI_LOOKUPS {
            let e = self.multi[(b >> (64 - MULTI_BITS)) as usize];
            if e == 0 {
                if acc & 0xff <= 25 {
                    match self.decode_one(b) {
                        Some((sym, len)) => {
                            // SAFETY: k ≤ MULTI_STORE - 8 (below).
                            unsafe { o.add(k).write(sym) };
                            k += 1;
                            acc += len as u64;
                        }
                        None => ok = false,
                    }
                }
                break;
            }
            // SAFETY: k ≤ (lookups - 1) × MULTI_MAX before the last lookup, so
            // k + 8 ≤ MULTI_STORE.
            unsafe { o.add(k).cast::<u64>().write_unaligned(e.to_le()) };
            let meta = e >> 48;
            k += (meta >> 8) as usize;
            acc += meta;
            b = b.wrapping_shl(meta as u32);
        }
        *pos += (acc & 0xff) as usize;
        *idx += k;
        ok
    }

    /// `rounds` refills of four streams, unrolled so that every stream's state stays in
    /// registers. `false`: a bit pattern that is no code.
    ///
    /// # Safety
    /// As [`Self::multi_step_raw`], for `rounds` refills of each stream.
    #[inline(always)]
    unsafe fn multi_rounds4(
        &self,
        bs: *const u8,
        eb: [*mut u8; 4],
        pos: &mut [usize; 4],
        idx: &mut [usize; 4],
        rounds: usize,
    ) -> bool {
        let [mut p0, mut p1, mut p2, mut p3] = *pos;
        let [mut i0, mut i1, mut i2, mut i3] = *idx;
        let mut ok = true;
        for _ in 0..rounds {
            // SAFETY: the caller guarantees `rounds` refills of each stream are in bounds.
            unsafe {
                ok &= self.multi_step_raw(bs, eb[0], &mut p0, &mut i0);
                ok &= self.multi_step_raw(bs, eb[1], &mut p1, &mut i1);
                ok &= self.multi_step_raw(bs, eb[2], &mut p2, &mut i2);
                ok &= self.multi_step_raw(bs, eb[3], &mut p3, &mut i3);
            }
            if !ok {
                break;
            }
        }
        *pos = [p0, p1, p2, p3];
        *idx = [i0, i1, i2, i3];
        ok
    }

    /// Finish a Multi12 stream one code at a time (fast steps while possible, then
    /// bounds-checked single codes). Returns the bit position after the last code.
    fn multi_finish(&self, bs: &[u8], eb: &mut [u8], mut s: Stream) -> Result<usize> {
        let n = eb.len();
        while s.i + MULTI_MARGIN <= n && (s.pos >> 3) + 8 <= bs.len() {
            if self.multi_step(bs, eb, &mut s).is_none() {
                return Err(bad(format!("bit pattern near bit {} is not a code", s.pos)));
            }
        }
        let mut pos = s.pos;
        for o in &mut eb[s.i..] {
            let (sym, len) = self.reference_one(bs, pos)?;
            *o = sym;
            pos += len as usize;
        }
        Ok(pos)
    }

    /// Multi12 counterpart of [`Self::decode_spans`]: span `j` is `ebs[j].len()` exponent
    /// bytes from bit `starts[j]`. Compiled with BMI2 (flag-free variable shifts) where the
    /// CPU has it.
    fn multi_spans<const N: usize>(
        &self,
        bs: &[u8],
        starts: [usize; N],
        ebs: [&mut [u8]; N],
    ) -> Result<[usize; N]> {
        #[cfg(target_arch = "x86_64")]
        if has_bmi2() {
            // SAFETY: the CPU supports BMI2 (checked at run time); the function is safe code.
            return unsafe { self.multi_spans_bmi2(bs, starts, ebs) };
        }
        self.multi_spans_body(bs, starts, ebs)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "bmi2")]
    fn multi_spans_bmi2<const N: usize>(
        &self,
        bs: &[u8],
        starts: [usize; N],
        ebs: [&mut [u8]; N],
    ) -> Result<[usize; N]> {
        self.multi_spans_body(bs, starts, ebs)
    }

    #[inline(always)]
    fn multi_spans_body<const N: usize>(
        &self,
        bs: &[u8],
        starts: [usize; N],
        ebs: [&mut [u8]; N],
    ) -> Result<[usize; N]> {
        let mut pos = starts;
        let mut idx = [0usize; N];
        let lens: [usize; N] = std::array::from_fn(|j| ebs[j].len());
        let ptrs: [*mut u8; N] = ebs.each_ref().map(|e| e.as_ptr() as *mut u8);
        'outer: loop {
            // Refills every stream can take with no check at all. A refill reads the 8 bytes
            // at byte pos/8 and consumes ≤ 57 bits; it stores to MULTI_STORE bytes from idx
            // and advances idx by ≤ MULTI_ADVANCE. So R refills are in bounds when
            // pos + 57(R-1) + 64 ≤ 8·bs.len() and idx + ADVANCE(R-1) + STORE ≤ len.
            let mut rounds = usize::MAX;
            for j in 0..N {
                let (bits, p) = (8 * bs.len(), pos[j]);
                let r_in = if bits >= p + 64 {
                    (bits - p - 64) / 57 + 1
                } else {
                    0
                };
                let r_out = if lens[j] >= idx[j] + MULTI_STORE {
                    (lens[j] - idx[j] - MULTI_STORE) / MULTI_ADVANCE + 1
                } else {
                    0
                };
                rounds = rounds.min(r_in).min(r_out);
            }
            if rounds == 0 {
                break;
            }
            if let (Ok(p4), Ok(i4), Ok(e4)) = (
                <&mut [usize; 4]>::try_from(&mut pos[..]),
                <&mut [usize; 4]>::try_from(&mut idx[..]),
                <&[*mut u8; 4]>::try_from(&ptrs[..]),
            ) {
                // SAFETY: as below, for the four streams.
                if !unsafe { self.multi_rounds4(bs.as_ptr(), *e4, p4, i4, rounds) } {
                    break 'outer;
                }
                continue;
            }
            for _ in 0..rounds {
                let mut ok = true;
                for j in 0..N {
                    // SAFETY: `rounds` refills stay inside `bs` and `ebs[j]` (bounds above);
                    // the spans are disjoint (separate `&mut` slices).
                    ok &= unsafe {
                        self.multi_step_raw(bs.as_ptr(), ptrs[j], &mut pos[j], &mut idx[j])
                    };
                }
                if !ok {
                    break 'outer; // `multi_finish` reports it with the position
                }
            }
        }
        let st: [Stream; N] = std::array::from_fn(|j| Stream {
            pos: pos[j],
            i: idx[j],
        });
        let mut ends = [0usize; N];
        for j in 0..N {
            let s = Stream { ..st[j] };
            ends[j] = self.multi_finish(bs, ebs[j], s)?;
        }
        Ok(ends)
    }

    /// One code at bit `pos`, bounds-checked: (exponent, length).
    #[inline]
    fn reference_one(&self, bs: &[u8], pos: usize) -> Result<(u8, u32)> {
        let total_bits = bs.len() * 8;
        let (sym, len) = match self.decode_one(peek(bs, pos)) {
            Some(x) => x,
            None if pos + 32 > total_bits => {
                return Err(bad(format!(
                    "bitstream truncated (or invalid code) at bit {pos} of {total_bits}"
                )))
            }
            None => return Err(bad(format!("bit pattern at bit {pos} is not a code"))),
        };
        if pos + len as usize > total_bits {
            return Err(bad(format!(
                "bitstream truncated: code at bit {pos} needs {len} bits, only {total_bits} bits"
            )));
        }
        Ok((sym, len))
    }

    /// The reference decoder: one code at a time, `e << 7` into `out`. Returns the end bit.
    fn reference_span(&self, bs: &[u8], start: usize, out: &mut [u16]) -> Result<usize> {
        let mut pos = start;
        for o in out.iter_mut() {
            let (sym, len) = self.reference_one(bs, pos)?;
            *o = (sym as u16) << 7;
            pos += len as usize;
        }
        Ok(pos)
    }

    fn check_tensor(&self, t: &Df11View<'_>) -> Result<()> {
        if t.lengths != &self.lengths {
            return Err(Error::invalid(
                "DFloat11: decoder was built for different code lengths than the tensor's",
            ));
        }
        t.validate_sizes()
    }

    /// Decode chunks `chunks` of `t` into `out`, which receives exactly the elements
    /// [`Df11View::elem_range`]`(chunks)`. This is the per-task function for a thread pool:
    /// disjoint chunk ranges write disjoint parts of the output.
    ///
    /// Chunks are decoded four at a time (interleaved), so a task of at least four chunks
    /// runs at full speed; a single chunk decodes at roughly half the rate.
    ///
    /// Checks the index entries of these chunks, that each chunk's codes end exactly where
    /// the next chunk's first code starts (or, for the last chunk, within the final byte),
    /// and every code; any mismatch is [`Error::BadModel`].
    pub fn decode_range<'a>(
        &self,
        t: impl Into<Df11View<'a>>,
        chunks: Range<usize>,
        out: &mut [u16],
    ) -> Result<()> {
        self.decode_range_with(Kernel::Multi12, t, chunks, out)
    }

    /// [`Self::decode_range`] with a chosen [`Kernel`] (tests and benchmarks compare them).
    pub fn decode_range_with<'a>(
        &self,
        kernel: Kernel,
        t: impl Into<Df11View<'a>>,
        chunks: Range<usize>,
        out: &mut [u16],
    ) -> Result<()> {
        let t = t.into();
        self.check_tensor(&t)?;
        let r = t.elem_range(chunks.clone())?;
        if out.len() != r.len() {
            return Err(Error::invalid(format!(
                "DFloat11: output holds {} values, chunks {chunks:?} decode {}",
                out.len(),
                r.len()
            )));
        }
        let sm = t.sign_mantissa;
        let bs = t.bitstream;
        let mut k = chunks.start;
        let mut rest: &mut [u16] = out;
        let mut next_elem = r.start;
        while k < chunks.end {
            // Up to INTERLEAVE consecutive non-empty chunks; their output runs are adjacent.
            let mut plans: [ChunkPlan; INTERLEAVE] = Default::default();
            let mut m = 0;
            while m < INTERLEAVE && k < chunks.end {
                if let Some(p) = plan(&t, k, &r)? {
                    if p.elems.start != next_elem {
                        return Err(bad(format!(
                            "chunk {k} does not continue at element {next_elem}"
                        )));
                    }
                    next_elem = p.elems.end;
                    plans[m] = p;
                    m += 1;
                }
                k += 1;
            }
            let mut outs: [&mut [u16]; INTERLEAVE] = Default::default();
            for (o, p) in outs.iter_mut().zip(&plans[..m]) {
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(p.elems.len());
                *o = mine;
                rest = tail;
            }
            let st: [usize; INTERLEAVE] = std::array::from_fn(|j| plans[j].start);
            let mut ends = [0usize; INTERLEAVE];
            match kernel {
                Kernel::Reference => {
                    for j in 0..m {
                        ends[j] = self.reference_span(bs, st[j], outs[j])?;
                    }
                }
                Kernel::Multi12 => {
                    // Exponent bytes go to the upper half of each span's output.
                    let mut ebs = outs.each_mut().map(|o| {
                        let n = o.len();
                        &mut bytemuck::cast_slice_mut::<u16, u8>(o)[n..]
                    });
                    let [o0, o1, o2, o3] = &mut ebs;
                    interleave!(self, multi_spans, bs, st, ends, m, o0, o1, o2, o3);
                }
            }
            for (j, o) in outs.into_iter().take(m).enumerate() {
                check_end(&t, plans[j].index, ends[j])?;
                let sm = &sm[plans[j].elems.clone()];
                match kernel {
                    Kernel::Multi12 => merge_in_place(o, sm),
                    _ => combine(o, sm),
                }
            }
        }
        Ok(())
    }

    /// Decode chunk `k` alone (see [`Self::decode_range`]).
    pub fn decode_chunk<'a>(
        &self,
        t: impl Into<Df11View<'a>>,
        k: usize,
        out: &mut [u16],
    ) -> Result<()> {
        self.decode_range(t, k..k + 1, out)
    }

    /// Decode the whole tensor into `out` (`out.len()` must be `t.n`) on this thread.
    pub fn decode_into<'a>(&self, t: impl Into<Df11View<'a>>, out: &mut [u16]) -> Result<()> {
        self.decode_parallel(t, out, 1)
    }

    /// Decode the whole tensor with `threads` threads (`std::thread::scope`), each taking a
    /// contiguous run of chunks; the calling thread does the first run.
    pub fn decode_parallel<'a>(
        &self,
        t: impl Into<Df11View<'a>>,
        out: &mut [u16],
        threads: usize,
    ) -> Result<()> {
        self.decode_parallel_with(Kernel::Multi12, t, out, threads)
    }

    /// [`Self::decode_parallel`] with a chosen [`Kernel`] (tests and benchmarks).
    pub fn decode_parallel_with<'a>(
        &self,
        kernel: Kernel,
        t: impl Into<Df11View<'a>>,
        out: &mut [u16],
        threads: usize,
    ) -> Result<()> {
        let t = t.into();
        if threads == 0 {
            return Err(Error::invalid("DFloat11: thread count must be at least 1"));
        }
        self.check_tensor(&t)?;
        t.validate()?;
        if out.len() != t.n {
            return Err(Error::invalid(format!(
                "DFloat11: output holds {} values, tensor has {}",
                out.len(),
                t.n
            )));
        }
        let nch = t.num_chunks();
        let threads = threads.min(nch.max(1));
        if threads <= 1 {
            return self.decode_range_with(kernel, t, 0..nch, out);
        }
        // Contiguous chunk runs; each gets the matching slice of `out`.
        let mut jobs = Vec::with_capacity(threads);
        let mut rest = out;
        let mut consumed = 0usize;
        for j in 0..threads {
            let chunks = nch * j / threads..nch * (j + 1) / threads;
            let r = t.elem_range(chunks.clone())?;
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(r.end - consumed);
            consumed = r.end;
            rest = tail;
            jobs.push((chunks, mine));
        }
        let mut jobs = jobs.into_iter();
        let (first_chunks, first_out) = jobs.next().expect("threads >= 2");
        std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .map(|(c, o)| s.spawn(move || self.decode_range_with(kernel, t, c, o)))
                .collect();
            let mut res = self.decode_range_with(kernel, t, first_chunks, first_out);
            for h in handles {
                let r = h.join().unwrap_or_else(|_| {
                    Err(Error::Internal("DFloat11 decode thread panicked".into()))
                });
                if res.is_ok() {
                    res = r;
                }
            }
            res
        })
    }

    /// Decode the whole tensor into a new vector (convenience; allocates).
    pub fn decode<'a>(&self, t: impl Into<Df11View<'a>>) -> Result<Vec<u16>> {
        let t = t.into();
        let mut out = vec![0u16; t.n];
        self.decode_into(t, &mut out)?;
        Ok(out)
    }
}

/// Build a decoder for `t`'s code and decode it (convenience; allocates tables and output).
pub fn decode<'a>(t: impl Into<Df11View<'a>>) -> Result<Vec<u16>> {
    let t = t.into();
    Df11Decoder::new(t.lengths)?.decode(t)
}
