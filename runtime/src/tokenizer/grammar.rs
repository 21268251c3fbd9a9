//! A vocabulary as llguidance sees it (the token trie of constrained decoding; see
//! `session::constrain`): the byte string of every token id, control tokens marked special
//! so no grammar matches them as text.

use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::ParserFactory;

use super::Tokenizer;
use crate::error::{Error, Result};

/// The model's vocabulary as llguidance sees it.
struct VocabEnv {
    trie: TokTrie,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }
    /// Greedy longest-match over the trie (used by llguidance only for forced text, which
    /// the generation loop does not ask for).
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
}

/// Compiles constraints for one vocabulary: the token trie and llguidance's per-vocabulary
/// tables (a model builds them on first use and keeps them).
pub(crate) struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// Build from a model's tokenizer and its `n_vocab` logits. Vocabulary rows past the
    /// tokenizer (padded embeddings) become special tokens no grammar can produce.
    pub(crate) fn new(tok: &Tokenizer, n_vocab: usize) -> Result<Grammars> {
        let n = n_vocab.max(tok.vocab_size());
        let special = |text: &str| {
            let mut b = Vec::with_capacity(text.len() + 1);
            b.push(TokTrie::SPECIAL_TOKEN_MARKER);
            b.extend_from_slice(text.as_bytes());
            b
        };
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let bytes = tok.token_bytes(id);
                if (id as usize) >= tok.vocab_size() {
                    special(&format!("<[{id}]>"))
                } else if tok.is_control(id) || tok.is_eog(id) || bytes.is_empty() {
                    special(tok.token_text(id))
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let eog = tok.eog_ids();
        let eos = tok.eos().or(eog.first().copied()).unwrap_or(u32::MAX);
        let mut trie = TokTrie::from(&TokRxInfo::new(n as u32, eos), &words);
        if eog.len() > 1 {
            trie = trie.with_eos_tokens(&eog);
        }
        let env: TokEnv = Arc::new(VocabEnv { trie });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Internal(format!("constrained decoding setup: {e}")))?;
        factory.quiet();
        Ok(Grammars { factory })
    }

    /// llguidance's parser factory for this vocabulary.
    pub(crate) fn factory(&self) -> &ParserFactory {
        &self.factory
    }
}
