//! [`SfuHandle`]: how the bridge's async signaling talks to the SFU thread. Each call is a
//! command in a bounded queue; the thread is woken at once to take it (no polling), and the reply
//! comes back on a oneshot channel.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use streams_proto::wire::{ErrorCode, StreamInfo, TrackAnnounce, TrackSubscription, WireError};
use streams_proto::{RoomId, StreamId, UserId};
use streams_rtc::socket::{MediaSocket, SocketWaker};
use tokio::sync::oneshot;

use super::core::{Negotiated, SfuCore};
use super::driver;
use crate::hub::ConnId;

/// Receive buffer of the SFU's socket, which every session shares: room for bursts of video
/// packets (keyframes) while the thread is busy forwarding.
const RECEIVE_BUFFER: usize = 8 << 20;

pub(super) type Reply<T> = oneshot::Sender<T>;

/// What the signaling side asks of the SFU thread.
pub(super) enum Command {
    Negotiate {
        conn: ConnId,
        room: RoomId,
        user: UserId,
        offer: String,
        publish: Vec<TrackAnnounce>,
        subscribe: Vec<TrackSubscription>,
        reply: Reply<Result<Negotiated, WireError>>,
    },
    SetSubscriptions {
        conn: ConnId,
        room: RoomId,
        subscribe: Vec<TrackSubscription>,
        reply: Reply<Result<(), WireError>>,
    },
    Close {
        conn: ConnId,
        room: Option<RoomId>,
        reply: Reply<Vec<(RoomId, StreamId)>>,
    },
    CloseUser {
        room: RoomId,
        user: UserId,
        reply: Reply<Vec<(RoomId, StreamId)>>,
    },
    CloseRoom {
        room: RoomId,
        reply: Reply<Vec<(RoomId, StreamId)>>,
    },
    List {
        room: RoomId,
        reply: Reply<Vec<StreamInfo>>,
    },
    Count {
        reply: Reply<usize>,
    },
    StartRecording {
        room: RoomId,
        root: PathBuf,
        id: String,
        reply: Reply<Result<(), WireError>>,
    },
    StopRecording {
        room: RoomId,
        reply: Reply<Option<String>>,
    },
}

/// Talks to the SFU thread. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct SfuHandle {
    // Dropped before `waker`: the last handle's wake-up finds the queue disconnected.
    commands: Sender<Command>,
    waker: Arc<WakeOnDrop>,
    addr: SocketAddr,
    keyframe_requests: Arc<AtomicU64>,
}

/// Wakes the SFU thread; the last one dropped wakes it a final time, so it sees it is alone.
struct WakeOnDrop(SocketWaker);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.wake();
    }
}

fn gone() -> WireError {
    WireError::new(ErrorCode::Internal, "the media engine stopped")
}

impl SfuHandle {
    /// Binds the UDP socket and starts the SFU thread.
    pub fn start(bind: SocketAddr) -> std::io::Result<Self> {
        let waker = SocketWaker::new()?;
        let socket = MediaSocket::bind_with(bind, &waker)?;
        if let Err(e) = socket.set_receive_buffer(RECEIVE_BUFFER) {
            tracing::debug!("could not enlarge the SFU's UDP receive buffer: {e}");
        }
        let addr = socket.local_addr()?;
        let (commands, receiver) = crossbeam_channel::bounded(256);
        let keyframe_requests = Arc::new(AtomicU64::new(0));
        let core = SfuCore::new(std::time::Instant::now(), addr);
        let counter = Arc::clone(&keyframe_requests);
        std::thread::Builder::new()
            .name("streams-sfu".into())
            .spawn(move || driver::run(core, socket, receiver, &counter))?;
        tracing::info!(%addr, "SFU listening (UDP)");
        Ok(SfuHandle {
            commands,
            waker: Arc::new(WakeOnDrop(waker)),
            addr,
            keyframe_requests,
        })
    }

    /// Starts recording `room` into `root` as recording `id`.
    pub async fn start_recording(
        &self,
        room: RoomId,
        root: PathBuf,
        id: String,
    ) -> Result<(), WireError> {
        self.ask(|reply| Command::StartRecording {
            room,
            root,
            id,
            reply,
        })
        .await?
    }

    /// Stops recording `room`; the id of the recording that stopped, if one ran.
    pub async fn stop_recording(&self, room: RoomId) -> Result<Option<String>, WireError> {
        self.ask_reliably(|reply| Command::StopRecording { room, reply })
            .await
    }

    /// Keyframe requests passed on to publishers so far.
    pub fn keyframe_requests_forwarded(&self) -> u64 {
        self.keyframe_requests.load(Ordering::Relaxed)
    }

    /// The UDP address media flows to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, WireError> {
        let (tx, rx) = oneshot::channel();
        self.commands.try_send(make(tx)).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => WireError::new(
                ErrorCode::Internal,
                "the media engine is busy; nothing was changed, try again",
            ),
            crossbeam_channel::TrySendError::Disconnected(_) => gone(),
        })?;
        self.waker.0.wake();
        rx.await.map_err(|_| gone())
    }

    /// Like `ask`, but waits for room in the queue: closing sessions must not be skipped because
    /// the SFU is busy.
    async fn ask_reliably<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command + Send + 'static,
    ) -> Result<T, WireError> {
        let (tx, rx) = oneshot::channel();
        let commands = self.commands.clone();
        let waker = Arc::clone(&self.waker);
        tokio::task::spawn_blocking(move || {
            let sent = commands
                .send_timeout(make(tx), std::time::Duration::from_secs(5))
                .map_err(|_| gone());
            waker.0.wake();
            sent
        })
        .await
        .map_err(|_| gone())??;
        rx.await.map_err(|_| gone())
    }

    /// Applies a client's offer for its media session in `room`; returns the answer and its stream.
    pub async fn negotiate(
        &self,
        conn: ConnId,
        room: RoomId,
        user: UserId,
        offer: String,
        publish: Vec<TrackAnnounce>,
        subscribe: Vec<TrackSubscription>,
    ) -> Result<Negotiated, WireError> {
        self.ask(|reply| Command::Negotiate {
            conn,
            room,
            user,
            offer,
            publish,
            subscribe,
            reply,
        })
        .await?
    }

    /// Replaces which tracks a connection's media session in `room` receives.
    pub async fn set_subscriptions(
        &self,
        conn: ConnId,
        room: RoomId,
        subscribe: Vec<TrackSubscription>,
    ) -> Result<(), WireError> {
        self.ask(|reply| Command::SetSubscriptions {
            conn,
            room,
            subscribe,
            reply,
        })
        .await?
    }

    /// Ends a connection's media sessions (in one room, or all); returns the streams that were
    /// published.
    pub async fn close(&self, conn: ConnId, room: Option<RoomId>) -> Vec<(RoomId, StreamId)> {
        self.ask_reliably(move |reply| Command::Close { conn, room, reply })
            .await
            .unwrap_or_default()
    }

    /// Ends every media session of `user` in `room` (the user was removed from it).
    pub async fn close_user(&self, room: RoomId, user: UserId) -> Vec<(RoomId, StreamId)> {
        self.ask_reliably(move |reply| Command::CloseUser { room, user, reply })
            .await
            .unwrap_or_default()
    }

    /// Ends every media session in `room` (it was deleted).
    pub async fn close_room(&self, room: RoomId) -> Vec<(RoomId, StreamId)> {
        self.ask_reliably(move |reply| Command::CloseRoom { room, reply })
            .await
            .unwrap_or_default()
    }

    /// The streams published in a room.
    pub async fn streams(&self, room: RoomId) -> Result<Vec<StreamInfo>, WireError> {
        self.ask(|reply| Command::List { room, reply }).await
    }

    /// How many media sessions exist (for tests and stats).
    pub async fn session_count(&self) -> usize {
        self.ask(|reply| Command::Count { reply })
            .await
            .unwrap_or(0)
    }
}
