//! Every WGSL kernel against the CPU scalar reference, on random shapes that include
//! non-multiples of the workgroup size (64) and of the row tiles (4 rows, 4 tokens).
//!
//! These run on whatever adapter wgpu finds; CI installs Mesa's lavapipe. No adapter is a
//! test failure with instructions, never a skip.
#![cfg(feature = "gpu")]

mod common;

use common::gpu::dev;

use half::{bf16, f16};
use suanpan::backend::cpu::dot::dot_ref;
use suanpan::backend::cpu::ops::{self as cpu, RopeStyle};
use suanpan::backend::gpu::{ops, Frame, GpuBuffer, GpuDevice, GpuMatrix, GpuOptions, Recorder};
use suanpan::format::GgmlType;
use suanpan::quant::ggml::{dequantize_row, quantize_row, ActFormat};

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
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
}

fn up(d: &GpuDevice, v: &[f32]) -> GpuBuffer {
    d.upload("test input", bytemuck::cast_slice(v)).unwrap()
}

fn run(d: &GpuDevice, f: impl FnOnce(&mut Recorder)) {
    let mut frame = Frame::new(d, 8, false).unwrap();
    let mut r = Recorder::new(d, &mut frame);
    f(&mut r);
    r.submit().unwrap();
}

fn close(got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let t = tol(i);
        assert!((g - w).abs() <= t, "{what}[{i}]: gpu {g} cpu {w} (tol {t})");
    }
}

#[test]
fn device_reports_adapter_and_features() {
    let d = dev();
    let name = d.adapter_name();
    assert!(!name.is_empty());
    let c = d.caps();
    assert!(c.max_binding >= 128 << 20, "{c:?}");
    eprintln!("adapter: {name}\ncaps: {c:?}");
}

#[test]
fn no_matching_adapter_is_a_clear_error() {
    let e = GpuDevice::new(&GpuOptions {
        adapter: Some("no adapter is called this".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&e, suanpan::Error::Backend(m) if m.contains("adapters present")),
        "{e}"
    );
}

#[test]
fn buffer_beyond_the_binding_limit_is_refused() {
    let d = dev();
    let too_big = d.caps().max_binding + 4;
    let e = d.buffer("huge tensor", too_big).unwrap_err();
    assert!(
        matches!(&e, suanpan::Error::Backend(m) if m.contains("huge tensor")),
        "{e}"
    );
}

/// RMSNorm (tolerance 1e-5 relative: the CPU sums squares in f64, the GPU in an f32 tree).
#[test]
fn rms_norm_matches_cpu() {
    let d = dev();
    let mut rng = Rng(1);
    for &(n, rows) in &[
        (1usize, 1usize),
        (63, 3),
        (64, 2),
        (65, 5),
        (576, 7),
        (1000, 2),
    ] {
        let x = rng.vec(n * rows, 3.0);
        let w = rng.vec(n, 1.5);
        let (xb, wb, ob) = (
            up(&d, &x),
            up(&d, &w),
            d.buffer("o", 4 * (n * rows) as u64).unwrap(),
        );
        run(&d, |r| {
            ops::rms_norm(r, &xb, &wb, &ob, n, rows, n, 1e-5).unwrap()
        });
        let got = d.read_f32(&ob, 0, n * rows).unwrap();
        let mut want = vec![0f32; n * rows];
        for i in 0..rows {
            cpu::rms_norm(&x[i * n..][..n], &w, 1e-5, &mut want[i * n..][..n]);
        }
        close(
            &got,
            &want,
            |i| 1e-5 * (1.0 + want[i].abs()),
            &format!("rms_norm {n}×{rows}"),
        );
        // In place, per head (Qwen3's q_norm): rows of head_dim with one weight vector.
        let hd = 10;
        let xh = rng.vec(hd * rows * 3, 2.0);
        let wh = rng.vec(hd, 1.0);
        let (xhb, whb) = (up(&d, &xh), up(&d, &wh));
        run(&d, |r| {
            ops::rms_norm_inplace(r, &xhb, &whb, hd, rows * 3, 1e-6).unwrap()
        });
        let got = d.read_f32(&xhb, 0, xh.len()).unwrap();
        let mut want = xh.clone();
        cpu::rms_norm_heads(&mut want, &wh, 1e-6);
        close(
            &got,
            &want,
            |i| 1e-5 * (1.0 + want[i].abs()),
            "rms_norm_heads",
        );
    }
}

/// RoPE with host cos/sin (identical inputs): only the rotation's rounding (a possible
/// fused multiply-add) may differ: 1e-6 relative.
#[test]
fn rope_matches_cpu_both_styles() {
    let d = dev();
    let mut rng = Rng(2);
    for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
        for &(n_tok, heads, hd, n_rot, pos0) in &[
            (1usize, 9usize, 64usize, 64usize, 0usize),
            (5, 3, 64, 64, 17),
            (3, 2, 10, 6, 4000),
            (7, 5, 128, 128, 100),
        ] {
            let half = n_rot / 2;
            let mut cs = vec![(0f32, 0f32); n_tok * half];
            for t in 0..n_tok {
                cpu::rope_cos_sin(
                    (pos0 + t) as f32,
                    n_rot,
                    10000.0,
                    None,
                    &mut cs[t * half..][..half],
                );
            }
            let flat: Vec<f32> = cs.iter().flat_map(|&(c, s)| [c, s]).collect();
            let x = rng.vec(n_tok * heads * hd, 2.0);
            let (xb, cb) = (up(&d, &x), up(&d, &flat));
            run(&d, |r| {
                ops::rope(r, &xb, &cb, n_tok * heads, hd, n_rot, style, heads).unwrap()
            });
            let got = d.read_f32(&xb, 0, x.len()).unwrap();
            let mut want = x.clone();
            for t in 0..n_tok {
                cpu::rope(
                    &mut want[t * heads * hd..][..heads * hd],
                    hd,
                    n_rot,
                    &cs[t * half..][..half],
                    style,
                );
            }
            close(
                &got,
                &want,
                |i| 1e-6 * (1.0 + want[i].abs()),
                &format!("rope {style:?}"),
            );
        }
    }
}

/// SwiGLU (GPU exp is accurate to a few ulps: 1e-5 relative), adds (one rounding: exact).
#[test]
fn swiglu_add_and_bias_match_cpu() {
    let d = dev();
    let mut rng = Rng(3);
    for &n in &[1usize, 63, 64, 65, 1537, 70_000] {
        let g = rng.vec(n, 6.0);
        let u = rng.vec(n, 2.0);
        let (gb, ub) = (up(&d, &g), up(&d, &u));
        run(&d, |r| ops::silu_mul(r, &gb, &ub, n).unwrap());
        let got = d.read_f32(&gb, 0, n).unwrap();
        let mut want = g.clone();
        cpu::silu_mul(&mut want, &u);
        close(&got, &want, |i| 1e-5 * (1.0 + want[i].abs()), "silu_mul");

        let (xb, yb) = (up(&d, &g), up(&d, &u));
        run(&d, |r| ops::add(r, &xb, &yb, n).unwrap());
        let mut want = g.clone();
        cpu::add_inplace(&mut want, &u);
        assert_eq!(d.read_f32(&xb, 0, n).unwrap(), want, "add {n}");

        let bl = 1 + n % 37;
        let b = rng.vec(bl, 1.0);
        let (xb, bb) = (up(&d, &g[..n / bl * bl]), up(&d, &b));
        let m = n / bl * bl;
        if m > 0 {
            run(&d, |r| ops::add_bias(r, &xb, &bb, m, bl).unwrap());
            let mut want = g[..m].to_vec();
            cpu::add_bias_rows(&mut want, &b);
            assert_eq!(d.read_f32(&xb, 0, m).unwrap(), want, "add_bias {m}");
        }
    }
}

/// f32 → f16 in the KV store is bit-identical to `half` (round to nearest even), including
/// ties, subnormals, overflow to infinity and signed zero.
#[test]
fn kv_store_rounds_exactly_like_half() {
    let d = dev();
    let mut rng = Rng(4);
    let mut k: Vec<f32> = (0..4096).map(|_| rng.f() * 70000.0).collect();
    k.extend((0..2048).map(|_| rng.f() * 1e-4)); // subnormal f16 range
    k.extend((0..2048).map(|_| rng.f() * 4.0));
    // Exact ties between f16 neighbours and other edge cases.
    for i in 0..512u16 {
        let h = f16::from_bits(0x3c00 + i).to_f32();
        let h2 = f16::from_bits(0x3c01 + i).to_f32();
        k.push((h + h2) / 2.0);
        let s = f16::from_bits(i + 1).to_f32();
        k.push(s * 0.5);
        k.push(s * 1.5);
    }
    k.extend([
        0.0,
        -0.0,
        65504.0,
        65520.0,
        -65520.0,
        1e-8,
        -1e-8,
        5.9604645e-8,
        2.9802322e-8,
    ]);
    k.extend([f32::INFINITY, f32::NEG_INFINITY]);
    if k.len() % 2 == 1 {
        k.push(1.0);
    }
    let v: Vec<f32> = k.iter().map(|x| -x * 0.37).collect();
    let n = k.len();
    let (kb, vb) = (up(&d, &k), up(&d, &v));
    let kc = d.buffer("k cache", (2 * n + 8) as u64).unwrap();
    let vc = d.buffer("v cache", (2 * n + 8) as u64).unwrap();
    run(&d, |r| ops::kv_store(r, &kb, &vb, &kc, &vc, n, 4).unwrap());
    let words = d.read_u32(&kc, 0, n / 2 + 2).unwrap();
    let vwords = d.read_u32(&vc, 0, n / 2 + 2).unwrap();
    let half = |w: &[u32], i: usize| (w[(i + 4) / 2] >> (16 * ((i + 4) % 2))) as u16;
    for i in 0..n {
        assert_eq!(half(&words, i), f16::from_f32(k[i]).to_bits(), "k {}", k[i]);
        assert_eq!(
            half(&vwords, i),
            f16::from_f32(v[i]).to_bits(),
            "v {}",
            v[i]
        );
    }
    assert_eq!(words[0], 0, "values before the destination are untouched");
}

/// Q8_0 / Q8_1 activation blocks: the same codes and scales as the CPU.
#[test]
fn activation_quantization_matches_cpu() {
    let d = dev();
    let mut rng = Rng(5);
    for &(cols, rows) in &[(32usize, 1usize), (576, 3), (1536, 5), (64, 130)] {
        let mut x = rng.vec(cols * rows, 4.0);
        x[..32].fill(0.0); // an all-zero block
                           // Exact ties after scaling (x·127/amax = k + 0.5) must round to even on both.
        if cols * rows >= 64 {
            x[32] = 127.0;
            x[33] = 0.5;
            x[34] = 1.5;
            x[35] = -2.5;
        }
        let xb = up(&d, &x);
        let xq = d.buffer("codes", (cols * rows) as u64).unwrap();
        let xd = d.buffer("scales", (cols * rows / 4) as u64).unwrap();
        run(&d, |r| {
            ops::quant_act(r, &xb, &xq, &xd, cols, rows).unwrap()
        });
        let codes = d.read(&xq, 0, (cols * rows) as u64).unwrap();
        let scales = d.read_f32(&xd, 0, cols * rows / 16).unwrap();
        let nb = cols / 32;
        let fmt = ActFormat::Q8_1;
        let mut want = vec![0u8; fmt.row_bytes(cols)];
        for t in 0..rows {
            quantize_row(fmt, &x[t * cols..][..cols], &mut want);
            assert_eq!(
                &codes[t * cols..][..cols],
                &want[..cols],
                "codes {cols}×{rows} t{t}"
            );
            for b in 0..nb {
                let at = |i: usize| f32::from_le_bytes(want[i..i + 4].try_into().unwrap());
                assert_eq!(scales[2 * (t * nb + b)], at(cols + 4 * b), "d");
                assert_eq!(scales[2 * (t * nb + b) + 1], at(cols + 4 * (nb + b)), "s");
            }
        }
    }
}

/// Random ggml blocks of type `ty` (valid f16 scales, random codes).
fn random_blocks(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let (bl, bb) = ty.block_geometry();
    let n = rows * cols / bl;
    let mut out = Vec::with_capacity(n * bb);
    match ty {
        GgmlType::F32 => {
            for _ in 0..rows * cols {
                out.extend_from_slice(&rng.f().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for _ in 0..rows * cols {
                out.extend_from_slice(&f16::from_f32(rng.f()).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for _ in 0..rows * cols {
                out.extend_from_slice(&bf16::from_f32(rng.f()).to_le_bytes());
            }
        }
        _ => {
            let head = if ty == GgmlType::Q4_1 { 4 } else { 2 };
            for _ in 0..n {
                out.extend_from_slice(&f16::from_f32(rng.f() * 0.05).to_le_bytes());
                if head == 4 {
                    out.extend_from_slice(&f16::from_f32(rng.f() * 0.2).to_le_bytes());
                }
                for _ in head..bb {
                    out.push(rng.next() as u8);
                }
            }
        }
    }
    out
}

/// GEMV / small GEMM for every supported weight type against the CPU's scalar `dot_ref` on
/// the same (CPU-quantized) activations. Integer block sums are exact in both; only the
/// float accumulation order differs: tolerance 1e-5 of Σ|w·x| per row.
#[test]
fn matmul_matches_cpu_reference_all_types() {
    let d = dev();
    let mut rng = Rng(6);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
    ];
    for ty in types {
        let dense = !ops::takes_q8(ty);
        let shapes: &[(usize, usize, usize)] = if dense {
            &[
                (1, 1, 1),
                (5, 7, 3),
                (3, 33, 5),
                (65, 100, 4),
                (130, 576, 9),
            ]
        } else {
            &[
                (1, 32, 1),
                (5, 64, 3),
                (63, 96, 4),
                (65, 576, 5),
                (130, 1536, 9),
            ]
        };
        for &(rows, cols, n) in shapes {
            let wbytes = random_blocks(&mut rng, ty, rows, cols);
            let x = rng.vec(cols * n, 3.0);
            let w = GpuMatrix::upload(&d, "w", ty, rows, cols, &wbytes).unwrap();
            let xb = up(&d, &x);
            let y = d.buffer("y", (4 * rows * n) as u64).unwrap();
            let (xq, xd) = (
                d.buffer("xq", (cols * n) as u64).unwrap(),
                d.buffer("xd", (cols * n / 4) as u64).unwrap(),
            );
            run(&d, |r| {
                if dense {
                    ops::matmul(r, &w, &xb, None, &y, n, rows).unwrap();
                } else {
                    ops::quant_act(r, &xb, &xq, &xd, cols, n).unwrap();
                    ops::matmul(r, &w, &xq, Some(&xd), &y, n, rows).unwrap();
                }
            });
            let got = d.read_f32(&y, 0, rows * n).unwrap();
            let fmt = ActFormat::for_weights(ty);
            let rb = wbytes.len() / rows;
            let mut act = vec![0u8; fmt.row_bytes(cols)];
            let mut wrow = vec![0f32; cols];
            for t in 0..n {
                let xt = &x[t * cols..][..cols];
                quantize_row(fmt, xt, &mut act);
                for r in 0..rows {
                    let row = &wbytes[r * rb..][..rb];
                    let want = dot_ref(ty, row, &act);
                    dequantize_row(ty, row, &mut wrow);
                    let mag: f32 = wrow.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum();
                    let g = got[t * rows + r];
                    assert!(
                        (g - want).abs() <= 1e-5 * mag + 1e-6,
                        "{ty} {rows}×{cols} n{n} t{t} r{r}: gpu {g} cpu {want} (Σ|wx| {mag})"
                    );
                }
            }
        }
    }
}

/// Embedding lookup for every type: the GPU dequantizes exactly like `dequantize_row`
/// (Q4_1's d·q + m may be fused: 1 ulp).
#[test]
fn get_rows_matches_dequantize() {
    let d = dev();
    let mut rng = Rng(7);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let (rows, cols) = (37, if ops::takes_q8(ty) { 96 } else { 33 });
        let wbytes = random_blocks(&mut rng, ty, rows, cols);
        let w = GpuMatrix::upload(&d, "embd", ty, rows, cols, &wbytes).unwrap();
        let ids: Vec<u32> = vec![0, 36, 5, 5, 17, 1, 30];
        let ib = d.upload("ids", bytemuck::cast_slice(&ids)).unwrap();
        let out = d.buffer("out", (4 * cols * ids.len()) as u64).unwrap();
        run(&d, |r| ops::get_rows(r, &w, &ib, &out, ids.len()).unwrap());
        let got = d.read_f32(&out, 0, cols * ids.len()).unwrap();
        let rb = wbytes.len() / rows;
        for (t, &id) in ids.iter().enumerate() {
            let mut want = vec![0f32; cols];
            dequantize_row(ty, &wbytes[id as usize * rb..][..rb], &mut want);
            close(
                &got[t * cols..][..cols],
                &want,
                |i| 2.0 * f32::EPSILON * want[i].abs(),
                &format!("get_rows {ty}"),
            );
        }
    }
}

/// Causal GQA attention, decode (1 token) and prefill (several), against the CPU kernel on
/// the same f16 cache. Both round Q and the probabilities to f16; a probability whose f16
/// rounding flips between them moves the output by ≤ 1 f16 ulp of p times |v|:
/// tolerance 2e-3 of max|v|.
#[test]
fn attention_matches_cpu_decode_and_prefill() {
    use suanpan::backend::cpu::attention::{attention, AttnShape};
    use suanpan::backend::cpu::Pool;
    let d = dev();
    let pool = Pool::new(2).unwrap();
    let mut rng = Rng(8);
    for &(n_head, n_kv, hd, pos0, nt) in &[
        (4usize, 2usize, 8usize, 0usize, 1usize),
        (9, 3, 64, 5, 1),
        (9, 3, 64, 70, 1),
        (9, 3, 64, 0, 7),
        (4, 4, 10, 3, 66),
        (2, 1, 128, 130, 3),
    ] {
        let kv_dim = n_kv * hd;
        let n_ctx = pos0 + nt + 3;
        let n_layer = 2;
        let layer = 1;
        let kvals: Vec<f16> = (0..n_layer * n_ctx * kv_dim)
            .map(|_| f16::from_f32(rng.f() * 2.0))
            .collect();
        let vvals: Vec<f16> = (0..n_layer * n_ctx * kv_dim)
            .map(|_| f16::from_f32(rng.f() * 2.0))
            .collect();
        let q = rng.vec(nt * n_head * hd, 1.5);
        let scale = 1.0 / (hd as f32).sqrt();
        let span = n_ctx * kv_dim;
        // 0: causal over everything; else a sliding window (Gemma 3 layers).
        for window in [0usize, 5, 64] {
            let mut want = vec![0f32; nt * n_head * hd];
            let mut scores = vec![0f32; 2 * (pos0 + nt)];
            attention(
                &pool,
                AttnShape {
                    n_head,
                    n_kv_head: n_kv,
                    head_dim: hd,
                },
                &q,
                &kvals[layer * span..][..span],
                &vvals[layer * span..][..span],
                pos0,
                nt,
                scale,
                window,
                &mut scores,
                &mut want,
            );
            let kc = d.upload("k", bytemuck::cast_slice(&kvals)).unwrap();
            let vc = d.upload("v", bytemuck::cast_slice(&vvals)).unwrap();
            let (qb, ob) = (up(&d, &q), d.buffer("o", (4 * want.len()) as u64).unwrap());
            let call = ops::AttnCall {
                n_head,
                n_kv_head: n_kv,
                head_dim: hd,
                pos0,
                n_tokens: nt,
                layer_base: layer * span,
                scale,
                window,
            };
            run(&d, |r| ops::attention(r, call, &qb, &kc, &vc, &ob).unwrap());
            let got = d.read_f32(&ob, 0, want.len()).unwrap();
            close(
                &got,
                &want,
                |_| 2e-3 * 2.0,
                &format!("attention h{n_head}/{n_kv} d{hd} pos0 {pos0} n{nt} window {window}"),
            );
        }
    }
}

#[test]
fn wrong_shapes_are_errors_not_gpu_faults() {
    let d = dev();
    let small = d.buffer("small", 16).unwrap();
    let mut frame = Frame::new(&d, 4, false).unwrap();
    let mut r = Recorder::new(&d, &mut frame);
    assert!(ops::add(&mut r, &small, &small, 5).is_err());
    assert!(ops::rms_norm(&mut r, &small, &small, &small, 4, 2, 4, 1e-5).is_err());
    assert!(ops::kv_store(&mut r, &small, &small, &small, &small, 3, 0).is_err());
    assert!(r.is_empty());
}

/// LUT GEMV, 1–4 bits, groups 32/64/128. The GPU tables are byte for byte the CPU's
/// (same arithmetic, no multiply-adds); the lookups and plane sums are integers, so only
/// the float epilogue's summation may differ from the CPU scalar reference: tolerance
/// 1e-5 of Σ|w·x| plus the table-quantization bound (which both share).
#[test]
fn lut_tables_and_gemv_match_cpu() {
    use suanpan::backend::cpu::lut::gemv::{gemv_ref, table_error_bound};
    use suanpan::backend::cpu::lut::table::LutTables;
    use suanpan::backend::gpu::lut::{lut_gemv, lut_tables, GpuLut, LutScratch};
    use suanpan::lut::LutMatrix;
    let d = dev();
    let mut rng = Rng(9);
    let mut cases = 0;
    for bits in 1..=4usize {
        for &group in &[32usize, 64, 128] {
            for &(rows, mult, n) in &[
                (1usize, 1usize, 1usize),
                (63, 3, 2),
                (65, 2, 1),
                (130, 5, 3),
            ] {
                let cols = group * mult;
                let w = rng.vec(rows * cols, 0.1);
                let m = LutMatrix::quantize(&w, rows, cols, bits, group).unwrap();
                let x = rng.vec(cols * n, 2.0);
                let gm = GpuLut::upload(&d, "lut", &m).unwrap();
                let s = LutScratch::new(&d, cols, n).unwrap();
                let (xb, y) = (up(&d, &x), d.buffer("y", (4 * rows * n) as u64).unwrap());
                run(&d, |r| {
                    lut_tables(r, &xb, &s, cols, group, n).unwrap();
                    lut_gemv(r, &gm, &s, &y, n, rows).unwrap();
                });
                let got = d.read_f32(&y, 0, rows * n).unwrap();
                let tb = d.read(&s.tables, 0, (4 * cols * n) as u64).unwrap();
                let groups = cols / group;
                let hs = d.read_f32(&s.half_scales, 0, groups * n).unwrap();
                let sums = d.read_f32(&s.sums, 0, groups * n).unwrap();
                let wd = m.dequantize();
                for t in 0..n {
                    let xt = &x[t * cols..][..cols];
                    let tabs = LutTables::build(xt, group).unwrap();
                    assert_eq!(
                        &tb[t * 4 * cols..][..4 * cols],
                        tabs.entries(),
                        "tables b{bits} g{group}"
                    );
                    assert_eq!(&hs[t * groups..][..groups], tabs.half_scales());
                    assert_eq!(&sums[t * groups..][..groups], tabs.sums());
                    let mut want = vec![0f32; rows];
                    gemv_ref(&m, &tabs, &mut want).unwrap();
                    for r in 0..rows {
                        let mag: f32 = wd[r * cols..][..cols]
                            .iter()
                            .zip(xt)
                            .map(|(a, b)| (a * b).abs())
                            .sum();
                        let tol = 1e-5 * (mag + table_error_bound(&m, &tabs, r)) + 1e-6;
                        let g = got[t * rows + r];
                        assert!(
                            (g - want[r]).abs() <= tol,
                            "b{bits} g{group} {rows}×{cols} t{t} r{r}: gpu {g} cpu {} tol {tol}",
                            want[r]
                        );
                    }
                }
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 48);
}

/// A NaN activation poisons only its group's tables, as on the CPU.
#[test]
fn lut_tables_poison_only_the_nan_group() {
    use suanpan::backend::cpu::lut::LutTables;
    use suanpan::backend::gpu::lut::{lut_tables, LutScratch};
    let d = dev();
    let mut x = vec![0.5f32; 96];
    x[40] = f32::NAN;
    let s = LutScratch::new(&d, 96, 1).unwrap();
    let xb = up(&d, &x);
    run(&d, |r| lut_tables(r, &xb, &s, 96, 32, 1).unwrap());
    let want = LutTables::build(&x, 32).unwrap();
    assert_eq!(d.read(&s.tables, 0, 384).unwrap(), want.entries());
    let hs = d.read_f32(&s.half_scales, 0, 3).unwrap();
    assert!(hs[1].is_nan() && hs[0] == want.half_scales()[0] && hs[2] == want.half_scales()[2]);
}

/// DFloat11 decode on the GPU equals the CPU decoder's output bit for bit, for odd and
/// even lengths, tiny chunks (many chunk boundaries) and several GPU unit sizes.
#[test]
fn df11_decode_is_byte_exact() {
    use suanpan::backend::cpu::dfloat::Df11Decoder;
    use suanpan::backend::gpu::df11::GpuDf11;
    use suanpan::dfloat::{encode_with, EncodeParams};
    let d = dev();
    let mut rng = Rng(10);
    for &(n, chunk, unit) in &[
        (1usize, 4096u32, 64usize),
        (2, 4, 4),
        (1001, 4, 4),
        (1001, 64, 16),
        (65_537, 4096, 64),
        (200_000, 256, 32),
    ] {
        // Weight-like values: normal-ish magnitudes, a few outliers and exact zeros.
        let vals: Vec<u16> = (0..n)
            .map(|i| {
                let v = rng.f() * rng.f() * 0.05 * if i % 97 == 0 { 40.0 } else { 1.0 };
                bf16::from_f32(if i % 211 == 0 { 0.0 } else { v }).to_bits()
            })
            .collect();
        let t = encode_with(
            &vals,
            &EncodeParams {
                chunk_bytes: chunk,
                ..Default::default()
            },
        )
        .unwrap();
        let cpu = Df11Decoder::new(&t.lengths).unwrap().decode(&t).unwrap();
        assert_eq!(cpu, vals);
        let g = GpuDf11::upload(&d, &t.view(), unit).unwrap();
        let out = d.buffer("bf16", (2 * n) as u64).unwrap();
        // Dirty output first: the decode must clear what it does not write.
        d.write(&out, 0, &vec![0xAB; out.bytes() as usize]).unwrap();
        run(&d, |r| g.decode(r, &out).unwrap());
        let bytes = d.read(&out, 0, (2 * n) as u64).unwrap();
        let got: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(
            got,
            cpu,
            "n {n} chunk {chunk} unit {unit} ({} units)",
            g.units()
        );
    }
}

/// A corrupt DFloat11 bitstream is refused at upload, not decoded on the GPU.
#[test]
fn df11_corrupt_stream_is_refused() {
    use suanpan::backend::gpu::df11::GpuDf11;
    use suanpan::dfloat::encode;
    let d = dev();
    let vals: Vec<u16> = (0..5000u32)
        .map(|i| bf16::from_f32(((i * 7919) % 1000) as f32 * 1e-3 - 0.5).to_bits())
        .collect();
    let mut t = encode(&vals).unwrap();
    let len = t.bitstream.len();
    t.bitstream.truncate(len / 2);
    assert!(GpuDf11::upload(&d, &t.view(), 64).is_err());
}

/// A lost device becomes an error at the next submission or read, never a panic or hang.
#[test]
fn lost_device_is_an_error() {
    let d = GpuDevice::new(&GpuOptions::default()).unwrap();
    let x = up(&d, &[1.0, 2.0]);
    d.destroy_for_test();
    let read = d.read_f32(&x, 0, 2);
    assert!(matches!(read, Err(suanpan::Error::Backend(_))), "{read:?}");
    let mut frame = Frame::new(&d, 4, false).unwrap();
    let mut r = Recorder::new(&d, &mut frame);
    ops::add(&mut r, &x, &x, 2).unwrap();
    let sub = r.submit();
    assert!(matches!(sub, Err(suanpan::Error::Backend(_))), "{sub:?}");
}
