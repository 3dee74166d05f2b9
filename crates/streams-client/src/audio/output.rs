//! Playing audio: the default output device (cpal), or — on machines without a sound card (CI,
//! servers) — a null sink that consumes audio in real time after one clear log line. The device
//! callback owns what it plays (a mono [`AudioSource`] such as a [`Mixer`](super::mixer::Mixer), or
//! a [`StereoSource`] such as a [`SpatialMixer`](super::spatial::SpatialMixer)) and renders it
//! through [`MonoOutput`] / [`StereoOutput`], which convert to the device's rate and channels with
//! buffers sized once: the callback never locks, allocates or frees. Nothing here panics when a
//! device is missing or vanishes.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use crossbeam_queue::ArrayQueue;

use super::SAMPLE_RATE;
use super::device::describe;
use super::source::AudioSource;

/// Something that produces interleaved stereo (left, right) at 48 kHz: a positional mix.
pub trait StereoSource: Send {
    /// Fills `out` (an even number of samples) with the next frames.
    fn fill_stereo(&mut self, out: &mut [f32]);
}

/// The most device frames rendered in one piece (longer callbacks are rendered in pieces).
const PIECE_FRAMES: usize = 1024;
/// Source frames one piece may need: for device rates down to 8 kHz, plus interpolation.
const SOURCE_FRAMES: usize = PIECE_FRAMES * 6 + 4;

/// Renders a mono 48 kHz source at a device's rate and channel count, pulling exactly as many source
/// samples as are played (the fractional position and the unused samples carry over), so the source
/// is drained at real time.
pub struct MonoOutput {
    step: f64,
    position: f64,
    /// Source samples pulled and not yet played past (`buffer[..buffered]`).
    buffer: Vec<f32>,
    buffered: usize,
    mono: Vec<f32>,
}

impl MonoOutput {
    /// From 48 kHz to `device_rate`.
    pub fn new(device_rate: u32) -> Self {
        MonoOutput {
            step: (f64::from(SAMPLE_RATE) / f64::from(device_rate.max(8_000))).min(6.0),
            position: 0.0,
            buffer: vec![0.0; SOURCE_FRAMES + 2],
            buffered: 0,
            mono: vec![0.0; PIECE_FRAMES],
        }
    }

    /// Fills `out` (device rate, `channels` interleaved; each channel gets the mono signal).
    pub fn render(&mut self, source: &mut dyn AudioSource, out: &mut [f32], channels: usize) {
        let channels = channels.max(1);
        for piece in out.chunks_mut(PIECE_FRAMES * channels) {
            let frames = piece.len() / channels;
            self.resample(source, frames);
            for (frame, v) in piece.chunks_mut(channels).zip(&self.mono) {
                frame.fill(*v);
            }
        }
    }

    /// Resamples the next `frames` (≤ [`PIECE_FRAMES`]) device frames into `mono`.
    fn resample(&mut self, source: &mut dyn AudioSource, frames: usize) {
        let last = self.position + self.step * frames as f64;
        let needed = last.floor() as usize + 2;
        if self.buffered < needed {
            source.fill(&mut self.buffer[self.buffered..needed]);
            self.buffered = needed;
        }
        for (k, o) in self.mono[..frames].iter_mut().enumerate() {
            let pos = self.position + self.step * k as f64;
            let i = pos.floor() as usize;
            let frac = (pos - i as f64) as f32;
            let (a, b) = (self.buffer[i], self.buffer[i + 1]);
            *o = a + (b - a) * frac;
        }
        let consumed = (last.floor() as usize).min(self.buffered);
        self.buffer.copy_within(consumed..self.buffered, 0);
        self.buffered -= consumed;
        self.position = last - consumed as f64;
    }
}

/// Renders a stereo 48 kHz source at a device's rate and channel count (nearest frame: a fallback,
/// most devices run at 48 kHz); a mono device gets the average of both sides.
pub struct StereoOutput {
    step: f64,
    position: f64,
    stereo: Vec<f32>,
}

impl StereoOutput {
    /// From 48 kHz to `device_rate`.
    pub fn new(device_rate: u32) -> Self {
        StereoOutput {
            step: (f64::from(SAMPLE_RATE) / f64::from(device_rate.max(8_000))).min(6.0),
            position: 0.0,
            stereo: vec![0.0; 2 * SOURCE_FRAMES],
        }
    }

    /// Fills `out` (device rate, `channels` interleaved).
    pub fn render(&mut self, source: &mut dyn StereoSource, out: &mut [f32], channels: usize) {
        let channels = channels.max(1);
        for piece in out.chunks_mut(PIECE_FRAMES * channels) {
            let frames = piece.len() / channels;
            let needed = (self.position + self.step * frames as f64).ceil() as usize + 1;
            let stereo = &mut self.stereo[..2 * needed];
            source.fill_stereo(stereo);
            for (k, frame) in piece.chunks_mut(channels).enumerate() {
                let i = ((self.position + self.step * k as f64) as usize).min(needed - 1);
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
            self.position = (self.position + self.step * frames as f64).fract();
        }
    }
}

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

/// Why no device could play.
#[derive(Debug, thiserror::Error)]
enum NoOutputDevice {
    #[error("the host reports no output device")]
    None,
    #[error(transparent)]
    Device(#[from] cpal::Error),
}

/// A source on its way into a device callback: the callback takes it on its first call, and a
/// device that fails to start gives it back (for the null sink).
type Slot<S> = Arc<ArrayQueue<S>>;

impl OutputSink {
    /// Plays `source` on the default output device, or on a null sink when there is none (logged
    /// once, with the reason).
    pub fn open_default(source: Box<dyn AudioSource>) -> Self {
        Self::open(
            source,
            "audio",
            1,
            |device_rate, channels| {
                let mut output = MonoOutput::new(device_rate);
                move |source: &mut Box<dyn AudioSource>, out: &mut [f32]| {
                    output.render(source.as_mut(), out, channels)
                }
            },
            |source, buf| source.fill(buf),
        )
    }

    /// Plays a stereo `source` on the default output device (left and right on its first two
    /// channels), or on a null sink when there is none (logged once, with the reason).
    pub fn open_stereo(source: Box<dyn StereoSource>) -> Self {
        Self::open(
            source,
            "positional audio",
            2,
            |device_rate, channels| {
                let mut output = StereoOutput::new(device_rate);
                move |source: &mut Box<dyn StereoSource>, out: &mut [f32]| {
                    output.render(source.as_mut(), out, channels)
                }
            },
            |source, buf| source.fill_stereo(buf),
        )
    }

    /// Plays `source` with what `renderer` makes for the device, or — without a device — pulls it
    /// with `fill`, `channels` interleaved, on a null sink.
    fn open<S: Send + 'static, R: FnMut(&mut S, &mut [f32]) + Send + 'static>(
        source: S,
        what: &str,
        channels: usize,
        renderer: impl FnOnce(u32, usize) -> R,
        fill: fn(&mut S, &mut [f32]),
    ) -> Self {
        let slot: Slot<S> = Arc::new(ArrayQueue::new(1));
        let _ = slot.push(source);
        match open_device(Arc::clone(&slot), renderer) {
            Ok((name, stream)) => {
                tracing::info!(device = %name, "playing {what}");
                OutputSink::Device { name, stream }
            }
            Err(reason) => {
                tracing::warn!("no audio output device ({reason}); audio goes to a null sink");
                let mut source = slot.pop();
                OutputSink::Null(NullSink::run(channels, move |buf| {
                    if let Some(source) = source.as_mut() {
                        fill(source, buf);
                    }
                }))
            }
        }
    }

    /// Whether this is the null sink.
    pub fn is_null(&self) -> bool {
        matches!(self, OutputSink::Null(_))
    }
}

/// Opens the default device with a callback that takes its source from `slot` and renders it with
/// what `renderer` makes for the device's rate and channel count.
fn open_device<S: Send + 'static, R: FnMut(&mut S, &mut [f32]) + Send + 'static>(
    slot: Slot<S>,
    renderer: impl FnOnce(u32, usize) -> R,
) -> Result<(String, cpal::Stream), NoOutputDevice> {
    let host = cpal::default_host();
    let device = host.default_output_device().ok_or(NoOutputDevice::None)?;
    let config = device.default_output_config()?.config();
    let channels = usize::from(config.channels.max(1));
    let mut render = renderer(config.sample_rate, channels);
    let mut source: Option<S> = None;
    let stream = device.build_output_stream::<f32, _, _>(
        config,
        move |out: &mut [f32], _| {
            if source.is_none() {
                source = slot.pop();
            }
            match source.as_mut() {
                Some(source) => render(source, out),
                None => out.fill(0.0),
            }
        },
        |e| tracing::warn!("audio output error: {e}"),
        None,
    )?;
    stream.play()?;
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
    pub fn start(source: Box<dyn StereoSource>) -> Self {
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

/// Consumes a source in real time, 10 ms at a time, on its own thread; stops when dropped.
pub struct NullSink {
    stop: Arc<AtomicBool>,
    consumed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NullSink {
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
    use crate::audio::device::output_devices;
    use crate::audio::source::ToneSource;

    #[test]
    fn without_a_sound_card_audio_goes_to_a_null_sink_that_keeps_pulling() {
        let outputs = output_devices();
        let sink = OutputSink::open_default(Box::new(ToneSource::new(440.0, 0.5)));
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
        let mut output = MonoOutput::new(44_100);
        let mut played = Vec::new();
        let mut period = vec![0.0; 441];
        for _ in 0..100 {
            output.render(&mut source, &mut period, 1);
            played.extend_from_slice(&period);
        }
        // One second at the device rate takes one second (±2 samples) of the 48 kHz source.
        assert!((source.1 as i64 - 48_000).abs() <= 2, "{} pulled", source.1);
        let back = crate::audio::source::resample_linear(&played, 44_100, 48_000);
        assert!((crate::audio::analysis::dominant_frequency(&back, 48_000) - 440.0).abs() < 1.0);
    }
}
