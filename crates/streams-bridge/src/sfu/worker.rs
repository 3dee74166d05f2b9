//! [`Worker`]: one forwarding worker of the SFU as the signaling side sees it — a thread running
//! its own [`SfuCore`] on its own UDP socket (and TCP listener, for ICE-TCP), the bounded queue of [`Command`]s it takes (it is
//! woken at once for each, no polling), and the figures it publishes ([`WorkerStats`]).
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_channel::Sender;
use streams_proto::wire::{ErrorCode, StreamInfo, TrackAnnounce, TrackSubscription, WireError};
use streams_proto::{RoomId, StreamId, UserId};
use streams_rtc::socket::{MediaSocket, SocketWaker, TcpMedia};
use tokio::sync::oneshot;

use super::addresses::{AddressError, MediaAddresses};
use super::core::{Negotiated, SfuCore};
use super::driver;
use crate::hub::ConnId;

/// Receive buffer of a worker's socket, which all its sessions share: room for bursts of video
/// packets (keyframes) while the thread is busy forwarding.
const RECEIVE_BUFFER: usize = 8 << 20;

/// TCP media streams one worker holds open at a time (players whose UDP is blocked); more are
/// refused.
pub const MAX_TCP_STREAMS: usize = 512;

/// Commands one worker's queue holds before callers are told it is busy.
const QUEUE: usize = 256;

pub(super) type Reply<T> = oneshot::Sender<T>;

/// Where workers send the streams whose media session ended on its own.
pub(super) type LostSender = tokio::sync::mpsc::UnboundedSender<(RoomId, StreamId)>;

/// What the signaling side asks of a worker.
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
    Peers {
        reply: Reply<Vec<SocketAddr>>,
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

/// What a worker's thread publishes after each turn, read without asking it.
#[derive(Default)]
pub(super) struct WorkerStats {
    /// Keyframe requests passed on to publishers so far.
    pub keyframe_requests: AtomicU64,
    /// Media sessions it held at the end of its last turn (for placing rooms; `Count` asks
    /// for the exact figure).
    pub sessions: AtomicUsize,
}

/// One forwarding worker. Its thread ends when the last clone of its queue is dropped.
pub(super) struct Worker {
    // Dropped before `waker`: the last wake-up finds the queue disconnected.
    commands: Sender<Command>,
    waker: Arc<WakeOnDrop>,
    addr: SocketAddr,
    announced: Vec<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tcp_announced: Vec<SocketAddr>,
    stats: Arc<WorkerStats>,
}

/// The SFU's workers could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuStartError {
    /// A worker's UDP socket (or its thread) could not be set up.
    #[error("cannot listen on {addr} (UDP): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A worker's TCP listener (ICE-TCP) could not be set up.
    #[error("cannot listen on {addr} (TCP, --media-tcp-listen): {source}")]
    BindTcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// What to announce could not be worked out.
    #[error(transparent)]
    Addresses(#[from] AddressError),
}

/// Wakes a worker's thread; dropped last, it wakes it a final time so it sees it is alone.
struct WakeOnDrop(SocketWaker);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.wake();
    }
}

pub(super) fn gone() -> WireError {
    WireError::new(ErrorCode::Internal, "the media engine stopped")
}

impl Worker {
    /// Binds worker `index` (of `count`)'s UDP socket at `bind` (and a TCP listener at
    /// `tcp_bind`, if given) and starts its thread (`streams-sfu-INDEX`), which sends the streams
    /// whose session ended on its own to `lost`. Its sessions announce `public` (or what
    /// [`MediaAddresses::new`] picks without them, from `interfaces`) at each bound port. Its
    /// stream ids are `index + 1`, then every `count`th: unique across the workers.
    pub fn start(
        bind: SocketAddr,
        tcp_bind: Option<SocketAddr>,
        public: &[IpAddr],
        interfaces: &[IpAddr],
        (index, count): (usize, usize),
        lost: LostSender,
    ) -> Result<Self, SfuStartError> {
        let io = |source| SfuStartError::Bind { addr: bind, source };
        let waker = SocketWaker::new().map_err(io)?;
        let socket = MediaSocket::bind_with(bind, &waker, RECEIVE_BUFFER).map_err(io)?;
        let addr = socket.local_addr().map_err(io)?;
        let addresses = MediaAddresses::new(addr, public, interfaces)?;
        let announced = addresses.announced().to_vec();
        let mut listening = format!("{addr} (UDP)");
        let mut announcing = addresses.describe();
        let mut core = SfuCore::new(std::time::Instant::now(), addresses)
            .numbering_streams(index as u64 + 1, count as u64);
        let (mut tcp, mut tcp_addr, mut tcp_announced) = (None, None, Vec::new());
        if let Some(tcp_bind) = tcp_bind {
            let io = |source| SfuStartError::BindTcp {
                addr: tcp_bind,
                source,
            };
            let media = TcpMedia::listen(tcp_bind, &waker, MAX_TCP_STREAMS).map_err(io)?;
            let bound = media.local_addr().ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    "no local address",
                ))
            })?;
            let tcp_addresses = MediaAddresses::new(bound, public, interfaces)?;
            listening.push_str(&format!(", {bound} (TCP)"));
            announcing.push_str(&format!("; TCP {}", tcp_addresses.describe()));
            tcp_announced = tcp_addresses.announced().to_vec();
            core = core.serving_tcp(tcp_addresses);
            (tcp, tcp_addr) = (Some(media), Some(bound));
        }
        let (commands, receiver) = crossbeam_channel::bounded(QUEUE);
        let stats = Arc::new(WorkerStats::default());
        tracing::info!(
            worker = index,
            "media worker listening on {listening}, announcing {announcing}"
        );
        let published = Arc::clone(&stats);
        std::thread::Builder::new()
            .name(format!("streams-sfu-{index}"))
            .spawn(move || driver::run(core, socket, tcp, receiver, &published, &lost))
            .map_err(io)?;
        Ok(Worker {
            commands,
            waker: Arc::new(WakeOnDrop(waker)),
            addr,
            announced,
            tcp_addr,
            tcp_announced,
            stats,
        })
    }

    /// The UDP address its socket is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The addresses its sessions announce (where clients send media).
    pub fn announced(&self) -> &[SocketAddr] {
        &self.announced
    }

    /// The TCP address its listener is bound to, if it serves ICE-TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The ICE-TCP addresses its sessions announce (none without a TCP listener).
    pub fn tcp_announced(&self) -> &[SocketAddr] {
        &self.tcp_announced
    }

    /// What its thread published last.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// How many media sessions it held at the end of its last turn.
    pub fn sessions(&self) -> usize {
        self.stats.sessions.load(Ordering::Relaxed)
    }

    /// Queues a command and waits for its reply; a full queue is an error at once.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, WireError> {
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

    /// Like `ask`, but waits (up to 5 s) for room in the queue: closing sessions must not be
    /// skipped because the worker is busy.
    pub async fn ask_reliably<T: Send + 'static>(
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
}
