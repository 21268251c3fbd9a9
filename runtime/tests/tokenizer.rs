//! Tokenizer tests: the default model (SmolLM2), llama.cpp's vocab test vectors,
//! hand-built vocabularies, malformed metadata, and the UTF-8 stream decoder.
//!
//! Real data these tests need (they FAIL, saying how to get it, when it is missing):
//! * SmolLM2: `$SUANPAN_MODEL` or the installer's path under the cache
//!   (`$SUANPAN_CACHE`, default `~/.cache/suanpan`); `scripts/test` installs it.
//! * llama.cpp's `ggml-vocab-*.gguf` + `.inp`/`.out`: `$SUANPAN_LLAMA_VOCAB` or
//!   `<cache>/llama-vocab` (filled by `tests/golden/fetch_vocab.sh`, run by `scripts/test`).
//! * `tests/golden/smollm2_tokenize.json` (llama.cpp's ids for SmolLM2, made by
//!   `tests/golden/make_golden.py`); `$SUANPAN_GOLDEN_TOKENIZE` overrides the path.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use suanpan::format::gguf::{GgufFile, GgufWriter, Value};
use suanpan::tokenizer::{StreamDecoder, TokenType, Tokenizer, VocabKind};
use suanpan::Error;

// ------------------------------------------------------------------------------------
// Locating real data
// ------------------------------------------------------------------------------------

fn smollm2() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let f = GgufFile::open(common::model_path()).expect("open SmolLM2 GGUF");
        Tokenizer::from_gguf(&f).expect("build SmolLM2 tokenizer")
    })
}

fn vocab_dir() -> PathBuf {
    let p = match std::env::var_os("SUANPAN_LLAMA_VOCAB") {
        Some(p) => PathBuf::from(p),
        None => suanpan::install::cache_dir().join("llama-vocab"),
    };
    assert!(
        p.is_dir(),
        "llama.cpp's tokenizer test vectors are missing at {}.\nGet them with `tests/golden/fetch_vocab.sh` \
         (copies vendor/llama.cpp/models/ggml-vocab-*.gguf{{,.inp,.out}} from the llama-cpp-python sdist: \
         `pip download --no-deps --no-binary :all: llama-cpp-python`), or set SUANPAN_LLAMA_VOCAB to a directory holding them.",
        p.display()
    );
    p
}

fn gpl3() -> String {
    let p = Path::new("/usr/share/common-licenses/GPL-3");
    std::fs::read_to_string(p).unwrap_or_else(|e| {
        panic!(
            "{} is needed ({e}); it ships with Debian's base-files package (apt-get install base-files)",
            p.display()
        )
    })
}

// ------------------------------------------------------------------------------------
// SmolLM2 (byte-level BPE, pre = smollm)
// ------------------------------------------------------------------------------------

#[test]
fn smollm2_models_md_example() {
    let t = smollm2();
    assert_eq!(t.kind(), VocabKind::ByteLevelBpe);
    assert_eq!(t.pre(), "smollm");
    assert_eq!(t.vocab_size(), 49152);
    let ids = t.encode("Hello world, it's 2024!", false, false).unwrap();
    assert_eq!(ids, [19556, 905, 28, 357, 506, 216, 34, 32, 34, 36, 17]);
    // add_bos is false for this model: add_special changes nothing.
    assert!(!t.add_bos());
    assert_eq!(
        t.encode("Hello world, it's 2024!", true, false).unwrap(),
        ids
    );
    assert_eq!(t.decode(&ids).unwrap(), "Hello world, it's 2024!");
}

#[test]
fn smollm2_special_ids_and_eog() {
    let t = smollm2();
    assert_eq!(t.bos(), Some(1));
    assert_eq!(t.eos(), Some(2));
    assert_eq!(t.token_text(0), "<|endoftext|>");
    assert_eq!(t.token_text(1), "<|im_start|>");
    assert_eq!(t.token_text(2), "<|im_end|>");
    assert!(t.is_eog(2), "<|im_end|> ends generation");
    assert!(t.is_eog(0), "<|endoftext|> ends generation");
    assert!(!t.is_eog(1), "<|im_start|> does not");
    assert!(!t.is_eog(19556));
    assert!(!t.is_eog(u32::MAX));
    assert_eq!(t.token_type(1), TokenType::Control);
    assert_eq!(t.token_type(19556), TokenType::Normal);
    assert_eq!(t.token_id("<|im_end|>"), Some(2));
    assert_eq!(t.token_text(999_999), "");
}

#[test]
fn smollm2_parse_special() {
    let t = smollm2();
    let text = "<|im_start|>user\nHi<|im_end|>\n";
    let with = t.encode(text, false, true).unwrap();
    assert_eq!(with.first(), Some(&1));
    assert!(with.contains(&2));
    assert_eq!(with.iter().filter(|&&i| i < 17).count(), 2, "{with:?}");
    let without = t.encode(text, false, false).unwrap();
    assert!(
        !without.contains(&1) && !without.contains(&2),
        "{without:?}"
    );
    assert!(without.len() > with.len());
    // Without special parsing the text survives a round trip verbatim.
    assert_eq!(t.decode(&without).unwrap(), text);
    // With it, control tokens render as nothing (llama_token_to_piece(special=false)) ...
    assert_eq!(t.decode(&with).unwrap(), "user\nHi\n");
    // ... unless asked for.
    assert_eq!(t.decode_opts(&with, true).unwrap(), text);
    // A special token in the middle of a word.
    let ids = t.encode("a<|im_end|>b", false, true).unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[1], 2);
}

#[test]
fn smollm2_token_bytes() {
    let t = smollm2();
    assert_eq!(t.token_bytes(1), b"", "control tokens render as nothing");
    assert_eq!(t.token_bytes(905), b" world");
    assert_eq!(t.token_bytes(u32::MAX), b"");
    // Printable ASCII, tab and newline are single tokens whose bytes invert the byte-level
    // mapping. (Some control bytes, e.g. 0x04, have no token in this vocab and are dropped,
    // as llama.cpp drops them.)
    for b in (b' '..=b'~').chain([b'\t', b'\n']) {
        let s = [b];
        let ids = t
            .encode(std::str::from_utf8(&s).unwrap(), false, false)
            .unwrap();
        assert_eq!(ids.len(), 1, "byte {b:#x}");
        assert_eq!(t.token_bytes(ids[0]), &s);
    }
    // A 4-byte emoji splits into byte pieces that concatenate back to it.
    let ids = t.encode("🦙", false, false).unwrap();
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&i| t.token_bytes(i).to_vec())
        .collect();
    assert_eq!(bytes, "🦙".as_bytes());
}

#[test]
fn smollm2_digits_split_individually() {
    let t = smollm2();
    let ids = t.encode("1234567", false, false).unwrap();
    assert_eq!(ids.len(), 7);
    assert_eq!(t.decode(&ids).unwrap(), "1234567");
}

#[test]
fn smollm2_round_trips() {
    let t = smollm2();
    for s in [
        "",
        " ",
        "   leading and trailing   ",
        "\n\n\ttabs\tand\nnewlines\r\n",
        "Ünïcödé — “quotes” ‘single’ … 日本語のテキスト 한국어 العربية",
        "emoji 🦙🚀👨‍👩‍👧 and combining e\u{301}",
        "code: fn main() { println!(\"{}\", 1 + 2); }",
        "<|im_start|> is text here",
    ] {
        let ids = t.encode(s, false, false).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), s);
    }
    assert!(t.encode("", true, true).unwrap().is_empty());
}

#[test]
fn smollm2_decode_rejects_bad_ids() {
    let t = smollm2();
    match t.decode(&[1, 49152]) {
        Err(Error::Tokenizer(msg)) => assert!(msg.contains("49152"), "{msg}"),
        other => panic!("expected a tokenizer error, got {other:?}"),
    }
}

#[test]
fn smollm2_gpl3_speed_and_round_trip() {
    let t = smollm2();
    let text = gpl3();
    let t0 = Instant::now();
    let ids = t.encode(&text, false, false).unwrap();
    let dt = t0.elapsed();
    // A second run hits the BPE cache, the steady state.
    let t1 = Instant::now();
    let ids2 = t.encode(&text, false, false).unwrap();
    let dt2 = t1.elapsed();
    assert_eq!(ids, ids2);
    eprintln!(
        "GPL-3: {} bytes -> {} tokens, first encode {:.1} ms, second {:.1} ms",
        text.len(),
        ids.len(),
        dt.as_secs_f64() * 1e3,
        dt2.as_secs_f64() * 1e3
    );
    assert!(
        ids.len() > 7000 && ids.len() < 12000,
        "{} tokens",
        ids.len()
    );
    assert_eq!(t.decode(&ids).unwrap(), text);
    // Well under a second in release; debug test builds get slack.
    let limit = if cfg!(debug_assertions) { 5.0 } else { 1.0 };
    assert!(dt.as_secs_f64() < limit, "encoding GPL-3 took {dt:?}");
}

/// `tests/golden/smollm2_tokenize.json`, made by `tests/golden/make_golden.py` with
/// llama-cpp-python on the same GGUF.
fn smollm2_golden() -> serde_json::Value {
    let path = match std::env::var_os("SUANPAN_GOLDEN_TOKENIZE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/smollm2_tokenize.json"),
    };
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}).\nMake it with llama.cpp's reference tokenizer:\n  \
             pip install llama-cpp-python==0.3.36 && python3 tests/golden/make_golden.py --out-dir tests/golden",
            path.display()
        )
    });
    serde_json::from_str(&src).expect("smollm2_tokenize.json is valid JSON")
}

fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// Every string llama.cpp tokenized for SmolLM2, with and without special parsing and
/// with add_special, gives the same ids here; decoding round-trips where it does there.
#[test]
fn smollm2_matches_llama_cpp_golden() {
    let golden = smollm2_golden();
    let t = smollm2();
    assert_eq!(golden["add_bos"].as_bool(), Some(t.add_bos()));
    assert_eq!(golden["bos_id"].as_u64().map(|v| v as u32), t.bos());
    assert_eq!(golden["eos_id"].as_u64().map(|v| v as u32), t.eos());
    let cases = golden["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().expect("text");
        for (key, add_special, parse_special) in [
            ("ids_special_false", false, false),
            ("ids_special_true", false, true),
            ("ids_add_special_true_special_false", true, false),
        ] {
            let want = json_ids(&c[key]);
            let got = t.encode(text, add_special, parse_special).unwrap();
            if got != want {
                failures.push(format!(
                    "{text:?} {key}:\n   want {want:?}\n   got  {got:?}"
                ));
            }
        }
        if c["detokenize_roundtrip_special_false"].as_bool() == Some(true) {
            let ids = json_ids(&c["ids_special_false"]);
            let back = t.decode(&ids).unwrap();
            if back != text {
                failures.push(format!("{text:?}: decode gave {back:?}"));
            }
        }
        if let Some(texts) = c["vocab_text_special_true"].as_array() {
            let ids = json_ids(&c["ids_special_true"]);
            for (id, want) in ids.iter().zip(texts) {
                // llama.cpp wrote these with backslashreplace; compare the valid ones.
                let want = want.as_str().unwrap_or_default();
                if !want.contains("\\x") && t.token_text(*id) != want {
                    failures.push(format!(
                        "token_text({id}) = {:?}, llama.cpp {want:?}",
                        t.token_text(*id)
                    ));
                }
            }
        }
    }
    // Optional: the whole GPL-3 text (present when the file was made with it).
    if let Some(want) = golden.get("gpl3_ids") {
        let want = json_ids(want);
        let got = t.encode(&gpl3(), false, false).unwrap();
        if got != want {
            let at = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            failures.push(format!(
                "GPL-3 differs at token {at} ({} vs {} tokens)",
                got.len(),
                want.len()
            ));
        }
    }
    if let Some(rendered) =
        golden["chat_template"]["rendered_by_llama_chat_apply_template"].as_str()
    {
        let want = json_ids(&golden["chat_template"]["rendered_ids_special_true"]);
        let got = t.encode(rendered, false, true).unwrap();
        if got != want {
            failures.push(format!("rendered chat:\n   want {want:?}\n   got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches with llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------------
// llama.cpp's vocab test vectors
// ------------------------------------------------------------------------------------

/// Parse llama.cpp's `.inp` / `.out` pair: tests separated by "\n__ggml_vocab_test__\n",
/// one line of space-separated ids per test.
fn read_vectors(inp: &Path, out: &Path) -> Vec<(String, Vec<u32>)> {
    let raw = std::fs::read_to_string(inp).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(sep) {
            Some(i) => {
                texts.push(raw[pos..pos + i].to_string());
                pos += i + sep.len();
            }
            None => {
                texts.push(raw[pos..].to_string());
                break;
            }
        }
    }
    let outs: Vec<Vec<u32>> = std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        outs.len(),
        "{}: input and output counts differ",
        inp.display()
    );
    texts.into_iter().zip(outs).collect()
}

fn find_vocab_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("ggml-vocab-") && name.ends_with(".gguf") {
                    found.push(p);
                }
            }
        }
    }
    found.sort();
    found
}

/// Vocab files whose tokenizer we implement; every vector of these must match.
const EXPECT_SUPPORTED: &[&str] = &[
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
    "aquila",
    "baichuan",
    "gpt-neox",
];
/// Vocab types we do not implement: loading must fail with a clear tokenizer error.
const EXPECT_UNSUPPORTED: &[&str] = &["bert-bge", "nomic-bert-moe", "gemma-4"];

#[test]
fn llama_cpp_vocab_vectors() {
    let dir = vocab_dir();
    let files = find_vocab_files(&dir);
    assert!(
        !files.is_empty(),
        "no ggml-vocab-*.gguf in {}",
        dir.display()
    );
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for gguf in &files {
        let name = gguf
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches("ggml-vocab-")
            .trim_end_matches(".gguf")
            .to_string();
        let f = GgufFile::open(gguf).unwrap();
        let tok = Tokenizer::from_gguf(&f);
        let inp = PathBuf::from(format!("{}.inp", gguf.display()));
        let out = PathBuf::from(format!("{}.out", gguf.display()));
        let tok = match tok {
            Err(Error::Tokenizer(msg)) => {
                report.push(format!("{name:16} unsupported: {msg}"));
                if EXPECT_SUPPORTED.contains(&name.as_str()) {
                    failures.push(format!("{name}: expected to be supported, got: {msg}"));
                }
                continue;
            }
            Err(e) => {
                failures.push(format!("{name}: unexpected error {e}"));
                continue;
            }
            Ok(t) => {
                if EXPECT_UNSUPPORTED.contains(&name.as_str()) {
                    failures.push(format!("{name}: expected to be refused, but it loaded"));
                }
                t
            }
        };
        if !inp.is_file() || !out.is_file() {
            report.push(format!(
                "{name:16} loads ({:?}, pre {}), no test vectors",
                tok.kind(),
                tok.pre()
            ));
            continue;
        }
        let cases = read_vectors(&inp, &out);
        let mut bad = 0;
        for (text, want) in &cases {
            let got = tok.encode(text, false, false).unwrap();
            if &got != want {
                bad += 1;
                if bad <= 5 {
                    failures.push(format!(
                        "{name}: {text:?}\n   want {want:?}\n   got  {got:?}"
                    ));
                }
            }
        }
        // Encoding speed on real prose, and a lossless round trip.
        let text = gpl3();
        let t0 = Instant::now();
        let ids = tok.encode(&text, false, false).unwrap();
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let back = tok.decode(&ids).unwrap();
        if back != text {
            failures.push(format!(
                "{name}: GPL-3 does not round-trip through encode/decode"
            ));
        }
        report.push(format!(
            "{name:16} {:?} pre={:<14} {}/{} vectors pass; GPL-3 {} tokens in {ms:.0} ms",
            tok.kind(),
            tok.pre(),
            cases.len() - bad,
            cases.len(),
            ids.len()
        ));
        if bad > 5 {
            failures.push(format!("{name}: ... {bad} failures in total"));
        }
    }
    eprintln!(
        "llama.cpp vocab vectors in {}:\n  {}",
        dir.display(),
        report.join("\n  ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------------------------------------------
// Hand-built vocabularies
// ------------------------------------------------------------------------------------

fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A tiny GPT-2 style vocab: all 256 byte chars, a few merges and two special tokens.
fn tiny_bpe(extra: impl FnOnce(&mut GgufWriter)) -> Result<Tokenizer, Error> {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<tool>".into(),
    ];
    // GPT-2 byte → char table.
    let mut n = 0;
    for b in 0..=255u32 {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
        tokens.push(c.to_string());
    }
    for t in ["he", "ll", "hell", "hello", "Ġw", "Ġwo", "Ġwor", "Ġworld"] {
        tokens.push(t.into());
    }
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "Ġwo r", "Ġwor l",
    ];
    // "Ġworl" is missing on purpose below unless we add it.
    tokens.push("Ġworl".into());
    let mut merges: Vec<&str> = merges.to_vec();
    merges.push("Ġworl d");
    let mut types = vec![Value::I32(1); tokens.len()];
    types[0] = Value::I32(3);
    types[1] = Value::I32(3);
    types[2] = Value::I32(4);
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_meta("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    w.add_meta(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.iter().map(|s| Value::String(s.clone())).collect()),
    );
    w.add_meta("tokenizer.ggml.token_type", Value::Array(types));
    w.add_meta("tokenizer.ggml.merges", strs(&merges));
    w.add_meta("tokenizer.ggml.bos_token_id", Value::U32(0));
    w.add_meta("tokenizer.ggml.eos_token_id", Value::U32(0));
    extra(&mut w);
    let f = GgufFile::from_bytes(w.to_bytes())?;
    Tokenizer::from_gguf(&f)
}

#[test]
fn tiny_bpe_merges_and_specials() {
    let t = tiny_bpe(|_| {}).unwrap();
    let hello = t.token_id("hello").unwrap();
    let world = t.token_id("Ġworld").unwrap();
    assert_eq!(
        t.encode("hello world", false, false).unwrap(),
        [hello, world]
    );
    // Control token: only with parse_special. User-defined "<tool>": always.
    let ids = t.encode("<|im_start|>hello", false, true).unwrap();
    assert_eq!(ids, [1, hello]);
    let ids = t.encode("<|im_start|>hello", false, false).unwrap();
    assert!(!ids.contains(&1));
    assert_eq!(t.encode("<tool>", false, false).unwrap(), [2]);
    assert_eq!(
        t.token_bytes(2),
        b"<tool>",
        "user-defined tokens render as text"
    );
    assert_eq!(t.token_bytes(1), b"");
    assert_eq!(t.token_bytes(world), b" world");
    assert!(t.is_eog(0));
    assert!(!t.add_bos());
}

#[test]
fn tiny_bpe_add_bos_and_eos() {
    let t = tiny_bpe(|w| {
        w.add_meta("tokenizer.ggml.add_bos_token", Value::Bool(true));
        w.add_meta("tokenizer.ggml.add_eos_token", Value::Bool(true));
    })
    .unwrap();
    let hello = t.token_id("hello").unwrap();
    assert_eq!(t.encode("hello", true, false).unwrap(), [0, hello, 0]);
    assert_eq!(t.encode("hello", false, false).unwrap(), [hello]);
}

/// A tiny Llama-2 style SentencePiece vocab with scores and byte fallback.
fn tiny_spm() -> GgufWriter {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32, 0.0, 0.0];
    for b in 0..=255u32 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let normal = [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("ll", -3.0),
        ("he", -4.0),
        ("hell", -5.0),
        ("▁hell", -6.0),
        ("▁hello", -7.0),
        ("▁w", -8.0),
        ("or", -9.0),
        ("▁wor", -10.0),
        ("ld", -11.0),
        ("▁world", -12.0),
        ("▁h", -20.0),
    ];
    for (t, s) in normal {
        tokens.push(t.into());
        types.push(1);
        scores.push(s);
    }
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("llama".into()));
    w.add_meta(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    w.add_meta(
        "tokenizer.ggml.token_type",
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    w.add_meta(
        "tokenizer.ggml.scores",
        Value::Array(scores.into_iter().map(Value::F32).collect()),
    );
    w.add_meta("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.add_meta("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.add_meta("tokenizer.ggml.unknown_token_id", Value::U32(0));
    w
}

#[test]
fn tiny_spm_scores_space_prefix_and_byte_fallback() {
    let f = GgufFile::from_bytes(tiny_spm().to_bytes()).unwrap();
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.kind(), VocabKind::SentencePiece);
    assert!(t.add_bos(), "SentencePiece adds bos by default");
    let hello = t.token_id("▁hello").unwrap();
    let world = t.token_id("▁world").unwrap();
    assert_eq!(
        t.encode("hello world", false, false).unwrap(),
        [hello, world]
    );
    assert_eq!(
        t.encode("hello world", true, false).unwrap(),
        [1, hello, world]
    );
    // "é" is not in the vocab: its two UTF-8 bytes come out as byte tokens.
    let ids = t.encode("hé", false, false).unwrap();
    let h = t.token_id("▁h").unwrap();
    assert_eq!(ids, [h, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(t.token_bytes(3 + 0xC3), &[0xC3]);
    assert_eq!(t.token_type(3 + 0xC3), TokenType::Byte);
    // decode drops the space prefix and joins the bytes.
    assert_eq!(t.decode(&ids).unwrap(), "hé");
    assert_eq!(t.decode(&[hello, world]).unwrap(), "hello world");
    // A space prefix follows every special token (llama.cpp behaviour).
    assert_eq!(t.encode("</s>hello", false, true).unwrap(), [2, hello]);
    assert!(t.is_eog(2));
}

// ------------------------------------------------------------------------------------
// Malformed metadata: clear errors, never panics
// ------------------------------------------------------------------------------------

fn expect_bad_model(r: Result<Tokenizer, Error>, needle: &str) {
    match r {
        Err(Error::BadModel(msg)) => assert!(
            msg.contains(needle),
            "message {msg:?} should mention {needle:?}"
        ),
        Err(e) => panic!("expected BadModel mentioning {needle:?}, got {e:?}"),
        Ok(_) => panic!("expected BadModel mentioning {needle:?}, but the tokenizer loaded"),
    }
}

fn expect_tokenizer_err(r: Result<Tokenizer, Error>, needle: &str) {
    match r {
        Err(Error::Tokenizer(msg)) => assert!(
            msg.contains(needle),
            "message {msg:?} should mention {needle:?}"
        ),
        Err(e) => panic!("expected Error::Tokenizer mentioning {needle:?}, got {e:?}"),
        Ok(_) => {
            panic!("expected Error::Tokenizer mentioning {needle:?}, but the tokenizer loaded")
        }
    }
}

fn from_writer(w: GgufWriter) -> Result<Tokenizer, Error> {
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes())?)
}

#[test]
fn error_missing_model_key() {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", Value::String("llama".into()));
    expect_bad_model(from_writer(w), "tokenizer.ggml.model");
}

#[test]
fn error_missing_tokens() {
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("llama".into()));
    expect_bad_model(from_writer(w), "tokenizer.ggml.tokens");
}

#[test]
fn error_empty_tokens() {
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("llama".into()));
    w.add_meta("tokenizer.ggml.tokens", Value::Array(vec![]));
    expect_bad_model(from_writer(w), "empty");
}

#[test]
fn error_tokens_wrong_type() {
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("llama".into()));
    w.add_meta(
        "tokenizer.ggml.tokens",
        Value::Array(vec![Value::U32(1), Value::U32(2)]),
    );
    expect_bad_model(from_writer(w), "array of strings");
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("llama".into()));
    w.add_meta("tokenizer.ggml.tokens", Value::String("abc".into()));
    expect_bad_model(from_writer(w), "array of strings");
}

#[test]
fn error_model_wrong_type() {
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::U32(2));
    expect_bad_model(from_writer(w), "should be a string");
}

#[test]
fn error_merge_references_unknown_token() {
    let r = tiny_bpe(|w| w.add_meta("tokenizer.ggml.merges", strs(&["h e", "x yz"])));
    expect_bad_model(r, "\"yz\"");
    let r = tiny_bpe(|w| w.add_meta("tokenizer.ggml.merges", strs(&["nospace"])));
    expect_bad_model(r, "merges[0]");
    // Both halves exist but the merged token does not.
    let r = tiny_bpe(|w| w.add_meta("tokenizer.ggml.merges", strs(&["o w"])));
    expect_bad_model(r, "\"ow\"");
}

#[test]
fn error_missing_merges_for_bpe() {
    let r = tiny_bpe(|w| {
        // Overwrite with the wrong type rather than removing (the writer cannot remove).
        w.add_meta("tokenizer.ggml.merges", Value::U32(0));
    });
    expect_bad_model(r, "tokenizer.ggml.merges");
}

#[test]
fn error_bos_out_of_range() {
    let r = tiny_bpe(|w| w.add_meta("tokenizer.ggml.bos_token_id", Value::U32(1_000_000)));
    expect_bad_model(r, "out of range");
    let r = tiny_bpe(|w| w.add_meta("tokenizer.ggml.eos_token_id", Value::U64(u64::MAX)));
    expect_bad_model(r, "out of range");
}

#[test]
fn error_wrong_value_types() {
    expect_bad_model(
        tiny_bpe(|w| w.add_meta("tokenizer.ggml.bos_token_id", Value::String("1".into()))),
        "bos_token_id",
    );
    expect_bad_model(
        tiny_bpe(|w| w.add_meta("tokenizer.ggml.add_bos_token", Value::String("yes".into()))),
        "add_bos_token",
    );
    expect_bad_model(
        tiny_bpe(|w| w.add_meta("tokenizer.ggml.token_type", strs(&["1", "2"]))),
        "token_type",
    );
    expect_bad_model(
        tiny_bpe(|w| {
            w.add_meta(
                "tokenizer.ggml.token_type",
                Value::Array(vec![Value::I32(1)]),
            )
        }),
        "token_type",
    );
    expect_bad_model(
        tiny_bpe(|w| w.add_meta("tokenizer.ggml.pre", Value::U8(1))),
        "tokenizer.ggml.pre",
    );
    let mut w = tiny_spm();
    w.add_meta("tokenizer.ggml.scores", strs(&["a"]));
    expect_bad_model(from_writer(w), "scores");
}

#[test]
fn error_add_bos_without_bos() {
    // A gpt2 vocab smaller than llama.cpp's default bos id (11) and no bos id.
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_meta("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    w.add_meta("tokenizer.ggml.tokens", strs(&["a", "b"]));
    w.add_meta("tokenizer.ggml.merges", strs(&[]));
    w.add_meta("tokenizer.ggml.add_bos_token", Value::Bool(true));
    expect_bad_model(from_writer(w), "bos");
}

#[test]
fn error_duplicate_tokens() {
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("llama".into()));
    w.add_meta("tokenizer.ggml.tokens", strs(&["<unk>", "a", "a"]));
    expect_bad_model(from_writer(w), "duplicate");
}

#[test]
fn error_unknown_pre_tokenizer() {
    let r = tiny_bpe(|w| w.add_meta("tokenizer.ggml.pre", Value::String("no-such-pre".into())));
    expect_tokenizer_err(r, "no-such-pre");
}

#[test]
fn error_unsupported_vocab_type() {
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("bert".into()));
    w.add_meta("tokenizer.ggml.tokens", strs(&["[PAD]", "a"]));
    expect_tokenizer_err(from_writer(w), "bert");
}

#[test]
fn missing_pre_means_default() {
    // Like llama.cpp: no tokenizer.ggml.pre → the "default" regexes.
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_meta("tokenizer.ggml.tokens", strs(&["a", "b", "ab"]));
    w.add_meta("tokenizer.ggml.merges", strs(&["a b"]));
    let t = from_writer(w).unwrap();
    assert_eq!(t.pre(), "default");
    assert_eq!(t.encode("abab", false, false).unwrap(), [2, 2]);
}

#[test]
fn unknown_characters_do_not_panic() {
    // A gpt2 vocab without byte tokens: characters it cannot spell are dropped, like llama.cpp.
    let mut w = GgufWriter::new();
    w.add_meta("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_meta("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    w.add_meta("tokenizer.ggml.tokens", strs(&["a", "b", "ab"]));
    w.add_meta("tokenizer.ggml.merges", strs(&["a b"]));
    let t = from_writer(w).unwrap();
    assert_eq!(t.encode("ab zz 🦙 ab", false, false).unwrap(), [2, 2]);
}

// ------------------------------------------------------------------------------------
// StreamDecoder
// ------------------------------------------------------------------------------------

/// xorshift64*: deterministic randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn stream(chunks: &[&[u8]]) -> (Vec<String>, String) {
    let mut d = StreamDecoder::new();
    let mut outs = Vec::new();
    for c in chunks {
        outs.push(d.push(c).to_string());
    }
    outs.push(d.finish());
    let all = outs.concat();
    (outs, all)
}

#[test]
fn stream_decoder_random_splits_of_valid_text() {
    let text = "héllo wörld — 日本語 🦙🚀 ∑x² 👨‍👩‍👧 Ω K e\u{301} end";
    let bytes = text.as_bytes();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2000 {
        let mut cuts: Vec<usize> = (0..rng.below(12))
            .map(|_| rng.below(bytes.len() + 1))
            .collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
        let (outs, all) = stream(&chunks);
        assert_eq!(all, text);
        for o in &outs {
            assert!(
                !o.contains('\u{FFFD}'),
                "valid input never yields U+FFFD: {o:?}"
            );
        }
    }
}

#[test]
fn stream_decoder_one_byte_at_a_time() {
    let text = "a€𝄞b";
    let mut d = StreamDecoder::new();
    let mut got = Vec::new();
    for b in text.as_bytes() {
        got.push(d.push(&[*b]).to_string());
    }
    assert_eq!(got, ["a", "", "", "€", "", "", "", "𝄞", "b"]);
    assert!(d.pending().is_empty());
    assert_eq!(d.finish(), "");
}

#[test]
fn stream_decoder_invalid_bytes_match_lossy() {
    let mut rng = Rng(42);
    let alphabet: &[u8] = &[
        b'a', b' ', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0xA6, 0x99, 0xFF, 0x80, 0xC0, 0xED,
        0xA0,
    ];
    for _ in 0..3000 {
        let n = rng.below(24);
        let bytes: Vec<u8> = (0..n)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let mut cuts: Vec<usize> = (0..rng.below(6)).map(|_| rng.below(n + 1)).collect();
        cuts.push(0);
        cuts.push(n);
        cuts.sort_unstable();
        let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
        let (_, all) = stream(&chunks);
        assert_eq!(
            all,
            String::from_utf8_lossy(&bytes),
            "bytes {bytes:02x?} cut at {cuts:?}"
        );
    }
}

#[test]
fn stream_decoder_flushes_incomplete_tail() {
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(&[b'x', 0xF0, 0x9F]), "x");
    assert_eq!(d.pending(), &[0xF0, 0x9F]);
    assert_eq!(d.finish(), "\u{FFFD}");
    assert_eq!(d.push(b"ok"), "ok");
}

#[test]
fn stream_decoder_with_smollm2_tokens() {
    let t = smollm2();
    let text = "Streaming 🦙 emoji and 日本語 works.";
    let ids = t.encode(text, false, false).unwrap();
    let mut d = StreamDecoder::new();
    let mut out = String::new();
    for &id in &ids {
        out.push_str(d.push(t.token_bytes(id)));
    }
    out.push_str(&d.finish());
    assert_eq!(out, text);
}

#[test]
fn tokenizer_is_send_and_sync() {
    // A model (and its tokenizer) is shared between sessions on several threads.
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<StreamDecoder>();
    let t = smollm2();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| t.encode("Hello world, it's 2024!", false, false).unwrap()))
            .collect();
        for h in hs {
            assert_eq!(
                h.join().unwrap(),
                [19556, 905, 28, 357, 506, 216, 34, 32, 34, 36, 17]
            );
        }
    });
}
