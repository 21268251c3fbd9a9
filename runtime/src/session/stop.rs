//! Stop strings over a stream of text pieces.
//!
//! Generated text arrives in pieces (whole code points, any length). A stop string may
//! span several pieces, so text that could be the beginning of a stop string is held back
//! until the next piece shows whether it is. The matcher hands out text that is certainly
//! not part of a stop string, and reports a hit with the text before the stop string.

/// Finds the first occurrence of any stop string in a stream of pieces.
///
/// ```
/// use suanpan::session::stop::StopMatcher;
/// let stops = vec!["\nUser:".to_string()];
/// let mut m = StopMatcher::new(&stops);
/// assert_eq!(m.push("Hello\nUs"), ("Hello", false)); // "\nUs" held back
/// assert_eq!(m.push("er: hi"), ("", true)); // stop string completed: nothing more
/// ```
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not handed out yet.
    held: String,
    /// What the last `push` hands out.
    out: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings must be rejected by the caller; none means
    /// every piece passes straight through).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            out: String::new(),
        }
    }

    /// Add a piece. Returns the text that can be handed out now and whether a stop string
    /// was found (the text then ends right before it; nothing after it is ever returned).
    pub fn push(&mut self, piece: &str) -> (&str, bool) {
        self.out.clear();
        if self.stops.is_empty() {
            self.out.push_str(piece);
            return (&self.out, false);
        }
        self.held.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.out.push_str(&self.held[..at]);
            self.held.clear();
            return (&self.out, true);
        }
        // Hold back the longest tail of `held` that begins some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        self.out.push_str(&self.held[..keep]);
        self.held.drain(..keep);
        (&self.out, false)
    }

    /// The end of the stream: the held-back text was not a stop string after all.
    pub fn finish(&mut self) -> &str {
        self.out.clear();
        std::mem::swap(&mut self.out, &mut self.held);
        &self.out
    }

    /// Text held back, waiting to see whether it starts a stop string.
    pub fn held(&self) -> &str {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = m.push(p);
            out.push_str(t);
            if hit {
                return (out, true);
            }
        }
        out.push_str(m.finish());
        (out, false)
    }

    #[test]
    fn no_stop_strings_pass_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn stop_inside_one_piece() {
        assert_eq!(run(&["END"], &["abcENDdef"]), ("abc".into(), true));
    }

    #[test]
    fn stop_split_across_pieces() {
        assert_eq!(run(&["END"], &["abE", "N", "Dxyz"]), ("ab".into(), true));
        assert_eq!(
            run(&["<|end|>"], &["x<", "|e", "nd|", ">"]),
            ("x".into(), true)
        );
    }

    #[test]
    fn false_start_is_released() {
        // "EN" looked like the start of "END" but was not.
        assert_eq!(run(&["END"], &["abEN", "X"]), ("abENX".into(), false));
        // Held text at the end of the stream is handed out by finish().
        assert_eq!(run(&["END"], &["abEN"]), ("abEN".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
        assert_eq!(run(&["bc", "abcd"], &["xab", "cd"]), ("x".into(), true));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        assert_eq!(
            run(&["。\n"], &["寿司", "が好き", "。", "\n次"]),
            ("寿司が好き".into(), true)
        );
        assert_eq!(run(&["🍣!"], &["я🍣", "?"]), ("я🍣?".into(), false));
    }

    #[test]
    fn held_text_is_only_a_possible_start() {
        let stops = vec!["STOP".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("xxST"), ("xx", false));
        assert_eq!(m.held(), "ST");
        assert_eq!(m.push("a"), ("STa", false));
        assert_eq!(m.held(), "");
    }
}
