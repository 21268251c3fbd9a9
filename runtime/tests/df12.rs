//! df12 codec: byte-exact roundtrips (every BF16 bit pattern, adversarial blocks, tiny and
//! odd sizes), every decode kernel against the reference, corrupt blobs refused with a
//! clear error, mutated blobs never panic. Real models: `df12_models.rs`.

use suanpan::backend::cpu::dfloat::df12_kernel::{decode_dense, Kernel};
use suanpan::backend::cpu::dfloat::Df12Decode;
use suanpan::dfloat::df12::{encode, encode_with, Df12View, DF12_HEADER_LEN};
use suanpan::dfloat::f32_to_bf16_rne;
use suanpan::Error;

/// splitmix64.
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
    fn normal(&mut self) -> f64 {
        let u1 = ((self.next() >> 11) as f64 / (1u64 << 53) as f64).max(1e-300);
        let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn normal_bf16(n: usize, std: f64, seed: u64) -> Vec<u16> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| f32_to_bf16_rne((r.normal() * std) as f32))
        .collect()
}

/// The scalar definition, independent of the kernels: each value rebuilt from its
/// sign|mantissa byte and code (escapes come out with exponent 0; the caller skips them).
fn decode_by_definition(v: &Df12View) -> Vec<u16> {
    (0..v.n)
        .map(|i| {
            let sm = v.sign_mantissa[i];
            let code = (v.codes[i / 2] >> (4 * (i % 2))) & 15;
            (u16::from(sm & 0x80) << 8)
                | (u16::from(v.table[code as usize]) << 7)
                | u16::from(sm & 0x7f)
        })
        .collect()
}

/// Encode, serialize, parse, decode with every kernel, whole and in odd pieces: the exact
/// input each time. Returns the blob.
fn roundtrip(values: &[u16], block: u32) -> Vec<u8> {
    let t = encode_with(values, block);
    let blob = t.to_bytes();
    assert_eq!(blob.len(), t.serialized_len());
    let v = Df12View::parse(&blob).unwrap();
    assert_eq!(v.n, values.len());
    assert_eq!(v.decode().unwrap(), values, "block {block}");
    // Non-escaped values follow the definition exactly; escaped ones differ only there.
    let def = decode_by_definition(&v);
    let escapes = (0..v.n)
        .filter(|&i| (v.codes[i / 2] >> (4 * (i % 2))) & 15 == 15)
        .count();
    assert_eq!(escapes, v.n_exceptions());
    for (i, (&d, &x)) in def.iter().zip(values).enumerate() {
        if (v.codes[i / 2] >> (4 * (i % 2))) & 15 != 15 {
            assert_eq!(d, x, "value {i}");
        }
    }
    for k in Kernel::available() {
        let mut out = vec![0x5555u16; values.len()];
        let mut at = 0;
        let mut w = 1;
        while at < values.len() {
            let end = (at + w).min(values.len());
            v.decode_range_with(k, at..end, &mut out[at..end]).unwrap();
            at = end;
            w = (w * 7 + 3) % 101;
        }
        assert_eq!(out, values, "{k:?} in pieces, block {block}");
        // The raw kernel (no escapes patched) equals the reference kernel everywhere.
        for r in [0..values.len(), 1.min(values.len())..values.len()] {
            let mut a = vec![0u16; r.len()];
            let mut b = vec![1u16; r.len()];
            decode_dense(
                Kernel::Reference,
                &v.table,
                v.sign_mantissa,
                v.codes,
                r.clone(),
                &mut a,
            );
            decode_dense(k, &v.table, v.sign_mantissa, v.codes, r.clone(), &mut b);
            assert_eq!(a, b, "{k:?} raw {r:?}");
        }
    }
    blob
}

#[test]
fn normal_weights_roundtrip_at_about_12_bits() {
    for (n, std) in [(100_000, 0.02), (4099, 1.0), (33, 1e-30)] {
        let v = normal_bf16(n, std, n as u64);
        for block in [64, 4096, 1 << 20] {
            let blob = roundtrip(&v, block);
            if n == 100_000 && block >= 4096 {
                let bits = 8.0 * blob.len() as f64 / n as f64;
                assert!(bits < 12.2, "{bits} bits per value");
            }
        }
    }
}

/// Every BF16 bit pattern: 256 exponents (far more than 15 per block), subnormals, ±0,
/// ±Inf, every NaN payload; in order and shuffled.
#[test]
fn every_bf16_bit_pattern() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    roundtrip(&all, 64);
    roundtrip(&all, 4096);
    let mut sh = all.clone();
    let mut r = Rng(5);
    for i in (1..sh.len()).rev() {
        sh.swap(i, r.below(i + 1));
    }
    let blob = roundtrip(&sh, 64);
    let v = Df12View::parse(&blob).unwrap();
    assert!(v.n_exceptions() > 60_000, "{}", v.n_exceptions());
}

#[test]
fn special_values_and_tiny_sizes() {
    let special = [
        0x0000u16, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81, 0x0001, 0x807f, 0x0080, 0x7f7f,
        0xff7f, 0x3f80, 0xbf80,
    ];
    for n in 0..=70 {
        let v: Vec<u16> = (0..n).map(|i| special[(i * 5) % special.len()]).collect();
        roundtrip(&v, 64);
    }
    // 17 distinct exponents inside one block, one of them rare.
    let v: Vec<u16> = (0..640)
        .map(|i| (((i % 17) as u16 + 100) << 7) | (i as u16 & 0x807f))
        .collect();
    let blob = roundtrip(&v, 64);
    assert!(Df12View::parse(&blob).unwrap().n_exceptions() > 0);
    // A single exponent: no exceptions at all.
    let blob = roundtrip(&[0x3f80; 1000], 64);
    assert_eq!(Df12View::parse(&blob).unwrap().n_exceptions(), 0);
}

fn is_bad_model<T: std::fmt::Debug>(r: suanpan::Result<T>) -> String {
    match r {
        Err(Error::BadModel(m)) => m,
        other => panic!("expected Error::BadModel, got {other:?}"),
    }
}

/// Each kind of corruption is refused with a message that says what is wrong.
#[test]
fn corrupt_blobs_are_errors() {
    // 200 values, block 64: 4 blocks; wide range so there are exceptions.
    let vals: Vec<u16> = (0..200u32)
        .map(|i| f32_to_bf16_rne(((i * 7919) as f32).sin() * 2f32.powi(i as i32 % 40 - 20)))
        .collect();
    let t = encode_with(&vals, 64);
    assert!(t.n_exceptions() >= 2);
    let good = t.to_bytes();
    Df12View::parse(&good).unwrap();
    let n = 200;
    let codes_at = DF12_HEADER_LEN + n;
    let exc_start_at = codes_at + n / 2;
    let exc_index_at = exc_start_at + 4 * 5;
    let exc_exp_at = exc_index_at + 4 * t.n_exceptions();
    let first_exc = t.exc_index[0] as usize;
    type Corrupt = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Corrupt, &str)> = vec![
        ("short", Box::new(|b| b.truncate(10)), "shorter than"),
        (
            "truncated",
            Box::new(|b| {
                b.pop();
            }),
            "truncated",
        ),
        ("extended", Box::new(|b| b.push(0)), "truncated"),
        ("magic", Box::new(|b| b[0] = b'X'), "magic"),
        ("version", Box::new(|b| b[4] = 2), "version"),
        ("reserved", Box::new(|b| b[6] = 1), "reserved"),
        ("block", Box::new(|b| b[16] = 65), "block"),
        (
            "block0",
            Box::new(|b| b[16..20].copy_from_slice(&0u32.to_le_bytes())),
            "block",
        ),
        ("escape table", Box::new(|b| b[24 + 15] = 3), "escape"),
        (
            "n huge",
            Box::new(|b| b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes())),
            "u32",
        ),
        (
            "exc count",
            Box::new(|b| b[20..24].copy_from_slice(&1000u32.to_le_bytes())),
            "exceptions",
        ),
        (
            "escape without exception",
            Box::new(move |b| {
                // Turn a non-escape code into 15.
                let i = (0..n)
                    .find(|&i| (b[codes_at + i / 2] >> (4 * (i % 2))) & 15 != 15)
                    .unwrap();
                b[codes_at + i / 2] |= 15 << (4 * (i % 2));
            }),
            "escape codes",
        ),
        (
            "exception on a non-escape",
            Box::new(move |b| {
                b[codes_at + first_exc / 2] &= !(15u8 << (4 * (first_exc % 2)));
            }),
            "not the escape",
        ),
        (
            "exception index out of its block",
            Box::new(move |b| {
                b[exc_index_at..exc_index_at + 4].copy_from_slice(&199u32.to_le_bytes())
            }),
            "outside block",
        ),
        (
            "exception index start",
            Box::new(move |b| b[exc_start_at] = 1),
            "exception index",
        ),
        (
            "exception index order",
            Box::new(move |b| {
                b[exc_start_at + 4..exc_start_at + 8].copy_from_slice(&1000u32.to_le_bytes())
            }),
            "block",
        ),
    ];
    for (name, f, want) in cases {
        let mut b = good.clone();
        f(&mut b);
        let m = is_bad_model(Df12View::parse(&b));
        assert!(m.contains(want), "{name}: {m}");
    }
    // The exponent of an exception is free (any value is a valid BF16): changing it
    // changes exactly that value.
    let mut b = good.clone();
    b[exc_exp_at] ^= 1;
    let d = Df12View::parse(&b).unwrap().decode().unwrap();
    let diff: Vec<usize> = (0..n).filter(|&i| d[i] != vals[i]).collect();
    assert_eq!(diff, vec![first_exc]);
    // Padding nibble of an odd count.
    let odd = encode_with(&vals[..199], 64).to_bytes();
    let mut b = odd.clone();
    b[DF12_HEADER_LEN + 199 + 99] |= 0x10;
    assert!(is_bad_model(Df12View::parse(&b)).contains("padding"));
    // A wrong output length is the caller's mistake.
    let v = Df12View::parse(&good).unwrap();
    let mut out = vec![0u16; 3];
    assert!(matches!(
        v.decode_range(0..4, &mut out),
        Err(Error::InvalidArg(_))
    ));
    assert!(matches!(
        v.decode_range(198..201, &mut out),
        Err(Error::InvalidArg(_))
    ));
}

/// Random mutations: parse refuses, or every kernel decodes the same values as the
/// definition (with escapes patched). Never a panic.
#[test]
fn mutated_blobs_never_panic() {
    let seeds = [
        encode_with(&normal_bf16(700, 0.05, 1), 64).to_bytes(),
        encode_with(&(0..=u16::MAX).step_by(97).collect::<Vec<_>>(), 64).to_bytes(),
        encode(&[]).to_bytes(),
    ];
    let mut r = Rng(9);
    let (mut ok, mut total) = (0, 0);
    for _ in 0..20_000 {
        let mut b = seeds[r.below(seeds.len())].clone();
        for _ in 0..1 + r.below(3) {
            if b.is_empty() {
                break;
            }
            match r.below(4) {
                0 => {
                    let i = r.below(b.len().min(64));
                    b[i] ^= 1 << r.below(8);
                }
                1 => {
                    let i = r.below(b.len());
                    b[i] = r.next() as u8;
                }
                2 => b.truncate(r.below(b.len() + 1)),
                _ => {
                    let i = r.below(b.len() + 1);
                    b.insert(i, r.next() as u8)
                }
            }
        }
        total += 1;
        if let Ok(v) = Df12View::parse(&b) {
            let want = v.decode().unwrap();
            for k in Kernel::available() {
                let mut out = vec![0u16; v.n];
                v.decode_range_with(k, 0..v.n, &mut out).unwrap();
                assert_eq!(out, want);
            }
            ok += 1;
        }
    }
    eprintln!("mutated df12 blobs: {ok} of {total} parsed (the rest refused)");
}
