//! The SFU: one UDP socket shared by every media session (str0m's `Rtc::accepts` picks the session of
//! each datagram), driven on a thread of its own. It forwards SFrame-encrypted frames from publishers to
//! subscribers without decoding them, and never negotiates the audio-level header extension (it would
//! tell the bridge who is speaking). Audio is Opus; video is H.264 carrying one opaque NAL unit of
//! ciphertext per frame (see the client's `video::carriage`), which str0m packetizes, buffers for
//! NACK and resends per leg. A subscriber's keyframe request (PLI/FIR) is passed on to the publisher
//! of that track, at most once per [`KEYFRAME_REQUEST_GAP`] per track.
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, MediaData, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use streams_proto::wire::{
    ErrorCode, StreamInfo, TrackAnnounce, TrackInfo, TrackSubscription, WireError,
};
use streams_proto::{RoomId, UserId};
use tokio::sync::oneshot;

use crate::hub::ConnId;
use crate::recorder::Recorder;
use streams_proto::recording::FrameRecord;

/// Most tracks one media session may receive.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Keyframe requests for one published track closer together than this are merged.
pub const KEYFRAME_REQUEST_GAP: Duration = Duration::from_millis(200);

/// The longest the SFU thread sleeps before looking at new commands.
const COMMAND_POLL: Duration = Duration::from_millis(5);

type Reply<T> = oneshot::Sender<T>;

/// The outcome of a negotiation.
pub struct Negotiated {
    /// The SDP answer.
    pub answer: String,
    /// The session's stream as published now.
    pub stream: StreamInfo,
    /// Whether the session had published tracks before this negotiation.
    pub was_published: bool,
}

enum Command {
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
        reply: Reply<Vec<(RoomId, u64)>>,
    },
    CloseUser {
        room: RoomId,
        user: UserId,
        reply: Reply<Vec<(RoomId, u64)>>,
    },
    CloseRoom {
        room: RoomId,
        reply: Reply<Vec<(RoomId, u64)>>,
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
    commands: Sender<Command>,
    addr: SocketAddr,
    keyframe_requests: Arc<AtomicU64>,
}

fn gone() -> WireError {
    WireError::new(ErrorCode::Internal, "the media engine stopped")
}

impl SfuHandle {
    /// Binds the UDP socket and starts the SFU thread.
    pub fn start(bind: SocketAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind)?;
        // Room for bursts of video packets (keyframes) while the thread is busy forwarding.
        if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20) {
            tracing::debug!("could not enlarge the SFU's UDP receive buffer: {e}");
        }
        let addr = socket.local_addr()?;
        let (commands, receiver) = crossbeam_channel::bounded(256);
        let keyframe_requests = Arc::new(AtomicU64::new(0));
        let mut sfu = Sfu::new(socket, addr, Arc::clone(&keyframe_requests));
        std::thread::Builder::new()
            .name("streams-sfu".into())
            .spawn(move || sfu.run(receiver))?;
        tracing::info!(%addr, "SFU listening (UDP)");
        Ok(SfuHandle {
            commands,
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
        self.commands.try_send(make(tx)).map_err(|_| gone())?;
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
        tokio::task::spawn_blocking(move || {
            commands
                .send_timeout(make(tx), std::time::Duration::from_secs(5))
                .map_err(|_| gone())
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
    pub async fn close(&self, conn: ConnId, room: Option<RoomId>) -> Vec<(RoomId, u64)> {
        self.ask_reliably(move |reply| Command::Close { conn, room, reply })
            .await
            .unwrap_or_default()
    }

    /// Ends every media session of `user` in `room` (the user was removed from it).
    pub async fn close_user(&self, room: RoomId, user: UserId) -> Vec<(RoomId, u64)> {
        self.ask_reliably(move |reply| Command::CloseUser { room, user, reply })
            .await
            .unwrap_or_default()
    }

    /// Ends every media session in `room` (it was deleted).
    pub async fn close_room(&self, room: RoomId) -> Vec<(RoomId, u64)> {
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

struct Session {
    id: u64,
    conn: ConnId,
    room: RoomId,
    user: UserId,
    rtc: Rtc,
    timeout: Instant,
    published: Vec<TrackAnnounce>,
    /// Local (sending) mid → the remote track it carries.
    subscribed: HashMap<String, String>,
    /// Written to since its last timeout (queued in `Sfu::dirty`).
    dirty: bool,
}

impl Session {
    fn stream(&self) -> StreamInfo {
        StreamInfo {
            stream_id: self.id,
            user_id: self.user.clone(),
            tracks: self
                .published
                .iter()
                .map(|t| TrackInfo {
                    track_id: track_id(self.id, &t.mid),
                    kind: t.kind,
                    key_id: t.key_id,
                    frame_ms: t.frame_ms,
                })
                .collect(),
        }
    }
}

/// The type of the first NAL unit of an Annex-B frame (the carriage's clear keyframe hint).
fn nal_type(frame: &[u8]) -> Option<u8> {
    let zeros = frame.iter().take_while(|b| **b == 0).count();
    (zeros >= 2 && frame.get(zeros) == Some(&1))
        .then(|| frame.get(zeros + 1).map(|b| b & 0x1F))
        .flatten()
}

fn track_id(stream: u64, mid: &str) -> String {
    format!("{stream}:{mid}")
}

struct Sfu {
    socket: UdpSocket,
    addr: SocketAddr,
    next_id: u64,
    sessions: Vec<Session>,
    keyframe_requests: Arc<AtomicU64>,
    /// When a keyframe was last requested of each published track.
    last_keyframe_request: HashMap<String, Instant>,
    /// Rooms being recorded.
    recordings: HashMap<RoomId, Recorder>,
    /// Sessions written to since their last timeout: each is advanced and drained once per batch
    /// of received datagrams, not once per forwarded frame.
    dirty: Vec<usize>,
    /// Which session each remote address last belonged to (asking every session whether it accepts
    /// a datagram costs a pass over all of them).
    by_source: HashMap<SocketAddr, u64>,
}

/// Datagrams read in one go before the sessions written to are flushed.
const RECEIVE_BATCH: usize = 64;

impl Sfu {
    fn new(socket: UdpSocket, addr: SocketAddr, keyframe_requests: Arc<AtomicU64>) -> Self {
        Sfu {
            socket,
            addr,
            next_id: 0,
            sessions: Vec::new(),
            keyframe_requests,
            last_keyframe_request: HashMap::new(),
            recordings: HashMap::new(),
            dirty: Vec::new(),
            by_source: HashMap::new(),
        }
    }

    /// Marks session `index` as written to.
    fn touch(&mut self, index: usize) {
        let session = &mut self.sessions[index];
        if !session.dirty {
            session.dirty = true;
            self.dirty.push(index);
        }
    }

    /// Advances and drains every session written to, so what was forwarded leaves now.
    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(index) = self.dirty.pop() {
            // An index made stale by a session removed meanwhile costs one extra timeout at most.
            if index >= self.sessions.len() {
                continue;
            }
            self.sessions[index].dirty = false;
            let _ = self.sessions[index].rtc.handle_input(Input::Timeout(now));
            self.drain(index);
        }
    }

    fn run(&mut self, commands: Receiver<Command>) {
        // The DTLS certificate and configuration every session shares, made before the first.
        streams_rtc::dtls::prepare();
        let mut buf = vec![0u8; 2000];
        loop {
            loop {
                match commands.try_recv() {
                    Ok(command) => self.handle(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            for i in 0..self.sessions.len() {
                if self.sessions[i].timeout <= now {
                    let _ = self.sessions[i].rtc.handle_input(Input::Timeout(now));
                    self.drain(i);
                }
            }
            self.flush();
            let before = self.sessions.len();
            self.sessions.retain(|s| {
                let alive = s.rtc.is_alive();
                if !alive {
                    tracing::info!(session = s.id, "media session ended");
                }
                alive
            });
            if self.sessions.len() != before {
                self.forget_sources();
            }
            let next = self
                .sessions
                .iter()
                .map(|s| s.timeout)
                .min()
                .unwrap_or(now + COMMAND_POLL);
            let wait = next
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), COMMAND_POLL);
            let _ = self.socket.set_read_timeout(Some(wait));
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    self.receive(source, &buf[..n]);
                    // Whatever else has arrived, then one flush for all of it.
                    if self.socket.set_nonblocking(true).is_ok() {
                        for _ in 1..RECEIVE_BATCH {
                            match self.socket.recv_from(&mut buf) {
                                Ok((n, source)) => self.receive(source, &buf[..n]),
                                Err(_) => break,
                            }
                        }
                        let _ = self.socket.set_nonblocking(false);
                    }
                    self.flush();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => tracing::debug!("SFU socket: {e}"),
            }
        }
    }

    /// Drops remembered addresses of sessions that are gone.
    fn forget_sources(&mut self) {
        let alive: std::collections::HashSet<u64> = self.sessions.iter().map(|s| s.id).collect();
        self.by_source.retain(|_, id| alive.contains(id));
    }

    fn receive(&mut self, source: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.addr,
                contents,
            },
        );
        let known = self
            .by_source
            .get(&source)
            .and_then(|id| self.sessions.iter().position(|s| s.id == *id))
            .filter(|&i| self.sessions[i].rtc.accepts(&input));
        let found = known.or_else(|| {
            let i = self.sessions.iter().position(|s| s.rtc.accepts(&input))?;
            self.by_source.insert(source, self.sessions[i].id);
            Some(i)
        });
        if let Some(i) = found {
            if let Err(e) = self.sessions[i].rtc.handle_input(input) {
                tracing::debug!(session = self.sessions[i].id, "bad input: {e}");
            }
            self.drain(i);
        }
    }

    /// Polls a session until it has nothing more to say; forwards the media it received.
    fn drain(&mut self, index: usize) {
        let mut media = Vec::new();
        let mut keyframe_requests = Vec::new();
        let session = &mut self.sessions[index];
        loop {
            match session.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    session.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::MediaData(data))) => media.push(data),
                Ok(Output::Event(Event::KeyframeRequest(request))) => {
                    keyframe_requests.push((request.mid, request.kind));
                }
                Ok(Output::Event(Event::IceConnectionStateChange(state))) => {
                    tracing::debug!(session = session.id, ?state, "ICE state");
                    if state == str0m::IceConnectionState::Disconnected {
                        // The peer is gone: end the session (it is removed on the next pass).
                        session.rtc.disconnect();
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    tracing::warn!(session = session.id, "media session failed: {e}");
                    session.rtc.disconnect();
                    session.timeout = Instant::now();
                    break;
                }
            }
        }
        let from = session.id;
        for data in media {
            self.forward(from, &data);
        }
        for (mid, kind) in keyframe_requests {
            self.request_keyframe(index, mid, kind);
        }
    }

    /// Passes a subscriber's keyframe request on to the publisher of the track it receives on `mid`.
    fn request_keyframe(&mut self, subscriber: usize, mid: Mid, kind: KeyframeRequestKind) {
        let Some(track) = self
            .sessions
            .get(subscriber)
            .and_then(|s| s.subscribed.get(&mid.to_string()))
            .cloned()
        else {
            return;
        };
        let now = Instant::now();
        if self
            .last_keyframe_request
            .get(&track)
            .is_some_and(|last| now.duration_since(*last) < KEYFRAME_REQUEST_GAP)
        {
            return;
        }
        let Some((publisher, publisher_mid)) =
            self.sessions.iter().enumerate().find_map(|(i, s)| {
                s.published
                    .iter()
                    .find(|t| track_id(s.id, &t.mid) == track)
                    .map(|t| (i, Mid::from(t.mid.as_str())))
            })
        else {
            return;
        };
        let Some(mut writer) = self.sessions[publisher].rtc.writer(publisher_mid) else {
            return;
        };
        match writer.request_keyframe(None, kind) {
            Ok(()) => {
                self.last_keyframe_request.insert(track.clone(), now);
                self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%track, ?kind, "keyframe request passed on to the publisher");
                self.drain(publisher);
            }
            Err(e) => tracing::debug!(%track, "keyframe request not possible: {e}"),
        }
    }

    fn forward(&mut self, from: u64, data: &MediaData) {
        let mid = data.mid.to_string();
        // Only what the publisher announces is forwarded (an unpublished m-line may still send).
        let published = self
            .sessions
            .iter()
            .any(|s| s.id == from && s.published.iter().any(|t| t.mid == mid));
        if !published {
            return;
        }
        let track = track_id(from, &mid);
        self.record(from, &mid, &track, data);
        let targets: Vec<(usize, Mid)> = self
            .sessions
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.subscribed
                    .iter()
                    .filter(|(_, t)| **t == track)
                    .map(move |(mid, _)| (i, Mid::from(mid.as_str())))
            })
            .collect();
        for (i, mid) in targets {
            let Some(writer) = self.sessions[i].rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer
                .payload_params()
                .find(|p| p.spec().codec == data.params.spec().codec)
                .map(|p| p.pt())
            else {
                continue;
            };
            if let Err(e) = writer.write(pt, data.network_time, data.time, data.data.clone()) {
                tracing::debug!("forwarding failed: {e}");
            }
            // Sent at the next flush (at the latest once the datagrams read in this batch are
            // handled), not at the session's next timeout.
            self.touch(i);
        }
    }

    /// Appends a forwarded frame to its room's recording, if the room is being recorded.
    fn record(&mut self, from: u64, mid: &str, track: &str, data: &MediaData) {
        let Some(session) = self.sessions.iter().find(|s| s.id == from) else {
            return;
        };
        let Some(recorder) = self.recordings.get_mut(&session.room) else {
            return;
        };
        let Some(kind) = session
            .published
            .iter()
            .find(|t| t.mid == mid)
            .map(|t| t.kind)
        else {
            return;
        };
        let codec = match data.params.spec().codec {
            str0m::format::Codec::Opus => "opus",
            str0m::format::Codec::H264 => "h264",
            _ => "unknown",
        };
        let record = FrameRecord {
            arrival_us: crate::recorder::now_us(),
            rtp_time: data.time.numer(),
            keyframe: kind != streams_proto::wire::TrackKind::Audio
                && nal_type(&data.data) == Some(5),
            payload: data.data.to_vec(),
        };
        recorder.frame(track, &session.user, kind, codec, record);
    }

    fn handle(&mut self, command: Command) {
        // Session indices may shift below (closing, a failed negotiation): nothing may stay queued.
        self.flush();
        match command {
            Command::StartRecording {
                room,
                root,
                id,
                reply,
            } => {
                let result = match self.recordings.entry(room) {
                    std::collections::hash_map::Entry::Occupied(_) => Err(WireError::new(
                        ErrorCode::Conflict,
                        "the room is being recorded already",
                    )),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        Recorder::start(&root, slot.key(), &id, crate::recorder::now_us()).map(
                            |recorder| {
                                slot.insert(recorder);
                            },
                        )
                    }
                };
                let _ = reply.send(result);
            }
            Command::StopRecording { room, reply } => {
                let stopped = self.recordings.remove(&room).map(|r| {
                    let id = r.id().to_string();
                    r.stop(crate::recorder::now_us());
                    id
                });
                let _ = reply.send(stopped);
            }
            Command::Negotiate {
                conn,
                room,
                user,
                offer,
                publish,
                subscribe,
                reply,
            } => {
                let _ = reply.send(self.negotiate(conn, room, user, &offer, publish, subscribe));
            }
            Command::SetSubscriptions {
                conn,
                room,
                subscribe,
                reply,
            } => {
                let result = self.check_tracks(&room, &subscribe).and_then(|()| {
                    let session = self
                        .sessions
                        .iter_mut()
                        .find(|s| s.conn == conn && s.room == room)
                        .ok_or_else(|| {
                            WireError::new(ErrorCode::Invalid, "no media session in this room yet")
                        })?;
                    session.subscribed =
                        subscribe.into_iter().map(|s| (s.mid, s.track_id)).collect();
                    Ok(())
                });
                let _ = reply.send(result);
            }
            Command::Close { conn, room, reply } => {
                let closed =
                    self.close(|s| s.conn == conn && room.as_ref().is_none_or(|r| *r == s.room));
                let _ = reply.send(closed);
            }
            Command::CloseRoom { room, reply } => {
                // A deleted room's recording ends with it.
                if let Some(recorder) = self.recordings.remove(&room) {
                    recorder.stop(crate::recorder::now_us());
                }
                let closed = self.close(|s| s.room == room);
                let _ = reply.send(closed);
            }
            Command::CloseUser { room, user, reply } => {
                let closed = self.close(|s| s.room == room && s.user == user);
                let _ = reply.send(closed);
            }
            Command::List { room, reply } => {
                let streams = self
                    .sessions
                    .iter()
                    .filter(|s| s.room == room && !s.published.is_empty())
                    .map(Session::stream)
                    .collect();
                let _ = reply.send(streams);
            }
            Command::Count { reply } => {
                let _ = reply.send(self.sessions.len());
            }
        }
    }

    /// Ends the sessions matching `which`; returns the streams they published.
    fn close(&mut self, which: impl Fn(&Session) -> bool) -> Vec<(RoomId, u64)> {
        let mut closed = Vec::new();
        self.sessions.retain_mut(|s| {
            let matches = which(s);
            if matches {
                if !s.published.is_empty() {
                    closed.push((s.room.clone(), s.id));
                }
                s.rtc.disconnect();
            }
            !matches
        });
        // Subscriptions to closed streams end with them.
        self.last_keyframe_request.retain(|track, _| {
            !closed
                .iter()
                .any(|(_, id)| track.starts_with(&format!("{id}:")))
        });
        for s in &mut self.sessions {
            s.subscribed.retain(|_, track| {
                !closed
                    .iter()
                    .any(|(_, id)| track.starts_with(&format!("{id}:")))
            });
        }
        closed
    }

    /// Every subscribed track must be published in the room.
    fn check_tracks(
        &self,
        room: &RoomId,
        subscribe: &[TrackSubscription],
    ) -> Result<(), WireError> {
        for sub in subscribe {
            let known = self.sessions.iter().any(|s| {
                s.room == *room
                    && s.published
                        .iter()
                        .any(|t| track_id(s.id, &t.mid) == sub.track_id)
            });
            if !known {
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!("no track {} in this room", sub.track_id),
                ));
            }
        }
        Ok(())
    }

    fn negotiate(
        &mut self,
        conn: ConnId,
        room: RoomId,
        user: UserId,
        offer: &str,
        publish: Vec<TrackAnnounce>,
        subscribe: Vec<TrackSubscription>,
    ) -> Result<Negotiated, WireError> {
        let invalid = |m: String| WireError::new(ErrorCode::Invalid, m);
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|e| invalid(format!("unreadable SDP offer: {e}")))?;
        self.check_tracks(&room, &subscribe)?;
        let existing = self
            .sessions
            .iter()
            .position(|s| s.conn == conn && s.room == room);
        let index = match existing {
            Some(i) => i,
            None => {
                self.next_id += 1;
                // The profile the clients use, with the process's DTLS certificate and
                // configuration (not one made per session).
                let mut rtc = streams_rtc::profile()
                    .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?
                    .set_ice_lite(true)
                    .build(Instant::now());
                let candidate = Candidate::host(self.addr, "udp")
                    .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
                rtc.add_local_candidate(candidate);
                self.sessions.push(Session {
                    id: self.next_id,
                    conn,
                    room: room.clone(),
                    user,
                    rtc,
                    timeout: Instant::now(),
                    published: Vec::new(),
                    subscribed: HashMap::new(),
                    dirty: false,
                });
                self.sessions.len() - 1
            }
        };
        let answer = match self.sessions[index].rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => answer,
            Err(e) => {
                if existing.is_none() {
                    self.sessions.remove(index);
                }
                return Err(invalid(format!("offer rejected: {e}")));
            }
        };
        let session = &mut self.sessions[index];
        let was_published = !session.published.is_empty();
        session.published = publish;
        session.subscribed = subscribe.into_iter().map(|s| (s.mid, s.track_id)).collect();
        let stream = session.stream();
        self.drain(index);
        Ok(Negotiated {
            answer: answer.to_sdp_string(),
            stream,
            was_published,
        })
    }
}
