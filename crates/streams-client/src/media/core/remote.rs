//! The core's remote tracks: audio receivers (decrypting frames for their playouts, which are handed
//! to the owner's [`crate::audio::handoff::VoiceOutput`]) and video receivers (decode workers
//! writing [`crate::video::receiver::VideoSlot`]s); every epoch key reaches them, decoders that lost
//! their place ask for keyframes, and their statistics and speaking state are reported.
use std::time::{Duration, Instant};

use streams_proto::wire::{TrackInfo, TrackKind, TrackSubscription};
use streams_proto::{MediaId, RoomSecret, TrackId, UserId};

use super::{Pending, RoomMediaCore};
use crate::api::Operation;
use crate::audio::analysis::SpeakingDetector;
use crate::audio::codec::FrameDuration;
use crate::audio::playout::VoicePlayout;
use crate::clock::wall_us;
use crate::media::events::MediaEvent;
use crate::media::rtc::MediaError;
use crate::media::rtc::Received;
use crate::media::voice::{TrackStats, VoiceReceiver};
use crate::video::receiver::VideoReceiver;

/// Keyframe requests for one remote track at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

pub(super) struct RemoteTrack {
    pub(super) track_id: TrackId,
    pub(super) user: UserId,
    media: RemoteMedia,
}

pub(super) enum RemoteMedia {
    Voice {
        receiver: Box<VoiceReceiver>,
        /// Until the track is negotiated and its playout handed to the output.
        playout: Option<Box<VoicePlayout>>,
    },
    Video {
        receiver: Box<VideoReceiver>,
        last_keyframe_request: Option<Instant>,
    },
}

impl RemoteTrack {
    pub(super) fn new(track_id: TrackId, user: UserId, media: RemoteMedia) -> Self {
        RemoteTrack {
            track_id,
            user,
            media,
        }
    }

    pub(super) fn is_voice(&self) -> bool {
        matches!(self.media, RemoteMedia::Voice { .. })
    }
}

impl RoomMediaCore {
    /// A receiver for a remote track, with every epoch key known so far.
    pub(super) fn remote_media(
        &self,
        now: Instant,
        user: &UserId,
        info: &TrackInfo,
    ) -> Result<RemoteMedia, MediaError> {
        let secrets = self.keys.iter().flat_map(|k| k.secrets.iter());
        if info.kind == TrackKind::Audio {
            let frame = FrameDuration::from_millis(info.frame_ms).unwrap_or(FrameDuration::Ms20);
            let (mut receiver, playout) = VoiceReceiver::new(user.clone(), frame)?;
            for (epoch, secret) in secrets {
                receiver.add_epoch(*epoch, secret.clone(), wall_us(now));
            }
            if let Some((threshold, attack, hold)) = self.speaking_config {
                receiver.configure_speaking(SpeakingDetector::new(threshold, attack, hold));
            }
            if let Some((gain, muted)) = self.volumes.get(&info.track_id) {
                receiver.set_volume(*gain, *muted);
            }
            return Ok(RemoteMedia::Voice {
                receiver: Box::new(receiver),
                playout: Some(Box::new(playout)),
            });
        }
        let mut receiver = VideoReceiver::new(
            user.clone(),
            info.track_id,
            self.options.video_rgba,
            self.options.video_observer.clone(),
        )?;
        for (epoch, secret) in secrets {
            receiver.add_epoch(*epoch, secret.clone());
        }
        Ok(RemoteMedia::Video {
            receiver: Box::new(receiver),
            last_keyframe_request: None,
        })
    }

    /// Starts receiving a negotiated remote track on `mid`.
    pub(super) fn add_remote(&mut self, mid: MediaId, mut track: RemoteTrack, kind: TrackKind) {
        match &mut track.media {
            RemoteMedia::Voice { playout, .. } => {
                if let (Some(output), Some(playout)) = (&self.options.voice_output, playout.take())
                    && let Err(e) = output.hand_over(track.track_id, *playout)
                {
                    tracing::warn!(track = %track.track_id, "not played: {e}");
                }
            }
            RemoteMedia::Video { receiver, .. } => {
                if let Ok(mut videos) = self.videos.lock() {
                    videos.insert(track.track_id, receiver.slot());
                }
            }
        }
        self.emit(MediaEvent::RemoteTrackAdded {
            track_id: track.track_id,
            user_id: track.user.clone(),
            kind,
        });
        self.remote.insert(mid, track);
    }

    /// A frame arrived on a receiving m-line.
    pub(super) fn deliver(&mut self, received: Received) {
        let arrived_us = wall_us(received.arrived);
        match self.remote.get_mut(&received.mid).map(|t| &mut t.media) {
            Some(RemoteMedia::Voice { receiver, .. }) => receiver.accept(arrived_us, received.data),
            Some(RemoteMedia::Video { receiver, .. }) => {
                receiver.accept(arrived_us, &received.data)
            }
            None => {}
        }
    }

    /// Gives every receiver epoch keys it did not have (receivers hold frames until they have
    /// the key).
    pub(super) fn give_epochs(&mut self, now: Instant, fresh: &[(u64, RoomSecret)]) {
        for track in self.remote.values_mut() {
            for (epoch, secret) in fresh {
                match &mut track.media {
                    RemoteMedia::Voice { receiver, .. } => {
                        receiver.add_epoch(*epoch, secret.clone(), wall_us(now));
                    }
                    RemoteMedia::Video { receiver, .. } => {
                        receiver.add_epoch(*epoch, secret.clone());
                    }
                }
            }
        }
    }

    /// Stops receiving the remote tracks whose id matches; returns how many there were.
    pub(super) fn drop_remote_where(&mut self, matches: impl Fn(&TrackId) -> bool) -> usize {
        let gone: Vec<MediaId> = self
            .remote
            .iter()
            .filter(|(_, t)| matches(&t.track_id))
            .map(|(mid, _)| *mid)
            .collect();
        for mid in &gone {
            let Some(track) = self.remote.remove(mid) else {
                continue;
            };
            if let Ok(mut videos) = self.videos.lock() {
                videos.remove(&track.track_id);
            }
            self.speaking.remove(&track.track_id);
            // The track's final figures (the periodic report may be up to a second old).
            // Dropping the receiver ends the voice at the output.
            let last = match track.media {
                RemoteMedia::Voice { mut receiver, .. } => {
                    MediaEvent::Stats(vec![(track.track_id, receiver.stats())])
                }
                RemoteMedia::Video { receiver, .. } => {
                    MediaEvent::VideoStats(vec![(track.track_id, receiver.finish())])
                }
            };
            self.emit(last);
            self.emit(MediaEvent::RemoteTrackRemoved {
                track_id: track.track_id,
            });
        }
        gone.len()
    }

    /// Tells the bridge which tracks this session still receives, after tracks were dropped (one
    /// such request at a time, and none while an offer is out: the bridge applies them in order).
    pub(super) fn send_subscriptions(&mut self) {
        if !self.resubscribe
            || self.in_flight(|p| matches!(p, Pending::Negotiate(_) | Pending::SetSubscriptions))
        {
            return;
        }
        self.resubscribe = false;
        let subscribe = self
            .remote
            .iter()
            .map(|(mid, t)| TrackSubscription {
                mid: *mid,
                track_id: t.track_id,
            })
            .collect();
        let op = Operation::SetSubscriptions {
            room_id: self.room_id.clone(),
            subscribe,
        };
        self.signal(op, Pending::SetSubscriptions);
    }

    /// Speaking detection settings for every remote audio track, now and later.
    pub(super) fn configure_speaking(&mut self, threshold_dbfs: f32, attack_ms: u64, hold_ms: u64) {
        self.speaking_config = Some((threshold_dbfs, attack_ms, hold_ms));
        for track in self.remote.values_mut() {
            if let RemoteMedia::Voice { receiver, .. } = &mut track.media {
                receiver.configure_speaking(SpeakingDetector::new(
                    threshold_dbfs,
                    attack_ms,
                    hold_ms,
                ));
            }
        }
    }

    /// A remote track's volume, now and for a track of that id received later.
    pub(super) fn set_volume(&mut self, track_id: TrackId, gain: f32, muted: bool) {
        for track in self.remote.values_mut() {
            if track.track_id == track_id
                && let RemoteMedia::Voice { receiver, .. } = &mut track.media
            {
                receiver.set_volume(gain, muted);
            }
        }
        self.volumes.insert(track_id, (gain, muted));
    }

    /// Decoders that lost their place ask their sender for a keyframe (PLI), at most every
    /// [`KEYFRAME_REQUEST_INTERVAL`].
    pub(super) fn request_keyframes(&mut self, now: Instant) {
        let mut requests = Vec::new();
        for (mid, track) in &mut self.remote {
            if let RemoteMedia::Video {
                receiver,
                last_keyframe_request,
            } = &mut track.media
                && receiver.take_keyframe_request()
                && last_keyframe_request.is_none_or(|t| now - t >= KEYFRAME_REQUEST_INTERVAL)
            {
                *last_keyframe_request = Some(now);
                receiver.keyframe_requested();
                requests.push(*mid);
            }
        }
        for mid in requests {
            if let Err(e) = self.peer.request_keyframe(now, mid) {
                tracing::debug!("keyframe request on {mid} failed: {e}");
            }
        }
    }

    /// Speaking changes since the last look.
    pub(super) fn report_speaking(&mut self) {
        let mut changes = Vec::new();
        for track in self.remote.values_mut() {
            let RemoteMedia::Voice { receiver, .. } = &mut track.media else {
                continue;
            };
            let speaking = receiver.is_speaking();
            let before = self.speaking.insert(track.track_id, speaking);
            if before.unwrap_or(false) != speaking {
                changes.push(MediaEvent::Speaking {
                    track_id: track.track_id,
                    user_id: track.user.clone(),
                    speaking,
                });
            }
        }
        for change in changes {
            self.emit(change);
        }
    }

    /// The statistics of every remote voice now.
    pub fn voice_stats(&mut self) -> Vec<(TrackId, TrackStats)> {
        self.remote
            .values_mut()
            .filter_map(|t| match &mut t.media {
                RemoteMedia::Voice { receiver, .. } => Some((t.track_id, receiver.stats())),
                RemoteMedia::Video { .. } => None,
            })
            .collect()
    }

    /// Statistics of every remote track.
    pub(super) fn report_remote(&mut self) {
        let audio = self.voice_stats();
        let video: Vec<_> = self
            .remote
            .values()
            .filter_map(|t| match &t.media {
                RemoteMedia::Video { receiver, .. } => Some((t.track_id, receiver.stats())),
                RemoteMedia::Voice { .. } => None,
            })
            .collect();
        self.emit(MediaEvent::Stats(audio));
        if !video.is_empty() {
            self.emit(MediaEvent::VideoStats(video));
        }
    }
}
