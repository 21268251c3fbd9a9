//! DFloat11 decoding on the runtime's persistent thread pool (the inference path), and
//! decoding of an element range alone (embedding rows).

use std::ops::Range;
use std::sync::Mutex;

use super::decode::Df11Decoder;
use super::tensor::Df11View;
use crate::backend::cpu::pool::{split_range, Pool};
use crate::error::{Error, Result};

/// Output pointer shared by the pool's threads; each writes its own element range.
struct OutPtr(*mut u16);
// SAFETY: threads write the disjoint element ranges of disjoint chunk ranges.
unsafe impl Sync for OutPtr {}

/// Decode all of `t` into `out` (`out.len() == t.n`), the chunks split over `pool`.
/// `t` must have passed [`Df11View::validate`] (done once at model load); each thread
/// still checks the index entries and codes of its own chunks, so corrupt data is an
/// error, never an out-of-bounds access.
pub fn decode_pool(pool: &Pool, dec: &Df11Decoder, t: Df11View<'_>, out: &mut [u16]) -> Result<()> {
    if out.len() != t.n {
        return Err(Error::invalid(format!(
            "DFloat11: output holds {} values, tensor has {}",
            out.len(),
            t.n
        )));
    }
    let nch = t.num_chunks();
    let err: Mutex<Option<Error>> = Mutex::new(None);
    let p = OutPtr(out.as_mut_ptr());
    let p = &p;
    pool.run(|ith, nth| {
        let chunks = split_range(nch, 1, ith, nth);
        let res = t.elem_range(chunks.clone()).and_then(|r| {
            if r.end > t.n || r.start > r.end {
                return Err(Error::bad_model("DFloat11: chunk index outside the tensor"));
            }
            // SAFETY: `r` lies within `0..t.n == out.len()` (checked above), and the
            // element ranges of disjoint chunk ranges are disjoint (the index is
            // non-decreasing, validated at load and re-checked by `elem_range`).
            let o = unsafe { std::slice::from_raw_parts_mut(p.0.add(r.start), r.len()) };
            dec.decode_range(t, chunks, o)
        });
        if let Err(e) = res {
            let mut g = err.lock().unwrap_or_else(|p| p.into_inner());
            g.get_or_insert(e);
        }
    });
    match err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Chunks whose decoded elements cover `elems` (the smallest such run).
pub fn chunks_covering(t: &Df11View<'_>, elems: &Range<usize>) -> Range<usize> {
    let nch = t.num_chunks();
    let first = |e: usize| {
        // Number of chunks whose first element is <= e.
        let (mut lo, mut hi) = (0usize, nch);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if (t.chunk_elem.get(mid) as usize) <= e {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let k0 = first(elems.start).saturating_sub(1);
    // First chunk starting at or after the end.
    let (mut lo, mut hi) = (k0 + 1, nch);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if (t.chunk_elem.get(mid) as usize) < elems.end {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    k0..lo.max(k0 + 1).min(nch)
}

/// Decode elements `elems` of `t` into `out` (`out.len() == elems.len()`), decoding the
/// covering chunks into `tmp` (grown as needed, reused across calls).
pub fn decode_elems(
    dec: &Df11Decoder,
    t: Df11View<'_>,
    elems: Range<usize>,
    tmp: &mut Vec<u16>,
    out: &mut [u16],
) -> Result<()> {
    if elems.start > elems.end || elems.end > t.n || out.len() != elems.len() {
        return Err(Error::invalid(format!(
            "DFloat11: element range {elems:?} of {} into {} values",
            t.n,
            out.len()
        )));
    }
    if elems.is_empty() {
        return Ok(());
    }
    let chunks = chunks_covering(&t, &elems);
    let r = t.elem_range(chunks.clone())?;
    if r.start > elems.start || r.end < elems.end {
        return Err(Error::bad_model(
            "DFloat11: chunk index does not cover the range",
        ));
    }
    if tmp.len() < r.len() {
        tmp.resize(r.len(), 0);
    }
    dec.decode_range(t, chunks, &mut tmp[..r.len()])?;
    out.copy_from_slice(&tmp[elems.start - r.start..elems.end - r.start]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dfloat::{encode_with, EncodeParams};

    fn values(n: usize) -> Vec<u16> {
        (0..n)
            .map(|i| half::bf16::from_f32(((i * 7919) as f32).sin() * 0.03).to_bits())
            .collect()
    }

    #[test]
    fn pool_decode_and_ranges_equal_the_input() {
        let v = values(50_000);
        let p = EncodeParams {
            chunk_bytes: 64,
            ..Default::default()
        };
        let t = encode_with(&v, &p).unwrap();
        let dec = Df11Decoder::new(&t.lengths).unwrap();
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads).unwrap();
            let mut out = vec![0u16; v.len()];
            decode_pool(&pool, &dec, t.view(), &mut out).unwrap();
            assert_eq!(out, v);
        }
        let mut tmp = Vec::new();
        for r in [
            0..1,
            0..576,
            1000..1576,
            49_000..50_000,
            49_999..50_000,
            7..7,
        ] {
            let mut out = vec![0u16; r.len()];
            decode_elems(&dec, t.view(), r.clone(), &mut tmp, &mut out).unwrap();
            assert_eq!(out, &v[r]);
        }
        let mut out = vec![0u16; 2];
        assert!(decode_elems(&dec, t.view(), 49_999..50_001, &mut tmp, &mut out).is_err());
    }
}
