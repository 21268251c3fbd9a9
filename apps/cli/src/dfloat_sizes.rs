//! `info` / `estimate`: the lossless BF16 forms' sizes (DFloat11 on disk, df12 as run).

use suanpan::Model;

/// DFloat11 / df12 matrices: their size on disk and as run (DF11 is transcoded to df12 at
/// load on the CPU), for `info` and `estimate`.
pub fn print(model: &Model) {
    let s = model.dfloat_sizes();
    if s.df11_file_bytes == 0 && s.df12_file_bytes == 0 {
        return;
    }
    println!(
        "lossless BF16: {:.1} M values; DF11 {:.1} MB + df12 {:.1} MB in the file, df12 {:.1} MB in memory (BF16 would be {:.1} MB)",
        s.values as f64 / 1e6,
        s.df11_file_bytes as f64 / 1e6,
        s.df12_file_bytes as f64 / 1e6,
        s.df12_memory_bytes as f64 / 1e6,
        2.0 * s.values as f64 / 1e6
    );
    if let Some(t) = model.transcode_stats() {
        println!(
            "               DF11 → df12 at load: {:.2} s ({:.2} GB/s of BF16)",
            t.seconds,
            t.gb_per_s()
        );
    }
}
