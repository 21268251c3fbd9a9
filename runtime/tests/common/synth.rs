//! Tiny decoder models with random weights, built in memory, for shape and consistency
//! tests of architectures we have no real weights for. Never proof of correctness alone.

use suanpan::format::gguf::{GgufWriter, Value};
use suanpan::format::GgmlType;

/// Knobs of a synthetic model.
#[derive(Clone, Debug)]
pub struct Synth {
    pub arch: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    /// Type of the projection matrices.
    pub ty: GgmlType,
    pub seed: u64,
    /// Metadata added after the model's own (a key already set is replaced).
    pub meta: Vec<(String, Value)>,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            arch: "llama",
            n_layer: 2,
            n_embd: 64,
            n_ff: 128,
            n_head: 4,
            n_kv_head: 2,
            ty: GgmlType::F32,
            seed: 1,
            meta: Vec::new(),
        }
    }
}

/// xorshift64: reproducible test data.
pub struct Rng(pub u64);
impl Rng {
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// GPT-2's byte → printable character map.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut out = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        out[b as usize] = if printable.contains(&b) {
            char::from_u32(b).unwrap()
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap()
        };
    }
    out
}

/// Encode `vals` (a multiple of 32 long for block types) as `ty`.
fn encode(ty: GgmlType, vals: &[f32]) -> Vec<u8> {
    let h = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match ty {
        GgmlType::F32 => bytemuck::cast_slice(vals).to_vec(),
        GgmlType::F16 => vals.iter().flat_map(|&v| h(v)).collect(),
        GgmlType::BF16 => vals
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => vals
            .chunks(32)
            .flat_map(|b| {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let mut out = h(d).to_vec();
                out.extend(b.iter().map(|&v| {
                    if d > 0.0 {
                        (v / d).round() as i8 as u8
                    } else {
                        0
                    }
                }));
                out
            })
            .collect(),
        GgmlType::Q4_1 => vals
            .chunks(32)
            .flat_map(|b| {
                let (mn, mx) = b
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, c), &v| (a.min(v), c.max(v)));
                let d = (mx - mn) / 15.0;
                let q = |v: f32| {
                    if d > 0.0 {
                        ((v - mn) / d).round().clamp(0.0, 15.0) as u8
                    } else {
                        0
                    }
                };
                let mut out = h(d).to_vec();
                out.extend(h(mn));
                out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
                out
            })
            .collect(),
        other => random_blocks(other, vals),
    }
}

impl Synth {
    /// The GGUF image of this model, with a byte-level BPE vocabulary of 256 bytes + 2
    /// control tokens, padded to `n_vocab` = 320 rows.
    pub fn gguf(&self) -> Vec<u8> {
        let mut rng = Rng(self.seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
        let a = self.arch;
        let hd = self.n_embd / self.n_head;
        let n_vocab = 320usize;
        let mut w = GgufWriter::new();
        w.add_meta("general.architecture", Value::String(a.into()));
        w.add_meta(&format!("{a}.block_count"), Value::U32(self.n_layer as u32));
        w.add_meta(
            &format!("{a}.embedding_length"),
            Value::U32(self.n_embd as u32),
        );
        w.add_meta(
            &format!("{a}.feed_forward_length"),
            Value::U32(self.n_ff as u32),
        );
        w.add_meta(
            &format!("{a}.attention.head_count"),
            Value::U32(self.n_head as u32),
        );
        w.add_meta(
            &format!("{a}.attention.head_count_kv"),
            Value::U32(self.n_kv_head as u32),
        );
        w.add_meta(&format!("{a}.context_length"), Value::U32(256));
        w.add_meta(&format!("{a}.rope.freq_base"), Value::F32(10000.0));
        w.add_meta(
            &format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        );
        // Vocabulary: control tokens, 256 byte tokens, a few merges, padding.
        let bc = byte_chars();
        let mut tokens = vec!["<s>".to_string(), "</s>".to_string()];
        tokens.extend(bc.iter().map(|c| c.to_string()));
        let merges = vec![format!("{} t", bc[b' ' as usize]), "h e".to_string()];
        tokens.push(format!("{}t", bc[b' ' as usize]));
        tokens.push("he".to_string());
        let mut types = vec![3i32, 3];
        types.extend(std::iter::repeat_n(1, tokens.len() - 2));
        while tokens.len() < n_vocab {
            tokens.push(format!("<unused{}>", tokens.len()));
            types.push(5);
        }
        w.add_meta("tokenizer.ggml.model", Value::String("gpt2".into()));
        w.add_meta("tokenizer.ggml.pre", Value::String("default".into()));
        w.add_meta(
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        );
        w.add_meta(
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        );
        w.add_meta(
            "tokenizer.ggml.merges",
            Value::Array(merges.into_iter().map(Value::String).collect()),
        );
        w.add_meta("tokenizer.ggml.bos_token_id", Value::U32(0));
        w.add_meta("tokenizer.ggml.eos_token_id", Value::U32(1));
        for (k, v) in &self.meta {
            w.add_meta(k, v.clone());
        }
        let mut mat = |w: &mut GgufWriter, name: &str, rows: usize, cols: usize, ty: GgmlType| {
            let scale = 1.0 / (cols as f32).sqrt();
            let v: Vec<f32> = (0..rows * cols).map(|_| rng.f() * scale * 1.7).collect();
            w.add_tensor(name, &[cols as u64, rows as u64], ty, encode(ty, &v));
        };
        let ones = |n: usize| encode(GgmlType::F32, &vec![1.0; n]);
        mat(
            &mut w,
            "token_embd.weight",
            n_vocab,
            self.n_embd,
            GgmlType::Q8_0,
        );
        for i in 0..self.n_layer {
            let p = format!("blk.{i}");
            w.add_tensor(
                &format!("{p}.attn_norm.weight"),
                &[self.n_embd as u64],
                GgmlType::F32,
                ones(self.n_embd),
            );
            w.add_tensor(
                &format!("{p}.ffn_norm.weight"),
                &[self.n_embd as u64],
                GgmlType::F32,
                ones(self.n_embd),
            );
            mat(
                &mut w,
                &format!("{p}.attn_q.weight"),
                self.n_embd,
                self.n_embd,
                self.ty,
            );
            mat(
                &mut w,
                &format!("{p}.attn_k.weight"),
                self.n_kv_head * hd,
                self.n_embd,
                self.ty,
            );
            mat(
                &mut w,
                &format!("{p}.attn_v.weight"),
                self.n_kv_head * hd,
                self.n_embd,
                self.ty,
            );
            mat(
                &mut w,
                &format!("{p}.attn_output.weight"),
                self.n_embd,
                self.n_embd,
                self.ty,
            );
            mat(
                &mut w,
                &format!("{p}.ffn_gate.weight"),
                self.n_ff,
                self.n_embd,
                self.ty,
            );
            mat(
                &mut w,
                &format!("{p}.ffn_up.weight"),
                self.n_ff,
                self.n_embd,
                self.ty,
            );
            mat(
                &mut w,
                &format!("{p}.ffn_down.weight"),
                self.n_embd,
                self.n_ff,
                self.ty,
            );
            if a == "qwen2" {
                for (t, n) in [
                    ("q", self.n_embd),
                    ("k", self.n_kv_head * hd),
                    ("v", self.n_kv_head * hd),
                ] {
                    let b: Vec<f32> = (0..n).map(|j| (j as f32 * 0.37).sin() * 0.1).collect();
                    w.add_tensor(
                        &format!("{p}.attn_{t}.bias"),
                        &[n as u64],
                        GgmlType::F32,
                        encode(GgmlType::F32, &b),
                    );
                }
            }
            if a == "qwen3" || a == "gemma3" {
                w.add_tensor(
                    &format!("{p}.attn_q_norm.weight"),
                    &[hd as u64],
                    GgmlType::F32,
                    ones(hd),
                );
                w.add_tensor(
                    &format!("{p}.attn_k_norm.weight"),
                    &[hd as u64],
                    GgmlType::F32,
                    ones(hd),
                );
            }
            if a == "gemma3" {
                // Post-norms with weights away from 1, so that skipping one would show.
                for t in ["post_attention_norm", "post_ffw_norm"] {
                    let g: Vec<f32> = (0..self.n_embd)
                        .map(|j| 0.6 + 0.5 * (j as f32 * 0.71).cos().abs())
                        .collect();
                    w.add_tensor(
                        &format!("{p}.{t}.weight"),
                        &[self.n_embd as u64],
                        GgmlType::F32,
                        encode(GgmlType::F32, &g),
                    );
                }
            }
        }
        w.add_tensor(
            "output_norm.weight",
            &[self.n_embd as u64],
            GgmlType::F32,
            ones(self.n_embd),
        );
        w.to_bytes()
    }
}

/// Random blocks of a type the tests cannot quantize to (K-quants, IQ4, Q5, ternary): random
/// code bytes (seeded by `vals`) with finite f16 scales sized so a block's values stay near
/// `vals`' magnitude. Not a quantization of `vals`: a random-weight matrix of that type.
fn random_blocks(ty: GgmlType, vals: &[f32]) -> Vec<u8> {
    use GgmlType::*;
    // Byte offsets of each block's f16 scale fields, and the largest |code × sub-scale|.
    let (fields, span): (&[usize], f32) = match ty {
        Q5_0 => (&[0], 16.0),
        Q5_1 => (&[0, 2], 31.0),
        Q2K => (&[80, 82], 45.0),
        Q3K => (&[108], 128.0),
        Q4K => (&[0, 2], 945.0),
        Q5K => (&[0, 2], 1953.0),
        Q6K => (&[208], 4096.0),
        Iq4Nl => (&[0], 127.0),
        Iq4Xs => (&[0], 4064.0),
        TQ1_0 => (&[52], 1.0),
        TQ2_0 => (&[64], 1.0),
        other => panic!("synth does not encode {other}"),
    };
    let (bl, bb) = ty.block_geometry();
    let amax = vals.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    let mut rng = Rng((vals.len() as u64 * 0x9E37_79B9 + amax.to_bits() as u64) | 1);
    let mut out = Vec::with_capacity(vals.len() / bl * bb);
    for _ in 0..vals.len() / bl {
        let start = out.len();
        for _ in 0..bb {
            out.push(((rng.f() + 1.0) * 127.9) as u8);
        }
        for &f in fields {
            let d = half::f16::from_f32(amax / span * (0.5 + 0.5 * rng.f().abs()));
            out[start + f..start + f + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    out
}
