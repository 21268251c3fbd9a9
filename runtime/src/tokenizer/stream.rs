//! Streaming detokenization that only ever hands out whole UTF-8 code points.

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
