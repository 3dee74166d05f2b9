//! [`VideoReceiver`]: a remote video track. Frames are opened (decrypted) where they arrive — the
//! media engine's thread — and decoded on a thread of their own into a [`VideoSlot`] that keeps only
//! the latest picture (stale ones are dropped, never queued). The decoder only takes a frame that
//! continues what it has (the SFrame counter, authenticated, numbers a track's frames) or a keyframe;
//! after a gap it waits for a keyframe and raises a request that the engine sends as PLI.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use streams_proto::{RoomSecret, TrackId, UserId};

use crate::clock::wall_us_now;
use crate::envelope::frame::OpenedFrame;
use crate::envelope::opener::{FrameOpener, Opening};
use crate::video::carriage;
use crate::video::codec::{VideoDecoder, is_keyframe};
use crate::video::frame::I420Frame;

/// Opened frames waiting for the decoder, at most.
const DECODE_QUEUE: usize = 32;
/// Latency samples kept.
const MAX_SAMPLES: usize = 3_000;

/// A decoded picture.
#[derive(Clone, Debug)]
pub struct DecodedVideo {
    /// The picture.
    pub picture: I420Frame,
    /// The same as RGBA (when the receiver was asked for it).
    pub rgba: Option<Vec<u8>>,
    /// Capture time, µs since the Unix epoch (sender clock).
    pub capture_us: u64,
    /// When it was decoded, µs since the Unix epoch.
    pub decoded_us: u64,
    /// Pictures decoded on this track before this one.
    pub index: u64,
}

/// Called on the decode thread with each decoded picture of a track (tests, the CLI's checks).
pub type FrameObserver = Arc<dyn Fn(TrackId, &DecodedVideo) + Send + Sync>;

/// The latest decoded picture of a track. Cheap to clone; readers never block the decoder for long.
#[derive(Clone, Default)]
pub struct VideoSlot {
    latest: Arc<Mutex<Option<Arc<DecodedVideo>>>>,
    version: Arc<AtomicU64>,
}

impl VideoSlot {
    /// How many pictures have been put in the slot.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The latest picture, if it is newer than `seen` (a version from before); with its version.
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Arc<DecodedVideo>)> {
        let version = self.version();
        if version <= seen {
            return None;
        }
        let latest = self.latest.lock().ok()?.clone()?;
        Some((version, latest))
    }

    /// Takes the latest picture out of the slot if it is newer than `seen`, with its version: the
    /// taker owns it (a texture can take its pixels without copying them); until the next picture,
    /// other readers find the slot empty.
    pub fn take_newer_than(&self, seen: u64) -> Option<(u64, DecodedVideo)> {
        let version = self.version();
        if version <= seen {
            return None;
        }
        let taken = self.latest.lock().ok()?.take()?;
        let picture = Arc::try_unwrap(taken).unwrap_or_else(|shared| (*shared).clone());
        Some((version, picture))
    }

    /// Puts a picture in the slot (the decoder does; so may any other producer).
    pub fn put(&self, picture: DecodedVideo) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(Arc::new(picture));
            self.version.fetch_add(1, Ordering::Release);
        }
    }
}

/// Statistics of a remote video track.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VideoStats {
    /// Pictures decoded.
    pub frames: u64,
    /// Pictures decoded in the last second.
    pub fps: f64,
    /// Size of the last picture.
    pub width: usize,
    /// Size of the last picture.
    pub height: usize,
    /// Pauses between pictures longer than max(3 × the average interval, average + 150 ms) (as
    /// WebRTC counts freezes).
    pub freezes: u64,
    /// The longest pause between two pictures, ms.
    pub longest_pause_ms: f64,
    /// Keyframe requests (PLI) sent for this track.
    pub keyframe_requests: u64,
    /// Frames that failed to decrypt (dropped, never decoded).
    pub decrypt_failures: u64,
    /// Frames held until their epoch's key arrived.
    pub held: u64,
    /// Frames the decoder refused (corrupt bitstream).
    pub decode_errors: u64,
    /// Frames skipped while waiting for a keyframe (after a gap, or before the first keyframe).
    pub skipped: u64,
    /// Protected bytes received.
    pub bytes: u64,
    /// Capture → decoded, median of recent pictures, ms.
    pub latency_p50_ms: f64,
    /// Capture → decoded, 95th percentile, ms.
    pub latency_p95_ms: f64,
    /// Median time to decode a picture (and convert it to RGBA when asked), ms.
    pub decode_ms_p50: f64,
}

struct Job {
    frame: OpenedFrame,
}

struct Shared {
    stats: Mutex<VideoStats>,
    want_keyframe: AtomicBool,
    /// The engine had to drop a frame (the queue was full): the decoder must resynchronize.
    overflowed: AtomicBool,
}

/// Receives one remote video track.
pub struct VideoReceiver {
    opener: FrameOpener,
    jobs: Option<Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    slot: VideoSlot,
}

impl VideoReceiver {
    /// A receiver of `sender`'s track `track_id`; `rgba` also converts each picture to RGBA (for
    /// textures), `observer` sees every decoded picture.
    pub fn new(
        sender: UserId,
        track_id: TrackId,
        rgba: bool,
        observer: Option<FrameObserver>,
    ) -> Result<Self, crate::video::VideoError> {
        let decoder = VideoDecoder::new()?;
        let (jobs, job_rx) = crossbeam_channel::bounded(DECODE_QUEUE);
        let shared = Arc::new(Shared {
            stats: Mutex::new(VideoStats::default()),
            want_keyframe: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
        });
        let slot = VideoSlot::default();
        let mut worker = DecodeWorker {
            decoder,
            track_id,
            rgba,
            observer,
            shared: Arc::clone(&shared),
            slot: slot.clone(),
            next_counter: None,
            synced: false,
            decoded: 0,
            recent: VecDeque::new(),
            latencies_us: VecDeque::new(),
            decode_us: VecDeque::new(),
            last_decoded_us: None,
            mean_interval_us: None,
        };
        let thread = std::thread::Builder::new()
            .name("streams-video-decode".into())
            .spawn(move || worker.run(&job_rx))
            .map_err(|e| crate::video::VideoError::Codec(e.to_string()))?;
        Ok(VideoReceiver {
            opener: FrameOpener::new(sender),
            jobs: Some(jobs),
            thread: Some(thread),
            shared,
            slot,
        })
    }

    /// Makes an epoch's secret available; frames held for it are opened now.
    pub fn add_epoch(&mut self, epoch: u64, secret: RoomSecret) {
        for (arrived_us, data) in self.opener.add_epoch(epoch, secret) {
            self.open(arrived_us, data);
        }
    }

    /// Takes one received (depacketized) frame.
    pub fn accept(&mut self, arrived_us: u64, received: &[u8]) {
        self.with_stats(|s| s.bytes += received.len() as u64);
        match carriage::unwrap(received) {
            Ok((_, protected)) => self.open(arrived_us, protected),
            Err(e) => {
                tracing::debug!(bytes = received.len(), "unreadable video frame: {e}");
                self.with_stats(|s| s.decrypt_failures += 1);
            }
        }
    }

    fn open(&mut self, arrived_us: u64, protected: Vec<u8>) {
        match self.opener.open(arrived_us, protected) {
            Opening::Opened(frame) => {
                let Some(jobs) = &self.jobs else { return };
                if let Err(TrySendError::Full(_)) = jobs.try_send(Job { frame }) {
                    self.shared.overflowed.store(true, Ordering::Release);
                }
            }
            Opening::Held => self.with_stats(|s| s.held += 1),
            Opening::Failed => {
                tracing::debug!("a video frame did not authenticate");
                self.with_stats(|s| s.decrypt_failures += 1);
            }
        }
    }

    fn with_stats(&self, f: impl FnOnce(&mut VideoStats)) {
        if let Ok(mut stats) = self.shared.stats.lock() {
            f(&mut stats);
        }
    }

    /// Whether the decoder needs a keyframe; clears the request (the caller sends PLI and counts it
    /// with [`VideoReceiver::keyframe_requested`]).
    pub fn take_keyframe_request(&self) -> bool {
        self.shared.want_keyframe.swap(false, Ordering::AcqRel)
    }

    /// Counts a keyframe request sent for this track.
    pub fn keyframe_requested(&self) {
        self.with_stats(|s| s.keyframe_requests += 1);
    }

    /// The latest-picture slot.
    pub fn slot(&self) -> VideoSlot {
        self.slot.clone()
    }

    /// Stops receiving: the frames already queued are decoded, then the final statistics returned.
    pub fn finish(mut self) -> VideoStats {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.stats()
    }

    /// The track's statistics.
    pub fn stats(&self) -> VideoStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for VideoReceiver {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct DecodeWorker {
    decoder: VideoDecoder,
    track_id: TrackId,
    rgba: bool,
    observer: Option<FrameObserver>,
    shared: Arc<Shared>,
    slot: VideoSlot,
    /// The (key id, counter) the next frame must have to continue the picture chain.
    next_counter: Option<(u64, u64)>,
    /// Whether the decoder holds a valid reference picture chain.
    synced: bool,
    decoded: u64,
    /// Decode times of the last second, µs.
    recent: VecDeque<u64>,
    latencies_us: VecDeque<u64>,
    decode_us: VecDeque<u64>,
    last_decoded_us: Option<u64>,
    mean_interval_us: Option<f64>,
}

impl DecodeWorker {
    fn run(&mut self, jobs: &Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            self.handle(job.frame);
        }
    }

    fn stats(&self, f: impl FnOnce(&mut VideoStats)) {
        if let Ok(mut stats) = self.shared.stats.lock() {
            f(&mut stats);
        }
    }

    fn resync(&mut self) {
        self.synced = false;
        self.shared.want_keyframe.store(true, Ordering::Release);
    }

    fn handle(&mut self, frame: OpenedFrame) {
        if self.shared.overflowed.swap(false, Ordering::AcqRel) {
            self.resync();
        }
        // A new key (epoch) restarts its counter at 0; otherwise frames must be consecutive.
        let continues = match self.next_counter {
            Some((kid, counter)) if kid == frame.key_id => frame.counter == counter,
            Some(_) => frame.counter == 0,
            None => false,
        };
        self.next_counter = Some((frame.key_id, frame.counter + 1));
        if !continues {
            self.synced = false;
        }
        let keyframe = is_keyframe(&frame.encoded);
        if !self.synced && !keyframe {
            self.stats(|s| s.skipped += 1);
            self.shared.want_keyframe.store(true, Ordering::Release);
            return;
        }
        let mut rgba = self.rgba.then(Vec::new);
        let began = std::time::Instant::now();
        match self.decoder.decode(&frame.encoded, rgba.as_mut()) {
            Ok(Some(picture)) => {
                self.synced = true;
                push_capped(&mut self.decode_us, began.elapsed().as_micros() as u64);
                self.deliver(picture, rgba, frame.capture_us);
            }
            Ok(None) => self.synced = true,
            Err(_) => {
                self.stats(|s| s.decode_errors += 1);
                self.resync();
            }
        }
    }

    fn deliver(&mut self, picture: I420Frame, rgba: Option<Vec<u8>>, capture_us: u64) {
        let now = wall_us_now();
        let mut freeze = false;
        let mut pause_ms = 0.0;
        if let Some(last) = self.last_decoded_us {
            let interval = now.saturating_sub(last) as f64;
            pause_ms = interval / 1000.0;
            if let Some(mean) = self.mean_interval_us {
                freeze = interval > (3.0 * mean).max(mean + 150_000.0);
                self.mean_interval_us = Some(mean * 0.9 + interval.min(mean * 4.0) * 0.1);
            } else {
                self.mean_interval_us = Some(interval);
            }
        }
        self.last_decoded_us = Some(now);
        self.recent.push_back(now);
        while self.recent.front().is_some_and(|&t| t + 1_000_000 < now) {
            self.recent.pop_front();
        }
        push_capped(&mut self.latencies_us, now.saturating_sub(capture_us));
        let (p50, p95) = (
            percentile_ms(&self.latencies_us, 50),
            percentile_ms(&self.latencies_us, 95),
        );
        let decode_p50 = percentile_ms(&self.decode_us, 50);
        let fps = self.recent.len() as f64;
        let (width, height) = (picture.width(), picture.height());
        let decoded = DecodedVideo {
            picture,
            rgba,
            capture_us,
            decoded_us: now,
            index: self.decoded,
        };
        self.decoded += 1;
        if let Some(observer) = &self.observer {
            observer(self.track_id, &decoded);
        }
        self.slot.put(decoded);
        // Counted once the picture is in the slot: whoever sees the count finds the picture there.
        self.stats(|s| {
            s.frames += 1;
            s.fps = fps;
            s.width = width;
            s.height = height;
            s.freezes += u64::from(freeze);
            s.longest_pause_ms = s.longest_pause_ms.max(pause_ms);
            s.latency_p50_ms = p50;
            s.latency_p95_ms = p95;
            s.decode_ms_p50 = decode_p50;
        });
    }
}

fn push_capped(samples: &mut VecDeque<u64>, value: u64) {
    if samples.len() == MAX_SAMPLES {
        samples.pop_front();
    }
    samples.push_back(value);
}

/// The `p`th percentile of µs samples, in ms (0 when there are none).
fn percentile_ms(samples: &VecDeque<u64>, p: usize) -> f64 {
    let mut sorted: Vec<u64> = samples.iter().copied().collect();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) * p / 100)
        .map_or(0.0, |&us| us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::codec::{VideoEncoder, VideoSettings};
    use crate::video::pattern::{PatternSource, read_stamp};
    use crate::video::source::VideoSource;
    use streams_proto::frame_crypto::DeviceSession;
    use streams_proto::{Identity, RoomSecret};

    fn wait_for(mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_lost_frame_waits_for_a_keyframe_and_asks_for_one() {
        let alice = Identity::generate();
        let secret = RoomSecret::random();
        let mut enc = DeviceSession::random()
            .encryptor(&secret, 0, alice.user_id(), 1)
            .unwrap();
        let mut source = PatternSource::new(160, 120, 30).unwrap();
        let mut encoder = VideoEncoder::new(VideoSettings::for_picture(160, 120, 30), 30).unwrap();
        let mut receiver = VideoReceiver::new(
            alice.user_id().clone(),
            TrackId::parse("1:a").unwrap(),
            false,
            None,
        )
        .unwrap();
        receiver.add_epoch(0, secret);
        let mut send = |receiver: &mut VideoReceiver, n: u64, deliver: bool| {
            if n == 9 {
                encoder.request_keyframe();
            }
            let picture = source.next_frame(n * 33_333).unwrap();
            let encoded = encoder.encode(&picture).unwrap().unwrap();
            let protected =
                crate::envelope::frame::seal(&mut enc, n * 33_333, &encoded.data).unwrap();
            if deliver {
                receiver.accept(wall_us_now(), &carriage::wrap(&protected, encoded.keyframe));
            }
            encoded.keyframe
        };
        for n in 0..5 {
            send(&mut receiver, n, true);
        }
        wait_for(|| receiver.stats().frames == 5);
        assert!(!receiver.take_keyframe_request());
        send(&mut receiver, 5, false); // lost
        for n in 6..9 {
            assert!(!send(&mut receiver, n, true));
        }
        wait_for(|| receiver.stats().skipped == 3);
        assert!(
            receiver.take_keyframe_request(),
            "the gap asks for a keyframe"
        );
        assert_eq!(receiver.stats().frames, 5, "nothing decoded past the gap");
        assert!(
            send(&mut receiver, 9, true),
            "frame 9 is the requested keyframe"
        );
        wait_for(|| receiver.stats().frames == 6);
        let (_, latest) = receiver.slot().newer_than(0).unwrap();
        assert_eq!(read_stamp(&latest.picture).unwrap().frame, 9);
        // Garbage and a wrong key are counted, never decoded.
        receiver.accept(wall_us_now(), b"\x00\x00\x00\x01\x61garbage");
        assert_eq!(receiver.stats().decrypt_failures, 1);
    }
}
