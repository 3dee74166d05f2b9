//! A UDP impairment relay for tests (this kernel has no netem): it sits between one client and the SFU
//! and drops a share of the RTP packets flowing to the client, chosen by a seeded generator.
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A running relay. Dropping it stops it.
pub struct LossyRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// RTP packets towards the client: forwarded, dropped.
    pub counts: Arc<(AtomicU64, AtomicU64)>,
}

impl LossyRelay {
    /// Relays between whoever sends to it first (the client) and `upstream` (the SFU), dropping
    /// `drop_percent` of RTP packets going to the client.
    pub fn start(upstream: SocketAddr, drop_percent: u64, seed: u64) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let (stop_flag, tally) = (Arc::clone(&stop), Arc::clone(&counts));
        std::thread::spawn(move || {
            let mut state = seed | 1;
            let mut client: Option<SocketAddr> = None;
            let mut buf = [0u8; 2048];
            while !stop_flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if from == upstream {
                    let Some(to) = client else { continue };
                    // RTP: version 2, and a payload type outside the RTCP range 192–223.
                    let rtp = n > 12 && buf[0] >> 6 == 2 && !(192..=223).contains(&buf[1]);
                    if rtp {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        if state % 100 < drop_percent {
                            tally.1.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        tally.0.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = socket.send_to(&buf[..n], to);
                } else {
                    client = Some(from);
                    let _ = socket.send_to(&buf[..n], upstream);
                }
            }
        });
        LossyRelay { addr, stop, counts }
    }

    /// Where the client should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points an SDP answer's candidates at the relay instead of `upstream`.
    pub fn rewrite_answer(&self, answer: &str, upstream: SocketAddr) -> String {
        answer.replace(
            &format!("{} {}", upstream.ip(), upstream.port()),
            &format!("{} {}", self.addr.ip(), self.addr.port()),
        )
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
