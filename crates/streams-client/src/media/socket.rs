//! The UDP side shared by the room media driver and the blocking [`crate::media::session`]: which
//! local address faces the bridge, a receive buffer big enough for video bursts, and a waker that
//! makes a thread blocked on the socket return.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use crate::media::rtc::MediaError;

/// Receive buffer asked of the kernel for a media socket (Linux caps it at `net.core.rmem_max`).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Asks for a receive buffer that holds a burst of video packets (a 720p keyframe is ~100 packets);
/// the kernel's default (about 200 KB) drops such bursts when the reader is busy for a moment.
pub fn enlarge_receive_buffer(socket: &UdpSocket) {
    if let Err(e) = socket2::SockRef::from(socket).set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::debug!("could not enlarge the UDP receive buffer: {e}");
    }
}

/// The first bytes of a wake-up datagram (never valid STUN, DTLS or RTP).
pub const WAKE: &[u8] = b"streams-wake";

/// Wakes a thread waiting on a media socket (a [`crate::media::session::MediaSession`] or the room media driver) from another thread.
#[derive(Debug)]
pub struct SocketWaker {
    socket: UdpSocket,
    target: SocketAddr,
}

impl SocketWaker {
    /// A waker of whoever reads the socket bound at `target`.
    pub fn new(target: SocketAddr) -> Result<Self, MediaError> {
        let socket = UdpSocket::bind(SocketAddr::new(target.ip(), 0))?;
        Ok(SocketWaker { socket, target })
    }

    /// Makes the wait return now.
    pub fn wake(&self) {
        let _ = self.socket.send_to(WAKE, self.target);
    }

    /// Another waker of the same socket.
    pub fn try_clone(&self) -> Result<Self, MediaError> {
        Ok(SocketWaker {
            socket: self.socket.try_clone()?,
            target: self.target,
        })
    }

    /// Whether a datagram from `source` with `contents` is a wake-up for the socket at `local`.
    pub fn is_wake(local: SocketAddr, source: SocketAddr, contents: &[u8]) -> bool {
        contents == WAKE && source.ip() == local.ip()
    }
}

/// The local address to use for media towards `bridge_url`'s host (the route's source address).
pub fn local_ip_towards(bridge_url: &str) -> IpAddr {
    let host = bridge_url
        .split("://")
        .nth(1)
        .unwrap_or(bridge_url)
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:7800");
    let probe = UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect(host)?;
        s.local_addr()
    });
    match probe {
        Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => IpAddr::V4(*a.ip()),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}
