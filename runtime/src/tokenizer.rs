//! Tokenizer built from the vocabulary stored in a GGUF file, reproducing llama.cpp.
//!
//! The merging itself is done by the HF `tokenizers` crate (a [`BPE`] model inside a
//! `tokenizers::Tokenizer`); this module supplies what llama.cpp does around it so that
//! the ids are the ones llama.cpp produces for the same file:
//!
//! * **`tokenizer.ggml.model == "gpt2"`**: byte-level BPE from `tokenizer.ggml.tokens` and
//!   `tokenizer.ggml.merges`. The pre-tokenizer is a sequence of regex splits (isolated
//!   matches, like llama.cpp's `unicode_regex_split`) chosen by `tokenizer.ggml.pre`
//!   exactly as in llama.cpp's `llm_tokenizer_bpe`, followed by the GPT-2 byte-to-unicode
//!   mapping. A missing `pre` falls back to llama.cpp's `default` (as llama.cpp does); an
//!   unknown `pre` is refused with [`Error::Tokenizer`] listing the supported names.
//! * **`tokenizer.ggml.model == "llama"`**: SentencePiece BPE (Llama-2 style). llama.cpp
//!   merges any adjacent pair whose concatenation is a token, highest score first; we
//!   derive the equivalent merge list (every split of every token into two tokens, ranked by
//!   the score of the result, as HF's SentencePiece converter does) and let a `BPE` model
//!   with byte fallback (`<0x00>`..`<0xFF>`) run it. Spaces become `▁`, and a space is
//!   prefixed to the text and after every special token when `add_space_prefix` (default
//!   true) is set, as in llama.cpp.
//! * **Special tokens**: control, user-defined and unknown tokens are matched in the raw
//!   text before the BPE runs (llama.cpp's `tokenizer_st_partition`: longest token text
//!   first). User-defined tokens are always matched; control/unknown tokens only when
//!   `parse_special` is set, so `"<|im_start|>"` is one id with special parsing and plain
//!   text without.
//! * **End of generation**: eos, eot, eom, and the tokens llama.cpp marks by their text
//!   (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<end_of_turn>`, FIM pad/repo/sep ...).
//!
//! Other vocab types (`bert`, `t5`, `rwkv`, ...) are refused with [`Error::Tokenizer`].
//! Malformed metadata (missing or empty token list, wrong value types, merges naming
//! unknown tokens, a bos/eos id out of range, duplicate tokens) is [`Error::BadModel`].
//! Differences from llama.cpp, on purpose: an out-of-range bos/eos id is an error (llama.cpp
//! warns and keeps a default); `decode` does not apply llama.cpp's `clean_spaces`
//! post-processing (so decoding round-trips the text).

use std::collections::{HashMap, HashSet};
use std::fmt;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::error::{Error, Result};
use crate::format::gguf::{GgufFile, Value};

/// Token attributes, as llama.cpp's `llama_token_attr` bit flags.
mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

/// The kind of vocabulary in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with a regex pre-tokenizer.
    ByteLevelBpe,
    /// `tokenizer.ggml.model = "llama"`: SentencePiece BPE with scores and byte fallback.
    SentencePiece,
}

/// The type of a token as stored in `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
    Undefined,
}

// ---------------------------------------------------------------------------------------
// Pre-tokenizer regexes, transcribed from llama.cpp's `llm_tokenizer_bpe` constructor.
// Each list is applied in order; every regex splits the pieces left by the previous one
// into matches and the text between matches (HF `Split` with `Isolated`).
// ---------------------------------------------------------------------------------------

/// GPT-2's regex. llama.cpp runs its hand-written splitter for this exact pattern, whose
/// behaviour includes the trailing `\s+` alternative of the original GPT-2 regex.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_DEFAULT: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    RE_GPT2,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];
const RE_FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", RE_GPT2, r"[0-9][0-9][0-9]"];
const RE_STARCODER: &[&str] = &[r"\p{N}", RE_GPT2];
/// DeepSeek LLM. The letter class is written with code point escapes: several of its
/// characters (U+2126 OHM SIGN, U+212A KELVIN SIGN, Greek extended) are changed by
/// Unicode normalization, which would silently corrupt a literal copy.
const RE_DEEPSEEK_LLM: &[&str] = &[
    r"[\r\n]",
    concat!(
        r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}",
        r"\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}",
        r"\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}",
        r"\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}",
        r"\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}",
        r"\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}",
        r"\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}",
        r"\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}",
        r"\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}",
        r"\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}",
        r"\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}",
        r"\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}",
        r"\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}",
        r"\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}",
        r"\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}",
        r"\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}",
        r"\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
    ),
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
    r"\s+$",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}+",
];
const RE_DEEPSEEK_CODER: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}",
];
const RE_DEEPSEEK3: &[&str] = &[
    r"\p{N}{1,3}",
    r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];
const RE_PORO: &str = r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+";
const RE_TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a `tokenizer.ggml.pre` value selects.
struct PreSpec {
    regexes: &'static [&'static str],
    /// Whole pre-tokens that are in the vocabulary skip the merges (llama3 style).
    ignore_merges: bool,
    /// Default of `add_bos` before `tokenizer.ggml.add_bos_token` overrides it.
    add_bos: bool,
    /// llama.cpp clears the default bos id for this pre-tokenizer (chatglm).
    no_default_bos: bool,
}

const fn pre(regexes: &'static [&'static str]) -> PreSpec {
    PreSpec {
        regexes,
        ignore_merges: false,
        add_bos: false,
        no_default_bos: false,
    }
}

/// The `tokenizer.ggml.pre` values we support, grouped as in llama.cpp.
const SUPPORTED_PRE: &[(&[&str], PreSpec)] = &[
    (&["default"], pre(RE_DEFAULT)),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        PreSpec {
            regexes: &[RE_LLAMA3],
            ignore_merges: true,
            add_bos: true,
            no_default_bos: false,
        },
    ),
    (&["dbrx", "smaug-bpe"], pre(&[RE_LLAMA3])),
    (
        &["glm4", "chatglm-bpe"],
        PreSpec {
            regexes: &[RE_LLAMA3],
            ignore_merges: false,
            add_bos: false,
            no_default_bos: true,
        },
    ),
    (&["deepseek-llm"], pre(RE_DEEPSEEK_LLM)),
    (&["deepseek-coder"], pre(RE_DEEPSEEK_CODER)),
    (
        &["deepseek-v3", "hunyuan-dense", "joyai-llm"],
        pre(RE_DEEPSEEK3),
    ),
    (&["falcon"], pre(RE_FALCON)),
    (
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        pre(&[RE_GPT2]),
    ),
    (
        &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        pre(RE_STARCODER),
    ),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
            "solar-open",
        ],
        pre(&[RE_QWEN2]),
    ),
    (&["qwen35"], pre(&[RE_QWEN35])),
    (&["poro-chat", "bloom", "gpt3-finnish"], pre(&[RE_PORO])),
    (&["viking"], pre(&[RE_PORO, r"\p{N}"])),
    (
        &["tekken"],
        PreSpec {
            regexes: &[RE_TEKKEN],
            ignore_merges: true,
            add_bos: true,
            no_default_bos: false,
        },
    ),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        pre(&[RE_GPT4O]),
    ),
    (&["seed-coder"], pre(&[RE_SEED_CODER])),
];

fn pre_spec(name: &str) -> Option<&'static PreSpec> {
    SUPPORTED_PRE
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, spec)| spec)
}

/// All `tokenizer.ggml.pre` names accepted, for error messages and docs.
pub fn supported_pre_tokenizers() -> Vec<&'static str> {
    SUPPORTED_PRE
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect()
}

/// GPT-2's reversible byte → printable-char map (`bytes_to_unicode`).
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\u{FFFD}');
            n += 1;
            c
        };
    }
    table
}

/// Inverse of [`byte_to_char_table`]: every mapped char is below U+0144.
fn char_to_byte_table() -> Vec<Option<u8>> {
    let mut inv = vec![None; 512];
    for (b, c) in byte_to_char_table().iter().enumerate() {
        inv[*c as usize] = Some(b as u8);
    }
    inv
}

/// Text that the special-token partition produced.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A tokenizer for one model, built from GGUF metadata. Immutable and `Send + Sync`.
pub struct Tokenizer {
    hf: tokenizers::Tokenizer,
    kind: VocabKind,
    pre: String,
    texts: Vec<String>,
    attrs: Vec<u16>,
    /// `token_bytes` of every token, concatenated; `piece_offsets[id]..piece_offsets[id+1]`.
    pieces: Vec<u8>,
    piece_offsets: Vec<u32>,
    /// Control / user-defined / unknown tokens, longest text first (llama.cpp's order).
    special: Vec<u32>,
    /// For each first byte, the positions in `special` of tokens starting with it.
    special_by_first_byte: Vec<Vec<u32>>,
    eog: HashSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("pre", &self.pre)
            .field("vocab_size", &self.texts.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadModel(msg.into())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::F32(_) => "f32",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F64(_) => "f64",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Array(a) => match a.first() {
            Some(first) => format!("an array of {}", type_name(first)),
            None => "an empty array".to_string(),
        },
        other => format!("a {}", type_name(other)),
    }
}

/// An array of strings, or `None` if the key is absent.
fn get_str_array<'a>(f: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>> {
    let Some(v) = f.get(key) else {
        return Ok(None);
    };
    let wrong = || {
        bad(format!(
            "metadata {key:?} should be an array of strings, is {}",
            describe(v)
        ))
    };
    let items = v.as_array().ok_or_else(wrong)?;
    items
        .iter()
        .map(|it| it.as_str().ok_or_else(wrong))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn get_bool(f: &GgufFile, key: &str) -> Result<Option<bool>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| {
            bad(format!(
                "metadata {key:?} should be a bool, is {}",
                describe(v)
            ))
        }),
    }
}

/// A token id from metadata. Negative values mean "none" (some converters write -1).
fn get_id(f: &GgufFile, key: &str) -> Result<Option<u64>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(i)) if i < 0 => Ok(None),
            _ => Err(bad(format!(
                "metadata {key:?} should be an integer token id, is {}",
                describe(v)
            ))),
        },
    }
}

/// Parse a SentencePiece byte token `<0xNN>`.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn hf_err(what: &str) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> Error + '_ {
    move |e| Error::Tokenizer(format!("{what}: {e}"))
}

/// Texts llama.cpp recognises as end-of-turn when `tokenizer.ggml.eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
/// Texts llama.cpp treats as end of generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// FIM tokens llama.cpp also treats as end of generation (pad, repo, file separator).
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

impl Tokenizer {
    /// Build the tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let model = f.get("tokenizer.ggml.model").ok_or_else(|| {
            bad("metadata \"tokenizer.ggml.model\" is missing: the file has no tokenizer")
        })?;
        let model = model.as_str().ok_or_else(|| {
            bad(format!(
                "metadata \"tokenizer.ggml.model\" should be a string, is {}",
                describe(model)
            ))
        })?;
        let kind = match model {
            "gpt2" => VocabKind::ByteLevelBpe,
            "llama" => VocabKind::SentencePiece,
            other => {
                return Err(Error::Tokenizer(format!(
                    "vocab type {other:?} is not supported (supported: \"gpt2\" byte-level BPE, \"llama\" SentencePiece)"
                )))
            }
        };

        // The pre-tokenizer (BPE only).
        let pre_name = match f.get("tokenizer.ggml.pre") {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| {
                bad(format!(
                    "metadata \"tokenizer.ggml.pre\" should be a string, is {}",
                    describe(v)
                ))
            })?),
        };
        let (pre, spec) = match kind {
            VocabKind::SentencePiece => ("default".to_string(), None),
            VocabKind::ByteLevelBpe => {
                // Like llama.cpp: a missing `pre` means the "default" regexes.
                let name = pre_name.unwrap_or("default");
                let spec = pre_spec(name).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "pre-tokenizer {name:?} (tokenizer.ggml.pre) is not supported; supported: {}",
                        supported_pre_tokenizers().join(", ")
                    ))
                })?;
                (name.to_string(), Some(spec))
            }
        };

        // Tokens.
        let raw_tokens = get_str_array(f, "tokenizer.ggml.tokens")?
            .ok_or_else(|| bad("metadata \"tokenizer.ggml.tokens\" is missing"))?;
        if raw_tokens.is_empty() {
            return Err(bad("metadata \"tokenizer.ggml.tokens\" is empty"));
        }
        if raw_tokens.len() > u32::MAX as usize / 2 {
            return Err(bad(format!("{} tokens is absurd", raw_tokens.len())));
        }
        let n = raw_tokens.len();
        let texts: Vec<String> = raw_tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]") // what llama.cpp does
                } else {
                    t.to_string()
                }
            })
            .collect();
        let mut token_to_id: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (i, t) in texts.iter().enumerate() {
            if let Some(prev) = token_to_id.insert(t.as_str(), i as u32) {
                return Err(bad(format!(
                    "duplicate token {t:?} in tokenizer.ggml.tokens (ids {prev} and {i})"
                )));
            }
        }

        // Scores (SentencePiece merge priority).
        let scores: Option<Vec<f32>> = match f.get("tokenizer.ggml.scores") {
            None => None,
            Some(v) => {
                let wrong = || {
                    bad(format!(
                        "metadata \"tokenizer.ggml.scores\" should be an array of f32, is {}",
                        describe(v)
                    ))
                };
                let a = v.as_array().ok_or_else(wrong)?;
                if a.len() < n {
                    return Err(bad(format!(
                        "tokenizer.ggml.scores has {} entries for {n} tokens",
                        a.len()
                    )));
                }
                Some(
                    a[..n]
                        .iter()
                        .map(|s| match s {
                            Value::F32(x) => Ok(*x),
                            Value::F64(x) => Ok(*x as f32),
                            Value::I32(x) => Ok(*x as f32),
                            _ => Err(wrong()),
                        })
                        .collect::<Result<_>>()?,
                )
            }
        };

        // Token types → attributes.
        let mut attrs = vec![attr::NORMAL; n];
        if let Some(v) = f.get("tokenizer.ggml.token_type") {
            let wrong = || {
                bad(format!(
                    "metadata \"tokenizer.ggml.token_type\" should be an array of i32, is {}",
                    describe(v)
                ))
            };
            let a = v.as_array().ok_or_else(wrong)?;
            if a.len() < n {
                return Err(bad(format!(
                    "tokenizer.ggml.token_type has {} entries for {n} tokens",
                    a.len()
                )));
            }
            for (i, t) in a[..n].iter().enumerate() {
                let t = t.as_i64().ok_or_else(wrong)?;
                attrs[i] = match t {
                    1 => attr::NORMAL,
                    2 => attr::UNKNOWN,
                    3 => attr::CONTROL,
                    4 => attr::USER_DEFINED,
                    5 => attr::UNUSED,
                    6 => attr::BYTE,
                    _ => 0, // undefined
                };
            }
        }

        // Special ids: llama.cpp's per-type defaults, then metadata.
        let default_id = |id: u32| (id < n as u32).then_some(id);
        let (mut bos, mut eos, mut unk) = match kind {
            VocabKind::SentencePiece => (default_id(1), default_id(2), default_id(0)),
            VocabKind::ByteLevelBpe => (default_id(11), default_id(11), None),
        };
        if spec.is_some_and(|s| s.no_default_bos) {
            bos = None;
        }
        let strict_id = |key: &str, id: Option<u64>| -> Result<Option<u32>> {
            match id {
                Some(id) if id >= n as u64 => Err(bad(format!(
                    "metadata {key:?} = {id} is out of range for a vocabulary of {n} tokens"
                ))),
                other => Ok(other.map(|i| i as u32)),
            }
        };
        // Optional ids: out of range ⇒ ignored, as llama.cpp does (e.g. a pad id == n_vocab).
        let lenient_id = |key: &str| -> Result<Option<u32>> {
            Ok(get_id(f, key)?.filter(|&i| i < n as u64).map(|i| i as u32))
        };
        if let Some(id) = strict_id(
            "tokenizer.ggml.bos_token_id",
            get_id(f, "tokenizer.ggml.bos_token_id")?,
        )? {
            bos = Some(id);
        }
        if let Some(id) = strict_id(
            "tokenizer.ggml.eos_token_id",
            get_id(f, "tokenizer.ggml.eos_token_id")?,
        )? {
            eos = Some(id);
        }
        if let Some(id) = lenient_id("tokenizer.ggml.unknown_token_id")? {
            unk = Some(id);
        }
        let mut eot = lenient_id("tokenizer.ggml.eot_token_id")?;
        let mut eom = lenient_id("tokenizer.ggml.eom_token_id")?;
        let pad = lenient_id("tokenizer.ggml.padding_token_id")?;
        let mut fim_pad = lenient_id("tokenizer.ggml.fim_pad_token_id")?;
        let mut fim_rep = lenient_id("tokenizer.ggml.fim_rep_token_id")?;
        let mut fim_sep = lenient_id("tokenizer.ggml.fim_sep_token_id")?;

        let (default_add_bos, default_add_eos, default_space_prefix) = match kind {
            VocabKind::SentencePiece => (true, false, true),
            VocabKind::ByteLevelBpe => (spec.is_some_and(|s| s.add_bos), false, false),
        };
        let add_bos = get_bool(f, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let add_eos = get_bool(f, "tokenizer.ggml.add_eos_token")?.unwrap_or(default_add_eos);
        let add_space_prefix =
            get_bool(f, "tokenizer.ggml.add_space_prefix")?.unwrap_or(default_space_prefix);
        if add_bos && bos.is_none() {
            return Err(bad(
                "tokenizer.ggml.add_bos_token is true, but there is no bos token id",
            ));
        }
        if add_eos && eos.is_none() {
            return Err(bad(
                "tokenizer.ggml.add_eos_token is true, but there is no eos token id",
            ));
        }

        // llama.cpp's text-based detection of eot/eom/FIM and end-of-generation tokens.
        // It walks an unordered map; we walk ids in order (first match wins).
        let make_control = |id: u32, attrs: &mut Vec<u16>| {
            attrs[id as usize] |= attr::CONTROL;
        };
        let find_first = |set: &[&str]| {
            texts
                .iter()
                .position(|t| set.contains(&t.as_str()))
                .map(|i| i as u32)
        };
        if eot.is_none() {
            eot = find_first(EOT_TEXTS);
            if let Some(id) = eot {
                make_control(id, &mut attrs);
            }
        }
        if eom.is_none() {
            eom = find_first(&["<|eom_id|>"]);
            if let Some(id) = eom {
                make_control(id, &mut attrs);
            }
        }
        for (slot, set) in [
            (&mut fim_pad, FIM_PAD_TEXTS),
            (&mut fim_rep, FIM_REP_TEXTS),
            (&mut fim_sep, FIM_SEP_TEXTS),
        ] {
            if slot.is_none() {
                *slot = find_first(set);
                if let Some(id) = *slot {
                    make_control(id, &mut attrs);
                }
            }
        }
        // Control tokens whose text says "unused" are unused.
        for (i, t) in texts.iter().enumerate() {
            if attrs[i] & attr::CONTROL != 0 && t.contains("unused") {
                attrs[i] |= attr::UNUSED;
            }
        }
        let mut eog: HashSet<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for (i, t) in texts.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                eog.insert(i as u32);
                attrs[i] |= attr::CONTROL;
            }
        }
        // gpt-oss: these are always rendered.
        for (i, t) in texts.iter().enumerate() {
            if matches!(
                t.as_str(),
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                attrs[i] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        // o200k_harmony / solar-open: "<|end|>" is not end of generation when these exist.
        let eog_with =
            |eog: &HashSet<u32>, s: &str| eog.iter().copied().find(|&id| texts[id as usize] == s);
        if let Some(end) = eog_with(&eog, "<|end|>") {
            let has = |s: &str| eog_with(&eog, s).is_some();
            if has("<|return|>") && has("<|call|>") || has("<|calls|>") && has("<|flush|>") {
                eog.remove(&end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        // gemma4 / paddleocr: "</s>" is not end of generation next to "<|tool_response>".
        if let Some(s) = eog_with(&eog, "</s>") {
            if eog_with(&eog, "<|tool_response>").is_some() {
                eog.remove(&s);
                attrs[s as usize] = attr::NORMAL;
            }
        }

        // Special tokens matched in raw text, longest first (stable for equal lengths).
        let mut special: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special.sort_by_key(|&i| std::cmp::Reverse(texts[i as usize].len()));

        // Per-model strip attributes llama.cpp sets by name.
        let name = f.get_str("general.name").unwrap_or_default().to_lowercase();
        if name.contains("phi-3") || name.contains("phi3") {
            for &id in &special {
                attrs[id as usize] |= attr::RSTRIP;
            }
            for (t, on) in [
                ("</s>", true),
                ("<unk>", false),
                ("<s>", false),
                ("<|endoftext|>", false),
            ] {
                if let Some(&id) = token_to_id.get(t) {
                    if on {
                        attrs[id as usize] |= attr::RSTRIP;
                    } else {
                        attrs[id as usize] &= !attr::RSTRIP;
                    }
                }
            }
        }
        if matches!(pre.as_str(), "jina-v2-de" | "jina-v2-es" | "jina-v2-code") {
            if let Some(&id) = token_to_id.get("<mask>") {
                attrs[id as usize] |= attr::LSTRIP;
            }
        }
        let mut special_by_first_byte = vec![Vec::new(); 256];
        for (pos, &id) in special.iter().enumerate() {
            let first = texts[id as usize].as_bytes()[0];
            special_by_first_byte[first as usize].push(pos as u32);
        }

        // The BPE model.
        let mut vocab = Vocab::default();
        vocab.reserve(n);
        for (i, t) in texts.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let hf = match kind {
            VocabKind::ByteLevelBpe => {
                let spec =
                    spec.ok_or_else(|| Error::Internal("BPE without pre-tokenizer".into()))?;
                let merges = Self::gguf_merges(f, &token_to_id)?;
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .ignore_merges(spec.ignore_merges)
                    .build()
                    .map_err(|e| bad(format!("building the BPE model: {e}")))?;
                let mut pretoks: Vec<PreTokenizerWrapper> =
                    Vec::with_capacity(spec.regexes.len() + 1);
                for re in spec.regexes {
                    let split = Split::new(
                        SplitPattern::Regex((*re).to_string()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(hf_err("compiling a pre-tokenizer regex"))?;
                    pretoks.push(split.into());
                }
                pretoks.push(ByteLevel::new(false, false, false).into());
                let mut tok = tokenizers::Tokenizer::new(bpe);
                tok.with_pre_tokenizer(Some(Sequence::new(pretoks)));
                tok
            }
            VocabKind::SentencePiece => {
                let scores = scores.unwrap_or_else(|| vec![0.0; n]);
                let merges = Self::spm_merges(&texts, &scores, &token_to_id);
                let mut builder = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .byte_fallback(true);
                if let Some(u) = unk {
                    builder = builder.unk_token(texts[u as usize].clone());
                }
                let bpe = builder
                    .build()
                    .map_err(|e| bad(format!("building the SentencePiece BPE model: {e}")))?;
                tokenizers::Tokenizer::new(bpe)
            }
        };

        // Piece bytes for token_bytes / decode (llama_token_to_piece with special=false).
        let inv = char_to_byte_table();
        let mut pieces = Vec::with_capacity(n * 6);
        let mut piece_offsets = Vec::with_capacity(n + 1);
        piece_offsets.push(0u32);
        for (i, t) in texts.iter().enumerate() {
            let a = attrs[i];
            if a & (attr::UNKNOWN | attr::CONTROL) != 0 {
                // renders as nothing
            } else if a & attr::USER_DEFINED != 0 {
                pieces.extend_from_slice(t.as_bytes());
            } else if a & attr::NORMAL != 0
                || (a & attr::BYTE != 0 && parse_byte_token(t).is_none())
            {
                match kind {
                    VocabKind::SentencePiece => {
                        pieces.extend_from_slice(t.replace('\u{2581}', " ").as_bytes())
                    }
                    VocabKind::ByteLevelBpe => {
                        let bytes: Option<Vec<u8>> = t
                            .chars()
                            .map(|c| inv.get(c as usize).copied().flatten())
                            .collect();
                        match bytes {
                            Some(b) => pieces.extend_from_slice(&b),
                            // Not byte-level text (HF's decoder keeps such tokens verbatim).
                            None => pieces.extend_from_slice(t.as_bytes()),
                        }
                    }
                }
            } else if a & attr::BYTE != 0 {
                if let Some(b) = parse_byte_token(t) {
                    pieces.push(b);
                }
            }
            // unused / undefined: nothing
            if pieces.len() > u32::MAX as usize {
                return Err(bad("token texts exceed 4 GiB"));
            }
            piece_offsets.push(pieces.len() as u32);
        }
        pieces.shrink_to_fit();

        Ok(Tokenizer {
            hf,
            kind,
            pre,
            texts,
            attrs,
            pieces,
            piece_offsets,
            special,
            special_by_first_byte,
            eog,
            bos,
            eos,
            eot,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    /// `tokenizer.ggml.merges`, validated; duplicates keep their first (best) rank.
    fn gguf_merges(
        f: &GgufFile,
        token_to_id: &HashMap<&str, u32>,
    ) -> Result<Vec<(String, String)>> {
        let raw = get_str_array(f, "tokenizer.ggml.merges")?.ok_or_else(|| {
            bad("metadata \"tokenizer.ggml.merges\" is missing (needed by a gpt2 vocab)")
        })?;
        let mut seen = HashSet::with_capacity(raw.len());
        let mut merges = Vec::with_capacity(raw.len());
        for (i, m) in raw.iter().enumerate() {
            // Split at the first space after the first byte, as llama.cpp does.
            let pos = m
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| {
                    bad(format!(
                        "tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space"
                    ))
                })?;
            let (a, b) = (&m[..pos], &m[pos + 1..]);
            for part in [a, b] {
                if !token_to_id.contains_key(part) {
                    return Err(bad(format!(
                        "tokenizer.ggml.merges[{i}] = {m:?} references {part:?}, which is not in the vocabulary"
                    )));
                }
            }
            let joined = format!("{a}{b}");
            if !token_to_id.contains_key(joined.as_str()) {
                return Err(bad(format!(
                    "tokenizer.ggml.merges[{i}] = {m:?} produces {joined:?}, which is not in the vocabulary"
                )));
            }
            if seen.insert((a, b)) {
                merges.push((a.to_string(), b.to_string()));
            }
        }
        Ok(merges)
    }

    /// Merges equivalent to llama.cpp's SentencePiece loop: every split of a token into two
    /// tokens, ranked by the score of the token they form (higher first).
    fn spm_merges(
        texts: &[String],
        scores: &[f32],
        token_to_id: &HashMap<&str, u32>,
    ) -> Vec<(String, String)> {
        let mut cands: Vec<(f32, u32, usize)> = Vec::new();
        for (id, t) in texts.iter().enumerate() {
            for (k, _) in t.char_indices().skip(1) {
                if token_to_id.contains_key(&t[..k]) && token_to_id.contains_key(&t[k..]) {
                    cands.push((scores[id], id as u32, k));
                }
            }
        }
        cands.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
        cands
            .into_iter()
            .map(|(_, id, k)| {
                let t = &texts[id as usize];
                (t[..k].to_string(), t[k..].to_string())
            })
            .collect()
    }

    /// Split `text` around special tokens like llama.cpp's `tokenizer_st_partition`.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(text));
        // Which special tokens occur at all (cheap pre-scan keyed by first byte).
        let bytes = text.as_bytes();
        let mut present = vec![false; self.special.len()];
        let mut any = false;
        for i in 0..bytes.len() {
            for &pos in &self.special_by_first_byte[bytes[i] as usize] {
                let id = self.special[pos as usize];
                if !parse_special && self.attrs[id as usize] & (attr::CONTROL | attr::UNKNOWN) != 0
                {
                    continue;
                }
                if !present[pos as usize]
                    && bytes[i..].starts_with(self.texts[id as usize].as_bytes())
                {
                    present[pos as usize] = true;
                    any = true;
                }
            }
        }
        if !any {
            return frags;
        }
        let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
        for (pos, &id) in self.special.iter().enumerate() {
            if !present[pos] {
                continue;
            }
            let tok = self.texts[id as usize].as_str();
            let a = self.attrs[id as usize];
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                let Fragment::Text(s) = frag else {
                    next.push(frag);
                    continue;
                };
                let mut rest = s;
                while let Some(at) = rest.find(tok) {
                    let mut left = &rest[..at];
                    if a & attr::LSTRIP != 0 {
                        left = left.trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
                    }
                    if !left.is_empty() {
                        next.push(Fragment::Text(left));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + tok.len()..];
                    if a & attr::RSTRIP != 0 {
                        rest = rest.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
                    }
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    fn bpe_ids(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let enc = self
            .hf
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(format!("encoding failed: {e}")))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    /// Text → token ids, like `llama_tokenize(text, add_special, parse_special)`.
    ///
    /// `add_special` prepends bos / appends eos when the metadata asks for it
    /// ([`Tokenizer::add_bos`]); `parse_special` lets control-token text such as
    /// `"<|im_start|>"` become its special id (user-defined tokens always do).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let frags = self.partition(text, parse_special);
        match self.kind {
            VocabKind::ByteLevelBpe => {
                for frag in frags {
                    match frag {
                        Fragment::Text(s) => self.bpe_ids(s, &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            VocabKind::SentencePiece => {
                let mut prev_special = true; // a space prefix goes on the first text too
                for frag in frags {
                    match frag {
                        Fragment::Text(s) => {
                            let mut t = String::with_capacity(s.len() + 8);
                            if self.add_space_prefix && prev_special {
                                t.push(' ');
                            }
                            t.push_str(s);
                            let escaped = t.replace(' ', "\u{2581}");
                            self.bpe_ids(&escaped, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// Most bytes of text one token stands for (at least 4: an unknown character).
    pub fn max_token_bytes(&self) -> usize {
        let longest = self
            .piece_offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize);
        longest.max().unwrap_or(0).max(4)
    }

    /// [`Tokenizer::encode`] for at most `max_tokens` tokens: text that cannot fit is an
    /// [`Error::ContextFull`] before anything is allocated for it (no token stands for more
    /// than [`Tokenizer::max_token_bytes`] bytes, so longer text needs more tokens), and
    /// text that encodes to more tokens than that is one after encoding.
    pub fn encode_bounded(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        max_tokens: usize,
    ) -> Result<Vec<u32>> {
        let per = self.max_token_bytes();
        if text.len() / per > max_tokens {
            return Err(Error::ContextFull(format!(
                "a text of {} bytes needs more than the {max_tokens} tokens of room left \
                 (no token covers more than {per} bytes)",
                text.len()
            )));
        }
        let ids = self.encode(text, add_special, parse_special)?;
        if ids.len() > max_tokens {
            return Err(Error::ContextFull(format!(
                "the text is {} tokens, the room left is {max_tokens}",
                ids.len()
            )));
        }
        Ok(ids)
    }

    fn check_id(&self, id: u32) -> Result<()> {
        if (id as usize) < self.texts.len() {
            Ok(())
        } else {
            Err(Error::Tokenizer(format!(
                "token id {id} is out of range (vocabulary has {} tokens)",
                self.texts.len()
            )))
        }
    }

    /// Token ids → text, as llama.cpp's `llama_detokenize(remove_special=false,
    /// unparse_special=false)` minus its `clean_spaces` heuristics: control tokens render
    /// as nothing, a leading space on the first piece is removed when `add_space_prefix` is
    /// set (SentencePiece), invalid UTF-8 becomes U+FFFD. Out-of-range ids are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_opts(ids, false)
    }

    /// Like [`Tokenizer::decode`]; with `render_special` control tokens appear as their text.
    pub fn decode_opts(&self, ids: &[u32], render_special: bool) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            self.check_id(id)?;
            let piece: &[u8] = if render_special
                && self.attrs[id as usize] & (attr::CONTROL | attr::UNKNOWN) != 0
            {
                self.texts[id as usize].as_bytes()
            } else {
                self.token_bytes(id)
            };
            let piece = if i == 0 && self.add_space_prefix {
                piece.strip_prefix(b" ").unwrap_or(piece)
            } else {
                piece
            };
            bytes.extend_from_slice(piece);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The raw bytes a token stands for (`llama_token_to_piece(special=false)`): byte-level
    /// text mapped back to bytes, `▁` → space, `<0xNN>` → that byte; control and unknown
    /// tokens are empty, user-defined tokens are their text. Out-of-range ids are empty.
    /// A piece may be a fragment of a UTF-8 sequence: use [`StreamDecoder`] to print.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i >= self.texts.len() {
            return &[];
        }
        let (a, b) = (
            self.piece_offsets[i] as usize,
            self.piece_offsets[i + 1] as usize,
        );
        &self.pieces[a..b]
    }

    /// The token's text as stored in the vocabulary (`""` for an out-of-range id).
    pub fn token_text(&self, id: u32) -> &str {
        self.texts
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The id of a token text, if it is in the vocabulary.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.hf.token_to_id(text)
    }

    /// The token's type (after llama.cpp's adjustments, e.g. `<|im_end|>` becomes control).
    pub fn token_type(&self, id: u32) -> TokenType {
        let Some(&a) = self.attrs.get(id as usize) else {
            return TokenType::Undefined;
        };
        if a & attr::UNUSED != 0 {
            TokenType::Unused
        } else if a & attr::CONTROL != 0 {
            TokenType::Control
        } else if a & attr::UNKNOWN != 0 {
            TokenType::Unknown
        } else if a & attr::USER_DEFINED != 0 {
            TokenType::UserDefined
        } else if a & attr::BYTE != 0 {
            TokenType::Byte
        } else if a & attr::NORMAL != 0 {
            TokenType::Normal
        } else {
            TokenType::Undefined
        }
    }

    /// Whether the token is a control token (renders as nothing).
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & attr::CONTROL != 0)
    }

    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }
    pub fn kind(&self) -> VocabKind {
        self.kind
    }
    /// The `tokenizer.ggml.pre` in effect (`"default"` for SentencePiece or when absent).
    pub fn pre(&self) -> &str {
        &self.pre
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Whether `encode(.., add_special = true, ..)` prepends bos.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_special = true, ..)` appends eos.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Whether SentencePiece text gets a leading space (`tokenizer.ggml.add_space_prefix`).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// End of generation: eos, eot, eom and the tokens llama.cpp marks by their text.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.eog.iter().copied().collect();
        v.sort_unstable();
        v
    }
}

/// Turns a stream of token bytes into strings that only ever contain whole UTF-8 code
/// points: an incomplete sequence at the end is held back until the next `push`.
/// Invalid bytes become U+FFFD exactly as `String::from_utf8_lossy` would replace them, so
/// the concatenation of all outputs equals `from_utf8_lossy` of all input bytes.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    /// The text handed out by the last `push`, reused so streaming allocates nothing.
    out: String,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes; returns the text that is now complete (possibly empty). The returned
    /// slice lives until the next call (its buffer is reused: no allocation per token).
    pub fn push(&mut self, bytes: &[u8]) -> &str {
        self.pending.extend_from_slice(bytes);
        let out = &mut self.out;
        out.clear();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(
                        &self.pending[start..start + valid],
                    ));
                    match e.error_len() {
                        Some(bad_len) => {
                            out.push('\u{FFFD}');
                            start += valid + bad_len;
                        }
                        None => {
                            // An incomplete sequence at the end: wait for more bytes.
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        &self.out
    }

    /// Flush what is left; an incomplete sequence becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Bytes held back, waiting for the rest of a code point.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let t = byte_to_char_table();
        let inv = char_to_byte_table();
        let distinct: HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        for (b, c) in t.iter().enumerate() {
            assert_eq!(inv[*c as usize], Some(b as u8));
        }
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn all_pre_tokenizer_regexes_compile() {
        for (names, spec) in SUPPORTED_PRE {
            for re in spec.regexes {
                assert!(
                    Split::new(
                        SplitPattern::Regex(re.to_string()),
                        SplitDelimiterBehavior::Isolated,
                        false
                    )
                    .is_ok(),
                    "{names:?}: {re}"
                );
            }
        }
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xFF>"), Some(255));
        assert_eq!(parse_byte_token("<0xF>"), None);
        assert_eq!(parse_byte_token("0x0A"), None);
    }
}
