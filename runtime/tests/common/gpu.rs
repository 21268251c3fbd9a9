//! The GPU device shared by the GPU tests.

use std::sync::{Arc, OnceLock};

use suanpan::backend::gpu::{GpuDevice, GpuOptions};

/// The adapter wgpu finds (lavapipe in CI), opened once per test binary. No adapter is a
/// test failure with instructions, never a skip.
pub fn dev() -> Arc<GpuDevice> {
    static D: OnceLock<Arc<GpuDevice>> = OnceLock::new();
    D.get_or_init(|| {
        GpuDevice::new(&GpuOptions::default()).unwrap_or_else(|e| {
            panic!("{e}\nGPU tests need an adapter: apt-get install mesa-vulkan-drivers libvulkan1")
        })
    })
    .clone()
}
