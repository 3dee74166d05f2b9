//! [`RoomMedia`]: the driver of one room's [`RoomMediaCore`], on a thread of its own. It owns the
//! UDP socket (bound at the address that faces the bridge, and bound again when that changes:
//! see [`crate::media::route`]), the TCP stream to the bridge when ICE falls back to TCP (waited
//! on with the socket) or to a TURN server (see [`crate::media::relay`]), and a non-blocking
//! signaling handle: a request the core makes is started on the
//! client's runtime and its reply comes back as an input (waking the driver), so no request is ever
//! waited for while media flows. Starting, commanding and dropping a [`RoomMedia`] never block the
//! caller: dropping it asks the engine to stop, and it winds down on its own thread.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use streams_proto::{Identity, RoomId, TrackId};

use crate::api::{Reply, RoomEvent};
use crate::client::ClientHandle;
use crate::error::ClientError;
use crate::media::core::{CoreConfig, CoreOutput, RoomMediaCore, SignalId, VideoSlots, Waker};
use crate::media::events::{MediaCommand, MediaEvent, MediaOptions, StopReason};
use crate::media::route::{ROUTE_CHECK, Route};
use crate::media::rtc::MediaError;
use crate::video::receiver::VideoSlot;
use streams_rtc::socket::{
    Framing, MediaSocket, Outbox, ReceiveBatch, SocketWaker, TcpMedia, Transport,
};

/// Datagrams one read system call may fill.
const READ_SLOTS: usize = 16;
/// The most reads between two runs of the core's timers (a 720p keyframe is ~100 datagrams).
const READS_PER_TURN: usize = 8;
/// TCP streams one engine may have open (one per bridge TCP candidate it tries).
const TCP_STREAMS: usize = 4;
/// TCP streams to TURN servers (one at a time; the next server's while the last one's closes).
const TURN_STREAMS: usize = 2;

type SignalReply = (SignalId, Result<Reply, ClientError>);

/// A room's media could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The client could not take the engine's signaling (it stopped).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The media socket or connection could not be set up.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The engine's thread could not start.
    #[error("cannot start the media thread: {0}")]
    Thread(std::io::Error),
}

/// A room's media, running on its own thread. Dropping it stops it (without waiting).
pub struct RoomMedia {
    commands: Option<Sender<MediaCommand>>,
    events: Receiver<MediaEvent>,
    videos: VideoSlots,
    waker: SocketWaker,
}

impl RoomMedia {
    /// Starts the media of `room_id` for `identity`, using `client` for signaling.
    pub fn start(
        client: ClientHandle,
        identity: Identity,
        bridge_url: &str,
        room_id: RoomId,
    ) -> Result<Self, StartError> {
        Self::start_with(
            client,
            identity,
            bridge_url,
            room_id,
            MediaOptions::default(),
        )
    }

    /// Like [`RoomMedia::start`], with options. Returns at once: setting up the connection, fetching
    /// the room, negotiating and connecting happen on the engine's thread, reported by
    /// [`MediaEvent`]s (a failure there is [`MediaEvent::Stopped`]). The process's first join makes
    /// its DTLS certificate there unless [`streams_rtc::dtls::prepare`] did already.
    pub fn start_with(
        client: ClientHandle,
        identity: Identity,
        bridge_url: &str,
        room_id: RoomId,
        options: MediaOptions,
    ) -> Result<Self, StartError> {
        let (media, launch) = Self::prepare(client, identity, bridge_url, room_id, options)?;
        launch.launch()?;
        Ok(media)
    }

    /// [`RoomMedia::start_with`] in two steps: the engine is made now (its socket, channels and
    /// handle; commands sent to it wait) and starts when the [`MediaLaunch`] is launched. An owner
    /// with a time-critical moment (a game's frame) prepares in it and launches after it, so that
    /// the engine's first burst of work does not compete with it for a core.
    pub fn prepare(
        client: ClientHandle,
        identity: Identity,
        bridge_url: &str,
        room_id: RoomId,
        options: MediaOptions,
    ) -> Result<(Self, MediaLaunch), StartError> {
        let room_events = client.tap_room_events(256)?;
        // The socket itself is bound on the engine's thread (finding the route to the bridge
        // and binding are a tenth of a millisecond of system calls).
        let waker = SocketWaker::new().map_err(MediaError::from)?;
        let videos = VideoSlots::default();
        let (commands, command_rx) = crossbeam_channel::bounded(64);
        let (event_tx, events) = crossbeam_channel::bounded(1024);
        let launch = MediaLaunch {
            identity,
            room_id,
            options,
            videos: Arc::clone(&videos),
            bridge_url: bridge_url.to_owned(),
            waker: waker.clone(),
            client,
            commands: command_rx,
            room_events,
            events: event_tx,
        };
        let media = RoomMedia {
            commands: Some(commands),
            events,
            videos,
            waker,
        };
        Ok((media, launch))
    }

    /// Sends a command (non-blocking; `false` if the engine has stopped or is flooded).
    pub fn send(&self, command: MediaCommand) -> bool {
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|c| c.try_send(command).is_ok());
        if sent {
            self.waker.wake();
        }
        sent
    }

    /// The engine's events.
    pub fn events(&self) -> &Receiver<MediaEvent> {
        &self.events
    }

    /// The latest-picture slot of a remote video track being received.
    pub fn video(&self, track_id: TrackId) -> Option<VideoSlot> {
        self.videos.lock().ok()?.get(&track_id).cloned()
    }

    /// For tools: stops the engine and returns its last events (final statistics, then
    /// [`MediaEvent::Stopped`]), waiting at most `timeout` for them.
    pub fn stop_and_collect(mut self, timeout: Duration) -> Vec<MediaEvent> {
        self.stop();
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(event) => {
                    let stopped = matches!(event, MediaEvent::Stopped { .. });
                    last.push(event);
                    if stopped {
                        return last;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return last,
            }
        }
    }

    fn stop(&mut self) {
        // Closing the channel stops the engine even when its queue is full.
        if let Some(commands) = self.commands.take() {
            let _ = commands.try_send(MediaCommand::Stop);
        }
        self.waker.wake();
    }
}

impl Drop for RoomMedia {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A prepared engine's start ([`RoomMedia::prepare`]). Dropping it unlaunched ends the engine
/// before it began (its [`RoomMedia`] reports nothing more).
pub struct MediaLaunch {
    identity: Identity,
    room_id: RoomId,
    options: MediaOptions,
    videos: VideoSlots,
    bridge_url: String,
    waker: SocketWaker,
    client: ClientHandle,
    commands: Receiver<MediaCommand>,
    room_events: Receiver<RoomEvent>,
    events: Sender<MediaEvent>,
}

impl MediaLaunch {
    /// Starts the engine's thread. If it cannot start, the engine's [`RoomMedia`] also reports
    /// [`MediaEvent::Stopped`].
    pub fn launch(self) -> Result<(), StartError> {
        let report = self.events.clone();
        let started = std::thread::Builder::new()
            .name("streams-room-media".into())
            .spawn(move || self.run());
        started.map(|_| ()).map_err(|e| {
            let reason = StopReason::Failed(format!("cannot start the media thread: {e}"));
            let _ = report.try_send(MediaEvent::Stopped { reason });
            StartError::Thread(e)
        })
    }

    /// The engine's thread: the socket and the core are made here, then driven.
    fn run(self) {
        let MediaLaunch {
            identity,
            room_id,
            options,
            videos,
            bridge_url,
            waker,
            client,
            commands,
            room_events,
            events,
        } = self;
        let wake: Waker = {
            let waker = waker.clone();
            Arc::new(move || waker.wake())
        };
        let route = Route::towards(&bridge_url);
        let local_ip = route.source_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let bound = bind_socket(local_ip, &waker)
            .and_then(|socket| Ok((socket.local_addr()?, socket)))
            .map_err(MediaError::from);
        let setup = bound.and_then(|(local, socket)| {
            let config = CoreConfig {
                identity,
                room_id,
                local,
                options,
                wake,
                videos,
            };
            Ok((RoomMediaCore::new(Instant::now(), config)?, socket))
        });
        let (core, socket) = match setup {
            Ok(set_up) => set_up,
            Err(e) => {
                let reason = StopReason::Failed(format!("cannot set up the media: {e}"));
                let _ = events.send(MediaEvent::Stopped { reason });
                return;
            }
        };
        Driver {
            core,
            tcp: TcpMedia::connecting(&waker, TCP_STREAMS, Framing::Rfc4571),
            turn_tcp: TcpMedia::connecting(&waker, TURN_STREAMS, Framing::Raw),
            batch: ReceiveBatch::new(&socket, READ_SLOTS),
            socket,
            route,
            next_route_check: Instant::now() + ROUTE_CHECK,
            outbox: Outbox::default(),
            client,
            commands,
            room_events,
            replies: crossbeam_channel::unbounded(),
            events,
            waker,
        }
        .run()
    }
}

/// The media socket at `ip` (an ephemeral port), woken by `waker`.
fn bind_socket(ip: IpAddr, waker: &SocketWaker) -> std::io::Result<MediaSocket> {
    MediaSocket::bind_with(
        SocketAddr::new(ip, 0),
        waker,
        streams_rtc::socket::RECEIVE_BUFFER,
    )
}

/// What the engine's thread owns.
struct Driver {
    core: RoomMediaCore,
    socket: MediaSocket,
    batch: ReceiveBatch,
    tcp: TcpMedia,
    /// The stream to a TURN server reached over TCP (its bytes go to the core as they come).
    turn_tcp: TcpMedia,
    route: Route,
    next_route_check: Instant,
    /// The packets of a video frame to the bridge leave in one send.
    outbox: Outbox,
    client: ClientHandle,
    commands: Receiver<MediaCommand>,
    room_events: Receiver<RoomEvent>,
    replies: (Sender<SignalReply>, Receiver<SignalReply>),
    events: Sender<MediaEvent>,
    waker: SocketWaker,
}

impl Driver {
    /// Runs the core until it stops: inputs and timers, what they produced carried out, then a
    /// wait for a datagram, a wake-up or the core's next deadline, then every datagram already
    /// received (up to [`READS_PER_TURN`] reads) before the timers run again.
    fn run(mut self) {
        loop {
            let now = Instant::now();
            if now >= self.next_route_check {
                self.next_route_check = now + ROUTE_CHECK;
                self.follow_route(now);
            }
            self.take_inputs(now);
            self.core.handle_timeout(now);
            self.tcp.handle_timeout(now);
            self.turn_tcp.handle_timeout(now);
            self.turn_streams_closed(now);
            self.flush(now);
            if self.core.is_stopped() {
                return;
            }
            let deadline = self.core.poll_timeout().min(self.next_route_check);
            if let Err(e) = self.socket.wait(deadline) {
                tracing::warn!("media socket wait: {e}");
            }
            let now = Instant::now();
            let core = &mut self.core;
            self.tcp.handle_ready(now, self.socket.ready(), |frame| {
                core.handle_tcp_frame(now, frame.source, frame.contents);
            });
            self.turn_tcp
                .handle_ready(now, self.socket.ready(), |bytes| {
                    core.handle_turn_stream(now, bytes.source, bytes.contents);
                });
            self.turn_streams_closed(now);
            self.read_datagrams();
        }
    }

    /// If the address facing the bridge changed, binds the socket there and moves the media to
    /// it (the TCP streams from the old address are closed; new ones open on demand).
    fn follow_route(&mut self, now: Instant) {
        let Ok(bound) = self.socket.local_addr() else {
            return;
        };
        if let Some(ip) = self.route.source_ip().filter(|ip| *ip != bound.ip()) {
            self.move_socket(now, ip);
        }
    }

    /// The TURN server's stream ended: the core's relay hears of it.
    fn turn_streams_closed(&mut self, now: Instant) {
        while let Some(server) = self.turn_tcp.poll_closed() {
            self.core.handle_turn_closed(now, server);
        }
    }

    /// Binds the socket afresh at `ip` (a new port) and moves the media there. The TCP streams
    /// (to the bridge, to a TURN server) were opened from the old IP: they are closed if it is a
    /// new one, kept if not.
    fn move_socket(&mut self, now: Instant, ip: IpAddr) {
        let new_ip = self.socket.local_addr().map_or(true, |old| old.ip() != ip);
        let socket = match bind_socket(ip, &self.waker) {
            Ok(socket) => socket,
            Err(e) => return tracing::warn!("cannot bind the media socket at {ip}: {e}"),
        };
        let Ok(local) = socket.local_addr() else {
            return;
        };
        self.batch = ReceiveBatch::new(&socket, READ_SLOTS);
        self.socket = socket;
        if new_ip {
            self.tcp.close_all();
            self.turn_tcp.close_all();
        }
        self.core.handle_local_address(now, local);
    }

    fn read_datagrams(&mut self) {
        let batch = &mut self.batch;
        for _ in 0..READS_PER_TURN {
            match self.socket.try_recv_batch(batch) {
                Ok(0) => return,
                Ok(_) => {
                    let now = Instant::now();
                    for datagram in batch.datagrams() {
                        self.core
                            .handle_datagram(now, datagram.source, datagram.contents);
                    }
                }
                // An ICMP error from an earlier send (the bridge's port closed for a moment):
                // the connection's own timers decide whether it is lost.
                Err(e) => tracing::debug!("media socket: {e}"),
            }
        }
    }

    /// Commands, room events and signaling replies that arrived, into the core.
    fn take_inputs(&mut self, now: Instant) {
        loop {
            match self.commands.try_recv() {
                Ok(command) => self.core.handle_command(now, command),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.core.handle_command(now, MediaCommand::Stop);
                    break;
                }
            }
        }
        while let Ok(event) = self.room_events.try_recv() {
            self.core.handle_room_event(now, event);
        }
        while let Ok((id, result)) = self.replies.1.try_recv() {
            self.core.handle_signal_reply(now, id, result);
        }
    }

    /// Carries out what the core wants: datagrams sent, requests started, events passed on.
    fn flush(&mut self, now: Instant) {
        let mut refused = Vec::new();
        let mut rebind = false;
        while let Some(output) = self.core.poll_output() {
            match output {
                // A failed send loses its datagrams, as the network would (logged).
                CoreOutput::Transmit(t) => match t.transport {
                    Transport::Udp => {
                        self.outbox
                            .push(&self.socket, None, t.destination, &t.contents);
                    }
                    Transport::Tcp => {
                        self.tcp.send(now, t.destination, &t.contents);
                    }
                },
                CoreOutput::ToTurn(t) => match t.transport {
                    Transport::Udp => {
                        self.outbox
                            .push(&self.socket, None, t.destination, &t.contents);
                    }
                    Transport::Tcp => {
                        self.turn_tcp.send(now, t.destination, &t.contents);
                    }
                },
                CoreOutput::Rebind => rebind = true,
                CoreOutput::Signal { id, op } => {
                    let replies = self.replies.0.clone();
                    let waker = self.waker.clone();
                    let started = self.client.request(op, move |result| {
                        let _ = replies.send((id, result));
                        waker.wake();
                    });
                    if let Err(e) = started {
                        refused.push((id, e));
                    }
                }
                CoreOutput::Event(event) => {
                    if let Err(TrySendError::Full(_)) = self.events.try_send(event) {
                        tracing::debug!("media event dropped: the owner is not reading events");
                    }
                }
            }
        }
        self.outbox.flush(&self.socket);
        // Requests the client could not even start fail now (and are retried by the core).
        for (id, error) in refused {
            self.core.handle_signal_reply(now, id, Err(error));
        }
        if rebind && let Ok(bound) = self.socket.local_addr() {
            self.move_socket(now, bound.ip());
        }
    }
}
