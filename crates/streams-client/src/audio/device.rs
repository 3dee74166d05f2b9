//! Audio devices (cpal): enumeration, and the default output sink that plays a mixed mono 48 kHz
//! source. Machines without a sound card (CI, servers) get a null sink that consumes audio in real time
//! after one clear log line; nothing here panics when a device is missing or vanishes.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

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

fn describe(device: &cpal::Device) -> String {
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

/// A mixed source shared with the audio thread.
pub type SharedSource = Arc<Mutex<dyn AudioSource>>;

/// Something that produces interleaved stereo (left, right) at 48 kHz: a positional mix.
pub trait StereoSource: Send {
    /// Fills `out` (an even number of samples) with the next frames.
    fn fill_stereo(&mut self, out: &mut [f32]);
}

/// A stereo source shared with the audio thread.
pub type SharedStereo = Arc<Mutex<dyn StereoSource>>;

/// Where played audio goes.
pub enum OutputSink {
    /// A real device.
    Device {
        /// The device's name.
        name: String,
        /// The running stream (dropping it stops playback).
        stream: cpal::Stream,
    },
    /// No device: audio is consumed in real time and discarded.
    Null(NullSink),
}

impl OutputSink {
    /// Plays `source` on the default output device, or on a null sink when there is none (logged
    /// once, with the reason).
    pub fn open_default(source: SharedSource) -> Self {
        match open_device(Arc::clone(&source)) {
            Ok((name, stream)) => {
                tracing::info!(device = %name, "playing audio");
                OutputSink::Device { name, stream }
            }
            Err(reason) => {
                tracing::warn!("no audio output device ({reason}); audio goes to a null sink");
                OutputSink::Null(NullSink::start(source))
            }
        }
    }

    /// Plays a stereo `source` on the default output device (left and right on its first two
    /// channels), or on a null sink when there is none (logged once, with the reason).
    pub fn open_stereo(source: SharedStereo) -> Self {
        match open_stereo_device(Arc::clone(&source)) {
            Ok((name, stream)) => {
                tracing::info!(device = %name, "playing positional audio");
                OutputSink::Device { name, stream }
            }
            Err(reason) => {
                tracing::warn!("no audio output device ({reason}); audio goes to a null sink");
                OutputSink::Null(NullSink::start_stereo(source))
            }
        }
    }

    /// Whether this is the null sink.
    pub fn is_null(&self) -> bool {
        matches!(self, OutputSink::Null(_))
    }
}

fn open_device(source: SharedSource) -> Result<(String, cpal::Stream), String> {
    let host = cpal::default_host();
    let device = host
        .default_output_device()
        .ok_or_else(|| "the host reports no output device".to_string())?;
    let supported = device.default_output_config().map_err(|e| e.to_string())?;
    let config = supported.config();
    let channels = usize::from(config.channels.max(1));
    let mut resampler = PlayoutResampler::new(SAMPLE_RATE, config.sample_rate);
    let mut mono = Vec::new();
    let stream = device
        .build_output_stream::<f32, _, _>(
            config,
            move |out: &mut [f32], _| {
                let frames = out.len() / channels;
                mono.resize(frames, 0.0);
                match source.try_lock() {
                    Ok(mut s) => resampler.render(&mut *s, &mut mono),
                    Err(_) => mono.fill(0.0),
                }
                for (frame, v) in out.chunks_mut(channels).zip(&mono) {
                    frame.fill(*v);
                }
            },
            |e| tracing::warn!("audio output error: {e}"),
            None,
        )
        .map_err(|e| e.to_string())?;
    stream.play().map_err(|e| e.to_string())?;
    Ok((describe(&device), stream))
}

/// A stereo output running on a thread of its own, so that its owner can live anywhere (a cpal stream
/// cannot move between threads). Stops when dropped.
pub struct StereoPlayback {
    device: Option<String>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StereoPlayback {
    /// Plays `source` on the default device, or a null sink without one.
    pub fn start(source: SharedStereo) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("streams-playback".into())
            .spawn(move || {
                let sink = OutputSink::open_stereo(source);
                let device = match &sink {
                    OutputSink::Device { name, .. } => Some(name.clone()),
                    OutputSink::Null(_) => None,
                };
                let _ = ready_tx.send(device);
                let _ = stop_rx.recv();
                drop(sink);
            })
            .ok();
        let device = ready_rx.recv().ok().flatten();
        StereoPlayback {
            device,
            stop: Some(stop),
            thread,
        }
    }

    /// The device playing, or `None` for the null sink.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }
}

impl Drop for StereoPlayback {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_stereo_device(source: SharedStereo) -> Result<(String, cpal::Stream), String> {
    let host = cpal::default_host();
    let device = host
        .default_output_device()
        .ok_or_else(|| "the host reports no output device".to_string())?;
    let supported = device.default_output_config().map_err(|e| e.to_string())?;
    let config = supported.config();
    let channels = usize::from(config.channels.max(1));
    // The mix is rendered at 48 kHz; another device rate is met by picking the nearest frame (a
    // fallback: most devices run at 48 kHz).
    let step = f64::from(SAMPLE_RATE) / f64::from(config.sample_rate.max(1));
    let mut position = 0.0f64;
    let mut stereo: Vec<f32> = Vec::new();
    let stream = device
        .build_output_stream::<f32, _, _>(
            config,
            move |out: &mut [f32], _| {
                let frames = out.len() / channels;
                let needed = (position + step * frames as f64).ceil() as usize + 1;
                stereo.resize(needed * 2, 0.0);
                match source.try_lock() {
                    Ok(mut s) => s.fill_stereo(&mut stereo),
                    Err(_) => stereo.fill(0.0),
                }
                for (k, frame) in out.chunks_mut(channels).enumerate() {
                    let i = ((position + step * k as f64) as usize).min(needed - 1);
                    let (l, r) = (stereo[2 * i], stereo[2 * i + 1]);
                    match frame {
                        [mono] => *mono = 0.5 * (l + r),
                        [left, right, rest @ ..] => {
                            *left = l;
                            *right = r;
                            rest.fill(0.0);
                        }
                        [] => {}
                    }
                }
                position = (position + step * frames as f64).fract();
            },
            |e| tracing::warn!("audio output error: {e}"),
            None,
        )
        .map_err(|e| e.to_string())?;
    stream.play().map_err(|e| e.to_string())?;
    Ok((describe(&device), stream))
}

/// Renders a 48 kHz source at a device's rate, pulling exactly as many source samples as are played
/// (the fractional position and the unused samples carry over), so the source is drained at real
/// time.
pub struct PlayoutResampler {
    step: f64,
    position: f64,
    buffered: std::collections::VecDeque<f32>,
    scratch: Vec<f32>,
}

impl PlayoutResampler {
    /// From `source_rate` to `device_rate`.
    pub fn new(source_rate: u32, device_rate: u32) -> Self {
        PlayoutResampler {
            step: f64::from(source_rate.max(1)) / f64::from(device_rate.max(1)),
            position: 0.0,
            buffered: std::collections::VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// Fills `out` (device rate) from `source`.
    pub fn render(&mut self, source: &mut dyn AudioSource, out: &mut [f32]) {
        let last = self.position + self.step * out.len() as f64;
        let needed = last.floor() as usize + 2;
        if self.buffered.len() < needed {
            self.scratch.resize(needed - self.buffered.len(), 0.0);
            source.fill(&mut self.scratch);
            self.buffered.extend(self.scratch.iter().copied());
        }
        for (k, o) in out.iter_mut().enumerate() {
            let pos = self.position + self.step * k as f64;
            let i = pos.floor() as usize;
            let frac = (pos - i as f64) as f32;
            let a = self.buffered[i];
            let b = self.buffered[i + 1];
            *o = a + (b - a) * frac;
        }
        let consumed = last.floor() as usize;
        self.buffered.drain(..consumed.min(self.buffered.len()));
        self.position = last - consumed as f64;
    }
}

/// A capture device could not be used.
#[derive(Debug, thiserror::Error)]
#[error("no usable audio input device: {0}")]
pub struct NoInputDevice(pub String);

/// The default capture device as a mono 48 kHz [`AudioSource`]: the device callback downmixes and
/// resamples into a buffer that the encoder drains frame by frame (zeros on underrun; the oldest audio
/// is dropped beyond 200 ms, so device clock drift never builds latency).
pub struct MicrophoneSource {
    name: String,
    buffer: Arc<Mutex<std::collections::VecDeque<f32>>>,
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
        let buffer = Arc::new(Mutex::new(std::collections::VecDeque::new()));
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
            .map_err(|e| NoInputDevice(e.to_string()))?;
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
                Err(NoInputDevice(reason))
            }
            Err(_) => Err(NoInputDevice("the capture thread ended".into())),
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AudioSource for MicrophoneSource {
    fn fill(&mut self, out: &mut [f32]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        for sample in out.iter_mut() {
            *sample = buffer.pop_front().unwrap_or(0.0);
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
    buffer: Arc<Mutex<std::collections::VecDeque<f32>>>,
    name: Option<&str>,
) -> Result<(String, cpal::Stream), String> {
    let host = cpal::default_host();
    let device = match name {
        None => host
            .default_input_device()
            .ok_or_else(|| "the host reports no input device".to_string())?,
        Some(name) => host
            .input_devices()
            .map_err(|e| e.to_string())?
            .find(|d| describe(d) == name)
            .ok_or_else(|| format!("no input device named {name:?}"))?,
    };
    let config = device
        .default_input_config()
        .map_err(|e| e.to_string())?
        .config();
    let channels = usize::from(config.channels.max(1));
    let mut resampler = StreamResampler::new(config.sample_rate, SAMPLE_RATE);
    let mut mono = Vec::new();
    let mut resampled = Vec::new();
    let stream = device
        .build_input_stream::<f32, _, _>(
            config,
            move |data: &[f32], _| {
                mono.clear();
                mono.extend(
                    data.chunks(channels)
                        .map(|frame| frame.iter().sum::<f32>() / channels as f32),
                );
                resampled.clear();
                resampler.process(&mono, &mut resampled);
                if let Ok(mut buffer) = buffer.lock() {
                    buffer.extend(resampled.iter().copied());
                    let excess = buffer.len().saturating_sub(MAX_CAPTURE_BACKLOG);
                    buffer.drain(..excess);
                }
            },
            |e| tracing::warn!("audio input error: {e}"),
            None,
        )
        .map_err(|e| e.to_string())?;
    stream.play().map_err(|e| e.to_string())?;
    Ok((describe(&device), stream))
}

/// Consumes a source in real time, 10 ms at a time, on its own thread; stops when dropped.
pub struct NullSink {
    stop: Arc<AtomicBool>,
    consumed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NullSink {
    /// Starts consuming `source`.
    pub fn start(source: SharedSource) -> Self {
        Self::run(1, move |buf| {
            if let Ok(mut s) = source.lock() {
                s.fill(buf);
            }
        })
    }

    /// Starts consuming a stereo `source`.
    pub fn start_stereo(source: SharedStereo) -> Self {
        Self::run(2, move |buf| {
            if let Ok(mut s) = source.lock() {
                s.fill_stereo(buf);
            }
        })
    }

    fn run(channels: usize, mut pull: impl FnMut(&mut [f32]) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let consumed = Arc::new(AtomicU64::new(0));
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&consumed));
        let thread = std::thread::Builder::new()
            .name("streams-null-sink".into())
            .spawn(move || {
                let period = Duration::from_millis(10);
                let frames = SAMPLE_RATE as usize / 100;
                let mut buf = vec![0.0f32; frames * channels];
                let start = Instant::now();
                let mut periods = 0u32;
                while !flag.load(Ordering::Relaxed) {
                    pull(&mut buf);
                    count.fetch_add(frames as u64, Ordering::Relaxed);
                    periods += 1;
                    let due = start + period * periods;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
            })
            .ok();
        NullSink {
            stop,
            consumed,
            thread,
        }
    }

    /// Frames (samples per channel) consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }
}

impl Drop for NullSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::source::ToneSource;

    #[test]
    fn without_a_sound_card_audio_goes_to_a_null_sink_that_keeps_pulling() {
        // Listing never fails, whatever the machine has.
        let _ = input_devices();
        let outputs = output_devices();
        let source: SharedSource = Arc::new(Mutex::new(ToneSource::new(440.0, 0.5)));
        let sink = OutputSink::open_default(Arc::clone(&source));
        if outputs.is_empty() {
            assert!(sink.is_null(), "no device listed, yet a device sink opened");
        }
        if let OutputSink::Null(null) = &sink {
            // The null sink consumes audio as a device would (waits on wall time; no speed check).
            let deadline = Instant::now() + Duration::from_secs(5);
            while null.consumed() < 4_800 {
                assert!(Instant::now() < deadline, "the null sink never pulled");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        drop(sink);
    }

    #[test]
    fn playout_at_44k1_drains_the_source_in_real_time_and_keeps_the_tone() {
        struct Counting(ToneSource, usize);
        impl AudioSource for Counting {
            fn fill(&mut self, out: &mut [f32]) {
                self.1 += out.len();
                self.0.fill(out);
            }
        }
        let mut source = Counting(ToneSource::new(440.0, 0.5), 0);
        let mut r = PlayoutResampler::new(48_000, 44_100);
        let mut played = Vec::new();
        for _ in 0..100 {
            let mut period = vec![0.0; 441];
            r.render(&mut source, &mut period);
            played.extend(period);
        }
        // One second at the device rate takes one second (±2 samples) of the 48 kHz source.
        assert!((source.1 as i64 - 48_000).abs() <= 2, "{} pulled", source.1);
        let back = crate::audio::source::resample_linear(&played, 44_100, 48_000);
        assert!((crate::audio::analysis::dominant_frequency(&back, 48_000) - 440.0).abs() < 1.0);
    }

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
