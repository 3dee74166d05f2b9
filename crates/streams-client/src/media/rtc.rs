//! [`RtcPeer`]: one WebRTC peer connection (str0m) between this client and the bridge's SFU for one
//! room, sans-IO. Datagrams and time go in ([`RtcPeer::handle_datagram`], [`RtcPeer::handle_timeout`]);
//! datagrams to send and [`PeerEvent`]s come out ([`RtcPeer::poll_transmit`], [`RtcPeer::poll_event`]),
//! with the next instant it needs to be woken at ([`RtcPeer::poll_timeout`]). No socket, thread or
//! clock inside: a driver owns those (see [`crate::media::session::MediaSession`] and
//! [`crate::media::driver`]), and tests run it on simulated time.
//!
//! Its candidates are its UDP address and, for a room's media engine, an active ICE-TCP one
//! (RFC 6544: the port is 9, the stream is opened by the driver when ICE first sends to a
//! bridge's passive TCP candidate), so a network that blocks UDP still connects over TCP. When the
//! local address changes ([`RtcPeer::move_to`]) the old candidates are dropped and new ones added,
//! ranked above them (see `candidates.rs`): ICE checks the new pairs and both ends switch to them,
//! in the same session (same DTLS, keys and tracks), without signaling. A TURN allocation's
//! relayed address can be added as a candidate too ([`RtcPeer::set_relay`]); what is sent from it
//! is marked [`Transmit::relayed`] and goes through the relay.
//!
//! The client always offers; every change (publish, subscribe) is a fresh offer of the whole session.
//! The codecs and header extensions are the profile both ends share ([`streams_rtc::profile`]);
//! sending video turns on str0m's bandwidth estimation (TWCC).
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpPendingOffer};
pub use str0m::media::MediaKind;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use streams_proto::MediaId;
use streams_rtc::dtls::NoCertificate;
use streams_rtc::mid::{to_media_id, to_mid};
use streams_rtc::socket::Transport;

use self::candidates::LocalCandidates;
use self::path_watch::PathWatch;
pub use self::path_watch::{DEAD_PATH_AFTER, MEDIA_SILENT_AFTER};

mod candidates;
mod path_watch;

/// Media session failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Socket trouble.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    /// WebRTC trouble.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// The session is not in a state for this.
    #[error("{0}")]
    State(&'static str),
    /// The voice codec failed.
    #[error(transparent)]
    Voice(#[from] crate::audio::codec::CodecError),
    /// The video codec failed.
    #[error(transparent)]
    Video(#[from] crate::video::VideoError),
    /// No DTLS certificate.
    #[error(transparent)]
    Certificate(#[from] NoCertificate),
}

/// The addresses of the ICE candidates in an SDP.
fn candidate_addresses(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|line| line.trim_end().strip_prefix("a="))
        .filter(|line| line.starts_with("candidate:"))
        .filter_map(|line| Candidate::from_sdp_string(line).ok())
        .map(|c| c.addr())
        .collect()
}

fn rtc_error(e: impl std::fmt::Display) -> MediaError {
    MediaError::Rtc(e.to_string())
}

/// Where the bandwidth estimate starts, kbit/s: libwebrtc's start, from which str0m probes up
/// (a clean path reaches 1 Mbit/s within about a second). Starting above a narrow link's rate
/// costs seconds: the first keyframe, sized for the start, overflows the link's queue, and every
/// keyframe asked for after it is lost the same way until the estimate has come down (800 kbit/s
/// on a 300 kbit/s link froze video for 4 s and more).
pub const START_ESTIMATE_KBPS: u64 = 300;

/// How long ICE and DTLS may take, from the first answer, before the bridge's media is declared
/// unreachable ([`PeerEvent::Unreachable`]): a reachable bridge answers its first check within a
/// round trip, and str0m keeps retrying its checks for several seconds, so a path that is not up by
/// then does not exist (blocked UDP, a private address announced behind a NAT).
pub const ICE_CONNECT_TIMEOUT: Duration = Duration::from_secs(8);

/// How often the client checks its media path (ICE consent, RFC 7675): str0m's largest STUN
/// retransmit interval, which is also how often a working pair is checked; the bridge answers each.
const CONSENT_INTERVAL: Duration = Duration::from_millis(400);

/// Checks of a pair str0m sends unanswered before it gives the pair up: at [`CONSENT_INTERVAL`],
/// about 10 s, so a path cut for less comes back by itself in the same session (str0m's default,
/// 9, would give up after under 4 s at this interval).
const CONSENT_RETRANSMITS: usize = 25;

/// A media frame received on one of this session's receiving m-lines.
#[derive(Clone, Debug)]
pub struct Received {
    /// The m-line it arrived on.
    pub mid: MediaId,
    /// The (still SFrame-protected) frame.
    pub data: Vec<u8>,
    /// When its last packet arrived.
    pub arrived: Instant,
}

/// A datagram to send.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// UDP, or the TCP stream to `destination` (opened if there is none).
    pub transport: Transport,
    /// Sent from the relayed candidate: it goes through the TURN relay
    /// ([`crate::media::relay::Relay::send`]), not straight to `destination`.
    pub relayed: bool,
    /// Where to.
    pub destination: SocketAddr,
    /// What.
    pub contents: Vec<u8>,
}

/// What happened on the connection.
#[derive(Clone, Debug)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// The connection was lost or closed.
    Failed,
    /// ICE never connected: no path to any address the bridge announced.
    Unreachable {
        /// How long it tried.
        waited: Duration,
        /// The bridge's media addresses it tried (its candidates in the answer).
        bridge: Vec<SocketAddr>,
    },
    /// A frame arrived.
    Media(Received),
    /// The subscribers of a sending m-line asked for a keyframe.
    KeyframeRequest(MediaId),
    /// A new bandwidth estimate, bits/s.
    Estimate(u64),
    /// Nothing has come from the bridge for [`DEAD_PATH_AFTER`]: the path seems dead. ICE keeps
    /// checking it; [`PeerEvent::PathBack`] follows if it comes back before the connection fails.
    PathLost,
    /// The bridge is heard again after [`PeerEvent::PathLost`].
    PathBack {
        /// From the last datagram before the silence to the first after it.
        after: Duration,
    },
    /// The bridge answers this connection's checks but has sent no media for
    /// [`MEDIA_SILENT_AFTER`]: its media goes elsewhere (a NAT mapping that changed). Moving to a
    /// new local address makes the bridge follow.
    MediaSilent,
}

/// The sending and receiving m-lines an offer adds, in the order they were asked for.
#[derive(Clone, Debug)]
pub struct Offer {
    /// The SDP.
    pub sdp: String,
    /// Mids of the new sending m-lines.
    pub send_mids: Vec<MediaId>,
    /// Mids of the new receiving m-lines.
    pub recv_mids: Vec<MediaId>,
}

/// One peer connection with the SFU.
pub struct RtcPeer {
    rtc: Rtc,
    candidates: LocalCandidates,
    timeout: Instant,
    connected: bool,
    failed: bool,
    /// What arrives, and the silences reported (see `path_watch.rs`).
    watch: PathWatch,
    /// How the last media datagram (anything but STUN) left: its transport, and whether relayed.
    media_via: Option<(Transport, bool)>,
    /// Until connected: when the bridge's media counts as unreachable.
    connect_by: Option<Instant>,
    /// The bridge's media addresses, from its answers' candidates.
    bridge: Vec<SocketAddr>,
    pending: Option<SdpPendingOffer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<PeerEvent>,
}

impl RtcPeer {
    /// A connection that will use the local UDP address `local` (its only ICE candidate), in the
    /// media profile both ends share ([`streams_rtc::profile`]: codecs, extensions, the process's
    /// DTLS certificate), with bandwidth estimation.
    pub fn new(now: Instant, local: SocketAddr) -> Result<Self, MediaError> {
        let mut config =
            streams_rtc::profile()?.enable_bwe(Some(Bitrate::kbps(START_ESTIMATE_KBPS)));
        config.set_max_stun_rto(CONSENT_INTERVAL);
        config.set_max_stun_retransmits(CONSENT_RETRANSMITS);
        let mut rtc = config.build(now);
        let candidates = LocalCandidates::new(&mut rtc, local)?;
        Ok(RtcPeer {
            rtc,
            candidates,
            timeout: now,
            connected: false,
            failed: false,
            watch: PathWatch::default(),
            media_via: None,
            connect_by: None,
            bridge: Vec::new(),
            pending: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Like [`RtcPeer::new`], with an active ICE-TCP candidate beside the UDP one: if the bridge
    /// announces TCP and UDP does not get through, media flows over a TCP stream to it
    /// ([`Transport::Tcp`] transmits; what arrives on it goes to [`RtcPeer::handle_tcp_frame`]).
    pub fn with_tcp(now: Instant, local: SocketAddr) -> Result<Self, MediaError> {
        let mut peer = Self::new(now, local)?;
        peer.candidates.add_tcp(&mut peer.rtc)?;
        Ok(peer)
    }

    /// The local address changed to `local` (a new UDP socket there): the old candidates are
    /// dropped and new ones (UDP, and TCP if it had one) added, ranked above them. Media moves to
    /// the new pairs once ICE has checked them; nothing is renegotiated.
    pub fn move_to(&mut self, now: Instant, local: SocketAddr) -> Result<(), MediaError> {
        self.candidates.move_to(&mut self.rtc, now, local)?;
        self.drain(now);
        Ok(())
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.candidates.udp()
    }

    /// Offers a TURN allocation's relayed address as a candidate (replacing any earlier one;
    /// `None` drops it). The bridge learns it from ICE's checks (as a peer-reflexive candidate):
    /// nothing is renegotiated.
    pub fn set_relay(
        &mut self,
        now: Instant,
        relayed: Option<SocketAddr>,
    ) -> Result<(), MediaError> {
        self.candidates.set_relay(&mut self.rtc, relayed)?;
        self.drain(now);
        Ok(())
    }

    /// A datagram `peer` sent to the relayed address `relayed` (unwrapped by the relay); `false`
    /// if it is not for this connection.
    pub fn handle_relayed(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        relayed: SocketAddr,
        contents: &[u8],
    ) -> bool {
        if self.candidates.relay() != Some(relayed) {
            return false;
        }
        self.receive(now, Protocol::Udp, peer, relayed, contents)
    }

    /// Whether media leaves straight over UDP (not a TCP stream, not a relay).
    pub fn sends_direct_udp(&self) -> bool {
        self.media_via == Some((Transport::Udp, false))
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the connection failed or was closed.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Whether an offer waits for its answer.
    pub fn has_pending_offer(&self) -> bool {
        self.pending.is_some()
    }

    /// A datagram from `source` arrived at `now`; `false` if it is not for this connection.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        let local = self.candidates.udp();
        self.receive(now, Protocol::Udp, source, local, contents)
    }

    /// A datagram arrived on the TCP stream from `source`; `false` if it is not for this
    /// connection (or it has no ICE-TCP candidate).
    pub fn handle_tcp_frame(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        match self.candidates.tcp() {
            Some(local) => self.receive(now, Protocol::Tcp, source, local, contents),
            None => false,
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> bool {
        let Ok(datagram) = contents.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents: datagram,
            },
        );
        if !self.rtc.accepts(&input) {
            return false;
        }
        if let Some(back) = self.watch.heard(now) {
            self.events.push_back(back);
        }
        if let Err(e) = self.rtc.handle_input(input) {
            self.fail(now, e);
        }
        self.drain(now);
        true
    }

    /// Time passed: timers run (retransmissions, RTCP, ICE, pacing).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.candidates.handle_timeout(&mut self.rtc, now);
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(now, e);
        }
        self.drain(now);
        if let Some(silence) = self.watch.check(now, self.connected && !self.failed) {
            self.events.push_back(silence);
        }
        if !self.connected
            && !self.failed
            && let Some(by) = self.connect_by.filter(|by| now >= *by)
        {
            self.connect_by = None;
            let waited = ICE_CONNECT_TIMEOUT + (now - by);
            tracing::warn!(bridge = ?self.bridge, "ICE did not connect within {waited:?}");
            self.events.push_back(PeerEvent::Unreachable {
                waited,
                bridge: self.bridge.clone(),
            });
            self.fail(now, "ICE never connected");
        }
    }

    /// When [`RtcPeer::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.timeout;
        if let Some(by) = self.connect_by.filter(|_| !self.connected) {
            at = at.min(by);
        }
        if let Some(retire) = self.candidates.next_timeout() {
            at = at.min(retire);
        }
        if let Some(silent) = self
            .watch
            .next_timeout()
            .filter(|_| self.connected && !self.failed)
        {
            at = at.min(silent);
        }
        at
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// The bitrate the bandwidth estimator should probe for (the sum of what video tracks could use).
    pub fn set_desired_bitrate(&mut self, bps: u64) {
        self.rtc.bwe().set_desired_bitrate(Bitrate::bps(bps));
    }

    /// Asks the sender of a receiving m-line for a keyframe (PLI).
    pub fn request_keyframe(&mut self, now: Instant, mid: MediaId) -> Result<(), MediaError> {
        let mut writer = self
            .rtc
            .writer(to_mid(mid))
            .ok_or(MediaError::State("no such m-line (yet)"))?;
        writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .map_err(rtc_error)?;
        self.drain(now);
        Ok(())
    }

    /// Adds sending and receiving m-lines of the given kinds and returns the offer with their mids
    /// (in the same order); also makes the m-lines `deactivate` inactive (a removed track: its m-line
    /// stays in the session but carries nothing). Media keeps flowing on the negotiated m-lines
    /// until the answer arrives.
    pub fn offer(
        &mut self,
        now: Instant,
        send: &[MediaKind],
        recv: &[MediaKind],
        deactivate: &[MediaId],
    ) -> Result<Offer, MediaError> {
        let mut api = self.rtc.sdp_api();
        for mid in deactivate {
            api.set_direction(to_mid(*mid), Direction::Inactive);
        }
        let send_mids: Vec<Mid> = send
            .iter()
            .map(|kind| api.add_media(*kind, Direction::SendOnly, None, None, None))
            .collect();
        let recv_mids: Vec<Mid> = recv
            .iter()
            .map(|kind| api.add_media(*kind, Direction::RecvOnly, None, None, None))
            .collect();
        let (offer, pending) = api.apply().ok_or(MediaError::State("nothing to offer"))?;
        self.pending = Some(pending);
        self.drain(now);
        // str0m makes its mids of letters and digits, which the protocol always carries.
        let ids = |mids: Vec<Mid>| -> Result<Vec<MediaId>, MediaError> {
            mids.into_iter()
                .map(|mid| {
                    to_media_id(mid).ok_or(MediaError::State("an m-line id too odd to send"))
                })
                .collect()
        };
        Ok(Offer {
            sdp: offer.to_sdp_string(),
            send_mids: ids(send_mids)?,
            recv_mids: ids(recv_mids)?,
        })
    }

    /// Applies the bridge's answer to the last offer.
    pub fn accept_answer(&mut self, now: Instant, answer: &str) -> Result<(), MediaError> {
        let pending = self
            .pending
            .take()
            .ok_or(MediaError::State("no offer is pending"))?;
        let parsed = SdpAnswer::from_sdp_string(answer).map_err(rtc_error)?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, parsed)
            .map_err(rtc_error)?;
        for addr in candidate_addresses(answer) {
            if !self.bridge.contains(&addr) {
                self.bridge.push(addr);
            }
        }
        if !self.connected && self.connect_by.is_none() {
            self.connect_by = Some(now + ICE_CONNECT_TIMEOUT);
        }
        self.drain(now);
        Ok(())
    }

    /// Forgets the pending offer (the bridge refused it or never answered): the session stays as
    /// the last answer left it, and the next offer starts from there.
    pub fn cancel_offer(&mut self) {
        self.pending = None;
    }

    /// Sends one protected audio frame on a sending m-line. `rtp_time` counts 48 kHz samples.
    pub fn write_audio(
        &mut self,
        now: Instant,
        mid: MediaId,
        rtp_time: u64,
        frame: &[u8],
    ) -> Result<(), MediaError> {
        let time = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
        self.write(now, mid, time, frame)
    }

    /// Sends one protected video frame (already wrapped for carriage) on a sending m-line.
    /// `rtp_time` is on the 90 kHz video clock.
    pub fn write_video(
        &mut self,
        now: Instant,
        mid: MediaId,
        rtp_time: u64,
        frame: &[u8],
    ) -> Result<(), MediaError> {
        let time = MediaTime::new(rtp_time, Frequency::NINETY_KHZ);
        self.write(now, mid, time, frame)
    }

    fn write(
        &mut self,
        now: Instant,
        mid: MediaId,
        time: MediaTime,
        frame: &[u8],
    ) -> Result<(), MediaError> {
        let writer = self
            .rtc
            .writer(to_mid(mid))
            .ok_or(MediaError::State("no such sending m-line (yet)"))?;
        let pt = writer
            .payload_params()
            .next()
            .map(|p| p.pt())
            .ok_or(MediaError::State("no codec negotiated"))?;
        writer
            .write(pt, now, time, frame.to_vec())
            .map_err(rtc_error)?;
        self.drain(now);
        // Let str0m's clock catch up so the frame leaves now rather than at its next timeout.
        self.handle_timeout(now);
        Ok(())
    }

    /// Closes the connection (what it still has to send is in [`RtcPeer::poll_transmit`]).
    pub fn close(&mut self, now: Instant) {
        self.rtc.disconnect();
        self.drain(now);
    }

    fn fail(&mut self, now: Instant, e: impl std::fmt::Display) {
        tracing::warn!("media session failed: {e}");
        if !self.failed {
            self.events.push_back(PeerEvent::Failed);
        }
        self.failed = true;
        self.connected = false;
        self.timeout = now + Duration::from_millis(50);
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // str0m sends only on the transports of its candidates (UDP, TCP).
                    if let Some(transport) = Transport::of(t.proto) {
                        let relayed = self.candidates.relay() == Some(t.source);
                        // STUN (RFC 7983: a first byte of 0 to 3) goes on every pair checked.
                        if t.contents.first().is_some_and(|b| *b > 3) {
                            self.media_via = Some((transport, relayed));
                        }
                        self.transmits.push_back(Transmit {
                            transport,
                            relayed,
                            destination: t.destination,
                            contents: t.contents.into(),
                        });
                    }
                }
                Ok(Output::Event(event)) => match event {
                    Event::Connected => {
                        self.connected = true;
                        self.connect_by = None;
                        self.events.push_back(PeerEvent::Connected);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.fail(now, "ICE disconnected");
                    }
                    Event::MediaData(data) => {
                        self.watch.media(now);
                        if let Some(mid) = to_media_id(data.mid) {
                            self.events.push_back(PeerEvent::Media(Received {
                                mid,
                                data: data.data.to_vec(),
                                arrived: data.network_time,
                            }));
                        }
                    }
                    Event::KeyframeRequest(request) => {
                        if let Some(mid) = to_media_id(request.mid) {
                            self.events.push_back(PeerEvent::KeyframeRequest(mid));
                        }
                    }
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                        self.events
                            .push_back(PeerEvent::Estimate(estimate.as_u64()));
                    }
                    _ => {}
                },
                Err(e) => {
                    self.fail(now, e);
                    return;
                }
            }
        }
    }
}
