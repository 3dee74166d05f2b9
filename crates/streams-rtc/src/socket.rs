//! [`MediaSocket`]: the UDP socket of a media connection, waited on with precise deadlines. The
//! client's media drivers and the bridge's SFU share it: a receive buffer big enough for video
//! bursts, non-blocking reads and sends of many datagrams per system call ([`batch`]), and a
//! [`SocketWaker`] that makes a wait return from another thread. [`TcpMedia`] waits on the same
//! poller, for media over TCP.
//!
//! Waiting uses the `polling` crate (epoll with a timerfd on Linux, kqueue, IOCP), not the
//! socket's read timeout: Linux rounds `SO_RCVTIMEO` up to the scheduler's tick, so a 1 ms wait
//! took 6–8 ms, and str0m's pacer, which releases one packet per timeout, sent one packet per
//! wait — a 720p frame took longer to leave than the next one to arrive.
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use polling::{Event, Events, Poller};

pub mod batch;
pub mod framing;
pub mod tcp;

pub use self::batch::{Outbox, ReceiveBatch, Received, Sent};
pub use self::tcp::{Framing, TcpFrame, TcpMedia, TcpStats};

/// What a media datagram travels on: UDP, or a TCP stream ([`TcpMedia`], ICE-TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A frame on a TCP stream.
    Tcp,
}

impl Transport {
    /// The transport of str0m's protocol (`None`: one media never uses, TLS or SSL-TCP).
    pub fn of(protocol: str0m::net::Protocol) -> Option<Self> {
        match protocol {
            str0m::net::Protocol::Udp => Some(Transport::Udp),
            str0m::net::Protocol::Tcp => Some(Transport::Tcp),
            _ => None,
        }
    }

    /// As str0m names it.
    pub fn protocol(self) -> str0m::net::Protocol {
        match self {
            Transport::Udp => str0m::net::Protocol::Udp,
            Transport::Tcp => str0m::net::Protocol::Tcp,
        }
    }
}

/// Receive buffer asked of the kernel for a media socket (Linux caps it at `net.core.rmem_max`).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// The poller's key for the socket (the only source registered).
const SOCKET_KEY: usize = 0;

/// A non-blocking UDP socket and the poller that waits on it.
pub struct MediaSocket {
    socket: UdpSocket,
    /// What quinn-udp found the platform can do (batches, coalescing) and set on the socket.
    state: quinn_udp::UdpSocketState,
    /// An IPv6 (dual-stack) socket: IPv4 destinations are sent to v4-mapped.
    ipv6: bool,
    poller: Arc<Poller>,
    events: Events,
}

impl MediaSocket {
    /// Binds `addr` (port 0 for an ephemeral one) with a receive buffer of [`RECEIVE_BUFFER`].
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::bind_with(addr, &SocketWaker::new()?, RECEIVE_BUFFER)
    }

    /// Like [`MediaSocket::bind`], woken by `waker` (made before the socket, e.g. on another
    /// thread), asking for a receive buffer of `receive_buffer` bytes (more than
    /// [`RECEIVE_BUFFER`] for a socket many connections share).
    pub fn bind_with(
        addr: SocketAddr,
        waker: &SocketWaker,
        receive_buffer: usize,
    ) -> io::Result<Self> {
        let socket = bind_udp(addr)?;
        enlarge_receive_buffer(&socket, receive_buffer);
        socket.set_nonblocking(true)?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let poller = Arc::clone(&waker.poller);
        // SAFETY: the socket is removed from the poller before it is closed (`Drop` below), and
        // it is never closed otherwise: `MediaSocket` owns it and hands out no ownership.
        unsafe { poller.add(&socket, Event::readable(SOCKET_KEY))? };
        Ok(MediaSocket {
            socket,
            state,
            ipv6: addr.is_ipv6(),
            poller,
            events: Events::new(),
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// `destination` as this socket sends to it.
    fn wire_destination(&self, destination: SocketAddr) -> SocketAddr {
        if self.ipv6 {
            on_ipv6_socket(destination)
        } else {
            destination
        }
    }

    /// Waits until a datagram can be read, a [`SocketWaker`] wakes the socket or `deadline`
    /// passes, whichever is first (at once if `deadline` has passed).
    pub fn wait(&mut self, deadline: Instant) -> io::Result<()> {
        self.events.clear();
        if deadline <= Instant::now() {
            return Ok(());
        }
        self.poller.wait_deadline(&mut self.events, deadline)?;
        if self.events.iter().any(|e| e.key == SOCKET_KEY) {
            // Interest is one-shot (the portable mode): ask for the next readiness again.
            self.poller
                .modify(&self.socket, Event::readable(SOCKET_KEY))?;
        }
        Ok(())
    }
}

impl MediaSocket {
    /// The other sources on this socket's poller (a [`TcpMedia`]'s streams) that the last
    /// [`MediaSocket::wait`] found ready, by key.
    pub fn ready(&self) -> impl Iterator<Item = usize> + '_ {
        self.events
            .iter()
            .map(|e| e.key)
            .filter(|key| *key != SOCKET_KEY)
    }
}

impl Drop for MediaSocket {
    fn drop(&mut self) {
        let _ = self.poller.delete(&self.socket);
    }
}

/// Makes a [`MediaSocket::wait`] return now, from any thread.
#[derive(Clone, Debug)]
pub struct SocketWaker {
    poller: Arc<Poller>,
    /// The next poller key for a stream (shared by every [`TcpMedia`] on this poller, so two of
    /// them never take the same key).
    stream_keys: Arc<AtomicUsize>,
}

impl SocketWaker {
    /// A waker for a socket to be bound with [`MediaSocket::bind_with`].
    pub fn new() -> io::Result<Self> {
        Ok(SocketWaker {
            poller: Arc::new(Poller::new()?),
            stream_keys: Arc::new(AtomicUsize::new(tcp::FIRST_STREAM_KEY)),
        })
    }

    /// Makes the wait return now (or the next one, if none is in progress).
    pub fn wake(&self) {
        if let Err(e) = self.poller.notify() {
            tracing::debug!("media socket wake-up failed: {e}");
        }
    }
}

/// A UDP socket bound at `addr`. An IPv6 socket is dual-stack whatever the system's default
/// (`net.ipv6.bindv6only`), so `[::]` also serves IPv4 peers; their addresses arrive v4-mapped
/// and [`MediaSocket`] turns them back into IPv4 both ways.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// `addr` as an IPv6 socket sends to it: IPv4 addresses v4-mapped.
fn on_ipv6_socket(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        v6 => v6,
    }
}

/// `addr` with a v4-mapped IPv6 address turned back into IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Asks for a receive buffer that holds a burst of video packets (a 720p keyframe is ~100 packets);
/// the kernel's default (about 200 KB) drops such bursts when the reader is busy for a moment.
/// Linux caps it at `net.core.rmem_max`.
fn enlarge_receive_buffer(socket: &UdpSocket, bytes: usize) {
    if let Err(e) = socket2::SockRef::from(socket).set_recv_buffer_size(bytes) {
        tracing::debug!("could not enlarge the UDP receive buffer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::net::{IpAddr, Ipv4Addr};

    use super::batch::MAX_RECEIVE_SLOTS;
    use super::*;

    const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    fn loopback() -> MediaSocket {
        MediaSocket::bind(LOOPBACK).unwrap()
    }

    #[test]
    fn a_wait_with_nothing_to_read_returns_at_its_deadline() {
        // How close to it is the `video` benchmark's business (a timed test would be flaky).
        let mut socket = loopback();
        let deadline = Instant::now() + Duration::from_millis(3);
        socket.wait(deadline).unwrap();
        assert!(Instant::now() >= deadline);
        socket.wait(deadline).unwrap();
    }

    /// The next `n` datagrams `socket` receives (waiting up to 5 s for them), with their sources.
    fn read(
        socket: &mut MediaSocket,
        batch: &mut ReceiveBatch,
        n: usize,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut all = Vec::new();
        while all.len() < n && Instant::now() < deadline {
            if socket.try_recv_batch(batch).unwrap() == 0 {
                socket.wait(deadline).unwrap();
            }
            all.extend(batch.datagrams().map(|d| (d.source, d.contents.to_vec())));
        }
        all
    }

    #[test]
    fn a_datagram_or_a_waker_ends_a_wait_and_reads_never_block() {
        let waker = SocketWaker::new().unwrap();
        let mut socket = MediaSocket::bind_with(LOOPBACK, &waker, RECEIVE_BUFFER).unwrap();
        let mut batch = ReceiveBatch::new(&socket, 4);
        assert_eq!(socket.try_recv_batch(&mut batch).unwrap(), 0);
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = peer.local_addr().unwrap();
        peer.send_to(b"hello", socket.local_addr().unwrap())
            .unwrap();
        let started = Instant::now();
        socket.wait(started + Duration::from_secs(5)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(
            read(&mut socket, &mut batch, 1),
            vec![(from, b"hello".to_vec())]
        );
        // Re-armed: the next datagram ends the next wait too.
        peer.send_to(b"again", socket.local_addr().unwrap())
            .unwrap();
        socket
            .wait(Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(read(&mut socket, &mut batch, 1).len(), 1);
        assert_eq!(socket.try_recv_batch(&mut batch).unwrap(), 0);

        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        socket.wait(started + Duration::from_secs(5)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(4));
        thread.join().unwrap();
    }

    #[test]
    fn a_dual_stack_socket_sees_ipv4_peers_as_ipv4_and_says_where_each_datagram_arrived() {
        let any = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0);
        let mut socket = MediaSocket::bind(any).unwrap();
        let port = socket.local_addr().unwrap().port();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        peer.send_to(b"over v4", ("127.0.0.1", port)).unwrap();
        let mut batch = ReceiveBatch::new(&socket, 4);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = None;
        while seen.is_none() && Instant::now() < deadline {
            if socket.try_recv_batch(&mut batch).unwrap() == 0 {
                socket.wait(deadline).unwrap();
            }
            seen = batch
                .datagrams()
                .next()
                .map(|d| (d.source, d.destination, d.contents.to_vec()));
        }
        let (source, destination, contents) = seen.expect("the datagram arrived");
        assert_eq!(
            source,
            peer.local_addr().unwrap(),
            "an IPv4 source, not v4-mapped"
        );
        assert_eq!(destination, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(contents, b"over v4");

        // A reply to the IPv4 address, from the address it arrived at, reaches the peer from there.
        let mut outbox = Outbox::default();
        outbox.push(&socket, destination, source, b"back");
        outbox.flush(&socket);
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
        assert_eq!(from, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }

    #[test]
    fn runs_to_one_destination_leave_in_one_send_and_arrive_as_they_were() {
        let sender = loopback();
        let (mut a, mut b) = (loopback(), loopback());
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let datagram = |n: u8, len: usize| vec![n; len];
        // Five of 300 bytes and a shorter one to A (one run), one to B, two more to A.
        let plan = [
            (to_a, datagram(1, 300)),
            (to_a, datagram(2, 300)),
            (to_a, datagram(3, 300)),
            (to_a, datagram(4, 300)),
            (to_a, datagram(5, 300)),
            (to_a, datagram(6, 120)),
            (to_b, datagram(7, 80)),
            (to_a, datagram(8, 500)),
            (to_a, datagram(9, 90)),
        ];
        let mut outbox = Outbox::default();
        let mut sent = Sent::default();
        for (to, contents) in &plan {
            let s = outbox.push(&sender, None, *to, contents);
            sent.datagrams += s.datagrams;
            sent.sends += s.sends;
        }
        let s = outbox.flush(&sender);
        sent.datagrams += s.datagrams;
        sent.sends += s.sends;
        assert_eq!(sent.datagrams, plan.len());
        let segmented = sender.state.max_gso_segments() > 1;
        assert_eq!(sent.sends, if segmented { 3 } else { plan.len() });

        let from = sender.local_addr().unwrap();
        let expected_a: Vec<_> = plan
            .iter()
            .filter(|(to, _)| *to == to_a)
            .map(|(_, d)| (from, d.clone()))
            .collect();
        let mut batch = ReceiveBatch::new(&a, MAX_RECEIVE_SLOTS);
        assert_eq!(read(&mut a, &mut batch, expected_a.len()), expected_a);
        let mut batch = ReceiveBatch::new(&b, 1);
        assert_eq!(read(&mut b, &mut batch, 1), vec![(from, datagram(7, 80))]);
    }
}
