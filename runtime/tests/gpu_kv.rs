//! The quantized KV cache on the GPU (`backend::gpu::kv_quant`, `shaders/kv_attention.wgsl`)
//! against the CPU's (`kv::QuantCache`, `backend::cpu::attention_q`):
//! - kernel level: the same keys, values and queries through both caches, batch after batch
//!   (sinks filling, window only, pages appearing mid-batch, single-token decode): identical
//!   page bytes and attention outputs equal to f32 rounding;
//! - model level: the real SmolLM2 file with `--kv q8/q4/q2` on both backends;
//! - what the GPU still refuses is refused with a clear error.
//!
//! Runs on whatever adapter wgpu finds (lavapipe in CI); no adapter is a failure.
#![cfg(feature = "gpu")]

mod common;

use common::gpu::dev;
use common::synth::Rng;

use std::sync::{Arc, OnceLock};

use suanpan::backend::cpu::attention::AttnShape;
use suanpan::backend::cpu::Pool;
use suanpan::backend::gpu::{Frame, GpuQuantKv, Recorder};
use suanpan::kv::{KvGeom, KvMode, KvParams, Overflow, QuantCache};
use suanpan::model::Logits;
use suanpan::sample::argmax;
use suanpan::{BackendKind, Error, Model, ModelParams, SessionParams};

/// Keys with two outlier channels per head and a per-channel offset (like real keys, and
/// what the q2 key outliers are for); values plain.
fn kv_rows(n: usize, kvd: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
    let k = (0..n * kvd)
        .map(|i| {
            let c = i % kvd;
            let base = rng.f() * 1.5 + (c % 7) as f32 * 0.3;
            if c % 64 == 3 || c % 64 == 40 {
                base * 8.0
            } else {
                base
            }
        })
        .collect();
    let v = (0..n * kvd).map(|_| rng.f()).collect();
    (k, v)
}

/// The kernel against the CPU cache over the same pages: head_dim 64, 6 query heads over 2
/// KV heads (GQA ratio 3), 2 layers, window 40, 3 sinks, batches of 1 to 40 tokens that
/// cross page boundaries (contexts of 1 to 229 keys: non-multiples of the page, 32, and of
/// the workgroup tile, 64), q8/q4/q2 (q2 with its 64 key outliers, and with 5), pages of 32
/// and 64 tokens. The page bytes must be identical (same quantizer on the same f16 rows),
/// and the outputs equal within 1e-4·max(1, |out|) (f32 against f32, different summation
/// order; measured below 1e-6).
#[test]
fn kernel_matches_cpu_over_the_same_pages() {
    let d = dev();
    let geom = KvGeom {
        n_layer: 2,
        n_kv_head: 2,
        head_dim: 64,
    };
    let (n_head, hd, kvd) = (6usize, 64usize, geom.kv_dim());
    let shape = AttnShape {
        n_head,
        n_kv_head: 2,
        head_dim: hd,
    };
    let batches = [1usize, 2, 37, 1, 1, 40, 5, 1, 40, 1, 1, 33, 1, 40, 17, 1, 3];
    let total: usize = batches.iter().sum();
    let pool = Pool::new(2).unwrap();
    let mut worst = 0f32;
    for (mode, group, outliers) in [
        (KvMode::Q8, 32, None),
        (KvMode::Q4, 32, None),
        (KvMode::Q2, 32, None),
        (KvMode::Q2, 64, Some(5)),
        (KvMode::Q4, 64, Some(3)),
    ] {
        let params = KvParams {
            mode,
            window: 40,
            group,
            sinks: 3,
            outliers,
            ..Default::default()
        };
        let pg = params.page_geom(&geom).unwrap().unwrap();
        let mut cpu = QuantCache::new(geom, pg, 40, 3, false, false, total, 40, n_head, 2).unwrap();
        let mut gpu = GpuQuantKv::new(&d, geom, &params, total, 40).unwrap();
        let mut frame = Frame::new(&d, 8, false).unwrap();
        let mut rng = Rng(7 + group as u64);
        let what = format!("{mode} group {group} outliers {}", pg.k_outliers);
        let t0 = std::time::Instant::now();
        for &n in &batches {
            cpu.begin(n).unwrap();
            gpu.begin(&d, n).unwrap();
            let q: Vec<f32> = (0..n * n_head * hd).map(|_| rng.f() * 2.0).collect();
            let qb = d.upload("q", bytemuck::cast_slice(&q)).unwrap();
            let outs: Vec<_> = (0..2)
                .map(|_| d.buffer("out", 4 * q.len() as u64).unwrap())
                .collect();
            let mut r = Recorder::new(&d, &mut frame);
            let mut want = Vec::new();
            let mut bufs = Vec::new();
            for layer in 0..2 {
                let (k, v) = kv_rows(n, kvd, &mut rng);
                cpu.store(layer, &k, &v).unwrap();
                let kb = d.upload("k", bytemuck::cast_slice(&k)).unwrap();
                let vb = d.upload("v", bytemuck::cast_slice(&v)).unwrap();
                bufs.push((kb, vb));
            }
            for (layer, ((kb, vb), ob)) in bufs.iter().zip(&outs).enumerate() {
                let mut out = vec![0f32; q.len()];
                cpu.attend(&pool, layer, shape, &q, n, 0.125, &mut out)
                    .unwrap();
                want.push(out);
                gpu.store(&mut r, layer, kb, vb).unwrap();
                gpu.attend(&mut r, layer, n_head, &qb, ob, 0.125).unwrap();
            }
            r.submit().unwrap();
            for (layer, (ob, want)) in outs.iter().zip(&want).enumerate() {
                let got = d.read_f32(ob, 0, q.len()).unwrap();
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    let diff = (g - w).abs();
                    worst = worst.max(diff / w.abs().max(1.0));
                    assert!(
                        diff <= 1e-4 * w.abs().max(1.0),
                        "{what}: batch of {n} at {} cached, layer {layer}, element {i}: gpu {g} cpu {w}",
                        cpu.len()
                    );
                }
            }
            cpu.commit();
            gpu.commit();
            assert_eq!(
                (gpu.len(), gpu.n_pages(), gpu.window_len()),
                (cpu.len(), cpu.n_pages(), cpu.window_len()),
                "{what}"
            );
        }
        assert!(
            cpu.n_pages() * group >= 128,
            "{what}: {} pages",
            cpu.n_pages()
        );
        eprintln!("{what}: {:.1} s", t0.elapsed().as_secs_f64());
        for layer in 0..2 {
            for p in 0..cpu.n_pages() {
                for h in 0..2 {
                    let (codes, meta) = cpu.page(layer, p, h).unwrap();
                    let mut bytes = codes.to_vec();
                    bytes.extend(meta.iter().flat_map(|m| m.to_bits().to_le_bytes()));
                    let got = gpu.read_page(&d, layer, p, h).unwrap();
                    assert!(
                        got == bytes,
                        "{what}: layer {layer} page {p} head {h} differs"
                    );
                }
            }
        }
    }
    eprintln!("largest relative difference GPU vs CPU: {worst:.2e}");
}

/// The default model on the GPU backend, loaded once per test binary.
fn gpu_model() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(|| {
        Arc::new(
            Model::load(
                common::model_path(),
                &ModelParams {
                    n_threads: 2,
                    backend: BackendKind::Gpu,
                    ..Default::default()
                },
            )
            .expect("load the default model on the GPU"),
        )
    })
    .clone()
}

/// Session parameters of the model-level test: a window of 32 rather than the default 128,
/// so that most of a short prompt is quantized (lavapipe runs this model at a few tokens per
/// second, so prompts must stay short).
fn kv(mode: KvMode) -> SessionParams {
    SessionParams {
        n_ctx: 160,
        n_batch: 64,
        kv: KvParams {
            mode,
            window: 32,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The first 99 tokens of a long text. With 4 sinks, the window of 32 and pages of 32, the
/// prompt leaves one quantized page and 63 window rows, so the first decoded token
/// quantizes a second page (in a one-token batch): pages made in prefill and in decode.
fn prompt(m: &Model) -> Vec<u32> {
    let text = "The history of the printing press begins in the fifteenth century, when \
        Johannes Gutenberg combined movable metal type, oil-based inks and a screw press \
        adapted from wine making. Within a few decades printing shops had spread to more than \
        two hundred cities across Europe, and the price of books fell sharply. Scholars could \
        now compare identical copies of a text, which changed how knowledge was checked and \
        shared. Pamphlets, newspapers and scientific journals followed, and literacy grew \
        steadily as reading material became common in ordinary households.";
    let ids = m.tokenizer().encode(text, true, false).unwrap();
    assert!(ids.len() >= 99, "{} prompt tokens", ids.len());
    ids[..99].to_vec()
}

/// The real SmolLM2 Q4_1 file with a q8/q4/q2 KV cache, GPU against CPU: the 99-token
/// prompt (batches of 64 on the CPU, of 32 on the GPU, whose batch is capped at the window),
/// then 4 decode steps fed with the CPU's greedy tokens on both (teacher-forced, so a near
/// tie cannot make the rest diverge). Every step's logits within the tolerance, and the same
/// top-1 wherever the CPU's top-2 margin is at least 1.0.
///
/// Tolerances: with an f16 cache the backends already differ by up to ~0.45 in a logit on
/// this file (Q8_1 activation codes flipped by summation order, see gpu_model.rs). With a
/// quantized cache that noise also reaches the keys and values before they are quantized,
/// and a code can land one step away (at 2 bits a step is a third of the group's range), so
/// the tolerance grows with fewer bits: 1.0 (q8), 1.5 (q4), 2.5 (q2).
///
/// The q4 session also shows the cache is really quantized and behaves like the CPU's:
/// fewer bytes than f16, a cut inside the context refused, reset and reuse fine.
#[test]
fn quantized_kv_model_gpu_matches_cpu() {
    let cpu_m = common::model();
    let gpu_m = gpu_model();
    let ids = prompt(&cpu_m);
    let v = cpu_m.config().n_vocab;
    const STEPS: usize = 4;
    for (mode, tol) in [(KvMode::Q8, 1.0f32), (KvMode::Q4, 1.5), (KvMode::Q2, 2.5)] {
        let t0 = std::time::Instant::now();
        let mut cs = cpu_m.session(&kv(mode)).unwrap();
        let mut cpu_logits = vec![cs.eval(&ids, Logits::Last).unwrap().to_vec()];
        let mut toks = Vec::new();
        for _ in 0..STEPS {
            let t = argmax(cpu_logits.last().unwrap());
            toks.push(t);
            cpu_logits.push(cs.eval(&[t], Logits::Last).unwrap().to_vec());
        }
        let q = cs.kv().as_quant().expect("a quantized CPU cache");
        assert_eq!((q.n_pages(), q.window_len()), (2, 35), "{mode}");
        let t1 = std::time::Instant::now();
        let mut gs = gpu_m.session(&kv(mode)).unwrap();
        assert_eq!(gs.n_batch(), 32);
        let mut gpu_logits = vec![gs.eval(&ids, Logits::Last).unwrap().to_vec()];
        for &t in &toks {
            gpu_logits.push(gs.eval(&[t], Logits::Last).unwrap().to_vec());
        }
        let gpu_s = t1.elapsed().as_secs_f64();
        let (mut worst, mut clear, mut agree) = (0f32, 0, 0);
        for (step, (c, g)) in cpu_logits.iter().zip(&gpu_logits).enumerate() {
            assert_eq!((c.len(), g.len()), (v, v));
            let d = max_abs_diff(c, g);
            worst = worst.max(d);
            assert!(d < tol, "{mode} step {step}: logits differ by {d}");
            let mut sorted = c.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let same = argmax(c) == argmax(g);
            agree += usize::from(same);
            if sorted[0] - sorted[1] >= 1.0 {
                clear += 1;
                assert!(
                    same,
                    "{mode} step {step}: top-1 differs (cpu {} gpu {}) where the CPU margin {} is clear",
                    argmax(c),
                    argmax(g),
                    sorted[0] - sorted[1]
                );
            }
        }
        eprintln!(
            "{mode}: {} prompt tokens + {STEPS} decoded: max |Δlogit| {worst:.3}; top-1 equal at \
             {agree}/{} steps, {clear} with a CPU margin ≥ 1 (cpu {:.1} s, gpu {gpu_s:.1} s)",
            ids.len(),
            STEPS + 1,
            (t1 - t0).as_secs_f64()
        );
        assert!(clear > 0, "{mode}: no step had a clear margin");
        if mode == KvMode::Q4 {
            let f16_bytes = 160 * 4 * cpu_m.config().n_layer * cpu_m.config().kv_dim();
            assert!(gs.kv_bytes() < f16_bytes, "{} bytes", gs.kv_bytes());
            let u = gs.usage();
            assert_eq!(u.tokens, ids.len() + STEPS);
            assert!(u.kv_bytes_used < u.tokens * f16_bytes / 160, "{u:?}");
            let r = gs.truncate(10);
            assert!(
                matches!(&r, Err(Error::InvalidArg(m)) if m.contains("f16 KV cache")),
                "{r:?}"
            );
            assert_eq!(gs.tokens().len(), ids.len() + STEPS);
            gs.reset();
            let again = gs.eval(&ids[..5], Logits::Last).unwrap().to_vec();
            let mut fresh = gpu_m.session(&kv(mode)).unwrap();
            let want = fresh.eval(&ids[..5], Logits::Last).unwrap();
            assert_eq!(again, want, "a reset session computes like a new one");
        }
    }
}

/// Greedy decoding of `n` tokens after `prompt`; with the top-2 margin of each step.
fn greedy(s: &mut suanpan::Session, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let mut logits = s.eval(prompt, Logits::Last).unwrap().to_vec();
    let (mut toks, mut margins) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t = argmax(&logits);
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        toks.push(t);
        margins.push(sorted[0] - sorted[1]);
        if i + 1 < n {
            logits = s.eval(&[t], Logits::Last).unwrap().to_vec();
        }
    }
    (toks, margins)
}

/// The GPU's greedy tokens equal the CPU's; a difference is allowed only at a near tie
/// (the CPU's top-2 margin under 0.1, llama.cpp's parity rule), after which the texts may
/// part. Returns how many tokens agreed.
fn same_greedy(what: &str, cpu: &(Vec<u32>, Vec<f32>), gpu: &[u32]) -> usize {
    let n = cpu.0.iter().zip(gpu).take_while(|(a, b)| a == b).count();
    if n < gpu.len() {
        assert!(
            cpu.1[n] < 0.1,
            "{what}: token {n} differs (cpu {} gpu {}) with a CPU margin of {}; cpu {:?} gpu {gpu:?}",
            cpu.0[n],
            gpu[n],
            cpu.1[n],
            cpu.0
        );
    }
    eprintln!("{what}: {n}/{} greedy tokens equal", gpu.len());
    n
}

/// Every KV option runs on the GPU and gives the CPU's greedy tokens with the same flags:
/// Hadamard-rotated q4 keys; a q8 cache under a 2 MB budget that slides (sinks re-rotated);
/// a q4 cache without an f16 window (pages quantized during the batch); an f16 cache that
/// slides. The prompt (99 tokens) and 6 generated tokens overflow the small contexts, so
/// every sliding case really slides. Greedy on both backends, from the same prompt.
#[test]
fn every_kv_option_gives_the_cpu_greedy_tokens_on_gpu() {
    let cpu_m = common::model();
    let gpu_m = gpu_model();
    let ids = prompt(&cpu_m);
    const N: usize = 6;
    let cases = [
        (
            "q4 rotated",
            KvParams {
                mode: KvMode::Q4,
                window: 32,
                rotate: true,
                ..Default::default()
            },
            160,
        ),
        (
            "q8 budget 2M slide",
            KvParams {
                mode: KvMode::Q8,
                window: 32,
                budget: Some(2 << 20),
                overflow: Overflow::Slide,
                ..Default::default()
            },
            0,
        ),
        (
            "q4 window 0",
            KvParams {
                mode: KvMode::Q4,
                window: 0,
                ..Default::default()
            },
            160,
        ),
        (
            "f16 slide",
            KvParams {
                overflow: Overflow::Slide,
                ..Default::default()
            },
            64,
        ),
        (
            "q2 rotated slide",
            KvParams {
                mode: KvMode::Q2,
                window: 32,
                rotate: true,
                overflow: Overflow::Slide,
                ..Default::default()
            },
            96,
        ),
    ];
    for (what, kvp, n_ctx) in cases {
        // Batches of 32 (the window) on both backends, so both slide at the same tokens.
        let sp = SessionParams {
            n_ctx,
            n_batch: 32,
            kv: kvp,
            ..Default::default()
        };
        let mut cs = cpu_m.session(&sp).unwrap();
        let mut gs = gpu_m.session(&sp).unwrap();
        assert_eq!(
            (gs.n_ctx(), gs.n_batch()),
            (cs.n_ctx(), cs.n_batch()),
            "{what}: the same plan"
        );
        let cpu = greedy(&mut cs, &ids, N);
        let (gpu, _) = greedy(&mut gs, &ids, N);
        let slides = sp.kv.overflow == Overflow::Slide;
        assert_eq!(
            cs.kv_store().evicted() > 0,
            slides,
            "{what}: evicted {} of a context of {}",
            cs.kv_store().evicted(),
            cs.n_ctx()
        );
        if slides {
            assert_eq!(
                gs.kv_store().evicted(),
                cs.kv_store().evicted(),
                "{what}: the same tokens evicted"
            );
        }
        same_greedy(what, &cpu, &gpu);
    }
}

/// A GPU session's saved state reloads into a fresh GPU session (and into a CPU session)
/// and continues exactly as the original does.
#[test]
fn gpu_session_state_round_trips() {
    let cpu_m = common::model();
    let gpu_m = gpu_model();
    let ids = prompt(&cpu_m);
    let sp = SessionParams {
        n_ctx: 160,
        ..Default::default()
    };
    let mut a = gpu_m.session(&sp).unwrap();
    a.eval(&ids[..40], Logits::Last).unwrap();
    let blob = a.save_state().unwrap();
    let (want, _) = greedy(&mut a, &ids[40..50], 4);
    let mut b = gpu_m.session(&sp).unwrap();
    b.load_state(&blob).unwrap();
    assert_eq!(b.tokens(), &ids[..40]);
    let (got, _) = greedy(&mut b, &ids[40..50], 4);
    assert_eq!(got, want, "restored GPU session continues as the original");
    // The blob holds f16 keys and values: the CPU backend reads it too.
    let mut c = cpu_m.session(&sp).unwrap();
    c.load_state(&blob).unwrap();
    let cpu = greedy(&mut c, &ids[40..50], 4);
    same_greedy("GPU state on the CPU", &cpu, &got);
    // And a copy of a GPU session is an independent session with the same context.
    let mut d = gpu_m.session(&sp).unwrap();
    d.eval(&ids[..40], Logits::Last).unwrap();
    let mut e = d.try_clone().unwrap();
    let (x, _) = greedy(&mut d, &ids[40..50], 4);
    let (y, _) = greedy(&mut e, &ids[40..50], 4);
    assert_eq!(x, y);
    assert_eq!(x, want);
}
