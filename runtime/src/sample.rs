//! Turning logits into the next token: greedy, or a chain of repetition penalty → top-k →
//! top-p → min-p → temperature → a seeded draw, in llama.cpp's default order.
//!
//! ```
//! use suanpan::sample::{Sampler, SamplingParams};
//! let mut s = Sampler::new(SamplingParams::greedy(), 4);
//! assert_eq!(s.sample(&[0.1, 2.0, -1.0, 0.5], &[]), 1);
//! ```

/// Knobs of the sampling chain. `temperature <= 0` means greedy (argmax).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1.0 = all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this (1.0 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0x5EED,
        }
    }
}

impl SamplingParams {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Check the values make sense.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::invalid(m.to_string()));
        if !self.temperature.is_finite() {
            return bad("temperature must be a finite number");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty must be positive");
        }
        Ok(())
    }
}

/// SplitMix64: small, fast, and the same sequence on every platform for a given seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples tokens; holds its RNG state and a candidate buffer (no allocation per token).
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    cand: Vec<(u32, f32)>,
    probs: Vec<f64>,
}

/// Index of the largest value; the first one on ties (as llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams, n_vocab: usize) -> Self {
        let rng = Rng::new(params.seed);
        Sampler {
            params,
            rng,
            cand: Vec::with_capacity(n_vocab),
            probs: Vec::with_capacity(n_vocab),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Pick the next token from `logits`, given the tokens generated or seen so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        // Without a mask every token is a candidate (an empty `logits` gives token 0).
        self.sample_masked(logits, history, None).unwrap_or(0)
    }

    /// [`Sampler::sample`] among the tokens a bitmask allows (bit `i % 32` of word `i / 32`
    /// is token `i`; constrained decoding). The mask applies after the repetition penalty
    /// and before the other steps, so top-k/top-p/min-p see only allowed tokens. `None`
    /// when the mask allows no token.
    pub fn sample_masked(
        &mut self,
        logits: &[f32],
        history: &[u32],
        mask: Option<&[u32]>,
    ) -> Option<u32> {
        let p = &self.params;
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let recent = &history[start..];
            // `cand` is still indexed by token id here. Walk the recent tokens (≤ n, not
            // the whole vocabulary), penalising each distinct one once, as llama.cpp does.
            for (i, &t) in recent.iter().enumerate() {
                if recent[..i].contains(&t) {
                    continue;
                }
                if let Some(c) = self.cand.get_mut(t as usize) {
                    c.1 = if c.1 > 0.0 {
                        c.1 / p.repeat_penalty
                    } else {
                        c.1 * p.repeat_penalty
                    };
                }
            }
        }
        if let Some(m) = mask {
            let allowed = |t: u32| {
                m.get(t as usize / 32)
                    .is_some_and(|w| w >> (t % 32) & 1 != 0)
            };
            self.cand.retain(|c| allowed(c.0));
        }
        if self.cand.is_empty() {
            return None;
        }
        if p.temperature <= 0.0 {
            let mut best = 0;
            for (i, c) in self.cand.iter().enumerate() {
                if c.1 > self.cand[best].1 {
                    best = i;
                }
            }
            return Some(self.cand[best].0);
        }
        // Sort descending by logit (stable: ties keep the lower id first).
        let k = if p.top_k == 0 {
            self.cand.len()
        } else {
            p.top_k.min(self.cand.len())
        };
        if k < self.cand.len() {
            self.cand
                .select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            self.cand.truncate(k);
        }
        self.cand
            .sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // Probabilities at temperature 1 for the top-p / min-p cuts (as llama.cpp).
        let max = self.cand[0].1;
        let probs = &mut self.probs;
        probs.clear();
        probs.extend(self.cand.iter().map(|c| ((c.1 - max) as f64).exp()));
        let z: f64 = probs.iter().sum();
        let mut keep = self.cand.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, pr) in probs.iter().enumerate() {
                cum += pr / z;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = p.min_p as f64 * probs[0];
            let m = probs
                .iter()
                .take(keep)
                .take_while(|&&pr| pr >= floor)
                .count();
            keep = m.max(1);
        }
        self.cand.truncate(keep);
        // Temperature, then draw.
        let t = p.temperature as f64;
        probs.clear();
        probs.extend(self.cand.iter().map(|c| ((c.1 - max) as f64 / t).exp()));
        let total: f64 = probs.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (c, wi) in self.cand.iter().zip(probs.iter()) {
            if r < *wi {
                return Some(c.0);
            }
            r -= wi;
        }
        Some(self.cand[self.cand.len() - 1].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect()
    }

    #[test]
    fn greedy_is_argmax_first_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy(), 4);
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 0.0], &[]), 1);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 0.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_differs() {
        let l = logits();
        let params = SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(
                SamplingParams {
                    seed,
                    ..params.clone()
                },
                100,
            );
            (0..50).map(|_| s.sample(&l, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let l = logits();
        let mut s = Sampler::new(
            SamplingParams {
                top_k: 1,
                temperature: 5.0,
                ..Default::default()
            },
            100,
        );
        let g = argmax(&l);
        for _ in 0..20 {
            assert_eq!(s.sample(&l, &[]), g);
        }
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Token 0 holds almost all probability mass.
        let mut l = vec![0f32; 50];
        l[0] = 20.0;
        for (params, name) in [
            (
                SamplingParams {
                    top_k: 0,
                    top_p: 0.5,
                    min_p: 0.0,
                    temperature: 1.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.01,
                    temperature: 1.0,
                    ..Default::default()
                },
                "min_p",
            ),
        ] {
            let mut s = Sampler::new(params, 50);
            for _ in 0..200 {
                assert_eq!(s.sample(&l, &[]), 0, "{name}");
            }
        }
    }

    #[test]
    fn repetition_penalty_demotes_recent_tokens() {
        let l = vec![2.0f32, 1.9, 0.0];
        let mut s = Sampler::new(
            SamplingParams {
                repeat_penalty: 1.5,
                temperature: 0.0,
                ..Default::default()
            },
            3,
        );
        assert_eq!(s.sample(&l, &[0]), 1);
        assert_eq!(s.sample(&l, &[]), 0);
        // A token repeated in the window is penalised once, not once per occurrence
        // (2.0 / 1.5 = 1.33 still beats 1.2; three times it would not).
        assert_eq!(s.sample(&[2.0, 1.2, 0.0], &[0, 0, 0]), 0);
        // Ids outside the vocabulary in the history are ignored, not a panic.
        assert_eq!(s.sample(&l, &[99, u32::MAX]), 0);
    }

    #[test]
    fn draws_follow_the_distribution() {
        // Two tokens with logits ln(3) and 0: probabilities 3/4 and 1/4 at temperature 1.
        let l = [3f32.ln(), 0.0];
        let mut s = Sampler::new(
            SamplingParams {
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                temperature: 1.0,
                seed: 1,
                ..Default::default()
            },
            2,
        );
        let n = 20000;
        let zeros = (0..n).filter(|_| s.sample(&l, &[]) == 0).count();
        let frac = zeros as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    #[test]
    fn masked_draws_stay_in_the_mask() {
        let l = logits();
        // Allow tokens 3, 40 and 77 only.
        let mut mask = vec![0u32; 4];
        for t in [3u32, 40, 77] {
            mask[t as usize / 32] |= 1 << (t % 32);
        }
        let allowed = [3u32, 40, 77];
        let best = *allowed
            .iter()
            .max_by(|&&a, &&b| l[a as usize].total_cmp(&l[b as usize]))
            .unwrap();
        let mut g = Sampler::new(SamplingParams::greedy(), 100);
        assert_eq!(g.sample_masked(&l, &[], Some(&mask)), Some(best));
        let mut s = Sampler::new(
            SamplingParams {
                temperature: 2.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed: 3,
                ..Default::default()
            },
            100,
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            let t = s.sample_masked(&l, &[], Some(&mask)).unwrap();
            assert!(allowed.contains(&t), "{t}");
            seen.insert(t);
        }
        assert_eq!(
            seen.len(),
            3,
            "every allowed token is drawn at temperature 2"
        );
        // An empty mask (or one shorter than the vocabulary) allows nothing beyond it.
        assert_eq!(g.sample_masked(&l, &[], Some(&[0; 4])), None);
        assert_eq!(g.sample_masked(&l, &[], Some(&[])), None);
        // No mask is the plain draw.
        assert_eq!(g.sample_masked(&l, &[], None), Some(argmax(&l)));
    }

    #[test]
    fn invalid_params_are_refused() {
        assert!(SamplingParams {
            top_p: 1.5,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams::default().validate().is_ok());
    }
}
