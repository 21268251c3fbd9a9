//! Saving a session's state to bytes and restoring it, on the same model, later or in
//! another session (of any context size large enough to hold it).
//!
//! Layout of a saved state (all integers little-endian):
//!
//! ```text
//! offset      size               field
//! 0           8                  magic b"SPSTATE\0"
//! 8           4                  format version (1)
//! 12          8                  model fingerprint (Model::fingerprint)
//! 20          4                  n_layer
//! 24          4                  kv_dim (KV values per position per layer)
//! 28          4                  n: tokens in the KV cache
//! 32          4                  pending token id, or 0xFFFF_FFFF for none
//! 36          4                  KV encoding: 0 = f16
//! 40          4·n                token ids
//! 40+4n       2·n_layer·n·kv_dim keys, f16, [layer][position][kv_dim]
//! ...         2·n_layer·n·kv_dim values, same order
//! end-8       8                  checksum (hash64 of every byte before it)
//! ```
//!
//! A restore checks everything (magic, version, model, shape, sizes, token ids, checksum)
//! before it touches the session: a blob from another model or a damaged one is an
//! [`Error::InvalidArg`] and leaves the session as it was.

use half::f16;

use super::Session;
use crate::error::{Error, Result};
use crate::model::Model;

const MAGIC: &[u8; 8] = b"SPSTATE\0";
/// Version of the layout above; bump it on any change.
pub const STATE_VERSION: u32 = 1;
const HEADER: usize = 40;
const NO_PENDING: u32 = u32::MAX;
const KV_F16: u32 = 0;

/// A 64-bit hash that detects any change of a single 8-byte word (xor-multiply by an odd
/// constant is a bijection per step), finished with SplitMix64's mixer. For integrity
/// checks and identities, not for security.
pub fn hash64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = 0xCBF2_9CE4_8422_2325u64 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

impl Model {
    /// An identity of the model file: a hash of its whole header (metadata, vocabulary,
    /// tensor table) and of 256 bytes at the start, middle and end of every tensor. Two
    /// files with the same fingerprint are, for all practical purposes, the same model.
    pub fn fingerprint(&self) -> u64 {
        *self.fingerprint.get_or_init(|| {
            let f = &self.file;
            let bytes = f.bytes();
            let header = (f.data_start as usize).min(bytes.len());
            let mut acc = Vec::with_capacity(16 + f.tensors.len() * 3 * 256);
            acc.extend_from_slice(&hash64(&bytes[..header]).to_le_bytes());
            for t in &f.tensors {
                let d = f.tensor_data(t);
                let n = d.len().min(256);
                let mid = (d.len() - n) / 2;
                acc.extend_from_slice(&d[..n]);
                acc.extend_from_slice(&d[mid..mid + n]);
                acc.extend_from_slice(&d[d.len() - n..]);
            }
            hash64(&acc)
        })
    }
}

fn corrupt(why: &str) -> Error {
    Error::invalid(format!("saved session state is corrupt: {why}"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn f16s(b: &[u8]) -> Vec<f16> {
    b.chunks_exact(2)
        .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}

impl Session {
    /// The session's context (tokens, pending token, keys and values) as bytes, in the
    /// versioned layout of this module. Restore it with [`Session::load_state`].
    pub fn save_state(&self) -> Result<Vec<u8>> {
        let c = self.model.config();
        let n = self.tokens.len();
        let (k, v) = self.store().snapshot()?;
        let size = HEADER + 4 * n + 2 * (k.len() + v.len()) + 8;
        let mut out = Vec::new();
        out.try_reserve_exact(size).map_err(|_| {
            Error::OutOfMemory(format!("cannot allocate {size} bytes for a saved state"))
        })?;
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.model.fingerprint().to_le_bytes());
        for x in [
            c.n_layer as u32,
            c.kv_dim() as u32,
            n as u32,
            self.pending.unwrap_or(NO_PENDING),
            KV_F16,
        ] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for t in &self.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        for x in k.iter().chain(&v) {
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        let sum = hash64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        debug_assert_eq!(out.len(), size);
        Ok(out)
    }

    /// Replace this session's context with a saved one. The state must come from the same
    /// model ([`Model::fingerprint`]) and fit this session's context; anything else, or a
    /// damaged blob, is an error and leaves the session unchanged.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() < HEADER + 8 || &bytes[..8] != MAGIC {
            return Err(Error::invalid(
                "not a saved suanpan session state (bad magic or too short)",
            ));
        }
        let version = u32_at(bytes, 8);
        if version != STATE_VERSION {
            return Err(Error::invalid(format!(
                "saved session state has format version {version}; this build reads version {STATE_VERSION}"
            )));
        }
        let body = &bytes[..bytes.len() - 8];
        if hash64(body) != u64_at(bytes, bytes.len() - 8) {
            return Err(corrupt("checksum mismatch"));
        }
        let c = self.model.config();
        if u64_at(bytes, 12) != self.model.fingerprint() {
            return Err(Error::invalid(
                "saved session state belongs to a different model",
            ));
        }
        let (n_layer, kv_dim) = (u32_at(bytes, 20) as usize, u32_at(bytes, 24) as usize);
        if n_layer != c.n_layer || kv_dim != c.kv_dim() {
            return Err(corrupt("KV shape does not match the model"));
        }
        if u32_at(bytes, 36) != KV_F16 {
            return Err(corrupt("unknown KV encoding"));
        }
        let n = u32_at(bytes, 28) as usize;
        let pending = match u32_at(bytes, 32) {
            NO_PENDING => None,
            t => Some(t),
        };
        let per = n
            .checked_mul(n_layer)
            .and_then(|x| x.checked_mul(kv_dim))
            .ok_or_else(|| corrupt("sizes overflow"))?;
        let expect = per
            .checked_mul(4)
            .and_then(|x| x.checked_add(HEADER + 4 * n + 8));
        if expect != Some(bytes.len()) {
            return Err(corrupt(&format!(
                "{} bytes for {n} tokens (expected {expect:?})",
                bytes.len()
            )));
        }
        let total = n + usize::from(pending.is_some());
        if total > self.n_ctx() {
            return Err(Error::ContextFull(format!(
                "the saved state holds {total} tokens; this session's context is {}",
                self.n_ctx()
            )));
        }
        let tokens: Vec<u32> = (0..n).map(|i| u32_at(bytes, HEADER + 4 * i)).collect();
        let n_vocab = c.n_vocab as u32;
        if tokens.iter().chain(&pending).any(|&t| t >= n_vocab) {
            return Err(corrupt("token id outside the vocabulary"));
        }
        let kv_at = HEADER + 4 * n;
        let k = f16s(&bytes[kv_at..kv_at + 2 * per]);
        let v = f16s(&bytes[kv_at + 2 * per..kv_at + 4 * per]);
        self.store_mut().restore(n, &k, &v)?;
        self.tokens = tokens;
        self.pending = pending;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::hash64;

    #[test]
    fn hash_sees_every_single_byte_change() {
        let base: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let h = hash64(&base);
        for i in [0usize, 7, 8, 500, 993, 999] {
            for bit in 0..8 {
                let mut b = base.clone();
                b[i] ^= 1 << bit;
                assert_ne!(hash64(&b), h, "byte {i} bit {bit}");
            }
        }
        assert_ne!(hash64(&base[..999]), h);
        assert_eq!(hash64(&base), h);
    }
}
