//! Deterministic random numbers for the unit tests (no dependency).

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Approximately standard normal (sum of 4 uniforms, rescaled).
    pub fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 1.732
    }
    /// Heavy-tailed: mostly normal, 1 in 16 values an outlier up to ±12.
    pub fn heavy(&mut self) -> f32 {
        let v = self.normal();
        if self.next().is_multiple_of(16) {
            v * 6.0
        } else {
            v
        }
    }
}
