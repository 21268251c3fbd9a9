//! GPU buffers: weights uploaded once, scratch buffers reused through a pool, and
//! read-back of results.
//!
//! Every storage buffer is bound as an array of 32-bit words, so sizes are rounded up to a
//! multiple of 4 bytes (padding is zero).

use super::device::GpuDevice;
use crate::error::{Error, Result};

/// A storage buffer with an id (for bind-group caching) and its size in bytes.
#[derive(Debug)]
pub struct GpuBuffer {
    pub(crate) buf: wgpu::Buffer,
    pub(crate) id: u64,
    bytes: u64,
}

impl GpuBuffer {
    /// Size in bytes (a multiple of 4).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

fn round4(n: u64) -> u64 {
    n.div_ceil(4).max(1) * 4
}

impl GpuDevice {
    /// A zeroed storage buffer of at least `bytes` bytes; `what` names it in errors.
    pub fn buffer(&self, what: &str, bytes: u64) -> Result<GpuBuffer> {
        let bytes = round4(bytes);
        self.check_binding(what, bytes)?;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        Ok(GpuBuffer {
            buf,
            id: self.next_id(),
            bytes,
        })
    }

    /// A storage buffer holding `data` (padded with zeros to a multiple of 4 bytes).
    pub fn upload(&self, what: &str, data: &[u8]) -> Result<GpuBuffer> {
        let b = self.buffer(what, data.len() as u64)?;
        self.write(&b, 0, data)?;
        Ok(b)
    }

    /// Write `data` at byte `offset` of `b` (before any work submitted later).
    pub fn write(&self, b: &GpuBuffer, offset: u64, data: &[u8]) -> Result<()> {
        if offset + round4(data.len() as u64) > b.bytes || !offset.is_multiple_of(4) {
            return Err(Error::Internal(format!(
                "GPU write of {} bytes at {offset} into a {}-byte buffer",
                data.len(),
                b.bytes
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        if data.len().is_multiple_of(4) {
            self.queue.write_buffer(&b.buf, offset, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(round4(data.len() as u64) as usize, 0);
            self.queue.write_buffer(&b.buf, offset, &padded);
        }
        Ok(())
    }

    /// Read `bytes` bytes at byte `offset` of `b` back to the host (waits for the GPU).
    /// Copy `size` bytes from `src` at `src_off` to `dst` at `dst_off` on the device and
    /// wait (two different buffers; offsets and size multiples of 4).
    pub fn copy(
        &self,
        src: &GpuBuffer,
        src_off: u64,
        dst: &GpuBuffer,
        dst_off: u64,
        size: u64,
    ) -> Result<()> {
        if src.id == dst.id
            || src_off + size > src.bytes
            || dst_off + size > dst.bytes
            || !(src_off | dst_off | size).is_multiple_of(4)
        {
            return Err(Error::Internal(format!(
                "GPU copy of {size} bytes from {src_off} to {dst_off}"
            )));
        }
        if size == 0 {
            return Ok(());
        }
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("copy"),
            });
        enc.copy_buffer_to_buffer(&src.buf, src_off, &dst.buf, dst_off, size);
        self.queue.submit([enc.finish()]);
        self.wait()
    }

    pub fn read(&self, b: &GpuBuffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        self.read_many(&[(b, offset, bytes)])
    }

    /// Read several ranges `(buffer, byte offset, bytes)` back to the host in one copy and
    /// one wait, concatenated in order (each range padded to a multiple of 4 bytes).
    ///
    /// In the browser this is an error: it maps only once control returns to its event
    /// loop, so a blocking read could never finish (await a [`super::Readback`] there).
    pub fn read_many(&self, parts: &[(&GpuBuffer, u64, u64)]) -> Result<Vec<u8>> {
        #[cfg(target_arch = "wasm32")]
        {
            let total: u64 = parts.iter().map(|p| p.2).sum();
            Err(Error::Backend(format!(
                "a blocking GPU read-back of {total} bytes is not possible in the browser \
                 (a sliding or quantized KV cache needs one: use the default KV cache there)"
            )))
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.read_many_blocking(parts)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn read_many_blocking(&self, parts: &[(&GpuBuffer, u64, u64)]) -> Result<Vec<u8>> {
        let mut total = 0u64;
        for &(b, offset, bytes) in parts {
            let n = round4(bytes);
            if !offset.is_multiple_of(4) || offset + n > b.bytes {
                return Err(Error::Internal(format!(
                    "GPU read of {bytes} bytes at {offset} from a {}-byte buffer",
                    b.bytes
                )));
            }
            total += n;
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let mut at = 0u64;
        for &(b, offset, bytes) in parts {
            let n = round4(bytes);
            enc.copy_buffer_to_buffer(&b.buf, offset, &staging, at, n);
            at += n;
        }
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        // With several threads on one device, another thread's poll may be the one running
        // this callback: our poll can return first. Keep polling until it has run.
        let t0 = std::time::Instant::now();
        let mapped = loop {
            match rx.try_recv() {
                Ok(r) => break Some(r),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break None,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            if t0.elapsed() > std::time::Duration::from_secs(60) {
                break None;
            }
            self.wait()?;
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Backend(format!("mapping a result buffer: {e}"))),
            None => return Err(Error::Backend("a result buffer was never mapped".into())),
        }
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Backend(format!("reading a result buffer: {e}")))?;
            let mut out = Vec::with_capacity(total as usize);
            let mut at = 0usize;
            for &(_, _, bytes) in parts {
                out.extend_from_slice(&view[at..at + bytes as usize]);
                at += round4(bytes) as usize;
            }
            out
        };
        staging.unmap();
        Ok(out)
    }

    /// Read `n` f32 values starting at element `at`.
    pub fn read_f32(&self, b: &GpuBuffer, at: usize, n: usize) -> Result<Vec<f32>> {
        let bytes = self.read(b, 4 * at as u64, 4 * n as u64)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Read `n` u32 values starting at element `at`.
    pub fn read_u32(&self, b: &GpuBuffer, at: usize, n: usize) -> Result<Vec<u32>> {
        let bytes = self.read(b, 4 * at as u64, 4 * n as u64)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
