//! One wgpu adapter, device and queue, the features found on it, and the error plumbing
//! that turns wgpu's callbacks (validation errors, out of memory, device loss) into
//! [`Error::Backend`] results instead of panics.
//!
//! wgpu reports most failures asynchronously: a validation error goes to the device's
//! "uncaptured error" handler, a lost device to its lost callback. Both are recorded here
//! and [`GpuDevice::check`] turns them into an error at the next synchronization point
//! (every [`GpuDevice::wait`]). Once lost, a device stays unusable: every later call fails
//! with the recorded reason.
//!
//! In the browser (wasm32, WebGPU) nothing may block: wgpu's futures resolve only when
//! control returns to the JS event loop. The device opens with [`GpuDevice::open_async`],
//! error scopes of compiled pipelines are kept and awaited by [`GpuDevice::check_async`],
//! and results come back through [`super::buffer::Readback`]. Natively the same futures
//! are driven by `pollster` behind the synchronous API ([`GpuDevice::new`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// How to pick an adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Use only an adapter whose name contains this text (case-insensitive). Also read
    /// from the environment variable `SUANPAN_GPU_ADAPTER` when `None`.
    pub adapter: Option<String>,
    /// Refuse CPU (software) adapters such as Mesa's lavapipe. `auto` backend selection
    /// sets this: a software rasterizer is slower than the CPU backend.
    pub hardware_only: bool,
    /// Treat storage bindings larger than this many bytes as impossible, although the
    /// adapter allows more: checks on a desktop that a model fits a device with a smaller
    /// limit (phones often bind 128 MiB), and lets tests reach the refusal path cheaply.
    pub max_binding: Option<u64>,
}

/// Optional features and the limits the kernels care about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    /// `SHADER_F16`: f16 arithmetic in shaders. No kernel requires it (f16 data is read
    /// with the core `unpack2x16float`), so its absence costs nothing today.
    pub shader_f16: bool,
    /// `SUBGROUP`: subgroup operations. Reductions use workgroup memory, which works on
    /// every adapter; a subgroup variant is a later optimization.
    pub subgroups: bool,
    /// `TIMESTAMP_QUERY`: per-pass GPU timestamps for kernel timings in `bench`.
    pub timestamps: bool,
    /// Largest storage buffer binding in bytes (one weight matrix must fit).
    pub max_binding: u64,
    /// Largest buffer in bytes.
    pub max_buffer: u64,
    /// Workgroup memory in bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    pub max_invocations: u32,
    /// Workgroups per dispatch dimension.
    pub max_groups_per_dim: u32,
}

/// An open GPU: device, queue, what it can do, and its error state.
pub struct GpuDevice {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    caps: Caps,
    /// Validation / out-of-memory errors reported by wgpu since the last check.
    errors: Arc<Mutex<Vec<String>>>,
    /// Why the device was lost, once it was.
    lost: Arc<Mutex<Option<String>>>,
    next_id: AtomicU64,
    pub(crate) pipelines: super::pipeline::PipelineCache,
    /// Error scopes of pipelines compiled in the browser, not awaited yet (kernel, scope).
    #[cfg(target_arch = "wasm32")]
    scopes: Mutex<Vec<(String, PendingScope)>>,
}

/// A popped error scope whose answer has not come back yet (browser only).
#[cfg(target_arch = "wasm32")]
pub(crate) type PendingScope =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>> + Send>>;

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDevice")
            .field("adapter", &self.info.name)
            .field("caps", &self.caps)
            .finish()
    }
}

fn backend(msg: impl Into<String>) -> Error {
    Error::Backend(msg.into())
}

fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

/// The adapter's name; the browser may give none (SwiftShader's WebGPU adapter does not).
fn name(info: &wgpu::AdapterInfo) -> &str {
    if info.name.is_empty() {
        "(unnamed)"
    } else {
        &info.name
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, driver {} {})",
        name(info),
        info.backend,
        info.device_type,
        info.driver,
        info.driver_info
    )
}

impl GpuDevice {
    /// Open the best adapter that matches `opts`. No adapter is an [`Error::Backend`]
    /// that says which adapters were seen and why none was taken. Blocks: in the browser,
    /// where nothing may block, it is an error; use [`Self::open_async`] there.
    pub fn new(opts: &GpuOptions) -> Result<Arc<GpuDevice>> {
        #[cfg(not(target_arch = "wasm32"))]
        return pollster::block_on(Self::open_async(opts));
        #[cfg(target_arch = "wasm32")]
        {
            let _ = opts;
            Err(backend(
                "in the browser the GPU opens asynchronously: GpuDevice::open_async, then \
                 Model::from_file_with_device",
            ))
        }
    }

    /// [`Self::new`] as a future: what the browser awaits (WebGPU's `requestAdapter` and
    /// `requestDevice` are promises).
    pub async fn open_async(opts: &GpuOptions) -> Result<Arc<GpuDevice>> {
        let want = opts
            .adapter
            .clone()
            .or_else(|| std::env::var("SUANPAN_GPU_ADAPTER").ok())
            .map(|s| s.to_lowercase());
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        if adapters.is_empty() {
            return Err(backend(if cfg!(target_arch = "wasm32") {
                "no WebGPU adapter: this browser has no navigator.gpu, or it gave no adapter \
                 (WebGPU disabled or unsupported here)"
            } else {
                "no GPU adapter found (on Linux without a GPU install Mesa's software Vulkan: \
                 apt-get install mesa-vulkan-drivers libvulkan1)"
            }));
        }
        let seen: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
        adapters.retain(|a| {
            let info = a.get_info();
            let name_ok = want
                .as_ref()
                .is_none_or(|w| info.name.to_lowercase().contains(w));
            let kind_ok = !(opts.hardware_only && is_software(&info));
            name_ok && kind_ok
        });
        // Discrete before integrated before virtual before software.
        adapters.sort_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        });
        let Some(adapter) = adapters.into_iter().next() else {
            return Err(backend(format!(
                "no usable GPU adapter{}{}; adapters present: {}",
                want.map(|w| format!(" named like {w:?}"))
                    .unwrap_or_default(),
                if opts.hardware_only {
                    " (software adapters refused)"
                } else {
                    ""
                },
                seen.join("; ")
            )));
        };
        let info = adapter.get_info();
        let af = adapter.features();
        let wanted =
            wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let features = af & wanted;
        let limits = adapter.limits();
        let caps = Caps {
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_binding: opts
                .max_binding
                .map_or(limits.max_storage_buffer_binding_size, |m| {
                    m.min(limits.max_storage_buffer_binding_size)
                }),
            max_buffer: limits.max_buffer_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            max_groups_per_dim: limits.max_compute_workgroups_per_dimension,
        };
        // The kernels use workgroups of 64 invocations and at most 8 KiB of workgroup
        // memory; WebGPU's minimums (256 and 16 KiB) guarantee both, but say so clearly.
        if caps.max_invocations < 64 || caps.max_workgroup_storage < 8192 {
            return Err(backend(format!(
                "adapter {} allows {} invocations and {} bytes of workgroup memory; \
                 suanpan's kernels need 64 and 8192",
                info.name, caps.max_invocations, caps.max_workgroup_storage
            )));
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("suanpan"),
                required_features: features,
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| backend(format!("opening {}: {e}", info.name)))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let lost = Arc::new(Mutex::new(None));
        {
            let errors = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut v) = errors.lock() {
                    v.push(e.to_string());
                }
            }));
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                if let Ok(mut l) = lost.lock() {
                    *l = Some(format!("{reason:?}: {msg}"));
                }
            });
        }
        Ok(Arc::new(GpuDevice {
            device,
            queue,
            info,
            caps,
            errors,
            lost,
            next_id: AtomicU64::new(1),
            pipelines: super::pipeline::PipelineCache::default(),
            #[cfg(target_arch = "wasm32")]
            scopes: Mutex::new(Vec::new()),
        }))
    }

    /// The adapter's name, backend and driver, for stats and `info`.
    pub fn adapter_name(&self) -> String {
        describe(&self.info)
    }

    /// True for a CPU (software) adapter such as lavapipe.
    pub fn is_software(&self) -> bool {
        is_software(&self.info)
    }

    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// An error if the device was lost or wgpu reported an error since the last check.
    pub fn check(&self) -> Result<()> {
        if let Some(why) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(backend(format!("the GPU device was lost ({why})")));
        }
        let errs: Vec<String> = match self.errors.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => vec!["error log poisoned".into()],
        };
        if !errs.is_empty() {
            return Err(backend(errs.join("; ")));
        }
        Ok(())
    }

    /// Keep the error scope of kernel `what`, popped but not answered (browser only):
    /// [`Self::check_async`] awaits it.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn defer_scope(&self, what: String, scope: PendingScope) {
        if let Ok(mut v) = self.scopes.lock() {
            v.push((what, scope));
        }
    }

    /// [`Self::check`] after the answers of every pending error scope (in the browser,
    /// those of the pipelines compiled since the last call; natively none are pending).
    /// A pipeline that failed to compile is an [`Error::Backend`] naming its kernel.
    pub async fn check_async(&self) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            let pending = match self.scopes.lock() {
                Ok(mut v) => std::mem::take(&mut *v),
                Err(_) => Vec::new(),
            };
            let mut errs = Vec::new();
            for (what, scope) in pending {
                if let Some(e) = scope.await {
                    errs.push(format!("compiling kernel {what}: {e}"));
                }
            }
            if !errs.is_empty() {
                return Err(backend(errs.join("; ")));
            }
        }
        self.check()
    }

    /// Block until all submitted work is done, then [`Self::check`]. In the browser the
    /// device runs by itself and this only checks (results come back asynchronously).
    pub fn wait(&self) -> Result<()> {
        self.check()?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| backend(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// Simulate a lost device (tests of the error path).
    #[doc(hidden)]
    pub fn destroy_for_test(&self) {
        self.device.destroy();
    }

    /// Check that a buffer of `bytes` may be created and bound, with a message naming `what`.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        let lim = self.caps.max_binding.min(self.caps.max_buffer);
        if bytes > lim {
            return Err(backend(format!(
                "{what} needs a {bytes}-byte buffer but adapter {} binds at most {lim} bytes; \
                 split the tensor or use the CPU backend",
                name(&self.info)
            )));
        }
        Ok(())
    }
}
