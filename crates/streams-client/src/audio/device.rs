//! Audio devices (cpal): enumeration and the microphone. Playing is [`super::output`]. Nothing here
//! panics when a device is missing or vanishes.
use std::sync::Arc;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use crossbeam_queue::ArrayQueue;

use super::SAMPLE_RATE;
use super::resample::StreamResampler;
use super::source::AudioSource;

/// An audio device as listed to users.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// Its name.
    pub name: String,
    /// Whether it is the host's default.
    pub is_default: bool,
}

pub(super) fn describe(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_string())
        .unwrap_or_else(|_| "unnamed device".into())
}

fn list(
    devices: Result<impl Iterator<Item = cpal::Device>, cpal::Error>,
    default: Option<cpal::Device>,
) -> Vec<DeviceInfo> {
    let default = default.map(|d| describe(&d));
    devices
        .map(|devices| {
            devices
                .map(|d| {
                    let name = describe(&d);
                    DeviceInfo {
                        is_default: Some(&name) == default.as_ref(),
                        name,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The input (capture) devices, empty when there are none or the host cannot list them.
pub fn input_devices() -> Vec<DeviceInfo> {
    let host = cpal::default_host();
    list(host.input_devices(), host.default_input_device())
}

/// The output (playback) devices, empty when there are none or the host cannot list them.
pub fn output_devices() -> Vec<DeviceInfo> {
    let host = cpal::default_host();
    list(host.output_devices(), host.default_output_device())
}

/// A capture device could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NoInputDevice {
    /// The host has no input device.
    #[error("no usable audio input device: the host reports none")]
    None,
    /// No input device has this name.
    #[error("no usable audio input device named {0:?}")]
    NoSuchDevice(String),
    /// The device refused.
    #[error("no usable audio input device: {0}")]
    Device(#[from] cpal::Error),
    /// The capture thread could not start or ended.
    #[error("no usable audio input device: the capture thread failed")]
    Thread,
}

/// The default capture device as a mono 48 kHz [`AudioSource`]: the device callback downmixes and
/// resamples into a bounded lock-free queue that the encoder drains frame by frame (zeros on
/// underrun; the oldest audio is dropped beyond 200 ms, so device clock drift never builds latency).
/// The callback never waits for the encoder's thread.
pub struct MicrophoneSource {
    name: String,
    buffer: Arc<ArrayQueue<f32>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Most captured audio kept waiting for the encoder (200 ms).
const MAX_CAPTURE_BACKLOG: usize = SAMPLE_RATE as usize / 5;

impl MicrophoneSource {
    /// Opens the host's default input device. Without one, say why (callers fall back to a synthetic
    /// source).
    pub fn open_default() -> Result<Self, NoInputDevice> {
        Self::open(None)
    }

    /// Opens the input device named `name` (as [`input_devices`] lists it), or the default one.
    pub fn open(name: Option<&str>) -> Result<Self, NoInputDevice> {
        let wanted = name.map(str::to_string);
        let buffer = Arc::new(ArrayQueue::new(MAX_CAPTURE_BACKLOG));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let shared = Arc::clone(&buffer);
        // The stream lives on its own thread: cpal streams need not be `Send`.
        let thread = std::thread::Builder::new()
            .name("streams-capture".into())
            .spawn(move || match open_capture(shared, wanted.as_deref()) {
                Ok((name, stream)) => {
                    let _ = ready_tx.send(Ok(name));
                    let _ = stop_rx.recv();
                    drop(stream);
                }
                Err(reason) => {
                    let _ = ready_tx.send(Err(reason));
                }
            })
            .map_err(|_| NoInputDevice::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(name)) => {
                tracing::info!(device = %name, "capturing audio");
                Ok(MicrophoneSource {
                    name,
                    buffer,
                    stop: Some(stop_tx),
                    thread: Some(thread),
                })
            }
            Ok(Err(reason)) => {
                let _ = thread.join();
                Err(reason)
            }
            Err(_) => Err(NoInputDevice::Thread),
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AudioSource for MicrophoneSource {
    fn fill(&mut self, out: &mut [f32]) {
        for sample in out.iter_mut() {
            *sample = self.buffer.pop().unwrap_or(0.0);
        }
    }
}

impl Drop for MicrophoneSource {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_capture(
    buffer: Arc<ArrayQueue<f32>>,
    name: Option<&str>,
) -> Result<(String, cpal::Stream), NoInputDevice> {
    let host = cpal::default_host();
    let device = match name {
        None => host.default_input_device().ok_or(NoInputDevice::None)?,
        Some(name) => host
            .input_devices()?
            .find(|d| describe(d) == name)
            .ok_or_else(|| NoInputDevice::NoSuchDevice(name.to_string()))?,
    };
    let config = device.default_input_config()?.config();
    let channels = usize::from(config.channels.max(1));
    let mut resampler = StreamResampler::new(config.sample_rate, SAMPLE_RATE);
    // Room for a large device period, so the callback does not allocate once running.
    let mut mono = Vec::with_capacity(16_384);
    let mut resampled = Vec::with_capacity(16_384);
    let stream = device.build_input_stream::<f32, _, _>(
        config,
        move |data: &[f32], _| {
            mono.clear();
            mono.extend(
                data.chunks(channels)
                    .map(|frame| frame.iter().sum::<f32>() / channels as f32),
            );
            resampled.clear();
            resampler.process(&mono, &mut resampled);
            for sample in &resampled {
                // Full: the oldest sample makes room.
                buffer.force_push(*sample);
            }
        },
        |e| tracing::warn!("audio input error: {e}"),
        None,
    )?;
    stream.play()?;
    Ok((describe(&device), stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_microphone_opening_one_says_why_instead_of_panicking() {
        match MicrophoneSource::open_default() {
            Ok(mut mic) => {
                // A machine with a microphone: it yields samples of the requested size.
                let mut buf = vec![1.0; 480];
                mic.fill(&mut buf);
                assert!(!mic.name().is_empty());
            }
            Err(e) => assert!(e.to_string().contains("no usable audio input device")),
        }
        if input_devices().is_empty() {
            assert!(MicrophoneSource::open_default().is_err());
        }
        let err = MicrophoneSource::open(Some("no such microphone"))
            .err()
            .expect("an unknown device name is refused");
        assert!(err.to_string().contains("no such microphone"), "{err}");
    }
}
