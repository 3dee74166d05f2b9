//! [`RoomMediaCore`]: one room's media as a sans-IO state machine, in the shape of str0m and
//! quinn-proto. Inputs: the owner's [`MediaCommand`]s, replies to its signaling requests, room
//! events, datagrams and time, always with `now` passed in. Outputs, drained with
//! [`RoomMediaCore::poll_output`]: datagrams to send, signaling requests to make (each with a
//! [`SignalId`]; its reply comes back through [`RoomMediaCore::handle_signal_reply`]) and
//! [`MediaEvent`]s; [`RoomMediaCore::poll_timeout`] says when to call
//! [`RoomMediaCore::handle_timeout`] next.
//!
//! No socket, clock or thread of its own: the driver ([`crate::media::driver`]) owns the socket and
//! the signaling handle, and tests run two cores against an SFU on simulated time. Video encoders
//! and decoders are workers with threads of their own (started with the core's waker); the core hands
//! them frames and polls them without waiting.
//!
//! Signaling never stalls media: a renegotiation is an output, and while its reply is outstanding
//! the established m-lines keep sending and receiving. A refused or failed request is reported and
//! retried; only removal from the room, a failed media connection or the owner stop the core.
mod local;
mod negotiation;
mod rejoin;
mod relaying;
mod remote;
mod room;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streams_proto::frame_crypto::DeviceSession;
use streams_proto::wire::{ErrorCode, EventScope, StreamInfo};
use streams_proto::{Identity, MediaId, RoomId, RoomSecret, TrackId, UserId};

use crate::api::{Operation, Reply, RoomEvent};
use crate::error::ClientError;
use crate::media::events::{MediaCommand, MediaEvent, MediaOptions, RejoinReason, StopReason};
use crate::media::relay::{Relay, ToServer};
use crate::media::rtc::{MediaError, PeerEvent, RtcPeer, START_ESTIMATE_KBPS, Transmit};
use crate::turn_servers::TurnServer;
use crate::video::receiver::VideoSlot;
use streams_rtc::socket::Transport;

use local::LocalTrack;
use negotiation::InFlightOffer;
use rejoin::Rejoining;
use remote::RemoteTrack;

pub use rejoin::REJOIN_GIVE_UP;

/// Identifies one signaling request of a core; its reply is handed back with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignalId(pub u64);

/// Something the core wants done.
#[derive(Debug)]
pub enum CoreOutput {
    /// Send a datagram.
    Transmit(Transmit),
    /// Send bytes to the TURN server (over UDP, or its TCP stream unframed).
    ToTurn(ToServer),
    /// Bind the media socket afresh (same address, a new port) and report it with
    /// [`RoomMediaCore::handle_local_address`]: the bridge's media stopped reaching this one.
    Rebind,
    /// Make a signaling request; hand its result to [`RoomMediaCore::handle_signal_reply`].
    Signal {
        /// Its id.
        id: SignalId,
        /// The request.
        op: Operation,
    },
    /// Tell the owner.
    Event(MediaEvent),
}

/// Wakes the driver from a worker's thread (a video frame is ready to send).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What a core is for.
pub struct CoreConfig {
    /// Whose media.
    pub identity: Identity,
    /// Which room.
    pub room_id: RoomId,
    /// The local UDP address the driver's socket is bound to (the only ICE candidate).
    pub local: SocketAddr,
    /// Options.
    pub options: MediaOptions,
    /// Called by video capture threads when a frame is ready.
    pub wake: Waker,
    /// Where the latest picture of each remote video track received is kept (the owner reads it).
    pub videos: VideoSlots,
}

/// The latest-picture slots of the remote video tracks being received, by track id.
pub type VideoSlots = Arc<Mutex<HashMap<TrackId, VideoSlot>>>;

/// How long to wait before a failed signaling request is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest the core sleeps: video workers and receivers are polled at least this often.
const MAX_IDLE: Duration = Duration::from_millis(10);
/// How often statistics are reported.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// A request in flight, by what its reply is for.
enum Pending {
    /// Room events of the room.
    Subscribe,
    /// The room itself (keys, epoch).
    GetRoom,
    /// The room's published streams.
    List,
    /// An offer.
    Negotiate(Box<InFlightOffer>),
    /// Which remote tracks the session receives.
    SetSubscriptions,
    /// The end of the media session (its reply is not waited for).
    Close,
    /// The end of a lost session before a rejoin (nothing is offered until it is answered).
    Reset,
    /// The bridge's TURN servers.
    TurnServers,
}

/// Requests to make again after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    Subscribe,
    GetRoom,
    List,
    Reset,
    TurnServers,
}

/// The keys of the room, once it has been fetched.
struct Keys {
    epoch: u64,
    secrets: HashMap<u64, RoomSecret>,
}

/// One room's media, sans-IO.
pub struct RoomMediaCore {
    identity: Identity,
    room_id: RoomId,
    peer: RtcPeer,
    device: DeviceSession,
    keys: Option<Keys>,
    /// Commands that need the room's keys, held until it has been fetched.
    deferred: Vec<MediaCommand>,
    local: Vec<LocalTrack>,
    /// The index the next local track gets: every add takes one, even one that fails, so the
    /// owner can number its tracks in the order it added them.
    next_local: u8,
    /// By receiving mid.
    remote: HashMap<MediaId, RemoteTrack>,
    /// Announced streams whose tracks are not negotiated yet.
    pending_streams: Vec<StreamInfo>,
    /// Streams room events announced since the last listing was asked for: that listing's reply
    /// may predate them (replies and events reach the core by different channels).
    announced: Vec<StreamInfo>,
    subscribe_all: bool,
    /// Members whose voices are not received (proximity).
    unheard: HashSet<UserId>,
    /// The bridge's subscriptions must be set to `remote` (tracks were dropped).
    resubscribe: bool,
    /// Volumes asked for by track id (applied to tracks received later too).
    volumes: HashMap<TrackId, (f32, bool)>,
    videos: VideoSlots,
    options: MediaOptions,
    wake: Waker,
    speaking: HashMap<TrackId, bool>,
    speaking_config: Option<(f32, u64, u64)>,
    next_stats: Instant,
    /// No negotiation before this (after a failed one).
    negotiate_after: Instant,
    /// The latest bandwidth estimate, bits/s.
    estimate: u64,
    next_signal: u64,
    in_flight: HashMap<SignalId, Pending>,
    retries: Vec<(Instant, Retry)>,
    outputs: VecDeque<CoreOutput>,
    /// The latest `now` seen.
    now: Instant,
    stopped: bool,
    /// The media connection has been up at least once.
    ever_connected: bool,
    /// A rejoin under way (see `rejoin.rs`).
    rejoining: Option<Rejoining>,
    /// The bridge is ending a lost session: nothing is offered until it answers.
    resetting: bool,
    /// The TURN relay, if the bridge has TURN servers (see `relaying.rs`).
    relay: Option<Relay>,
    /// TURN servers not tried yet.
    turn_servers: VecDeque<TurnServer>,
    /// The bridge handed out TURN servers (so they are asked for again when all have failed).
    has_turn: bool,
}

impl RoomMediaCore {
    /// A core for `config.room_id`; its first outputs subscribe to the room's events and fetch it.
    pub fn new(now: Instant, config: CoreConfig) -> Result<Self, MediaError> {
        let mut core = RoomMediaCore {
            peer: RtcPeer::with_tcp(now, config.local)?,
            identity: config.identity,
            room_id: config.room_id,
            device: DeviceSession::random(),
            keys: None,
            deferred: Vec::new(),
            local: Vec::new(),
            next_local: 0,
            remote: HashMap::new(),
            pending_streams: Vec::new(),
            announced: Vec::new(),
            subscribe_all: true,
            unheard: HashSet::new(),
            resubscribe: false,
            volumes: HashMap::new(),
            videos: config.videos,
            options: config.options,
            wake: config.wake,
            speaking: HashMap::new(),
            speaking_config: None,
            next_stats: now + STATS_INTERVAL,
            negotiate_after: now,
            estimate: START_ESTIMATE_KBPS * 1000,
            next_signal: 0,
            in_flight: HashMap::new(),
            retries: Vec::new(),
            outputs: VecDeque::new(),
            now,
            stopped: false,
            ever_connected: false,
            rejoining: None,
            resetting: false,
            relay: None,
            turn_servers: VecDeque::new(),
            has_turn: false,
        };
        core.retry(Retry::Subscribe);
        core.retry(Retry::GetRoom);
        core.retry(Retry::TurnServers);
        Ok(core)
    }

    /// Whether the core has stopped (its last outputs may still wait to be polled).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the media connection is up.
    pub fn is_connected(&self) -> bool {
        self.peer.is_connected()
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<CoreOutput> {
        while let Some(t) = self.peer.poll_transmit() {
            if let Some(direct) = self.route_transmit(t) {
                return Some(CoreOutput::Transmit(direct));
            }
        }
        if let Some(bytes) = self.poll_relay_transmit() {
            return Some(CoreOutput::ToTurn(bytes));
        }
        self.outputs.pop_front()
    }

    /// When [`RoomMediaCore::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.peer.poll_timeout().min(self.now + MAX_IDLE);
        if self.stopped {
            return at;
        }
        at = at.min(self.next_stats);
        for (due, _) in &self.retries {
            at = at.min(*due);
        }
        if let Some(due) = self.next_audio_due() {
            at = at.min(due);
        }
        if let Some(due) = self.relay_due() {
            at = at.min(due);
        }
        at
    }

    /// An owner's command.
    pub fn handle_command(&mut self, now: Instant, command: MediaCommand) {
        self.now = now;
        if self.stopped {
            return;
        }
        self.command(now, command);
        self.absorb_peer(now);
    }

    /// A datagram from `source` (the bridge, or the TURN server); `false` if it is not for this
    /// core's connection.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        self.now = now;
        if !self.stopped && self.relay_input(now, Transport::Udp, source, contents) {
            return true;
        }
        self.receive(now, |peer| peer.handle_datagram(now, source, contents))
    }

    /// Bytes of the TCP stream from the TURN server at `source`.
    pub fn handle_turn_stream(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.now = now;
        if !self.stopped {
            self.relay_input(now, Transport::Tcp, source, contents);
        }
    }

    /// The TCP stream to the TURN server at `server` ended by itself (refused, reset, closed).
    pub fn handle_turn_closed(&mut self, now: Instant, server: SocketAddr) {
        self.now = now;
        if !self.stopped {
            self.turn_stream_closed(now, server);
        }
    }

    /// The local address facing the bridge changed to `local` (the driver's socket is bound there
    /// now): media moves to it in the same session ([`RtcPeer::move_to`]), reported as
    /// [`MediaEvent::PathChanged`].
    pub fn handle_local_address(&mut self, now: Instant, local: SocketAddr) {
        self.now = now;
        let from = self.peer.local_addr();
        if self.stopped || from == local {
            return;
        }
        tracing::info!(room = %self.room_id, %from, to = %local, "the network changed; moving media");
        if let Err(e) = self.peer.move_to(now, local) {
            return self.stop(now, StopReason::Failed(format!("cannot move media: {e}")));
        }
        self.emit(MediaEvent::PathChanged { from, to: local });
        self.move_relay(now, from.ip() != local.ip());
        self.absorb_peer(now);
    }

    /// A datagram that arrived on the TCP stream from `source` (ICE-TCP); `false` if it is not
    /// for this core's connection.
    pub fn handle_tcp_frame(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        self.receive(now, |peer| peer.handle_tcp_frame(now, source, contents))
    }

    /// Hands what arrived to the peer (by UDP or TCP) unless stopped; whether it took it.
    fn receive(&mut self, now: Instant, into: impl FnOnce(&mut RtcPeer) -> bool) -> bool {
        self.now = now;
        if self.stopped {
            return false;
        }
        let accepted = into(&mut self.peer);
        self.absorb_peer(now);
        accepted
    }

    /// A room event (from the client's event stream; events of other rooms are ignored).
    pub fn handle_room_event(&mut self, now: Instant, event: RoomEvent) {
        self.now = now;
        if self.stopped {
            return;
        }
        self.room_event(now, event);
        self.absorb_peer(now);
    }

    /// The result of the signaling request `id`.
    pub fn handle_signal_reply(
        &mut self,
        now: Instant,
        id: SignalId,
        result: Result<Reply, ClientError>,
    ) {
        self.now = now;
        let Some(pending) = self.in_flight.remove(&id) else {
            return;
        };
        if self.stopped {
            return;
        }
        match pending {
            Pending::Subscribe => {
                if let Err(e) = result {
                    self.failed_request(now, Retry::Subscribe, e);
                }
            }
            Pending::GetRoom => match result {
                Ok(Reply::Room(room)) => self.apply_room(now, &room),
                Ok(other) => self.failed_request(now, Retry::GetRoom, unexpected(&other)),
                Err(e) => self.failed_request(now, Retry::GetRoom, e),
            },
            Pending::List => match result {
                Ok(Reply::Streams(streams)) => self.apply_listing(streams),
                Ok(other) => self.failed_request(now, Retry::List, unexpected(&other)),
                Err(e) => self.failed_request(now, Retry::List, e),
            },
            Pending::Negotiate(offer) => self.negotiated(now, *offer, result),
            Pending::SetSubscriptions => {
                if let Err(e) = result {
                    tracing::warn!(room = %self.room_id, "setting subscriptions failed: {e}");
                    self.resubscribe = true;
                }
            }
            Pending::Close => {}
            Pending::TurnServers => self.turn_servers_replied(now, result),
            Pending::Reset => match result {
                // Ended, or there was nothing left to end (a restarted bridge).
                Ok(_) | Err(ClientError::Bridge(_)) => self.resetting = false,
                Err(e) => self.failed_request(now, Retry::Reset, e),
            },
        }
        self.absorb_peer(now);
    }

    /// Time passed: frames that are due are sent, timers run.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.stopped {
            return;
        }
        let due: Vec<Retry> = self
            .retries
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, r)| *r)
            .collect();
        self.retries.retain(|(at, _)| *at > now);
        for retry in due {
            self.retry(retry);
        }
        if self.rejoin_given_up(now) {
            return;
        }
        self.relay_timeout(now);
        if self.peer.poll_timeout() <= now {
            self.peer.handle_timeout(now);
        }
        self.absorb_peer(now);
        self.negotiate(now);
        self.send_subscriptions();
        self.send_due_frames(now);
        self.send_video(now);
        self.request_keyframes(now);
        self.report(now);
        self.absorb_peer(now);
        if let Some(output) = &self.options.voice_output {
            // Voices the output let go are freed here, off its audio thread.
            output.collect_retired();
        }
    }

    fn command(&mut self, now: Instant, command: MediaCommand) {
        match command {
            MediaCommand::AddAudioTrack { .. } | MediaCommand::AddVideoTrack { .. }
                if self.keys.is_none() =>
            {
                self.deferred.push(command);
            }
            MediaCommand::AddAudioTrack { source, settings } => {
                self.add_audio(source, settings);
            }
            MediaCommand::AddVideoTrack {
                source,
                settings,
                kind,
            } => self.add_video(now, source, settings, kind),
            MediaCommand::MuteAudio(muted) => self.mute_audio(muted),
            MediaCommand::RemoveTrack(index) => {
                if let Some(track) = self.local.iter_mut().find(|t| t.index == index) {
                    track.removed = true;
                }
            }
            MediaCommand::SubscribeAll(all) => {
                self.subscribe_all = all;
                if all {
                    self.list_streams();
                } else {
                    self.pending_streams.clear();
                    self.announced.clear();
                    if self.drop_remote_where(|_| true) > 0 {
                        self.resubscribe = true;
                    }
                }
            }
            MediaCommand::SetVoiceSubscribed {
                user_id,
                subscribed,
            } => self.set_voice_subscribed(user_id, subscribed),
            MediaCommand::SetVolume {
                track_id,
                gain,
                muted,
            } => self.set_volume(track_id, gain, muted),
            MediaCommand::ConfigureSpeaking {
                threshold_dbfs,
                attack_ms,
                hold_ms,
            } => self.configure_speaking(threshold_dbfs, attack_ms, hold_ms),
            MediaCommand::Stop => self.stop(now, StopReason::Owner),
        }
    }

    /// Takes in what the connection reported.
    fn absorb_peer(&mut self, now: Instant) {
        while let Some(event) = self.peer.poll_event() {
            match event {
                PeerEvent::Connected => {
                    self.ever_connected = true;
                    self.emit(MediaEvent::Connected);
                    self.rejoined(now);
                }
                // A path that worked and died, or a rejoin that could not connect yet: again.
                PeerEvent::Failed | PeerEvent::Unreachable { .. }
                    if self.ever_connected || self.is_rejoining() =>
                {
                    self.rejoin(now, RejoinReason::MediaPathLost);
                }
                PeerEvent::Failed => self.stop(now, StopReason::ConnectionFailed),
                PeerEvent::Unreachable { waited, bridge } => {
                    self.stop(now, StopReason::NoMediaPath { waited, bridge });
                }
                PeerEvent::Media(received) => self.deliver(received),
                PeerEvent::KeyframeRequest(mid) => self.keyframe_requested(mid),
                PeerEvent::Estimate(bps) => {
                    self.estimate = bps;
                    self.share_estimate();
                }
                PeerEvent::PathLost => self.emit(MediaEvent::PathLost),
                // The bridge sends to where this socket's NAT mapping was: a fresh socket gives
                // new candidates, ranked above the old, and the bridge follows them.
                // (Only on a direct UDP path: TCP streams and relays keep theirs.)
                PeerEvent::MediaSilent if self.peer.sends_direct_udp() => {
                    tracing::warn!(room = %self.room_id, "no media from the bridge; rebinding");
                    self.outputs.push_back(CoreOutput::Rebind);
                }
                PeerEvent::MediaSilent => {}
                PeerEvent::PathBack { after } => self.emit(MediaEvent::PathBack { after }),
            }
        }
    }

    fn emit(&mut self, event: MediaEvent) {
        self.outputs.push_back(CoreOutput::Event(event));
    }

    /// Queues a signaling request.
    fn signal(&mut self, op: Operation, pending: Pending) {
        self.next_signal += 1;
        let id = SignalId(self.next_signal);
        self.in_flight.insert(id, pending);
        self.outputs.push_back(CoreOutput::Signal { id, op });
    }

    /// Whether a request of this kind is outstanding.
    fn in_flight(&self, matches: impl Fn(&Pending) -> bool) -> bool {
        self.in_flight.values().any(matches)
    }

    fn retry(&mut self, retry: Retry) {
        let room = self.room_id.clone();
        match retry {
            Retry::Subscribe => {
                self.signal(
                    Operation::Subscribe(EventScope::Room(room)),
                    Pending::Subscribe,
                );
            }
            Retry::GetRoom => self.signal(Operation::GetRoom(room), Pending::GetRoom),
            Retry::List => self.list_streams(),
            // Only while a rejoin still waits for it: a late retry must not end the new session.
            Retry::Reset if self.resetting => self.reset_session(),
            Retry::Reset => {}
            Retry::TurnServers => self.signal(Operation::TurnServers, Pending::TurnServers),
        }
    }

    /// A request failed: the bridge's refusal of the room itself ends the core, anything else is
    /// tried again shortly.
    fn failed_request(&mut self, now: Instant, retry: Retry, error: ClientError) {
        if retry == Retry::GetRoom
            && let ClientError::Bridge(refusal) = &error
        {
            if self.keys.is_none() {
                return self.stop(now, StopReason::Refused(refusal.to_string()));
            }
            // The room went away or this member was removed while the news of it was lost (a
            // signaling gap): nothing will ever answer.
            if matches!(refusal.code, ErrorCode::NotFound | ErrorCode::Forbidden) {
                return self.stop(now, StopReason::NotInRoom);
            }
        }
        tracing::warn!(room = %self.room_id, ?retry, "signaling failed, retrying: {error}");
        if !self.retries.iter().any(|(_, r)| *r == retry) {
            self.retries.push((now + RETRY_AFTER, retry));
        }
    }

    /// Ends the core: final statistics, the media session closed at the bridge, then
    /// [`MediaEvent::Stopped`].
    fn stop(&mut self, now: Instant, reason: StopReason) {
        if self.stopped {
            return;
        }
        self.report_remote();
        self.report_local();
        self.signal(Operation::CloseMedia(self.room_id.clone()), Pending::Close);
        self.peer.close(now);
        self.close_relay(now);
        self.local.clear();
        self.emit(MediaEvent::Stopped { reason });
        self.stopped = true;
    }

    /// Speaking changes as they happen; statistics once a second.
    fn report(&mut self, now: Instant) {
        self.report_speaking();
        if now >= self.next_stats {
            self.next_stats = now + STATS_INTERVAL;
            self.report_remote();
            self.report_local();
        }
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Unexpected(format!("{reply:?}"))
}

#[cfg(test)]
mod tests;
