//! [`LocalCandidates`]: the ICE candidates a peer connection offers from this machine — its UDP
//! address and, for a room's media engine, an active TCP one (RFC 6544: port 9; the driver opens
//! the stream) — and how they follow the local address when the network changes. Their priority is
//! set explicitly, one step higher at each move, so that the new pairs outrank the old at both
//! ends; the old candidates are dropped a little later, once the new pairs have been checked.
//! A relayed candidate (a TURN allocation, see [`crate::media::relay`]) may sit beside them.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, TcpType};
use str0m::{Candidate, CandidateKind, Rtc};
use streams_rtc::socket::Transport;

use super::MediaError;

/// The local preference (RFC 8445 §5.1.2) of the first host candidates. Each move to a new
/// address adds one, so the new pairs outrank the old at both ends: the bridge (ICE lite) keeps
/// the best nominated pair, and a new candidate ranked as str0m ranks a second one (lower) would
/// not take over there until the old pair timed out (15 s).
const FIRST_LOCAL_PREFERENCE: u32 = 60_000;

/// How long the candidates of an address moved away from are kept: the new pairs are checked and
/// nominated within a few round trips.
const RETIRE_AFTER: Duration = Duration::from_secs(3);

/// A host candidate at `addr` (an active one for TCP) ranked for move `generation`.
fn host_candidate(
    addr: SocketAddr,
    transport: Transport,
    generation: u32,
) -> Result<Candidate, MediaError> {
    // Type preferences as str0m gives them: UDP host 126, TCP host 90.
    let (type_preference, proto, tcptype, kind) = match transport {
        Transport::Udp => (126u32, Protocol::Udp, None, 'u'),
        Transport::Tcp => (90, Protocol::Tcp, Some(TcpType::Active), 't'),
    };
    let local_preference = (FIRST_LOCAL_PREFERENCE + generation).min(u32::from(u16::MAX));
    // Component 1 (RTP): 256 - 1.
    let priority = type_preference << 24 | local_preference << 8 | 255;
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(MediaError::Rtc(format!("cannot use {addr} as a candidate")));
    }
    Ok(Candidate::from_parts(
        format!("{kind}{generation}"),
        1,
        proto,
        priority,
        addr,
        CandidateKind::Host,
        None,
        tcptype,
        None,
    ))
}

/// The local candidates of one peer connection.
pub(super) struct LocalCandidates {
    /// The local UDP address.
    udp: SocketAddr,
    /// The active ICE-TCP candidate's address (the local IP, port 9), if it has one.
    tcp: Option<SocketAddr>,
    /// The candidates in use.
    current: Vec<Candidate>,
    /// The candidates of the address moved away from, and when they are dropped: kept while the
    /// new pairs are checked, so the connection keeps a pair to send on meanwhile.
    retiring: Option<(Instant, Vec<Candidate>)>,
    /// Moves to a new address so far (ranks the candidates).
    generation: u32,
    /// The relayed (TURN) candidate, if there is one: ranked below every host candidate, it
    /// carries media only when nothing else reaches the bridge.
    relay: Option<Candidate>,
}

impl LocalCandidates {
    /// A UDP host candidate at `udp`, added to `rtc`.
    pub(super) fn new(rtc: &mut Rtc, udp: SocketAddr) -> Result<Self, MediaError> {
        let mut candidates = LocalCandidates {
            udp,
            tcp: None,
            current: Vec::new(),
            retiring: None,
            generation: 0,
            relay: None,
        };
        candidates.add(rtc, udp, Transport::Udp)?;
        Ok(candidates)
    }

    /// Adds an active TCP candidate at the UDP address's IP (port 9, RFC 6544 §4.5: it opens
    /// streams from ephemeral ports).
    pub(super) fn add_tcp(&mut self, rtc: &mut Rtc) -> Result<(), MediaError> {
        let tcp = SocketAddr::new(self.udp.ip(), 9);
        self.add(rtc, tcp, Transport::Tcp)?;
        self.tcp = Some(tcp);
        Ok(())
    }

    fn add(
        &mut self,
        rtc: &mut Rtc,
        addr: SocketAddr,
        transport: Transport,
    ) -> Result<(), MediaError> {
        let candidate = host_candidate(addr, transport, self.generation)?;
        rtc.add_local_candidate(candidate.clone());
        self.current.push(candidate);
        Ok(())
    }

    /// The local address is now `udp`: new candidates (UDP, and TCP if there was one) ranked above
    /// the current ones, which are dropped [`RETIRE_AFTER`] from `now`.
    pub(super) fn move_to(
        &mut self,
        rtc: &mut Rtc,
        now: Instant,
        udp: SocketAddr,
    ) -> Result<(), MediaError> {
        self.retire(rtc);
        let old = std::mem::take(&mut self.current);
        self.retiring = Some((now + RETIRE_AFTER, old));
        self.generation += 1;
        self.udp = udp;
        self.add(rtc, udp, Transport::Udp)?;
        if self.tcp.is_some() {
            self.add_tcp(rtc)?;
        }
        Ok(())
    }

    /// Drops the candidates moved away from if their time has come.
    pub(super) fn handle_timeout(&mut self, rtc: &mut Rtc, now: Instant) {
        if self.next_timeout().is_some_and(|at| now >= at) {
            self.retire(rtc);
        }
    }

    /// When candidates moved away from are to be dropped.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.retiring.as_ref().map(|(at, _)| *at)
    }

    fn retire(&mut self, rtc: &mut Rtc) {
        if let Some((_, old)) = self.retiring.take() {
            for candidate in old {
                rtc.direct_api().invalidate_candidate(&candidate);
            }
        }
    }

    /// Replaces the relayed candidate with one at `relayed` (none: no relay).
    pub(super) fn set_relay(
        &mut self,
        rtc: &mut Rtc,
        relayed: Option<SocketAddr>,
    ) -> Result<(), MediaError> {
        if let Some(old) = self.relay.take() {
            rtc.direct_api().invalidate_candidate(&old);
        }
        if let Some(relayed) = relayed {
            let candidate = Candidate::relayed(relayed, self.udp, "udp")
                .map_err(|e| MediaError::Rtc(e.to_string()))?;
            rtc.add_local_candidate(candidate.clone());
            self.relay = Some(candidate);
        }
        Ok(())
    }

    /// The relayed candidate's address, if there is one.
    pub(super) fn relay(&self) -> Option<SocketAddr> {
        self.relay.as_ref().map(Candidate::addr)
    }

    /// The local UDP address.
    pub(super) fn udp(&self) -> SocketAddr {
        self.udp
    }

    /// The active TCP candidate's address, if there is one.
    pub(super) fn tcp(&self) -> Option<SocketAddr> {
        self.tcp
    }
}
