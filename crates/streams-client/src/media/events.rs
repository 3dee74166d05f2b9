//! What the owner of a room's media says to it ([`MediaCommand`]) and hears from it ([`MediaEvent`],
//! [`StopReason`]), and how it is set up ([`MediaOptions`]): the vocabulary shared by the sans-IO core
//! ([`crate::media::core`]), its driver ([`crate::media::driver`]) and their owners.
use streams_proto::wire::TrackKind;
use streams_proto::{TrackId, UserId};

use crate::audio::codec::VoiceSettings;
use crate::audio::handoff::VoiceOutput;
use crate::audio::source::AudioSource;
use crate::media::voice::TrackStats;
use crate::video::VideoSource;
use crate::video::codec::VideoSettings;
use crate::video::receiver::{FrameObserver, VideoStats};
use crate::video::sender::LocalVideoStats;

/// Why a room's media rejoined (a new media session at the bridge, every local track published
/// again).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejoinReason {
    /// The bridge no longer had this member's media session: it restarted, or the signaling
    /// connection stayed down past the bridge's grace.
    BridgeLostSession,
    /// The media path died (ICE lost the bridge).
    MediaPathLost,
}

/// Why a room's media stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Its owner stopped it (or dropped it).
    Owner,
    /// This member was removed from the room, or the room was deleted.
    NotInRoom,
    /// A new key epoch left this member out: removed from the room.
    RemovedFromRoom,
    /// The bridge refused this member the room's media (no such room, no right to it).
    Refused(String),
    /// The media connection to the bridge failed.
    ConnectionFailed,
    /// The media session was lost and rejoining did not succeed within
    /// [`crate::media::core::REJOIN_GIVE_UP`].
    MediaLost {
        /// How long it tried.
        waited: std::time::Duration,
    },
    /// ICE never connected: none of the bridge's media addresses answered.
    NoMediaPath {
        /// How long it tried.
        waited: std::time::Duration,
        /// The media addresses the bridge announced.
        bridge: Vec<std::net::SocketAddr>,
    },
    /// Something this engine cannot go on without failed (a codec, a key).
    Failed(String),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Owner => f.write_str("stopped by its owner"),
            StopReason::NotInRoom => f.write_str("no longer in the room"),
            StopReason::RemovedFromRoom => f.write_str("removed from the room"),
            StopReason::Refused(why) => write!(f, "the bridge refused the room's media: {why}"),
            StopReason::ConnectionFailed => f.write_str("the media connection failed"),
            StopReason::MediaLost { waited } => write!(
                f,
                "the media path to the bridge died and did not come back within {} s",
                waited.as_secs()
            ),
            StopReason::NoMediaPath { waited, bridge } => {
                let addrs: Vec<String> = bridge.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "no media path to the bridge: ICE never connected to {} within {} s \
                     (UDP blocked on the way: see streams-bridge --media-tcp-listen; or a bridge \
                     behind NAT that announces a private address: see --media-public-ip)",
                    if addrs.is_empty() {
                        "its media port".to_string()
                    } else {
                        addrs.join(", ")
                    },
                    waited.as_secs()
                )
            }
            StopReason::Failed(why) => f.write_str(why),
        }
    }
}

/// How a room's media is set up (see [`crate::media::driver::RoomMedia::start_with`]).
#[derive(Clone, Default)]
pub struct MediaOptions {
    /// Also convert decoded video to RGBA (for textures).
    pub video_rgba: bool,
    /// Sees every decoded picture of every remote video track (on its decode thread).
    pub video_observer: Option<FrameObserver>,
    /// Where remote voices play (a [`crate::audio::mixer::Mixer`] or a positional mix holds its
    /// other side). `None`: they are received and counted, and nobody plays them.
    pub voice_output: Option<VoiceOutput>,
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
        track_id: TrackId,
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
    /// The media session was lost ([`RejoinReason`]): the engine is rejoining. Local tracks go on
    /// (muted, as it were) until [`MediaEvent::Rejoined`]; remote tracks end
    /// ([`MediaEvent::RemoteTrackRemoved`]) and are received again after it.
    Reconnecting {
        /// Why.
        reason: RejoinReason,
    },
    /// Rejoined: a new media session is up, local tracks are published again (each reports
    /// [`MediaEvent::LocalTrackPublished`] with its old index).
    Rejoined {
        /// Why it had to.
        reason: RejoinReason,
        /// From the loss to the new session being up.
        after: std::time::Duration,
    },
    /// The network changed under the call (the local address facing the bridge is new, or the
    /// engine bound a fresh socket because the bridge's media stopped reaching the old one: a
    /// NAT that changed its mapping): media moves to the new address in the same session, tracks
    /// and keys unchanged, as soon as ICE has checked the new path (about a round trip).
    PathChanged {
        /// The old local media address.
        from: std::net::SocketAddr,
        /// The new one.
        to: std::net::SocketAddr,
    },
    /// Nothing has come from the bridge for about a second (its answers to the engine's checks,
    /// sent every 400 ms, stopped): the media path seems dead. The session is kept: if the path
    /// comes back within about 10 s media flows on ([`MediaEvent::PathBack`]); if not, the engine
    /// rejoins ([`MediaEvent::Reconnecting`]).
    PathLost,
    /// The bridge is heard again after [`MediaEvent::PathLost`], in the same session.
    PathBack {
        /// How long nothing came.
        after: std::time::Duration,
    },
    /// A TURN relay was allocated (the bridge handed out TURN servers): its relayed address is
    /// offered beside the direct candidates, and carries media when nothing else gets through.
    RelayReady {
        /// The TURN server's URL.
        server: String,
        /// The relayed address (what the bridge sees when media goes through it).
        relayed: std::net::SocketAddr,
    },
    /// A TURN server gave no relay (unreachable, refused the credentials); the next one handed
    /// out, if any, is tried.
    RelayFailed {
        /// The TURN server's URL.
        server: String,
        /// Why.
        reason: String,
    },
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
        track_id: TrackId,
        /// Its sender.
        user_id: UserId,
        /// What it carries.
        kind: TrackKind,
    },
    /// A remote track ended.
    RemoteTrackRemoved {
        /// The track.
        track_id: TrackId,
    },
    /// A remote sender started or stopped speaking.
    Speaking {
        /// The track.
        track_id: TrackId,
        /// Its sender.
        user_id: UserId,
        /// Speaking now.
        speaking: bool,
    },
    /// Statistics of every remote audio track (about once a second).
    Stats(Vec<(TrackId, TrackStats)>),
    /// Statistics of every remote video track (about once a second).
    VideoStats(Vec<(TrackId, VideoStats)>),
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
        reason: StopReason,
    },
}
