//! [`StreamsClient`]: the handle a game or tool holds. Non-blocking [`StreamsClient::send`] with replies
//! on the event channel (for game loops), and blocking helpers (for tools and tests).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use streams_proto::wire::{EventScope, Paging};
use streams_proto::{ContextId, Identity, RoomId, UserId};

use crate::api::{
    ClientEvent, ConnectionState, NewRoom, Operation, Reply, RequestId, Room, RoomEvent, RoomPage,
    RoomUpdate,
};
use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::rooms::TrustStore;
use crate::runtime::{self, Command, EventSink, RuntimeConfig};
use crate::tls::TlsTrust;
use crate::transport::Transport;

/// How to reach the bridge and as whom.
pub struct ClientConfig {
    /// The bridge's WebSocket URL: `wss://bridge.example:7800`, or `ws://127.0.0.1:7800` on this
    /// machine.
    pub bridge_url: String,
    /// Which certificates a `wss://` bridge may present (default: the platform's roots).
    pub tls: TlsTrust,
    /// Allow plain `ws://` to a host other than this machine (signaling then crosses the network
    /// unencrypted: a private test network only). Off by default.
    pub allow_insecure: bool,
    /// This user's identity.
    pub identity: Identity,
    /// How long one operation may take.
    pub request_timeout: Duration,
    /// Reconnection policy.
    pub backoff: Backoff,
    /// Capacity of the command channel.
    pub command_capacity: usize,
    /// Capacity of the event channel (oldest events are dropped beyond it).
    pub event_capacity: usize,
    /// Where verified room heads are kept across restarts (rollback protection); memory only if `None`.
    pub trust_file: Option<std::path::PathBuf>,
}

impl ClientConfig {
    /// Defaults: 10 s operations, reconnects at most 1 s apart for 60 attempts then up to 10 s
    /// apart ([`Backoff::default`]), 256 commands, 1024 events.
    pub fn new(bridge_url: impl Into<String>, identity: Identity) -> Self {
        ClientConfig {
            bridge_url: bridge_url.into(),
            tls: TlsTrust::default(),
            allow_insecure: false,
            identity,
            request_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            command_capacity: 256,
            event_capacity: 1024,
            trust_file: None,
        }
    }
}

/// A running client. Dropping it stops its thread (and every [`ClientHandle`] then reports
/// [`ClientError::Stopped`]).
pub struct StreamsClient {
    commands: Option<Sender<Command>>,
    events: Receiver<ClientEvent>,
    sink: EventSink,
    next_id: Arc<AtomicU64>,
    user_id: UserId,
    request_timeout: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A cloneable way to run operations on a client from other threads (media engines, tools).
#[derive(Clone)]
pub struct ClientHandle {
    commands: Sender<Command>,
    next_id: Arc<AtomicU64>,
    request_timeout: Duration,
}

impl ClientHandle {
    /// Runs an operation and waits for its result.
    pub fn call(&self, op: Operation) -> Result<Reply, ClientError> {
        call(&self.commands, &self.next_id, self.request_timeout, op)
    }

    /// Starts an operation without waiting: `on_reply` gets its result, on the client's runtime
    /// thread (so it must only hand the result on, never block). [`ClientError::Busy`] or
    /// [`ClientError::Stopped`] now means it was not started.
    pub fn request(
        &self,
        op: Operation,
        on_reply: impl FnOnce(Result<Reply, ClientError>) + Send + 'static,
    ) -> Result<(), ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.commands
            .try_send(Command::Run {
                id,
                op: Box::new(op),
                reply: Some(Box::new(on_reply)),
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => ClientError::Busy,
                TrySendError::Disconnected(_) => ClientError::Stopped,
            })
    }

    /// A channel that also receives every room event (bounded; events beyond `capacity` are dropped
    /// for this tap only).
    pub fn tap_room_events(&self, capacity: usize) -> Result<Receiver<RoomEvent>, ClientError> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        self.commands
            .try_send(Command::Tap(tx))
            .map_err(|_| ClientError::Stopped)?;
        Ok(rx)
    }
}

fn call(
    commands: &Sender<Command>,
    next_id: &AtomicU64,
    timeout: Duration,
    op: Operation,
) -> Result<Reply, ClientError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
    commands
        .try_send(Command::Run {
            id,
            op: Box::new(op),
            reply: Some(Box::new(move |result| {
                let _ = tx.send(result);
            })),
        })
        .map_err(|e| match e {
            TrySendError::Full(_) => ClientError::Busy,
            TrySendError::Disconnected(_) => ClientError::Stopped,
        })?;
    match rx.recv_timeout(timeout + Duration::from_secs(1)) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
        Err(RecvTimeoutError::Disconnected) => Err(ClientError::Stopped),
    }
}

impl StreamsClient {
    /// Starts the client thread; it connects in the background (see [`ConnectionState`] events).
    /// A URL that is not a bridge URL, or plain `ws://` to another machine without
    /// [`ClientConfig::allow_insecure`], is refused here ([`ClientError::Connect`]).
    pub fn start(config: ClientConfig) -> Result<Self, ClientError> {
        let transport = Transport::new(&config.bridge_url, &config.tls, config.allow_insecure)
            .map_err(ClientError::Connect)?;
        let (command_tx, command_rx) = crossbeam_channel::bounded(config.command_capacity.max(1));
        let (event_tx, event_rx) = crossbeam_channel::bounded(config.event_capacity.max(1));
        let sink = EventSink::new(event_tx, event_rx.clone());
        let user_id = config.identity.user_id().clone();
        let trust = match config.trust_file {
            Some(path) => TrustStore::open(path)?,
            None => TrustStore::in_memory(),
        };
        let runtime_config = RuntimeConfig {
            transport,
            identity: config.identity,
            backoff: config.backoff,
            request_timeout: config.request_timeout,
            trust,
        };
        let thread_sink = sink.clone();
        let thread = std::thread::Builder::new()
            .name("streams-client".into())
            .spawn(move || runtime::run(runtime_config, command_rx, thread_sink))
            .map_err(|e| ClientError::Invalid(format!("cannot start the client thread: {e}")))?;
        Ok(StreamsClient {
            commands: Some(command_tx),
            events: event_rx,
            sink,
            next_id: Arc::new(AtomicU64::new(0)),
            user_id,
            request_timeout: config.request_timeout,
            thread: Some(thread),
        })
    }

    /// This client's user id.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Queues an operation without blocking; its [`ClientEvent::Reply`] carries the returned id.
    pub fn send(&self, op: Operation) -> Result<RequestId, ClientError> {
        let id = self.next_request_id();
        self.send_with_id(id, op)?;
        Ok(id)
    }

    /// A fresh request id, for callers that queue operations before sending them.
    pub fn next_request_id(&self) -> RequestId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Queues an operation under an id from [`StreamsClient::next_request_id`], without blocking.
    /// [`ClientError::Busy`] means the command channel is full: try again later.
    pub fn send_with_id(&self, id: RequestId, op: Operation) -> Result<(), ClientError> {
        self.push(Command::Run {
            id,
            op: Box::new(op),
            reply: None,
        })
    }

    /// A cloneable handle for other threads.
    pub fn handle(&self) -> Result<ClientHandle, ClientError> {
        Ok(ClientHandle {
            commands: self.commands.clone().ok_or(ClientError::Stopped)?,
            next_id: Arc::clone(&self.next_id),
            request_timeout: self.request_timeout,
        })
    }

    fn push(&self, command: Command) -> Result<(), ClientError> {
        let commands = self.commands.as_ref().ok_or(ClientError::Stopped)?;
        commands.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => ClientError::Busy,
            TrySendError::Disconnected(_) => ClientError::Stopped,
        })
    }

    /// Events: replies to [`StreamsClient::send`], room events, connection changes.
    pub fn events(&self) -> &Receiver<ClientEvent> {
        &self.events
    }

    /// Events dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.sink.dropped()
    }

    /// Runs an operation and waits for its result.
    pub fn call(&self, op: Operation) -> Result<Reply, ClientError> {
        let commands = self.commands.as_ref().ok_or(ClientError::Stopped)?;
        call(commands, &self.next_id, self.request_timeout, op)
    }

    /// Waits until connected, consuming connection events (not room events or replies, which are kept
    /// in order for the caller only if they arrive after this returns).
    pub fn wait_connected(&self, timeout: Duration) -> Result<UserId, ClientError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut last = ClientError::Disconnected("no connection attempt finished".into());
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ClientEvent::Connection(ConnectionState::Connected { user_id, .. })) => {
                    return Ok(user_id);
                }
                Ok(ClientEvent::Connection(ConnectionState::Disconnected { reason, error })) => {
                    last = match error {
                        // A certificate or a key the bridge refuses stays refused: say so now.
                        Some(error) if !error.may_pass_on_retry() => {
                            return Err(ClientError::Connect(error));
                        }
                        Some(error) => ClientError::Connect(error),
                        None => ClientError::Disconnected(reason),
                    };
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err(last),
                Err(RecvTimeoutError::Disconnected) => return Err(ClientError::Stopped),
            }
        }
    }

    /// Creates a room.
    pub fn create_room(&self, new: NewRoom) -> Result<Room, ClientError> {
        expect_room(self.call(Operation::CreateRoom(new))?)
    }

    /// Updates a room.
    pub fn update_room(&self, update: RoomUpdate) -> Result<Room, ClientError> {
        expect_room(self.call(Operation::UpdateRoom(update))?)
    }

    /// Fetches, verifies and decrypts a room.
    pub fn get_room(&self, room_id: &RoomId) -> Result<Room, ClientError> {
        expect_room(self.call(Operation::GetRoom(room_id.clone()))?)
    }

    /// Lists rooms of a context (default if `None`).
    pub fn list_rooms(
        &self,
        context_id: Option<ContextId>,
        paging: Paging,
    ) -> Result<RoomPage, ClientError> {
        match self.call(Operation::ListRooms { context_id, paging })? {
            Reply::Rooms(page) => Ok(page),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Deletes a room.
    pub fn delete_room(&self, room_id: &RoomId) -> Result<(), ClientError> {
        self.call(Operation::DeleteRoom(room_id.clone()))
            .map(|_| ())
    }

    /// Joins a room; returns who is present.
    pub fn join_room(&self, room_id: &RoomId) -> Result<Vec<UserId>, ClientError> {
        expect_participants(self.call(Operation::JoinRoom(room_id.clone()))?)
    }

    /// Leaves a room.
    pub fn leave_room(&self, room_id: &RoomId) -> Result<(), ClientError> {
        self.call(Operation::LeaveRoom(room_id.clone())).map(|_| ())
    }

    /// Who is present in a room.
    pub fn participants(&self, room_id: &RoomId) -> Result<Vec<UserId>, ClientError> {
        expect_participants(self.call(Operation::ListParticipants(room_id.clone()))?)
    }

    /// Subscribes to events of a scope.
    pub fn subscribe(&self, scope: EventScope) -> Result<(), ClientError> {
        self.call(Operation::Subscribe(scope)).map(|_| ())
    }

    /// Stops the client and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(commands) = self.commands.take() {
            // Handles may keep the channel open: ask the runtime to stop explicitly.
            let _ = commands.send_timeout(Command::Shutdown, Duration::from_secs(1));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StreamsClient {
    fn drop(&mut self) {
        self.stop();
    }
}

fn expect_room(reply: Reply) -> Result<Room, ClientError> {
    match reply {
        Reply::Room(room) => Ok(*room),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

fn expect_participants(reply: Reply) -> Result<Vec<UserId>, ClientError> {
    match reply {
        Reply::Participants { users, .. } => Ok(users),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}
