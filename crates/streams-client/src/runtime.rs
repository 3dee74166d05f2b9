//! The client runtime: a thread with a Tokio runtime that keeps a connection to the bridge (reconnecting
//! with [`Backoff`]), runs operations, and turns bridge events into verified [`ClientEvent`]s.
//!
//! Commands arrive on a bounded crossbeam channel; events leave on another. Neither side ever blocks on
//! the other: when the event channel is full the oldest event is dropped and counted.
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use streams_proto::wire::{Event, EventScope, Request, ResponseBody, ResumeTicket};
use streams_proto::{CryptoError, Identity, RoomId};
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    ClientEvent, ConnectionState, Operation, Reply, RequestId, Room, RoomEvent, RoomPage,
};
use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::link::{self, LinkEnd, Outgoing, Welcome};
use crate::rooms::{TrustStore, context_or_default, create_request, update_request};
use crate::transport::Transport;

/// One command for the runtime.
pub enum Command {
    /// Run an operation.
    Run {
        /// Echoed in the reply.
        id: RequestId,
        /// What to do.
        op: Box<Operation>,
        /// Who takes the reply (on the runtime's thread: it must not block); the event channel
        /// when `None`.
        reply: Option<OnReply>,
    },
    /// Also deliver every room event to this channel (for media engines); dropped when it is full or
    /// closed.
    Tap(Sender<RoomEvent>),
    /// Stop the runtime (even while handles still exist).
    Shutdown,
}

/// Takes the result of one operation, on the runtime's thread.
pub type OnReply = Box<dyn FnOnce(Result<Reply, ClientError>) + Send>;

/// Pushes events without ever blocking: when full, the oldest event is dropped and counted.
#[derive(Clone)]
pub struct EventSink {
    tx: Sender<ClientEvent>,
    rx: Receiver<ClientEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink over a channel (the receiver clone is used only to drop the oldest).
    pub fn new(tx: Sender<ClientEvent>, rx: Receiver<ClientEvent>) -> Self {
        EventSink {
            tx,
            rx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Pushes one event.
    pub fn push(&self, event: ClientEvent) {
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(event)) => {
                let _ = self.rx.try_recv();
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "event channel full; dropping oldest events");
                }
                let _ = self.tx.try_send(event);
            }
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// State shared by the supervisor and operations.
pub struct Shared {
    identity: Identity,
    trust: TrustStore,
    joined: Mutex<HashSet<RoomId>>,
    scopes: Mutex<HashSet<EventScope>>,
    requests: mpsc::Sender<Outgoing>,
    events: EventSink,
    taps: Mutex<Vec<Sender<RoomEvent>>>,
    /// Notified when the client shuts down: the link closes, the supervisor ends.
    stopping: tokio::sync::Notify,
}

impl Shared {
    async fn call(&self, request: Request) -> Result<ResponseBody, ClientError> {
        let (respond, answer) = oneshot::channel();
        self.requests
            .send(Outgoing { request, respond })
            .await
            .map_err(|_| ClientError::Stopped)?;
        answer.await.map_err(|_| ClientError::Stopped)?
    }

    /// [`Self::call`], given up as [`ClientError::Timeout`] after `timeout`.
    async fn call_within(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<ResponseBody, ClientError> {
        tokio::time::timeout(timeout, self.call(request))
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    fn open_room(&self, body: ResponseBody) -> Result<Room, ClientError> {
        match body {
            ResponseBody::Room { room } => self.trust.open_room(&self.identity, *room),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Fetches and verifies a room. A reply older than what an event already showed can be an honest
    /// race (read before a concurrent update, delivered after its event): one refetch settles it; a
    /// bridge that keeps serving the old state is refused.
    async fn get_room(&self, room_id: &RoomId) -> Result<Room, ClientError> {
        let mut retried = false;
        loop {
            let body = self
                .call(Request::GetRoom {
                    room_id: room_id.clone(),
                })
                .await?;
            match self.open_room(body) {
                Err(ClientError::Crypto(CryptoError::ChainRollback { .. })) if !retried => {
                    retried = true;
                }
                other => return other,
            }
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pushed room, verified and decrypted into `event`, or rejected with why.
    fn verified(
        &self,
        record: streams_proto::RoomRecord,
        event: fn(Box<Room>) -> RoomEvent,
    ) -> RoomEvent {
        let id = record.id.clone();
        match self.trust.open_room(&self.identity, record) {
            Ok(room) => event(Box::new(room)),
            Err(error) => RoomEvent::Rejected { room_id: id, error },
        }
    }

    fn on_event(&self, event: Event) {
        let room_event = match event {
            Event::RoomCreated { room } => self.verified(*room, RoomEvent::Created),
            Event::RoomUpdated { room } => self.verified(*room, RoomEvent::Updated),
            Event::RoomDeleted {
                room_id,
                context_id,
            } => {
                Self::lock(&self.joined).remove(&room_id);
                RoomEvent::Deleted {
                    room_id,
                    context_id,
                }
            }
            Event::RemovedFromRoom {
                room_id,
                context_id,
            } => {
                Self::lock(&self.joined).remove(&room_id);
                RoomEvent::RemovedFrom {
                    room_id,
                    context_id,
                }
            }
            Event::StreamPublished { room_id, stream } => {
                RoomEvent::StreamPublished { room_id, stream }
            }
            Event::StreamUnpublished { room_id, stream_id } => {
                RoomEvent::StreamUnpublished { room_id, stream_id }
            }
            Event::StreamUpdated { room_id, stream } => {
                RoomEvent::StreamUpdated { room_id, stream }
            }
            Event::Subscribed {
                room_id,
                user_id,
                track_ids,
            } => RoomEvent::Subscribed {
                room_id,
                user_id,
                track_ids,
            },
            Event::Unsubscribed { room_id, user_id } => {
                RoomEvent::Unsubscribed { room_id, user_id }
            }
            Event::UserJoined { room_id, user_id } => RoomEvent::UserJoined { room_id, user_id },
            Event::UserLeft { room_id, user_id } => RoomEvent::UserLeft { room_id, user_id },
            Event::RecordingChanged {
                room_id,
                recording_id,
                recording,
                by,
            } => RoomEvent::RecordingChanged {
                room_id,
                recording_id,
                recording,
                by,
            },
        };
        self.tap(&room_event);
        self.events.push(ClientEvent::Room(room_event));
    }

    /// Hands `event` to every event tap (a full one misses it; a closed one is dropped).
    fn tap(&self, event: &RoomEvent) {
        Self::lock(&self.taps).retain(|tap| match tap.try_send(event.clone()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

/// Runs one operation to completion.
async fn execute(s: &Shared, op: Operation) -> Result<Reply, ClientError> {
    match op {
        Operation::CreateRoom(new) => {
            let request = create_request(&s.identity, &new)?;
            let body = s.call(request).await?;
            Ok(Reply::Room(Box::new(s.open_room(body)?)))
        }
        Operation::UpdateRoom(update) => {
            let current = s.get_room(&update.room_id).await?;
            let request = update_request(&s.identity, &current, &update)?;
            let body = s.call(request).await?;
            Ok(Reply::Room(Box::new(s.open_room(body)?)))
        }
        Operation::GetRoom(room_id) => Ok(Reply::Room(Box::new(s.get_room(&room_id).await?))),
        Operation::ListRooms { context_id, paging } => {
            let body = s
                .call(Request::ListRooms {
                    context_id: context_or_default(context_id),
                    paging,
                })
                .await?;
            let ResponseBody::Rooms { rooms, total } = body else {
                return Err(ClientError::Unexpected(format!("{body:?}")));
            };
            let mut page = RoomPage {
                rooms: Vec::new(),
                total,
                rejected: Vec::new(),
            };
            for record in rooms {
                let id = record.id.clone();
                match s.trust.open_room(&s.identity, record) {
                    Ok(room) => page.rooms.push(room),
                    Err(e) => page.rejected.push((id, e)),
                }
            }
            Ok(Reply::Rooms(page))
        }
        Operation::DeleteRoom(room_id) => {
            s.call(Request::DeleteRoom {
                room_id: room_id.clone(),
            })
            .await?;
            Shared::lock(&s.joined).remove(&room_id);
            Ok(Reply::Done)
        }
        Operation::JoinRoom(room_id) => {
            let body = s
                .call(Request::JoinRoom {
                    room_id: room_id.clone(),
                })
                .await?;
            Shared::lock(&s.joined).insert(room_id);
            participants(body)
        }
        Operation::LeaveRoom(room_id) => {
            s.call(Request::LeaveRoom {
                room_id: room_id.clone(),
            })
            .await?;
            Shared::lock(&s.joined).remove(&room_id);
            Ok(Reply::Done)
        }
        Operation::ListParticipants(room_id) => {
            participants(s.call(Request::ListParticipants { room_id }).await?)
        }
        Operation::Subscribe(scope) => {
            s.call(Request::Subscribe {
                scope: scope.clone(),
            })
            .await?;
            Shared::lock(&s.scopes).insert(scope);
            Ok(Reply::Done)
        }
        Operation::Negotiate {
            room_id,
            offer,
            publish,
            subscribe,
        } => match s
            .call(Request::Negotiate {
                room_id,
                offer,
                publish,
                subscribe,
            })
            .await?
        {
            ResponseBody::Answer { answer, stream_id } => Ok(Reply::Answer { answer, stream_id }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        },
        Operation::SetSubscriptions { room_id, subscribe } => {
            s.call(Request::SetSubscriptions { room_id, subscribe })
                .await?;
            Ok(Reply::Done)
        }
        Operation::CloseMedia(room_id) => {
            s.call(Request::CloseMedia { room_id }).await?;
            Ok(Reply::Done)
        }
        Operation::ListStreams(room_id) => match s.call(Request::ListStreams { room_id }).await? {
            ResponseBody::Streams { streams, .. } => Ok(Reply::Streams(streams)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        },
        Operation::TurnServers => match s.call(Request::IceServers).await? {
            ResponseBody::IceServers { servers } => Ok(Reply::TurnServers(
                crate::turn_servers::resolve(servers).await,
            )),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        },
        Operation::SetRecording { room_id, enabled } => {
            s.call(Request::SetRecording { room_id, enabled }).await?;
            Ok(Reply::Done)
        }
        Operation::ListRecordings(room_id) => {
            match s.call(Request::ListRecordings { room_id }).await? {
                ResponseBody::Recordings { recordings, .. } => Ok(Reply::Recordings(recordings)),
                other => Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
        Operation::FetchRecording {
            room_id,
            recording_id,
            file,
            offset,
        } => match s
            .call(Request::FetchRecording {
                room_id,
                recording_id,
                file,
                offset,
            })
            .await?
        {
            ResponseBody::RecordingChunk {
                offset, size, data, ..
            } => Ok(Reply::RecordingChunk {
                offset,
                size,
                data: data.0,
            }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        },
        Operation::Unsubscribe(scope) => {
            s.call(Request::Unsubscribe {
                scope: scope.clone(),
            })
            .await?;
            Shared::lock(&s.scopes).remove(&scope);
            Ok(Reply::Done)
        }
    }
}

fn participants(body: ResponseBody) -> Result<Reply, ClientError> {
    match body {
        ResponseBody::Participants { room_id, users } => Ok(Reply::Participants { room_id, users }),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// Renews the event subscriptions and room joins of earlier connections, then reports `Connected`, so
/// whoever waits for it (a test, the Bevy session's marker) misses no event sent after it. Runs beside
/// the link, which carries its requests; aborted if the link ends first. A renewal the bridge refuses
/// or does not answer within `timeout` is logged and skipped, so `Connected` always comes. After a
/// drop, the event taps are told to resynchronise.
async fn restore_then_announce(
    s: Arc<Shared>,
    welcome: Welcome,
    after_drop: Option<Duration>,
    timeout: Duration,
) {
    let scopes: Vec<EventScope> = Shared::lock(&s.scopes).iter().cloned().collect();
    let joined: Vec<RoomId> = Shared::lock(&s.joined).iter().cloned().collect();
    for scope in scopes {
        let renewed = s.call_within(
            Request::Subscribe {
                scope: scope.clone(),
            },
            timeout,
        );
        if let Err(e) = renewed.await {
            tracing::warn!(?scope, "could not renew subscription: {e}");
        }
    }
    for room_id in joined {
        let rejoined = s.call_within(
            Request::JoinRoom {
                room_id: room_id.clone(),
            },
            timeout,
        );
        if let Err(e) = rejoined.await {
            tracing::warn!(room = %room_id, "could not rejoin: {e}");
            Shared::lock(&s.joined).remove(&room_id);
        }
    }
    if after_drop.is_some() {
        s.tap(&RoomEvent::Resync {
            resumed: welcome.resumed,
        });
    }
    s.events
        .push(ClientEvent::Connection(ConnectionState::Connected {
            user_id: welcome.user_id,
            resumed: after_drop.filter(|_| welcome.resumed),
        }));
}

/// Keeps a connection up until the runtime stops.
async fn supervise(
    transport: Transport,
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<Outgoing>,
    mut backoff: Backoff,
    request_timeout: Duration,
) {
    let mut attempt = 0u32;
    // The last connection's ticket (always presented: the bridge decides whether its grace, which
    // runs from when the bridge saw the drop, still lasts) and when it dropped.
    let mut ticket: Option<ResumeTicket> = None;
    let mut dropped_at: Option<Instant> = None;
    loop {
        attempt += 1;
        shared
            .events
            .push(ClientEvent::Connection(ConnectionState::Connecting {
                attempt,
            }));
        let url = transport.url();
        let resume = ticket.as_ref().map(|t| t.token.clone());
        let connecting = tokio::select! {
            connected = link::connect(&transport, &shared.identity, resume) => connected,
            () = shared.stopping.notified() => return,
        };
        let (reason, error) = match connecting {
            Ok((ws, welcome)) => {
                backoff.reset();
                attempt = 0;
                let after_drop = dropped_at.take().map(|at| at.elapsed());
                tracing::info!(%url, resumed = welcome.resumed, "connected to the bridge");
                ticket = welcome.ticket.clone();
                let restoring = tokio::spawn(restore_then_announce(
                    Arc::clone(&shared),
                    welcome,
                    after_drop,
                    request_timeout,
                ));
                let events = Arc::clone(&shared);
                let end = link::run(ws, &mut requests, &shared.stopping, |event| {
                    events.on_event(event);
                })
                .await;
                restoring.abort();
                match end {
                    LinkEnd::Stopped => return,
                    LinkEnd::Lost(reason) => {
                        dropped_at = Some(Instant::now());
                        (reason, None)
                    }
                }
            }
            Err(e) => {
                // Nothing can be sent now: fail what is queued rather than let it hang.
                while let Ok(queued) = requests.try_recv() {
                    let _ = queued
                        .respond
                        .send(Err(ClientError::Disconnected(e.to_string())));
                }
                (e.to_string(), Some(e))
            }
        };
        tracing::warn!(%url, "disconnected: {reason}");
        shared
            .events
            .push(ClientEvent::Connection(ConnectionState::Disconnected {
                reason,
                error,
            }));
        let delay = backoff.next_delay(rand::random::<f64>());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.stopping.notified() => return,
        }
    }
}

/// Settings of the runtime.
pub struct RuntimeConfig {
    /// The bridge's URL, checked, with TLS prepared for `wss://`.
    pub transport: Transport,
    /// Who connects.
    pub identity: Identity,
    /// Reconnection policy.
    pub backoff: Backoff,
    /// How long one operation may take.
    pub request_timeout: Duration,
    /// Verified room heads (see [`TrustStore`]).
    pub trust: TrustStore,
}

/// Runs the runtime on the current thread until the command channel closes.
pub fn run(config: RuntimeConfig, commands: Receiver<Command>, events: EventSink) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            events.push(ClientEvent::Connection(ConnectionState::Disconnected {
                reason: format!("cannot start the client runtime: {e}"),
                error: None,
            }));
            return;
        }
    };
    let (request_tx, request_rx) = mpsc::channel(256);
    let shared = Arc::new(Shared {
        identity: config.identity,
        trust: config.trust,
        joined: Mutex::new(HashSet::new()),
        scopes: Mutex::new(HashSet::new()),
        requests: request_tx,
        events,
        taps: Mutex::new(Vec::new()),
        stopping: tokio::sync::Notify::new(),
    });
    // Bridge the blocking command channel into the runtime.
    let (command_tx, mut command_rx) = mpsc::channel::<Command>(64);
    let forwarder = std::thread::Builder::new()
        .name("streams-client-commands".into())
        .spawn(move || {
            for command in commands {
                let last = matches!(command, Command::Shutdown);
                if command_tx.blocking_send(command).is_err() || last {
                    break;
                }
            }
        });
    if forwarder.is_err() {
        shared
            .events
            .push(ClientEvent::Connection(ConnectionState::Disconnected {
                reason: "cannot start the command thread".into(),
                error: None,
            }));
        return;
    }
    let timeout = config.request_timeout;
    runtime.block_on(async {
        let supervisor = tokio::spawn(supervise(
            config.transport,
            Arc::clone(&shared),
            request_rx,
            config.backoff,
            timeout,
        ));
        while let Some(command) = command_rx.recv().await {
            let (id, op, reply) = match command {
                Command::Run { id, op, reply } => (id, op, reply),
                Command::Tap(tap) => {
                    Shared::lock(&shared.taps).push(tap);
                    continue;
                }
                Command::Shutdown => break,
            };
            let s = Arc::clone(&shared);
            tokio::spawn(async move {
                let result = tokio::time::timeout(timeout, execute(&s, *op))
                    .await
                    .unwrap_or(Err(ClientError::Timeout));
                match reply {
                    Some(reply) => reply(result),
                    None => s.events.push(ClientEvent::Reply { id, result }),
                }
            });
        }
        // A link that is up closes with a WebSocket close (the bridge ends the connection at
        // once instead of keeping it for a resume); one that is not is simply dropped.
        shared.stopping.notify_one();
        let closing = tokio::time::timeout(Duration::from_millis(500), supervisor).await;
        if closing.is_err() {
            tracing::debug!("the link did not close in time");
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
}
