//! [`MediaSession`]: one WebRTC peer connection (str0m) between this client and the bridge's SFU for
//! one room, on its own UDP socket, driven by whoever owns it (no threads inside). The client always
//! offers; every change (publish, subscribe) is a fresh offer of the whole session. Only Opus is
//! negotiated, and no audio-level header extension (it would tell the bridge who speaks).
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
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
    buf: Vec<u8>,
}

impl MediaSession {
    /// Binds a UDP socket on `ip` (an ephemeral port) and prepares the connection.
    pub fn bind(ip: IpAddr) -> Result<Self, MediaError> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .clear_extension_map()
            .set_extension(3, Extension::TransportSequenceNumber)
            .set_extension(4, Extension::RtpMid)
            .build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(rtc_error)?);
        Ok(MediaSession {
            rtc,
            socket,
            local,
            timeout: now,
            connected: false,
            failed: false,
            pending: None,
            received: Vec::new(),
            buf: vec![0; 2000],
        })
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

    /// Adds `send` sending and `recv` receiving audio m-lines and returns the offer with their mids.
    pub fn offer(
        &mut self,
        send: usize,
        recv: usize,
    ) -> Result<(String, Vec<String>, Vec<String>), MediaError> {
        self.offer_changes(send, recv, &[])
    }

    /// Like [`MediaSession::offer`], and also makes the m-lines `deactivate` inactive (a removed
    /// track: its m-line stays in the session but carries nothing).
    pub fn offer_changes(
        &mut self,
        send: usize,
        recv: usize,
        deactivate: &[String],
    ) -> Result<(String, Vec<String>, Vec<String>), MediaError> {
        let mut api = self.rtc.sdp_api();
        for mid in deactivate {
            api.set_direction(Mid::from(mid.as_str()), Direction::Inactive);
        }
        let send_mids: Vec<Mid> = (0..send)
            .map(|_| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
            .collect();
        let recv_mids: Vec<Mid> = (0..recv)
            .map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
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
            .write(
                pt,
                wallclock,
                MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ),
                frame.to_vec(),
            )
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

    /// Runs the connection until `until` or until media arrives, whichever is first, returning the
    /// frames received (so a receiver can buffer each frame the moment it arrives).
    pub fn run_until_media(&mut self, until: Instant) -> Result<Vec<Received>, MediaError> {
        loop {
            let now = Instant::now();
            if self.timeout <= now {
                self.rtc
                    .handle_input(Input::Timeout(now))
                    .map_err(rtc_error)?;
                self.drain();
            }
            if now >= until || self.failed || !self.received.is_empty() {
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
