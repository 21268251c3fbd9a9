//! Drawing egui's triangles with wgpu onto the window, and reading a frame back.
//!
//! The surface uses an 8-bit non-sRGB format (what egui's shader expects). A capture
//! renders the same frame a second time into an offscreen texture of the surface's size
//! and format (`RENDER_ATTACHMENT | COPY_SRC`, which every adapter supports, unlike
//! copying out of a swapchain image), copies it into a mappable buffer and returns RGBA.

use std::sync::{Arc, Mutex};

use winit::window::Window;

/// A frame read back from the GPU: `width × height` RGBA8 pixels, rows top to bottom,
/// opaque (the window is).
pub struct Capture {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

/// The wgpu objects the window draws with.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    renderer: egui_wgpu::Renderer,
    /// "name (backend, device type)" of the adapter, for the status line.
    pub adapter: String,
    /// The adapter rasterizes on the CPU (lavapipe, WARP): frames compete with inference.
    pub software: bool,
    /// wgpu validation errors, shown in the window instead of wgpu's default panic.
    pub errors: Arc<Mutex<Vec<String>>>,
}

impl Gpu {
    /// Pick an adapter that can present to `window` and set the surface up.
    pub fn new(
        window: Arc<Window>,
        display: winit::event_loop::OwnedDisplayHandle,
    ) -> Result<Gpu, String> {
        let size = window.inner_size();
        let instance = wgpu::Instance::new(
            wgpu::InstanceDescriptor::new_with_display_handle(Box::new(display)).with_env(),
        );
        let surface = instance
            .create_surface(window)
            .map_err(|e| format!("cannot create a wgpu surface for the window: {e}"))?;
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::LowPower,
            compatible_surface: Some(&surface),
            force_fallback_adapter: false,
            apply_limit_buckets: false,
        }))
        .map_err(|e| format!("no graphics adapter can draw this window: {e}"))?;
        let info = adapter.get_info();
        let adapter_name = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("suanpan-desktop"),
            required_limits: wgpu::Limits::downlevel_defaults().using_resolution(adapter.limits()),
            ..Default::default()
        }))
        .map_err(|e| format!("cannot open the graphics device {adapter_name}: {e}"))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                if v.len() < 16 {
                    v.push(format!("graphics error: {e}"));
                }
            }
        }));
        let caps = surface.get_capabilities(&adapter);
        let format = caps
            .formats
            .iter()
            .copied()
            .find(|f| {
                matches!(
                    f,
                    wgpu::TextureFormat::Rgba8Unorm | wgpu::TextureFormat::Bgra8Unorm
                )
            })
            .or_else(|| caps.formats.first().copied())
            .ok_or_else(|| format!("the adapter {adapter_name} cannot present to this window"))?;
        let mut config = surface
            .get_default_config(&adapter, size.width.max(1), size.height.max(1))
            .ok_or_else(|| format!("the adapter {adapter_name} cannot present to this window"))?;
        config.usage = wgpu::TextureUsages::RENDER_ATTACHMENT;
        config.format = format;
        config.present_mode = wgpu::PresentMode::AutoVsync;
        config.desired_maximum_frame_latency = 2;
        config.view_formats = vec![];
        surface.configure(&device, &config);
        let renderer = egui_wgpu::Renderer::new(
            &device,
            format,
            egui_wgpu::RendererOptions {
                dithering: false,
                ..Default::default()
            },
        );
        Ok(Gpu {
            device,
            queue,
            surface,
            config,
            renderer,
            adapter: adapter_name,
            software: info.device_type == wgpu::DeviceType::Cpu,
            errors,
        })
    }

    /// Follow the window's size.
    pub fn resize(&mut self, width: u32, height: u32) {
        if width == 0 || height == 0 {
            return;
        }
        self.config.width = width;
        self.config.height = height;
        self.surface.configure(&self.device, &self.config);
    }

    /// Size of the surface in pixels.
    pub fn size(&self) -> [u32; 2] {
        [self.config.width, self.config.height]
    }

    /// Apply (and clear) the texture changes, draw `jobs` to the window and present. With `capture`, the same
    /// frame is also drawn offscreen and read back. A frame the surface cannot give
    /// (minimised, resized meanwhile) is skipped; the capture is still made.
    pub fn render(
        &mut self,
        jobs: &[egui::ClippedPrimitive],
        textures: &mut egui::TexturesDelta,
        pixels_per_point: f32,
        clear: egui::Color32,
        capture: bool,
    ) -> Result<Option<Capture>, String> {
        for (id, deltas) in &textures.set {
            for delta in deltas {
                self.renderer
                    .update_texture(&self.device, &self.queue, *id, delta);
            }
        }
        let screen = egui_wgpu::ScreenDescriptor {
            size_in_pixels: self.size(),
            pixels_per_point,
        };
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("egui frame"),
            });
        let user_buffers =
            self.renderer
                .update_buffers(&self.device, &self.queue, &mut encoder, jobs, &screen);
        let frame = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(f) => Some(f),
            wgpu::CurrentSurfaceTexture::Suboptimal(f) => Some(f),
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface.configure(&self.device, &self.config);
                None
            }
            _ => None,
        };
        let [r, g, b, a] = clear.to_normalized_gamma_f32();
        let clear = wgpu::Color {
            r: r as f64,
            g: g as f64,
            b: b as f64,
            a: a as f64,
        };
        if let Some(frame) = &frame {
            let view = frame
                .texture
                .create_view(&wgpu::TextureViewDescriptor::default());
            self.draw(&mut encoder, &view, clear, jobs, &screen);
        }
        let readback = if capture {
            Some(self.draw_offscreen(&mut encoder, clear, jobs, &screen))
        } else {
            None
        };
        self.queue
            .submit(user_buffers.into_iter().chain([encoder.finish()]));
        if let Some(frame) = frame {
            self.queue.present(frame);
        }
        for id in &textures.free {
            self.renderer.free_texture(id);
        }
        // Applied: egui insists a delta is handled before it is dropped.
        textures.clear();
        match readback {
            Some(rb) => self.read(rb).map(Some),
            None => Ok(None),
        }
    }

    fn draw(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        view: &wgpu::TextureView,
        clear: wgpu::Color,
        jobs: &[egui::ClippedPrimitive],
        screen: &egui_wgpu::ScreenDescriptor,
    ) {
        let pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("egui"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(clear),
                    store: wgpu::StoreOp::Store,
                },
                depth_slice: None,
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        self.renderer
            .render(&mut pass.forget_lifetime(), jobs, screen);
    }

    /// Draw into a fresh texture and queue its copy into a mappable buffer.
    fn draw_offscreen(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        clear: wgpu::Color,
        jobs: &[egui::ClippedPrimitive],
        screen: &egui_wgpu::ScreenDescriptor,
    ) -> Readback {
        let [width, height] = self.size();
        let extent = wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        };
        let texture = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("capture"),
            size: extent,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: self.config.format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        self.draw(encoder, &view, clear, jobs, screen);
        let padded_row = (width * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("capture readback"),
            size: padded_row as u64 * height as u64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        encoder.copy_texture_to_buffer(
            texture.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded_row),
                    rows_per_image: None,
                },
            },
            extent,
        );
        Readback {
            buffer,
            width,
            height,
            padded_row,
        }
    }

    /// Wait for the copy and unpack the rows into RGBA.
    fn read(&self, rb: Readback) -> Result<Capture, String> {
        let slice = rb.buffer.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("waiting for the frame capture: {e}"))?;
        rx.recv()
            .map_err(|_| "the frame capture was dropped".to_string())?
            .map_err(|e| format!("mapping the frame capture: {e}"))?;
        let bgra = matches!(
            self.config.format,
            wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
        );
        let mut rgba = Vec::with_capacity((rb.width * rb.height * 4) as usize);
        {
            let data = slice
                .get_mapped_range()
                .map_err(|e| format!("reading the frame capture: {e}"))?;
            for row in data.chunks(rb.padded_row as usize) {
                for px in row[..(rb.width * 4) as usize].chunks_exact(4) {
                    if bgra {
                        rgba.extend_from_slice(&[px[2], px[1], px[0], 255]);
                    } else {
                        rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
                    }
                }
            }
        }
        rb.buffer.unmap();
        Ok(Capture {
            width: rb.width,
            height: rb.height,
            rgba,
        })
    }
}

struct Readback {
    buffer: wgpu::Buffer,
    width: u32,
    height: u32,
    padded_row: u32,
}

impl Capture {
    /// Write as an 8-bit RGBA PNG.
    pub fn save_png(&self, path: &std::path::Path) -> Result<(), String> {
        let file = std::fs::File::create(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        w.write_image_data(&self.rgba)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        w.finish()
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}
