//! The GPU backend's async entry points (what the browser's WebGPU build runs), natively:
//! a model built on a device the caller opened (`Model::from_file_with_device`), a forward
//! pass submitted without waiting (`Session::eval_submit`) whose logits are awaited from a
//! `Readback`, and the adapter-limit refusal the page shows for a model too large.
//!
//! The awaited logits must equal the blocking path's bit for bit (the same kernels on the
//! same device); the futures are driven by `pollster` here, by the JS event loop in the
//! browser. Runs on whatever adapter wgpu finds (lavapipe in CI); no adapter is a failure.
#![cfg(feature = "gpu")]

mod common;

use std::sync::Arc;

use common::gpu::dev;
use suanpan::backend::gpu::{GpuDevice, GpuOptions};
use suanpan::format::gguf::GgufFile;
use suanpan::format::GgmlType;
use suanpan::model::Logits;
use suanpan::{BackendKind, Model, ModelParams, SessionParams};

fn synth_file(ty: GgmlType) -> GgufFile {
    let s = common::synth::Synth {
        ty,
        ..Default::default()
    };
    GgufFile::from_bytes(s.gguf()).unwrap()
}

fn on_device(file: GgufFile, backend: BackendKind, d: Arc<GpuDevice>) -> suanpan::Result<Model> {
    let params = ModelParams {
        n_threads: 1,
        backend,
        ..Default::default()
    };
    Model::from_file_with_device(file, &params, d)
}

/// Prompt (two batches of 2 and one of 1: the deferred read-back is the last batch's)
/// and three decode steps: the awaited logits equal `eval`'s bitwise, and both sessions
/// hold the same context.
#[test]
fn awaited_logits_equal_blocking_eval() {
    for ty in [GgmlType::F32, GgmlType::Q4_1] {
        let m = Arc::new(on_device(synth_file(ty), BackendKind::Gpu, dev()).unwrap());
        assert!(m.on_gpu(), "{}", m.backend_name());
        let sp = SessionParams {
            n_ctx: 32,
            n_batch: 2,
            ..Default::default()
        };
        let mut sync = m.session(&sp).unwrap();
        let mut deferred = m.session(&sp).unwrap();
        let steps: [&[u32]; 4] = [&[5, 9, 20, 33, 7], &[11], &[3], &[40]];
        for (i, toks) in steps.iter().enumerate() {
            let want = sync.eval(toks, Logits::Last).unwrap().to_vec();
            let rb = deferred.eval_submit(toks).unwrap();
            assert_eq!(rb.len(), 4 * want.len());
            let got = pollster::block_on(rb.f32s()).unwrap();
            let (w, g): (Vec<u32>, Vec<u32>) = (
                want.iter().map(|x| x.to_bits()).collect(),
                got.iter().map(|x| x.to_bits()).collect(),
            );
            assert!(w == g, "{ty} step {i}: awaited logits differ from eval's");
            assert_eq!(sync.tokens(), deferred.tokens(), "{ty} step {i}");
        }
    }
}

/// `eval_submit` is the GPU's path: on a CPU model it is an error, not a panic, and an
/// empty input is refused as `eval` refuses it.
#[test]
fn eval_submit_refuses_cpu_models_and_empty_input() {
    let cpu = Arc::new(on_device(synth_file(GgmlType::F32), BackendKind::Cpu, dev()).unwrap());
    assert!(!cpu.on_gpu());
    let mut s = cpu.session(&SessionParams::default()).unwrap();
    let e = s.eval_submit(&[1, 2]).unwrap_err().to_string();
    assert!(e.contains("needs a model on the GPU"), "{e}");
    let gpu = Arc::new(on_device(synth_file(GgmlType::F32), BackendKind::Gpu, dev()).unwrap());
    let mut s = gpu.session(&SessionParams::default()).unwrap();
    let e = s.eval_submit(&[]).unwrap_err().to_string();
    assert!(e.contains("nothing to evaluate"), "{e}");
}

/// A model over the adapter's binding limit (capped at 1 KiB here, as the page's
/// `maxBinding` caps it): `Gpu` fails naming the limit, `Auto` runs on the CPU and says why.
#[test]
fn model_over_the_binding_limit_is_refused_or_falls_back() {
    let opts = GpuOptions {
        max_binding: Some(1024),
        ..Default::default()
    };
    let small = pollster::block_on(GpuDevice::open_async(&opts)).unwrap();
    assert_eq!(small.caps().max_binding, 1024);
    let e = on_device(synth_file(GgmlType::F32), BackendKind::Gpu, small.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("binds at most 1024 bytes"), "{e}");
    let m = on_device(synth_file(GgmlType::F32), BackendKind::Auto, small).unwrap();
    assert!(!m.on_gpu());
    let note = m.backend_note().expect("a fallback reason");
    assert!(
        note.starts_with("auto: running on the CPU because") && note.contains("1024 bytes"),
        "{note}"
    );
}
