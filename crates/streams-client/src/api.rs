//! The client's channel API: [`Operation`]s in, [`ClientEvent`]s out, and the decrypted [`Room`] view.
use streams_proto::policy::{Policy, Role};
use streams_proto::wire::{EventScope, Paging};
use streams_proto::{ContextId, PrivateMeta, RoomId, RoomRecord, StreamId, TrackId, UserId};

use crate::error::ClientError;

/// Identifies one operation; echoed in its [`ClientEvent::Reply`].
pub type RequestId = u64;

/// A room to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRoom {
    /// Context (the default one if `None`).
    pub context_id: Option<ContextId>,
    /// Display name, stored in the encrypted private metadata.
    pub name: String,
    /// Users (the creator is added as a manager).
    pub users: Vec<UserId>,
    /// Managers besides the creator.
    pub managers: Vec<UserId>,
    /// Public metadata (the bridge can read it).
    pub public_meta: Vec<u8>,
    /// Private metadata (members only).
    pub private_meta: Vec<u8>,
    /// Policy (default if `None`).
    pub policy: Option<Policy>,
}

/// Changes to a room. Unset fields stay as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomUpdate {
    /// The room.
    pub room_id: RoomId,
    /// The version the change is made against; `None` uses the version just fetched.
    pub version: Option<u64>,
    /// Apply even if the version is stale.
    pub force: bool,
    /// New display name.
    pub name: Option<String>,
    /// Users to add.
    pub add_users: Vec<UserId>,
    /// Users to remove.
    pub remove_users: Vec<UserId>,
    /// Managers to add.
    pub add_managers: Vec<UserId>,
    /// Managers to remove.
    pub remove_managers: Vec<UserId>,
    /// New public metadata.
    pub public_meta: Option<Vec<u8>>,
    /// New private metadata.
    pub private_meta: Option<Vec<u8>>,
    /// New policy.
    pub policy: Option<Policy>,
    /// Start a new key epoch even if membership is unchanged (PrivMX `forceGenerateNewKey`).
    pub rotate_key: bool,
}

impl RoomUpdate {
    /// An update of `room_id` that changes nothing yet.
    pub fn new(room_id: RoomId) -> Self {
        RoomUpdate {
            room_id,
            version: None,
            force: false,
            name: None,
            add_users: Vec::new(),
            remove_users: Vec::new(),
            add_managers: Vec::new(),
            remove_managers: Vec::new(),
            public_meta: None,
            private_meta: None,
            policy: None,
            rotate_key: false,
        }
    }
}

/// What the client can be asked to do (PrivMX StreamApi operations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create a room.
    CreateRoom(NewRoom),
    /// Update a room.
    UpdateRoom(RoomUpdate),
    /// Fetch, verify and decrypt a room.
    GetRoom(RoomId),
    /// List the rooms of a context visible to this user.
    ListRooms {
        /// The context (default if `None`).
        context_id: Option<ContextId>,
        /// Which page.
        paging: Paging,
    },
    /// Delete a room.
    DeleteRoom(RoomId),
    /// Join a room (presence); re-joined automatically after a reconnect.
    JoinRoom(RoomId),
    /// Leave a room.
    LeaveRoom(RoomId),
    /// Who is present in a room.
    ListParticipants(RoomId),
    /// Receive events of a context or room; renewed automatically after a reconnect.
    Subscribe(EventScope),
    /// Stop receiving events of a scope.
    Unsubscribe(EventScope),
    /// Negotiate this client's media session in a room with an SDP offer (see
    /// [`crate::media::session::MediaSession`]).
    Negotiate {
        /// The room.
        room_id: RoomId,
        /// The SDP offer.
        offer: String,
        /// Tracks the offer publishes.
        publish: Vec<streams_proto::wire::TrackAnnounce>,
        /// Receiving m-lines and the remote tracks they carry.
        subscribe: Vec<streams_proto::wire::TrackSubscription>,
    },
    /// Change which remote tracks this client's media session receives (empty: none).
    SetSubscriptions {
        /// The room.
        room_id: RoomId,
        /// Receiving m-lines and their tracks.
        subscribe: Vec<streams_proto::wire::TrackSubscription>,
    },
    /// End this client's media session in a room.
    CloseMedia(RoomId),
    /// The streams published in a room.
    ListStreams(RoomId),
    /// Start or stop recording a room (managers only).
    SetRecording {
        /// The room.
        room_id: RoomId,
        /// Record (`true`) or stop.
        enabled: bool,
    },
    /// The recordings of a room (members only).
    ListRecordings(RoomId),
    /// The TURN servers the bridge relays media through, with fresh credentials, resolved.
    TurnServers,
    /// A piece of a recording's file (members only).
    FetchRecording {
        /// The room.
        room_id: RoomId,
        /// The recording.
        recording_id: String,
        /// The file.
        file: String,
        /// Where to start.
        offset: u64,
    },
}

/// A room as a member (or permitted outsider) sees it: verified, and decrypted where possible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// The room id.
    pub id: RoomId,
    /// Its context.
    pub context_id: ContextId,
    /// Creation time (ms since the Unix epoch).
    pub created_at: i64,
    /// Creator.
    pub created_by: UserId,
    /// Last change (ms since the Unix epoch).
    pub modified_at: i64,
    /// Last author.
    pub modified_by: UserId,
    /// Version, for updates.
    pub version: u64,
    /// Users.
    pub users: Vec<UserId>,
    /// Managers.
    pub managers: Vec<UserId>,
    /// Policy.
    pub policy: Policy,
    /// Current key epoch.
    pub key_epoch: u64,
    /// Public metadata.
    pub public_meta: Vec<u8>,
    /// Name and private metadata, `None` when this user is not a member and cannot decrypt them.
    pub private: Option<PrivateMeta>,
    /// This user's role.
    pub role: Role,
    /// The verified record as served.
    pub record: RoomRecord,
}

impl Room {
    /// The display name, if readable.
    pub fn name(&self) -> Option<&str> {
        self.private.as_ref().map(|p| p.name.as_str())
    }

    /// The private metadata, if readable.
    pub fn private_meta(&self) -> Option<&[u8]> {
        self.private.as_ref().map(|p| p.data.as_slice())
    }
}

/// A page of rooms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomPage {
    /// Rooms that verified.
    pub rooms: Vec<Room>,
    /// How many rooms this user can see in all.
    pub total: u64,
    /// Rooms the bridge served that failed verification, with why.
    pub rejected: Vec<(RoomId, ClientError)>,
}

/// A successful operation's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Done, nothing to return.
    Done,
    /// One room.
    Room(Box<Room>),
    /// A page of rooms.
    Rooms(RoomPage),
    /// The bridge's SDP answer.
    Answer {
        /// The answer.
        answer: String,
        /// This client's stream id in the room.
        stream_id: StreamId,
    },
    /// The streams of a room.
    Streams(Vec<streams_proto::wire::StreamInfo>),
    /// Who is present in a room.
    Participants {
        /// The room.
        room_id: RoomId,
        /// The users present.
        users: Vec<UserId>,
    },
    /// The recordings of a room.
    Recordings(Vec<streams_proto::wire::RecordingInfo>),
    /// The TURN servers this client may use.
    TurnServers(Vec<crate::turn_servers::TurnServer>),
    /// A piece of a recording's file.
    RecordingChunk {
        /// Where it starts.
        offset: u64,
        /// The file's size.
        size: u64,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// Room and presence events, verified and decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomEvent {
    /// The signaling connection is back after a drop (resumed or not): events of the gap may be
    /// missing, so whoever follows a room re-reads what matters (its record, its streams). Only
    /// event taps (media engines) get it; applications see [`ConnectionState::Connected`].
    Resync {
        /// The bridge took the new connection as the old one's resume (its media sessions are
        /// there); `false`: it did not know the old one any more (it restarted, or the grace
        /// passed), so nothing of it is left there.
        resumed: bool,
    },
    /// A room was created.
    Created(Box<Room>),
    /// A room was updated.
    Updated(Box<Room>),
    /// A room was deleted.
    Deleted {
        /// The room.
        room_id: RoomId,
        /// Its context.
        context_id: ContextId,
    },
    /// This user was removed from the room.
    RemovedFrom {
        /// The room.
        room_id: RoomId,
        /// Its context.
        context_id: ContextId,
    },
    /// A stream was published (or its tracks changed).
    StreamPublished {
        /// The room.
        room_id: RoomId,
        /// The stream.
        stream: streams_proto::wire::StreamInfo,
    },
    /// A stream's tracks changed.
    StreamUpdated {
        /// The room.
        room_id: RoomId,
        /// The stream now.
        stream: streams_proto::wire::StreamInfo,
    },
    /// A member's subscriptions changed.
    Subscribed {
        /// The room.
        room_id: RoomId,
        /// Who.
        user_id: UserId,
        /// The tracks they receive now.
        track_ids: Vec<TrackId>,
    },
    /// A member stopped receiving every track.
    Unsubscribed {
        /// The room.
        room_id: RoomId,
        /// Who.
        user_id: UserId,
    },
    /// A stream was unpublished.
    StreamUnpublished {
        /// The room.
        room_id: RoomId,
        /// The stream.
        stream_id: StreamId,
    },
    /// A user joined.
    UserJoined {
        /// The room.
        room_id: RoomId,
        /// Who.
        user_id: UserId,
    },
    /// A user left.
    UserLeft {
        /// The room.
        room_id: RoomId,
        /// Who.
        user_id: UserId,
    },
    /// Recording of a room started or stopped (show it to the players).
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
    /// The bridge pushed a room that failed verification.
    Rejected {
        /// The room.
        room_id: RoomId,
        /// Why.
        error: ClientError,
    },
}

/// The connection's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Trying to connect (attempt 1, 2, …).
    Connecting {
        /// Which attempt.
        attempt: u32,
    },
    /// Authenticated with the bridge, with every event subscription and room join of the previous
    /// connection restored: an event the bridge sends from now on reaches this client.
    Connected {
        /// As whom.
        user_id: UserId,
        /// `Some(gap)` when this connection resumed the previous one, which dropped `gap` ago: the
        /// bridge kept its media sessions, presence and subscriptions, so media carried on and
        /// nobody saw this member leave. `None` on a first connection or a fresh one.
        resumed: Option<std::time::Duration>,
    },
    /// Not connected; the client retries with backoff.
    Disconnected {
        /// Why.
        reason: String,
        /// The typed reason when a connection attempt failed (TLS, login, unreachable); `None`
        /// when an established connection was lost.
        error: Option<crate::transport::ConnectError>,
    },
}

/// What comes out of the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The result of an operation sent with [`crate::StreamsClient::send`].
    Reply {
        /// The operation's id.
        id: RequestId,
        /// Its outcome.
        result: Result<Reply, ClientError>,
    },
    /// A room or presence event.
    Room(RoomEvent),
    /// The connection changed state.
    Connection(ConnectionState),
}
