//! bevy_streams: encrypted voice, video and screen sharing rooms for Bevy — the ECS adapter.
//!
//! Add [`StreamsPlugin`]; rooms, participants and connection state appear as entities, room and
//! presence events as Messages and observer triggers. Networking and crypto run on the client's own thread
//! ([`streams_client`]); this crate only moves commands and events across bounded channels:
//!
//! - [`StreamsSystems::Receive`] (in `PreUpdate`) drains client events, at most
//!   [`StreamsPlugin::events_per_frame`] per frame, into entities and messages;
//! - [`StreamsSystems::Send`] (in `PostUpdate`) flushes operations queued with [`StreamsCommands`].
//!
//! With the `embedded-bridge` feature (default), [`StreamsPlugin::embedded`] starts a bridge inside the
//! process, so examples run with no setup.
#![warn(missing_docs)]

mod commands;
mod media;
mod media_link;
mod media_requests;
mod media_state;
#[cfg(feature = "egui")]
mod panel;
mod plugin;
mod receive;
mod rooms;
mod session;
mod spatial;
mod tracks;
mod video_texture;

pub use commands::StreamsCommands;
pub use media_link::{MediaRequestError, RoomMediaLink, StreamsMediaError, StreamsMediaEvent};
pub use media_requests::{
    AudioInput, Deafen, JoinMedia, LeaveMedia, MuteMicrophone, PublishAudio, PublishVideo,
    SubscribeTracks, Unpublish, VideoInput,
};
pub use media_state::{MediaConnected, MediaConnecting, MediaFailed, MediaReconnecting};
#[cfg(feature = "egui")]
pub use panel::{
    LocalTrackView, PanelAction, PanelState, PanelView, ParticipantView, RoomView,
    StreamsPanelPlugin, draw_panel,
};
#[cfg(feature = "embedded-bridge")]
pub use plugin::EmbeddedBridge;
pub use plugin::{BUNDLED_HRTF, BridgeTarget, StreamsPlugin, StreamsSystems};
pub use receive::{StreamsReply, StreamsRoomEvent};
pub use rooms::{
    Joined, Participant, ParticipantOf, Recording, RoomIndex, RoomParticipants, StreamRoom,
};
pub use session::{Connected, Connecting, Disconnected, LocalUser, StreamsSession};
pub use spatial::{OutOfEarshot, SpatialAudio, StreamListener, UNSUBSCRIBE_FACTOR, VoiceVolume};
pub use streams_client::{self, NewRoom, Operation, Reply, RoomEvent, RoomUpdate};
pub use streams_client::{ConnectError, TlsError, TlsTrust};
pub use streams_proto::{self, CertFingerprint, Identity, RoomId, TrackId, UserId};
pub use tracks::{
    AudioTrackStats, AwaitingRejoin, LocalTrack, LocalTrackOf, LocalTrackStats, REJOIN_TRACK_GRACE,
    RemoteTrack, RemoteVoice, RoomLocalTracks, RoomTracks, Speaking, TrackOf, VideoTrackStats,
};
pub use video_texture::{LatestPicture, LocalPreview, RemoteVideo, VideoFeed};

/// Everything a game usually needs.
pub mod prelude {
    pub use crate::TrackId;
    pub use crate::{
        AudioInput, BridgeTarget, Connected, Connecting, Deafen, Disconnected, JoinMedia, Joined,
        LeaveMedia, LocalPreview, LocalTrack, LocalTrackOf, LocalTrackStats, LocalUser,
        MediaConnected, MediaConnecting, MediaFailed, MediaReconnecting, MuteMicrophone, NewRoom,
        Operation, OutOfEarshot, Participant, ParticipantOf, PublishAudio, PublishVideo, Recording,
        RemoteTrack, RemoteVideo, RemoteVoice, RoomIndex, RoomLocalTracks, RoomMediaLink,
        RoomParticipants, RoomTracks, RoomUpdate, SpatialAudio, Speaking, StreamListener,
        StreamRoom, StreamsCommands, StreamsMediaError, StreamsMediaEvent, StreamsPlugin,
        StreamsReply, StreamsRoomEvent, StreamsSession, StreamsSystems, SubscribeTracks, TrackOf,
        Unpublish, VideoInput, VoiceVolume,
    };
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
