//! Voice tracks, network-free: [`VoiceSender`] turns a source into paced, encrypted Opus frames;
//! [`VoiceReceiver`] decrypts a remote track's frames and hands them to the track's
//! [`VoicePlayout`] (the audio-thread half: jitter buffer, FEC recovery, concealment), and gathers
//! level, speaking state and statistics back from it.
use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use streams_proto::frame_crypto::FrameEncryptor;
use streams_proto::{CryptoError, RoomSecret, UserId};

use crate::audio::SAMPLE_RATE;
use crate::audio::analysis::{SpeakingDetector, dominant_frequency};
use crate::audio::codec::{CodecError, FrameDuration, VoiceEncoder, VoiceSettings};
use crate::audio::jitter::JitterStats;
use crate::audio::playout::{PlayoutControls, PlayoutReport, VoiceLink, VoicePlayout};
use crate::audio::source::AudioSource;
use crate::envelope::frame;
use crate::envelope::opener::{FrameOpener, Opening};

/// Produces a track's protected frames.
pub struct VoiceSender {
    source: Box<dyn AudioSource>,
    encoder: VoiceEncoder,
    encryptor: FrameEncryptor,
    /// Mono samples of one frame from the source.
    mono: Vec<f32>,
    /// What the encoder takes: the mono samples, or both channels interleaved for stereo.
    pcm: Vec<f32>,
    frames: u64,
    muted: bool,
}

impl VoiceSender {
    /// A sender of `source`, encoded with `settings`, protected by `encryptor`.
    pub fn new(
        source: Box<dyn AudioSource>,
        settings: VoiceSettings,
        encryptor: FrameEncryptor,
    ) -> Result<Self, CodecError> {
        let mono = vec![0.0; settings.frame.samples()];
        let encoder = VoiceEncoder::new(settings)?;
        let pcm = vec![0.0; encoder.frame_len()];
        Ok(VoiceSender {
            source,
            encoder,
            encryptor,
            mono,
            pcm,
            frames: 0,
            muted: false,
        })
    }

    /// The SFrame key id of this track.
    pub fn key_id(&self) -> u64 {
        self.encryptor.key_id()
    }

    /// Replaces the encryptor (a new key epoch).
    pub fn set_encryptor(&mut self, encryptor: FrameEncryptor) {
        self.encryptor = encryptor;
    }

    /// The frame duration.
    pub fn frame(&self) -> FrameDuration {
        self.encoder.settings().frame
    }

    /// Frames produced so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// RTP time (48 kHz) of the next frame.
    pub fn rtp_time(&self) -> u64 {
        self.frames * self.frame().samples() as u64
    }

    /// Mutes (or unmutes) the track: frames keep flowing, carrying silence, and the source is still
    /// read so a microphone's buffer does not grow.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Captures, encodes and protects the next frame; `capture_us` is the wall time of its first sample.
    pub fn next_frame(&mut self, capture_us: u64) -> Result<Vec<u8>, SendError> {
        self.source.fill(&mut self.mono);
        if self.muted {
            self.mono.fill(0.0);
        }
        if self.pcm.len() == self.mono.len() {
            self.pcm.copy_from_slice(&self.mono);
        } else {
            // Stereo on request: the mono source on both channels.
            for (pair, sample) in self.pcm.chunks_exact_mut(2).zip(&self.mono) {
                pair.fill(*sample);
            }
        }
        let encoded = self.encoder.encode(&self.pcm)?;
        let protected = frame::seal(&mut self.encryptor, capture_us, &encoded)?;
        self.frames += 1;
        Ok(protected)
    }
}

/// Producing a frame failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Encryption failed (e.g. the counter is exhausted).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Statistics of one received track.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrackStats {
    /// Frames decoded from their own packet (not concealment).
    pub frames: u64,
    /// Frames lost in transit.
    pub lost: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Lost frames recovered from FEC.
    pub fec_recovered: u64,
    /// Frames that failed to decrypt (dropped, never decoded).
    pub decrypt_failures: u64,
    /// Frames held because their key epoch was not known yet.
    pub held: u64,
    /// Frames that arrived after their slot had passed (dropped).
    pub late: u64,
    /// Frames too large to be a voice frame (dropped).
    pub oversized: u64,
    /// Smoothed inter-arrival jitter, ms.
    pub jitter_ms: f64,
    /// Target delay of the jitter buffer, ms.
    pub buffer_delay_ms: f64,
    /// Bytes received (protected frames).
    pub bytes: u64,
    /// Packets received (one protected frame each).
    pub packets: u64,
    /// Received bitrate over the track's life so far, kbit/s.
    pub bitrate_kbps: f64,
    /// One-way latency (capture of a frame's first sample → the frame leaving the jitter buffer)
    /// over the last [`MAX_SAMPLES`] frames: median, ms.
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile of the same.
    pub latency_p95_ms: Option<f64>,
    /// 99th percentile of the same.
    pub latency_p99_ms: Option<f64>,
    /// Median of capture → arrival here (frame duration, encoding, network), ms.
    pub arrival_p50_ms: Option<f64>,
}

/// Receives one remote voice track: the network half. Frames are decrypted here and go to the
/// track's [`VoicePlayout`] (what the output pulls) through their [`VoiceLink`]; the playout's
/// figures come back the same way. Dropping the receiver ends the voice at the output.
pub struct VoiceReceiver {
    opener: FrameOpener,
    link: Arc<VoiceLink>,
    controls: PlayoutControls,
    stats: TrackStats,
    /// The playout's latest figures.
    played: PlayoutReport,
    latencies_us: Vec<u64>,
    /// Capture → arrival of each frame, µs (the network and sender part of the latency).
    arrivals_us: Vec<u64>,
    first_arrival_us: Option<u64>,
    last_arrival_us: u64,
    /// Per key id, the offset that turns its SFrame counter into this track's frame sequence: a new
    /// epoch's key restarts its counter at 0, the track's sequence goes on.
    seq_base: HashMap<u64, u64>,
    /// The highest sequence seen so far.
    last_seq: Option<u64>,
}

/// Latency samples kept per track (a minute of 20 ms frames); older ones are dropped.
pub const MAX_SAMPLES: usize = 3_000;

impl VoiceReceiver {
    /// A receiver of `sender`'s frames of `frame` duration, and the playout that plays them.
    pub fn new(sender: UserId, frame: FrameDuration) -> Result<(Self, VoicePlayout), CodecError> {
        let (playout, link) = VoicePlayout::new(frame)?;
        let receiver = VoiceReceiver {
            opener: FrameOpener::new(sender),
            link,
            controls: PlayoutControls::default(),
            stats: TrackStats::default(),
            played: PlayoutReport::default(),
            latencies_us: Vec::new(),
            arrivals_us: Vec::new(),
            first_arrival_us: None,
            last_arrival_us: 0,
            seq_base: HashMap::new(),
            last_seq: None,
        };
        Ok((receiver, playout))
    }

    /// Makes an epoch's secret available; frames held for it are opened now.
    pub fn add_epoch(&mut self, epoch: u64, secret: RoomSecret, now_us: u64) {
        for (arrived_us, protected) in self.opener.add_epoch(epoch, secret) {
            self.queue_frame(arrived_us.max(now_us.saturating_sub(1)), protected);
        }
    }

    /// Takes one protected frame that arrived at `now_us`.
    pub fn accept(&mut self, now_us: u64, protected: Vec<u8>) {
        self.stats.bytes += protected.len() as u64;
        self.stats.packets += 1;
        self.first_arrival_us.get_or_insert(now_us);
        self.last_arrival_us = now_us;
        self.queue_frame(now_us, protected);
    }

    /// Opens a frame and sends it to the playout, or holds it until its epoch's key is known.
    fn queue_frame(&mut self, now_us: u64, protected: Vec<u8>) {
        let opened = match self.opener.open(now_us, protected) {
            Opening::Opened(opened) => opened,
            Opening::Held => {
                self.stats.held += 1;
                return;
            }
            Opening::Failed => {
                self.stats.decrypt_failures += 1;
                return;
            }
        };
        push_capped(
            &mut self.arrivals_us,
            now_us.saturating_sub(opened.capture_us),
        );
        let next = self.last_seq.map_or(0, |s| s.saturating_add(1));
        let base = *self
            .seq_base
            .entry(opened.key_id)
            .or_insert_with(|| next.saturating_sub(opened.counter));
        let seq = base.saturating_add(opened.counter);
        self.last_seq = Some(self.last_seq.map_or(seq, |s| s.max(seq)));
        if !self
            .link
            .send_frame(now_us, seq, opened.capture_us, &opened.encoded)
        {
            self.stats.oversized += 1;
        }
    }

    /// Sets the volume the playout applies (mute keeps it pulled and its speaking state current).
    pub fn set_volume(&mut self, gain: f32, muted: bool) {
        self.controls.gain = gain.max(0.0);
        self.controls.muted = muted;
        self.link.set_controls(self.controls.clone());
    }

    /// Replaces the speaking detector's settings (PrivMX `configureActiveSpeakerDetector`).
    pub fn configure_speaking(&mut self, detector: SpeakingDetector) {
        self.controls.speaking = detector;
        self.link.set_controls(self.controls.clone());
    }

    /// Collects what the playout reported since the last look.
    fn collect(&mut self) {
        if let Some(report) = self.link.take_report() {
            self.played = report;
        }
        self.link.take_latencies(&mut self.latencies_us);
        if self.latencies_us.len() > MAX_SAMPLES {
            let excess = self.latencies_us.len() - MAX_SAMPLES / 2;
            self.latencies_us.drain(..excess);
        }
    }

    /// Whether the sender is speaking (as of the playout's last pull).
    pub fn is_speaking(&mut self) -> bool {
        self.collect();
        self.played.speaking
    }

    /// Frames waiting in the jitter buffer (as of the playout's last pull).
    pub fn queued(&mut self) -> usize {
        self.collect();
        self.played.depth
    }

    /// The track's statistics.
    pub fn stats(&mut self) -> TrackStats {
        self.collect();
        let j: JitterStats = self.played.jitter;
        let span_us = self
            .first_arrival_us
            .map_or(0, |first| self.last_arrival_us.saturating_sub(first));
        let bitrate_kbps = if span_us == 0 {
            0.0
        } else {
            self.stats.bytes as f64 * 8.0 / span_us as f64 * 1000.0
        };
        let ms = |values: &[u64], q: f64| percentile(values, q).map(|us| us as f64 / 1000.0);
        TrackStats {
            bitrate_kbps,
            latency_p50_ms: ms(&self.latencies_us, 0.5),
            latency_p95_ms: ms(&self.latencies_us, 0.95),
            latency_p99_ms: ms(&self.latencies_us, 0.99),
            arrival_p50_ms: ms(&self.arrivals_us, 0.5),
            frames: self.played.decoded,
            late: j.late,
            lost: j.lost,
            concealed: j.concealed,
            fec_recovered: j.fec_recovered,
            jitter_ms: self.played.jitter_us / 1000.0,
            buffer_delay_ms: self.played.target_delay_us as f64 / 1000.0,
            ..self.stats.clone()
        }
    }
}

impl Drop for VoiceReceiver {
    fn drop(&mut self) {
        self.link.close();
    }
}

fn push_capped(values: &mut Vec<u64>, value: u64) {
    if values.len() >= MAX_SAMPLES {
        values.drain(..MAX_SAMPLES / 2);
    }
    values.push(value);
}

/// The value at quantile `q` (0–1) of `values`.
pub fn percentile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    Some(sorted[rank])
}

/// The dominant frequency of decoded audio (skipping the first 100 ms of start-up).
pub fn decoded_frequency(pcm: &[f32]) -> f32 {
    let skip = (SAMPLE_RATE as usize / 10).min(pcm.len());
    dominant_frequency(&pcm[skip..], SAMPLE_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::analysis::level_dbfs;
    use crate::audio::source::ToneSource;
    use streams_proto::Identity;
    use streams_proto::frame_crypto::DeviceSession;

    /// One 20 ms frame period of what `playout` plays at `now_us`.
    fn pull(playout: &mut VoicePlayout, now_us: u64) -> Vec<f32> {
        let mut out = vec![0.0; 960];
        playout.pull_at(now_us, &mut out);
        out
    }

    #[test]
    fn a_muted_sender_sends_silence_and_unmuted_the_voice_again() {
        let alice = Identity::generate();
        let secret = RoomSecret::random();
        let enc = DeviceSession::random()
            .encryptor(&secret, 0, alice.user_id(), 0)
            .unwrap();
        let mut sender = VoiceSender::new(
            Box::new(ToneSource::new(440.0, 0.5)),
            VoiceSettings::default(),
            enc,
        )
        .unwrap();
        let (mut receiver, mut playout) =
            VoiceReceiver::new(alice.user_id().clone(), FrameDuration::Ms20).unwrap();
        receiver.add_epoch(0, secret, 0);
        let mut heard = |sender: &mut VoiceSender, from: u64| -> f32 {
            let mut pcm = Vec::new();
            for i in from..from + 25 {
                let t = i * 20_000;
                receiver.accept(t + 1_000, sender.next_frame(t).unwrap());
                pcm.extend(pull(&mut playout, t + 5_000));
            }
            level_dbfs(&pcm[pcm.len() / 2..])
        };
        assert!(heard(&mut sender, 0) > -20.0);
        sender.set_muted(true);
        assert!(heard(&mut sender, 25) < -60.0, "muted is silent");
        sender.set_muted(false);
        assert!(heard(&mut sender, 50) > -20.0);
    }

    #[test]
    fn a_rotation_mid_stream_loses_no_frame() {
        let alice = Identity::generate();
        let (s0, s1) = (RoomSecret::random(), RoomSecret::random());
        let device = DeviceSession::random();
        let enc0 = device.encryptor(&s0, 0, alice.user_id(), 0).unwrap();
        let mut sender = VoiceSender::new(
            Box::new(ToneSource::new(440.0, 0.5)),
            VoiceSettings::default(),
            enc0,
        )
        .unwrap();
        let (mut receiver, mut playout) =
            VoiceReceiver::new(alice.user_id().clone(), FrameDuration::Ms20).unwrap();
        receiver.add_epoch(0, s0.clone(), 0);
        let mut pcm = Vec::new();
        for i in 0..100u64 {
            let t = i * 20_000;
            if i == 50 {
                // The sender switches at once; the receiver learns the new epoch 3 frames later.
                sender.set_encryptor(device.encryptor(&s1, 1, alice.user_id(), 0).unwrap());
            }
            if i == 53 {
                receiver.add_epoch(1, s1.clone(), t);
            }
            let frame = sender.next_frame(t).unwrap();
            receiver.accept(t + 1_000, frame);
            pcm.extend(pull(&mut playout, t + 5_000));
        }
        let stats = receiver.stats();
        assert_eq!(stats.decrypt_failures, 0);
        assert_eq!(stats.held, 3);
        assert_eq!(stats.lost, 0, "{stats:?}");
        assert_eq!(
            stats.late, 0,
            "the new key's counter restarts; the track's sequence does not"
        );
        // The three held frames play once the key arrives, three periods later (concealed meanwhile):
        // every frame is either played or still queued.
        assert_eq!(stats.packets, 100);
        assert_eq!(stats.concealed, 3, "{stats:?}");
        assert_eq!(stats.frames + receiver.queued() as u64, 100, "{stats:?}");
        assert!((decoded_frequency(&pcm) - 440.0).abs() < 3.0);
    }

    #[test]
    fn stereo_tracks_play_on_mono_receivers() {
        let alice = Identity::generate();
        let secret = RoomSecret::random();
        let device = DeviceSession::random();
        let mut sender = VoiceSender::new(
            Box::new(ToneSource::new(660.0, 0.5)),
            VoiceSettings {
                stereo: true,
                bitrate: 64_000,
                ..VoiceSettings::default()
            },
            device.encryptor(&secret, 0, alice.user_id(), 0).unwrap(),
        )
        .unwrap();
        let (mut receiver, mut playout) =
            VoiceReceiver::new(alice.user_id().clone(), FrameDuration::Ms20).unwrap();
        receiver.add_epoch(0, secret, 0);
        let mut pcm = Vec::new();
        for i in 0..50u64 {
            receiver.accept(i * 20_000 + 1_000, sender.next_frame(i * 20_000).unwrap());
            pcm.extend(pull(&mut playout, i * 20_000 + 5_000));
        }
        assert_eq!(receiver.stats().frames, 50);
        assert_eq!(pcm.len(), 50 * 960, "decoded to mono");
        assert!((decoded_frequency(&pcm) - 660.0).abs() < 3.0);
    }

    #[test]
    fn frames_of_another_member_or_a_foreign_key_never_reach_the_decoder() {
        let (alice, mallory) = (Identity::generate(), Identity::generate());
        let secret = RoomSecret::random();
        let device = DeviceSession::random();
        let mut forged = VoiceSender::new(
            Box::new(ToneSource::new(300.0, 0.5)),
            VoiceSettings::default(),
            device
                .encryptor(&RoomSecret::random(), 0, alice.user_id(), 0)
                .unwrap(),
        )
        .unwrap();
        let (mut receiver, mut playout) =
            VoiceReceiver::new(alice.user_id().clone(), FrameDuration::Ms20).unwrap();
        receiver.add_epoch(0, secret.clone(), 0);
        for i in 0..10 {
            receiver.accept(i * 20_000, forged.next_frame(i).unwrap());
            receiver.accept(i * 20_000, b"garbage".to_vec());
        }
        // Mallory's frames with her own (valid) key, delivered as Alice's track.
        let mut mallorys = VoiceSender::new(
            Box::new(ToneSource::new(300.0, 0.5)),
            VoiceSettings::default(),
            device.encryptor(&secret, 0, mallory.user_id(), 1).unwrap(),
        )
        .unwrap();
        receiver.accept(0, mallorys.next_frame(0).unwrap());
        assert_eq!(receiver.stats().decrypt_failures, 21);
        assert_eq!(receiver.stats().frames, 0);
        assert_eq!(
            pull(&mut playout, 500_000)
                .iter()
                .filter(|s| **s != 0.0)
                .count(),
            0
        );
    }
}
