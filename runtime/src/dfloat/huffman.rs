//! Length-limited canonical Huffman codes over the 256 BF16 exponent values.
//!
//! * [`code_lengths`] turns symbol counts into optimal code lengths no longer than a limit
//!   `L` (package-merge, Larmore & Hirschberg 1990), so the result is exactly a Huffman code
//!   when the unrestricted Huffman code already fits in `L` bits, and the cheapest code of
//!   depth `L` otherwise.
//! * [`validate_lengths`] checks that 256 lengths describe a usable prefix code.
//! * [`canonical_codes`] rebuilds the codes from the lengths alone: symbols sorted by
//!   (length, symbol value) get consecutive codes, so only the lengths need to be stored.

use crate::error::{Error, Result};

/// Number of symbols: one per exponent value.
pub const NSYM: usize = 256;
/// Longest code length the format (and the decoder's tables) support.
pub const MAX_CODE_LEN: u8 = 32;
/// Default code length limit.
pub const DEFAULT_MAX_CODE_LEN: u8 = 32;

/// Optimal code lengths for `counts`, no longer than `max_len` bits.
///
/// Symbols with a zero count get length 0 (no code). A single used symbol gets length 1
/// (code `0`), so every value costs at least one bit and the bitstream stays self-delimiting.
/// No used symbol at all gives all zeros.
///
/// Errors with [`Error::InvalidArg`] if `max_len` is not in `1..=32` or if the used symbols
/// cannot fit in a code of that depth (more than `2^max_len` of them).
pub fn code_lengths(counts: &[u64; NSYM], max_len: u8) -> Result<[u8; NSYM]> {
    if max_len == 0 || max_len > MAX_CODE_LEN {
        return Err(Error::invalid(format!(
            "DFloat11: max code length {max_len} not in 1..={MAX_CODE_LEN}"
        )));
    }
    let used: Vec<usize> = (0..NSYM).filter(|&s| counts[s] > 0).collect();
    if used.len() > 1usize << max_len.min(16) {
        return Err(Error::invalid(format!(
            "DFloat11: {} symbols cannot have codes of at most {max_len} bits",
            used.len()
        )));
    }
    let weights: Vec<u64> = used.iter().map(|&s| counts[s]).collect();
    let lens = package_merge(&weights, max_len as u32);
    let mut out = [0u8; NSYM];
    for (&s, &l) in used.iter().zip(&lens) {
        out[s] = l;
    }
    Ok(out)
}

/// Package-merge: optimal lengths (≤ `max_len`) for positive `weights`, in input order.
///
/// Requires `weights.len() <= 2^max_len`. Lists are built from the deepest level up; each
/// holds the leaves and the packages (pairs) of the level below, sorted by weight with leaves
/// first on ties. The first `2n - 2` items of the top list form the solution; a leaf's code
/// length is the number of levels where it is selected, and since leaves keep their sorted
/// order in every list, the selected leaves of a level are always a prefix of the sorted leaves.
pub(crate) fn package_merge(weights: &[u64], max_len: u32) -> Vec<u8> {
    let n = weights.len();
    match n {
        0 => return Vec::new(),
        1 => return vec![1],
        _ => {}
    }
    debug_assert!(max_len >= 64 || (n as u128) <= 1u128 << max_len);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (weights[i], i));
    let leaves: Vec<u128> = order.iter().map(|&i| weights[i] as u128).collect();

    // lists[0] is the deepest level (max_len), lists.last() is level 1.
    let mut lists: Vec<Vec<(u128, bool)>> = Vec::with_capacity(max_len as usize);
    lists.push(leaves.iter().map(|&w| (w, true)).collect());
    for _ in 1..max_len {
        let prev = lists.last().expect("at least one list");
        let packages: Vec<u128> = prev.chunks_exact(2).map(|p| p[0].0 + p[1].0).collect();
        let mut merged = Vec::with_capacity(n + packages.len());
        let (mut a, mut b) = (0, 0);
        while a < n || b < packages.len() {
            if b == packages.len() || (a < n && leaves[a] <= packages[b]) {
                merged.push((leaves[a], true));
                a += 1;
            } else {
                merged.push((packages[b], false));
                b += 1;
            }
        }
        lists.push(merged);
    }

    let mut sorted_lens = vec![0u8; n];
    let mut take = 2 * n - 2;
    for list in lists.iter().rev() {
        if take == 0 {
            break;
        }
        let take_here = take.min(list.len());
        let leaves_taken = list[..take_here].iter().filter(|x| x.1).count();
        for l in &mut sorted_lens[..leaves_taken] {
            *l += 1;
        }
        take = 2 * (take_here - leaves_taken);
    }
    let mut lens = vec![0u8; n];
    for (rank, &i) in order.iter().enumerate() {
        lens[i] = sorted_lens[rank];
    }
    lens
}

/// Checks that `lengths` form a usable prefix code and returns the number of symbols in it.
///
/// Valid: all lengths ≤ 32 and either (a) no symbol (an empty tensor), (b) exactly one symbol
/// of length 1, or (c) a complete code: Kraft sum Σ 2^-len exactly 1. Oversubscribed codes
/// (sum > 1) are ambiguous and incomplete codes with several symbols are never produced by the
/// encoder; both are [`Error::BadModel`].
pub fn validate_lengths(lengths: &[u8; NSYM]) -> Result<usize> {
    let mut kraft: u64 = 0; // in units of 2^-32
    let mut nsym = 0;
    for (s, &l) in lengths.iter().enumerate() {
        if l > MAX_CODE_LEN {
            return Err(Error::bad_model(format!(
                "DFloat11: code length {l} of exponent {s} exceeds {MAX_CODE_LEN}"
            )));
        }
        if l > 0 {
            nsym += 1;
            kraft += 1u64 << (MAX_CODE_LEN - l);
        }
    }
    const ONE: u64 = 1 << MAX_CODE_LEN;
    if kraft > ONE {
        return Err(Error::bad_model(
            "DFloat11: code lengths are not a prefix code (Kraft sum > 1, oversubscribed)",
        ));
    }
    match nsym {
        0 => Ok(0),
        1 if kraft == ONE / 2 => Ok(1),
        1 => Err(Error::bad_model(
            "DFloat11: a single-symbol code must have length 1",
        )),
        _ if kraft < ONE => Err(Error::bad_model(
            "DFloat11: code lengths are incomplete (Kraft sum < 1)",
        )),
        _ => Ok(nsym),
    }
}

/// Canonical codes for valid `lengths` (see [`validate_lengths`]); `codes[s]` holds the
/// `lengths[s]` low bits of symbol `s`'s code, MSB first. Unused symbols get 0.
pub fn canonical_codes(lengths: &[u8; NSYM]) -> [u32; NSYM] {
    let mut syms: Vec<usize> = (0..NSYM).filter(|&s| lengths[s] > 0).collect();
    syms.sort_by_key(|&s| (lengths[s], s));
    let mut codes = [0u32; NSYM];
    let mut code: u64 = 0;
    let mut prev_len = 0u8;
    for &s in &syms {
        let l = lengths[s];
        code <<= l - prev_len;
        codes[s] = code as u32;
        code += 1;
        prev_len = l;
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain (unlimited) Huffman lengths by repeated merging of the two lightest nodes.
    fn huffman_lengths(w: &[u64]) -> Vec<u32> {
        if w.len() == 1 {
            return vec![1];
        }
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut heap: BinaryHeap<Reverse<(u128, usize)>> = BinaryHeap::new();
        let mut parent = vec![usize::MAX; 2 * w.len()];
        for (i, &x) in w.iter().enumerate() {
            heap.push(Reverse((x as u128, i)));
        }
        let mut next = w.len();
        while heap.len() > 1 {
            let Reverse((a, ia)) = heap.pop().unwrap();
            let Reverse((b, ib)) = heap.pop().unwrap();
            parent[ia] = next;
            parent[ib] = next;
            heap.push(Reverse((a + b, next)));
            next += 1;
        }
        (0..w.len())
            .map(|mut i| {
                let mut d = 0;
                while parent[i] != usize::MAX {
                    i = parent[i];
                    d += 1;
                }
                d
            })
            .collect()
    }

    fn cost(w: &[u64], l: &[u8]) -> u128 {
        w.iter().zip(l).map(|(&w, &l)| w as u128 * l as u128).sum()
    }

    fn kraft_is_one(l: &[u8]) -> bool {
        l.iter().map(|&l| 1u128 << (64 - l)).sum::<u128>() == 1u128 << 64
    }

    fn fib(n: usize) -> Vec<u64> {
        let mut f = vec![1u64, 1];
        while f.len() < n {
            let k = f.len();
            f.push(f[k - 1] + f[k - 2]);
        }
        f.truncate(n);
        f
    }

    #[test]
    fn matches_huffman_cost_when_unconstrained() {
        let mut s = 0x1234_5678_9abc_def0u64;
        for trial in 0..200 {
            let n = 2 + trial % 60;
            let w: Vec<u64> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    1 + s % 1000
                })
                .collect();
            let h = huffman_lengths(&w);
            let pm = package_merge(&w, 32);
            let hc: u128 = w.iter().zip(&h).map(|(&w, &l)| w as u128 * l as u128).sum();
            assert_eq!(cost(&w, &pm), hc, "trial {trial}");
            assert!(kraft_is_one(&pm));
        }
    }

    #[test]
    fn fibonacci_counts_hit_the_limit_exactly() {
        // Unrestricted Huffman on 40 Fibonacci weights is a 39-deep chain.
        let w = fib(40);
        assert_eq!(*huffman_lengths(&w).iter().max().unwrap(), 39);
        for limit in [32u32, 20, 12, 6] {
            let l = package_merge(&w, limit);
            assert_eq!(*l.iter().max().unwrap() as u32, limit, "limit {limit}");
            assert!(kraft_is_one(&l));
            // Heavier symbols never get longer codes.
            for i in 1..w.len() {
                assert!(l[i] <= l[i - 1]);
            }
        }
        // With a loose limit, package-merge is plain Huffman again.
        let l = package_merge(&w, 63);
        assert_eq!(*l.iter().max().unwrap(), 39);
    }

    #[test]
    fn all_256_symbols_and_limits() {
        let mut counts = [0u64; NSYM];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = fib(60)[i % 60].max(1);
        }
        for limit in [8u8, 9, 16, 32] {
            let l = code_lengths(&counts, limit).unwrap();
            assert!(l.iter().all(|&x| x >= 1 && x <= limit));
            assert_eq!(validate_lengths(&l).unwrap(), 256);
        }
        assert!(code_lengths(&counts, 7).is_err());
        assert!(code_lengths(&counts, 33).is_err());
        assert!(code_lengths(&counts, 0).is_err());
    }

    #[test]
    fn degenerate_counts() {
        let mut counts = [0u64; NSYM];
        assert_eq!(code_lengths(&counts, 32).unwrap(), [0; NSYM]);
        counts[127] = 5;
        let l = code_lengths(&counts, 32).unwrap();
        assert_eq!(l[127], 1);
        assert_eq!(validate_lengths(&l).unwrap(), 1);
        counts[3] = 1;
        let l = code_lengths(&counts, 1).unwrap();
        assert_eq!((l[3], l[127]), (1, 1));
    }

    #[test]
    fn validation_rejects_bad_codes() {
        let mut l = [0u8; NSYM];
        l[0] = 1;
        l[1] = 1;
        l[2] = 1; // 3/2 > 1
        assert!(validate_lengths(&l).is_err());
        let mut l = [0u8; NSYM];
        l[0] = 1;
        l[1] = 2; // 3/4 < 1, incomplete
        assert!(validate_lengths(&l).is_err());
        let mut l = [0u8; NSYM];
        l[9] = 2; // single symbol, wrong length
        assert!(validate_lengths(&l).is_err());
        let mut l = [8u8; NSYM];
        assert_eq!(validate_lengths(&l).unwrap(), 256);
        l[0] = 33;
        assert!(validate_lengths(&l).is_err());
    }

    #[test]
    fn canonical_codes_are_prefix_free_and_ordered() {
        let mut l = [0u8; NSYM];
        l[10] = 1;
        l[20] = 2;
        l[5] = 3;
        l[7] = 3;
        validate_lengths(&l).unwrap();
        let c = canonical_codes(&l);
        assert_eq!((c[10], c[20], c[5], c[7]), (0b0, 0b10, 0b110, 0b111));
    }
}
