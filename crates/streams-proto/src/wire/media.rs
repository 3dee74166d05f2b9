//! The media part of the wire protocol: what a published track carries, how a publisher announces
//! its tracks, how others see them, and which remote track a subscriber's m-line carries.
use serde::{Deserialize, Serialize};

use crate::ids::UserId;
use crate::track::{MediaId, StreamId, TrackId};

/// What a published track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Microphone or synthetic audio.
    Audio,
    /// Camera video.
    Video,
    /// Screen sharing.
    Screen,
}

/// A track the client publishes: its m-line id in the offer, and the SFrame key id of its frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackAnnounce {
    /// The media id (SDP `a=mid`) in the client's offer.
    pub mid: MediaId,
    /// What it carries.
    pub kind: TrackKind,
    /// The SFrame KID its frames are protected with (receivers derive the key from it).
    pub key_id: u64,
    /// Frame duration in milliseconds (audio: 10 or 20).
    #[serde(default = "default_frame_ms")]
    pub frame_ms: u32,
}

fn default_frame_ms() -> u32 {
    20
}

/// A published track as others see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Identifies the track for subscriptions.
    pub track_id: TrackId,
    /// What it carries.
    pub kind: TrackKind,
    /// Its SFrame KID.
    pub key_id: u64,
    /// Frame duration in milliseconds.
    #[serde(default = "default_frame_ms")]
    pub frame_ms: u32,
}

/// A published stream: one member's tracks in one room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream id (the publisher's media session).
    pub stream_id: StreamId,
    /// Who publishes it.
    pub user_id: UserId,
    /// Its tracks.
    pub tracks: Vec<TrackInfo>,
}

/// One receiving m-line of a subscriber's offer and the remote track it should carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSubscription {
    /// The media id (SDP `a=mid`) in the subscriber's offer.
    pub mid: MediaId,
    /// The remote track.
    pub track_id: TrackId,
}

/// A TURN server a client may relay its media through (the bridge's `--turn-url`s), with
/// short-lived credentials for this client (the TURN REST API scheme: coturn's `use-auth-secret`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// Its URLs (`turn:` / `turns:`, see [`crate::turn::TurnUrl`]).
    pub urls: Vec<String>,
    /// The username: when the credential expires (Unix seconds) and whose it is.
    pub username: String,
    /// The password (base64 of an HMAC of the username under the secret the server shares).
    pub credential: String,
    /// When the credential expires, Unix seconds.
    pub expires_at: u64,
}
