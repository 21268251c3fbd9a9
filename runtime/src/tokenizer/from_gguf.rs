//! Building a [`Tokenizer`] from a GGUF file's vocabulary metadata (strictly validated).

use std::collections::{HashMap, HashSet};

use tokenizers::models::bpe::{Vocab, BPE};

use super::pre::*;
use super::*;
use crate::format::gguf::{GgufFile, Value};

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
pub(super) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
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
                let mut tok = tokenizers::Tokenizer::new(bpe);
                tok.with_pre_tokenizer(Some(spec.pre_tokenizer()?));
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
}
