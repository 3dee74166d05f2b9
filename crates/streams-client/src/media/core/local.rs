//! The core's local tracks: audio paced like a capture device from the `now` it is given (a frame
//! leaves when its last sample exists), video from capture workers whose frames are sent as they
//! come, both encrypted with the current epoch's key and switched at once on a new epoch. Video
//! bitrates follow the bandwidth estimate, and subscribers' keyframe requests reach the encoder.
use std::time::{Duration, Instant};

use streams_proto::frame_crypto::FrameEncryptor;
use streams_proto::wire::TrackKind;

use super::RoomMediaCore;
use crate::audio::codec::VoiceSettings;
use crate::audio::source::AudioSource;
use crate::clock::wall_us;
use crate::media::events::MediaEvent;
use crate::media::rtc::MediaKind;
use crate::media::voice::VoiceSender;
use crate::video::VideoSource;
use crate::video::codec::VideoSettings;
use crate::video::sender::VideoSender;
use streams_proto::MediaId;

/// Most frames a local track sends at once to catch up; beyond that it skips ahead.
const MAX_BURST_FRAMES: u64 = 5;
/// What an audio track is assumed to use when the bandwidth estimate is shared out, bits/s.
const AUDIO_SHARE_BPS: u64 = 48_000;
/// The share of the bandwidth estimate that encoders are given, in percent: RTP/SRTP and IP headers,
/// retransmissions and the encoder's overshoot of its target (about 10 %) need the rest. At 100 %
/// a link at capacity kept its queue full, and every keyframe lost part of itself to it.
const ENCODER_SHARE_PCT: u64 = 85;
/// A video track stops capturing while its frames would wait longer than this to leave (WebRTC's
/// frame dropper): str0m paces at 1.1 × the estimate, and rate control overshoots.
const MAX_SEND_QUEUE: Duration = Duration::from_millis(100);

pub(super) struct LocalTrack {
    pub(super) index: u8,
    /// Removed by its owner: no more frames; its m-line is made inactive at the next offer.
    pub(super) removed: bool,
    /// The inactive m-line has been negotiated.
    pub(super) retired: bool,
    epochs: Vec<u64>,
    pub(super) mid: Option<MediaId>,
    media: LocalMedia,
}

enum LocalMedia {
    Voice {
        sender: VoiceSender,
        frame_ms: u32,
        /// When the first frame's first sample was taken, monotonic and as wall time.
        start: Option<(Instant, u64)>,
    },
    Video {
        sender: VideoSender,
        kind: TrackKind,
        max_bitrate: u32,
        fps: u32,
        /// What this track has handed to the pacer and the pacer cannot have sent yet, bytes.
        backlog: f64,
        backlog_at: Instant,
    },
}

impl LocalTrack {
    pub(super) fn key_id(&self) -> u64 {
        match &self.media {
            LocalMedia::Voice { sender, .. } => sender.key_id(),
            LocalMedia::Video { sender, .. } => sender.key_id(),
        }
    }

    pub(super) fn kind(&self) -> TrackKind {
        match &self.media {
            LocalMedia::Voice { .. } => TrackKind::Audio,
            LocalMedia::Video { kind, .. } => *kind,
        }
    }

    pub(super) fn media_kind(&self) -> MediaKind {
        match self.kind() {
            TrackKind::Audio => MediaKind::Audio,
            TrackKind::Video | TrackKind::Screen => MediaKind::Video,
        }
    }

    pub(super) fn frame_ms(&self) -> u32 {
        match &self.media {
            LocalMedia::Voice { frame_ms, .. } => *frame_ms,
            LocalMedia::Video { fps, .. } => 1000 / fps.max(&1),
        }
    }

    fn frames(&self) -> u64 {
        match &self.media {
            LocalMedia::Voice { sender, .. } => sender.frames(),
            LocalMedia::Video { sender, .. } => sender.frames(),
        }
    }

    fn set_encryptor(&mut self, encryptor: FrameEncryptor) {
        match &mut self.media {
            LocalMedia::Voice { sender, .. } => sender.set_encryptor(encryptor),
            LocalMedia::Video { sender, .. } => sender.set_encryptor(encryptor),
        }
    }

    /// When this audio track's next frame is due, once it has started.
    fn audio_due(&self) -> Option<Instant> {
        match &self.media {
            LocalMedia::Voice {
                sender,
                frame_ms,
                start: Some((start, _)),
            } if !self.removed => {
                Some(*start + Duration::from_millis(u64::from(*frame_ms) * (sender.frames() + 1)))
            }
            _ => None,
        }
    }
}

impl RoomMediaCore {
    pub(super) fn add_audio(&mut self, source: Box<dyn AudioSource>, settings: VoiceSettings) {
        let Some((index, encryptor)) = self.new_local() else {
            return;
        };
        let frame_ms = settings.frame.millis();
        match VoiceSender::new(source, settings, encryptor) {
            Ok(sender) => self.push_local(
                index,
                LocalMedia::Voice {
                    sender,
                    frame_ms,
                    start: None,
                },
            ),
            Err(e) => self.emit(MediaEvent::LocalTrackFailed {
                index,
                reason: e.to_string(),
            }),
        }
    }

    pub(super) fn add_video(
        &mut self,
        now: Instant,
        source: Box<dyn VideoSource>,
        mut settings: VideoSettings,
        kind: TrackKind,
    ) {
        // A new encoder starts within the estimate, not above it: what exceeds the pacer's rate
        // waits in its queue, and every later frame behind it.
        let audio = self
            .local
            .iter()
            .filter(|t| !t.removed && t.kind() == TrackKind::Audio)
            .count() as u64
            * AUDIO_SHARE_BPS;
        let within = (self.estimate * ENCODER_SHARE_PCT / 100).saturating_sub(audio);
        settings.start_bitrate = settings
            .start_bitrate
            .min(within.min(u64::from(u32::MAX)) as u32)
            .max(settings.min_bitrate);
        let Some((index, encryptor)) = self.new_local() else {
            return;
        };
        let fps = source.frame_rate();
        let wake = std::sync::Arc::clone(&self.wake);
        match VideoSender::start(source, settings, encryptor, Box::new(move || wake())) {
            Ok(sender) => {
                tracing::info!(room = %self.room_id, "publishing {}", sender.describe());
                let media = LocalMedia::Video {
                    sender,
                    kind,
                    max_bitrate: settings.max_bitrate,
                    fps,
                    backlog: 0.0,
                    backlog_at: now,
                };
                self.push_local(index, media);
                self.update_desired_bitrate();
                self.share_estimate();
            }
            Err(e) => self.emit(MediaEvent::LocalTrackFailed {
                index,
                reason: e.to_string(),
            }),
        }
    }

    /// The index and encryptor of a new local track (indexes are never reused: the SFrame key id
    /// depends on them). `None`, with a [`MediaEvent::LocalTrackFailed`], when none can be made.
    fn new_local(&mut self) -> Option<(u8, FrameEncryptor)> {
        let index = self.next_local;
        let Some(next) = index.checked_add(1) else {
            self.emit(MediaEvent::LocalTrackFailed {
                index,
                reason: "too many local tracks".into(),
            });
            return None;
        };
        self.next_local = next;
        let keys = self.keys.as_ref()?;
        let encryptor = keys.secrets.get(&keys.epoch).map(|secret| {
            self.device
                .encryptor(secret, keys.epoch, self.identity.user_id(), index)
        });
        match encryptor {
            Some(Ok(encryptor)) => Some((index, encryptor)),
            Some(Err(e)) => {
                self.emit(MediaEvent::LocalTrackFailed {
                    index,
                    reason: e.to_string(),
                });
                None
            }
            None => {
                self.emit(MediaEvent::LocalTrackFailed {
                    index,
                    reason: "no key for the room's current epoch".into(),
                });
                None
            }
        }
    }

    fn push_local(&mut self, index: u8, media: LocalMedia) {
        let epoch = self.keys.as_ref().map_or(0, |k| k.epoch);
        self.local.push(LocalTrack {
            index,
            removed: false,
            retired: false,
            epochs: vec![epoch],
            mid: None,
            media,
        });
    }

    pub(super) fn mute_audio(&mut self, muted: bool) {
        for track in &mut self.local {
            if let LocalMedia::Voice { sender, .. } = &mut track.media {
                sender.set_muted(muted);
            }
        }
    }

    /// A new epoch: every sender encrypts with its key from its next frame.
    pub(super) fn switch_senders(&mut self) {
        let Some(keys) = &self.keys else { return };
        let Some(secret) = keys.secrets.get(&keys.epoch) else {
            return;
        };
        let mut failed = Vec::new();
        for track in &mut self.local {
            let next =
                self.device
                    .encryptor(secret, keys.epoch, self.identity.user_id(), track.index);
            match next {
                Ok(encryptor) => {
                    track.set_encryptor(encryptor);
                    track.epochs.push(keys.epoch);
                }
                Err(e) => failed.push((track.index, e.to_string())),
            }
        }
        for (index, reason) in failed {
            self.fail_local(index, reason);
        }
    }

    /// A local track that cannot go on is unpublished.
    fn fail_local(&mut self, index: u8, reason: String) {
        tracing::warn!(room = %self.room_id, index, "local track failed: {reason}");
        if let Some(track) = self.local.iter_mut().find(|t| t.index == index) {
            track.removed = true;
        }
        self.emit(MediaEvent::LocalTrackFailed { index, reason });
    }

    /// When the next local audio frame is due.
    pub(super) fn next_audio_due(&self) -> Option<Instant> {
        if !self.peer.is_connected() {
            return None;
        }
        self.local.iter().filter_map(LocalTrack::audio_due).min()
    }

    /// Sends every local audio frame whose last sample exists by `now` (once connected).
    pub(super) fn send_due_frames(&mut self, now: Instant) {
        if !self.peer.is_connected() {
            return;
        }
        let mut failed = Vec::new();
        for track in self.local.iter_mut().filter(|t| !t.removed) {
            let Some(mid) = track.mid else {
                continue;
            };
            let LocalMedia::Voice {
                sender,
                frame_ms,
                start: track_start,
            } = &mut track.media
            else {
                continue;
            };
            let (start, start_us) = *track_start.get_or_insert_with(|| (now, wall_us(now)));
            let frame = u64::from(*frame_ms);
            // After a stall (a busy machine) skip ahead rather than burst: a burst would sit in
            // every receiver's buffer as extra latency.
            let behind = now.saturating_duration_since(start).as_millis() as u64 / frame;
            if behind > sender.frames() + MAX_BURST_FRAMES {
                let skip = behind - sender.frames();
                *track_start = Some((
                    start + Duration::from_millis(frame * skip),
                    start_us + frame * skip * 1000,
                ));
                continue;
            }
            loop {
                let index = sender.frames();
                if now < start + Duration::from_millis(frame * (index + 1)) {
                    break;
                }
                let rtp_time = sender.rtp_time();
                let protected = match sender.next_frame(start_us + index * frame * 1000) {
                    Ok(protected) => protected,
                    Err(e) => {
                        failed.push((track.index, e.to_string()));
                        break;
                    }
                };
                if let Err(e) = self.peer.write_audio(now, mid, rtp_time, &protected) {
                    tracing::debug!(%mid, "audio frame not sent: {e}");
                }
            }
        }
        for (index, reason) in failed {
            self.fail_local(index, reason);
        }
    }

    /// Sends the video frames the capture workers have ready; a failed source unpublishes its
    /// track. Until the connection is up and a track negotiated, its capture is paused: pictures
    /// taken then could only wait or be dropped, and sending starts with a fresh keyframe instead.
    pub(super) fn send_video(&mut self, now: Instant) {
        let ready = self.peer.is_connected();
        let mut failed = Vec::new();
        // The pacer's rate (str0m: 1.1 × the estimate), bytes/s, shared by the video tracks.
        let videos = self
            .local
            .iter()
            .filter(|t| !t.removed && matches!(t.media, LocalMedia::Video { .. }))
            .count()
            .max(1);
        let drain_rate = self.estimate as f64 * 0.95 / 8.0 / videos as f64;
        for track in self.local.iter_mut().filter(|t| !t.removed) {
            let LocalMedia::Video {
                sender,
                backlog,
                backlog_at,
                ..
            } = &mut track.media
            else {
                continue;
            };
            let Some(mid) = track.mid.filter(|_| ready) else {
                if let Err(e) = sender.pause() {
                    failed.push((track.index, e.to_string()));
                }
                continue;
            };
            let drained = drain_rate * now.saturating_duration_since(*backlog_at).as_secs_f64();
            *backlog = (*backlog - drained).max(0.0);
            *backlog_at = now;
            match sender.poll() {
                Ok(frames) => {
                    for frame in frames {
                        // Payload plus about 5% of RTP/SRTP/UDP headers.
                        *backlog += frame.data.len() as f64 * 1.08;
                        if let Err(e) = self.peer.write_video(now, mid, frame.rtp_time, &frame.data)
                        {
                            tracing::debug!(%mid, "video frame not sent: {e}");
                        }
                    }
                }
                Err(e) => failed.push((track.index, e.to_string())),
            }
            sender.set_hold(*backlog / drain_rate > MAX_SEND_QUEUE.as_secs_f64());
        }
        for (index, reason) in failed {
            self.fail_local(index, reason);
        }
    }

    /// A subscriber of the sending m-line `mid` asked for a keyframe.
    pub(super) fn keyframe_requested(&mut self, mid: MediaId) {
        for track in &self.local {
            if let (Some(m), LocalMedia::Video { sender, .. }) = (track.mid, &track.media)
                && m == mid
            {
                sender.request_keyframe();
            }
        }
    }

    /// Gives the encoders their share of the bandwidth estimate, by their ceilings.
    pub(super) fn share_estimate(&self) {
        let audio = self
            .local
            .iter()
            .filter(|t| !t.removed && t.kind() == TrackKind::Audio)
            .count() as u64
            * AUDIO_SHARE_BPS;
        let video: Vec<(&VideoSender, u32)> = self
            .local
            .iter()
            .filter(|t| !t.removed)
            .filter_map(|t| match &t.media {
                LocalMedia::Video {
                    sender,
                    max_bitrate,
                    ..
                } => Some((sender, *max_bitrate)),
                LocalMedia::Voice { .. } => None,
            })
            .collect();
        let total: u64 = video.iter().map(|(_, max)| u64::from(*max)).sum();
        let available = (self.estimate * ENCODER_SHARE_PCT / 100).saturating_sub(audio);
        for (sender, max) in video {
            let share = available * u64::from(max) / total.max(1);
            sender.set_bitrate(share.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// What the bandwidth estimator should probe for: enough for every video track at its highest
    /// bitrate, given the encoders' share of the estimate.
    fn update_desired_bitrate(&mut self) {
        let desired: u64 = self
            .local
            .iter()
            .filter(|t| !t.removed)
            .map(|t| match &t.media {
                LocalMedia::Video { max_bitrate, .. } => u64::from(*max_bitrate),
                LocalMedia::Voice { .. } => AUDIO_SHARE_BPS,
            })
            .sum();
        self.peer
            .set_desired_bitrate(desired * 100 / ENCODER_SHARE_PCT);
    }

    /// What every local track has sent.
    pub(super) fn report_local(&mut self) {
        let reports: Vec<MediaEvent> = self
            .local
            .iter()
            .map(|track| MediaEvent::LocalStats {
                index: track.index,
                frames: track.frames(),
                epochs: track.epochs.clone(),
                video: match &track.media {
                    LocalMedia::Video { sender, .. } => Some(sender.stats()),
                    LocalMedia::Voice { .. } => None,
                },
            })
            .collect();
        for report in reports {
            self.emit(report);
        }
    }
}
