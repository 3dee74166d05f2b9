//! [`UdpRelay`]: a UDP impairment relay between one client and an upstream server (the SFU). Each
//! direction has its own [`Impairment`] — random drop, fixed delay plus uniform jitter, reordering
//! (a packet held back behind the next one), and a rate-limited bottleneck with a bounded queue —
//! driven by a seeded generator, and changeable while it runs. The client is whoever sent to the
//! relay last; the upstream's answers go to it.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Direction;

/// How one direction is impaired. The default passes everything at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Impairment {
    /// Share of packets dropped, percent.
    pub drop_percent: f64,
    /// Added to every packet's trip.
    pub delay: Duration,
    /// Each packet waits a further uniform random time up to this (packets may overtake each other).
    pub jitter: Duration,
    /// Share of packets held back and sent right after the next one, percent.
    pub reorder_percent: f64,
    /// A bottleneck of this many bits per second (`None`: no limit).
    pub rate_bps: Option<u64>,
    /// The most a packet waits in the bottleneck's queue; later ones are dropped (tail drop).
    pub queue_limit: Duration,
    /// Drop and reorder only RTP packets (media), so that STUN, DTLS and RTCP still get through;
    /// delay, jitter and the bottleneck apply to everything.
    pub media_only: bool,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            drop_percent: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder_percent: 0.0,
            rate_bps: None,
            queue_limit: Duration::from_millis(200),
            media_only: true,
        }
    }
}

/// What one direction did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets sent on.
    pub forwarded: u64,
    /// Of those, RTP packets (media).
    pub media: u64,
    /// Packets dropped at random.
    pub dropped: u64,
    /// Packets dropped because the bottleneck's queue was full.
    pub overflowed: u64,
    /// Packets held back behind a later one.
    pub reordered: u64,
}

#[derive(Default)]
struct Tally {
    forwarded: AtomicU64,
    media: AtomicU64,
    dropped: AtomicU64,
    overflowed: AtomicU64,
    reordered: AtomicU64,
}

struct Shared {
    impairments: Mutex<[Impairment; 2]>,
    tallies: [Tally; 2],
    stop: AtomicBool,
}

/// A held-back packet is sent anyway after this long without a successor.
const REORDER_FLUSH: Duration = Duration::from_millis(100);

fn index(direction: Direction) -> usize {
    match direction {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

/// A running relay. Dropping it stops it.
pub struct UdpRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl UdpRelay {
    /// A relay on a loopback port towards `upstream`, impairing nothing until told; `seed` fixes
    /// every random choice.
    pub fn start(upstream: SocketAddr, seed: u64) -> io::Result<UdpRelay> {
        let bind = if upstream.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let socket = UdpSocket::bind(bind)?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            impairments: Mutex::new([Impairment::default(), Impairment::default()]),
            tallies: [Tally::default(), Tally::default()],
            stop: AtomicBool::new(false),
        });
        let mut worker = Worker::new(socket, upstream, seed, Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("testkit-udp-relay".into())
            .spawn(move || worker.run())?;
        Ok(UdpRelay {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// Where the client should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Impairs `direction` from now on.
    pub fn impair(&self, direction: Direction, impairment: Impairment) {
        let mut all = self
            .shared
            .impairments
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all[index(direction)] = impairment;
    }

    /// What `direction` did so far.
    pub fn counts(&self, direction: Direction) -> Counts {
        let tally = &self.shared.tallies[index(direction)];
        Counts {
            forwarded: tally.forwarded.load(Ordering::Relaxed),
            media: tally.media.load(Ordering::Relaxed),
            dropped: tally.dropped.load(Ordering::Relaxed),
            overflowed: tally.overflowed.load(Ordering::Relaxed),
            reordered: tally.reordered.load(Ordering::Relaxed),
        }
    }

    /// Points an SDP answer's candidates at the relay instead of `upstream`.
    pub fn rewrite_answer(&self, answer: &str, upstream: SocketAddr) -> String {
        answer.replace(
            &format!("{} {}", upstream.ip(), upstream.port()),
            &format!("{} {}", self.addr.ip(), self.addr.port()),
        )
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A packet waiting for its time.
type Scheduled = Reverse<(Instant, u64, usize, Vec<u8>)>;

/// One direction's moving parts.
struct Lane {
    rng: StdRng,
    /// When the bottleneck is free again.
    free_at: Instant,
    /// A packet waiting for the next one to overtake it, and since when.
    held: Option<(Instant, Vec<u8>)>,
}

struct Worker {
    socket: UdpSocket,
    upstream: SocketAddr,
    client: Option<SocketAddr>,
    shared: Arc<Shared>,
    lanes: [Lane; 2],
    queue: BinaryHeap<Scheduled>,
    order: u64,
}

/// RTP: version 2, and a payload type outside the RTCP range 192–223.
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() > 12 && packet[0] >> 6 == 2 && !(192..=223).contains(&packet[1])
}

impl Worker {
    fn new(socket: UdpSocket, upstream: SocketAddr, seed: u64, shared: Arc<Shared>) -> Worker {
        let now = Instant::now();
        let lane = |salt: u64| Lane {
            rng: StdRng::seed_from_u64(seed ^ salt),
            free_at: now,
            held: None,
        };
        Worker {
            socket,
            upstream,
            client: None,
            shared,
            lanes: [lane(0x5e4d), lane(0xc11e)],
            queue: BinaryHeap::new(),
            order: 0,
        }
    }

    fn run(&mut self) {
        let mut buf = vec![0u8; 65_536];
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.send_due(now);
            let wait = self
                .queue
                .peek()
                .map_or(Duration::from_millis(5), |Reverse((at, ..))| {
                    at.saturating_duration_since(now)
                })
                .clamp(Duration::from_micros(100), Duration::from_millis(5));
            if self.socket.set_read_timeout(Some(wait)).is_err() {
                return;
            }
            let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let direction = if from == self.upstream {
                Direction::ToClient
            } else {
                self.client = Some(from);
                Direction::ToServer
            };
            self.accept(Instant::now(), direction, buf[..n].to_vec());
        }
    }

    /// Applies `direction`'s impairment to one packet.
    fn accept(&mut self, now: Instant, direction: Direction, packet: Vec<u8>) {
        let d = index(direction);
        let impairment = self
            .shared
            .impairments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[d]
            .clone();
        let tally = &self.shared.tallies[d];
        let lane = &mut self.lanes[d];
        let eligible = !impairment.media_only || is_rtp(&packet);
        if eligible && lane.rng.random::<f64>() * 100.0 < impairment.drop_percent {
            tally.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut at = now;
        if let Some(rate) = impairment.rate_bps.filter(|r| *r > 0) {
            let start = lane.free_at.max(now);
            if start - now > impairment.queue_limit {
                tally.overflowed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let bits = (packet.len() as u64 + 28) * 8;
            lane.free_at = start + Duration::from_nanos(bits * 1_000_000_000 / rate);
            at = lane.free_at;
        }
        at += impairment.delay;
        if !impairment.jitter.is_zero() {
            at += impairment.jitter.mul_f64(lane.rng.random::<f64>());
        }
        if eligible
            && lane.held.is_none()
            && lane.rng.random::<f64>() * 100.0 < impairment.reorder_percent
        {
            tally.reordered.fetch_add(1, Ordering::Relaxed);
            lane.held = Some((at, packet));
            return;
        }
        let held = lane.held.take();
        self.schedule(at, d, packet);
        if let Some((held_at, held)) = held {
            // Right behind the packet that overtook it.
            self.schedule(at.max(held_at), d, held);
        }
    }

    fn schedule(&mut self, at: Instant, lane: usize, packet: Vec<u8>) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, lane, packet)));
    }

    /// Sends what is due, and held-back packets nothing overtook in time.
    fn send_due(&mut self, now: Instant) {
        for d in 0..2 {
            if let Some((since, _)) = &self.lanes[d].held
                && now.duration_since(*since) > REORDER_FLUSH
                && let Some((at, packet)) = self.lanes[d].held.take()
            {
                self.schedule(at, d, packet);
            }
        }
        while self
            .queue
            .peek()
            .is_some_and(|Reverse((at, ..))| *at <= now)
        {
            let Some(Reverse((_, _, d, packet))) = self.queue.pop() else {
                break;
            };
            let to = if d == index(Direction::ToServer) {
                Some(self.upstream)
            } else {
                self.client
            };
            if let Some(to) = to
                && self.socket.send_to(&packet, to).is_ok()
            {
                let tally = &self.shared.tallies[d];
                tally.forwarded.fetch_add(1, Ordering::Relaxed);
                if is_rtp(&packet) {
                    tally.media.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP-looking packet carrying `seq`.
    fn rtp(seq: u16) -> Vec<u8> {
        let mut packet = vec![0x80, 111, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet
    }

    /// Sends `n` packets from a client through a relay to a server, 1 ms apart; the sequence numbers
    /// the server received, in order, and how long the whole took.
    fn run(impairment: Impairment, n: u16, seed: u64) -> (Vec<u16>, Duration, Counts) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let relay = UdpRelay::start(server.local_addr().unwrap(), seed).unwrap();
        relay.impair(Direction::ToServer, impairment);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let sender = std::thread::spawn({
            let to = relay.addr();
            move || {
                for seq in 0..n {
                    client.send_to(&rtp(seq), to).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok((len, _)) = server.recv_from(&mut buf) {
            assert_eq!(len, 14);
            got.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
        sender.join().unwrap();
        let took = start.elapsed();
        (got, took, relay.counts(Direction::ToServer))
    }

    #[test]
    fn drops_follow_the_seed_and_the_share() {
        let lossy = Impairment {
            drop_percent: 20.0,
            ..Impairment::default()
        };
        let (first, _, counts) = run(lossy.clone(), 500, 7);
        let (second, _, _) = run(lossy, 500, 7);
        assert_eq!(first, second, "the same seed drops the same packets");
        assert_eq!(counts.forwarded + counts.dropped, 500);
        assert!((70..=130).contains(&counts.dropped), "{counts:?}");
    }

    #[test]
    fn delay_jitter_and_reordering_change_the_order_but_lose_nothing() {
        let (got, took, counts) = run(
            Impairment {
                delay: Duration::from_millis(30),
                reorder_percent: 10.0,
                ..Impairment::default()
            },
            300,
            11,
        );
        assert_eq!(got.len(), 300, "{counts:?}");
        let out_of_order = got.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(out_of_order >= 10, "{out_of_order} reorderings, {counts:?}");
        assert!(took >= Duration::from_millis(330), "{took:?}");
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn a_bottleneck_paces_and_its_queue_overflows() {
        // 14-byte packets are 336 bits with UDP/IP headers: 33.6 kbit/s carries 100 per second,
        // a tenth of what is offered; a 100 ms queue holds about 10 of them.
        let (got, _, counts) = run(
            Impairment {
                rate_bps: Some(33_600),
                queue_limit: Duration::from_millis(100),
                ..Impairment::default()
            },
            500,
            3,
        );
        assert!(counts.overflowed > 300, "{counts:?}");
        assert!(
            (40..=80).contains(&got.len()),
            "{} got through, {counts:?}",
            got.len()
        );
    }
}
