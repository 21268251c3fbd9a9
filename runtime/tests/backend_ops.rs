//! Every op of the `Backend` trait, on every backend, against the CPU backend (whose ops
//! are the scalar references of `backend/cpu/ops.rs` and the tested kernels), in the manner
//! of ggml's `test-backend-ops`: random batch sizes, random inputs, small random-weight
//! models of each architecture family (llama, qwen2 with biases, gemma3 with Q/K norms,
//! post-norms, GELU, an embedding scale and sliding-window layers), property-based.
//!
//! A new op is covered by adding one `Op` variant; a new backend by adding one loader.
//!
//! Tolerance: `2e-3 · (1 + max |expected|)` per element for f32/f16 weights. Projections
//! through Q8_0 weights quantize their input to 8 bits on both backends, but a value that
//! falls on a rounding edge can take the neighbouring code on one of them (summation order),
//! so their outputs (and the logits: the LM head is the tied Q8_0 embedding) get
//! `2e-2 · (1 + max |expected|)`.

mod common;

use std::sync::Arc;

use common::synth::Synth;
use proptest::prelude::*;
use suanpan::backend::{Act, Backend, Logits, Mat, Norm};
use suanpan::format::gguf::Value;
use suanpan::format::{GgmlType, GgufFile};
use suanpan::model::config::Activation;
use suanpan::{BackendKind, Model, ModelParams, Session, SessionParams};

/// One call of the trait, with the buffers it reads (filled with the same random values on
/// every backend) and the one it writes.
#[derive(Clone, Copy, Debug)]
enum Op {
    Embed,
    RmsNorm(Norm, Act, Act),
    HeadNorm(Norm, Act),
    Project(Mat, Act, Act),
    ProjectQkv,
    Rope(Act, bool),
    Attend(usize, usize),
    Glu(Activation),
    Add(Act, Act),
    Logits,
}

impl Op {
    /// Buffers the op reads.
    fn inputs(self) -> Vec<Act> {
        match self {
            Op::Embed | Op::Logits => vec![Act::X],
            Op::RmsNorm(_, s, _) => vec![s],
            Op::HeadNorm(_, b) | Op::Rope(b, _) => vec![b],
            Op::Project(_, x, _) => vec![x],
            Op::ProjectQkv => vec![Act::Xn],
            Op::Attend(..) => vec![Act::Q, Act::K, Act::V],
            Op::Glu(_) => vec![Act::Gate, Act::Up],
            Op::Add(d, s) => vec![d, s],
        }
    }

    /// Buffers whose result is compared (`None`: the logits).
    fn outputs(self) -> Vec<Option<Act>> {
        match self {
            Op::Embed => vec![Some(Act::X)],
            Op::RmsNorm(_, _, d) => vec![Some(d)],
            Op::HeadNorm(_, b) | Op::Rope(b, _) => vec![Some(b)],
            Op::Project(_, _, o) => vec![Some(o)],
            Op::ProjectQkv => vec![Some(Act::Q), Some(Act::K), Some(Act::V)],
            Op::Attend(..) => vec![Some(Act::Attn)],
            Op::Glu(_) => vec![Some(Act::Gate)],
            Op::Add(d, _) => vec![Some(d)],
            Op::Logits => vec![None],
        }
    }

    fn run(self, b: &mut dyn Backend, tokens: &[u32], scale: f32) -> suanpan::Result<()> {
        match self {
            Op::Embed => b.embed(tokens, scale),
            Op::RmsNorm(w, s, d) => b.rms_norm(w, s, d),
            Op::HeadNorm(w, buf) => b.head_norm(w, buf),
            Op::Project(m, x, o) => b.project(x, &[(m, o)]),
            Op::ProjectQkv => b.project(
                Act::Xn,
                &[
                    (Mat::Q(1), Act::Q),
                    (Mat::K(1), Act::K),
                    (Mat::V(1), Act::V),
                ],
            ),
            Op::Rope(buf, sliding) => b.rope(buf, sliding),
            Op::Attend(layer, window) => b.attend(layer, window),
            Op::Glu(a) => b.glu(a),
            Op::Add(d, s) => b.add(d, s),
            Op::Logits => b.logits(0),
        }
    }
}

/// A model family: its synthetic file and the ops that make sense on it.
struct Family {
    name: &'static str,
    synth: Synth,
    ops: Vec<Op>,
}

fn families() -> Vec<Family> {
    let common = |act: Activation| {
        vec![
            Op::Embed,
            Op::RmsNorm(Norm::Attn(0), Act::X, Act::Xn),
            Op::RmsNorm(Norm::Ffn(1), Act::X, Act::Xn),
            Op::Project(Mat::O(0), Act::Attn, Act::Tmp),
            Op::Project(Mat::Gate(1), Act::Xn, Act::Gate),
            Op::Project(Mat::Down(0), Act::Gate, Act::Tmp),
            Op::ProjectQkv,
            Op::Rope(Act::Q, false),
            Op::Rope(Act::K, false),
            Op::Attend(0, 0),
            Op::Attend(1, 0),
            Op::Glu(act),
            Op::Add(Act::X, Act::Tmp),
            Op::Logits,
        ]
    };
    let mut gemma_ops = common(Activation::GeluTanh);
    gemma_ops.extend([
        Op::HeadNorm(Norm::QHead(0), Act::Q),
        Op::HeadNorm(Norm::KHead(1), Act::K),
        Op::RmsNorm(Norm::PostAttn(0), Act::Tmp, Act::Tmp),
        Op::RmsNorm(Norm::PostFfn(1), Act::Tmp, Act::Tmp),
        Op::Rope(Act::Q, true),
        Op::Attend(0, 3),
    ]);
    vec![
        Family {
            name: "llama f16",
            synth: Synth {
                ty: GgmlType::F16,
                ..Default::default()
            },
            ops: common(Activation::Silu),
        },
        Family {
            name: "qwen2 q8_0 (biases)",
            synth: Synth {
                arch: "qwen2",
                ty: GgmlType::Q8_0,
                seed: 5,
                ..Default::default()
            },
            ops: common(Activation::Silu),
        },
        Family {
            name: "gemma3 f32",
            synth: Synth {
                arch: "gemma3",
                ty: GgmlType::F32,
                n_layer: 2,
                seed: 9,
                meta: vec![
                    ("gemma3.attention.sliding_window".into(), Value::U32(3)),
                    ("gemma3.attention.key_length".into(), Value::U32(16)),
                    ("gemma3.attention.value_length".into(), Value::U32(16)),
                ],
                ..Default::default()
            },
            ops: gemma_ops,
        },
    ]
}

/// The family's model on each backend: the CPU (the reference) and the GPU.
fn models(f: &Family) -> (Arc<Model>, Arc<Model>) {
    let load = |backend| {
        let file = GgufFile::from_bytes(f.synth.gguf()).unwrap();
        Arc::new(
            Model::from_file(
                file,
                &ModelParams {
                    n_threads: 2,
                    backend,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{} on {backend:?}: {e}", f.name)),
        )
    };
    (load(BackendKind::Cpu), load(BackendKind::Gpu))
}

struct Rng(u64);

impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Run `op` on a batch of `tokens` after a context of `prefix` tokens, with random inputs
/// from `seed`; returns the compared outputs.
fn apply(s: &mut Session, op: Op, prefix: &[u32], tokens: &[u32], seed: u64) -> Vec<Vec<f32>> {
    s.reset();
    if !prefix.is_empty() {
        s.eval(prefix, Logits::None).unwrap();
    }
    let c = s.model().config().clone();
    let width = |a: Act| match a {
        Act::X | Act::Xn | Act::Tmp => c.n_embd,
        Act::Q | Act::Attn => c.q_dim(),
        Act::K | Act::V => c.kv_dim(),
        Act::Gate | Act::Up => c.n_ff,
    };
    let n = tokens.len();
    s.with_backend(|b| {
        b.begin(tokens, Logits::All)?;
        let mut rng = Rng(seed | 1);
        for a in op.inputs() {
            let v: Vec<f32> = (0..n * width(a)).map(|_| rng.f() * 2.0).collect();
            b.load(a, &v)?;
        }
        op.run(b, tokens, c.embd_scale)?;
        let mut out = Vec::new();
        for o in op.outputs() {
            out.push(match o {
                Some(a) => b.fetch(a)?,
                None => b.fetch_logits(n)?,
            });
        }
        Ok(out)
    })
    .unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

fn session(m: &Arc<Model>) -> Session {
    m.session(&SessionParams {
        n_ctx: 32,
        n_batch: 8,
        all_logits: true,
        ..Default::default()
    })
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every op of every family: the GPU backend equals the CPU backend.
    #[test]
    fn every_op_on_every_backend_equals_the_cpu(
        n in 1usize..=6,
        n_prefix in 0usize..=9,
        seed in any::<u64>(),
    ) {
        for f in families() {
            let (cpu_m, gpu_m) = models(&f);
            let (mut cpu, mut gpu) = (session(&cpu_m), session(&gpu_m));
            let prefix: Vec<u32> = (0..n_prefix as u32).map(|i| 2 + (i * 53 + seed as u32 % 97) % 300).collect();
            let tokens: Vec<u32> = (0..n as u32).map(|i| 2 + (i * 31 + seed as u32 % 89) % 300).collect();
            for &op in &f.ops {
                let want = apply(&mut cpu, op, &prefix, &tokens, seed);
                let got = apply(&mut gpu, op, &prefix, &tokens, seed);
                // The LM head is the tied Q8_0 embedding in every family.
                let quantized = matches!(op, Op::Logits)
                    || (f.synth.ty == GgmlType::Q8_0 && matches!(op, Op::Project(..) | Op::ProjectQkv));
                let rel = if quantized { 2e-2 } else { 2e-3 };
                for (w, g) in want.iter().zip(&got) {
                    prop_assert_eq!(w.len(), g.len());
                    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let tol = rel * (1.0 + scale);
                    for (i, (a, b)) in w.iter().zip(g).enumerate() {
                        prop_assert!(
                            (a - b).abs() <= tol,
                            "{} {:?} n={} prefix={}: element {}: cpu {} gpu {} (tol {})",
                            f.name, op, n, n_prefix, i, a, b, tol
                        );
                    }
                }
            }
        }
    }
}
