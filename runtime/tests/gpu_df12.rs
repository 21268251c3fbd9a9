//! The df12 GEMV on the GPU (`matmul_df12`): its output bytes equal the BF16 GEMV's
//! (`matmul_dense`) on the decoded matrix, for random matrices with adversarial values
//! (more than 15 exponents, so escapes in most blocks; subnormals, ±0, ±Inf, NaN payloads;
//! a block made of escapes only), single tokens and token batches. The device layout is
//! checked on the CPU against the df12 decoder, and the GPU sums against a CPU sum in the
//! kernel's order.
//!
//! Runs on whatever adapter wgpu finds (lavapipe in CI); no adapter is a failure.
#![cfg(feature = "gpu")]

mod common;

use common::gpu::dev;
use suanpan::backend::cpu::dfloat::Df12Decode;

use suanpan::backend::gpu::df12::{pack, GpuDf12};
use suanpan::backend::gpu::{ops, Frame, GpuBuffer, GpuDevice, Recorder};
use suanpan::dfloat::df12::{encode_with, Df12View};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// BF16 bits of `rows × cols` weights: mostly normal values over ~24 exponents (so the
/// table of 15 leaves escapes in most blocks of 64), with adversarial rows.
fn weights(rng: &mut Rng, rows: usize, cols: usize) -> Vec<u16> {
    let mut w: Vec<u16> = (0..rows * cols)
        .map(|_| {
            let mag = 2f32.powi((rng.next() % 24) as i32 - 16);
            half::bf16::from_f32(rng.f() * mag).to_bits()
        })
        .collect();
    let row = |r: usize| (r % rows) * cols..(r % rows + 1) * cols;
    // Subnormals and signed zeros.
    for (j, i) in row(1).enumerate() {
        w[i] = match j % 4 {
            0 => 0x0000,
            1 => 0x8000,
            2 => 0x0001 + (j as u16 % 0x7f),
            _ => 0x8040 | (j as u16 % 0x3f),
        };
    }
    // Infinities in one row, NaNs with payloads in another.
    for i in row(4).step_by(7) {
        w[i] = if i % 2 == 0 { 0x7f80 } else { 0xff80 };
    }
    for i in row(6).step_by(5) {
        w[i] = 0x7f80 | (1 + i as u16 % 0x7f) | ((i as u16 & 1) << 15);
    }
    // A run of escapes only: exponents 200..255 appear nowhere else, and few times each.
    for (j, i) in row(9).enumerate().take(64) {
        w[i] = ((200 + j as u16 % 50) << 7) | (j as u16 & 0x7f);
    }
    w
}

fn run(d: &GpuDevice, f: impl FnOnce(&mut Recorder)) {
    let mut frame = Frame::new(d, 8, false).unwrap();
    let mut r = Recorder::new(d, &mut frame);
    f(&mut r);
    r.submit().unwrap();
}

/// The WGSL `df12_at` on the CPU, reading the packed words.
fn packed_at(words: &[u32], (codes, starts, exc): (u32, u32, u32), block: usize, i: usize) -> u16 {
    let byte = |w: u32, k: usize| (w >> (8 * k)) & 0xff;
    let sm = byte(words[4 + i / 4], i % 4);
    let code = (words[codes as usize + i / 8] >> (4 * (i % 8))) & 15;
    let mut e = byte(words[code as usize / 4], code as usize % 4);
    if code == 15 {
        let b = i / block;
        let (lo, hi) = (words[starts as usize + b], words[starts as usize + b + 1]);
        let key = (i - b * block) as u32;
        e = (lo..hi)
            .map(|k| words[(exc + k) as usize])
            .find(|x| x & 0xff_ffff == key)
            .expect("an escape has an entry")
            >> 24;
    }
    (((sm & 0x80) << 8) | (e << 7) | (sm & 0x7f)) as u16
}

/// `y[t][r]` summed as `matmul_dense` does: 16 lanes over k = lane, lane + 16, ..., then a
/// halving tree over the lanes.
fn gemv_in_kernel_order(w: &[u16], x: &[f32], rows: usize, cols: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * rows];
    for t in 0..n {
        for r in 0..rows {
            let mut part = [0f32; 16];
            for (lane, p) in part.iter_mut().enumerate() {
                for k in (lane..cols).step_by(16) {
                    let wv = half::bf16::from_bits(w[r * cols + k]).to_f32();
                    *p += wv * x[t * cols + k];
                }
            }
            let mut s = 8;
            while s > 0 {
                for l in 0..s {
                    part[l] += part[l + s];
                }
                s /= 2;
            }
            y[t * rows + r] = part[0];
        }
    }
    y
}

#[test]
fn packed_layout_decodes_like_the_cpu() {
    let mut rng = Rng(7);
    for &(rows, cols, block) in &[(13usize, 200usize, 64u32), (3, 1000, 256), (1, 7, 64)] {
        let w = weights(&mut rng, rows, cols);
        let blob = encode_with(&w, block).to_bytes();
        let v = Df12View::parse(&blob).unwrap();
        assert_eq!(v.decode().unwrap(), w);
        let (words, a, b, c) = pack(&v).unwrap();
        let got: Vec<u16> = (0..w.len())
            .map(|i| packed_at(&words, (a, b, c), v.block, i))
            .collect();
        assert_eq!(got, w, "{rows}×{cols} block {block}");
        if rows * cols > 64 {
            assert!(v.n_exceptions() > 64, "{} escapes", v.n_exceptions());
        }
    }
}

fn up(d: &GpuDevice, v: &[f32]) -> GpuBuffer {
    d.upload("x", bytemuck::cast_slice(v)).unwrap()
}

#[test]
fn df12_gemv_equals_bf16_gemv_bitwise() {
    let d = dev();
    let mut rng = Rng(11);
    for &(rows, cols, block, n, stride_pad) in &[
        (37usize, 200usize, 64u32, 1usize, 0usize),
        (37, 200, 64, 6, 3),
        (64, 576, 4096, 4, 0),
        (5, 1000, 128, 9, 1),
        (1, 16, 64, 1, 0),
    ] {
        let w = weights(&mut rng, rows, cols);
        let blob = encode_with(&w, block).to_bytes();
        let v = Df12View::parse(&blob).unwrap();
        let g12 = GpuDf12::upload(&d, "w df12", &v, rows, cols).unwrap();
        let gbf = d.upload("w bf16", bytemuck::cast_slice(&w)).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|_| rng.f() * 2.0).collect();
        let xb = up(&d, &x);
        let stride = rows + stride_pad;
        let out = 4 * (n * stride) as u64;
        let (y12, ybf) = (d.buffer("y", out).unwrap(), d.buffer("y", out).unwrap());
        run(&d, |r| {
            g12.matmul(r, &xb, &y12, n, stride).unwrap();
            ops::matmul_bf16(r, &gbf, rows, cols, &xb, &ybf, n, stride).unwrap();
        });
        let a = d.read_u32(&y12, 0, n * stride).unwrap();
        let b = d.read_u32(&ybf, 0, n * stride).unwrap();
        let what = format!("{rows}×{cols} block {block}, {n} tokens");
        assert_eq!(a, b, "{what}: df12 and BF16 GEMV bytes");
        // Both against the CPU, in the kernel's order: finite rows within 1e-6 relative to
        // the row's magnitude (a GPU may fuse the multiply-add), non-finite rows alike.
        let want = gemv_in_kernel_order(&w, &x, rows, cols, n);
        let mut nonfinite = 0;
        for t in 0..n {
            for r in 0..rows {
                let g = f32::from_bits(a[t * stride + r]);
                let c = want[t * rows + r];
                let mag: f32 = (0..cols)
                    .map(|k| {
                        (half::bf16::from_bits(w[r * cols + k]).to_f32() * x[t * cols + k]).abs()
                    })
                    .sum();
                if c.is_finite() && mag.is_finite() {
                    assert!(
                        (g - c).abs() <= 1e-6 * mag,
                        "{what} [{t}][{r}]: gpu {g} cpu {c}"
                    );
                } else {
                    nonfinite += 1;
                    assert_eq!(g.is_nan(), c.is_nan(), "{what} [{t}][{r}]: gpu {g} cpu {c}");
                }
            }
        }
        if rows > 9 {
            assert!(nonfinite >= 2 * n, "{what}: the Inf/NaN rows");
        }
        eprintln!(
            "{what}: {} escapes, {} B df12 vs {} B BF16 on the device",
            v.n_exceptions(),
            g12.bytes(),
            gbf.bytes()
        );
    }
}

#[test]
fn bad_df12_shapes_are_errors() {
    let d = dev();
    let w = vec![0x3f80u16; 128];
    let blob = encode_with(&w, 64).to_bytes();
    let v = Df12View::parse(&blob).unwrap();
    let e = GpuDf12::upload(&d, "w", &v, 3, 40).unwrap_err();
    assert!(e.to_string().contains("3×40"), "{e}");
    let g = GpuDf12::upload(&d, "w", &v, 4, 32).unwrap();
    let x = up(&d, &[1.0; 32]);
    let y = d.buffer("y", 8).unwrap();
    let mut frame = Frame::new(&d, 8, false).unwrap();
    let mut r = Recorder::new(&d, &mut frame);
    assert!(g.matmul(&mut r, &x, &y, 1, 4).is_err(), "output too small");
    assert!(g.matmul(&mut r, &x, &y, 1, 2).is_err(), "stride below rows");
    assert!(g.matmul(&mut r, &x, &y, 2, 4).is_err(), "input too small");
}

/// A synthetic model as BF16 and as df12 made from it (every matrix, embedding included):
/// on the GPU the df12 model's logits equal the BF16 model's bit for bit, prefill (all
/// tokens' logits) and decode. The BF16 embedding is read by `get_rows` on the GPU, the
/// df12 one on the host: both give the exact BF16 values.
#[test]
fn df12_model_logits_equal_bf16_model_bitwise() {
    use std::sync::Arc;
    use suanpan::backend::gpu::forward::{forward, GpuModel, GpuState};
    use suanpan::convert::{convert, ConvertParams, Target};
    use suanpan::format::GgmlType;
    use suanpan::model::Logits;
    use suanpan::{Model, ModelParams};

    let dir = std::env::temp_dir().join(format!("suanpan-gpu-df12-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("synth.f32.gguf");
    let s = common::synth::Synth {
        n_embd: 128,
        n_ff: 320,
        ..Default::default()
    };
    std::fs::write(&src, s.gguf()).unwrap();
    let (bf, df) = (dir.join("synth.bf16.gguf"), dir.join("synth.df12.gguf"));
    convert(&src, &bf, &ConvertParams::new(Target::Bf16), &|_| {}).unwrap();
    convert(&bf, &df, &ConvertParams::new(Target::Df12), &|_| {}).unwrap();
    let load = |p: &std::path::Path| {
        let m = Model::load(p, &ModelParams::default()).unwrap();
        let _ = std::fs::remove_file(p);
        Arc::new(m)
    };
    let (mb, md) = (load(&bf), load(&df));
    let _ = std::fs::remove_dir_all(&dir);
    let w = md.weights();
    assert_eq!(w.layers[0].wq.ty, GgmlType::Df12);
    assert_eq!(w.token_embd.ty, GgmlType::Df12);
    assert_eq!(mb.weights().layers[0].wq.ty, GgmlType::BF16);
    let gb = GpuModel::upload(dev(), mb.config(), mb.weights(), mb.file()).unwrap();
    let gd = GpuModel::upload(dev(), md.config(), md.weights(), md.file()).unwrap();
    eprintln!(
        "synthetic model on the device: df12 {} B, BF16 {} B",
        gd.weight_bytes(),
        gb.weight_bytes()
    );
    assert!(gd.weight_bytes() < gb.weight_bytes() * 85 / 100);
    let mut sb = GpuState::new(&gb, 8, 32, true, false).unwrap();
    let mut sd = GpuState::new(&gd, 8, 32, true, false).unwrap();
    let toks = [5u32, 9, 20, 33, 7, 1, 60];
    for (steps, batch) in [&toks[..], &[11], &[3]].into_iter().enumerate() {
        let a = forward(&gb, &mut sb, mb.file(), batch, Logits::All)
            .unwrap()
            .to_vec();
        let b = forward(&gd, &mut sd, md.file(), batch, Logits::All)
            .unwrap()
            .to_vec();
        assert_eq!(a.len(), batch.len() * mb.config().n_vocab);
        assert!(a.iter().any(|v| v.abs() > 0.1), "degenerate logits");
        let (a, b): (Vec<u32>, Vec<u32>) = (
            a.iter().map(|v| v.to_bits()).collect(),
            b.iter().map(|v| v.to_bits()).collect(),
        );
        assert_eq!(a, b, "logits after {steps} forwards");
    }
}
