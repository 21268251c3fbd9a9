//! Write a random-weight decoder GGUF of a chosen shape, for speed comparisons on model
//! sizes we have no real weights for (never for quality).
//!
//! ```text
//! cargo run --release -p suanpan --example synth_model -- OUT.gguf [LAYERS EMBD FF HEADS KV_HEADS TYPE]
//! # the 1B-class shape of issue 3 (F16, ~2.1 GB):
//! cargo run --release -p suanpan --example synth_model -- /tmp/synth1b.f16.gguf 16 2048 8192 32 8 f16
//! ```

#[path = "../tests/common/synth.rs"]
#[allow(dead_code)]
mod synth;

use suanpan::format::GgmlType;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .ok_or("usage: synth_model OUT.gguf [LAYERS EMBD FF HEADS KV_HEADS TYPE]")?;
    let num = |i: usize, d: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args.get(i).map(|s| s.parse()).transpose()?.unwrap_or(d))
    };
    let ty = match args.get(6).map(String::as_str).unwrap_or("f16") {
        "f16" => GgmlType::F16,
        "f32" => GgmlType::F32,
        "bf16" => GgmlType::BF16,
        "q8_0" => GgmlType::Q8_0,
        "q4_1" => GgmlType::Q4_1,
        t => return Err(format!("type {t}: f16, f32, bf16, q8_0 or q4_1").into()),
    };
    let s = synth::Synth {
        arch: "llama",
        n_layer: num(1, 16)?,
        n_embd: num(2, 2048)?,
        n_ff: num(3, 8192)?,
        n_head: num(4, 32)?,
        n_kv_head: num(5, 8)?,
        ty,
        seed: 7,
        meta: Vec::new(),
    };
    std::fs::write(out, s.gguf())?;
    eprintln!("wrote {out}: {s:?}");
    Ok(())
}
