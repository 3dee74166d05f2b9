//! The audio-thread half of a remote voice. A [`VoicePlayout`] owns the voice's jitter buffer, Opus
//! decoder and speaking detector and is pulled by whatever plays (an output callback, a null sink, a
//! tool); its network half (decrypting, in `media::voice`) reaches it only through a [`VoiceLink`]
//! of lock-free bounded queues: opened frames one way; the playout's figures and latency samples the
//! other way; volume and detector settings as a latest-value slot. Pulling never blocks, allocates
//! or makes a system call.
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::audio::analysis::{SpeakingDetector, level_dbfs};
use crate::audio::codec::{CodecError, FrameDuration, VoiceDecoder};
use crate::audio::jitter::{JitterBuffer, JitterStats, MAX_PAYLOAD, Playout};
use crate::audio::source::AudioSource;
use crate::clock::wall_us_now;

/// Opened frames waiting for the playout (a second of 20 ms frames; when nothing pulls, the oldest
/// are overwritten, so no backlog builds up).
const FRAME_QUEUE: usize = 50;
/// Latency samples waiting for the network half to collect them.
const LATENCY_QUEUE: usize = 512;
/// The playout works through a pull in pieces of at most this many samples (one 20 ms frame), so
/// its decoded-but-unplayed samples fit a buffer allocated once.
const PIECE: usize = 960;

/// A decrypted frame on its way to the playout, stored in place.
struct OpenedFrame {
    arrived_us: u64,
    seq: u64,
    capture_us: u64,
    len: usize,
    data: [u8; MAX_PAYLOAD],
}

/// Volume and speaking-detector settings of one voice.
#[derive(Clone, Debug)]
pub struct PlayoutControls {
    /// Linear gain.
    pub gain: f32,
    /// Muted: still pulled (its buffer and speaking state stay current), not heard.
    pub muted: bool,
    /// Speaking detection.
    pub speaking: SpeakingDetector,
}

impl Default for PlayoutControls {
    fn default() -> Self {
        PlayoutControls {
            gain: 1.0,
            muted: false,
            speaking: SpeakingDetector::default(),
        }
    }
}

/// What the playout reports after each pull.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlayoutReport {
    /// The jitter buffer's counters.
    pub jitter: JitterStats,
    /// Smoothed inter-arrival jitter, µs.
    pub jitter_us: f64,
    /// The jitter buffer's target delay, µs.
    pub target_delay_us: u64,
    /// Frames decoded from their own packet.
    pub decoded: u64,
    /// Frames still queued.
    pub depth: usize,
    /// Level of the last pulled frame, dBFS (before volume).
    pub level_dbfs: f32,
    /// Whether the sender is speaking.
    pub speaking: bool,
}

/// The queues between a voice's network half and its playout.
pub struct VoiceLink {
    frames: ArrayQueue<OpenedFrame>,
    report: ArrayQueue<PlayoutReport>,
    latencies: ArrayQueue<u64>,
    controls: ArrayQueue<PlayoutControls>,
    closed: AtomicBool,
}

impl VoiceLink {
    /// Queues a frame for playout; the oldest waiting frame makes room if the playout is not pulling.
    /// A payload over [`MAX_PAYLOAD`] bytes is dropped (`false`).
    pub fn send_frame(&self, arrived_us: u64, seq: u64, capture_us: u64, payload: &[u8]) -> bool {
        if payload.len() > MAX_PAYLOAD {
            return false;
        }
        let mut frame = OpenedFrame {
            arrived_us,
            seq,
            capture_us,
            len: payload.len(),
            data: [0; MAX_PAYLOAD],
        };
        frame.data[..payload.len()].copy_from_slice(payload);
        self.frames.force_push(frame);
        true
    }

    /// Replaces the playout's volume and detector settings (applied at its next pull).
    pub fn set_controls(&self, controls: PlayoutControls) {
        self.controls.force_push(controls);
    }

    /// The playout's latest report, if it pulled since the last look.
    pub fn take_report(&self) -> Option<PlayoutReport> {
        self.report.pop()
    }

    /// Latency samples (capture → leaving the jitter buffer, µs) since the last look.
    pub fn take_latencies(&self, into: &mut Vec<u64>) {
        while let Some(latency) = self.latencies.pop() {
            into.push(latency);
        }
    }

    /// Ends the voice: whatever holds its playout lets it go at its next pull.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the network half ended the voice.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The audio-thread half of a remote voice: jitter buffer, decoder, speaking detection, volume.
pub struct VoicePlayout {
    link: Arc<VoiceLink>,
    jitter: JitterBuffer,
    decoder: VoiceDecoder,
    controls: PlayoutControls,
    /// Decoded samples not handed out yet (capacity fixed at creation).
    pending: VecDeque<f32>,
    level_dbfs: f32,
    decoded: u64,
}

impl VoicePlayout {
    /// A playout of frames of `frame` duration and the link its network half feeds.
    pub fn new(frame: FrameDuration) -> Result<(VoicePlayout, Arc<VoiceLink>), CodecError> {
        let link = Arc::new(VoiceLink {
            frames: ArrayQueue::new(FRAME_QUEUE),
            report: ArrayQueue::new(1),
            latencies: ArrayQueue::new(LATENCY_QUEUE),
            controls: ArrayQueue::new(1),
            closed: AtomicBool::new(false),
        });
        let playout = VoicePlayout {
            link: Arc::clone(&link),
            jitter: JitterBuffer::new(frame.millis()),
            decoder: VoiceDecoder::new(frame, false)?,
            controls: PlayoutControls::default(),
            pending: VecDeque::with_capacity(2 * PIECE + frame.samples()),
            level_dbfs: -120.0,
            decoded: 0,
        };
        Ok((playout, link))
    }

    /// Whether the network half ended this voice (whoever holds it should let it go).
    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    /// The link to the network half (to watch for the voice's end from another thread).
    pub fn link(&self) -> &Arc<VoiceLink> {
        &self.link
    }

    /// Fills `out` with the voice as it plays at `now_us` (wall clock, µs), volume applied.
    pub fn pull_at(&mut self, now_us: u64, out: &mut [f32]) {
        if let Some(controls) = self.link.controls.pop() {
            self.controls = controls;
        }
        while let Some(frame) = self.link.frames.pop() {
            self.jitter.push(
                frame.arrived_us,
                frame.seq,
                &frame.data[..frame.len],
                Some(frame.capture_us),
            );
        }
        for piece in out.chunks_mut(PIECE) {
            self.pull_piece(now_us, piece);
        }
        let gain = if self.controls.muted {
            0.0
        } else {
            self.controls.gain
        };
        if gain != 1.0 {
            for sample in out.iter_mut() {
                *sample *= gain;
            }
        }
        self.link.report.force_push(PlayoutReport {
            jitter: self.jitter.stats(),
            jitter_us: self.jitter.jitter_us(),
            target_delay_us: self.jitter.target_delay_us(),
            decoded: self.decoded,
            depth: self.jitter.depth(),
            level_dbfs: self.level_dbfs,
            speaking: self.controls.speaking.is_speaking(),
        });
    }

    /// Exactly `out.len()` (≤ [`PIECE`]) samples: a frame is decoded only when its first sample is
    /// needed, so it leaves the buffer as late as it may and no earlier.
    fn pull_piece(&mut self, now_us: u64, out: &mut [f32]) {
        while self.pending.len() < out.len() {
            // An underflow conceals only the missing part of this period, so waiting for a late
            // frame costs one output period of delay, not a whole frame.
            let missing = out.len() - self.pending.len();
            self.decode_next(now_us, missing.div_ceil(120) * 120);
        }
        let count = out.len();
        for (o, s) in out.iter_mut().zip(self.pending.drain(..count)) {
            *o = s;
        }
    }

    /// Decodes (or conceals) the next frame into `pending`.
    fn decode_next(&mut self, now_us: u64, wait_samples: usize) {
        let mut latency = None;
        let decoded = match self.jitter.pull(now_us) {
            Playout::Packet { capture_us, .. } => {
                match self.decoder.decode(self.jitter.played()).map(<[f32]>::len) {
                    Ok(n) => {
                        self.decoded += 1;
                        latency = capture_us.map(|c| now_us.saturating_sub(c));
                        Ok(n)
                    }
                    Err(_) => self.decoder.conceal().map(<[f32]>::len),
                }
            }
            Playout::Recover { .. } => self
                .decoder
                .recover_from(self.jitter.played())
                .map(<[f32]>::len)
                .or_else(|_| self.decoder.conceal().map(<[f32]>::len)),
            Playout::Conceal { .. } => self.decoder.conceal().map(<[f32]>::len),
            Playout::Wait { .. } => self.decoder.conceal_samples(wait_samples).map(<[f32]>::len),
            Playout::Silence => Ok(0),
        };
        let level = match decoded {
            Ok(n) if n > 0 => {
                let pcm = self.decoder.last();
                // A sender's longer frames are cut to what the buffer holds: it never grows here.
                let room = self.pending.capacity() - self.pending.len();
                self.pending.extend(pcm.iter().take(room).copied());
                level_dbfs(pcm)
            }
            // Nothing to play yet (buffering), or a decoder that failed: silence of the asked length.
            _ => {
                let room = self.pending.capacity() - self.pending.len();
                self.pending
                    .extend(std::iter::repeat_n(0.0, wait_samples.max(120).min(room)));
                -120.0
            }
        };
        if let Some(latency) = latency {
            let _ = self.link.latencies.push(latency);
        }
        self.level_dbfs = level;
        self.controls.speaking.update(now_us / 1000, level);
    }
}

impl AudioSource for VoicePlayout {
    fn fill(&mut self, out: &mut [f32]) {
        self.pull_at(wall_us_now(), out);
    }
}
