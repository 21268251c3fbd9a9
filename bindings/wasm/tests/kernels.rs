//! The WebAssembly SIMD128 LUT kernel against the scalar reference, in a browser
//! (wasm-bindgen-test in headless Chromium; scripts/test-web runs it):
//!
//! ```text
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner CHROMEDRIVER=chromedriver \
//!   cargo test -p suanpan-wasm --target wasm32-unknown-unknown --test kernels
//! ```
//!
//! The dispatcher's kernel (`gemv_chunks`, SIMD128 in such a build) must equal the scalar
//! reference (`gemv_ref_chunks`, which reads the layout through its index formula) bit for
//! bit: every width 1–4, every group size, padded last chunks, chunk sub-ranges, ternary
//! and RTN matrices, and the extreme all-0 / all-max codes.
#![cfg(target_arch = "wasm32")]

use half::f16;
use suanpan::backend::cpu::lut::gemv::{chunk_rows, gemv_chunks, gemv_ref_chunks, simd_level};
use suanpan::backend::cpu::lut::table::LutTables;
use suanpan::lut::{LutMatrix, Method};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// xorshift64: deterministic inputs without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal, with a heavy tail (1 in 16 values ×6).
    fn heavy(&mut self) -> f32 {
        let v = ((0..4).map(|_| self.unit()).sum::<f32>() - 2.0) * 1.732;
        if self.next().is_multiple_of(16) {
            v * 6.0
        } else {
            v
        }
    }
}

fn assert_same(m: &LutMatrix, t: &LutTables, what: &str) -> usize {
    let n = m.chunks();
    let mut rows = 0;
    for range in [0..n, 0..0, 1.min(n)..n, 0..1, n - 1..n] {
        let rr = chunk_rows(m, &range);
        let (mut got, mut want) = (vec![0f32; rr.len()], vec![1f32; rr.len()]);
        gemv_chunks(m, t, range.clone(), &mut got).unwrap();
        gemv_ref_chunks(m, t, range.clone(), &mut want).unwrap();
        for (r, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{what} chunks {range:?} row {r}: {a} vs {b}"
            );
        }
        rows += rr.len();
    }
    rows
}

#[wasm_bindgen_test]
fn the_build_dispatches_to_simd128() {
    assert_eq!(simd_level(), "simd128");
}

#[wasm_bindgen_test]
fn simd128_gemv_is_bit_identical_to_the_reference_on_random_matrices() {
    let mut rng = Rng(0x5EED_0128);
    let (mut cases, mut rows_checked) = (0, 0);
    for bits in 1..=4 {
        for group in [32usize, 64, 128] {
            for (rows, mult) in [(1usize, 2usize), (5, 1), (31, 3), (33, 2), (70, 1), (97, 4)] {
                let cols = group * mult;
                let method = match (bits, rows) {
                    (2, 33) => Method::Ternary,
                    (_, 5) => Method::Rtn,
                    _ => Method::Search,
                };
                let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.heavy()).collect();
                let x: Vec<f32> = (0..cols).map(|_| rng.heavy()).collect();
                let m = LutMatrix::quantize_with(&w, rows, cols, bits, group, method).unwrap();
                let t = LutTables::build(&x, group).unwrap();
                rows_checked += assert_same(&m, &t, &format!("b{bits} g{group} {rows}×{cols}"));
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 72);
    assert!(rows_checked > 72 * 2);
}

/// All codes at 0 or at 2^b − 1 with all-ones activations: the largest lookups in the
/// largest group (the 16-bit accumulators and the wrapped even-row recovery must be exact),
/// and the known result Σ (code − 1) = (code − 1)·cols.
#[wasm_bindgen_test]
fn extreme_codes_do_not_overflow() {
    let (rows, cols, group) = (40, 256, 128);
    let x = vec![1.0f32; cols];
    let t = LutTables::build(&x, group).unwrap();
    for bits in 1..=4 {
        let top = (1u8 << bits) - 1;
        for code in [0, top] {
            let codes = vec![code; rows * cols];
            let params = vec![f16::ONE; rows * cols / group];
            let m = LutMatrix::pack(bits, group, rows, cols, &codes, &params, &params).unwrap();
            assert_same(&m, &t, &format!("bits {bits} code {code}"));
            let mut y = vec![0f32; rows];
            gemv_chunks(&m, &t, 0..m.chunks(), &mut y).unwrap();
            let want = (code as f32 - 1.0) * cols as f32;
            assert!(
                y.iter().all(|&v| v == want),
                "bits {bits} code {code}: {}",
                y[0]
            );
        }
    }
}

/// A random block row: `nb` blocks of `bytes` each, the f16 scale(s) in the first
/// `scales` 2-byte fields finite, the rest random.
fn block_row(rng: &mut Rng, nb: usize, bytes: usize, scales: usize) -> Vec<u8> {
    let mut w: Vec<u8> = (0..nb * bytes).map(|_| rng.next() as u8).collect();
    for b in w.chunks_exact_mut(bytes) {
        for k in 0..scales {
            let v = f16::from_f32(0.02 * rng.heavy()).to_bits().to_le_bytes();
            b[2 * k..2 * k + 2].copy_from_slice(&v);
        }
    }
    w
}

/// An activation row in the Q8 layout: 32 codes per block, then f32 `d` per block (and
/// f32 `s` per block for Q8_1). Extreme codes (±127, −128) are mixed in.
fn act_row(rng: &mut Rng, nb: usize, with_sum: bool) -> Vec<u8> {
    let mut a: Vec<u8> = (0..nb * 32)
        .map(|i| match i % 29 {
            0 => 0x80,
            1 => 0x7f,
            _ => rng.next() as u8,
        })
        .collect();
    for _ in 0..nb * if with_sum { 2 } else { 1 } {
        a.extend_from_slice(&(0.05 * rng.heavy()).to_le_bytes());
    }
    a
}

/// The SIMD128 Q4_1·Q8_1 and Q8_0·Q8_0 dots (the default model's two block types) equal
/// their scalar references bit for bit, on random rows of many lengths; short
/// activations give NaN as the reference does.
#[wasm_bindgen_test]
fn simd128_block_dots_are_bit_identical_to_the_references() {
    use suanpan::backend::cpu::dot::{dot, dot_ref, has_simd};
    use suanpan::format::GgmlType;
    assert_eq!(suanpan::backend::cpu::dot::simd_level(), "simd128");
    let mut rng = Rng(0xD07);
    let mut checked = 0;
    for (ty, bytes, scales, with_sum) in [
        (GgmlType::Q4_1, 20, 2, true),
        (GgmlType::Q8_0, 34, 1, false),
    ] {
        assert!(has_simd(ty));
        for nb in [1usize, 2, 3, 18, 48, 1536 / 32] {
            for _ in 0..20 {
                let w = block_row(&mut rng, nb, bytes, scales);
                let a = act_row(&mut rng, nb, with_sum);
                let (got, want) = (dot(ty, &w, &a), dot_ref(ty, &w, &a));
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty:?} nb {nb}: {got} vs {want}"
                );
                checked += 1;
            }
            let a = act_row(&mut rng, nb, with_sum);
            let w = block_row(&mut rng, nb, bytes, scales);
            assert!(dot(ty, &w, &a[..a.len() - 1]).is_nan());
        }
    }
    assert_eq!(checked, 2 * 6 * 20);
}
