//! An f16 KV cache, llama.cpp's default.
//!
//! ```text
//! k: [n_layer][n_ctx][n_kv_head · head_dim]  f16     (v: the same)
//! ```
//! Positions `0..len` are valid. Memory is allocated once, at session creation.

use half::f16;

use crate::error::{Error, Result};

/// Keys and values for every layer, for up to `n_ctx` positions.
pub struct F16Cache {
    n_layer: usize,
    n_ctx: usize,
    kv_dim: usize,
    k: Vec<f16>,
    v: Vec<f16>,
    len: usize,
}

impl F16Cache {
    /// Bytes needed for `n_ctx` positions.
    pub fn bytes_for(n_layer: usize, n_ctx: usize, kv_dim: usize) -> Option<usize> {
        n_layer
            .checked_mul(n_ctx)?
            .checked_mul(kv_dim)?
            .checked_mul(4)
    }

    /// Allocate a cache; fails cleanly (no abort) when the memory cannot be had.
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize) -> Result<Self> {
        let n = n_layer
            .checked_mul(n_ctx)
            .and_then(|x| x.checked_mul(kv_dim))
            .ok_or_else(|| {
                Error::OutOfMemory(format!("KV cache of {n_ctx} positions overflows"))
            })?;
        let alloc = |what: &str| -> Result<Vec<f16>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| {
                Error::OutOfMemory(format!(
                    "cannot allocate the {what} cache: {} MiB for {n_ctx} positions",
                    (n * 2) >> 20
                ))
            })?;
            v.resize(n, f16::ZERO);
            Ok(v)
        };
        Ok(F16Cache {
            n_layer,
            n_ctx,
            kv_dim,
            k: alloc("key")?,
            v: alloc("value")?,
            len: 0,
        })
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 2
    }

    /// Bytes one position costs across all layers.
    pub fn bytes_per_token(&self) -> usize {
        self.n_layer * self.kv_dim * 4
    }

    /// Write keys/values (`n_tokens × kv_dim` f32 each) of layer `layer` at `pos0..`.
    pub fn store(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let n = k.len() / self.kv_dim;
        if pos0 + n > self.n_ctx || layer >= self.n_layer || v.len() != k.len() {
            return Err(Error::ContextFull(format!(
                "positions {pos0}..{} do not fit a context of {}",
                pos0 + n,
                self.n_ctx
            )));
        }
        let at = (layer * self.n_ctx + pos0) * self.kv_dim;
        for (d, s) in self.k[at..at + k.len()].iter_mut().zip(k) {
            *d = f16::from_f32(*s);
        }
        for (d, s) in self.v[at..at + v.len()].iter_mut().zip(v) {
            *d = f16::from_f32(*s);
        }
        Ok(())
    }

    /// Keys and values of one layer, all `n_ctx` positions (the caller reads `0..len`).
    pub fn layer(&self, layer: usize) -> (&[f16], &[f16]) {
        let span = self.n_ctx * self.kv_dim;
        let at = layer * span;
        (&self.k[at..at + span], &self.v[at..at + span])
    }

    /// Mark positions `0..len` valid (after a batch was stored, or to roll back).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.n_ctx);
    }

    /// Remove positions `start..start + count` of every layer, moving the later ones down
    /// (the sliding window's eviction; costs one pass over the filled part).
    pub fn remove(&mut self, start: usize, count: usize) {
        let end = (start + count).min(self.len);
        if start >= end {
            return;
        }
        let d = self.kv_dim;
        for l in 0..self.n_layer {
            let base = l * self.n_ctx * d;
            self.k
                .copy_within(base + end * d..base + self.len * d, base + start * d);
            self.v
                .copy_within(base + end * d..base + self.len * d, base + start * d);
        }
        self.len -= end - start;
    }

    /// Keys of positions `rows` of layer `layer`, writable (sink re-rotation).
    pub fn keys_mut(&mut self, layer: usize, rows: std::ops::Range<usize>) -> &mut [f16] {
        let at = layer * self.n_ctx * self.kv_dim;
        &mut self.k[at + rows.start * self.kv_dim..at + rows.end * self.kv_dim]
    }

    /// A copy of the filled part (for session save/clone).
    pub fn snapshot(&self) -> (Vec<f16>, Vec<f16>) {
        let mut k = Vec::with_capacity(self.n_layer * self.len * self.kv_dim);
        let mut v = Vec::with_capacity(k.capacity());
        for l in 0..self.n_layer {
            let (lk, lv) = self.layer(l);
            k.extend_from_slice(&lk[..self.len * self.kv_dim]);
            v.extend_from_slice(&lv[..self.len * self.kv_dim]);
        }
        (k, v)
    }

    /// Restore what [`F16Cache::snapshot`] returned for `len` positions.
    pub fn restore(&mut self, len: usize, k: &[f16], v: &[f16]) -> Result<()> {
        let per = len * self.kv_dim;
        if len > self.n_ctx || k.len() != per * self.n_layer || v.len() != k.len() {
            return Err(Error::invalid(
                "saved KV state does not match this session's shape",
            ));
        }
        for l in 0..self.n_layer {
            let at = l * self.n_ctx * self.kv_dim;
            self.k[at..at + per].copy_from_slice(&k[l * per..(l + 1) * per]);
            self.v[at..at + per].copy_from_slice(&v[l * per..(l + 1) * per]);
        }
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_read_back() {
        let mut c = F16Cache::new(2, 4, 3).unwrap();
        c.store(1, 2, &[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        let (k, v) = c.layer(1);
        assert_eq!(k[6].to_f32(), 1.0);
        assert_eq!(v[8].to_f32(), 6.0);
        assert!(matches!(
            c.store(0, 4, &[0.0; 3], &[0.0; 3]),
            Err(Error::ContextFull(_))
        ));
    }

    #[test]
    fn snapshot_restore_roundtrip() {
        let mut c = F16Cache::new(2, 8, 4).unwrap();
        for pos in 0..3 {
            for l in 0..2 {
                let k: Vec<f32> = (0..4).map(|i| (100 * l + 10 * pos + i) as f32).collect();
                let v: Vec<f32> = k.iter().map(|x| -x).collect();
                c.store(l, pos, &k, &v).unwrap();
            }
        }
        c.set_len(3);
        let (k, v) = c.snapshot();
        assert_eq!(k.len(), 2 * 3 * 4);
        let mut d = F16Cache::new(2, 8, 4).unwrap();
        d.restore(3, &k, &v).unwrap();
        assert_eq!(d.len(), 3);
        for l in 0..2 {
            assert_eq!(d.layer(l).0[..12], c.layer(l).0[..12]);
            assert_eq!(d.layer(l).1[..12], c.layer(l).1[..12]);
        }
        // A snapshot of the wrong shape is refused.
        let mut e = F16Cache::new(2, 8, 5).unwrap();
        assert!(e.restore(3, &k, &v).is_err());
        assert!(d.restore(9, &k, &v).is_err());
    }

    #[test]
    fn remove_shifts_later_positions_down() {
        let mut c = F16Cache::new(2, 8, 2).unwrap();
        for pos in 0..6 {
            for l in 0..2 {
                let x = (10 * l + pos) as f32;
                c.store(l, pos, &[x, -x], &[x + 0.5, 0.0]).unwrap();
            }
        }
        c.set_len(6);
        c.remove(1, 3); // keep 0, 4, 5
        assert_eq!(c.len(), 3);
        for l in 0..2 {
            let (k, v) = c.layer(l);
            let got: Vec<f32> = k[..6].iter().step_by(2).map(|x| x.to_f32()).collect();
            let b = (10 * l) as f32;
            assert_eq!(got, vec![b, b + 4.0, b + 5.0]);
            assert_eq!(v[2].to_f32(), b + 4.5);
        }
        c.keys_mut(1, 0..1)[1] = f16::from_f32(7.0);
        assert_eq!(c.layer(1).0[1].to_f32(), 7.0);
    }

    #[test]
    fn absurd_size_is_an_error_not_an_abort() {
        assert!(matches!(
            F16Cache::new(1 << 20, 1 << 30, 1 << 20),
            Err(Error::OutOfMemory(_))
        ));
    }
}
