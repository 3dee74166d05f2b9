//! Signaling messages between client and bridge: JSON text frames over one WebSocket.
//!
//! 1. The bridge opens with [`ServerMessage::Hello`] carrying a random challenge.
//! 2. The client answers [`ClientMessage::Auth`] with its user id and a signature over
//!    [`auth_transcript`]; the bridge answers [`ServerMessage::Welcome`] or an error. Nothing but the
//!    handshake is answered before that.
//! 3. Then requests carry an `id`; each gets exactly one [`ServerMessage::Response`] with the same id.
//!    Events are pushed as [`ServerMessage::Event`] to subscribed members.
use serde::{Deserialize, Serialize};

mod media;

pub use media::{IceServer, StreamInfo, TrackAnnounce, TrackInfo, TrackKind, TrackSubscription};

use crate::bytes::Bytes;
use crate::epoch::EpochRecord;
use crate::ids::{ContextId, RoomId, UserId};
use crate::meta::SignedMeta;
use crate::room::RoomRecord;
use crate::track::{StreamId, TrackId};
use crate::transcript::Transcript;

/// The protocol version spoken by this build. A mismatch is refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message the bridge accepts (1 MiB). Larger ones get a [`ErrorCode::TooLarge`] reply.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Most rooms one page of a listing returns.
pub const MAX_PAGE_LIMIT: u32 = 100;

/// The bytes a client signs to authenticate: a domain label, the protocol version and the challenge.
pub fn auth_transcript(challenge: &[u8]) -> Vec<u8> {
    let mut t = Transcript::new("bevy_streams bridge auth v1");
    t.u64(u64::from(PROTOCOL_VERSION)).bytes(challenge);
    t.finish().to_vec()
}

/// Client → bridge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Handshake answer.
    Auth {
        /// The client's protocol version.
        protocol: u32,
        /// Who is connecting.
        user_id: UserId,
        /// Signature over [`auth_transcript`] of the challenge.
        signature: Bytes,
        /// The token of a [`ResumeTicket`] an earlier connection of this user was given: within
        /// its grace the bridge hands this connection that one's media sessions, presence and
        /// event subscriptions (a signaling drop that media rode out). An unknown or expired
        /// token is ignored: the connection starts afresh (`Welcome { resumed: false }`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Bytes>,
    },
    /// A request.
    Request {
        /// Chosen by the client; echoed in the response.
        id: u64,
        /// What is asked.
        request: Request,
    },
}

/// What a client needs to resume its connection: after a drop, a new connection of the same user
/// that presents `token` within `grace_ms` takes over this one's media sessions, room presence
/// and event subscriptions, so media that never stopped keeps flowing and nobody sees the member
/// leave. A token is good for one resume; each connection gets its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeTicket {
    /// 32 random bytes.
    pub token: Bytes,
    /// How long after the drop the bridge keeps the connection's state, in milliseconds.
    pub grace_ms: u64,
}

/// Sort order of room listings (by creation time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    #[default]
    Desc,
}

/// Paging of listings, as PrivMX's `PagingQuery`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paging {
    /// How many to skip.
    pub skip: u32,
    /// How many to return (at most [`MAX_PAGE_LIMIT`]).
    pub limit: u32,
    /// Order by creation time.
    pub order: SortOrder,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            skip: 0,
            limit: MAX_PAGE_LIMIT,
            order: SortOrder::Desc,
        }
    }
}

/// What an event subscription covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum EventScope {
    /// Every room of a context (that the subscriber is a member of).
    Context(ContextId),
    /// One room.
    Room(RoomId),
}

/// A request. Each gets one response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create a room from its signed genesis epoch and metadata.
    CreateRoom {
        /// Epoch 0, signed by the caller.
        genesis: Box<EpochRecord>,
        /// Metadata of epoch 0, signed by the caller.
        meta: Box<SignedMeta>,
    },
    /// Update a room: new metadata, and a new epoch when membership or policy changes or keys rotate.
    UpdateRoom {
        /// The room.
        room_id: RoomId,
        /// The version this update was made against.
        version: u64,
        /// Apply even if `version` is stale.
        #[serde(default)]
        force: bool,
        /// The next epoch record, if any.
        #[serde(default)]
        epoch: Option<Box<EpochRecord>>,
        /// Metadata for the (possibly new) current epoch.
        meta: Box<SignedMeta>,
    },
    /// Fetch one room.
    GetRoom {
        /// The room.
        room_id: RoomId,
    },
    /// List rooms of a context visible to the caller.
    ListRooms {
        /// The context.
        context_id: ContextId,
        /// Which page.
        #[serde(default)]
        paging: Paging,
    },
    /// Delete a room.
    DeleteRoom {
        /// The room.
        room_id: RoomId,
    },
    /// Join a room (presence).
    JoinRoom {
        /// The room.
        room_id: RoomId,
    },
    /// Leave a room.
    LeaveRoom {
        /// The room.
        room_id: RoomId,
    },
    /// Who is in a room now.
    ListParticipants {
        /// The room.
        room_id: RoomId,
    },
    /// Receive events of a scope.
    Subscribe {
        /// The scope.
        scope: EventScope,
    },
    /// Stop receiving events of a scope.
    Unsubscribe {
        /// The scope.
        scope: EventScope,
    },
    /// Negotiate this connection's media session in a room (created on first use): publish the
    /// `publish` tracks and receive the `subscribe` ones. Each call carries a fresh SDP offer of the
    /// whole session; the answer comes back in [`ResponseBody::Answer`]. Publishing needs the publish
    /// right; subscribing, the subscribe right.
    Negotiate {
        /// The room.
        room_id: RoomId,
        /// The client's SDP offer.
        offer: String,
        /// Tracks the offer sends.
        #[serde(default)]
        publish: Vec<TrackAnnounce>,
        /// Receiving m-lines and the tracks they should carry.
        #[serde(default)]
        subscribe: Vec<TrackSubscription>,
    },
    /// Change which remote tracks this connection's media session receives, on m-lines already
    /// negotiated (PrivMX `modifyRemoteStreamsSubscriptions`; an empty list unsubscribes from all).
    SetSubscriptions {
        /// The room.
        room_id: RoomId,
        /// Receiving m-lines and the tracks they should carry from now on.
        subscribe: Vec<TrackSubscription>,
    },
    /// End this connection's media session in a room (unpublish and unsubscribe everything).
    CloseMedia {
        /// The room.
        room_id: RoomId,
    },
    /// The streams published in a room.
    ListStreams {
        /// The room.
        room_id: RoomId,
    },
    /// Start or stop recording a room (managers only). The bridge writes what it forwards — still
    /// encrypted — and tells members with [`Event::RecordingChanged`].
    SetRecording {
        /// The room.
        room_id: RoomId,
        /// Record from now on (`true`) or stop.
        enabled: bool,
    },
    /// The recordings of a room (members only).
    ListRecordings {
        /// The room.
        room_id: RoomId,
    },
    /// A piece of one file of a recording (members only), at most [`MAX_RECORDING_CHUNK`] bytes.
    FetchRecording {
        /// The room.
        room_id: RoomId,
        /// The recording.
        recording_id: String,
        /// The file (as listed).
        file: String,
        /// Where to start.
        offset: u64,
    },
    /// The TURN servers this bridge relays media through, with fresh credentials for the caller
    /// (an empty list when it has none).
    IceServers,
    /// Liveness check.
    Ping,
}

/// A successful response body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResponseBody {
    /// Nothing to return.
    Done,
    /// One room.
    Room {
        /// The room.
        room: Box<RoomRecord>,
    },
    /// A page of rooms.
    Rooms {
        /// The rooms of the page.
        rooms: Vec<RoomRecord>,
        /// How many rooms the caller can see in total.
        total: u64,
    },
    /// The users present in a room.
    Participants {
        /// The room.
        room_id: RoomId,
        /// Who is present (each once, however many connections).
        users: Vec<UserId>,
    },
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::IceServers`].
    IceServers {
        /// The servers, most preferred first.
        servers: Vec<IceServer>,
    },
    /// The bridge's SDP answer to a [`Request::Negotiate`].
    Answer {
        /// The SDP answer.
        answer: String,
        /// This connection's stream id in the room.
        stream_id: StreamId,
    },
    /// The streams of a room.
    Streams {
        /// The room.
        room_id: RoomId,
        /// Its published streams.
        streams: Vec<StreamInfo>,
    },
    /// The recordings of a room, oldest first.
    Recordings {
        /// The room.
        room_id: RoomId,
        /// Its recordings.
        recordings: Vec<RecordingInfo>,
    },
    /// A piece of a recording's file.
    RecordingChunk {
        /// The file.
        file: String,
        /// Where the piece starts.
        offset: u64,
        /// The file's size now.
        size: u64,
        /// The bytes.
        data: Bytes,
    },
}

/// The most bytes one [`ResponseBody::RecordingChunk`] carries (base64 keeps it under the 1 MiB
/// message limit).
pub const MAX_RECORDING_CHUNK: usize = 512 * 1024;

/// A recording as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingInfo {
    /// Its id.
    pub recording_id: String,
    /// When it started, ms since the Unix epoch (bridge clock).
    pub started_at: i64,
    /// When it stopped, if it has.
    pub stopped_at: Option<i64>,
    /// Its files and their sizes now.
    pub files: Vec<RecordingFile>,
}

/// One file of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingFile {
    /// Its name.
    pub name: String,
    /// Its size, bytes.
    pub size: u64,
}

/// Every error the bridge answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not valid JSON, or not a known message shape.
    Malformed,
    /// Over [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// Protocol versions differ.
    ProtocolMismatch,
    /// A request before a successful handshake.
    NotAuthenticated,
    /// The handshake signature did not verify.
    AuthFailed,
    /// The key is not registered with this bridge.
    NotRegistered,
    /// No such room, or one the caller may not see (the same answer, on purpose).
    NotFound,
    /// The caller may see the room but lacks the right.
    Forbidden,
    /// The update was made against a stale version.
    Conflict,
    /// The id is taken.
    AlreadyExists,
    /// A signature or an epoch chain does not verify.
    InvalidSignature,
    /// A field is out of range or inconsistent.
    Invalid,
    /// The bridge failed; nothing was changed.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::ProtocolMismatch => "protocol_mismatch",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({})", code.as_str())]
pub struct WireError {
    /// Machine-readable.
    pub code: ErrorCode,
    /// Human-readable.
    pub message: String,
}

impl WireError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }
}

/// Room and presence events. They reach members only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A room was created.
    RoomCreated {
        /// The room.
        room: Box<RoomRecord>,
    },
    /// A room was updated.
    RoomUpdated {
        /// The room.
        room: Box<RoomRecord>,
    },
    /// A room was deleted.
    RoomDeleted {
        /// The room.
        room_id: RoomId,
        /// Its context.
        context_id: ContextId,
    },
    /// This user was removed from a room (only the room id: the new state is no longer theirs to see).
    RemovedFromRoom {
        /// The room.
        room_id: RoomId,
        /// Its context.
        context_id: ContextId,
    },
    /// A stream was published or its tracks changed.
    StreamPublished {
        /// The room.
        room_id: RoomId,
        /// The stream.
        stream: StreamInfo,
    },
    /// A published stream's tracks changed (renegotiated).
    StreamUpdated {
        /// The room.
        room_id: RoomId,
        /// The stream as it is now.
        stream: StreamInfo,
    },
    /// A member's subscriptions changed (PrivMX `streamsSubscribed`).
    Subscribed {
        /// The room.
        room_id: RoomId,
        /// The subscriber.
        user_id: UserId,
        /// The tracks it receives now.
        track_ids: Vec<TrackId>,
    },
    /// A member stopped receiving every track (PrivMX `streamsUnsubscribed`).
    Unsubscribed {
        /// The room.
        room_id: RoomId,
        /// The subscriber.
        user_id: UserId,
    },
    /// A stream was unpublished (or its publisher left).
    StreamUnpublished {
        /// The room.
        room_id: RoomId,
        /// The stream.
        stream_id: StreamId,
    },
    /// A user joined a room.
    UserJoined {
        /// The room.
        room_id: RoomId,
        /// Who.
        user_id: UserId,
    },
    /// A user left a room (or disconnected).
    UserLeft {
        /// The room.
        room_id: RoomId,
        /// Who.
        user_id: UserId,
    },
    /// Recording of the room started or stopped.
    RecordingChanged {
        /// The room.
        room_id: RoomId,
        /// The recording.
        recording_id: String,
        /// Recording now.
        recording: bool,
        /// The manager who asked.
        by: UserId,
    },
}

impl Event {
    /// The room the event is about.
    pub fn room_id(&self) -> &RoomId {
        match self {
            Event::RoomCreated { room } | Event::RoomUpdated { room } => &room.id,
            Event::RoomDeleted { room_id, .. }
            | Event::RemovedFromRoom { room_id, .. }
            | Event::StreamPublished { room_id, .. }
            | Event::StreamUpdated { room_id, .. }
            | Event::Subscribed { room_id, .. }
            | Event::Unsubscribed { room_id, .. }
            | Event::StreamUnpublished { room_id, .. }
            | Event::UserJoined { room_id, .. }
            | Event::UserLeft { room_id, .. }
            | Event::RecordingChanged { room_id, .. } => room_id,
        }
    }
}

/// Bridge → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every connection.
    Hello {
        /// The bridge's protocol version.
        protocol: u32,
        /// 32 random bytes to sign.
        challenge: Bytes,
    },
    /// The handshake succeeded.
    Welcome {
        /// Who the bridge now knows the connection as.
        user_id: UserId,
        /// How to take this connection over if it drops.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeTicket>,
        /// Whether this connection took over an earlier one (see [`ClientMessage::Auth`]).
        #[serde(default)]
        resumed: bool,
    },
    /// The reply to one request (or to an unreadable message, then without id).
    Response {
        /// The request id, when it could be read.
        id: Option<u64>,
        /// The outcome.
        result: Result<ResponseBody, WireError>,
    },
    /// A pushed event.
    Event {
        /// The event.
        event: Event,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let msg = ServerMessage::Response {
            id: Some(7),
            result: Err(WireError::new(ErrorCode::Conflict, "stale")),
        };
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), msg);
        let req = ClientMessage::Request {
            id: 1,
            request: Request::ListRooms {
                context_id: ContextId::default(),
                paging: Paging::default(),
            },
        };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.contains("\"op\":\"list_rooms\""));
        assert_eq!(serde_json::from_str::<ClientMessage>(&text).unwrap(), req);
    }
}
