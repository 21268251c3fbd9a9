//! Results read back without blocking: a copy to a host-visible buffer recorded after the
//! work submitted so far, and a future that resolves when wgpu has mapped it.
//!
//! In the browser `map_async`'s callback runs only when control returns to the JS event
//! loop, so a forward pass there is split in two: record and submit (synchronous, see
//! [`super::forward::forward_submit`]), then await the [`Readback`]. Natively the same
//! future works under any executor (`pollster`): awaiting it first waits for the device.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::buffer::GpuBuffer;
use super::device::GpuDevice;
use crate::error::{Error, Result};

/// What the map callback reported, and who waits for it.
#[derive(Default)]
struct MapState {
    done: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waker: Option<Waker>,
}

/// A read of device memory in flight: await [`Readback::bytes`] or [`Readback::f32s`].
pub struct Readback {
    dev: Arc<GpuDevice>,
    staging: wgpu::Buffer,
    bytes: usize,
    state: Arc<Mutex<MapState>>,
}

impl std::fmt::Debug for Readback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readback")
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Resolves when the map callback has run.
struct Mapped(Arc<Mutex<MapState>>);

impl Future for Mapped {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Ok(mut st) = self.0.lock() else {
            return Poll::Ready(Err(Error::Internal("read-back state poisoned".into())));
        };
        match st.done.take() {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(e)) => {
                Poll::Ready(Err(Error::Backend(format!("mapping a result buffer: {e}"))))
            }
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl GpuDevice {
    /// Copy `bytes` bytes at byte `offset` of `b` to the host after the work submitted so
    /// far, without waiting: the copy is submitted and the mapping requested; the result
    /// is the returned [`Readback`]'s to await. Offset and size are multiples of 4.
    pub fn start_read(
        self: &Arc<Self>,
        b: &GpuBuffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Readback> {
        if !(offset | bytes).is_multiple_of(4) || bytes == 0 || offset + bytes > b.bytes() {
            return Err(Error::Internal(format!(
                "GPU read of {bytes} bytes at {offset} from a {}-byte buffer",
                b.bytes()
            )));
        }
        self.check()?;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("async readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("async readback"),
            });
        enc.copy_buffer_to_buffer(&b.buf, offset, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let state = Arc::new(Mutex::new(MapState::default()));
        let cb = state.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            if let Ok(mut st) = cb.lock() {
                st.done = Some(r);
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            }
        });
        Ok(Readback {
            dev: self.clone(),
            staging,
            bytes: bytes as usize,
            state,
        })
    }
}

impl Readback {
    /// Bytes to come.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// True for an empty read (never: [`GpuDevice::start_read`] refuses those).
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The bytes, once the GPU has produced them and they are mapped; errors wgpu
    /// reported meanwhile (validation, lost device, a kernel that did not compile in the
    /// browser) come back as [`Error::Backend`].
    pub async fn bytes(self) -> Result<Vec<u8>> {
        // Natively mapping happens inside a poll: wait for the device (which runs the
        // callback). The browser maps by itself once the event loop turns.
        #[cfg(not(target_arch = "wasm32"))]
        self.dev.wait()?;
        Mapped(self.state.clone()).await?;
        self.dev.check_async().await?;
        let out = {
            let view = self
                .staging
                .get_mapped_range(..)
                .map_err(|e| Error::Backend(format!("reading a result buffer: {e}")))?;
            view[..self.bytes].to_vec()
        };
        self.staging.unmap();
        Ok(out)
    }

    /// The bytes as little-endian f32 values.
    pub async fn f32s(self) -> Result<Vec<f32>> {
        let b = self.bytes().await?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
