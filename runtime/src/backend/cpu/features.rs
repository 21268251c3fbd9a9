//! The CPU features the kernels may use, detected once per process, in one place.
//!
//! Every kernel family (ggml block dots, dense GEMV, LUT lookups, DFloat11 decoding)
//! asks [`cpu`] instead of probing on its own, so two environment variables steer all of
//! them the same way:
//! - `SUANPAN_FORCE_SCALAR`: no SIMD anywhere (scalar references only), for tests and for
//!   telling a kernel bug from a model bug;
//! - `SUANPAN_NO_AVX512`: AVX2 kernels where an AVX-512 one exists, so a benchmark can run
//!   both on one machine.
//!
//! Both are read once, at the first call.

use std::sync::OnceLock;

/// What this process's kernels may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// x86-64 AVX2 with FMA and F16C (the baseline SIMD level of the x86 kernels).
    pub avx2: bool,
    /// x86-64 BMI2 (variable shifts in the DFloat11 decoder).
    pub bmi2: bool,
    /// x86-64 AVX-512 F + BW, on top of `avx2`.
    pub avx512bw: bool,
    /// x86-64 AVX-512 BF16 (`vdpbf16ps`), on top of `avx512bw`.
    pub avx512bf16: bool,
    /// x86-64 AVX-512 VNNI with VL (`vpdpbusd` on 256- and 512-bit vectors), on top of
    /// `avx512bw`: the int8 tiled LUT GEMM and the Q5_0/Q8_0 GEMM tiles.
    pub avx512vnni: bool,
    /// aarch64 NEON (baseline there).
    pub neon: bool,
    /// WebAssembly SIMD128: a build-time feature (`-C target-feature=+simd128`), since a
    /// module using it does not load where it is missing.
    pub simd128: bool,
    /// `SUANPAN_FORCE_SCALAR` was set: every flag above is false.
    pub forced_scalar: bool,
}

impl CpuFeatures {
    fn detect() -> Self {
        let forced_scalar = std::env::var_os("SUANPAN_FORCE_SCALAR").is_some();
        if forced_scalar {
            return CpuFeatures {
                forced_scalar,
                ..Default::default()
            };
        }
        #[allow(unused_mut)]
        let mut f = CpuFeatures {
            simd128: cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
            ..Default::default()
        };
        #[cfg(target_arch = "x86_64")]
        {
            f.avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            f.bmi2 = is_x86_feature_detected!("bmi2");
            f.avx512bw = f.avx2
                && std::env::var_os("SUANPAN_NO_AVX512").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw");
            f.avx512bf16 = f.avx512bw && is_x86_feature_detected!("avx512bf16");
            f.avx512vnni = f.avx512bw
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl");
        }
        #[cfg(target_arch = "aarch64")]
        {
            f.neon = true;
        }
        f
    }
}

/// The features of this process (detected at the first call).
pub fn cpu() -> &'static CpuFeatures {
    static F: OnceLock<CpuFeatures> = OnceLock::new();
    F.get_or_init(CpuFeatures::detect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_consistent_with_the_environment() {
        let f = cpu();
        if std::env::var_os("SUANPAN_FORCE_SCALAR").is_some() {
            assert_eq!(
                *f,
                CpuFeatures {
                    forced_scalar: true,
                    ..Default::default()
                }
            );
        }
        assert!(!f.avx512bf16 || f.avx512bw);
        assert!(!f.avx512vnni || f.avx512bw);
        assert!(
            !f.avx512bw || f.avx2,
            "AVX-512 kernels need the AVX2 level too"
        );
        #[cfg(target_arch = "x86_64")]
        assert!(!f.neon);
        #[cfg(target_arch = "aarch64")]
        assert!(!f.avx2 && !f.bmi2 && !f.avx512bw && !f.avx512bf16 && !f.avx512vnni);
    }
}
