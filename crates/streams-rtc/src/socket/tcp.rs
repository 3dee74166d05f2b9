//! [`TcpMedia`]: media over TCP (ICE-TCP, RFC 6544), for players whose network blocks UDP. The
//! bridge listens (its candidates are `tcptype passive`); a client connects on demand when ICE
//! first sends to such a candidate (its own is `tcptype active`). Datagrams travel framed
//! (RFC 4571, [`super::framing`]). Every stream is non-blocking and waits on the poller of the
//! [`MediaSocket`](super::MediaSocket) beside it, so one thread serves UDP and TCP: after each
//! wait, [`TcpMedia::handle_ready`] takes the streams that became ready
//! ([`MediaSocket::ready`](super::MediaSocket::ready)).
//!
//! Bounded everywhere: at most `max_connections` accepted streams, at most [`MAX_QUEUED`] bytes
//! waiting to be written per stream (a datagram that does not fit is dropped, as a full UDP
//! buffer would drop it), at most one frame read ahead, and a stream that has received nothing
//! for [`IDLE_TIMEOUT`] is closed.
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use polling::{Event, Poller};

pub use super::framing::Framing;
use super::framing::{FrameReader, frame_header};
use super::{SocketWaker, canonical};

/// Bytes one stream may hold waiting for the kernel to take them (about a second of 2 Mbit/s
/// video).
pub const MAX_QUEUED: usize = 256 << 10;

/// A stream that has received nothing for this long is closed (ICE consent checks arrive every
/// few seconds on a live one).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// After a connection attempt to a destination failed, how long before the next.
const RECONNECT_GAP: Duration = Duration::from_secs(1);

/// Frames read from one stream per readiness, so that one busy stream cannot starve the rest.
const FRAMES_PER_TURN: usize = 64;

/// The poller's key for the listener (the UDP socket's is 0); streams have the keys after it.
const LISTENER_KEY: usize = 1;

/// The first poller key of a stream.
pub(super) const FIRST_STREAM_KEY: usize = LISTENER_KEY + 1;

/// A datagram that arrived on a TCP stream.
#[derive(Debug)]
pub struct TcpFrame<'a> {
    /// The stream's remote address.
    pub source: SocketAddr,
    /// The stream's local address.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: &'a [u8],
}

/// What [`TcpMedia`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Streams accepted or connected.
    pub opened: u64,
    /// Streams refused at the connection cap.
    pub refused: u64,
    /// Datagrams dropped: a full queue, or no stream to send them on.
    pub dropped: u64,
}

/// One TCP stream.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    /// An outgoing connection not yet established.
    connecting: bool,
    reader: FrameReader,
    framing: Framing,
    /// Framed datagrams not yet written, from `written` on.
    queued: Vec<u8>,
    written: usize,
    last_received: Instant,
}

impl Connection {
    fn interest(&self, key: usize) -> Event {
        if self.connecting || self.written < self.queued.len() {
            Event::all(key)
        } else {
            Event::readable(key)
        }
    }

    /// Writes what is queued until the kernel takes no more.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.queued.len() {
            match self.stream.write(&self.queued[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.queued.len() {
            self.queued.clear();
            self.written = 0;
        } else if self.written > MAX_QUEUED {
            self.queued.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    /// Queues one framed datagram; `false` if it does not fit.
    fn queue(&mut self, contents: &[u8]) -> bool {
        let header = match self.framing {
            Framing::Rfc4571 => match frame_header(contents.len()) {
                Some(header) => Some(header),
                None => return false,
            },
            Framing::Raw => None,
        };
        let header_len = header.map_or(0, |h| h.len());
        if self.queued.len() - self.written + header_len + contents.len() > MAX_QUEUED {
            return false;
        }
        if let Some(header) = header {
            self.queued.extend_from_slice(&header);
        }
        self.queued.extend_from_slice(contents);
        true
    }
}

/// The TCP streams of one media thread.
pub struct TcpMedia {
    poller: Arc<Poller>,
    keys: Arc<AtomicUsize>,
    /// Of the streams it opens (accepted ones are always RFC 4571).
    framing: Framing,
    listener: Option<TcpListener>,
    connections: HashMap<usize, Connection>,
    by_peer: HashMap<SocketAddr, usize>,
    max_connections: usize,
    /// Outgoing: destinations whose last connection attempt failed, and when.
    failed: HashMap<SocketAddr, Instant>,
    next_sweep: Option<Instant>,
    stats: TcpStats,
    /// Peers whose stream ended (refused, reset, closed, idle) since [`TcpMedia::poll_closed`]
    /// last took them.
    closed: Vec<SocketAddr>,
}

/// Whether a non-blocking connect is under way (not an error).
fn in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

impl TcpMedia {
    /// Listens at `addr` for streams from peers (at most `max_connections` at a time), waking
    /// the [`MediaSocket`](super::MediaSocket) made with `waker`.
    pub fn listen(
        addr: SocketAddr,
        waker: &SocketWaker,
        max_connections: usize,
    ) -> io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(128)?;
        socket.set_nonblocking(true)?;
        let listener: TcpListener = socket.into();
        let mut media = Self::new(waker, max_connections, Framing::Rfc4571);
        // SAFETY: the listener is removed from the poller before it is closed (`Drop` below),
        // and it is never closed otherwise: `TcpMedia` owns it and hands out no ownership.
        unsafe { media.poller.add(&listener, Event::readable(LISTENER_KEY))? };
        media.listener = Some(listener);
        Ok(media)
    }

    /// Connects to peers on demand (at most `max_connections` at a time): the first datagram
    /// sent to a destination opens a stream to it, carrying datagrams as `framing` says.
    pub fn connecting(waker: &SocketWaker, max_connections: usize, framing: Framing) -> Self {
        Self::new(waker, max_connections, framing)
    }

    fn new(waker: &SocketWaker, max_connections: usize, framing: Framing) -> Self {
        TcpMedia {
            poller: Arc::clone(&waker.poller),
            keys: Arc::clone(&waker.stream_keys),
            framing,
            listener: None,
            connections: HashMap::new(),
            by_peer: HashMap::new(),
            max_connections,
            failed: HashMap::new(),
            next_sweep: None,
            stats: TcpStats::default(),
            closed: Vec::new(),
        }
    }

    /// The address listened at, if this side listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// How many streams are open.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// What was counted so far.
    pub fn stats(&self) -> TcpStats {
        self.stats
    }

    /// Sends a datagram on the stream to `destination`. A listening side only answers on
    /// streams its peers opened; a connecting side opens one if there is none (not within a
    /// second of a failed attempt). `false` if it was dropped.
    pub fn send(&mut self, now: Instant, destination: SocketAddr, contents: &[u8]) -> bool {
        let key = match self.by_peer.get(&destination) {
            Some(key) => *key,
            None if self.listener.is_some() => return self.dropped(),
            None => match self.connect(now, destination) {
                Some(key) => key,
                None => return self.dropped(),
            },
        };
        let Some(connection) = self.connections.get_mut(&key) else {
            return self.dropped();
        };
        if !connection.queue(contents) {
            return self.dropped();
        }
        if connection.connecting {
            return true;
        }
        let was_waiting = connection.written < connection.queued.len();
        match connection.flush() {
            Ok(()) => {
                let waiting = connection.written < connection.queued.len();
                if waiting && !was_waiting {
                    // Wake up when the kernel takes more.
                    let interest = connection.interest(key);
                    if let Err(e) = self.poller.modify(&connection.stream, interest) {
                        tracing::debug!("TCP media stream: {e}");
                        self.close(now, key);
                    }
                }
                true
            }
            Err(e) => {
                tracing::debug!(peer = %destination, "TCP media stream closed: {e}");
                self.close(now, key);
                self.dropped()
            }
        }
    }

    /// Takes the streams among `keys` (what [`MediaSocket::ready`](super::MediaSocket::ready) gave) that became ready:
    /// accepts new ones, finishes connecting, writes what waited, and hands each datagram read
    /// to `deliver`.
    pub fn handle_ready(
        &mut self,
        now: Instant,
        keys: impl IntoIterator<Item = usize>,
        mut deliver: impl FnMut(TcpFrame<'_>),
    ) {
        for key in keys {
            if key == LISTENER_KEY {
                self.accept(now);
            } else if self.connections.contains_key(&key) {
                self.service(now, key, &mut deliver);
            }
        }
    }

    /// Closes the streams that received nothing for [`IDLE_TIMEOUT`] (looked at once a second).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.next_sweep = Some(now + Duration::from_secs(1));
        let idle: Vec<usize> = self
            .connections
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_received) >= IDLE_TIMEOUT)
            .map(|(key, _)| *key)
            .collect();
        for key in idle {
            self.close(now, key);
        }
        self.failed
            .retain(|_, at| now.saturating_duration_since(*at) < RECONNECT_GAP);
    }

    /// For unframed streams ([`Framing::Raw`]: their protocol ties state to the stream, as TURN
    /// does its allocation), a peer whose stream ended by itself since the last call: refused,
    /// reset, closed by the peer or idle. (Not those [`TcpMedia::close_all`] closed.)
    pub fn poll_closed(&mut self) -> Option<SocketAddr> {
        self.closed.pop()
    }

    /// Closes every stream (the local address they were opened from is gone): the next datagram
    /// to a destination opens a new one at once.
    pub fn close_all(&mut self) {
        for (_, connection) in self.connections.drain() {
            let _ = self.poller.delete(&connection.stream);
        }
        self.by_peer.clear();
        self.failed.clear();
        self.closed.clear();
    }

    fn dropped(&mut self) -> bool {
        self.stats.dropped += 1;
        false
    }

    fn register(&mut self, connection: Connection) -> Option<usize> {
        let key = self.keys.fetch_add(1, Ordering::Relaxed);
        let interest = connection.interest(key);
        // SAFETY: the stream is removed from the poller before it is closed (`close` and
        // `Drop`), and it is never closed otherwise: `TcpMedia` owns it.
        if let Err(e) = unsafe { self.poller.add(&connection.stream, interest) } {
            tracing::debug!("TCP media stream: {e}");
            return None;
        }
        self.stats.opened += 1;
        self.by_peer.insert(connection.peer, key);
        self.connections.insert(key, connection);
        Some(key)
    }

    fn connect(&mut self, now: Instant, destination: SocketAddr) -> Option<usize> {
        if self.connections.len() >= self.max_connections
            || self
                .failed
                .get(&destination)
                .is_some_and(|at| now.saturating_duration_since(*at) < RECONNECT_GAP)
        {
            return None;
        }
        let opened = (|| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(destination),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_nonblocking(true)?;
            socket.set_tcp_nodelay(true)?;
            match socket.connect(&destination.into()) {
                Ok(()) => {}
                Err(e) if in_progress(&e) => {}
                Err(e) => return Err(e),
            }
            let local = socket
                .local_addr()?
                .as_socket()
                .ok_or(io::ErrorKind::AddrNotAvailable)?;
            Ok((TcpStream::from(socket), local))
        })();
        let (stream, local) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::debug!(peer = %destination, "cannot connect media over TCP: {e}");
                self.failed.insert(destination, now);
                return None;
            }
        };
        tracing::debug!(peer = %destination, "connecting media over TCP");
        self.register(Connection {
            stream,
            peer: destination,
            local,
            connecting: true,
            framing: self.framing,
            reader: FrameReader::new(self.framing),
            queued: Vec::new(),
            written: 0,
            last_received: now,
        })
    }

    fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        let mut accepted = Vec::new();
        loop {
            match listener.accept() {
                Ok((stream, peer)) => accepted.push((stream, peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted.
                    tracing::debug!("TCP media listener: {e}");
                    break;
                }
            }
        }
        if let Err(e) = self.poller.modify(listener, Event::readable(LISTENER_KEY)) {
            tracing::warn!("TCP media listener: {e}");
        }
        for (stream, peer) in accepted {
            if self.connections.len() >= self.max_connections {
                self.stats.refused += 1;
                tracing::debug!(%peer, "TCP media stream refused: {} open", self.max_connections);
                continue;
            }
            let set_up = stream
                .set_nonblocking(true)
                .and_then(|()| stream.set_nodelay(true))
                .and_then(|()| stream.local_addr());
            let local = match set_up {
                Ok(local) => local,
                Err(e) => {
                    tracing::debug!(%peer, "TCP media stream: {e}");
                    continue;
                }
            };
            let peer = canonical(peer);
            // A peer reconnecting from the same address replaces its old stream.
            if let Some(old) = self.by_peer.get(&peer).copied() {
                self.close(now, old);
            }
            self.register(Connection {
                stream,
                peer,
                local: canonical(local),
                connecting: false,
                framing: Framing::Rfc4571,
                reader: FrameReader::new(Framing::Rfc4571),
                queued: Vec::new(),
                written: 0,
                last_received: now,
            });
        }
    }

    /// A ready stream: connected, writable and/or readable.
    fn service(&mut self, now: Instant, key: usize, deliver: &mut impl FnMut(TcpFrame<'_>)) {
        let Some(connection) = self.connections.get_mut(&key) else {
            return;
        };
        if connection.connecting {
            match connection.stream.take_error() {
                Ok(None) if connection.stream.peer_addr().is_ok() => {
                    connection.connecting = false;
                    tracing::debug!(peer = %connection.peer, "media connected over TCP");
                }
                // Not yet (a spurious wake-up).
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    tracing::debug!(peer = %connection.peer, "cannot connect media over TCP: {e}");
                    self.close(now, key);
                    return;
                }
            }
        }
        let mut result = if connection.connecting {
            Ok(())
        } else {
            connection.flush()
        };
        if result.is_ok() && !connection.connecting {
            result = read_frames(connection, now, deliver);
        }
        let rearmed = result.and_then(|()| {
            self.poller
                .modify(&connection.stream, connection.interest(key))
        });
        if let Err(e) = rearmed {
            tracing::debug!(peer = %connection.peer, "TCP media stream closed: {e}");
            self.close(now, key);
        }
    }

    fn close(&mut self, now: Instant, key: usize) {
        let Some(connection) = self.connections.remove(&key) else {
            return;
        };
        if self.framing == Framing::Raw && self.closed.len() < self.max_connections.max(16) {
            self.closed.push(connection.peer);
        }
        let _ = self.poller.delete(&connection.stream);
        if self.by_peer.get(&connection.peer) == Some(&key) {
            self.by_peer.remove(&connection.peer);
        }
        if self.listener.is_none() {
            self.failed.insert(connection.peer, now);
        }
    }
}

/// Reads up to [`FRAMES_PER_TURN`] datagrams from `connection`; an error (or the end of the
/// stream) closes it.
fn read_frames(
    connection: &mut Connection,
    now: Instant,
    deliver: &mut impl FnMut(TcpFrame<'_>),
) -> io::Result<()> {
    let mut frames = 0;
    while frames < FRAMES_PER_TURN {
        let space = connection.reader.space();
        let n = match connection.stream.read(space) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        connection.last_received = now;
        if let Some(contents) = connection.reader.filled(n) {
            frames += 1;
            deliver(TcpFrame {
                source: connection.peer,
                destination: connection.local,
                contents,
            });
        }
    }
    Ok(())
}

impl Drop for TcpMedia {
    fn drop(&mut self) {
        for connection in self.connections.values() {
            let _ = self.poller.delete(&connection.stream);
        }
        if let Some(listener) = &self.listener {
            let _ = self.poller.delete(listener);
        }
    }
}

#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;
