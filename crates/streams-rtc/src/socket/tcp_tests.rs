//! [`TcpMedia`] on loopback: a stream opened on demand carries datagrams both ways, framed; a
//! refused connection is not retried at once; the connection cap and the idle timeout hold.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::socket::{MediaSocket, RECEIVE_BUFFER};

const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// One side: its UDP socket (which it waits on) and its TCP streams.
struct Side {
    socket: MediaSocket,
    tcp: TcpMedia,
    /// What arrived: (source, destination, contents).
    received: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Side {
    fn listening(max_connections: usize) -> Side {
        let waker = SocketWaker::new().unwrap();
        let socket = MediaSocket::bind_with(LOOPBACK, &waker, RECEIVE_BUFFER).unwrap();
        let tcp = TcpMedia::listen(LOOPBACK, &waker, max_connections).unwrap();
        Side {
            socket,
            tcp,
            received: Vec::new(),
        }
    }

    fn connecting() -> Side {
        let waker = SocketWaker::new().unwrap();
        let socket = MediaSocket::bind_with(LOOPBACK, &waker, RECEIVE_BUFFER).unwrap();
        Side {
            socket,
            tcp: TcpMedia::connecting(&waker, 4, Framing::Rfc4571),
            received: Vec::new(),
        }
    }

    /// One wait of at most 20 ms and what became ready.
    fn turn(&mut self) {
        self.socket
            .wait(Instant::now() + Duration::from_millis(20))
            .unwrap();
        let keys: Vec<usize> = self.socket.ready().collect();
        let received = &mut self.received;
        self.tcp.handle_ready(Instant::now(), keys, |frame| {
            received.push((frame.source, frame.destination, frame.contents.to_vec()));
        });
    }
}

/// Turns both sides until `done` or 5 s pass.
fn run_until(a: &mut Side, b: &mut Side, done: impl Fn(&Side, &Side) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(a, b) {
        assert!(Instant::now() < deadline, "timed out");
        a.turn();
        b.turn();
    }
}

#[test]
fn a_stream_opened_on_demand_carries_datagrams_both_ways_whole() {
    let mut bridge = Side::listening(8);
    let mut client = Side::connecting();
    let at = bridge.tcp.local_addr().unwrap();
    let now = Instant::now();
    // Sent before the stream is up: queued, then written once it is.
    assert!(client.tcp.send(now, at, b"binding request"));
    let big = vec![9u8; 1400];
    assert!(client.tcp.send(now, at, &big));
    run_until(&mut bridge, &mut client, |b, _| b.received.len() == 2);
    let (source, destination, first) = bridge.received[0].clone();
    assert_eq!(destination, at);
    assert_eq!(first, b"binding request");
    assert_eq!(bridge.received[1].2, big);
    assert_eq!(bridge.tcp.connection_count(), 1);

    // The listening side answers on the stream the peer opened, and only there.
    assert!(bridge.tcp.send(Instant::now(), source, b"binding response"));
    let stranger = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
    assert!(!bridge.tcp.send(Instant::now(), stranger, b"nobody"));
    run_until(&mut bridge, &mut client, |_, c| c.received.len() == 1);
    assert_eq!(client.received[0].0, at);
    assert_eq!(client.received[0].2, b"binding response");
    assert_eq!(bridge.tcp.stats().dropped, 1);
    assert_eq!(
        (client.tcp.stats().opened, bridge.tcp.stats().opened),
        (1, 1)
    );
}

#[test]
fn a_refused_connection_is_not_retried_within_a_second() {
    let mut client = Side::connecting();
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind(LOOPBACK)
        .unwrap()
        .local_addr()
        .unwrap();
    let now = Instant::now();
    assert!(client.tcp.send(now, closed, b"hello?"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.tcp.connection_count() > 0 {
        assert!(Instant::now() < deadline, "the refusal was never seen");
        client.turn();
    }
    assert!(!client.tcp.send(now, closed, b"again?"), "retried at once");
    let later = Instant::now() + RECONNECT_GAP;
    client.tcp.handle_timeout(later);
    assert!(client.tcp.send(later, closed, b"later"));
}

#[test]
fn streams_past_the_cap_are_refused_and_idle_ones_closed() {
    let mut bridge = Side::listening(1);
    let at = bridge.tcp.local_addr().unwrap();
    let mut first = Side::connecting();
    let mut second = Side::connecting();
    assert!(first.tcp.send(Instant::now(), at, b"one"));
    run_until(&mut bridge, &mut first, |b, _| b.received.len() == 1);
    assert!(second.tcp.send(Instant::now(), at, b"two"));
    run_until(&mut bridge, &mut second, |b, _| b.tcp.stats().refused == 1);
    assert_eq!(bridge.tcp.connection_count(), 1);
    assert_eq!(bridge.received.len(), 1);

    bridge.tcp.handle_timeout(Instant::now());
    assert_eq!(bridge.tcp.connection_count(), 1, "not idle yet");
    bridge
        .tcp
        .handle_timeout(Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1));
    assert_eq!(bridge.tcp.connection_count(), 0);
}

#[test]
fn a_stream_queues_a_bounded_amount_and_drops_what_does_not_fit() {
    let (stream, _listener) = {
        let listener = std::net::TcpListener::bind(LOOPBACK).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener)
    };
    let mut connection = Connection {
        peer: stream.peer_addr().unwrap(),
        local: stream.local_addr().unwrap(),
        stream,
        connecting: true,
        framing: Framing::Rfc4571,
        reader: FrameReader::default(),
        queued: Vec::new(),
        written: 0,
        last_received: Instant::now(),
    };
    let datagram = [0u8; 1000];
    let fit = MAX_QUEUED / (datagram.len() + 2);
    for _ in 0..fit {
        assert!(connection.queue(&datagram));
    }
    assert!(!connection.queue(&datagram));
    assert!(!connection.queue(&[0u8; 70_000]), "longer than a frame");
}

#[test]
fn a_raw_stream_carries_bytes_unframed_beside_a_framed_one_on_the_same_poller() {
    use std::io::{Read, Write};
    let waker = SocketWaker::new().unwrap();
    let mut socket = MediaSocket::bind_with(LOOPBACK, &waker, RECEIVE_BUFFER).unwrap();
    let mut framed = TcpMedia::connecting(&waker, 4, Framing::Rfc4571);
    let mut raw = TcpMedia::connecting(&waker, 4, Framing::Raw);
    let (framed_server, raw_server) = (
        std::net::TcpListener::bind(LOOPBACK).unwrap(),
        std::net::TcpListener::bind(LOOPBACK).unwrap(),
    );
    let now = Instant::now();
    assert!(framed.send(now, framed_server.local_addr().unwrap(), b"ab"));
    assert!(raw.send(now, raw_server.local_addr().unwrap(), b"turn message"));
    let (mut framed_peer, _) = framed_server.accept().unwrap();
    let (mut raw_peer, _) = raw_server.accept().unwrap();
    raw_peer.write_all(b"answer").unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 6 {
        assert!(Instant::now() < deadline, "timed out");
        socket
            .wait(Instant::now() + Duration::from_millis(20))
            .unwrap();
        let keys: Vec<usize> = socket.ready().collect();
        framed.handle_ready(Instant::now(), keys.clone(), |_| {
            panic!("nothing was sent on the framed stream")
        });
        raw.handle_ready(Instant::now(), keys, |bytes| {
            got.extend_from_slice(bytes.contents)
        });
    }
    assert_eq!(got, b"answer");
    let mut sent = [0u8; 12];
    raw_peer.read_exact(&mut sent).unwrap();
    assert_eq!(&sent, b"turn message", "no length before it");
    let mut sent = [0u8; 4];
    framed_peer.read_exact(&mut sent).unwrap();
    assert_eq!(sent, [0, 2, b'a', b'b'], "RFC 4571: the length first");
}
