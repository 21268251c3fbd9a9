//! DFloat11 → BF16 decoder: table driven, chunk parallel.
//!
//! Two tables are built once per code (per [`Df11Decoder`]):
//!
//! * **Per-symbol tables** (the format's reference decoder; the same shape a GPU kernel uses):
//!   256-entry blocks of `u32`. Block 0 is indexed by the next 8 bits of the stream; an entry
//!   is a leaf `(symbol, code length)` for codes of ≤ 8 bits, or a link to another block
//!   indexed by the following 8 bits, and so on (4 levels cover 32-bit codes). An entry of 0
//!   is a bit pattern that no code starts with (possible only for the single-symbol code).
//! * **Fast table**: 256 `u64` entries, one per 8-bit window, holding every symbol that is
//!   *completely* inside the window (up to 3), already shifted into exponent position, plus
//!   the bits they use. One lookup yields ~2-3 exponents for LLM weights (their codes are
//!   2-4 bits); a window that starts with a code longer than 8 bits takes the per-symbol
//!   path.
//!
//! Hot loop: one unaligned big-endian 64-bit load per refill gives ≥ 57 valid bits, enough
//! for six 8-bit lookups (or short lookups followed by one code of up to 32 bits). A fast
//! entry is `lane0 | lane1 << 16 | lane2 << 32 | (bits | count << 6) << 48`: it is stored
//! whole as four u16 (the fourth lands on a slot a later write overwrites), its top 16 bits
//! shift the bit buffer directly (shifts use the low 6 bits) and, summed over a refill, give
//! both the bits and the values consumed. The only per-lookup branch is the rarely taken
//! "long code" one; the dependency chain per lookup is shift → load → shift, and each thread
//! interleaves four chunks so four such chains overlap. Exponents are written as `e << 7`; a
//! second pass over the chunk (still in L1, auto-vectorized) ORs in sign and mantissa: it
//! costs ~10% of decode time, less than doing it per lookup would.

use std::ops::Range;

use super::huffman::{canonical_codes, validate_lengths, NSYM};
use super::tensor::Df11View;
use crate::error::{Error, Result};

const LINK: u32 = 1 << 31;
/// Room a refill step needs in the output: 5 lookups × 3 values + one 4-lane write.
const FAST_MARGIN: usize = 19;

/// Chunks decoded at once by one thread (independent dependency chains).
const INTERLEAVE: usize = 4;

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
    /// Multi-symbol first-level table (see module docs).
    fast: Box<[u64; 256]>,
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
        let mut fast = Box::new([0u64; 256]);
        for (x, f) in fast.iter_mut().enumerate() {
            let mut used = 0u32;
            let mut k = 0u32;
            let mut entry = 0u64;
            while k < 3 {
                let e = tables[(x << used) & 0xff];
                let len = (e >> 8) & 63;
                if e & LINK != 0 || len == 0 || len > 8 - used {
                    break;
                }
                entry |= ((e & 0xff) as u64) << (7 + 16 * k);
                used += len;
                k += 1;
            }
            if k > 0 {
                *f = entry | ((k as u64) << 6 | used as u64) << 48;
            }
        }
        Ok(Df11Decoder {
            lengths: *lengths,
            nsym,
            fast,
            tables,
        })
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
        256 * 8 + 4 * self.tables.len()
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

    /// One refill of the fast loop on stream `s`: an unaligned 64-bit load, then up to six
    /// 8-bit lookups (or short lookups followed by one long code). Requires
    /// `s.i + FAST_MARGIN <= out.len()` and `s.pos / 8 + 8 <= bs.len()`. `None`: a bit
    /// pattern that is no code.
    #[inline(always)]
    fn refill_step(&self, bs: &[u8], out: &mut [u16], s: &mut Stream) -> Option<()> {
        let byte = s.pos >> 3;
        let w = u64::from_be_bytes(bs[byte..byte + 8].try_into().expect("8 bytes"));
        // ≥ 57 valid bits at the top of b.
        let mut b = w << (s.pos & 7);
        // Σ (len | nsym << 6) of the fast entries used: low 6 bits = bits consumed (≤ 48),
        // the rest = values written.
        let mut acc = 0u64;
        let mut i = s.i;
        for _ in 0..6 {
            let e = self.fast[(b >> 56) as usize];
            if e == 0 {
                // A code longer than 8 bits (or no code) needs 32 valid bits: 57 - 25.
                let used = (acc & 63) as u32;
                if used <= 25 {
                    let (sym, len) = self.decode_one(b)?;
                    out[i] = (sym as u16) << 7;
                    i += 1;
                    acc += len as u64;
                }
                break;
            }
            // Lanes 0..3 hold the exponents (<< 7), lane 3 is metadata: it lands on a slot
            // that the next write (or the tail loop) overwrites.
            let o: &mut [u16; 4] = (&mut out[i..i + 4]).try_into().expect("4 lanes");
            *o = [
                e as u16,
                (e >> 16) as u16,
                (e >> 32) as u16,
                (e >> 48) as u16,
            ];
            let meta = e >> 48;
            i += (meta >> 6) as usize;
            acc += meta;
            b = b.wrapping_shl(meta as u32); // shifts by meta & 63 = code bits
        }
        s.pos += (acc & 63) as usize;
        s.i = i;
        Some(())
    }

    #[inline(always)]
    fn can_step(bs: &[u8], n: usize, s: &Stream) -> bool {
        s.i + FAST_MARGIN <= n && (s.pos >> 3) + 8 <= bs.len()
    }

    /// Finish stream `s` one code at a time (fast steps while possible, then bounds-checked
    /// single codes). Returns the bit position after the last code.
    fn finish(&self, bs: &[u8], out: &mut [u16], mut s: Stream) -> Result<usize> {
        let n = out.len();
        while Self::can_step(bs, n, &s) {
            if self.refill_step(bs, out, &mut s).is_none() {
                return Err(bad(format!("bit pattern near bit {} is not a code", s.pos)));
            }
        }
        let total_bits = bs.len() * 8;
        let mut pos = s.pos;
        for o in &mut out[s.i..] {
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
            *o = (sym as u16) << 7;
            pos += len as usize;
        }
        Ok(pos)
    }

    /// Decode `N` spans at once, span `j` being `outs[j].len()` exponents from bit
    /// `starts[j]` (written as `e << 7`). Their dependency chains (lookup → shift → lookup)
    /// are independent, so interleaving them keeps the core busy. Returns each end bit.
    fn decode_spans<const N: usize>(
        &self,
        bs: &[u8],
        starts: [usize; N],
        outs: [&mut [u16]; N],
    ) -> Result<[usize; N]> {
        let mut st: [Stream; N] = std::array::from_fn(|j| Stream {
            pos: starts[j],
            i: 0,
        });
        'outer: loop {
            for j in 0..N {
                if !Self::can_step(bs, outs[j].len(), &st[j]) {
                    break 'outer;
                }
            }
            let mut ok = true;
            for j in 0..N {
                ok &= self.refill_step(bs, outs[j], &mut st[j]).is_some();
            }
            if !ok {
                break; // `finish` reports it with the position
            }
        }
        let mut ends = [0usize; N];
        for j in 0..N {
            let s = Stream { ..st[j] };
            ends[j] = self.finish(bs, outs[j], s)?;
        }
        Ok(ends)
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
            let [o0, o1, o2, o3] = outs;
            let mut ends = [0usize; INTERLEAVE];
            match m {
                0 => continue,
                1 => ends[..1].copy_from_slice(&self.decode_spans(bs, [st[0]], [&mut *o0])?),
                2 => ends[..2].copy_from_slice(&self.decode_spans(
                    bs,
                    [st[0], st[1]],
                    [&mut *o0, &mut *o1],
                )?),
                3 => ends[..3].copy_from_slice(&self.decode_spans(
                    bs,
                    [st[0], st[1], st[2]],
                    [&mut *o0, &mut *o1, &mut *o2],
                )?),
                _ => ends.copy_from_slice(&self.decode_spans(
                    bs,
                    st,
                    [&mut *o0, &mut *o1, &mut *o2, &mut *o3],
                )?),
            }
            for (j, o) in [o0, o1, o2, o3].into_iter().take(m).enumerate() {
                check_end(&t, plans[j].index, ends[j])?;
                combine(o, &sm[plans[j].elems.clone()]);
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
            return self.decode_range(t, 0..nch, out);
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
                .map(|(c, o)| s.spawn(move || self.decode_range(t, c, o)))
                .collect();
            let mut res = self.decode_range(t, first_chunks, first_out);
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
