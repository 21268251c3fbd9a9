//! What a KV cache costs: the cache modes, their parameters, exact byte counts, and the
//! context length a memory budget buys.
//!
//! A cache of `capacity` tokens allocates, per layer (kv_dim = KV heads × head_dim):
//! ```text
//! f16:        capacity · kv_dim · 4                          (K and V, 2 bytes each)
//!           + sinks · kv_dim · 2                             (pristine sink keys, slide only)
//! q8/q4/q2:   sinks · kv_dim · 4 (+ sinks · kv_dim · 2 pristine keys, slide only)
//!           + min(window + page − 1 + min(n_batch, stage), capacity) · kv_dim · 4
//!                                                           (the f16 window, plus staging for
//!                                                            one batch being ingested)
//!           + n_pages · KV heads · page bytes                (quantized pages)
//!   n_pages = ⌊(capacity − sinks − window) / page⌋
//! ```
//! so the marginal cost per token of a quantized mode is `KV heads · page bytes / page` per
//! layer, and the window, sinks and staging are a fixed overhead.

use super::quant::{PageGeom, QBits};
use crate::error::{Error, Result};

/// How keys and values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvMode {
    /// f16, llama.cpp's default (the baseline).
    F16,
    /// 8-bit codes.
    Q8,
    /// 4-bit codes.
    Q4,
    /// 2-bit codes.
    Q2,
}

impl KvMode {
    /// All modes, baseline first.
    pub const ALL: [KvMode; 4] = [KvMode::F16, KvMode::Q8, KvMode::Q4, KvMode::Q2];

    /// Bits of a quantized mode (`None` for f16).
    pub fn qbits(self) -> Option<QBits> {
        match self {
            KvMode::F16 => None,
            KvMode::Q8 => Some(QBits::B8),
            KvMode::Q4 => Some(QBits::B4),
            KvMode::Q2 => Some(QBits::B2),
        }
    }

    /// The name used on the command line (`f16`, `q8`, `q4`, `q2`).
    pub fn name(self) -> &'static str {
        match self {
            KvMode::F16 => "f16",
            KvMode::Q8 => "q8",
            KvMode::Q4 => "q4",
            KvMode::Q2 => "q2",
        }
    }
}

impl std::str::FromStr for KvMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KvMode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::invalid(format!("KV cache mode {s:?} (f16, q8, q4, q2)")))
    }
}

impl std::fmt::Display for KvMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens when a new token does not fit the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Refuse with [`Error::ContextFull`]; nothing of the batch is ingested.
    #[default]
    Error,
    /// Drop the oldest tokens after the first `sinks` (attention sinks, StreamingLLM): whole
    /// pages in quantized modes, at least one page worth of tokens in f16. Cached keys keep
    /// their original RoPE positions; new tokens continue counting; the sink keys are
    /// re-rotated to sit just before the oldest kept token, so every query sees the relative
    /// distances StreamingLLM's in-cache positions give.
    Slide,
}

impl std::str::FromStr for Overflow {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Overflow::Error),
            "slide" => Ok(Overflow::Slide),
            _ => Err(Error::invalid(format!(
                "overflow policy {s:?} (error, slide)"
            ))),
        }
    }
}

/// Default key outliers per page of a q2 cache (see [`KvParams::outliers`]).
pub const DEFAULT_Q2_OUTLIERS: usize = 64;
/// Most key outliers a page keeps.
pub const MAX_OUTLIERS: usize = 64;

/// Parameters of a session's KV cache.
#[derive(Clone, Debug, PartialEq)]
pub struct KvParams {
    pub mode: KvMode,
    /// Most recent tokens kept in f16 (quantized modes), `R`.
    pub window: usize,
    /// Group size: tokens per page (a key group) and channels per value group; 32, 64 or 128.
    pub group: usize,
    /// Hadamard-rotate keys and queries before quantizing (quantized modes; head_dim must be
    /// a power of two).
    pub rotate: bool,
    /// First tokens that are never quantized nor evicted (attention sinks).
    pub sinks: usize,
    /// Memory budget of the cache in bytes; the context is the most tokens that fit
    /// (capped by an explicit `n_ctx`, else by the model's trained length).
    pub budget: Option<usize>,
    pub overflow: Overflow,
    /// Quantized modes: key values per page and KV head kept exactly, the page's largest
    /// quantization errors stored as (position, error) pairs and added back when scoring
    /// (dense-and-sparse, as KVQuant). `None`: 64 for q2 (2-bit keys lose the most on outlier
    /// channels; +256 bytes per 32-token page and head), 0 for q8/q4.
    pub outliers: Option<usize>,
    /// Quantized modes: most tokens one forward pass ingests. A batch stays in f16 until it
    /// is committed (so it attends exactly as token-by-token ingestion would), so this many
    /// f16 rows are part of the cache's fixed memory; sessions split longer prompts.
    pub stage: usize,
}

impl Default for KvParams {
    fn default() -> Self {
        KvParams {
            mode: KvMode::F16,
            window: 128,
            group: 32,
            rotate: false,
            sinks: 4,
            budget: None,
            overflow: Overflow::Error,
            outliers: None,
            stage: 64,
        }
    }
}

/// The per-layer shape of a model's keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvGeom {
    pub n_layer: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl KvGeom {
    /// Width of one token's keys (or values) in one layer.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// Bytes a cache needs, split the way [`KvParams::footprint`] reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvFootprint {
    pub mode: KvMode,
    /// Tokens the cache holds.
    pub capacity: usize,
    /// Everything allocated for keys and values.
    pub bytes: usize,
    /// The part that does not grow with the context (window, sinks, batch staging).
    pub fixed_bytes: usize,
    /// Marginal bytes per additional token of context (all layers).
    pub bytes_per_token: f64,
}

impl KvParams {
    /// Page geometry of a quantized mode (`None` for f16). Errors on parameters the model's
    /// shape cannot take.
    pub fn page_geom(&self, g: &KvGeom) -> Result<Option<PageGeom>> {
        self.validate(g)?;
        Ok(self.mode.qbits().map(|bits| PageGeom {
            kbits: bits,
            vbits: bits,
            k_outliers: self.key_outliers(),
            page: self.group,
            head_dim: g.head_dim,
            vgroup: self.group.min(g.head_dim),
        }))
    }

    /// Key values per page (and KV head) kept exactly: `outliers`, or the mode's default.
    pub fn key_outliers(&self) -> usize {
        self.outliers.unwrap_or(match self.mode {
            KvMode::Q2 => DEFAULT_Q2_OUTLIERS,
            _ => 0,
        })
    }

    /// The batch a session with `n_batch` really uses with this cache.
    pub fn batch(&self, n_batch: usize) -> usize {
        match self.mode {
            KvMode::F16 => n_batch,
            _ => n_batch.min(self.stage).max(1),
        }
    }

    /// Check the parameters against a model shape.
    pub fn validate(&self, g: &KvGeom) -> Result<()> {
        if self.sinks > 1024 {
            return Err(Error::invalid(format!(
                "{} attention sinks (at most 1024)",
                self.sinks
            )));
        }
        if self.window > 1 << 20 {
            return Err(Error::invalid(format!(
                "KV window of {} tokens",
                self.window
            )));
        }
        if self.stage == 0 || self.stage > 8192 {
            return Err(Error::invalid(format!(
                "KV staging batch of {} tokens (1..=8192)",
                self.stage
            )));
        }
        if self.outliers.is_some_and(|n| n > MAX_OUTLIERS) {
            return Err(Error::invalid(format!(
                "{} key outliers per page (at most {MAX_OUTLIERS})",
                self.outliers.unwrap_or(0)
            )));
        }
        if self.budget == Some(0) {
            return Err(Error::invalid("a KV budget of 0 bytes"));
        }
        if self.mode == KvMode::F16 {
            if self.rotate {
                return Err(Error::invalid(
                    "Hadamard rotation applies to quantized KV caches (q8, q4, q2), not f16",
                ));
            }
            return Ok(());
        }
        if ![32, 64, 128].contains(&self.group) {
            return Err(Error::invalid(format!(
                "KV group size {} (32, 64 or 128)",
                self.group
            )));
        }
        let hd = g.head_dim;
        if !hd.is_multiple_of(32) || !hd.is_multiple_of(self.group.min(hd)) {
            return Err(Error::invalid(format!(
                "quantized KV caches need a head dimension that is a multiple of 32 and of the group size; this model has {hd}"
            )));
        }
        if self.rotate && !hd.is_power_of_two() {
            return Err(Error::invalid(format!(
                "Hadamard rotation needs a power-of-two head dimension; this model has {hd}"
            )));
        }
        Ok(())
    }

    /// Exact bytes of a cache holding `capacity` tokens, ingesting batches of up to `n_batch`.
    pub fn footprint(&self, g: &KvGeom, capacity: usize, n_batch: usize) -> Result<KvFootprint> {
        let pg = self.page_geom(g)?;
        let too_big = || Error::OutOfMemory(format!("a KV cache of {capacity} tokens overflows"));
        let kvd = g.kv_dim();
        let row = kvd * 4; // K and V of one token in one layer, f16
        let sinks = self.sinks.min(capacity);
        let pristine = if self.overflow == Overflow::Slide {
            sinks * kvd * 2
        } else {
            0
        };
        let (per_layer, fixed_per_layer, marginal) = match pg {
            None => {
                let total = capacity.checked_mul(row).ok_or_else(too_big)?;
                (total + pristine, pristine, row as f64)
            }
            Some(pg) => {
                let window = tail_rows(self.window, self.group, self.batch(n_batch), capacity);
                let fixed = sinks * row + pristine + window * row;
                let pages = capacity.saturating_sub(sinks + self.window) / self.group;
                let page_bytes = g.n_kv_head * pg.bytes();
                let total = pages
                    .checked_mul(page_bytes)
                    .and_then(|b| b.checked_add(fixed))
                    .ok_or_else(too_big)?;
                (total, fixed, page_bytes as f64 / self.group as f64)
            }
        };
        Ok(KvFootprint {
            mode: self.mode,
            capacity,
            bytes: per_layer.checked_mul(g.n_layer).ok_or_else(too_big)?,
            fixed_bytes: fixed_per_layer * g.n_layer,
            bytes_per_token: marginal * g.n_layer as f64,
        })
    }

    /// The most tokens (at most `max_ctx`) whose cache fits in `budget` bytes. Errors with
    /// [`Error::OutOfMemory`] when not even one token fits.
    pub fn capacity_for_budget(
        &self,
        g: &KvGeom,
        budget: usize,
        n_batch: usize,
        max_ctx: usize,
    ) -> Result<usize> {
        let fits =
            |cap: usize| -> Result<bool> { Ok(self.footprint(g, cap, n_batch)?.bytes <= budget) };
        if max_ctx == 0 || !fits(1)? {
            let one = self.footprint(g, 1, n_batch)?;
            return Err(Error::OutOfMemory(format!(
                "a KV budget of {budget} bytes cannot hold one token in mode {} (needs {} bytes: {} fixed for the f16 window, sinks and batch staging)",
                self.mode, one.bytes, one.fixed_bytes
            )));
        }
        // `fits` is monotone in the capacity: binary search the largest that fits.
        let (mut lo, mut hi) = (1usize, max_ctx);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid)? {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }
}

/// Rows of the f16 window buffer of a quantized cache: the window, a page filling up, and
/// one batch being staged; never more than the capacity.
pub fn tail_rows(window: usize, page: usize, n_batch: usize, capacity: usize) -> usize {
    (window + page - 1 + n_batch).min(capacity)
}

/// Parse a byte size such as `64M`, `1.5GiB`, `800k` or `1000000` (k/M/G are powers of 1024).
pub fn parse_bytes(s: &str) -> Result<usize> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("byte size {s:?}: expected e.g. 64M, 1.5G, 800k")))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(Error::invalid(format!("byte size {s:?}: unknown unit"))),
    };
    let v = x * mult as f64;
    if !(v.is_finite() && v >= 1.0 && v < usize::MAX as f64) {
        return Err(Error::invalid(format!("byte size {s:?} is out of range")));
    }
    Ok(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: KvGeom = KvGeom {
        n_layer: 30,
        n_kv_head: 3,
        head_dim: 64,
    };

    fn params(mode: KvMode) -> KvParams {
        KvParams {
            mode,
            ..Default::default()
        }
    }

    /// Per-token bytes computed by hand from the layout (SmolLM2: 30 layers, 3 KV heads of 64).
    #[test]
    fn bytes_per_token_by_hand() {
        // f16: 2 bytes × 192 × 2 (K, V) × 30.
        let f = params(KvMode::F16).footprint(&SMOL, 4096, 512).unwrap();
        assert_eq!(f.bytes_per_token, 23040.0);
        assert_eq!(f.bytes, 4096 * 23040);
        // q4, page 32: codes 64·32/2 (K) + 32·64/2 (V) = 2048, meta (64+64+32·2+32·2)·2 = 512
        // bytes per page per head; 2560/32 = 80 bytes per token per head; × 3 × 30.
        let q4 = params(KvMode::Q4).footprint(&SMOL, 4096, 512).unwrap();
        assert_eq!(q4.bytes_per_token, 80.0 * 90.0);
        // q2: codes 1024 + meta 512 + 64 key outliers × (index, error) × 2 bytes = 256, per
        // page per head: 1792/32 = 56 bytes per token per head (48 without outliers).
        let q2 = params(KvMode::Q2).footprint(&SMOL, 4096, 512).unwrap();
        assert_eq!(q2.bytes_per_token, 56.0 * 90.0);
        let q2_plain = KvParams {
            outliers: Some(0),
            ..params(KvMode::Q2)
        };
        let q2_plain = q2_plain.footprint(&SMOL, 4096, 512).unwrap();
        assert_eq!(q2_plain.bytes_per_token, 48.0 * 90.0);
        let q8 = params(KvMode::Q8).footprint(&SMOL, 4096, 512).unwrap();
        assert_eq!(q8.bytes_per_token, 144.0 * 90.0);
        // Fixed part: sinks 4 + window 128 + 31 + staging 64 tokens of f16.
        assert_eq!(q4.fixed_bytes, (4 + 128 + 31 + 64) * 768 * 30);
        let pages = (4096 - 4 - 128) / 32;
        assert_eq!(q4.bytes, q4.fixed_bytes + pages * 3 * 2560 * 30);
    }

    #[test]
    fn budget_buys_the_largest_fitting_context() {
        for mode in KvMode::ALL {
            let p = params(mode);
            for budget in [20_000_000usize, 64 << 20, 200 << 20] {
                let cap = p.capacity_for_budget(&SMOL, budget, 512, 8192).unwrap();
                let at = p.footprint(&SMOL, cap, 512).unwrap().bytes;
                assert!(at <= budget, "{mode}: {at} > {budget}");
                if cap < 8192 {
                    assert!(p.footprint(&SMOL, cap + 1, 512).unwrap().bytes > budget);
                }
            }
            // Cheaper modes buy more context.
        }
        let b = 64 << 20;
        let caps: Vec<usize> = KvMode::ALL
            .iter()
            .map(|&m| {
                params(m)
                    .capacity_for_budget(&SMOL, b, 64, 1 << 20)
                    .unwrap()
            })
            .collect();
        assert!(caps.windows(2).all(|w| w[0] < w[1]), "{caps:?}");
    }

    #[test]
    fn a_budget_below_one_token_is_an_error() {
        for mode in KvMode::ALL {
            let r = params(mode).capacity_for_budget(&SMOL, 1000, 512, 8192);
            assert!(
                matches!(r, Err(Error::OutOfMemory(ref m)) if m.contains("cannot hold one token")),
                "{mode}: {r:?}"
            );
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let g = SMOL;
        let bad = [
            KvParams {
                mode: KvMode::Q4,
                group: 48,
                ..Default::default()
            },
            KvParams {
                mode: KvMode::F16,
                rotate: true,
                ..Default::default()
            },
            KvParams {
                budget: Some(0),
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(matches!(p.validate(&g), Err(Error::InvalidArg(_))), "{p:?}");
        }
        let odd = KvGeom {
            head_dim: 80,
            ..SMOL
        };
        assert!(params(KvMode::Q4).validate(&odd).is_err());
        assert!(params(KvMode::F16).validate(&odd).is_ok());
        let not_pow2 = KvGeom {
            head_dim: 96,
            ..SMOL
        };
        let rot = KvParams {
            mode: KvMode::Q8,
            rotate: true,
            ..Default::default()
        };
        assert!(rot.validate(&not_pow2).is_err());
        assert!(rot.validate(&SMOL).is_ok());
    }

    #[test]
    fn parse_sizes_and_names() {
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("800k").unwrap(), 800 << 10);
        assert_eq!(parse_bytes("12345").unwrap(), 12345);
        for bad in ["", "x", "12Q", "-5M", "0"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!("Q4".parse::<KvMode>().unwrap(), KvMode::Q4);
        assert!("q3".parse::<KvMode>().is_err());
        assert_eq!("slide".parse::<Overflow>().unwrap(), Overflow::Slide);
    }
}
