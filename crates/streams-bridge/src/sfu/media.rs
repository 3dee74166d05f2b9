//! The media path of [`SfuCore`]: datagrams in, timers, what each session says (datagrams out,
//! RTP packets to forward, keyframe requests), and forwarding a packet along its track's legs.
//! Sessions run in str0m's RTP mode: a publisher's packets are written, renumbered, on each
//! subscriber's stream as they are, never depacketized and packetized again per leg.
use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::media::{KeyframeRequestKind, Mid};
use str0m::net::Receive;
use str0m::rtp::RtpPacket;
use str0m::{Event, IceConnectionState, Input, Output};
use streams_proto::TrackId;
use streams_proto::wire::TrackKind;
use streams_rtc::socket::Transport;

use super::KEYFRAME_REQUEST_GAP;
use super::core::{RecordedFrame, SfuCore, Transmit};
use super::outgoing::Forwarded;
use super::renumber::SourcePosition;
use super::session::SessionKey;

/// Whether a datagram is STUN (RFC 7983: its first byte is 0 to 3). Only STUN, which carries the
/// session's ICE credentials, may introduce a new remote address.
fn is_stun(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| *b < 4)
}

/// The type of the first NAL unit of an Annex-B frame (the carriage's clear keyframe hint).
fn nal_type(frame: &[u8]) -> Option<u8> {
    let zeros = frame.iter().take_while(|b| **b == 0).count();
    (zeros >= 2 && frame.get(zeros) == Some(&1))
        .then(|| frame.get(zeros + 1).map(|b| b & 0x1F))
        .flatten()
}

impl SfuCore {
    /// A datagram from `source` that arrived at the local IP `local` (where the socket says). It
    /// goes to the session that address belongs to; a STUN request from a new address goes to the
    /// session whose ufrag it names (one lookup), if that session accepts it. Anything else is
    /// dropped.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
    ) {
        let destination = self.addresses.announced_for(local, source);
        self.receive(now, Transport::Udp, source, destination, local, datagram);
    }

    /// A datagram that arrived on a TCP stream (ICE-TCP) from `source` at the local address
    /// `local`; like [`SfuCore::handle_datagram`]. Dropped if this core announces no TCP address.
    pub fn handle_tcp_frame(
        &mut self,
        now: Instant,
        source: SocketAddr,
        local: SocketAddr,
        datagram: &[u8],
    ) {
        let Some(tcp) = &self.tcp_addresses else {
            return;
        };
        let destination = tcp.announced_for(Some(local.ip()), source);
        self.receive(now, Transport::Tcp, source, destination, None, datagram);
    }

    /// A datagram from `source` to the announced `destination` (for UDP, at the local IP
    /// `local`) into the session it belongs to.
    fn receive(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
    ) {
        self.last_now = now;
        let Ok(contents) = datagram.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: transport.protocol(),
                source,
                destination,
                contents,
            },
        );
        let known = self.by_source.get(&(transport, source)).copied();
        let key = if !is_stun(datagram) {
            known
        } else {
            known
                .filter(|key| {
                    self.sessions
                        .get(*key)
                        .is_some_and(|s| s.rtc.accepts(&input))
                })
                .or_else(|| {
                    let key = super::stun::local_ufrag(datagram)
                        .and_then(|ufrag| self.by_ufrag.get(ufrag))
                        .copied()
                        .filter(|key| {
                            self.sessions
                                .get(*key)
                                .is_some_and(|s| s.rtc.accepts(&input))
                        })?;
                    self.by_source.insert((transport, source), key);
                    Some(key)
                })
        };
        let Some(key) = key else {
            return;
        };
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if local.is_some() {
            session.local_ip = local;
        }
        if let Err(e) = session.rtc.handle_input(input) {
            tracing::debug!(session = %session.id, "bad input: {e}");
        }
        self.drain(key);
    }

    /// Runs the timers that are due and packetizes what was forwarded since the last call (for
    /// [`SfuCore::poll_transmit`]); removes the sessions that ended (their published streams are
    /// handed out by [`SfuCore::poll_lost`]). Only the sessions whose deadline has come are
    /// touched, taken from the timer queue.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        let mut due = std::mem::take(&mut self.scratch_due);
        while self
            .timers
            .peek()
            .is_some_and(|(_, Reverse(at))| *at <= now)
        {
            if let Some((key, _)) = self.timers.pop() {
                due.push(key);
            }
        }
        for key in due.drain(..) {
            self.advance(key, now);
        }
        // Forwarding while draining may write to more sessions.
        while let Some(key) = self.dirty.pop() {
            self.advance(key, now);
        }
        for key in std::mem::take(&mut self.ended) {
            if let Some(session) = self.sessions.get(key)
                && !session.published.is_empty()
            {
                self.lost.push_back((session.room.clone(), session.id));
            }
            self.remove_session(key);
        }
        self.scratch_due = due;
    }

    /// When [`SfuCore::handle_timeout`] is next needed (`None`: no session, nothing to do).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.dirty.is_empty() || !self.ended.is_empty() {
            return Some(self.last_now);
        }
        self.timers.peek().map(|(_, Reverse(at))| *at)
    }

    fn advance(&mut self, key: SessionKey, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.dirty = false;
        if let Err(e) = session.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(session = %session.id, "timeout: {e}");
        }
        self.drain(key);
    }

    /// Polls session `key` until it has nothing more to say; forwards the media it received and
    /// passes on its keyframe requests.
    pub(super) fn drain(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let mut media = std::mem::take(&mut self.scratch_media);
        let mut keyframes = std::mem::take(&mut self.scratch_keyframes);
        let due = loop {
            match session.rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    // str0m sends only on the transports its candidates have (UDP, TCP).
                    if let Some(transport) = Transport::of(t.proto) {
                        self.transmits.push_back(Transmit {
                            transport,
                            source: session.local_ip.filter(|_| self.addresses.is_wildcard()),
                            destination: t.destination,
                            contents: t.contents.into(),
                        });
                    }
                }
                Ok(Output::Event(Event::RtpPacket(packet))) => media.push(packet),
                Ok(Output::Event(Event::KeyframeRequest(request))) => {
                    keyframes.push((request.mid, request.kind));
                }
                Ok(Output::Event(Event::IceConnectionStateChange(state))) => {
                    tracing::debug!(session = %session.id, ?state, "ICE state");
                    if state == IceConnectionState::Disconnected {
                        // The peer is gone: the session ends (removed at the next timeout).
                        session.rtc.disconnect();
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    tracing::warn!(session = %session.id, "media session failed: {e}");
                    session.rtc.disconnect();
                    break self.last_now;
                }
            }
        };
        if !session.rtc.is_alive() {
            self.ended.push(key);
        }
        self.timers.push(key, Reverse(due));
        for packet in media.drain(..) {
            self.forward(key, packet);
        }
        for (mid, kind) in keyframes.drain(..) {
            self.request_keyframe(key, mid, kind);
        }
        self.scratch_media = media;
        self.scratch_keyframes = keyframes;
    }

    /// Writes a packet published by session `from` on every leg of its track.
    fn forward(&mut self, from: SessionKey, packet: RtpPacket) {
        let Some(publisher) = self.sessions.get_mut(from) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let Some(mid) = publisher
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .and_then(|s| streams_rtc::mid::to_media_id(s.mid()))
        else {
            return;
        };
        // Only what the publisher announces is forwarded (an unpublished m-line may still send).
        let Some(kind) = publisher.publication(mid).map(|p| p.kind) else {
            return;
        };
        let pt = packet.header.payload_type;
        let Some(codec) = publisher
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.pt() == pt)
            .map(|p| p.spec().codec)
        else {
            return;
        };
        let track = TrackId::new(publisher.id, mid);
        // A frame starts after a packet that ended one (the RTP marker), or with the track.
        let starts_frame = kind == TrackKind::Audio
            || self
                .frame_ended
                .insert(track, packet.header.marker)
                .unwrap_or(true);
        let forwarded = Forwarded {
            position: SourcePosition {
                track,
                ssrc,
                seq: packet.seq_no,
                time: packet.header.timestamp,
                clock_rate: packet.time.frequency().get(),
                arrived: packet.timestamp,
            },
            codec,
            marker: packet.header.marker,
            nackable: kind != TrackKind::Audio,
            starts_frame,
            payload: packet.payload,
        };
        if self.recorded_rooms.contains(&publisher.room) {
            let (room, user) = (publisher.room.clone(), publisher.user.clone());
            self.record(room, user, kind, &forwarded, packet.time.numer());
        }
        for leg in self.routes.legs(&track) {
            let Some(subscriber) = self.sessions.get_mut(leg.session) else {
                continue;
            };
            let outgoing = subscriber.sending.entry(leg.mid).or_default();
            if let Err(e) = outgoing.send(&mut subscriber.rtc, leg.mid, &forwarded) {
                tracing::trace!(%track, "not forwarded: {e}");
                continue;
            }
            // Sent at the next timeout (at the latest once the datagrams read in this batch are
            // handled), not at the subscriber's next timer.
            if !subscriber.dirty {
                subscriber.dirty = true;
                self.dirty.push(leg.session);
            }
        }
    }

    /// Hands a forwarded packet of a recorded room to the recording, as a frame: an Opus packet
    /// is one, video packets are put back together first.
    fn record(
        &mut self,
        room: streams_proto::RoomId,
        user: streams_proto::UserId,
        kind: TrackKind,
        packet: &Forwarded,
        rtp_time: u64,
    ) {
        let track = packet.position.track;
        let (codec, payload) = match packet.codec {
            str0m::format::Codec::Opus => ("opus", packet.payload.to_vec()),
            str0m::format::Codec::H264 => {
                let frames = self.reassembly.entry(track).or_default();
                let Some(frame) = frames.push(
                    *packet.position.seq,
                    packet.position.time,
                    packet.marker,
                    &packet.payload,
                ) else {
                    return;
                };
                ("h264", frame)
            }
            _ => return,
        };
        self.recorded.push_back(RecordedFrame {
            room,
            track,
            user,
            kind,
            codec,
            arrived: packet.position.arrived,
            rtp_time,
            keyframe: kind != TrackKind::Audio && nal_type(&payload) == Some(5),
            payload,
        });
    }

    /// Passes a subscriber's keyframe request on to the publisher of the track it receives on
    /// `mid`, at most once per [`KEYFRAME_REQUEST_GAP`] per track.
    fn request_keyframe(&mut self, subscriber: SessionKey, mid: Mid, kind: KeyframeRequestKind) {
        let Some(track) = self
            .sessions
            .get(subscriber)
            .and_then(|s| s.subscribed.get(&mid))
            .copied()
        else {
            return;
        };
        let now = self.last_now;
        if self
            .last_keyframe_request
            .get(&track)
            .is_some_and(|last| now.saturating_duration_since(*last) < KEYFRAME_REQUEST_GAP)
        {
            return;
        }
        let Some(&publisher_key) = self.by_stream.get(&track.stream) else {
            return;
        };
        let Some(publisher) = self.sessions.get_mut(publisher_key) else {
            return;
        };
        let mid = streams_rtc::mid::to_mid(track.mid);
        match publisher.rtc.direct_api().stream_rx_by_mid(mid, None) {
            Some(stream) => {
                stream.request_keyframe(kind);
                self.last_keyframe_request.insert(track, now);
                self.keyframe_requests += 1;
                tracing::info!(%track, ?kind, "keyframe request passed on to the publisher");
                // Sent at the next timeout with whatever else the publisher has to say.
                if !publisher.dirty {
                    publisher.dirty = true;
                    self.dirty.push(publisher_key);
                }
            }
            None => tracing::debug!(%track, "keyframe request: the publisher sends nothing yet"),
        }
    }
}
