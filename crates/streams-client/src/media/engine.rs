//! [`RoomMedia`]: one room's media on a thread of its own, driven by commands and reporting events, so
//! a game loop never blocks on it. It owns the WebRTC session with the SFU, the local audio tracks
//! (paced like a capture device, encrypted with the current epoch's key and switched at once on a new
//! epoch), and the remote audio tracks, whose receivers feed a [`Mixer`] that the output device pulls.
//! It follows the room: new streams are subscribed (unless told otherwise), unpublished ones dropped,
//! and removal from the room ends it.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use streams_proto::frame_crypto::DeviceSession;
use streams_proto::wire::{EventScope, StreamInfo, TrackAnnounce, TrackKind, TrackSubscription};
use streams_proto::{Identity, RoomId, RoomRecord, RoomSecret, UserId};

use crate::api::{Operation, Reply, RoomEvent};
use crate::audio::analysis::SpeakingDetector;
use crate::audio::codec::{FrameDuration, VoiceSettings};
use crate::audio::source::AudioSource;
use crate::client::ClientHandle;
use crate::error::ClientError;
use crate::media::mixer::Mixer;
use crate::media::session::MediaSession;
use crate::media::voice::{TrackStats, VoiceReceiver, VoiceSender};
use crate::media::voice_session::{VoiceError, local_ip_towards, now_us};

/// Most frames a local track sends at once to catch up; beyond that it skips ahead.
const MAX_BURST_FRAMES: u64 = 5;

/// What the owner asks of the media engine.
pub enum MediaCommand {
    /// Add and publish a local audio track.
    AddAudioTrack {
        /// Where its samples come from.
        source: Box<dyn AudioSource>,
        /// Codec settings.
        settings: VoiceSettings,
    },
    /// Stop sending a local track and unpublish it (by the index its `LocalTrackPublished` gave).
    RemoveTrack(u8),
    /// Receive every remote audio track (`true`, the default) or none (`false`).
    SubscribeAll(bool),
    /// Set a remote track's volume and mute state.
    SetVolume {
        /// The track.
        track_id: String,
        /// Linear gain.
        gain: f32,
        /// Muted.
        muted: bool,
    },
    /// Configure speaking detection for every remote track (PrivMX `configureActiveSpeakerDetector`).
    ConfigureSpeaking {
        /// Level above which a frame counts as voiced, dBFS.
        threshold_dbfs: f32,
        /// How long voice must last before speaking starts, ms.
        attack_ms: u64,
        /// How long quiet must last before speaking ends, ms.
        hold_ms: u64,
    },
    /// Stop everything and leave the room's media.
    Stop,
}

/// What the media engine reports.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaEvent {
    /// A local track is published.
    LocalTrackPublished {
        /// Its index in this session.
        index: u8,
        /// Its SFrame key id.
        key_id: u64,
    },
    /// A remote track is being received.
    RemoteTrackAdded {
        /// The track.
        track_id: String,
        /// Its sender.
        user_id: UserId,
        /// What it carries.
        kind: TrackKind,
    },
    /// A remote track ended.
    RemoteTrackRemoved {
        /// The track.
        track_id: String,
    },
    /// A remote sender started or stopped speaking.
    Speaking {
        /// The track.
        track_id: String,
        /// Its sender.
        user_id: UserId,
        /// Speaking now.
        speaking: bool,
    },
    /// Statistics of every remote track (about once a second).
    Stats(Vec<(String, TrackStats)>),
    /// What a local track has sent (about once a second, and when the engine stops).
    LocalStats {
        /// The track's index.
        index: u8,
        /// Frames sent.
        frames: u64,
        /// Key epochs it has used, in order.
        epochs: Vec<u64>,
    },
    /// The bridge refused a negotiation (a stream went away, a right was revoked); the engine goes
    /// on and retries from the current listing.
    NegotiationFailed(String),
    /// The engine stopped.
    Stopped {
        /// Why.
        reason: String,
    },
}

/// A room's media, running on its own thread. Dropping it stops it.
pub struct RoomMedia {
    commands: Option<Sender<MediaCommand>>,
    events: Receiver<MediaEvent>,
    mixer: Arc<Mutex<Mixer>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RoomMedia {
    /// Starts the media of `room_id` for `identity`, using `client` for signaling.
    pub fn start(
        client: ClientHandle,
        identity: Identity,
        bridge_url: &str,
        room_id: RoomId,
    ) -> Result<Self, VoiceError> {
        let room_events = client.tap_room_events(256)?;
        client.call(Operation::Subscribe(EventScope::Room(room_id.clone())))?;
        let room = match client.call(Operation::GetRoom(room_id.clone()))? {
            Reply::Room(room) => room,
            other => return Err(ClientError::Unexpected(format!("{other:?}")).into()),
        };
        let session = MediaSession::bind(local_ip_towards(bridge_url))?;
        let (commands, command_rx) = crossbeam_channel::bounded(64);
        let (event_tx, events) = crossbeam_channel::bounded(1024);
        let mixer = Arc::new(Mutex::new(Mixer::default()));
        let mut engine = Engine {
            client,
            secrets: secrets(&room.record, &identity),
            epoch: room.key_epoch,
            identity,
            room_id,
            session,
            device: DeviceSession::random(),
            local: Vec::new(),
            remote: HashMap::new(),
            pending_streams: Vec::new(),
            subscribe_all: true,
            mixer: Arc::clone(&mixer),
            events: event_tx,
            speaking: HashMap::new(),
            speaking_config: None,
            last_stats: Instant::now(),
            negotiate_after: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("streams-room-media".into())
            .spawn(move || {
                let reason = match engine.run(&command_rx, &room_events) {
                    Ok(reason) => reason,
                    Err(e) => e.to_string(),
                };
                engine.close();
                engine.emit(MediaEvent::Stopped { reason });
            })
            .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
        Ok(RoomMedia {
            commands: Some(commands),
            events,
            mixer,
            thread: Some(thread),
        })
    }

    /// Sends a command (non-blocking; `false` if the engine has stopped or is flooded).
    pub fn send(&self, command: MediaCommand) -> bool {
        self.commands
            .as_ref()
            .is_some_and(|c| c.try_send(command).is_ok())
    }

    /// The engine's events.
    pub fn events(&self) -> &Receiver<MediaEvent> {
        &self.events
    }

    /// The mix of remote tracks, for an output sink or any puller.
    pub fn mixer(&self) -> Arc<Mutex<Mixer>> {
        Arc::clone(&self.mixer)
    }
}

impl Drop for RoomMedia {
    fn drop(&mut self) {
        // Closing the channel stops the engine even when its queue is full.
        if let Some(commands) = self.commands.take() {
            let _ = commands.try_send(MediaCommand::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn secrets(record: &RoomRecord, identity: &Identity) -> HashMap<u64, RoomSecret> {
    record
        .epochs
        .iter()
        .filter_map(|e| e.unwrap_secret(identity).ok().map(|s| (e.epoch, s)))
        .collect()
}

struct LocalTrack {
    index: u8,
    /// Removed by its owner: no more frames; its m-line is made inactive at the next offer.
    removed: bool,
    /// The inactive m-line has been negotiated.
    retired: bool,
    epochs: Vec<u64>,
    mid: Option<String>,
    sender: VoiceSender,
    frame_ms: u32,
    start: Option<(Instant, u64)>,
}

struct RemoteTrack {
    track_id: String,
    user: UserId,
    receiver: Arc<Mutex<VoiceReceiver>>,
}

struct Engine {
    client: ClientHandle,
    identity: Identity,
    room_id: RoomId,
    session: MediaSession,
    device: DeviceSession,
    epoch: u64,
    secrets: HashMap<u64, RoomSecret>,
    local: Vec<LocalTrack>,
    /// By receiving mid.
    remote: HashMap<String, RemoteTrack>,
    pending_streams: Vec<StreamInfo>,
    subscribe_all: bool,
    mixer: Arc<Mutex<Mixer>>,
    events: Sender<MediaEvent>,
    speaking: HashMap<String, bool>,
    speaking_config: Option<(f32, u64, u64)>,
    last_stats: Instant,
    /// No negotiation before this (after a refused one).
    negotiate_after: Instant,
}

impl Engine {
    fn emit(&self, event: MediaEvent) {
        if let Err(TrySendError::Full(_)) = self.events.try_send(event) {
            tracing::debug!("media event dropped: the owner is not reading events");
        }
    }

    fn run(
        &mut self,
        commands: &Receiver<MediaCommand>,
        room_events: &Receiver<RoomEvent>,
    ) -> Result<String, VoiceError> {
        if let Reply::Streams(streams) = self
            .client
            .call(Operation::ListStreams(self.room_id.clone()))?
        {
            self.pending_streams = streams;
        }
        loop {
            loop {
                match commands.try_recv() {
                    Ok(MediaCommand::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        return Ok("stopped by its owner".into());
                    }
                    Ok(other) => self.command(other)?,
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            while let Ok(event) = room_events.try_recv() {
                if let Some(reason) = self.room_event(event)? {
                    return Ok(reason);
                }
            }
            self.negotiate()?;
            self.send_due_frames()?;
            self.report();
            let deadline = self.next_deadline();
            for received in self.session.run_until_media(deadline)? {
                if let Some(track) = self.remote.get(&received.mid)
                    && let Ok(mut r) = track.receiver.lock()
                {
                    r.accept(now_us(), received.data);
                }
            }
            if self.session.has_failed() {
                return Ok("the media connection failed".into());
            }
        }
    }

    fn command(&mut self, command: MediaCommand) -> Result<(), VoiceError> {
        match command {
            MediaCommand::AddAudioTrack { source, settings } => {
                let index = u8::try_from(self.local.len())
                    .map_err(|_| VoiceError::Pipeline("too many local tracks".into()))?;
                let secret = self.secrets.get(&self.epoch).ok_or_else(|| {
                    VoiceError::Pipeline("no key for the room's current epoch".into())
                })?;
                let encryptor = self
                    .device
                    .encryptor(secret, self.epoch, self.identity.user_id(), index)
                    .map_err(ClientError::from)?;
                let frame_ms = settings.frame.millis();
                let sender = VoiceSender::new(source, settings, encryptor)
                    .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
                self.local.push(LocalTrack {
                    index,
                    removed: false,
                    retired: false,
                    epochs: vec![self.epoch],
                    mid: None,
                    sender,
                    frame_ms,
                    start: None,
                });
            }
            MediaCommand::RemoveTrack(index) => {
                if let Some(track) = self.local.iter_mut().find(|t| t.index == index) {
                    track.removed = true;
                }
            }
            MediaCommand::SubscribeAll(all) => {
                self.subscribe_all = all;
                if !all {
                    self.pending_streams.clear();
                    if self.drop_remote_where(|_| true) > 0 {
                        self.client.call(Operation::SetSubscriptions {
                            room_id: self.room_id.clone(),
                            subscribe: vec![],
                        })?;
                    }
                } else if let Reply::Streams(streams) = self
                    .client
                    .call(Operation::ListStreams(self.room_id.clone()))?
                {
                    self.pending_streams = streams;
                }
            }
            MediaCommand::SetVolume {
                track_id,
                gain,
                muted,
            } => {
                if let Ok(mut mixer) = self.mixer.lock() {
                    mixer.set(&track_id, gain, muted);
                }
            }
            MediaCommand::ConfigureSpeaking {
                threshold_dbfs,
                attack_ms,
                hold_ms,
            } => {
                self.speaking_config = Some((threshold_dbfs, attack_ms, hold_ms));
                for track in self.remote.values() {
                    if let Ok(mut r) = track.receiver.lock() {
                        r.configure_speaking(SpeakingDetector::new(
                            threshold_dbfs,
                            attack_ms,
                            hold_ms,
                        ));
                    }
                }
            }
            MediaCommand::Stop => {}
        }
        Ok(())
    }

    /// Returns a reason when the engine must stop.
    fn room_event(&mut self, event: RoomEvent) -> Result<Option<String>, VoiceError> {
        match event {
            RoomEvent::StreamUpdated { room_id, stream } if room_id == self.room_id => {
                // Tracks the stream no longer has end here.
                let prefix = format!("{}:", stream.stream_id);
                self.drop_remote_where(|track| {
                    track.starts_with(&prefix) && !stream.tracks.iter().any(|s| s.track_id == track)
                });
                if self.subscribe_all {
                    self.pending_streams.push(stream);
                }
            }
            RoomEvent::StreamPublished { room_id, stream }
                if room_id == self.room_id && self.subscribe_all =>
            {
                self.pending_streams.push(stream);
            }
            RoomEvent::StreamUnpublished { room_id, stream_id } if room_id == self.room_id => {
                let prefix = format!("{stream_id}:");
                self.drop_remote_where(|track| track.starts_with(&prefix));
            }
            RoomEvent::Updated(room) if room.id == self.room_id => {
                // Only epochs not seen before need unwrapping (one HPKE open each).
                let fresh: Vec<(u64, RoomSecret)> = room
                    .record
                    .epochs
                    .iter()
                    .filter(|e| !self.secrets.contains_key(&e.epoch))
                    .filter_map(|e| e.unwrap_secret(&self.identity).ok().map(|s| (e.epoch, s)))
                    .collect();
                for (epoch, secret) in fresh {
                    for track in self.remote.values() {
                        if let Ok(mut r) = track.receiver.lock() {
                            r.add_epoch(epoch, secret.clone(), now_us());
                        }
                    }
                    self.secrets.insert(epoch, secret);
                }
                if room.key_epoch > self.epoch {
                    let Some(secret) = self.secrets.get(&room.key_epoch).cloned() else {
                        return Ok(Some("removed from the room".into()));
                    };
                    self.epoch = room.key_epoch;
                    // Senders switch at once; receivers hold frames until they have the key.
                    for track in &mut self.local {
                        let next = self
                            .device
                            .encryptor(&secret, self.epoch, self.identity.user_id(), track.index)
                            .map_err(ClientError::from)?;
                        track.sender.set_encryptor(next);
                        track.epochs.push(self.epoch);
                    }
                }
            }
            RoomEvent::RemovedFrom { room_id, .. } | RoomEvent::Deleted { room_id, .. }
                if room_id == self.room_id =>
            {
                return Ok(Some("no longer in the room".into()));
            }
            _ => {}
        }
        Ok(None)
    }

    /// Stops receiving the remote tracks whose id matches; returns how many there were.
    fn drop_remote_where(&mut self, matches: impl Fn(&str) -> bool) -> usize {
        let gone: Vec<String> = self
            .remote
            .iter()
            .filter(|(_, t)| matches(&t.track_id))
            .map(|(mid, _)| mid.clone())
            .collect();
        for mid in &gone {
            if let Some(track) = self.remote.remove(mid) {
                if let Ok(mut mixer) = self.mixer.lock() {
                    mixer.remove(&track.track_id);
                }
                self.speaking.remove(&track.track_id);
                self.emit(MediaEvent::RemoteTrackRemoved {
                    track_id: track.track_id,
                });
            }
        }
        gone.len()
    }

    /// Offers new m-lines for local tracks without one and for new remote audio tracks.
    fn negotiate(&mut self) -> Result<(), VoiceError> {
        let me = self.identity.user_id().clone();
        let mut known: Vec<String> = self.remote.values().map(|t| t.track_id.clone()).collect();
        let fresh: Vec<(UserId, streams_proto::wire::TrackInfo)> = self
            .pending_streams
            .drain(..)
            .filter(|s| s.user_id != me)
            .flat_map(|s| {
                let user = s.user_id.clone();
                s.tracks.into_iter().map(move |t| (user.clone(), t))
            })
            .filter(|(_, t)| {
                // Each track once, even if both the listing and an event announced it.
                let new = t.kind == TrackKind::Audio && !known.contains(&t.track_id);
                if new {
                    known.push(t.track_id.clone());
                }
                new
            })
            .collect();
        let unsent = self
            .local
            .iter()
            .filter(|t| t.mid.is_none() && !t.removed)
            .count();
        let retiring: Vec<String> = self
            .local
            .iter()
            .filter(|t| t.removed && !t.retired)
            .filter_map(|t| t.mid.clone())
            .collect();
        if fresh.is_empty() && unsent == 0 && retiring.is_empty() {
            return Ok(());
        }
        if Instant::now() < self.negotiate_after {
            // A recent attempt failed: keep what is pending for the next try.
            self.pending_streams
                .extend(fresh.into_iter().map(|(user, t)| StreamInfo {
                    stream_id: 0,
                    user_id: user,
                    tracks: vec![t],
                }));
            return Ok(());
        }
        let (offer, send_mids, recv_mids) =
            self.session.offer_changes(unsent, fresh.len(), &retiring)?;
        // Nothing below changes state until the bridge has answered.
        let mut send_mids = send_mids.into_iter();
        let assigned: Vec<(usize, String)> = self
            .local
            .iter()
            .enumerate()
            .filter(|(_, t)| t.mid.is_none() && !t.removed)
            .filter_map(|(i, _)| send_mids.next().map(|mid| (i, mid)))
            .collect();
        let mut added = Vec::new();
        for ((user, info), mid) in fresh.into_iter().zip(recv_mids) {
            let frame = FrameDuration::from_millis(info.frame_ms).unwrap_or(FrameDuration::Ms20);
            let mut receiver = VoiceReceiver::new(user.clone(), frame)
                .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
            for (epoch, secret) in &self.secrets {
                receiver.add_epoch(*epoch, secret.clone(), now_us());
            }
            if let Some((threshold, attack, hold)) = self.speaking_config {
                receiver.configure_speaking(SpeakingDetector::new(threshold, attack, hold));
            }
            added.push((mid, user, info, Arc::new(Mutex::new(receiver))));
        }
        let publish: Vec<TrackAnnounce> = self
            .local
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.removed)
            .filter_map(|(i, t)| {
                let mid = t.mid.clone().or_else(|| {
                    assigned
                        .iter()
                        .find(|(j, _)| *j == i)
                        .map(|(_, mid)| mid.clone())
                })?;
                Some(TrackAnnounce {
                    mid,
                    kind: TrackKind::Audio,
                    key_id: t.sender.key_id(),
                    frame_ms: t.frame_ms,
                })
            })
            .collect();
        let subscribe: Vec<TrackSubscription> = self
            .remote
            .iter()
            .map(|(mid, t)| (mid.clone(), t.track_id.clone()))
            .chain(
                added
                    .iter()
                    .map(|(mid, _, info, _)| (mid.clone(), info.track_id.clone())),
            )
            .map(|(mid, track_id)| TrackSubscription { mid, track_id })
            .collect();
        let reply = self.client.call(Operation::Negotiate {
            room_id: self.room_id.clone(),
            offer,
            publish,
            subscribe,
        });
        let answer = match reply {
            Ok(Reply::Answer { answer, .. }) => answer,
            Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}")).into()),
            Err(ClientError::Bridge(e)) => {
                // A stream that went away meanwhile, or a right that was revoked: not fatal.
                // Start again from the bridge's current listing after a pause.
                tracing::warn!(room = %self.room_id, "media negotiation refused: {e}");
                self.emit(MediaEvent::NegotiationFailed(e.to_string()));
                self.negotiate_after = Instant::now() + Duration::from_secs(1);
                if let Reply::Streams(streams) = self
                    .client
                    .call(Operation::ListStreams(self.room_id.clone()))?
                {
                    let live: Vec<String> = streams
                        .iter()
                        .flat_map(|s| s.tracks.iter().map(|t| t.track_id.clone()))
                        .collect();
                    self.drop_remote_where(|track| !live.iter().any(|l| l == track));
                    if self.subscribe_all {
                        self.pending_streams = streams;
                    }
                }
                return Ok(());
            }
            Err(other) => return Err(other.into()),
        };
        self.session.accept_answer(&answer)?;
        for (i, mid) in assigned {
            self.local[i].mid = Some(mid);
        }
        for track in self.local.iter_mut().filter(|t| t.removed) {
            track.retired = true;
        }
        for (mid, user, info, receiver) in added {
            if let Ok(mut mixer) = self.mixer.lock() {
                mixer.add(info.track_id.clone(), Arc::clone(&receiver));
            }
            self.emit(MediaEvent::RemoteTrackAdded {
                track_id: info.track_id.clone(),
                user_id: user.clone(),
                kind: info.kind,
            });
            self.remote.insert(
                mid,
                RemoteTrack {
                    track_id: info.track_id,
                    user,
                    receiver,
                },
            );
        }
        for t in self.local.iter().filter(|t| !t.removed) {
            self.emit(MediaEvent::LocalTrackPublished {
                index: t.index,
                key_id: t.sender.key_id(),
            });
        }
        Ok(())
    }

    /// Sends every local frame whose last sample exists by now (once connected).
    fn send_due_frames(&mut self) -> Result<(), VoiceError> {
        if !self.session.is_connected() {
            return Ok(());
        }
        for track in self.local.iter_mut().filter(|t| !t.removed) {
            let Some(mid) = track.mid.clone() else {
                continue;
            };
            let (start, start_us) = *track
                .start
                .get_or_insert_with(|| (Instant::now(), now_us()));
            let frame = u64::from(track.frame_ms);
            // After a stall (a blocking call, a busy machine) skip ahead rather than burst: a burst
            // would sit in every receiver's buffer as extra latency.
            let behind = Instant::now().saturating_duration_since(start).as_millis() as u64 / frame;
            if behind > track.sender.frames() + MAX_BURST_FRAMES {
                let skip = behind - track.sender.frames();
                track.start = Some((
                    start + Duration::from_millis(frame * skip),
                    start_us + frame * skip * 1000,
                ));
                continue;
            }
            loop {
                let index = track.sender.frames();
                let due = start + Duration::from_millis(frame * (index + 1));
                if Instant::now() < due {
                    break;
                }
                let protected = track
                    .sender
                    .next_frame(start_us + index * frame * 1000)
                    .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
                self.session.write_audio(
                    &mid,
                    Instant::now(),
                    track.sender.rtp_time(),
                    &protected,
                )?;
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = Instant::now() + Duration::from_millis(10);
        for track in self.local.iter().filter(|t| !t.removed) {
            if let Some((start, _)) = track.start {
                let due = start
                    + Duration::from_millis(
                        u64::from(track.frame_ms) * (track.sender.frames() + 1),
                    );
                deadline = deadline.min(due);
            }
        }
        deadline
    }

    /// Speaking changes as they happen; statistics once a second.
    fn report(&mut self) {
        let mut changes = Vec::new();
        for track in self.remote.values() {
            let speaking = track
                .receiver
                .lock()
                .map(|r| r.is_speaking())
                .unwrap_or(false);
            let before = self.speaking.insert(track.track_id.clone(), speaking);
            if before.unwrap_or(false) != speaking {
                changes.push(MediaEvent::Speaking {
                    track_id: track.track_id.clone(),
                    user_id: track.user.clone(),
                    speaking,
                });
            }
        }
        for change in changes {
            self.emit(change);
        }
        if self.last_stats.elapsed() >= Duration::from_secs(1) {
            self.last_stats = Instant::now();
            let stats = self
                .remote
                .values()
                .filter_map(|t| {
                    t.receiver
                        .lock()
                        .ok()
                        .map(|r| (t.track_id.clone(), r.stats()))
                })
                .collect();
            self.emit(MediaEvent::Stats(stats));
            self.report_local();
        }
    }

    fn report_local(&self) {
        for track in &self.local {
            self.emit(MediaEvent::LocalStats {
                index: track.index,
                frames: track.sender.frames(),
                epochs: track.epochs.clone(),
            });
        }
    }

    fn close(&mut self) {
        self.report_local();
        let _ = self
            .client
            .call(Operation::CloseMedia(self.room_id.clone()));
        self.session.close();
    }
}
