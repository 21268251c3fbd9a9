//! Pre-tokenizer regexes by `tokenizer.ggml.pre`, and GPT-2's byte-to-unicode mapping.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

// ---------------------------------------------------------------------------------------
// Pre-tokenizer regexes, transcribed from llama.cpp's `llm_tokenizer_bpe` constructor.
// Each list is applied in order; every regex splits the pieces left by the previous one
// into matches and the text between matches (HF `Split` with `Isolated`).
// ---------------------------------------------------------------------------------------

/// GPT-2's regex. llama.cpp runs its hand-written splitter for this exact pattern, whose
/// behaviour includes the trailing `\s+` alternative of the original GPT-2 regex.
pub(super) const RE_GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
pub(super) const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const RE_QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const RE_DEFAULT: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    RE_GPT2,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];
pub(super) const RE_FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", RE_GPT2, r"[0-9][0-9][0-9]"];
pub(super) const RE_STARCODER: &[&str] = &[r"\p{N}", RE_GPT2];
/// DeepSeek LLM. The letter class is written with code point escapes: several of its
/// characters (U+2126 OHM SIGN, U+212A KELVIN SIGN, Greek extended) are changed by
/// Unicode normalization, which would silently corrupt a literal copy.
pub(super) const RE_DEEPSEEK_LLM: &[&str] = &[
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
pub(super) const RE_DEEPSEEK_CODER: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}",
];
pub(super) const RE_DEEPSEEK3: &[&str] = &[
    r"\p{N}{1,3}",
    r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];
pub(super) const RE_PORO: &str =
    r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+";
pub(super) const RE_TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const RE_GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const RE_SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a `tokenizer.ggml.pre` value selects.
pub(super) struct PreSpec {
    pub(super) regexes: &'static [&'static str],
    /// Whole pre-tokens that are in the vocabulary skip the merges (llama3 style).
    pub(super) ignore_merges: bool,
    /// Default of `add_bos` before `tokenizer.ggml.add_bos_token` overrides it.
    pub(super) add_bos: bool,
    /// llama.cpp clears the default bos id for this pre-tokenizer (chatglm).
    pub(super) no_default_bos: bool,
}

impl PreSpec {
    /// The pre-tokenizer: the regex splits in order (isolated matches), then GPT-2's
    /// byte-to-unicode mapping.
    pub(super) fn pre_tokenizer(&self) -> crate::error::Result<Sequence> {
        let mut pretoks: Vec<PreTokenizerWrapper> = Vec::with_capacity(self.regexes.len() + 1);
        for re in self.regexes {
            let split = Split::new(
                SplitPattern::Regex((*re).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| {
                crate::error::Error::Tokenizer(format!("compiling a pre-tokenizer regex: {e}"))
            })?;
            pretoks.push(split.into());
        }
        pretoks.push(ByteLevel::new(false, false, false).into());
        Ok(Sequence::new(pretoks))
    }
}

pub(super) const fn pre(regexes: &'static [&'static str]) -> PreSpec {
    PreSpec {
        regexes,
        ignore_merges: false,
        add_bos: false,
        no_default_bos: false,
    }
}

/// The `tokenizer.ggml.pre` values we support, grouped as in llama.cpp.
pub(super) const SUPPORTED_PRE: &[(&[&str], PreSpec)] = &[
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

pub(super) fn pre_spec(name: &str) -> Option<&'static PreSpec> {
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
pub(super) fn byte_to_char_table() -> [char; 256] {
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
pub(super) fn char_to_byte_table() -> Vec<Option<u8>> {
    let mut inv = vec![None; 512];
    for (b, c) in byte_to_char_table().iter().enumerate() {
        inv[*c as usize] = Some(b as u8);
    }
    inv
}
