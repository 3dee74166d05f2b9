//! Cameras through nokhwa (V4L2 on Linux): list devices and their formats, and [`CameraSource`], which
//! opens one in a raw format (YUYV or NV12, converted here to I420) as close as it offers to what was
//! asked — PrivMX's default is 1280×720 at 15 fps. No camera is a clear error, never a panic.
//! Without the `camera` feature every call says so.
use serde::Serialize;

use crate::video::VideoError;
#[cfg(feature = "camera")]
use crate::video::frame::I420Frame;

/// PrivMX's default camera picture.
pub const DEFAULT_CAMERA: (u32, u32, u32) = (1280, 720, 15);

/// One capture format a camera offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CameraFormatInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Pixel format (YUYV, NV12, MJPEG, …).
    pub pixel_format: String,
    /// Whether this client can capture it (raw YUYV and NV12 only).
    pub supported: bool,
}

/// A camera and what it offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CameraInfo {
    /// Its index (what `--camera` takes).
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its capture formats (empty if it could not be opened to ask).
    pub formats: Vec<CameraFormatInfo>,
}

#[cfg(feature = "camera")]
mod native {
    use nokhwa::Camera;
    use nokhwa::pixel_format::YuyvFormat;
    use nokhwa::utils::{
        ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    };

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use crossbeam_channel::{Receiver, TrySendError};

    use super::*;
    use crate::video::source::VideoSource;

    fn raw(format: FrameFormat) -> bool {
        matches!(format, FrameFormat::YUYV | FrameFormat::NV12)
    }

    fn open(index: u32) -> Result<Camera, VideoError> {
        Camera::new(
            CameraIndex::Index(index),
            RequestedFormat::new::<YuyvFormat>(RequestedFormatType::None),
        )
        .map_err(|e| VideoError::NoDevice(format!("camera {index}: {e}")))
    }

    /// The cameras on this machine (an empty list when there are none).
    pub fn cameras() -> Result<Vec<CameraInfo>, VideoError> {
        let found = nokhwa::query(ApiBackend::Auto)
            .map_err(|e| VideoError::NoDevice(format!("listing cameras failed: {e}")))?;
        Ok(found
            .into_iter()
            .filter_map(|info| {
                let index = info.index().as_index().ok()?;
                let formats = open(index)
                    .and_then(|mut c| {
                        c.compatible_camera_formats()
                            .map_err(|e| VideoError::Capture(e.to_string()))
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .map(|f| CameraFormatInfo {
                        width: f.width(),
                        height: f.height(),
                        fps: f.frame_rate(),
                        pixel_format: f.format().to_string(),
                        supported: raw(f.format()),
                    })
                    .collect();
                Some(CameraInfo {
                    index,
                    name: info.human_name(),
                    formats,
                })
            })
            .collect())
    }

    /// A camera capturing raw pictures. nokhwa's camera cannot move between threads, so it lives on
    /// a thread of its own that hands over converted pictures (the newest wins).
    pub struct CameraSource {
        pictures: Receiver<Result<I420Frame, VideoError>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
        format: CameraFormat,
        name: String,
    }

    fn open_raw(index: u32, width: u32, height: u32, fps: u32) -> Result<Camera, VideoError> {
        let mut camera = open(index)?;
        let offered = camera
            .compatible_camera_formats()
            .map_err(|e| VideoError::Capture(format!("camera {index}: {e}")))?;
        let distance = |f: &CameraFormat| {
            f.width().abs_diff(width) * f.height().abs_diff(height).max(1)
                + f.frame_rate().abs_diff(fps) * 1000
        };
        let format = offered
            .iter()
            .filter(|f| raw(f.format()))
            .min_by_key(|f| distance(f))
            .copied()
            .ok_or_else(|| {
                VideoError::NoDevice(format!(
                    "camera {index} offers no raw YUYV or NV12 format (only {:?})",
                    offered.iter().map(|f| f.format()).collect::<Vec<_>>()
                ))
            })?;
        camera
            .set_camera_requset(RequestedFormat::new::<YuyvFormat>(
                RequestedFormatType::Exact(format),
            ))
            .map_err(|e| VideoError::Capture(format!("camera {index}: {e}")))?;
        camera
            .open_stream()
            .map_err(|e| VideoError::Capture(format!("camera {index}: {e}")))?;
        Ok(camera)
    }

    fn convert(camera: &mut Camera, format: CameraFormat) -> Result<I420Frame, VideoError> {
        let (width, height) = (format.width() as usize, format.height() as usize);
        let name = camera.info().human_name();
        let data = camera
            .frame_raw()
            .map_err(|e| VideoError::Capture(format!("{name}: {e}")))?;
        match format.format() {
            FrameFormat::YUYV => yuyv_to_i420(&data, width, height),
            _ => nv12_to_i420(&data, width, height),
        }
    }

    impl CameraSource {
        /// Opens camera `index` in the raw format closest to `width` × `height` at `fps`.
        pub fn open(index: u32, width: u32, height: u32, fps: u32) -> Result<Self, VideoError> {
            let (opened_tx, opened_rx) = crossbeam_channel::bounded(1);
            let (pictures_tx, pictures) = crossbeam_channel::bounded(2);
            let stop = Arc::new(AtomicBool::new(false));
            let stopping = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("streams-camera".into())
                .spawn(move || {
                    let mut camera = match open_raw(index, width, height, fps) {
                        Ok(camera) => camera,
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    let format = camera.camera_format();
                    let _ = opened_tx.send(Ok((format, camera.info().human_name())));
                    while !stopping.load(Ordering::Relaxed) {
                        let picture = convert(&mut camera, format);
                        let failed = picture.is_err();
                        if let Err(TrySendError::Disconnected(_)) = pictures_tx.try_send(picture) {
                            break;
                        }
                        if failed {
                            break;
                        }
                    }
                    let _ = camera.stop_stream();
                })
                .map_err(|e| VideoError::Capture(e.to_string()))?;
            let opened = opened_rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| VideoError::NoDevice(format!("camera {index} did not open")))
                .and_then(|r| r);
            match opened {
                Ok((format, name)) => Ok(CameraSource {
                    pictures,
                    stop,
                    thread: Some(thread),
                    format,
                    name,
                }),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    let _ = thread.join();
                    Err(e)
                }
            }
        }
    }

    impl Drop for CameraSource {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            // Unblock a thread waiting to hand over a picture.
            while self.pictures.try_recv().is_ok() {}
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    impl VideoSource for CameraSource {
        fn size(&self) -> (usize, usize) {
            (
                self.format.width() as usize & !1,
                self.format.height() as usize & !1,
            )
        }

        fn frame_rate(&self) -> u32 {
            self.format.frame_rate()
        }

        fn next_frame(&mut self, _capture_us: u64) -> Result<I420Frame, VideoError> {
            self.pictures
                .recv_timeout(Duration::from_secs(2))
                .map_err(|_| {
                    VideoError::Capture(format!("{} stopped delivering pictures", self.name))
                })?
        }

        fn describe(&self) -> String {
            format!("camera {} ({})", self.name, self.format)
        }
    }
}

#[cfg(feature = "camera")]
pub use native::{CameraSource, cameras};

/// The cameras on this machine: without the `camera` feature, an error saying so.
#[cfg(not(feature = "camera"))]
pub fn cameras() -> Result<Vec<CameraInfo>, VideoError> {
    Err(VideoError::NoDevice(
        "this build has no camera support (the `camera` feature is off)".into(),
    ))
}

/// Packed YUYV (4:2:2) to I420: chroma of each row pair averaged.
#[cfg(feature = "camera")]
pub fn yuyv_to_i420(data: &[u8], width: usize, height: usize) -> Result<I420Frame, VideoError> {
    if data.len() < width * height * 2 {
        return Err(VideoError::Capture(format!(
            "short YUYV frame: {} bytes for {width}x{height}",
            data.len()
        )));
    }
    let mut frame = I420Frame::black(width, height);
    let (w, h) = (frame.width(), frame.height());
    let (y_plane, u_plane, v_plane) = frame.planes_mut();
    for row in 0..h {
        let line = &data[row * width * 2..row * width * 2 + w * 2];
        for (x, px) in y_plane[row * w..(row + 1) * w].iter_mut().enumerate() {
            *px = line[x * 2];
        }
    }
    for cy in 0..h / 2 {
        let top = &data[(2 * cy) * width * 2..];
        let bottom = &data[(2 * cy + 1) * width * 2..];
        for cx in 0..w / 2 {
            let avg = |i: usize| (u16::from(top[i]) + u16::from(bottom[i])).div_ceil(2) as u8;
            u_plane[cy * (w / 2) + cx] = avg(cx * 4 + 1);
            v_plane[cy * (w / 2) + cx] = avg(cx * 4 + 3);
        }
    }
    Ok(frame)
}

/// NV12 (Y plane, then interleaved UV) to I420.
#[cfg(feature = "camera")]
pub fn nv12_to_i420(data: &[u8], width: usize, height: usize) -> Result<I420Frame, VideoError> {
    if data.len() < width * height * 3 / 2 {
        return Err(VideoError::Capture(format!(
            "short NV12 frame: {} bytes for {width}x{height}",
            data.len()
        )));
    }
    let (luma, chroma) = data.split_at(width * height);
    let u: Vec<u8> = chroma.iter().step_by(2).copied().collect();
    let v: Vec<u8> = chroma.iter().skip(1).step_by(2).copied().collect();
    Ok(I420Frame::from_planes(
        width,
        height,
        [luma, &u, &v],
        [width, width / 2, width / 2],
    ))
}

#[cfg(all(test, feature = "camera"))]
mod tests {
    use super::*;

    #[test]
    fn no_camera_is_an_empty_list_or_a_clear_error_and_opening_one_fails_cleanly() {
        // This machine has no camera: listing must not panic, and opening index 7 must say why.
        match cameras() {
            Ok(list) => assert!(list.iter().all(|c| c.index != 7)),
            Err(e) => assert!(matches!(e, VideoError::NoDevice(_)), "{e}"),
        }
        let err = CameraSource::open(7, 1280, 720, 15)
            .err()
            .expect("no camera 7");
        assert!(err.to_string().contains("camera 7"), "{err}");
    }

    #[test]
    fn yuyv_and_nv12_convert_to_i420() {
        // 2×2 YUYV: rows [Y0 U Y1 V] with U/V differing between rows (averaged).
        let yuyv = [10u8, 100, 20, 200, 30, 110, 40, 210];
        let f = yuyv_to_i420(&yuyv, 2, 2).unwrap();
        assert_eq!(f.luma(), &[10, 20, 30, 40]);
        assert_eq!(&f.as_bytes()[4..], &[105, 205]);
        let nv12 = [1u8, 2, 3, 4, 50, 60];
        let f = nv12_to_i420(&nv12, 2, 2).unwrap();
        assert_eq!(f.as_bytes(), &[1, 2, 3, 4, 50, 60]);
        assert!(yuyv_to_i420(&yuyv[..4], 2, 2).is_err());
    }
}
