//! Hostile and corrupt GGUF files: every one must be an `Err(BadModel)` whose message names
//! the problem, never a panic, never an allocation out of proportion to the file.
//!
//! Files are built with `GgufWriter` and then corrupted byte-wise at known places.
//! `SUANPAN_WRITE_FUZZ_SEEDS=1 cargo test -p suanpan --test gguf_bad_input fuzz_seed_corpus_parses` writes
//! the seed corpus for `cargo fuzz run gguf_parse` (see fuzz/README.md).

use std::panic::{catch_unwind, AssertUnwindSafe};

use suanpan::format::gguf::{GgufFile, GgufWriter, Value};
use suanpan::format::GgmlType;
use suanpan::Error;

// ---------------------------------------------------------------------------------------------
// Allocation tracking: the largest single allocation made by the current thread, metered by
// the runtime's global allocator (feature `alloc-guard`, which this test requires).

/// Run `f` and return its result with the largest single allocation it made on this thread.
fn largest_alloc_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    const {
        assert!(
            suanpan::alloc_guard::ENABLED,
            "needs the alloc-guard feature"
        )
    };
    let (out, stats) = suanpan::alloc_guard::measure(f);
    (out, stats.largest)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Q8_0 blocks: f16 scale 1.0 then 32 int8 values.
fn q8_0_bytes(n_blocks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for b in 0..n_blocks {
        out.extend_from_slice(&0x3c00u16.to_le_bytes());
        out.extend((0..32).map(|i| (i as i8 - 16 + b as i8) as u8));
    }
    out
}

/// A small llama-shaped file using every metadata value type, three tensors (F32, F32, Q8_0).
fn base_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", Value::String("llama".into()));
    w.add_meta("general.name", Value::String("tiny test model".into()));
    w.add_meta("llama.block_count", Value::U32(1));
    w.add_meta("llama.embedding_length", Value::U32(32));
    w.add_meta("llama.attention.head_count", Value::U32(2));
    w.add_meta("llama.rope.freq_base", Value::F32(10000.0));
    w.add_meta("test.u8", Value::U8(7));
    w.add_meta("test.i8", Value::I8(-7));
    w.add_meta("test.u16", Value::U16(700));
    w.add_meta("test.i16", Value::I16(-700));
    w.add_meta("test.i32", Value::I32(-70000));
    w.add_meta("test.flag", Value::Bool(true));
    w.add_meta("test.u64", Value::U64(1 << 40));
    w.add_meta("test.i64", Value::I64(-(1 << 40)));
    w.add_meta("test.f64", Value::F64(0.5));
    w.add_meta(
        "test.tokens",
        Value::Array(vec![
            Value::String("alpha".into()),
            Value::String("beta".into()),
            Value::String("gamma".into()),
        ]),
    );
    w.add_meta(
        "test.scores",
        Value::Array(vec![Value::F32(0.0), Value::F32(-1.0), Value::F32(-2.0)]),
    );
    w.add_meta(
        "test.nested",
        Value::Array(vec![
            Value::Array(vec![Value::U8(1), Value::U8(2)]),
            Value::Array(vec![Value::U8(3)]),
        ]),
    );
    let embd: Vec<f32> = (0..32 * 4).map(|i| i as f32 * 0.01).collect();
    w.add_tensor(
        "token_embd.weight",
        &[32, 4],
        GgmlType::F32,
        f32_bytes(&embd),
    );
    w.add_tensor(
        "output_norm.weight",
        &[32],
        GgmlType::F32,
        f32_bytes(&[1.0; 32]),
    );
    w.add_tensor(
        "blk.0.attn_q.weight",
        &[32, 2],
        GgmlType::Q8_0,
        q8_0_bytes(2),
    );
    w
}

fn base() -> Vec<u8> {
    base_writer().to_bytes()
}

/// Position of the first occurrence of `needle` (which the test knows to be unique).
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in file", String::from_utf8_lossy(needle)))
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

/// Offset of the string length that precedes `s` in the file.
fn str_len_at(buf: &[u8], s: &str) -> usize {
    find(buf, s.as_bytes()) - 8
}

/// Offset just after the metadata key `key` (its value type u32).
fn value_type_at(buf: &[u8], key: &str) -> usize {
    find(buf, key.as_bytes()) + key.len()
}

/// Tensor info fields for tensor `name`: (n_dims offset, dims offset, type offset, offset offset).
fn tensor_fields(buf: &[u8], name: &str) -> (usize, usize, usize, usize) {
    let n_dims_at = find(buf, name.as_bytes()) + name.len();
    let n_dims = get_u32(buf, n_dims_at) as usize;
    let dims_at = n_dims_at + 4;
    let ty_at = dims_at + 8 * n_dims;
    (n_dims_at, dims_at, ty_at, ty_at + 4)
}

/// The parse must fail with `BadModel`; returns the message.
#[track_caller]
fn bad(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Err(Error::BadModel(m)) => {
            assert!(!m.is_empty());
            m
        }
        Err(e) => panic!("expected Error::BadModel, got {e:?}"),
        Ok(f) => panic!("expected an error, the file parsed: {f:?}"),
    }
}

/// The message must contain every one of `needles` (case-insensitive).
#[track_caller]
fn mentions(msg: &str, needles: &[&str]) {
    let lower = msg.to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "error message {msg:?} should mention {n:?}"
        );
    }
}

/// Everything a caller may do with a parsed file, to be sure it holds up.
fn exercise(f: &GgufFile) {
    for (key, value) in &f.metadata {
        // By address: a mutated float may be NaN, which is not equal to itself.
        assert!(std::ptr::eq(f.get(key).unwrap(), value));
        let _ = value.summary();
        let _ = f.get_u64(key);
        let _ = f.get_f64(key);
    }
    for t in &f.tensors {
        assert_eq!(f.tensor(&t.name), Some(t));
        assert_eq!(t.offset % f.alignment, 0);
        assert_eq!(f.tensor_data(t).len() as u64, t.size);
        let _ = t.n_elements();
    }
}

// ---------------------------------------------------------------------------------------------
// The valid file, as the control.

#[test]
fn base_file_parses() {
    let bytes = base();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.get_str("general.architecture"), Some("llama"));
    assert_eq!(f.get("test.flag"), Some(&Value::Bool(true)));
    assert_eq!(f.tensors.len(), 3);
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ty, GgmlType::Q8_0);
    assert_eq!(f.tensor_data(q), &q8_0_bytes(2)[..]);
    exercise(&f);
}

// ---------------------------------------------------------------------------------------------
// Truncation.

#[test]
fn every_truncation_is_a_clear_error() {
    let bytes = base();
    for cut in 0..bytes.len() {
        let msg = match GgufFile::from_bytes(bytes[..cut].to_vec()) {
            Err(Error::BadModel(m)) => m,
            Err(e) => panic!("cut at {cut}: expected BadModel, got {e:?}"),
            Ok(_) => panic!("cut at {cut} of {}: the truncated file parsed", bytes.len()),
        };
        let lower = msg.to_lowercase();
        assert!(
            lower.contains("truncated")
                || lower.contains("left in the file")
                || lower.contains("past the end"),
            "cut at {cut}: message does not say the file is short: {msg:?}"
        );
    }
    assert!(GgufFile::from_bytes(bytes).is_ok());
}

#[test]
fn truncation_messages_name_what_is_missing() {
    mentions(&bad(Vec::new()), &["truncated", "magic"]);
    mentions(&bad(b"GGUF".to_vec()), &["truncated", "version"]);
    mentions(
        &bad(b"GGUF\x03\0\0\0".to_vec()),
        &["truncated", "tensor count"],
    );
    let bytes = base();
    // Cut inside the last tensor's data.
    let msg = bad(bytes[..bytes.len() - 1].to_vec());
    mentions(&msg, &["blk.0.attn_q.weight", "past the end", "truncated"]);
    // Cut right after the header: the data section is missing altogether.
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let msg = bad(bytes[..f.data_start as usize].to_vec());
    mentions(&msg, &["token_embd.weight", "past the end"]);
}

#[test]
fn truncated_file_on_disk_is_bad_model_and_missing_file_is_io() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "suanpan_gguf_bad_input_{}.gguf",
        std::process::id()
    ));
    let bytes = base();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let r = GgufFile::open(&path);
    std::fs::write(&path, b"").unwrap();
    let empty = GgufFile::open(&path);
    std::fs::remove_file(&path).unwrap();
    match r {
        Err(Error::BadModel(m)) => mentions(&m, &["truncated"]),
        other => panic!("expected BadModel, got {other:?}"),
    }
    match empty {
        Err(Error::BadModel(m)) => mentions(&m, &["truncated", "magic"]),
        other => panic!("empty file: expected BadModel, got {other:?}"),
    }
    match GgufFile::open(dir.join("suanpan_no_such_file.gguf")) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("suanpan_no_such_file.gguf")),
        other => panic!("expected Io, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Header.

#[test]
fn wrong_magic() {
    for magic in [b"GGML", b"gguf", b"\0\0\0\0", b"FUGG", b"GGJT"] {
        let mut bytes = base();
        bytes[..4].copy_from_slice(magic);
        let msg = bad(bytes);
        mentions(&msg, &["magic", "not a GGUF file"]);
    }
    // Something else entirely (a safetensors-like JSON header).
    mentions(&bad(b"{\"__metadata__\": {}}".to_vec()), &["magic"]);
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 1, 4, 99, u32::MAX] {
        let mut bytes = base();
        put_u32(&mut bytes, 4, v);
        mentions(&bad(bytes), &["version", &v.to_string()]);
    }
    // Version 2 has the same layout as 3 and is accepted.
    let mut bytes = base();
    put_u32(&mut bytes, 4, 2);
    assert_eq!(GgufFile::from_bytes(bytes).unwrap().version, 2);
}

#[test]
fn absurd_tensor_count() {
    for n in [u64::MAX, 1 << 40, 1 << 32, 100_000] {
        let mut bytes = base();
        put_u64(&mut bytes, 8, n);
        let (r, largest) = largest_alloc_during(|| GgufFile::from_bytes(bytes));
        match r {
            Err(Error::BadModel(m)) => mentions(&m, &["tensor", "count", &n.to_string()]),
            other => panic!("tensor count {n}: expected BadModel, got {other:?}"),
        }
        assert!(
            largest < 1 << 20,
            "tensor count {n}: allocated {largest} bytes"
        );
    }
    // One tensor more than the file describes runs into the data section: still an error.
    let mut bytes = base();
    put_u64(&mut bytes, 8, 4);
    bad(bytes);
}

#[test]
fn absurd_metadata_count() {
    for n in [u64::MAX, 1 << 40, 1 << 32, 100_000] {
        let mut bytes = base();
        put_u64(&mut bytes, 16, n);
        let msg = bad(bytes);
        mentions(&msg, &["metadata", "count", &n.to_string()]);
    }
}

#[test]
fn absurd_string_lengths() {
    for n in [u64::MAX, 1 << 40, 1 << 20] {
        // A key.
        let mut bytes = base();
        let at = str_len_at(&bytes, "general.name");
        put_u64(&mut bytes, at, n);
        mentions(
            &bad(bytes),
            &["metadata key", "string length", &n.to_string()],
        );
        // A string value.
        let mut bytes = base();
        let at = str_len_at(&bytes, "tiny test model");
        put_u64(&mut bytes, at, n);
        mentions(
            &bad(bytes),
            &["general.name", "string length", &n.to_string()],
        );
        // A string inside an array.
        let mut bytes = base();
        let at = str_len_at(&bytes, "beta");
        put_u64(&mut bytes, at, n);
        mentions(&bad(bytes), &["test.tokens", "string length"]);
        // A tensor name.
        let mut bytes = base();
        let at = str_len_at(&bytes, "output_norm.weight");
        put_u64(&mut bytes, at, n);
        mentions(&bad(bytes), &["tensor #1 name", "string length"]);
    }
}

#[test]
fn absurd_array_lengths() {
    for n in [u64::MAX, u64::MAX / 4 + 1, 1 << 40, 1 << 20] {
        let mut bytes = base();
        // Array value: elem type u32, then count u64.
        let at = value_type_at(&bytes, "test.scores") + 4 + 4;
        put_u64(&mut bytes, at, n);
        let (r, largest) = largest_alloc_during(|| GgufFile::from_bytes(bytes));
        match r {
            Err(Error::BadModel(m)) => mentions(&m, &["test.scores", "array", &n.to_string()]),
            other => panic!("array count {n}: expected BadModel, got {other:?}"),
        }
        assert!(
            largest < 1 << 20,
            "array count {n}: allocated {largest} bytes"
        );
    }
}

/// Counts that do fit the file but are lies: the reader must not reserve memory for all
/// the items a count claims before it has read them (a 1 GiB file claiming 10^9 one-byte
/// array items would otherwise reserve 32 GiB up front and abort the process).
#[test]
fn hostile_counts_do_not_reserve_memory_out_of_proportion() {
    const FILE: usize = 1 << 20;
    let header = |n_tensors: u64, n_kv: u64| {
        let mut b = b"GGUF\x03\0\0\0".to_vec();
        b.extend_from_slice(&n_tensors.to_le_bytes());
        b.extend_from_slice(&n_kv.to_le_bytes());
        b
    };
    // 1. An array of bools whose count equals the bytes left; the second item is invalid.
    let mut a = header(0, 1);
    a.extend_from_slice(&4u64.to_le_bytes());
    a.extend_from_slice(b"flag");
    a.extend_from_slice(&9u32.to_le_bytes()); // array
    a.extend_from_slice(&7u32.to_le_bytes()); // of bool
    let count = (FILE - a.len() - 8) as u64;
    a.extend_from_slice(&count.to_le_bytes());
    a.resize(FILE, 0);
    a[FILE - count as usize + 1] = 2;
    // 2. As many metadata pairs as could fit; the first key is invalid UTF-8.
    let mut k = header(0, ((FILE - 24) / 13) as u64);
    k.extend_from_slice(&1u64.to_le_bytes());
    k.push(0xff);
    k.resize(FILE, 0);
    // 3. As many tensors as could fit; the first has 0 dimensions.
    let mut t = header(((FILE - 24) / 32) as u64, 0);
    t.extend_from_slice(&1u64.to_le_bytes());
    t.push(b't');
    t.resize(FILE, 0);
    for (what, bytes, needle) in [
        ("array", a, "bool byte is 2"),
        ("metadata", k, "UTF-8"),
        ("tensors", t, "0 dimensions"),
    ] {
        let (r, largest) = largest_alloc_during(|| GgufFile::from_bytes(bytes));
        match r {
            Err(Error::BadModel(m)) => mentions(&m, &[needle]),
            other => panic!("{what}: expected BadModel, got {other:?}"),
        }
        assert!(
            largest < FILE / 4,
            "{what}: a {FILE}-byte file made a {largest}-byte allocation before validation"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata values.

#[test]
fn invalid_utf8_in_key() {
    let mut bytes = base();
    let at = find(&bytes, b"general.name");
    bytes[at + 3] = 0xff;
    mentions(&bad(bytes), &["UTF-8", "metadata key #1"]);
    // A lone continuation byte, and a truncated multi-byte sequence.
    for (i, b) in [0x80u8, 0xe2].into_iter().enumerate() {
        let mut bytes = base();
        let at = find(&bytes, b"llama.block_count");
        bytes[at + 11 + i] = b;
        mentions(&bad(bytes), &["UTF-8", "metadata key #2"]);
    }
}

#[test]
fn invalid_utf8_in_string_value() {
    let mut bytes = base();
    let at = find(&bytes, b"tiny test model");
    bytes[at] = 0xc3; // start of a 2-byte sequence followed by ASCII
    mentions(&bad(bytes), &["UTF-8", "general.name"]);
    // Inside a string array.
    let mut bytes = base();
    let at = find(&bytes, b"gamma");
    bytes[at + 4] = 0xfe;
    mentions(&bad(bytes), &["UTF-8", "test.tokens"]);
}

#[test]
fn invalid_utf8_in_tensor_name() {
    let mut bytes = base();
    let at = find(&bytes, b"output_norm.weight");
    bytes[at] = 0xff;
    mentions(&bad(bytes), &["UTF-8", "tensor #1 name"]);
}

#[test]
fn bool_byte_not_0_or_1() {
    for b in [2u8, 0xff] {
        let mut bytes = base();
        let at = value_type_at(&bytes, "test.flag") + 4;
        assert_eq!(bytes[at], 1);
        bytes[at] = b;
        mentions(&bad(bytes), &["test.flag", "bool", &b.to_string()]);
    }
}

#[test]
fn unknown_value_types() {
    for t in [13u32, 99, u32::MAX] {
        let mut bytes = base();
        let at = value_type_at(&bytes, "test.u64");
        put_u32(&mut bytes, at, t);
        mentions(
            &bad(bytes),
            &["test.u64", "unknown value type", &t.to_string()],
        );
        // As an array element type.
        let mut bytes = base();
        let at = value_type_at(&bytes, "test.scores") + 4;
        put_u32(&mut bytes, at, t);
        mentions(&bad(bytes), &["test.scores", "unknown array element type"]);
    }
}

#[test]
fn arrays_nested_too_deep() {
    let mut v = Value::Array(vec![Value::U8(1)]);
    for _ in 0..8 {
        v = Value::Array(vec![v]);
    }
    let mut w = base_writer();
    w.add_meta("test.deep", v);
    mentions(&bad(w.to_bytes()), &["test.deep", "nested"]);
}

#[test]
fn duplicate_metadata_key() {
    let mut bytes = base();
    // "test.i16" becomes a second "test.u16" (same length).
    let at = find(&bytes, b"test.i16");
    bytes[at + 5] = b'u';
    mentions(&bad(bytes), &["duplicate metadata key", "test.u16"]);
}

#[test]
fn bad_alignment() {
    let mut w = base_writer();
    w.add_meta("general.alignment", Value::U32(32));
    let good = w.to_bytes();
    GgufFile::from_bytes(good.clone()).unwrap();
    for a in [0u32, 3, 48, 1 << 21, u32::MAX] {
        let mut bytes = good.clone();
        let at = value_type_at(&bytes, "general.alignment") + 4;
        put_u32(&mut bytes, at, a);
        mentions(&bad(bytes), &["general.alignment", &a.to_string()]);
    }
    // Of the wrong type.
    for v in [
        Value::String("32".into()),
        Value::F32(32.0),
        Value::I32(-32),
    ] {
        let mut w = base_writer();
        w.add_meta("general.alignment", v);
        mentions(&bad(w.to_bytes()), &["general.alignment"]);
    }
    // A good non-default alignment works.
    let mut w = base_writer();
    w.add_meta("general.alignment", Value::U32(64));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.alignment, 64);
    exercise(&f);
}

// ---------------------------------------------------------------------------------------------
// Tensor infos.

#[test]
fn bad_dimension_counts() {
    for n in [0u32, 5, 64, u32::MAX] {
        let mut bytes = base();
        let (n_dims_at, ..) = tensor_fields(&bytes, "output_norm.weight");
        put_u32(&mut bytes, n_dims_at, n);
        mentions(
            &bad(bytes),
            &["output_norm.weight", &format!("{n} dimensions")],
        );
    }
}

#[test]
fn absurd_dimensions() {
    // One huge dimension.
    for d in [1u64 << 62, u64::MAX, 1 << 50] {
        let mut bytes = base();
        let (_, dims_at, ..) = tensor_fields(&bytes, "token_embd.weight");
        put_u64(&mut bytes, dims_at + 8, d);
        mentions(&bad(bytes), &["token_embd.weight", "absurd dimensions"]);
    }
    // Each dimension fine, the product overflows u64.
    let mut bytes = base();
    let (_, dims_at, ..) = tensor_fields(&bytes, "token_embd.weight");
    put_u64(&mut bytes, dims_at, 1 << 32);
    put_u64(&mut bytes, dims_at + 8, 1 << 32);
    mentions(&bad(bytes), &["token_embd.weight", "absurd dimensions"]);
    // Big but not absurd: the data is simply not there.
    let mut bytes = base();
    let (_, dims_at, ..) = tensor_fields(&bytes, "token_embd.weight");
    put_u64(&mut bytes, dims_at + 8, 1 << 30);
    mentions(&bad(bytes), &["token_embd.weight", "past the end"]);
}

#[test]
fn row_not_whole_blocks() {
    for cols in [48u64, 1, 33] {
        let mut bytes = base();
        let (_, dims_at, ..) = tensor_fields(&bytes, "blk.0.attn_q.weight");
        put_u64(&mut bytes, dims_at, cols);
        mentions(
            &bad(bytes),
            &[
                "blk.0.attn_q.weight",
                &format!("row length {cols}"),
                "Q8_0",
                "32",
            ],
        );
    }
}

#[test]
fn unknown_tensor_type_id() {
    // 4 and 5 are the removed Q4_2/Q4_3; 99 and u32::MAX were never used.
    for id in [4u32, 5, 99, u32::MAX] {
        let mut bytes = base();
        let (.., ty_at, _) = tensor_fields(&bytes, "output_norm.weight");
        put_u32(&mut bytes, ty_at, id);
        mentions(
            &bad(bytes),
            &["output_norm.weight", "unknown tensor type", &id.to_string()],
        );
    }
}

#[test]
fn tensor_offset_past_the_end() {
    for off in [1u64 << 20, 1 << 40, u64::MAX - 31] {
        let mut bytes = base();
        let (.., off_at) = tensor_fields(&bytes, "output_norm.weight");
        put_u64(&mut bytes, off_at, off);
        mentions(
            &bad(bytes),
            &["output_norm.weight", "past the end", &off.to_string()],
        );
    }
    // Just one alignment unit too far: the last tensor overhangs the end by a little.
    let mut bytes = base();
    let (.., off_at) = tensor_fields(&bytes, "blk.0.attn_q.weight");
    let off = u64::from_le_bytes(bytes[off_at..off_at + 8].try_into().unwrap());
    put_u64(&mut bytes, off_at, off + 32);
    mentions(&bad(bytes), &["blk.0.attn_q.weight", "past the end"]);
}

#[test]
fn tensor_offset_not_aligned() {
    for off in [1u64, 4, 16, 33] {
        let mut bytes = base();
        let (.., off_at) = tensor_fields(&bytes, "output_norm.weight");
        put_u64(&mut bytes, off_at, off);
        mentions(
            &bad(bytes),
            &["output_norm.weight", "not aligned", &off.to_string()],
        );
    }
}

#[test]
fn duplicate_tensor_name() {
    let mut w = base_writer();
    w.add_tensor(
        "output_norm.weight",
        &[32],
        GgmlType::F32,
        f32_bytes(&[2.0; 32]),
    );
    mentions(
        &bad(w.to_bytes()),
        &["duplicate tensor name", "output_norm.weight"],
    );
}

#[test]
fn no_tensors_and_no_data_is_fine() {
    // A metadata-only file (vocab-only GGUFs exist) with nothing after the header.
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", Value::String("llama".into()));
    let bytes = w.to_bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert!(f.tensors.is_empty());
    // Even without the padding.
    let unpadded = 24 + 8 + "general.architecture".len() + 4 + 8 + "llama".len();
    let f = GgufFile::from_bytes(bytes[..unpadded].to_vec()).unwrap();
    assert!(f.tensors.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Random mutations: never a panic, always `Ok` or `BadModel`.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    3,
    5,
    31,
    32,
    0x7f,
    0xff,
    1 << 31,
    1 << 32,
    1 << 62,
    u64::MAX / 2,
    u64::MAX,
];

fn mutate(rng: &mut XorShift, bytes: &mut Vec<u8>, header_len: usize) {
    let n_mutations = 1 + rng.below(4);
    for _ in 0..n_mutations {
        // Most mutations hit the header, where the structure is.
        let span = if rng.below(5) == 0 {
            bytes.len()
        } else {
            header_len.min(bytes.len())
        };
        let at = rng.below(span);
        match rng.below(7) {
            0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
            1 if !bytes.is_empty() => bytes[at] = rng.next() as u8,
            2 if at + 4 <= bytes.len() => {
                let v = INTERESTING[rng.below(INTERESTING.len())] as u32;
                put_u32(
                    bytes,
                    at,
                    v.wrapping_add(rng.below(3) as u32).wrapping_sub(1),
                );
            }
            3 if at + 8 <= bytes.len() => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                put_u64(
                    bytes,
                    at,
                    v.wrapping_add(rng.below(3) as u64).wrapping_sub(1),
                );
            }
            4 => bytes.truncate(at),
            5 => {
                let n = 1 + rng.below(16);
                let insert: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, insert);
            }
            _ => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    const SEED: u64 = 0x5eed_6775_6600_0001;
    const CASES: usize = 2000;
    let mut w = base_writer();
    // A u8 array gives single bytes to mutate into other types.
    w.add_meta("test.bytes", Value::Array((0..8).map(Value::U8).collect()));
    let original = w.to_bytes();
    let header_len = GgufFile::from_bytes(original.clone()).unwrap().data_start as usize;
    let mut rng = XorShift(SEED);
    let (mut ok, mut rejected) = (0, 0);
    for case in 0..CASES {
        let mut bytes = original.clone();
        mutate(&mut rng, &mut bytes, header_len);
        let copy = bytes.clone();
        let r = catch_unwind(AssertUnwindSafe(|| match GgufFile::from_bytes(bytes) {
            Ok(f) => {
                exercise(&f);
                Ok(())
            }
            Err(e) => Err(e),
        }));
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(Error::BadModel(m))) => {
                assert!(!m.is_empty());
                rejected += 1;
            }
            Ok(Err(e)) => panic!("seed {SEED:#x} case {case}: wrong error kind {e:?}"),
            Err(_) => panic!(
                "seed {SEED:#x} case {case}: the reader panicked on this {}-byte input: {:02x?}",
                copy.len(),
                copy
            ),
        }
    }
    assert_eq!(ok + rejected, CASES);
    // The mutations must actually reach the parser's checks.
    assert!(
        rejected > CASES / 4,
        "only {rejected} of {CASES} mutants rejected"
    );
}

// ---------------------------------------------------------------------------------------------
// Fuzzing seed corpus.

/// The fuzzer's seed files all parse; with `SUANPAN_WRITE_FUZZ_SEEDS=1` they are also
/// written to fuzz/corpus/gguf_parse.
#[test]
fn fuzz_seed_corpus_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gguf_parse");
    let write = std::env::var_os("SUANPAN_WRITE_FUZZ_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut seeds = vec![("base", base())];
    let mut w = base_writer();
    w.add_meta("general.alignment", Value::U32(8));
    seeds.push(("align8", w.to_bytes()));
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", Value::String("qwen2".into()));
    seeds.push(("metadata_only", w.to_bytes()));
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[2, 2, 2, 2], GgmlType::F16, vec![0; 32]);
    w.add_tensor("b", &[32], GgmlType::Q4_0, vec![0; 18]);
    w.add_tensor("c", &[256], GgmlType::Q4K, vec![0; 144]);
    w.add_tensor("d", &[0], GgmlType::F32, Vec::new());
    seeds.push(("tensors_only", w.to_bytes()));
    for (name, bytes) in seeds {
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        exercise(&f);
        if write {
            std::fs::write(dir.join(format!("seed_{name}.gguf")), bytes).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model level: the file parses, but is not a model we can run.

const M_EMBD: u64 = 32;
const M_FF: u64 = 256; // a whole K-quant block, so ffn_down can take any type
const M_HEAD_DIM: u64 = 16;
const M_Q: u64 = 2 * M_HEAD_DIM;
const M_KV: u64 = M_HEAD_DIM;
const M_VOCAB: u64 = 8;

type TensorSpec = (String, Vec<u64>, GgmlType);

/// The tensors of a one-layer llama with 2 query heads and 1 KV head.
fn model_tensors() -> Vec<TensorSpec> {
    let mut t: Vec<TensorSpec> = vec![
        (
            "token_embd.weight".into(),
            vec![M_EMBD, M_VOCAB],
            GgmlType::F32,
        ),
        ("output_norm.weight".into(), vec![M_EMBD], GgmlType::F32),
        (
            "output.weight".into(),
            vec![M_EMBD, M_VOCAB],
            GgmlType::Q8_0,
        ),
    ];
    let mut layer = |name: &str, dims: &[u64], ty| {
        t.push((format!("blk.0.{name}.weight"), dims.to_vec(), ty));
    };
    layer("attn_norm", &[M_EMBD], GgmlType::F32);
    layer("attn_q", &[M_EMBD, M_Q], GgmlType::Q8_0);
    layer("attn_k", &[M_EMBD, M_KV], GgmlType::Q8_0);
    layer("attn_v", &[M_EMBD, M_KV], GgmlType::F16);
    layer("attn_output", &[M_Q, M_EMBD], GgmlType::Q4_0);
    layer("ffn_norm", &[M_EMBD], GgmlType::F32);
    layer("ffn_gate", &[M_EMBD, M_FF], GgmlType::Q8_0);
    layer("ffn_up", &[M_EMBD, M_FF], GgmlType::Q4_1);
    layer("ffn_down", &[M_FF, M_EMBD], GgmlType::Q8_0);
    t
}

fn model_writer(tensors: &[TensorSpec]) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", Value::String("llama".into()));
    w.add_meta("llama.block_count", Value::U32(1));
    w.add_meta("llama.context_length", Value::U32(128));
    w.add_meta("llama.embedding_length", Value::U32(M_EMBD as u32));
    w.add_meta("llama.feed_forward_length", Value::U32(M_FF as u32));
    w.add_meta("llama.attention.head_count", Value::U32(2));
    w.add_meta("llama.attention.head_count_kv", Value::U32(1));
    w.add_meta("tokenizer.ggml.model", Value::String("llama".into()));
    let tokens = [
        "<unk>",
        "<s>",
        "</s>",
        "\u{2581}a",
        "\u{2581}b",
        "a",
        "b",
        "c",
    ];
    assert_eq!(tokens.len() as u64, M_VOCAB);
    w.add_meta(
        "tokenizer.ggml.tokens",
        Value::Array(
            tokens
                .iter()
                .map(|t| Value::String(t.to_string()))
                .collect(),
        ),
    );
    w.add_meta(
        "tokenizer.ggml.scores",
        Value::Array((0..M_VOCAB).map(|i| Value::F32(-(i as f32))).collect()),
    );
    w.add_meta(
        "tokenizer.ggml.token_type",
        Value::Array([2, 3, 3, 1, 1, 1, 1, 1].map(Value::I32).to_vec()),
    );
    for (name, dims, ty) in tensors {
        let n: u64 = dims.iter().product();
        let data = match ty {
            GgmlType::F32 => f32_bytes(&vec![1.0; n as usize]),
            GgmlType::F16 => 0x3c00u16.to_le_bytes().repeat(n as usize),
            _ => vec![0u8; ty.bytes_for(n).expect("whole blocks") as usize],
        };
        w.add_tensor(name, dims, *ty, data);
    }
    w
}

// `..Default::default()` keeps this compiling when `ModelParams` grows fields.
#[allow(clippy::needless_update)]
fn load_model(bytes: Vec<u8>) -> suanpan::Result<suanpan::Model> {
    let file = GgufFile::from_bytes(bytes)?;
    let params = suanpan::ModelParams {
        n_threads: 1,
        ..Default::default()
    };
    suanpan::Model::from_file(file, &params)
}

/// Loading must fail with `BadModel`; returns the message.
#[track_caller]
fn bad_model(bytes: Vec<u8>) -> String {
    match load_model(bytes) {
        Err(Error::BadModel(m)) => m,
        Err(e) => panic!("expected Error::BadModel, got {e:?}"),
        Ok(m) => panic!("expected an error, the model loaded: {m:?}"),
    }
}

fn set_type(t: &mut [TensorSpec], name: &str, ty: GgmlType) {
    t.iter_mut().find(|x| x.0 == name).unwrap().2 = ty;
}

fn set_dims(t: &mut [TensorSpec], name: &str, dims: &[u64]) {
    t.iter_mut().find(|x| x.0 == name).unwrap().1 = dims.to_vec();
}

#[test]
fn model_control_loads() {
    let m = load_model(model_writer(&model_tensors()).to_bytes()).unwrap();
    assert_eq!(m.config().n_embd, M_EMBD as usize);
    assert_eq!(m.config().n_vocab, M_VOCAB as usize);
    assert!(!m.weights().tied_output);
    // Without output.weight the LM head is tied to the embedding.
    let mut t = model_tensors();
    t.retain(|x| x.0 != "output.weight");
    assert!(
        load_model(model_writer(&t).to_bytes())
            .unwrap()
            .weights()
            .tied_output
    );
}

#[test]
fn model_unsupported_tensor_type() {
    use GgmlType::*;
    // Q5_0/Q5_1, the K-quants, IQ4 and the ternary types run since issue 19 (their loading is
    // covered by `forward::every_readable_block_type_runs_and_matches_its_f32_twin`); these
    // never hold weights in a model file.
    for ty in [Q8K, Q8_1, I8, I32, F64] {
        let mut t = model_tensors();
        set_type(&mut t, "blk.0.ffn_down.weight", ty);
        let msg = bad_model(model_writer(&t).to_bytes());
        mentions(
            &msg,
            &[
                "blk.0.ffn_down.weight",
                &format!("type {ty}"),
                "not support",
            ],
        );
    }
    // A norm vector too.
    let mut t = model_tensors();
    set_type(&mut t, "output_norm.weight", I32);
    mentions(
        &bad_model(model_writer(&t).to_bytes()),
        &["output_norm.weight", "I32", "not support"],
    );
}

#[test]
fn model_missing_tensors() {
    for (name, ..) in model_tensors() {
        if name == "output.weight" {
            continue; // optional: tied to token_embd
        }
        let mut t = model_tensors();
        t.retain(|x| x.0 != name);
        mentions(&bad_model(model_writer(&t).to_bytes()), &[&name, "missing"]);
    }
    // The config says two layers, the file has one.
    let mut w = model_writer(&model_tensors());
    w.add_meta("llama.block_count", Value::U32(2));
    mentions(
        &bad_model(w.to_bytes()),
        &["blk.1.attn_norm.weight", "missing"],
    );
}

#[test]
fn model_wrong_shapes() {
    let cases: [(&str, &[u64]); 6] = [
        ("blk.0.attn_v.weight", &[M_KV, M_EMBD]),
        ("blk.0.attn_q.weight", &[M_EMBD, M_Q, 1]),
        ("blk.0.ffn_gate.weight", &[M_EMBD, M_FF / 2]),
        ("output_norm.weight", &[M_EMBD * 2]),
        ("blk.0.attn_norm.weight", &[M_EMBD, 1]),
        ("output.weight", &[M_EMBD, M_VOCAB + 1]),
    ];
    for (name, dims) in cases {
        let mut t = model_tensors();
        set_dims(&mut t, name, dims);
        mentions(
            &bad_model(model_writer(&t).to_bytes()),
            &[name, "shape", &format!("{dims:?}")],
        );
    }
}

#[test]
fn model_architecture_missing_or_unsupported() {
    let bytes = model_writer(&model_tensors()).to_bytes();
    // Rename the key so it is absent (same length keeps the layout).
    let mut missing = bytes.clone();
    let at = find(&missing, b"general.architecture");
    missing[at..at + 7].copy_from_slice(b"GENERAL");
    mentions(&bad_model(missing), &["general.architecture", "missing"]);
    for arch in ["gpt2", "mamba", "bert", ""] {
        let mut w = model_writer(&model_tensors());
        w.add_meta("general.architecture", Value::String(arch.into()));
        mentions(
            &bad_model(w.to_bytes()),
            &[&format!("architecture {arch:?}"), "not supported"],
        );
    }
}

#[test]
fn model_bad_hyperparameters() {
    let mut t = model_writer(&model_tensors());
    t.add_meta("llama.embedding_length", Value::U32(0));
    mentions(&bad_model(t.to_bytes()), &["llama.embedding_length", "0"]);
    let mut t = model_writer(&model_tensors());
    t.add_meta("llama.block_count", Value::U64(1 << 40));
    mentions(&bad_model(t.to_bytes()), &["llama.block_count"]);
    let mut t = model_writer(&model_tensors());
    t.add_meta("llama.block_count", Value::String("1".into()));
    mentions(&bad_model(t.to_bytes()), &["llama.block_count"]);
    // A required key absent: rename it in place.
    let mut bytes = model_writer(&model_tensors()).to_bytes();
    let at = find(&bytes, b"llama.feed_forward_length");
    bytes[at..at + 5].copy_from_slice(b"LLAMA");
    mentions(&bad_model(bytes), &["llama.feed_forward_length", "missing"]);
}

#[test]
fn model_load_of_truncated_file_on_disk() {
    let path = std::env::temp_dir().join(format!(
        "suanpan_gguf_bad_input_model_{}.gguf",
        std::process::id()
    ));
    let bytes = model_writer(&model_tensors()).to_bytes();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let r = suanpan::Model::load(&path, &suanpan::ModelParams::default());
    std::fs::remove_file(&path).unwrap();
    match r {
        Err(Error::BadModel(m)) => mentions(&m, &["past the end", "truncated"]),
        other => panic!("expected BadModel, got {other:?}"),
    }
}
