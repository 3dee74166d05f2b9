//! [`VideoSender`]: a local video track. A capture thread reads the source once per frame period,
//! encodes each picture (bitrate and keyframes steered from the network side through atomics), and
//! hands it over; the owner (the media engine) protects each frame with the current epoch's key and
//! wraps it for RTP ([`crate::video::carriage`]).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use streams_proto::frame_crypto::FrameEncryptor;

use crate::clock::wall_us_now;
use crate::envelope::frame;
use crate::video::VideoError;
use crate::video::carriage;
use crate::video::codec::{VideoEncoder, VideoSettings};
use crate::video::source::VideoSource;

/// Encoded frames waiting for the owner, at most.
const QUEUE: usize = 8;
/// Encode times kept for the median.
const ENCODE_SAMPLES: usize = 300;

/// One encoded picture from the capture thread.
struct Encoded {
    data: Vec<u8>,
    keyframe: bool,
    capture_us: u64,
}

/// Steering shared with the capture thread.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    keyframe: AtomicBool,
    /// Skip pictures (the network side says the link is backed up).
    hold: AtomicBool,
    /// Pictures skipped because of `hold`.
    held: AtomicU64,
    bitrate: AtomicU32,
    /// The encoder's bitrate now (what it was last told), bits/s.
    applied: AtomicU32,
    keyframes: AtomicU64,
    /// Pictures encoded but dropped because the owner fell behind.
    dropped: AtomicU64,
    /// The last encode times, µs, newest last.
    encode_us: std::sync::Mutex<std::collections::VecDeque<u32>>,
}

/// A protected frame ready for RTP.
#[derive(Clone, Debug)]
pub struct OutgoingVideo {
    /// The carriage: one NAL unit with the escaped SFrame ciphertext.
    pub data: Vec<u8>,
    /// Whether it is a keyframe (the clear hint).
    pub keyframe: bool,
    /// RTP time on the 90 kHz video clock.
    pub rtp_time: u64,
    /// Capture time, µs since the Unix epoch.
    pub capture_us: u64,
}

/// What a local video track has done.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LocalVideoStats {
    /// Frames sent.
    pub frames: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// Pictures encoded but dropped before sending (the engine fell behind).
    pub dropped: u64,
    /// Pictures not captured because the link was backed up (the frame dropper).
    pub held: u64,
    /// The encoder's target bitrate now, bits/s.
    pub target_bitrate: u32,
    /// What was really sent over the last second (encoded frames, before RTP headers), bits/s.
    pub sent_bitrate: u32,
    /// Median encode time of recent pictures, ms.
    pub encode_ms_p50: f64,
    /// Picture size.
    pub width: usize,
    /// Picture size.
    pub height: usize,
    /// Frames per second the source is read at.
    pub fps: u32,
}

/// A local video track: the capture thread and the encryption of its output.
pub struct VideoSender {
    control: Arc<Control>,
    frames_rx: Receiver<Result<Encoded, VideoError>>,
    thread: Option<std::thread::JoinHandle<()>>,
    encryptor: FrameEncryptor,
    frames: u64,
    first_capture_us: Option<u64>,
    /// Send time and size of the frames of the last second.
    recent: std::collections::VecDeque<(Instant, usize)>,
    size: (usize, usize),
    fps: u32,
    description: String,
}

impl VideoSender {
    /// Starts capturing `source` and encoding it with `settings`; frames are protected by `encryptor`.
    /// `wake` is called whenever a frame is ready (the engine wakes up to send it at once).
    pub fn start(
        mut source: Box<dyn VideoSource>,
        settings: VideoSettings,
        encryptor: FrameEncryptor,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<Self, VideoError> {
        let fps = source.frame_rate().clamp(1, 120);
        let size = source.size();
        let description = source.describe();
        let mut encoder = VideoEncoder::new(settings, fps)?;
        let control = Arc::new(Control::default());
        control
            .bitrate
            .store(settings.start_bitrate, Ordering::Relaxed);
        control
            .applied
            .store(settings.start_bitrate, Ordering::Relaxed);
        let (tx, frames_rx) = crossbeam_channel::bounded(QUEUE);
        let shared = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("streams-video-capture".into())
            .spawn(move || capture_loop(&mut *source, &mut encoder, fps, &shared, &tx, &*wake))
            .map_err(|e| VideoError::Capture(e.to_string()))?;
        Ok(VideoSender {
            control,
            frames_rx,
            thread: Some(thread),
            encryptor,
            frames: 0,
            first_capture_us: None,
            recent: std::collections::VecDeque::new(),
            size,
            fps,
            description,
        })
    }

    /// The SFrame key id of this track.
    pub fn key_id(&self) -> u64 {
        self.encryptor.key_id()
    }

    /// Replaces the encryptor (a new key epoch); the next frame uses it.
    pub fn set_encryptor(&mut self, encryptor: FrameEncryptor) {
        self.encryptor = encryptor;
    }

    /// Asks for a keyframe as the next picture (a subscriber sent PLI/FIR).
    pub fn request_keyframe(&self) {
        self.control.keyframe.store(true, Ordering::Relaxed);
    }

    /// Skips pictures while `hold` is set (the link is backed up: a picture now would only wait).
    pub fn set_hold(&self, hold: bool) {
        self.control.hold.store(hold, Ordering::Relaxed);
    }

    /// Holds capture and discards the pictures waiting to be sent (counted as dropped), with a
    /// keyframe asked for the first picture after the hold: for while nothing can be sent yet, so that
    /// sending starts fresh rather than with pictures from before. An error means the source failed.
    pub fn pause(&mut self) -> Result<(), VideoError> {
        self.set_hold(true);
        let mut discarded = 0;
        while let Ok(next) = self.frames_rx.try_recv() {
            next?;
            discarded += 1;
        }
        if discarded > 0 {
            self.control.dropped.fetch_add(discarded, Ordering::Relaxed);
            self.request_keyframe();
        }
        Ok(())
    }

    /// Sets the encoder's target bitrate (from the bandwidth estimate).
    pub fn set_bitrate(&self, bps: u32) {
        self.control.bitrate.store(bps, Ordering::Relaxed);
    }

    /// The source, in words.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Frames sent so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The encoded frames ready now, protected and wrapped. An error means the source failed.
    pub fn poll(&mut self) -> Result<Vec<OutgoingVideo>, VideoError> {
        let mut out = Vec::new();
        while let Ok(next) = self.frames_rx.try_recv() {
            let encoded = next?;
            let first = *self.first_capture_us.get_or_insert(encoded.capture_us);
            let protected = frame::seal(&mut self.encryptor, encoded.capture_us, &encoded.data)
                .map_err(|e| VideoError::Frame(e.to_string()))?;
            self.frames += 1;
            let now = Instant::now();
            self.recent.push_back((now, protected.len()));
            while self
                .recent
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
            {
                self.recent.pop_front();
            }
            out.push(OutgoingVideo {
                data: carriage::wrap(&protected, encoded.keyframe),
                keyframe: encoded.keyframe,
                rtp_time: encoded.capture_us.saturating_sub(first) * 9 / 100,
                capture_us: encoded.capture_us,
            });
        }
        Ok(out)
    }

    /// What was sent over the last second, bits/s.
    pub fn sent_bitrate(&self) -> u32 {
        let bytes: usize = self.recent.iter().map(|(_, n)| n).sum();
        (bytes * 8).min(u32::MAX as usize) as u32
    }

    /// Statistics of this track.
    pub fn stats(&self) -> LocalVideoStats {
        let encode_ms_p50 = self
            .control
            .encode_us
            .lock()
            .map(|times| {
                let mut sorted: Vec<u32> = times.iter().copied().collect();
                sorted.sort_unstable();
                sorted
                    .get(sorted.len() / 2)
                    .map_or(0.0, |&us| f64::from(us) / 1000.0)
            })
            .unwrap_or(0.0);
        LocalVideoStats {
            frames: self.frames,
            keyframes: self.control.keyframes.load(Ordering::Relaxed),
            dropped: self.control.dropped.load(Ordering::Relaxed),
            held: self.control.held.load(Ordering::Relaxed),
            target_bitrate: self.control.applied.load(Ordering::Relaxed),
            sent_bitrate: self.sent_bitrate(),
            encode_ms_p50,
            width: self.size.0,
            height: self.size.1,
            fps: self.fps,
        }
    }
}

impl Drop for VideoSender {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn capture_loop(
    source: &mut dyn VideoSource,
    encoder: &mut VideoEncoder,
    fps: u32,
    control: &Control,
    out: &Sender<Result<Encoded, VideoError>>,
    wake: &dyn Fn(),
) {
    let period = Duration::from_secs(1) / fps;
    let start = Instant::now();
    let mut index: u32 = 0;
    while !control.stop.load(Ordering::Relaxed) {
        let due = start + period * index;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > period * 2 {
            // Far behind (a slow machine, a stall): skip ahead instead of bursting old pictures.
            index = ((now - start).as_nanos() / period.as_nanos()) as u32;
        }
        index = index.wrapping_add(1);
        if control.hold.load(Ordering::Relaxed) {
            control.held.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let capture_us = wall_us_now();
        let picture = match source.next_frame(capture_us) {
            Ok(p) => p,
            Err(e) => {
                let _ = out.send_timeout(Err(e), Duration::from_secs(1));
                return;
            }
        };
        encoder.set_bitrate(control.bitrate.load(Ordering::Relaxed));
        if control.keyframe.swap(false, Ordering::Relaxed) {
            encoder.request_keyframe();
        }
        let began = Instant::now();
        let encoded = match encoder.encode(&picture) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                let _ = out.send_timeout(Err(e), Duration::from_secs(1));
                return;
            }
        };
        let took = began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        control.applied.store(encoder.bitrate(), Ordering::Relaxed);
        if let Ok(mut times) = control.encode_us.lock() {
            if times.len() == ENCODE_SAMPLES {
                times.pop_front();
            }
            times.push_back(took);
        }
        let keyframe = encoded.keyframe;
        match out.try_send(Ok(Encoded {
            data: encoded.data,
            keyframe,
            capture_us,
        })) {
            Ok(()) => {
                // Counted when handed on: a dropped keyframe reached nobody.
                if keyframe {
                    control.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                wake()
            }
            Err(TrySendError::Full(_)) => {
                // The owner fell behind; receivers cannot decode past the gap, so start afresh.
                control.dropped.fetch_add(1, Ordering::Relaxed);
                control.keyframe.store(true, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}
