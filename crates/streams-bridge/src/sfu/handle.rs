//! [`SfuHandle`]: how the bridge's async signaling talks to the SFU's forwarding workers. Each
//! worker is a thread with its own socket and core (see `worker.rs`); a room lives on one
//! worker, chosen when its first media session or recording starts (the one holding the fewest
//! sessions) and kept for the bridge's life, so every leg of a room is forwarded by one thread
//! with no locks between them. (Forgetting a deleted room's place could race a negotiation that
//! checked the room just before it was deleted: its session would open on the old worker where
//! nothing finds it any more, or split a room re-created with the same id. An entry is a room
//! id and an index.)
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use streams_proto::wire::{ErrorCode, StreamInfo, TrackAnnounce, TrackSubscription, WireError};
use streams_proto::{RoomId, StreamId, UserId};

use super::core::Negotiated;
use super::worker::{Command, SfuStartError, Worker};
use crate::hub::ConnId;

/// The streams whose media session ended on its own (its peer stopped answering, or the
/// connection failed), in the order the workers found them: the room is to be told.
pub type LostStreams = tokio::sync::mpsc::UnboundedReceiver<(RoomId, StreamId)>;

/// Talks to the SFU's workers. They end when the last handle is dropped.
#[derive(Clone)]
pub struct SfuHandle {
    workers: Arc<[Worker]>,
    placement: Arc<Mutex<Placement>>,
}

/// Which worker each room lives on.
#[derive(Default)]
struct Placement {
    by_room: HashMap<RoomId, usize>,
    /// Rooms placed on each worker.
    rooms: Vec<usize>,
}

impl Placement {
    /// The worker of `room`, if it has one.
    fn worker_of(&self, room: &RoomId) -> Option<usize> {
        self.by_room.get(room).copied()
    }

    /// The worker of `room`, placing it on the worker with the fewest sessions (then rooms) if it
    /// has none yet.
    fn place(&mut self, room: &RoomId, workers: &[Worker]) -> usize {
        if let Some(index) = self.worker_of(room) {
            return index;
        }
        let index = (0..workers.len())
            .min_by_key(|&i| (workers[i].sessions(), self.rooms[i], i))
            .unwrap_or(0);
        self.by_room.insert(room.clone(), index);
        self.rooms[index] += 1;
        index
    }
}

/// The address of worker `index` when the workers bind at `bind`: port 0 lets each pick a free
/// port; otherwise worker `index` listens on `bind`'s port + `index`.
fn worker_bind(bind: SocketAddr, index: usize) -> std::io::Result<SocketAddr> {
    if bind.port() == 0 {
        return Ok(bind);
    }
    let port = u16::try_from(index)
        .ok()
        .and_then(|i| bind.port().checked_add(i))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("media workers' ports would pass 65535 ({index} more)"),
            )
        })?;
    Ok(SocketAddr::new(bind.ip(), port))
}

/// The IP addresses of this machine's interfaces that are up (what a wildcard bind announces
/// when no public address is given); none if they cannot be read.
fn interface_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!("cannot list the network interfaces: {e}");
            Vec::new()
        }
    }
}

impl SfuHandle {
    /// Starts `workers` forwarding workers (at least one), each on its own UDP socket: worker `i`
    /// at `bind`'s port + `i` (or a free port each when `bind`'s port is 0), and likewise a TCP
    /// listener for ICE-TCP at `tcp_bind` if given, announcing `public` (see
    /// [`super::addresses`]). Also returns where the streams whose sessions end on their own
    /// arrive.
    pub fn start(
        bind: SocketAddr,
        tcp_bind: Option<SocketAddr>,
        public: &[IpAddr],
        workers: usize,
    ) -> Result<(Self, LostStreams), SfuStartError> {
        let (lost, lost_streams) = tokio::sync::mpsc::unbounded_channel();
        let count = workers.max(1);
        let wildcard =
            bind.ip().is_unspecified() || tcp_bind.is_some_and(|t| t.ip().is_unspecified());
        let interfaces = if wildcard && public.is_empty() {
            interface_addresses()
        } else {
            Vec::new()
        };
        let workers: Arc<[Worker]> = (0..count)
            .map(|index| {
                let addr = worker_bind(bind, index)
                    .map_err(|source| SfuStartError::Bind { addr: bind, source })?;
                let tcp = tcp_bind
                    .map(|t| {
                        worker_bind(t, index)
                            .map_err(|source| SfuStartError::BindTcp { addr: t, source })
                    })
                    .transpose()?;
                Worker::start(addr, tcp, public, &interfaces, (index, count), lost.clone())
            })
            .collect::<Result<Vec<_>, _>>()?
            .into();
        let placement = Placement {
            by_room: HashMap::new(),
            rooms: vec![0; workers.len()],
        };
        let handle = SfuHandle {
            workers,
            placement: Arc::new(Mutex::new(placement)),
        };
        Ok((handle, lost_streams))
    }

    fn placement(&self) -> std::sync::MutexGuard<'_, Placement> {
        self.placement
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker `room` lives on, placing it now if it has none.
    fn place(&self, room: &RoomId) -> &Worker {
        let index = self.placement().place(room, &self.workers);
        &self.workers[index]
    }

    /// The worker `room` lives on, if it has one.
    fn worker_of(&self, room: &RoomId) -> Option<&Worker> {
        let index = self.placement().worker_of(room)?;
        self.workers.get(index)
    }

    /// Starts recording `room` into `root` as recording `id`.
    pub async fn start_recording(
        &self,
        room: RoomId,
        root: PathBuf,
        id: String,
    ) -> Result<(), WireError> {
        self.place(&room)
            .ask(|reply| Command::StartRecording {
                room,
                root,
                id,
                reply,
            })
            .await?
    }

    /// Stops recording `room`; the id of the recording that stopped, if one ran.
    pub async fn stop_recording(&self, room: RoomId) -> Result<Option<String>, WireError> {
        let Some(worker) = self.worker_of(&room) else {
            return Ok(None);
        };
        worker
            .ask_reliably(|reply| Command::StopRecording { room, reply })
            .await
    }

    /// Keyframe requests passed on to publishers so far, by every worker.
    pub fn keyframe_requests_forwarded(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.stats().keyframe_requests.load(Ordering::Relaxed))
            .sum()
    }

    /// The UDP address of the first worker (the only one, with one worker).
    pub fn addr(&self) -> SocketAddr {
        self.workers[0].addr()
    }

    /// The UDP address of every worker, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(Worker::addr).collect()
    }

    /// What the sessions of every worker announce, in worker order.
    pub fn announced(&self) -> Vec<Vec<SocketAddr>> {
        self.workers
            .iter()
            .map(|w| w.announced().to_vec())
            .collect()
    }

    /// The TCP address of every worker's ICE-TCP listener, in order (empty: TCP not served).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().filter_map(Worker::tcp_addr).collect()
    }

    /// What the sessions of every worker announce for ICE-TCP, in worker order.
    pub fn tcp_announced(&self) -> Vec<Vec<SocketAddr>> {
        self.workers
            .iter()
            .map(|w| w.tcp_announced().to_vec())
            .collect()
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
        self.place(&room)
            .ask(|reply| Command::Negotiate {
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
        let Some(worker) = self.worker_of(&room) else {
            return Err(WireError::new(
                ErrorCode::Invalid,
                "no media session in this room yet",
            ));
        };
        worker
            .ask(|reply| Command::SetSubscriptions {
                conn,
                room,
                subscribe,
                reply,
            })
            .await?
    }

    /// Ends a connection's media sessions (in one room, or in all, on every worker); returns the
    /// streams that were published.
    pub async fn close(&self, conn: ConnId, room: Option<RoomId>) -> Vec<(RoomId, StreamId)> {
        let workers: Vec<&Worker> = match &room {
            Some(room) => self.worker_of(room).into_iter().collect(),
            None => self.workers.iter().collect(),
        };
        let mut closed = Vec::new();
        for worker in workers {
            let room = room.clone();
            closed.extend(
                worker
                    .ask_reliably(move |reply| Command::Close { conn, room, reply })
                    .await
                    .unwrap_or_default(),
            );
        }
        closed
    }

    /// Ends every media session of `user` in `room` (the user was removed from it).
    pub async fn close_user(&self, room: RoomId, user: UserId) -> Vec<(RoomId, StreamId)> {
        let Some(worker) = self.worker_of(&room) else {
            return Vec::new();
        };
        worker
            .ask_reliably(move |reply| Command::CloseUser { room, user, reply })
            .await
            .unwrap_or_default()
    }

    /// Ends every media session in `room` (it was deleted).
    pub async fn close_room(&self, room: RoomId) -> Vec<(RoomId, StreamId)> {
        let Some(worker) = self.worker_of(&room) else {
            return Vec::new();
        };
        worker
            .ask_reliably(move |reply| Command::CloseRoom { room, reply })
            .await
            .unwrap_or_default()
    }

    /// The streams published in a room.
    pub async fn streams(&self, room: RoomId) -> Result<Vec<StreamInfo>, WireError> {
        let Some(worker) = self.worker_of(&room) else {
            return Ok(Vec::new());
        };
        worker.ask(|reply| Command::List { room, reply }).await
    }

    /// How many media sessions exist, on every worker (for tests and stats).
    pub async fn session_count(&self) -> usize {
        let mut count = 0;
        for worker in self.workers.iter() {
            count += worker
                .ask(|reply| Command::Count { reply })
                .await
                .unwrap_or(0);
        }
        count
    }

    /// The addresses media arrives from, on every worker (for tests and diagnostics).
    pub async fn peer_addresses(&self) -> Vec<SocketAddr> {
        let mut addrs = Vec::new();
        for worker in self.workers.iter() {
            addrs.extend(
                worker
                    .ask(|reply| Command::Peers { reply })
                    .await
                    .unwrap_or_default(),
            );
        }
        addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_consecutive_ports_or_each_a_free_one() {
        let fixed: SocketAddr = "127.0.0.1:7801".parse().unwrap();
        assert_eq!(worker_bind(fixed, 0).unwrap(), fixed);
        assert_eq!(worker_bind(fixed, 3).unwrap().port(), 7804);
        let free: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(worker_bind(free, 5).unwrap(), free);
        let high: SocketAddr = "127.0.0.1:65535".parse().unwrap();
        assert!(worker_bind(high, 1).is_err());
    }

    #[test]
    fn rooms_spread_over_the_workers_and_stay_where_they_were_placed() {
        let (sfu, _lost) = SfuHandle::start("127.0.0.1:0".parse().unwrap(), None, &[], 2).unwrap();
        let rooms: Vec<RoomId> = (0..4).map(|_| RoomId::random()).collect();
        let placed: Vec<usize> = rooms
            .iter()
            .map(|room| sfu.placement().place(room, &sfu.workers))
            .collect();
        // No sessions anywhere yet: the rooms alternate.
        assert_eq!(placed, vec![0, 1, 0, 1]);
        assert_eq!(sfu.placement().place(&rooms[1], &sfu.workers), 1);
        assert_eq!(sfu.placement().worker_of(&rooms[2]), Some(0));
        assert_eq!(sfu.placement().worker_of(&RoomId::random()), None);
        assert_ne!(sfu.addrs()[0], sfu.addrs()[1]);
    }
}
