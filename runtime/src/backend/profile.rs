//! Where a forward pass spends its time, op by op: [`Profiled`] wraps any [`Backend`] and
//! times every call into an [`OpProfile`] (`suanpan bench --profile`).
//!
//! The wall time of each call is what it measures, so it means "time in this op" for a
//! backend that runs ops at once (the CPU); a backend that records ops and runs them at
//! [`Backend::end`] (the GPU) shows its whole pass under `end` (its kernels have their own
//! timestamp queries). Projections are split by the matrices they multiply, the rest by op.
//!
//! ```
//! use suanpan::backend::profile::OpProfile;
//! let p = OpProfile::default();
//! assert!(p.rows().is_empty());
//! ```

use std::collections::BTreeMap;

use super::{Act, Backend, Logits, Mat, Norm, TapSite};
use crate::clock::Instant;
use crate::error::Result;
use crate::model::config::Activation;

/// Accumulated time per op name, over any number of passes.
#[derive(Clone, Debug, Default)]
pub struct OpProfile {
    /// Op name → (calls, seconds).
    ops: BTreeMap<&'static str, (u64, f64)>,
    /// Forward passes and tokens seen.
    passes: u64,
    tokens: u64,
}

/// One row of [`OpProfile::rows`].
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub calls: u64,
    pub seconds: f64,
    /// Share of the profile's total time, 0..=1.
    pub share: f64,
}

impl OpProfile {
    fn add(&mut self, op: &'static str, t0: Instant) {
        let e = self.ops.entry(op).or_default();
        e.0 += 1;
        e.1 += t0.elapsed().as_secs_f64();
    }

    /// Add `other`'s times to these.
    pub fn merge(&mut self, other: &OpProfile) {
        for (&op, &(calls, s)) in &other.ops {
            let e = self.ops.entry(op).or_default();
            e.0 += calls;
            e.1 += s;
        }
        self.passes += other.passes;
        self.tokens += other.tokens;
    }

    /// Forget everything measured so far.
    pub fn clear(&mut self) {
        *self = OpProfile::default();
    }

    /// Forward passes profiled.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// Tokens run through the profiled passes.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Seconds in all ops together.
    pub fn total_seconds(&self) -> f64 {
        self.ops.values().map(|v| v.1).sum()
    }

    /// Every op, the most expensive first.
    pub fn rows(&self) -> Vec<OpTime> {
        let total = self.total_seconds().max(1e-12);
        let mut v: Vec<OpTime> = self
            .ops
            .iter()
            .map(|(&op, &(calls, seconds))| OpTime {
                op,
                calls,
                seconds,
                share: seconds / total,
            })
            .collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }
}

/// The name a projection is filed under: the kind of its first matrix (a call multiplies
/// Q/K/V together, or gate/up together).
fn project_name(jobs: &[(Mat, Act)]) -> &'static str {
    match jobs.first().map(|j| j.0) {
        Some(Mat::Q(_) | Mat::K(_) | Mat::V(_)) => "matmul q/k/v",
        Some(Mat::O(_)) => "matmul attn_output",
        Some(Mat::Gate(_) | Mat::Up(_)) => "matmul ffn_gate/up",
        Some(Mat::Down(_)) => "matmul ffn_down",
        Some(Mat::Output) => "matmul output",
        None => "matmul (none)",
    }
}

/// A backend whose every op is timed into a profile.
pub struct Profiled<'p, B> {
    pub inner: B,
    profile: &'p mut OpProfile,
}

impl<'p, B: Backend> Profiled<'p, B> {
    pub fn new(inner: B, profile: &'p mut OpProfile) -> Self {
        Profiled { inner, profile }
    }
}

macro_rules! timed {
    ($self:ident, $name:expr, $call:expr) => {{
        let t0 = Instant::now();
        let r = $call;
        $self.profile.add($name, t0);
        r
    }};
}

impl<B: Backend> Backend for Profiled<'_, B> {
    fn begin(&mut self, tokens: &[u32], logits: Logits) -> Result<()> {
        self.profile.passes += 1;
        self.profile.tokens += tokens.len() as u64;
        timed!(self, "begin", self.inner.begin(tokens, logits))
    }
    fn embed(&mut self, tokens: &[u32], scale: f32) -> Result<()> {
        timed!(self, "embed", self.inner.embed(tokens, scale))
    }
    fn rms_norm(&mut self, w: Norm, src: Act, dst: Act) -> Result<()> {
        timed!(self, "rms_norm", self.inner.rms_norm(w, src, dst))
    }
    fn head_norm(&mut self, w: Norm, buf: Act) -> Result<()> {
        timed!(self, "head_norm", self.inner.head_norm(w, buf))
    }
    fn project(&mut self, x: Act, jobs: &[(Mat, Act)]) -> Result<()> {
        timed!(self, project_name(jobs), self.inner.project(x, jobs))
    }
    fn rope(&mut self, buf: Act, sliding: bool) -> Result<()> {
        timed!(self, "rope", self.inner.rope(buf, sliding))
    }
    fn attend(&mut self, layer: usize, window: usize) -> Result<()> {
        timed!(self, "attention", self.inner.attend(layer, window))
    }
    fn glu(&mut self, act: Activation) -> Result<()> {
        timed!(self, "glu", self.inner.glu(act))
    }
    fn add(&mut self, dst: Act, src: Act) -> Result<()> {
        timed!(self, "add", self.inner.add(dst, src))
    }
    fn observe(&mut self, layer: usize, site: TapSite, src: Act) {
        // Calibration only (a no-op in inference): not part of a token's time.
        self.inner.observe(layer, site, src)
    }
    fn logits(&mut self, first: usize) -> Result<()> {
        timed!(
            self,
            "output norm + matmul output",
            self.inner.logits(first)
        )
    }
    fn end(&mut self) -> Result<()> {
        timed!(self, "end", self.inner.end())
    }
    fn load(&mut self, a: Act, rows: &[f32]) -> Result<()> {
        self.inner.load(a, rows)
    }
    fn fetch(&mut self, a: Act) -> Result<Vec<f32>> {
        self.inner.fetch(a)
    }
    fn fetch_logits(&mut self, rows: usize) -> Result<Vec<f32>> {
        self.inner.fetch_logits(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that only counts.
    #[derive(Default)]
    struct Null(usize);
    impl Backend for Null {
        fn begin(&mut self, _: &[u32], _: Logits) -> Result<()> {
            Ok(())
        }
        fn embed(&mut self, _: &[u32], _: f32) -> Result<()> {
            Ok(())
        }
        fn rms_norm(&mut self, _: Norm, _: Act, _: Act) -> Result<()> {
            Ok(())
        }
        fn head_norm(&mut self, _: Norm, _: Act) -> Result<()> {
            Ok(())
        }
        fn project(&mut self, _: Act, _: &[(Mat, Act)]) -> Result<()> {
            self.0 += 1;
            Ok(())
        }
        fn rope(&mut self, _: Act, _: bool) -> Result<()> {
            Ok(())
        }
        fn attend(&mut self, _: usize, _: usize) -> Result<()> {
            Ok(())
        }
        fn glu(&mut self, _: Activation) -> Result<()> {
            Ok(())
        }
        fn add(&mut self, _: Act, _: Act) -> Result<()> {
            Ok(())
        }
        fn logits(&mut self, _: usize) -> Result<()> {
            Ok(())
        }
        fn end(&mut self) -> Result<()> {
            Ok(())
        }
        fn load(&mut self, _: Act, _: &[f32]) -> Result<()> {
            Ok(())
        }
        fn fetch(&mut self, _: Act) -> Result<Vec<f32>> {
            Ok(vec![])
        }
        fn fetch_logits(&mut self, _: usize) -> Result<Vec<f32>> {
            Ok(vec![])
        }
    }

    #[test]
    fn every_call_is_counted_under_its_op_and_passed_through() {
        let mut p = OpProfile::default();
        let mut b = Profiled::new(Null::default(), &mut p);
        b.begin(&[1, 2, 3], Logits::Last).unwrap();
        b.project(Act::Xn, &[(Mat::Q(0), Act::Q), (Mat::K(0), Act::K)])
            .unwrap();
        b.project(Act::Xn, &[(Mat::Gate(0), Act::Gate)]).unwrap();
        b.project(Act::Xn, &[(Mat::Up(1), Act::Up)]).unwrap();
        b.attend(0, 0).unwrap();
        b.end().unwrap();
        assert_eq!(b.inner.0, 3, "every projection reached the wrapped backend");
        let rows = p.rows();
        let calls = |op: &str| rows.iter().find(|r| r.op == op).map(|r| r.calls);
        assert_eq!(calls("matmul q/k/v"), Some(1));
        assert_eq!(calls("matmul ffn_gate/up"), Some(2));
        assert_eq!(calls("attention"), Some(1));
        assert_eq!(calls("rope"), None);
        assert_eq!((p.passes(), p.tokens()), (1, 3));
        let share: f64 = rows.iter().map(|r| r.share).sum();
        assert!(p.total_seconds() == 0.0 || (share - 1.0).abs() < 1e-9);
        let mut twice = p.clone();
        twice.merge(&p);
        assert_eq!((twice.passes(), twice.tokens()), (2, 6));
        assert_eq!(
            twice.rows().iter().map(|r| r.calls).sum::<u64>(),
            2 * rows.iter().map(|r| r.calls).sum::<u64>()
        );
        p.clear();
        assert!(p.rows().is_empty());
    }
}
