//! [`SfuCore`]: the SFU as a sans-IO state machine. It owns every media session, the routing table
//! and the keyframe-request throttle; signaling calls it directly (negotiate, subscribe, close,
//! list), the network through [`SfuCore::handle_datagram`] and [`SfuCore::handle_timeout`] (in
//! `media.rs`), and what it sends is polled with [`SfuCore::poll_transmit`]. Time is passed in; no
//! socket, thread, lock or clock is inside, so tests drive it with simulated time and networks.
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use priority_queue::PriorityQueue;
use slotmap::SlotMap;
use str0m::Candidate;
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, Mid};
use str0m::net::TcpType;
use str0m::rtp::RtpPacket;
use streams_proto::wire::{
    ErrorCode, StreamInfo, TrackAnnounce, TrackKind, TrackSubscription, WireError,
};
use streams_proto::{MediaId, RoomId, StreamId, TrackId, UserId};
use streams_rtc::socket::Transport;

use super::MAX_SUBSCRIPTIONS;
use super::addresses::MediaAddresses;
use super::offer::without_audio_congestion_feedback;
use super::reassembly::VideoFrames;
use super::routes::{Leg, Routes};
use super::session::{Session, SessionKey};
use crate::hub::ConnId;

/// The outcome of a negotiation.
#[derive(Debug)]
pub struct Negotiated {
    /// The SDP answer.
    pub answer: String,
    /// The session's stream as published now.
    pub stream: StreamInfo,
    /// Whether the session had published tracks before this negotiation.
    pub was_published: bool,
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// UDP, or the TCP stream from `destination` (ICE-TCP).
    pub transport: Transport,
    /// The local IP to send it from (`None`: the kernel's choice; UDP only).
    pub source: Option<IpAddr>,
    /// Where to.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// A frame forwarded in a room being recorded (see [`SfuCore::set_recorded`]).
#[derive(Debug)]
pub struct RecordedFrame {
    /// The room being recorded.
    pub room: RoomId,
    /// The track it belongs to.
    pub track: TrackId,
    /// Its publisher.
    pub user: UserId,
    /// What the track carries.
    pub kind: TrackKind,
    /// `opus` or `h264`.
    pub codec: &'static str,
    /// When it reached the SFU.
    pub arrived: Instant,
    /// Its RTP timestamp.
    pub rtp_time: u64,
    /// Whether the clear keyframe hint says it is one (video).
    pub keyframe: bool,
    /// As forwarded: SFrame ciphertext.
    pub payload: Vec<u8>,
}

/// Every media session of one SFU, and how frames flow between them.
pub struct SfuCore {
    /// What the sessions announce, and which announced address each datagram was sent to.
    pub(super) addresses: MediaAddresses,
    /// What the sessions announce for ICE-TCP (`None`: no TCP candidates).
    pub(super) tcp_addresses: Option<MediaAddresses>,
    pub(super) sessions: SlotMap<SessionKey, Session>,
    pub(super) by_stream: HashMap<StreamId, SessionKey>,
    /// Which session each remote address (by transport) belongs to: a datagram finds its session
    /// in one lookup.
    pub(super) by_source: HashMap<(Transport, SocketAddr), SessionKey>,
    /// Which session each local ICE ufrag belongs to: a STUN check from a new address finds its
    /// session in one lookup.
    pub(super) by_ufrag: HashMap<String, SessionKey>,
    pub(super) routes: Routes,
    /// The id the next session's stream gets, and how far apart this core's ids are (several
    /// cores in one bridge number their streams apart: `first`, `first + step`, …).
    next_stream: u64,
    stream_step: u64,
    /// When a keyframe was last requested of each published track.
    pub(super) last_keyframe_request: HashMap<TrackId, Instant>,
    pub(super) keyframe_requests: u64,
    pub(super) recorded_rooms: HashSet<RoomId>,
    /// The video frame being rebuilt for each recorded track.
    pub(super) reassembly: HashMap<TrackId, VideoFrames>,
    /// Whether the last packet forwarded of each video track ended a frame (its RTP marker).
    pub(super) frame_ended: HashMap<TrackId, bool>,
    /// Sessions written to since their last timeout: each is advanced and drained once per
    /// [`SfuCore::handle_timeout`], not once per forwarded frame.
    pub(super) dirty: Vec<SessionKey>,
    /// When each session's timers are next due, earliest first (one entry per session, moved
    /// when its deadline changes).
    pub(super) timers: PriorityQueue<SessionKey, Reverse<Instant>>,
    /// Sessions that ended on their own (ICE lost, a failure), removed at the next timeout.
    pub(super) ended: Vec<SessionKey>,
    /// Streams whose session ended on its own, for [`SfuCore::poll_lost`].
    pub(super) lost: VecDeque<(RoomId, StreamId)>,
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) recorded: VecDeque<RecordedFrame>,
    /// Reused by each drain: the packets and keyframe requests a session produced.
    pub(super) scratch_media: Vec<RtpPacket>,
    pub(super) scratch_keyframes: Vec<(Mid, KeyframeRequestKind)>,
    pub(super) scratch_due: Vec<SessionKey>,
    /// The latest time passed in.
    pub(super) last_now: Instant,
}

fn invalid(message: String) -> WireError {
    WireError::new(ErrorCode::Invalid, message)
}

/// Whether an m-line appears twice (lists are at most [`MAX_SUBSCRIPTIONS`] long).
fn has_duplicates(mids: impl Iterator<Item = MediaId>) -> bool {
    let mut seen = HashSet::new();
    mids.into_iter().any(|mid| !seen.insert(mid))
}

impl SfuCore {
    /// An SFU whose sessions announce `addresses` (one host candidate each).
    pub fn new(now: Instant, addresses: MediaAddresses) -> Self {
        SfuCore {
            addresses,
            tcp_addresses: None,
            sessions: SlotMap::with_key(),
            by_stream: HashMap::new(),
            by_source: HashMap::new(),
            by_ufrag: HashMap::new(),
            routes: Routes::default(),
            next_stream: 1,
            stream_step: 1,
            last_keyframe_request: HashMap::new(),
            keyframe_requests: 0,
            recorded_rooms: HashSet::new(),
            reassembly: HashMap::new(),
            frame_ended: HashMap::new(),
            dirty: Vec::new(),
            timers: PriorityQueue::new(),
            ended: Vec::new(),
            lost: VecDeque::new(),
            transmits: VecDeque::new(),
            recorded: VecDeque::new(),
            scratch_media: Vec::new(),
            scratch_keyframes: Vec::new(),
            scratch_due: Vec::new(),
            last_now: now,
        }
    }

    /// Sessions also announce `addresses` as passive ICE-TCP candidates (RFC 6544); their
    /// datagrams come in by [`SfuCore::handle_tcp_frame`] and leave as [`Transport::Tcp`].
    /// str0m ranks them below UDP (type preference 90 against 126), so a client uses TCP only
    /// when UDP does not get through.
    pub fn serving_tcp(mut self, addresses: MediaAddresses) -> Self {
        self.tcp_addresses = Some(addresses);
        self
    }

    /// Numbers the streams of this core `first`, `first + step`, … (1, 2, … by default), so that
    /// the cores of one bridge never give two streams the same id.
    pub fn numbering_streams(mut self, first: u64, step: u64) -> Self {
        self.next_stream = first.max(1);
        self.stream_step = step.max(1);
        self
    }

    /// Applies `conn`'s offer for its media session in `room` (made on its first offer): what it
    /// publishes and which remote tracks its receiving m-lines carry. Returns the answer.
    #[allow(clippy::too_many_arguments)]
    pub fn negotiate(
        &mut self,
        now: Instant,
        conn: ConnId,
        room: RoomId,
        user: UserId,
        offer: &str,
        publish: Vec<TrackAnnounce>,
        subscribe: Vec<TrackSubscription>,
    ) -> Result<Negotiated, WireError> {
        self.last_now = now;
        let offer = SdpOffer::from_sdp_string(&without_audio_congestion_feedback(offer))
            .map_err(|e| invalid(format!("unreadable SDP offer: {e}")))?;
        if has_duplicates(publish.iter().map(|t| t.mid)) {
            return Err(invalid("two published tracks on one m-line".into()));
        }
        self.check_tracks(&room, &subscribe)?;
        let existing = self.session_of(conn, &room);
        let key = match existing {
            Some(key) => key,
            None => self.open_session(now, conn, room, user)?,
        };
        let session = &mut self.sessions[key];
        let accepted = session.rtc.sdp_api().accept_offer(offer);
        // An ICE restart in the offer gives the session new credentials (str0m may take them
        // even from an offer it then refuses).
        let ufrag = session.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != session.ufrag {
            self.by_ufrag.remove(&session.ufrag);
            self.by_ufrag.insert(ufrag.clone(), key);
            session.ufrag = ufrag;
        }
        let answer = match accepted {
            Ok(answer) => answer,
            Err(e) => {
                if existing.is_none() {
                    self.remove_session(key);
                }
                return Err(invalid(format!("offer rejected: {e}")));
            }
        };
        let session = &mut self.sessions[key];
        session
            .sending
            .values_mut()
            .for_each(|outgoing| outgoing.renegotiated());
        let was_published = !session.published.is_empty();
        let unpublished: Vec<TrackId> = session
            .published
            .iter()
            .filter(|old| !publish.iter().any(|new| new.mid == old.mid))
            .map(|old| TrackId::new(session.id, old.mid))
            .collect();
        session.published = publish;
        for track in unpublished {
            self.unroute_track(&track);
        }
        self.apply_subscriptions(key, subscribe);
        let stream = self.sessions[key].stream();
        self.drain(key);
        Ok(Negotiated {
            answer: answer.to_sdp_string(),
            stream,
            was_published,
        })
    }

    /// Replaces which tracks `conn`'s media session in `room` receives.
    pub fn set_subscriptions(
        &mut self,
        conn: ConnId,
        room: &RoomId,
        subscribe: Vec<TrackSubscription>,
    ) -> Result<(), WireError> {
        self.check_tracks(room, &subscribe)?;
        let key = self
            .session_of(conn, room)
            .ok_or_else(|| invalid("no media session in this room yet".into()))?;
        self.apply_subscriptions(key, subscribe);
        Ok(())
    }

    /// Ends `conn`'s media sessions (in `room`, or in every room); returns the streams that were
    /// published.
    pub fn close_conn(&mut self, conn: ConnId, room: Option<&RoomId>) -> Vec<(RoomId, StreamId)> {
        self.close(|s| s.conn == conn && room.is_none_or(|r| *r == s.room))
    }

    /// Ends every media session of `user` in `room`.
    pub fn close_user(&mut self, room: &RoomId, user: &UserId) -> Vec<(RoomId, StreamId)> {
        self.close(|s| s.room == *room && s.user == *user)
    }

    /// Ends every media session in `room` (and stops recording it).
    pub fn close_room(&mut self, room: &RoomId) -> Vec<(RoomId, StreamId)> {
        self.set_recorded(room.clone(), false);
        self.close(|s| s.room == *room)
    }

    /// The streams published in `room`.
    pub fn streams(&self, room: &RoomId) -> Vec<StreamInfo> {
        self.sessions
            .values()
            .filter(|s| s.room == *room && !s.published.is_empty())
            .map(Session::stream)
            .collect()
    }

    /// How many media sessions exist.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The addresses media arrived from (a client's, its NAT's, or a TURN server's relay),
    /// sorted.
    pub fn peer_addresses(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.by_source.keys().map(|(_, addr)| *addr).collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Keyframe requests passed on to publishers so far.
    pub fn keyframe_requests_forwarded(&self) -> u64 {
        self.keyframe_requests
    }

    /// Whether frames forwarded in `room` are also handed out by [`SfuCore::poll_recorded`].
    pub fn set_recorded(&mut self, room: RoomId, recorded: bool) {
        if recorded {
            self.recorded_rooms.insert(room);
        } else {
            let (sessions, by_stream) = (&self.sessions, &self.by_stream);
            self.reassembly.retain(|track, _| {
                by_stream
                    .get(&track.stream)
                    .and_then(|key| sessions.get(*key))
                    .is_some_and(|s| s.room != room)
            });
            self.recorded_rooms.remove(&room);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next stream whose media session ended on its own (its peer stopped answering, or the
    /// connection failed): nobody asked for it, so the room has not been told yet.
    pub fn poll_lost(&mut self) -> Option<(RoomId, StreamId)> {
        self.lost.pop_front()
    }

    /// The next frame forwarded in a recorded room.
    pub fn poll_recorded(&mut self) -> Option<RecordedFrame> {
        self.recorded.pop_front()
    }

    fn session_of(&self, conn: ConnId, room: &RoomId) -> Option<SessionKey> {
        self.sessions
            .iter()
            .find(|(_, s)| s.conn == conn && s.room == *room)
            .map(|(key, _)| key)
    }

    fn open_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        room: RoomId,
        user: UserId,
    ) -> Result<SessionKey, WireError> {
        let internal =
            |e: &dyn std::fmt::Display| WireError::new(ErrorCode::Internal, e.to_string());
        // The profile the clients use, with the process's DTLS certificate and configuration.
        let mut rtc = streams_rtc::profile()
            .map_err(|e| internal(&e))?
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .build(now);
        for addr in self.addresses.announced() {
            let candidate = Candidate::host(*addr, "udp").map_err(|e| internal(&e))?;
            rtc.add_local_candidate(candidate);
        }
        for addr in self.tcp_addresses.iter().flat_map(|a| a.announced()) {
            let candidate = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| internal(&e))?;
            rtc.add_local_candidate(candidate);
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let id = StreamId(self.next_stream);
        self.next_stream += self.stream_step;
        let key = self.sessions.insert(Session {
            id,
            ufrag: ufrag.clone(),
            conn,
            room,
            user,
            rtc,
            published: Vec::new(),
            subscribed: HashMap::new(),
            sending: HashMap::new(),
            dirty: false,
            local_ip: None,
        });
        self.by_stream.insert(id, key);
        self.by_ufrag.insert(ufrag, key);
        self.timers.push(key, Reverse(now));
        Ok(key)
    }

    /// Every subscribed track must be published in the room; at most [`MAX_SUBSCRIPTIONS`].
    fn check_tracks(
        &self,
        room: &RoomId,
        subscribe: &[TrackSubscription],
    ) -> Result<(), WireError> {
        if subscribe.len() > MAX_SUBSCRIPTIONS {
            return Err(invalid(format!(
                "at most {MAX_SUBSCRIPTIONS} subscriptions per media session"
            )));
        }
        // One m-line carries one track.
        if has_duplicates(subscribe.iter().map(|s| s.mid)) {
            return Err(invalid("two subscriptions on one m-line".into()));
        }
        for sub in subscribe {
            let known = self
                .by_stream
                .get(&sub.track_id.stream)
                .and_then(|key| self.sessions.get(*key))
                .is_some_and(|s| s.room == *room && s.publication(sub.track_id.mid).is_some());
            if !known {
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!("no track {} in this room", sub.track_id),
                ));
            }
        }
        Ok(())
    }

    /// Session `key` receives exactly `subscribe` from now on.
    fn apply_subscriptions(&mut self, key: SessionKey, subscribe: Vec<TrackSubscription>) {
        let session = &mut self.sessions[key];
        for (mid, track) in session.subscribed.drain() {
            self.routes.remove(&track, Leg { session: key, mid });
        }
        for sub in subscribe {
            let mid = streams_rtc::mid::to_mid(sub.mid);
            session.subscribed.insert(mid, sub.track_id);
            self.routes.add(sub.track_id, Leg { session: key, mid });
        }
    }

    /// `track` is no longer published: its legs and its subscribers' m-lines forget it.
    fn unroute_track(&mut self, track: &TrackId) {
        for leg in self.routes.remove_track(track) {
            if let Some(subscriber) = self.sessions.get_mut(leg.session) {
                subscriber.subscribed.remove(&leg.mid);
            }
        }
        self.last_keyframe_request.remove(track);
        self.reassembly.remove(track);
        self.frame_ended.remove(track);
    }

    /// Ends the sessions matching `which`; returns the streams they published.
    fn close(&mut self, which: impl Fn(&Session) -> bool) -> Vec<(RoomId, StreamId)> {
        let keys: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| which(s))
            .map(|(key, _)| key)
            .collect();
        let mut closed = Vec::new();
        for key in keys {
            let session = &mut self.sessions[key];
            session.rtc.disconnect();
            if !session.published.is_empty() {
                closed.push((session.room.clone(), session.id));
            }
            self.remove_session(key);
        }
        closed
    }

    /// Removes session `key` and every route to and from it.
    pub(super) fn remove_session(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.remove(key) else {
            return;
        };
        for (mid, track) in &session.subscribed {
            self.routes.remove(
                track,
                Leg {
                    session: key,
                    mid: *mid,
                },
            );
        }
        for published in &session.published {
            self.unroute_track(&TrackId::new(session.id, published.mid));
        }
        self.by_stream.remove(&session.id);
        self.by_ufrag.remove(&session.ufrag);
        self.by_source.retain(|_, k| *k != key);
        self.timers.remove(&key);
        tracing::info!(session = %session.id, "media session ended");
    }
}
