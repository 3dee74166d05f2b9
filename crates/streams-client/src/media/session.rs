//! [`MediaSession`]: an [`RtcPeer`] on a UDP socket of its own, driven by whoever owns it with
//! blocking waits ([`MediaSession::run_until`]): the simple form for tools, tests and benchmarks that
//! drive one connection on one thread, over UDP only. The room media engine drives an [`RtcPeer`] through its own
//! sans-IO core instead (see [`crate::media::driver`]).
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub use crate::media::rtc::{MediaError, MediaKind, Received, START_ESTIMATE_KBPS};
use crate::media::rtc::{PeerEvent, RtcPeer};
use streams_proto::MediaId;
use streams_rtc::socket::{MediaSocket, Outbox, ReceiveBatch};

/// One peer connection with the SFU on its own socket.
pub struct MediaSession {
    peer: RtcPeer,
    socket: MediaSocket,
    received: Vec<Received>,
    keyframe_requests: Vec<MediaId>,
    bitrate_estimate: Option<u64>,
    batch: ReceiveBatch,
    outbox: Outbox,
}

impl MediaSession {
    /// Binds a UDP socket on `ip` (an ephemeral port) and prepares the connection.
    pub fn bind(ip: IpAddr) -> Result<Self, MediaError> {
        let socket = MediaSocket::bind(SocketAddr::new(ip, 0))?;
        let local = socket.local_addr()?;
        Ok(MediaSession {
            peer: RtcPeer::new(Instant::now(), local)?,
            batch: ReceiveBatch::new(&socket, 16),
            socket,
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            bitrate_estimate: None,
            outbox: Outbox::default(),
        })
    }

    /// The sending m-lines whose subscribers asked for a keyframe since the last call.
    pub fn take_keyframe_requests(&mut self) -> Vec<MediaId> {
        std::mem::take(&mut self.keyframe_requests)
    }

    /// The latest bandwidth estimate (bits/s) since the last call, if there is a new one.
    pub fn take_bitrate_estimate(&mut self) -> Option<u64> {
        self.bitrate_estimate.take()
    }

    /// The bitrate the bandwidth estimator should probe for (the sum of what video tracks could use).
    pub fn set_desired_bitrate(&mut self, bps: u64) {
        self.peer.set_desired_bitrate(bps);
    }

    /// Asks the sender of a receiving m-line for a keyframe (PLI).
    pub fn request_keyframe(&mut self, mid: MediaId) -> Result<(), MediaError> {
        self.peer.request_keyframe(Instant::now(), mid)?;
        self.flush();
        Ok(())
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.peer.local_addr()
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.peer.is_connected()
    }

    /// Whether the connection failed or was closed.
    pub fn has_failed(&self) -> bool {
        self.peer.has_failed()
    }

    /// See [`RtcPeer::offer`]: the offer and the mids of the new sending and receiving m-lines.
    pub fn offer(
        &mut self,
        send: &[MediaKind],
        recv: &[MediaKind],
        deactivate: &[MediaId],
    ) -> Result<(String, Vec<MediaId>, Vec<MediaId>), MediaError> {
        let offer = self.peer.offer(Instant::now(), send, recv, deactivate)?;
        self.flush();
        Ok((offer.sdp, offer.send_mids, offer.recv_mids))
    }

    /// Applies the bridge's answer to the last offer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), MediaError> {
        self.peer.accept_answer(Instant::now(), answer)?;
        self.flush();
        Ok(())
    }

    /// Sends one protected audio frame on a sending m-line. `rtp_time` counts 48 kHz samples.
    pub fn write_audio(
        &mut self,
        mid: MediaId,
        now: Instant,
        rtp_time: u64,
        frame: &[u8],
    ) -> Result<(), MediaError> {
        self.peer.write_audio(now, mid, rtp_time, frame)?;
        self.flush();
        Ok(())
    }

    /// Sends one protected video frame (already wrapped for carriage) on a sending m-line.
    /// `rtp_time` is on the 90 kHz video clock.
    pub fn write_video(
        &mut self,
        mid: MediaId,
        now: Instant,
        rtp_time: u64,
        frame: &[u8],
    ) -> Result<(), MediaError> {
        self.peer.write_video(now, mid, rtp_time, frame)?;
        self.flush();
        Ok(())
    }

    /// Runs the connection until `until`, returning the frames received meanwhile.
    pub fn run_until(&mut self, until: Instant) -> Result<Vec<Received>, MediaError> {
        let mut all = Vec::new();
        loop {
            let mut got = self.run_until_media(until)?;
            all.append(&mut got);
            if Instant::now() >= until || self.peer.has_failed() {
                return Ok(all);
            }
        }
    }

    /// Runs the connection until `until` or until media arrives, whichever is first, returning the
    /// frames received (so a receiver can buffer each frame the moment it arrives).
    pub fn run_until_media(&mut self, until: Instant) -> Result<Vec<Received>, MediaError> {
        loop {
            let now = Instant::now();
            if self.peer.poll_timeout() <= now {
                self.peer.handle_timeout(now);
                self.flush();
            }
            if now >= until || self.peer.has_failed() || !self.received.is_empty() {
                return Ok(std::mem::take(&mut self.received));
            }
            let deadline = self.peer.poll_timeout().min(until);
            self.socket.wait(deadline)?;
            while self.socket.try_recv_batch(&mut self.batch)? > 0 {
                let now = Instant::now();
                for datagram in self.batch.datagrams() {
                    self.peer
                        .handle_datagram(now, datagram.source, datagram.contents);
                }
                self.flush();
            }
        }
    }

    /// Closes the connection.
    pub fn close(&mut self) {
        self.peer.close(Instant::now());
        self.flush();
    }

    /// Sends what the connection has to send and takes in what it reported.
    fn flush(&mut self) {
        while let Some(t) = self.peer.poll_transmit() {
            self.outbox
                .push(&self.socket, None, t.destination, &t.contents);
        }
        self.outbox.flush(&self.socket);
        while let Some(event) = self.peer.poll_event() {
            match event {
                PeerEvent::Media(received) => self.received.push(received),
                PeerEvent::KeyframeRequest(mid) => self.keyframe_requests.push(mid),
                PeerEvent::Estimate(bps) => self.bitrate_estimate = Some(bps),
                PeerEvent::Connected
                | PeerEvent::Failed
                | PeerEvent::Unreachable { .. }
                | PeerEvent::PathLost
                | PeerEvent::PathBack { .. }
                | PeerEvent::MediaSilent => {}
            }
        }
    }
}
