//! Screen sharing on X11 (a desktop, or Xvfb): [`ScreenSource`] reads the root window or one window
//! with the core protocol's GetImage through a pure-Rust X11 client, and converts BGRX to I420.
use openh264::formats::{BgraSliceU8, YUVBuffer, YUVSource};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, ImageFormat, Window};
use x11rb::rust_connection::RustConnection;

use crate::video::VideoError;
use crate::video::frame::I420Frame;
use crate::video::source::VideoSource;

/// What to capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScreenTarget {
    /// The whole screen.
    #[default]
    Screen,
    /// One window, by its X11 id (it must be mapped).
    Window(u32),
}

/// Captures an X11 screen or window.
pub struct ScreenSource {
    connection: RustConnection,
    drawable: Window,
    width: u16,
    height: u16,
    fps: u32,
    display: String,
}

impl ScreenSource {
    /// Connects to `display` (or `$DISPLAY`) and prepares to capture `target` at `fps`.
    pub fn open(display: Option<&str>, target: ScreenTarget, fps: u32) -> Result<Self, VideoError> {
        let name = display
            .map(str::to_string)
            .or_else(|| std::env::var("DISPLAY").ok())
            .ok_or_else(|| VideoError::NoDevice("no X11 display ($DISPLAY is not set)".into()))?;
        let (connection, screen) = x11rb::connect(Some(&name))
            .map_err(|e| VideoError::NoDevice(format!("cannot open X11 display {name}: {e}")))?;
        let root = connection.setup().roots[screen].root;
        let drawable = match target {
            ScreenTarget::Screen => root,
            ScreenTarget::Window(id) => id,
        };
        let geometry = connection
            .get_geometry(drawable)
            .map_err(|e| VideoError::Capture(e.to_string()))?
            .reply()
            .map_err(|e| VideoError::NoDevice(format!("no window {drawable:#x}: {e}")))?;
        let bits = connection
            .setup()
            .pixmap_formats
            .iter()
            .find(|f| f.depth == geometry.depth)
            .map(|f| f.bits_per_pixel);
        if bits != Some(32) {
            return Err(VideoError::NoDevice(format!(
                "display {name} has depth {} at {bits:?} bits per pixel; only 32-bit pixels are supported",
                geometry.depth
            )));
        }
        if fps == 0 || fps > 60 {
            return Err(VideoError::Invalid(format!("screen capture at {fps} fps")));
        }
        Ok(ScreenSource {
            connection,
            drawable,
            // 4:2:0 needs even sizes: the last odd row or column is left out.
            width: geometry.width & !1,
            height: geometry.height & !1,
            fps,
            display: name,
        })
    }

    /// Reads the pixels now, as BGRX rows.
    fn grab(&self) -> Result<Vec<u8>, VideoError> {
        let reply = self
            .connection
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.drawable,
                0,
                0,
                self.width,
                self.height,
                !0,
            )
            .map_err(|e| VideoError::Capture(e.to_string()))?
            .reply()
            .map_err(|e| VideoError::Capture(format!("GetImage failed: {e}")))?;
        let expected = usize::from(self.width) * usize::from(self.height) * 4;
        if reply.data.len() < expected {
            return Err(VideoError::Capture(format!(
                "GetImage returned {} bytes, expected {expected}",
                reply.data.len()
            )));
        }
        Ok(reply.data)
    }
}

/// Converts packed BGRX/BGRA pixels to I420 (BT.601 limited range).
pub fn bgra_to_i420(bgra: &[u8], width: usize, height: usize) -> I420Frame {
    let yuv = YUVBuffer::from_bgra8_source(BgraSliceU8::new(
        &bgra[..width * height * 4],
        (width, height),
    ));
    let (ys, us, vs) = yuv.strides();
    I420Frame::from_planes(width, height, [yuv.y(), yuv.u(), yuv.v()], [ys, us, vs])
}

impl VideoSource for ScreenSource {
    fn size(&self) -> (usize, usize) {
        (usize::from(self.width), usize::from(self.height))
    }

    fn frame_rate(&self) -> u32 {
        self.fps
    }

    fn next_frame(&mut self, _capture_us: u64) -> Result<I420Frame, VideoError> {
        let pixels = self.grab()?;
        Ok(bgra_to_i420(
            &pixels,
            usize::from(self.width),
            usize::from(self.height),
        ))
    }

    fn describe(&self) -> String {
        format!(
            "X11 display {} ({}x{}) at {} fps",
            self.display, self.width, self.height, self.fps
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_display_is_a_clear_error() {
        let err = ScreenSource::open(Some(":4242"), ScreenTarget::Screen, 10)
            .err()
            .expect("there is no display :4242");
        assert!(matches!(err, VideoError::NoDevice(_)), "{err}");
        assert!(err.to_string().contains(":4242"), "{err}");
    }

    #[test]
    fn bgra_converts_to_limited_range_luma() {
        let mut bgra = Vec::new();
        for _ in 0..16 {
            bgra.extend_from_slice(&[255, 255, 255, 255]); // white
        }
        for _ in 0..16 {
            bgra.extend_from_slice(&[0, 0, 0, 255]); // black
        }
        let frame = bgra_to_i420(&bgra, 4, 8);
        let luma = frame.luma();
        assert!((230..=240).contains(&luma[0]), "white → {}", luma[0]);
        assert!((14..=20).contains(&luma[31]), "black → {}", luma[31]);
    }
}
