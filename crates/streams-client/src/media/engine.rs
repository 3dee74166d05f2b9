//! [`RoomMedia`]: one room's media on a thread of its own, driven by commands and reporting events, so
//! a game loop never blocks on it. It owns the WebRTC session with the SFU; the local tracks — audio
//! paced like a capture device, video from a capture thread that wakes the engine for each frame —
//! encrypted with the current epoch's key and switched at once on a new epoch; and the remote tracks:
//! audio receivers feed a [`Mixer`] that the output device pulls, video receivers decode into
//! [`VideoSlot`]s. Video bitrates follow the bandwidth estimate; keyframe requests flow both ways
//! (subscribers' PLI reach the encoder, decoders that lost their place send PLI).
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
use crate::media::session::{MediaKind, MediaSession, START_ESTIMATE_KBPS};
use crate::media::voice::{TrackStats, VoiceReceiver, VoiceSender};
use crate::media::voice_session::{VoiceError, local_ip_towards, now_us};
use crate::video::VideoSource;
use crate::video::codec::VideoSettings;
use crate::video::receiver::{FrameObserver, VideoReceiver, VideoSlot, VideoStats};
use crate::video::sender::{LocalVideoStats, VideoSender};

/// Most frames a local track sends at once to catch up; beyond that it skips ahead.
const MAX_BURST_FRAMES: u64 = 5;
/// Keyframe requests for one remote track at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// What an audio track is assumed to use when the bandwidth estimate is shared out, bits/s.
const AUDIO_SHARE_BPS: u64 = 48_000;
/// The share of the bandwidth estimate that encoders are given, in percent: str0m paces at 1.1 × the
/// estimate, and RTP/SRTP headers and retransmissions need the rest. Much less and the estimate,
/// bounded by what is acknowledged, climbs back slowly after congestion.
const ENCODER_SHARE_PCT: u64 = 100;
/// A video track stops capturing while its frames would wait longer than this to leave (WebRTC's
/// frame dropper): str0m paces at 1.1 × the estimate, and rate control overshoots.
const MAX_SEND_QUEUE: Duration = Duration::from_millis(100);

/// How a room's media is set up (see [`RoomMedia::start_with`]).
#[derive(Clone, Default)]
pub struct MediaOptions {
    /// Also convert decoded video to RGBA (for textures).
    pub video_rgba: bool,
    /// Sees every decoded picture of every remote video track (on its decode thread).
    pub video_observer: Option<FrameObserver>,
}

/// What the owner asks of the media engine.
pub enum MediaCommand {
    /// Add and publish a local audio track.
    AddAudioTrack {
        /// Where its samples come from.
        source: Box<dyn AudioSource>,
        /// Codec settings.
        settings: VoiceSettings,
    },
    /// Add and publish a local video track (camera, screen or test pattern).
    AddVideoTrack {
        /// Where its pictures come from.
        source: Box<dyn VideoSource>,
        /// Encoder settings.
        settings: VideoSettings,
        /// [`TrackKind::Video`] (camera) or [`TrackKind::Screen`].
        kind: TrackKind,
    },
    /// Mute or unmute every local audio track (they keep sending silence: push-to-talk, mute).
    MuteAudio(bool),
    /// Stop sending a local track and unpublish it (by the index its `LocalTrackPublished` gave).
    RemoveTrack(u8),
    /// Receive every remote audio track (`true`, the default) or none (`false`).
    SubscribeAll(bool),
    /// Receive a member's voice (audio tracks) or not: proximity chat unsubscribes far voices at the
    /// bridge, so they cost no bandwidth, and subscribes them again when they come near.
    SetVoiceSubscribed {
        /// The member.
        user_id: UserId,
        /// Receive their voice.
        subscribed: bool,
    },
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
    /// The media connection to the bridge is up (ICE and DTLS done): local tracks send from now on.
    /// Reported again after the connection was lost and came back.
    Connected,
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
    /// Statistics of every remote audio track (about once a second).
    Stats(Vec<(String, TrackStats)>),
    /// Statistics of every remote video track (about once a second).
    VideoStats(Vec<(String, VideoStats)>),
    /// What a local track has sent (about once a second, and when the engine stops).
    LocalStats {
        /// The track's index.
        index: u8,
        /// Frames sent.
        frames: u64,
        /// Key epochs it has used, in order.
        epochs: Vec<u64>,
        /// For a video track, its encoder's figures.
        video: Option<LocalVideoStats>,
    },
    /// A local track failed (its camera vanished, its display closed) and was unpublished.
    LocalTrackFailed {
        /// The track's index.
        index: u8,
        /// Why.
        reason: String,
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
    videos: Arc<Mutex<HashMap<String, VideoSlot>>>,
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
        Self::start_with(
            client,
            identity,
            bridge_url,
            room_id,
            MediaOptions::default(),
        )
    }

    /// Like [`RoomMedia::start`], with options.
    pub fn start_with(
        client: ClientHandle,
        identity: Identity,
        bridge_url: &str,
        room_id: RoomId,
        options: MediaOptions,
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
        let videos = Arc::new(Mutex::new(HashMap::new()));
        let mut engine = Engine {
            client,
            secrets: secrets(&room.record, &identity),
            epoch: room.key_epoch,
            identity,
            room_id,
            session,
            device: DeviceSession::random(),
            local: Vec::new(),
            next_local: 0,
            remote: HashMap::new(),
            pending_streams: Vec::new(),
            subscribe_all: true,
            unheard: std::collections::HashSet::new(),
            mixer: Arc::clone(&mixer),
            videos: Arc::clone(&videos),
            options,
            events: event_tx,
            speaking: HashMap::new(),
            speaking_config: None,
            last_stats: Instant::now(),
            negotiate_after: Instant::now(),
            estimate: START_ESTIMATE_KBPS * 1000,
            was_connected: false,
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
            videos,
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

    /// The latest-picture slot of a remote video track being received.
    pub fn video(&self, track_id: &str) -> Option<VideoSlot> {
        self.videos.lock().ok()?.get(track_id).cloned()
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
    media: LocalMedia,
}

enum LocalMedia {
    Voice {
        sender: VoiceSender,
        frame_ms: u32,
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
    fn key_id(&self) -> u64 {
        match &self.media {
            LocalMedia::Voice { sender, .. } => sender.key_id(),
            LocalMedia::Video { sender, .. } => sender.key_id(),
        }
    }

    fn kind(&self) -> TrackKind {
        match &self.media {
            LocalMedia::Voice { .. } => TrackKind::Audio,
            LocalMedia::Video { kind, .. } => *kind,
        }
    }

    fn frame_ms(&self) -> u32 {
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

    fn set_encryptor(&mut self, encryptor: streams_proto::frame_crypto::FrameEncryptor) {
        match &mut self.media {
            LocalMedia::Voice { sender, .. } => sender.set_encryptor(encryptor),
            LocalMedia::Video { sender, .. } => sender.set_encryptor(encryptor),
        }
    }
}

fn media_kind(kind: TrackKind) -> MediaKind {
    match kind {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Video | TrackKind::Screen => MediaKind::Video,
    }
}

struct RemoteTrack {
    track_id: String,
    user: UserId,
    media: RemoteMedia,
}

enum RemoteMedia {
    Voice(Arc<Mutex<VoiceReceiver>>),
    Video {
        receiver: Box<VideoReceiver>,
        last_keyframe_request: Option<Instant>,
    },
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
    /// The index the next local track gets: every add takes one, even one that fails, so the
    /// owner can number its tracks in the order it added them.
    next_local: u8,
    /// By receiving mid.
    remote: HashMap<String, RemoteTrack>,
    pending_streams: Vec<StreamInfo>,
    subscribe_all: bool,
    /// Members whose voices are not received (proximity).
    unheard: std::collections::HashSet<UserId>,
    mixer: Arc<Mutex<Mixer>>,
    videos: Arc<Mutex<HashMap<String, VideoSlot>>>,
    options: MediaOptions,
    events: Sender<MediaEvent>,
    speaking: HashMap<String, bool>,
    speaking_config: Option<(f32, u64, u64)>,
    last_stats: Instant,
    /// No negotiation before this (after a refused one).
    negotiate_after: Instant,
    /// The latest bandwidth estimate, bits/s.
    estimate: u64,
    /// Whether the media connection was up at the last look (to report [`MediaEvent::Connected`]).
    was_connected: bool,
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
            self.send_video()?;
            self.steer_video();
            self.report();
            let deadline = self.next_deadline();
            for received in self.session.run_until_media(deadline)? {
                match self.remote.get_mut(&received.mid).map(|t| &mut t.media) {
                    Some(RemoteMedia::Voice(receiver)) => {
                        if let Ok(mut r) = receiver.lock() {
                            r.accept(now_us(), received.data);
                        }
                    }
                    Some(RemoteMedia::Video { receiver, .. }) => {
                        receiver.accept(now_us(), &received.data);
                    }
                    None => {}
                }
            }
            if self.session.has_failed() {
                return Ok("the media connection failed".into());
            }
            let connected = self.session.is_connected();
            if connected && !self.was_connected {
                self.emit(MediaEvent::Connected);
            }
            self.was_connected = connected;
        }
    }

    fn command(&mut self, command: MediaCommand) -> Result<(), VoiceError> {
        match command {
            MediaCommand::AddAudioTrack { source, settings } => {
                let index = self.take_local_index()?;
                let encryptor = self.encryptor(index)?;
                let frame_ms = settings.frame.millis();
                let sender = VoiceSender::new(source, settings, encryptor)
                    .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
                self.local.push(LocalTrack {
                    index,
                    removed: false,
                    retired: false,
                    epochs: vec![self.epoch],
                    mid: None,
                    media: LocalMedia::Voice {
                        sender,
                        frame_ms,
                        start: None,
                    },
                });
            }
            MediaCommand::AddVideoTrack {
                source,
                mut settings,
                kind,
            } => {
                // A new encoder starts within the estimate, not above it: what exceeds the pacer's
                // rate waits in its queue, and every later frame behind it.
                let within = self.estimate * ENCODER_SHARE_PCT / 100;
                settings.start_bitrate = settings
                    .start_bitrate
                    .min(within.min(u64::from(u32::MAX)) as u32)
                    .max(settings.min_bitrate);
                let index = self.take_local_index()?;
                let encryptor = self.encryptor(index)?;
                let fps = source.frame_rate();
                let waker = self.session.waker()?;
                let sender =
                    VideoSender::start(source, settings, encryptor, Box::new(move || waker.wake()));
                match sender {
                    Ok(sender) => {
                        tracing::info!(room = %self.room_id, "publishing {}", sender.describe());
                        self.local.push(LocalTrack {
                            index,
                            removed: false,
                            retired: false,
                            epochs: vec![self.epoch],
                            mid: None,
                            media: LocalMedia::Video {
                                sender,
                                kind,
                                max_bitrate: settings.max_bitrate,
                                fps,
                                backlog: 0.0,
                                backlog_at: Instant::now(),
                            },
                        });
                        self.update_desired_bitrate();
                        self.share_estimate();
                    }
                    Err(e) => self.emit(MediaEvent::LocalTrackFailed {
                        index,
                        reason: e.to_string(),
                    }),
                }
            }
            MediaCommand::MuteAudio(muted) => {
                for track in &mut self.local {
                    if let LocalMedia::Voice { sender, .. } = &mut track.media {
                        sender.set_muted(muted);
                    }
                }
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
            MediaCommand::SetVoiceSubscribed {
                user_id,
                subscribed,
            } => {
                if subscribed {
                    if self.unheard.remove(&user_id)
                        && self.subscribe_all
                        && let Reply::Streams(streams) = self
                            .client
                            .call(Operation::ListStreams(self.room_id.clone()))?
                    {
                        self.pending_streams = streams;
                    }
                } else if self.unheard.insert(user_id.clone()) {
                    let voices: Vec<String> = self
                        .remote
                        .values()
                        .filter(|t| t.user == user_id && matches!(t.media, RemoteMedia::Voice(_)))
                        .map(|t| t.track_id.clone())
                        .collect();
                    if self.drop_remote_where(|track| voices.iter().any(|v| v == track)) > 0 {
                        let subscribe = self
                            .remote
                            .iter()
                            .map(|(mid, t)| TrackSubscription {
                                mid: mid.clone(),
                                track_id: t.track_id.clone(),
                            })
                            .collect();
                        self.client.call(Operation::SetSubscriptions {
                            room_id: self.room_id.clone(),
                            subscribe,
                        })?;
                    }
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
                    if let RemoteMedia::Voice(receiver) = &track.media
                        && let Ok(mut r) = receiver.lock()
                    {
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
                    for track in self.remote.values_mut() {
                        match &mut track.media {
                            RemoteMedia::Voice(receiver) => {
                                if let Ok(mut r) = receiver.lock() {
                                    r.add_epoch(epoch, secret.clone(), now_us());
                                }
                            }
                            RemoteMedia::Video { receiver, .. } => {
                                receiver.add_epoch(epoch, secret.clone());
                            }
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
                        track.set_encryptor(next);
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
                if let Ok(mut videos) = self.videos.lock() {
                    videos.remove(&track.track_id);
                }
                self.speaking.remove(&track.track_id);
                // The track's final figures (the periodic report may be up to a second old).
                match track.media {
                    RemoteMedia::Voice(ref receiver) => {
                        if let Ok(r) = receiver.lock() {
                            self.emit(MediaEvent::Stats(vec![(track.track_id.clone(), r.stats())]));
                        }
                    }
                    RemoteMedia::Video { receiver, .. } => {
                        let stats = receiver.finish();
                        self.emit(MediaEvent::VideoStats(vec![(
                            track.track_id.clone(),
                            stats,
                        )]));
                    }
                }
                self.emit(MediaEvent::RemoteTrackRemoved {
                    track_id: track.track_id,
                });
            }
        }
        gone.len()
    }

    /// Offers new m-lines for local tracks without one and for new remote tracks (not the voices of
    /// members out of earshot).
    fn negotiate(&mut self) -> Result<(), VoiceError> {
        let me = self.identity.user_id().clone();
        let mut known: Vec<String> = self.remote.values().map(|t| t.track_id.clone()).collect();
        let unheard_users = self.unheard.clone();
        let fresh: Vec<(UserId, streams_proto::wire::TrackInfo)> = self
            .pending_streams
            .drain(..)
            .filter(|s| s.user_id != me)
            .flat_map(|s| {
                let unheard = unheard_users.contains(&s.user_id);
                let user = s.user_id.clone();
                s.tracks
                    .into_iter()
                    .filter(move |t| !(unheard && t.kind == TrackKind::Audio))
                    .map(move |t| (user.clone(), t))
            })
            .filter(|(_, t)| {
                // Each track once, even if both the listing and an event announced it.
                let new = !known.contains(&t.track_id);
                if new {
                    known.push(t.track_id.clone());
                }
                new
            })
            .collect();
        let unsent: Vec<MediaKind> = self
            .local
            .iter()
            .filter(|t| t.mid.is_none() && !t.removed)
            .map(|t| media_kind(t.kind()))
            .collect();
        let retiring: Vec<String> = self
            .local
            .iter()
            .filter(|t| t.removed && !t.retired)
            .filter_map(|t| t.mid.clone())
            .collect();
        if fresh.is_empty() && unsent.is_empty() && retiring.is_empty() {
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
        let receive: Vec<MediaKind> = fresh.iter().map(|(_, t)| media_kind(t.kind)).collect();
        let (offer, send_mids, recv_mids) = self.session.offer(&unsent, &receive, &retiring)?;
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
            let media = self.remote_media(&user, &info)?;
            added.push((mid, user, info, media));
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
                    kind: t.kind(),
                    key_id: t.key_id(),
                    frame_ms: t.frame_ms(),
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
        for (mid, user, info, media) in added {
            match &media {
                RemoteMedia::Voice(receiver) => {
                    if let Ok(mut mixer) = self.mixer.lock() {
                        mixer.add(info.track_id.clone(), Arc::clone(receiver));
                    }
                }
                RemoteMedia::Video { receiver, .. } => {
                    if let Ok(mut videos) = self.videos.lock() {
                        videos.insert(info.track_id.clone(), receiver.slot());
                    }
                }
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
                    media,
                },
            );
        }
        for t in self.local.iter().filter(|t| !t.removed) {
            self.emit(MediaEvent::LocalTrackPublished {
                index: t.index,
                key_id: t.key_id(),
            });
        }
        Ok(())
    }

    /// The index of a new local track (never reused: its SFrame key id depends on it).
    fn take_local_index(&mut self) -> Result<u8, VoiceError> {
        let index = self.next_local;
        self.next_local = index
            .checked_add(1)
            .ok_or_else(|| VoiceError::Pipeline("too many local tracks".into()))?;
        Ok(index)
    }

    /// The encryptor of local track `index` for the current epoch.
    fn encryptor(
        &self,
        index: u8,
    ) -> Result<streams_proto::frame_crypto::FrameEncryptor, VoiceError> {
        let secret = self
            .secrets
            .get(&self.epoch)
            .ok_or_else(|| VoiceError::Pipeline("no key for the room's current epoch".into()))?;
        Ok(self
            .device
            .encryptor(secret, self.epoch, self.identity.user_id(), index)
            .map_err(ClientError::from)?)
    }

    /// A receiver for a remote track, with every epoch key known so far.
    fn remote_media(
        &self,
        user: &UserId,
        info: &streams_proto::wire::TrackInfo,
    ) -> Result<RemoteMedia, VoiceError> {
        if info.kind == TrackKind::Audio {
            let frame = FrameDuration::from_millis(info.frame_ms).unwrap_or(FrameDuration::Ms20);
            let mut receiver = VoiceReceiver::new(user.clone(), frame)
                .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
            for (epoch, secret) in &self.secrets {
                receiver.add_epoch(*epoch, secret.clone(), now_us());
            }
            if let Some((threshold, attack, hold)) = self.speaking_config {
                receiver.configure_speaking(SpeakingDetector::new(threshold, attack, hold));
            }
            return Ok(RemoteMedia::Voice(Arc::new(Mutex::new(receiver))));
        }
        let mut receiver = VideoReceiver::new(
            user.clone(),
            info.track_id.clone(),
            self.options.video_rgba,
            self.options.video_observer.clone(),
        )
        .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
        for (epoch, secret) in &self.secrets {
            receiver.add_epoch(*epoch, secret.clone());
        }
        Ok(RemoteMedia::Video {
            receiver: Box::new(receiver),
            last_keyframe_request: None,
        })
    }

    /// Sends the video frames the capture threads have ready; a failed source unpublishes its track.
    /// Until the connection is up and a track negotiated, its capture is paused: pictures taken then
    /// could only wait or be dropped, and sending starts with a fresh keyframe instead.
    fn send_video(&mut self) -> Result<(), VoiceError> {
        let ready = self.session.is_connected();
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
            let Some(mid) = track.mid.as_ref().filter(|_| ready) else {
                if let Err(e) = sender.pause() {
                    failed.push((track.index, e.to_string()));
                }
                continue;
            };
            let now = Instant::now();
            let drained = drain_rate * now.duration_since(*backlog_at).as_secs_f64();
            *backlog = (*backlog - drained).max(0.0);
            *backlog_at = now;
            match sender.poll() {
                Ok(frames) => {
                    for frame in frames {
                        // Payload plus about 5% of RTP/SRTP/UDP headers.
                        *backlog += frame.data.len() as f64 * 1.08;
                        self.session.write_video(
                            mid,
                            Instant::now(),
                            frame.rtp_time,
                            &frame.data,
                        )?;
                    }
                }
                Err(e) => failed.push((track.index, e.to_string())),
            }
            sender.set_hold(*backlog / drain_rate > MAX_SEND_QUEUE.as_secs_f64());
        }
        for (index, reason) in failed {
            tracing::warn!(room = %self.room_id, index, "local video track failed: {reason}");
            if let Some(track) = self.local.iter_mut().find(|t| t.index == index) {
                track.removed = true;
            }
            self.emit(MediaEvent::LocalTrackFailed { index, reason });
        }
        Ok(())
    }

    /// Keyframe requests and bandwidth estimates to the encoders; decoders' keyframe needs to PLI.
    fn steer_video(&mut self) {
        for mid in self.session.take_keyframe_requests() {
            for track in &self.local {
                if let (Some(m), LocalMedia::Video { sender, .. }) = (&track.mid, &track.media)
                    && *m == mid
                {
                    sender.request_keyframe();
                }
            }
        }
        if let Some(estimate) = self.session.take_bitrate_estimate() {
            self.estimate = estimate;
            self.share_estimate();
        }
        let now = Instant::now();
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
                requests.push(mid.clone());
            }
        }
        for mid in requests {
            if let Err(e) = self.session.request_keyframe(&mid) {
                tracing::debug!("keyframe request on {mid} failed: {e}");
            }
        }
    }

    /// Gives the encoders their share of the bandwidth estimate, by their ceilings.
    fn share_estimate(&self) {
        let estimate = self.estimate;
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
        let available = (estimate * ENCODER_SHARE_PCT / 100).saturating_sub(audio);
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
        self.session
            .set_desired_bitrate(desired * 100 / ENCODER_SHARE_PCT);
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
            let LocalMedia::Voice {
                sender,
                frame_ms,
                start: track_start,
            } = &mut track.media
            else {
                continue;
            };
            let (start, start_us) = *track_start.get_or_insert_with(|| (Instant::now(), now_us()));
            let frame = u64::from(*frame_ms);
            // After a stall (a blocking call, a busy machine) skip ahead rather than burst: a burst
            // would sit in every receiver's buffer as extra latency.
            let behind = Instant::now().saturating_duration_since(start).as_millis() as u64 / frame;
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
                let due = start + Duration::from_millis(frame * (index + 1));
                if Instant::now() < due {
                    break;
                }
                let protected = sender
                    .next_frame(start_us + index * frame * 1000)
                    .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
                self.session
                    .write_audio(&mid, Instant::now(), sender.rtp_time(), &protected)?;
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = Instant::now() + Duration::from_millis(10);
        for track in self.local.iter().filter(|t| !t.removed) {
            if let LocalMedia::Voice {
                sender,
                frame_ms,
                start: Some((start, _)),
            } = &track.media
            {
                let due =
                    *start + Duration::from_millis(u64::from(*frame_ms) * (sender.frames() + 1));
                deadline = deadline.min(due);
            }
        }
        deadline
    }

    /// Speaking changes as they happen; statistics once a second.
    fn report(&mut self) {
        let mut changes = Vec::new();
        for track in self.remote.values() {
            let RemoteMedia::Voice(receiver) = &track.media else {
                continue;
            };
            let speaking = receiver.lock().map(|r| r.is_speaking()).unwrap_or(false);
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
            self.report_remote();
            self.report_local();
        }
    }

    fn report_remote(&self) {
        {
            let mut audio = Vec::new();
            let mut video = Vec::new();
            for t in self.remote.values() {
                match &t.media {
                    RemoteMedia::Voice(receiver) => {
                        if let Ok(r) = receiver.lock() {
                            audio.push((t.track_id.clone(), r.stats()));
                        }
                    }
                    RemoteMedia::Video { receiver, .. } => {
                        video.push((t.track_id.clone(), receiver.stats()));
                    }
                }
            }
            self.emit(MediaEvent::Stats(audio));
            if !video.is_empty() {
                self.emit(MediaEvent::VideoStats(video));
            }
        }
    }

    fn report_local(&self) {
        for track in &self.local {
            self.emit(MediaEvent::LocalStats {
                index: track.index,
                frames: track.frames(),
                epochs: track.epochs.clone(),
                video: match &track.media {
                    LocalMedia::Video { sender, .. } => Some(sender.stats()),
                    LocalMedia::Voice { .. } => None,
                },
            });
        }
    }

    fn close(&mut self) {
        self.report_remote();
        self.report_local();
        let _ = self
            .client
            .call(Operation::CloseMedia(self.room_id.clone()));
        self.session.close();
    }
}
