//! Load progress and cancellation: the callback type, the fixed steps of a load and the
//! pass that reads every page of the tensor data.
//!
//! A load reports, in order: `0.0` (starting), [`PARSED`] (header and metadata checked),
//! [`WEIGHTS_CHECKED`] (every tensor found with the right shape and type),
//! [`TOKENIZER_BUILT`], then one report per tensor while its bytes are read, from
//! [`TOKENIZER_BUILT`] up to [`TOUCHED`] in proportion to bytes, and `1.0` when the model
//! is ready. The values never decrease. A callback that returns `false` stops the load
//! with [`Error::Cancelled`] at the next report.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::GgufFile;

/// Fraction reported once the file is mapped and its header parsed.
pub const PARSED: f32 = 0.02;
/// Fraction reported once every tensor the architecture needs was found and checked.
pub const WEIGHTS_CHECKED: f32 = 0.05;
/// Fraction reported once the tokenizer is built.
pub const TOKENIZER_BUILT: f32 = 0.10;
/// Fraction reached when every tensor's bytes have been read.
pub const TOUCHED: f32 = 0.99;

/// A progress callback: receives the fraction loaded (0.0 ..= 1.0) and returns whether to
/// go on. Called on the loading thread.
///
/// ```
/// use suanpan::{ModelParams, model::LoadProgress};
/// let params = ModelParams {
///     progress: Some(LoadProgress::new(|f| {
///         eprintln!("loaded {:.0}%", f * 100.0);
///         true // keep going
///     })),
///     ..Default::default()
/// };
/// # let _ = params;
/// ```
#[derive(Clone)]
pub struct LoadProgress(Arc<dyn Fn(f32) -> bool + Send + Sync>);

impl LoadProgress {
    pub fn new(f: impl Fn(f32) -> bool + Send + Sync + 'static) -> Self {
        LoadProgress(Arc::new(f))
    }

    /// Report `fraction`; `false` means the caller wants the load cancelled.
    pub fn call(&self, fraction: f32) -> bool {
        (self.0)(fraction)
    }
}

impl fmt::Debug for LoadProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoadProgress(..)")
    }
}

/// Report `fraction` to an optional callback; a `false` answer becomes `Cancelled`.
pub(crate) fn report(progress: Option<&LoadProgress>, fraction: f32) -> Result<()> {
    match progress {
        Some(p) if !p.call(fraction) => Err(Error::Cancelled),
        _ => Ok(()),
    }
}

/// Bytes between two reads: one per page of the mapping brings every page in.
const PAGE: usize = 4096;

/// Read one byte of every page of every tensor (pages of a mapped file are loaded on first
/// touch), reporting progress after each tensor. Returns a checksum of the bytes read so
/// the reads cannot be optimised away.
pub(crate) fn touch_tensors(file: &GgufFile, progress: Option<&LoadProgress>) -> Result<u64> {
    let total: u64 = file.tensors.iter().map(|t| t.size).sum::<u64>().max(1);
    let mut done = 0u64;
    let mut sum = 0u64;
    for t in &file.tensors {
        let data = file.tensor_data(t);
        let mut at = 0;
        while at < data.len() {
            sum = sum.wrapping_add(u64::from(data[at]));
            at += PAGE;
        }
        if let Some(&last) = data.last() {
            sum = sum.wrapping_add(u64::from(last));
        }
        done += t.size;
        let f = TOKENIZER_BUILT + (TOUCHED - TOKENIZER_BUILT) * (done as f64 / total as f64) as f32;
        report(progress, f)?;
    }
    Ok(std::hint::black_box(sum))
}
