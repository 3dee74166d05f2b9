//! [`MediaSession`]: one WebRTC peer connection (str0m) between this client and the bridge's SFU for
//! one room, on its own UDP socket, driven by whoever owns it (no threads inside). The client always
//! offers; every change (publish, subscribe) is a fresh offer of the whole session. Opus and H.264 are
//! negotiated, and no audio-level header extension (it would tell the bridge who speaks). Sending
//! video turns on str0m's bandwidth estimation (TWCC); its estimates and the keyframe requests of
//! subscribers are handed to the owner. Another thread may wake a waiting session with a
//! [`SessionWaker`] (a frame is ready to send).
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpPendingOffer};
pub use str0m::media::MediaKind;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Extension;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

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
}

fn rtc_error(e: impl std::fmt::Display) -> MediaError {
    MediaError::Rtc(e.to_string())
}

/// Receive buffer asked of the kernel for a media socket (Linux caps it at `net.core.rmem_max`).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Asks for a receive buffer that holds a burst of video packets (a 720p keyframe is ~100 packets);
/// the kernel's default (about 200 KB) drops such bursts when the reader is busy for a moment.
pub fn enlarge_receive_buffer(socket: &UdpSocket) {
    if let Err(e) = socket2::SockRef::from(socket).set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::debug!("could not enlarge the UDP receive buffer: {e}");
    }
}

/// Where the bandwidth estimate starts, kbit/s.
pub const START_ESTIMATE_KBPS: u64 = 800;

/// A media frame received on one of this session's receiving m-lines.
#[derive(Clone, Debug)]
pub struct Received {
    /// The m-line it arrived on.
    pub mid: String,
    /// The (still SFrame-protected) frame.
    pub data: Vec<u8>,
    /// When its last packet arrived.
    pub arrived: Instant,
}

/// One peer connection with the SFU.
pub struct MediaSession {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    timeout: Instant,
    connected: bool,
    failed: bool,
    pending: Option<SdpPendingOffer>,
    received: Vec<Received>,
    keyframe_requests: Vec<String>,
    bitrate_estimate: Option<u64>,
    woken: bool,
    waker: UdpSocket,
    buf: Vec<u8>,
}

/// The first bytes of a wake-up datagram (never valid STUN, DTLS or RTP).
const WAKE: &[u8] = b"streams-wake";

/// Wakes a [`MediaSession`] waiting in [`MediaSession::run_until_media`] from another thread.
pub struct SessionWaker {
    socket: UdpSocket,
    target: SocketAddr,
}

impl SessionWaker {
    /// Makes the session's wait return now.
    pub fn wake(&self) {
        let _ = self.socket.send_to(WAKE, self.target);
    }
}

impl MediaSession {
    /// Binds a UDP socket on `ip` (an ephemeral port) and prepares the connection.
    pub fn bind(ip: IpAddr) -> Result<Self, MediaError> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        enlarge_receive_buffer(&socket);
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(true)
            .enable_bwe(Some(Bitrate::kbps(START_ESTIMATE_KBPS)))
            .clear_extension_map()
            .set_extension(3, Extension::TransportSequenceNumber)
            .set_extension(4, Extension::RtpMid)
            .build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(rtc_error)?);
        let waker = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        Ok(MediaSession {
            rtc,
            socket,
            local,
            timeout: now,
            connected: false,
            failed: false,
            pending: None,
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            bitrate_estimate: None,
            woken: false,
            waker,
            buf: vec![0; 2000],
        })
    }

    /// A waker for this session, for another thread.
    pub fn waker(&self) -> Result<SessionWaker, MediaError> {
        Ok(SessionWaker {
            socket: self.waker.try_clone()?,
            target: self.local,
        })
    }

    /// The sending m-lines whose subscribers asked for a keyframe since the last call.
    pub fn take_keyframe_requests(&mut self) -> Vec<String> {
        std::mem::take(&mut self.keyframe_requests)
    }

    /// The latest bandwidth estimate (bits/s) since the last call, if there is a new one.
    pub fn take_bitrate_estimate(&mut self) -> Option<u64> {
        self.bitrate_estimate.take()
    }

    /// The bitrate the bandwidth estimator should probe for (the sum of what video tracks could use).
    pub fn set_desired_bitrate(&mut self, bps: u64) {
        self.rtc.bwe().set_desired_bitrate(Bitrate::bps(bps));
    }

    /// Asks the sender of a receiving m-line for a keyframe (PLI).
    pub fn request_keyframe(&mut self, mid: &str) -> Result<(), MediaError> {
        let mut writer = self
            .rtc
            .writer(Mid::from(mid))
            .ok_or(MediaError::State("no such m-line (yet)"))?;
        writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .map_err(rtc_error)?;
        self.drain();
        Ok(())
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the connection failed or was closed.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Adds sending and receiving m-lines of the given kinds and returns the offer with their mids
    /// (in the same order); also makes the m-lines `deactivate` inactive (a removed track: its m-line
    /// stays in the session but carries nothing).
    pub fn offer(
        &mut self,
        send: &[MediaKind],
        recv: &[MediaKind],
        deactivate: &[String],
    ) -> Result<(String, Vec<String>, Vec<String>), MediaError> {
        let mut api = self.rtc.sdp_api();
        for mid in deactivate {
            api.set_direction(Mid::from(mid.as_str()), Direction::Inactive);
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
        self.drain();
        Ok((
            offer.to_sdp_string(),
            send_mids.iter().map(ToString::to_string).collect(),
            recv_mids.iter().map(ToString::to_string).collect(),
        ))
    }

    /// Applies the bridge's answer to the last offer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), MediaError> {
        let pending = self
            .pending
            .take()
            .ok_or(MediaError::State("no offer is pending"))?;
        let answer = SdpAnswer::from_sdp_string(answer).map_err(rtc_error)?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(rtc_error)?;
        self.drain();
        Ok(())
    }

    /// Sends one protected audio frame on a sending m-line. `rtp_time` counts 48 kHz samples.
    pub fn write_audio(
        &mut self,
        mid: &str,
        wallclock: Instant,
        rtp_time: u64,
        frame: &[u8],
    ) -> Result<(), MediaError> {
        self.write(
            mid,
            wallclock,
            MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ),
            frame,
        )
    }

    /// Sends one protected video frame (already wrapped for carriage) on a sending m-line.
    /// `rtp_time` is on the 90 kHz video clock.
    pub fn write_video(
        &mut self,
        mid: &str,
        wallclock: Instant,
        rtp_time: u64,
        frame: &[u8],
    ) -> Result<(), MediaError> {
        self.write(
            mid,
            wallclock,
            MediaTime::new(rtp_time, Frequency::NINETY_KHZ),
            frame,
        )
    }

    fn write(
        &mut self,
        mid: &str,
        wallclock: Instant,
        time: MediaTime,
        frame: &[u8],
    ) -> Result<(), MediaError> {
        let writer = self
            .rtc
            .writer(Mid::from(mid))
            .ok_or(MediaError::State("no such sending m-line (yet)"))?;
        let pt = writer
            .payload_params()
            .next()
            .map(|p| p.pt())
            .ok_or(MediaError::State("no codec negotiated"))?;
        writer
            .write(pt, wallclock, time, frame.to_vec())
            .map_err(rtc_error)?;
        self.drain();
        // Let str0m's clock catch up so the frame leaves now rather than at its next timeout.
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .map_err(rtc_error)?;
        self.drain();
        Ok(())
    }

    /// Runs the connection until `until`, returning the frames received meanwhile.
    pub fn run_until(&mut self, until: Instant) -> Result<Vec<Received>, MediaError> {
        let mut all = Vec::new();
        loop {
            let mut got = self.run_until_media(until)?;
            all.append(&mut got);
            if Instant::now() >= until || self.failed {
                return Ok(all);
            }
        }
    }

    /// Runs the connection until `until`, until media arrives or until a [`SessionWaker`] wakes it,
    /// whichever is first, returning the frames received (so a receiver can buffer each frame the
    /// moment it arrives).
    pub fn run_until_media(&mut self, until: Instant) -> Result<Vec<Received>, MediaError> {
        loop {
            let now = Instant::now();
            if self.timeout <= now {
                self.rtc
                    .handle_input(Input::Timeout(now))
                    .map_err(rtc_error)?;
                self.drain();
            }
            if now >= until || self.failed || !self.received.is_empty() || self.woken {
                self.woken = false;
                return Ok(std::mem::take(&mut self.received));
            }
            let wait = self
                .timeout
                .min(until)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(wait))?;
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, source)) => {
                    if self.buf[..n] == *WAKE && source.ip() == self.local.ip() {
                        self.woken = true;
                        continue;
                    }
                    let Ok(contents) = self.buf[..n].try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents,
                        },
                    );
                    if self.rtc.accepts(&input) {
                        self.rtc.handle_input(input).map_err(rtc_error)?;
                        self.drain();
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Closes the connection.
    pub fn close(&mut self) {
        self.rtc.disconnect();
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => match event {
                    Event::Connected => self.connected = true,
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.connected = false;
                        self.failed = true;
                    }
                    Event::MediaData(data) => self.received.push(Received {
                        mid: data.mid.to_string(),
                        data: data.data.to_vec(),
                        arrived: data.network_time,
                    }),
                    Event::KeyframeRequest(request) => {
                        self.keyframe_requests.push(request.mid.to_string());
                    }
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                        self.bitrate_estimate = Some(estimate.as_u64());
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::warn!("media session failed: {e}");
                    self.failed = true;
                    self.timeout = Instant::now() + Duration::from_millis(50);
                    return;
                }
            }
        }
    }
}
