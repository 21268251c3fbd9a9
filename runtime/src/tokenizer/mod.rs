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

use std::collections::HashSet;
use std::fmt;

mod from_gguf;
pub(crate) mod grammar;
mod pre;
mod stream;

pub use pre::supported_pre_tokenizers;
pub use stream::StreamDecoder;

use crate::error::{Error, Result};

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

impl Tokenizer {
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

#[cfg(test)]
mod tests {
    use super::from_gguf::parse_byte_token;
    use super::pre::{byte_to_char_table, char_to_byte_table, SUPPORTED_PRE};
    use super::*;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::SplitDelimiterBehavior;

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
