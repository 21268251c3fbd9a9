//! Recording a sequence of kernel dispatches into one submission.
//!
//! A dispatch is a [`Kernel`] value (a struct per WGSL entry point, declared once in
//! [`super::kernels`] with its buffers' binding numbers and its parameters' `Params`
//! fields) and a workgroup grid: [`Recorder::run`]. There is no positional binding list
//! outside this module.
//!
//! Each dispatch gets a 256-byte slot of a uniform buffer for its parameters (the WGSL
//! `Params` struct of `common.wgsl`: 12 `u32` and 4 `f32`). Slots are numbered in dispatch
//! order, and a [`Frame`] caches the bind group of each slot: a forward pass issues the same
//! dispatches with the same buffers every time, so after the first token no bind group is
//! created; only the parameter bytes are written (one `write_buffer` per submission).
//!
//! With profiling on (and `TIMESTAMP_QUERY` available), every dispatch runs in its own
//! compute pass with timestamps at its start and end; [`Frame::timings`] accumulates the
//! GPU time per kernel name.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use super::kernels::{Kernel, Params, PARAMS_BYTES};
use super::pipeline::{PipeKey, Pipeline};
use crate::error::{Error, Result};

/// Bytes per parameter slot (the uniform offset alignment WebGPU guarantees).
pub const SLOT: u64 = 256;
/// Per-stream state reused across submissions: the parameter buffer, cached bind groups,
/// and (when profiling) the timestamp queries and accumulated kernel times.
pub struct Frame {
    params: wgpu::Buffer,
    slots: usize,
    binds: Vec<Option<(Vec<u64>, wgpu::BindGroup)>>,
    profile: Option<Profile>,
}

struct Profile {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    period_ns: f64,
    /// Kernel name → (dispatches, total ns).
    totals: BTreeMap<&'static str, (u64, f64)>,
}

impl Frame {
    /// A frame for up to `slots` dispatches per submission; `profile` asks for timestamps
    /// (ignored when the adapter has none).
    pub fn new(dev: &GpuDevice, slots: usize, profile: bool) -> Result<Frame> {
        let params = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: SLOT * slots.max(1) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let profile = if profile && dev.caps().timestamps {
            let count = (2 * slots.max(1)) as u32;
            if count > wgpu::QUERY_SET_MAX_QUERIES {
                return Err(Error::Backend(format!(
                    "{slots} timed dispatches exceed the {} timestamp queries of a set",
                    wgpu::QUERY_SET_MAX_QUERIES / 2
                )));
            }
            Some(Profile {
                queries: dev.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kernel timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                }),
                resolve: dev.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps"),
                    size: 8 * count as u64,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                period_ns: dev.queue.get_timestamp_period() as f64,
                totals: BTreeMap::new(),
            })
        } else {
            None
        };
        Ok(Frame {
            params,
            slots: slots.max(1),
            binds: (0..slots.max(1)).map(|_| None).collect(),
            profile,
        })
    }

    /// Whether kernel timestamps are being collected.
    pub fn profiling(&self) -> bool {
        self.profile.is_some()
    }

    /// GPU time per kernel: (name, dispatches, total milliseconds), slowest first.
    pub fn timings(&self) -> Vec<(&'static str, u64, f64)> {
        let mut v: Vec<_> = self
            .profile
            .iter()
            .flat_map(|p| p.totals.iter().map(|(k, (n, ns))| (*k, *n, ns / 1e6)))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// Forget accumulated timings.
    pub fn reset_timings(&mut self) {
        if let Some(p) = &mut self.profile {
            p.totals.clear();
        }
    }
}

struct Item {
    pipe: Arc<Pipeline>,
    slot: usize,
    groups: [u32; 3],
    name: &'static str,
}

/// Dispatches being recorded for one submission (or a few, see [`Recorder::flush`]).
pub struct Recorder<'a> {
    dev: &'a GpuDevice,
    frame: &'a mut Frame,
    /// Parameter bytes of the pending dispatches, from slot `base` on.
    params: Vec<u8>,
    /// Dispatches recorded and not submitted yet; slot of `items[i]` is `base + i`.
    items: Vec<Item>,
    /// Slots used by earlier flushes of this recording.
    base: usize,
}

impl<'a> Recorder<'a> {
    pub fn new(dev: &'a GpuDevice, frame: &'a mut Frame) -> Self {
        Recorder {
            dev,
            frame,
            params: Vec::new(),
            items: Vec::new(),
            base: 0,
        }
    }

    pub fn device(&self) -> &GpuDevice {
        self.dev
    }

    /// Queue kernel `k` over `groups` workgroups: its parameters go to a fresh slot (binding
    /// 0) and its buffers to the bindings its declaration names ([`super::kernels`]).
    pub fn run<K: Kernel>(&mut self, k: &K, groups: [u32; 3]) -> Result<()> {
        self.dispatch(k.key(), k.params(), &k.buffers(), groups)
    }

    /// Queue pipeline `key` with parameters `p` and buffers bound as `(binding, buffer)`.
    /// Private: every caller goes through a declared [`Kernel`] ([`Self::run`]).
    fn dispatch(
        &mut self,
        key: PipeKey,
        p: Params,
        bufs: &[(u32, &GpuBuffer)],
        groups: [u32; 3],
    ) -> Result<()> {
        let slot = self.base + self.items.len();
        if slot >= self.frame.slots {
            return Err(Error::Internal(format!(
                "more than {} dispatches in one GPU submission",
                self.frame.slots
            )));
        }
        let maxg = self.dev.caps().max_groups_per_dim;
        if groups.iter().any(|&g| g > maxg) {
            return Err(Error::Backend(format!(
                "kernel {} needs {groups:?} workgroups; the adapter allows {maxg} per dimension",
                key.entry
            )));
        }
        let pipe = self.dev.pipelines.get(self.dev, key)?;
        self.params.resize(self.items.len() * SLOT as usize, 0);
        self.params.extend_from_slice(&p.bytes());
        let mut ids = Vec::with_capacity(bufs.len() + 1);
        ids.push(pipe.id);
        ids.extend(bufs.iter().map(|(i, b)| (b.id << 4) | *i as u64));
        let cached = matches!(&self.frame.binds[slot], Some((k, _)) if *k == ids);
        if !cached {
            let layout = pipe.pipeline.get_bind_group_layout(0);
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.frame.params,
                    offset: slot as u64 * SLOT,
                    size: wgpu::BufferSize::new(PARAMS_BYTES as u64),
                }),
            }];
            for (i, b) in bufs {
                entries.push(wgpu::BindGroupEntry {
                    binding: *i,
                    resource: b.buf.as_entire_binding(),
                });
            }
            let bg = self
                .dev
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(key.entry),
                    layout: &layout,
                    entries: &entries,
                });
            self.frame.binds[slot] = Some((ids, bg));
        }
        self.items.push(Item {
            pipe,
            slot,
            groups,
            name: key.entry,
        });
        Ok(())
    }

    /// Dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.base + self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Submit everything and wait for the GPU. Errors reported by wgpu (validation,
    /// out of memory, device lost) come back as [`Error::Backend`].
    pub fn submit(mut self) -> Result<()> {
        self.flush()
    }

    /// Submit the dispatches recorded so far and wait for them; recording goes on after
    /// them (in fresh parameter slots, so cached bind groups stay valid). For the rare
    /// pass that needs a result on the host half-way (pages quantized during a batch).
    pub fn flush(&mut self) -> Result<()> {
        let base = self.base;
        let params = std::mem::take(&mut self.params);
        let items = std::mem::take(&mut self.items);
        self.base += items.len();
        let (dev, frame) = (self.dev, &mut *self.frame);
        dev.check()?;
        if items.is_empty() {
            return Ok(());
        }
        dev.queue
            .write_buffer(&frame.params, base as u64 * SLOT, &params);
        let mut enc = dev
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("suanpan"),
            });
        match &frame.profile {
            None => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                });
                for it in &items {
                    let Some((_, bg)) = &frame.binds[it.slot] else {
                        return Err(Error::Internal("GPU bind group missing".into()));
                    };
                    pass.set_pipeline(&it.pipe.pipeline);
                    pass.set_bind_group(0, bg, &[]);
                    pass.dispatch_workgroups(it.groups[0], it.groups[1], it.groups[2]);
                }
            }
            Some(prof) => {
                for (i, it) in items.iter().enumerate() {
                    let Some((_, bg)) = &frame.binds[it.slot] else {
                        return Err(Error::Internal("GPU bind group missing".into()));
                    };
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(it.name),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &prof.queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    pass.set_pipeline(&it.pipe.pipeline);
                    pass.set_bind_group(0, bg, &[]);
                    pass.dispatch_workgroups(it.groups[0], it.groups[1], it.groups[2]);
                }
                enc.resolve_query_set(&prof.queries, 0..2 * items.len() as u32, &prof.resolve, 0);
            }
        }
        let stamps = match &frame.profile {
            Some(prof) => {
                let n = 16 * items.len() as u64;
                let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps readback"),
                    size: n,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                enc.copy_buffer_to_buffer(&prof.resolve, 0, &staging, 0, n);
                Some(staging)
            }
            None => None,
        };
        dev.queue.submit([enc.finish()]);
        match stamps {
            None => dev.wait(),
            Some(staging) => {
                staging.map_async(wgpu::MapMode::Read, .., |_| {});
                dev.wait()?;
                let ticks: Vec<u64> = {
                    let view = staging
                        .get_mapped_range(..)
                        .map_err(|e| Error::Backend(format!("reading timestamps: {e}")))?;
                    view.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect()
                };
                staging.unmap();
                if let Some(prof) = &mut frame.profile {
                    for (i, it) in items.iter().enumerate() {
                        let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64;
                        let e = prof.totals.entry(it.name).or_insert((0, 0.0));
                        e.0 += 1;
                        e.1 += dt * prof.period_ns;
                    }
                }
                Ok(())
            }
        }
    }
}
