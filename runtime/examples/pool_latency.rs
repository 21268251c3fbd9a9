//! How long one empty pass over the thread pool takes (decode pays ~150 per token).
fn main() {
    let pool = suanpan::backend::cpu::Pool::new(2).unwrap();
    for _ in 0..1000 {
        pool.run(|_, _| {});
    }
    let n = 20000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        pool.run(|_, _| {});
    }
    println!(
        "{:.2} µs per pass",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
