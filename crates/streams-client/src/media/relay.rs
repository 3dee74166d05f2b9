//! [`Relay`]: a TURN allocation (RFC 8656) on one of the bridge's TURN servers, sans-IO, for a
//! client that reaches nothing of the bridge's media directly (only TCP to the TURN server gets
//! out, say), over UDP, TCP or TLS (`turns:`, see `relay/tls.rs`). The TURN protocol itself is
//! `turn-client-proto`'s; this owns what the media needs
//! of it: the allocation (its relayed address becomes an ICE candidate), a permission for each
//! bridge address ICE sends to (and over UDP a channel), and the datagrams both ways. Bytes for the TURN
//! server come out of [`Relay::poll_transmit`] for the driver to send over UDP or its TCP stream
//! (unframed: TURN delimits its own messages); what the server sends goes in through
//! [`Relay::handle_input`]. Time is passed in, as everywhere in the core.
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use streams_proto::TurnTransport;
use streams_rtc::socket::Transport;
use turn_client_proto::api::{TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::client::TurnClient;
use turn_client_proto::prelude::{DelayedTransmitBuild, TurnClientApi};
use turn_client_proto::stun::Instant as TurnInstant;
use turn_client_proto::stun::agent::Transmit as TurnTransmit;
use turn_client_proto::tcp::TurnClientTcp;
use turn_client_proto::types::TurnCredentials;
use turn_client_proto::types::stun::TransportType;
use turn_client_proto::udp::TurnClientUdp;

use crate::turn_servers::TurnServer;

use self::tls::TurnTls;

mod tls;

/// After the server refused (or did not answer) a permission, how long before it is asked again.
const PERMISSION_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The allocation was not made in this long: the server is taken for unreachable (its own
/// retransmissions give up later).
pub const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes for the TURN server.
#[derive(Debug)]
pub struct ToServer {
    /// UDP, or the (unframed) TCP stream to the server.
    pub transport: Transport,
    /// The server.
    pub destination: SocketAddr,
    /// What.
    pub contents: Vec<u8>,
}

/// What happened to the allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// The server relays for this client at `relayed`.
    Allocated {
        /// The relayed transport address (what the bridge sees).
        relayed: SocketAddr,
    },
    /// No allocation: why.
    Failed(String),
}

/// One allocation on one TURN server.
pub struct Relay {
    client: TurnClient,
    server: TurnServer,
    transport: Transport,
    /// For `turns:`: the TLS the stream's bytes go through.
    tls: Option<TurnTls>,
    /// Where the client's instants count from (`turn-client-proto` has its own clock type).
    epoch: Instant,
    relayed: Option<SocketAddr>,
    /// Peers (bridge IPs) a permission was asked for, and when it was last refused.
    permitted: HashMap<IpAddr, Option<Instant>>,
    /// Peers a channel was asked for (ChannelData costs 4 bytes a datagram, not 36; UDP only).
    channels: HashSet<SocketAddr>,
    allocate_by: Option<Instant>,
    /// When the client's timers are next due.
    next_due: Instant,
    failed: bool,
    to_server: VecDeque<ToServer>,
    events: VecDeque<RelayEvent>,
}

impl Relay {
    /// Starts allocating on `server` from `local` (the address the client's socket or stream to
    /// the server has; for TCP any address the driver keeps the same).
    pub fn allocate(now: Instant, local: SocketAddr, server: TurnServer) -> Self {
        let config = TurnConfig::new(TurnCredentials::new(&server.username, &server.credential));
        let (client, transport) = match server.url.transport {
            TurnTransport::Udp => (
                TurnClient::Udp(TurnClientUdp::allocate(local, server.addr, config)),
                Transport::Udp,
            ),
            TurnTransport::Tcp | TurnTransport::Tls => (
                TurnClient::Tcp(TurnClientTcp::allocate(local, server.addr, config)),
                Transport::Tcp,
            ),
        };
        let tls = match (server.url.transport, &server.tls) {
            (TurnTransport::Tls, Some(config)) => {
                Some(TurnTls::new(config.0.clone(), &server.url.host))
            }
            (TurnTransport::Tls, None) => Some(Err("no TLS configuration".to_owned())),
            _ => None,
        };
        tracing::info!(server = %server.url, "allocating a TURN relay");
        let mut relay = Relay {
            client,
            server,
            transport,
            tls: None,
            epoch: now,
            relayed: None,
            permitted: HashMap::new(),
            channels: HashSet::new(),
            allocate_by: Some(now + ALLOCATE_TIMEOUT),
            next_due: now,
            failed: false,
            to_server: VecDeque::new(),
            events: VecDeque::new(),
        };
        match tls {
            Some(Ok(tls)) => relay.tls = Some(tls),
            Some(Err(why)) => {
                relay.fail(format!("{}: {why}", relay.server.url));
                return relay;
            }
            None => {}
        }
        relay.handle_timeout(now);
        relay
    }

    /// Queues bytes for the server, through TLS for `turns:`.
    fn queue_for_server(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        let contents = match self.tls.as_mut() {
            None => contents,
            Some(tls) => {
                let mut sealed = Vec::with_capacity(contents.len() + 32);
                if let Err(why) = tls.seal(&contents, &mut sealed) {
                    return self.fail(format!("{}: {why}", self.server.url));
                }
                sealed
            }
        };
        if !contents.is_empty() {
            self.to_server.push_back(ToServer {
                transport: self.transport,
                destination,
                contents,
            });
        }
    }

    /// The server, as the bridge named it.
    pub fn server(&self) -> &TurnServer {
        &self.server
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// Whether bytes from `source` over `transport` are the server's.
    pub fn is_from_server(&self, transport: Transport, source: SocketAddr) -> bool {
        transport == self.transport && source == self.server.addr
    }

    fn turn_now(&self, now: Instant) -> TurnInstant {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        TurnInstant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// Bytes from the server (a datagram, or a piece of the TCP stream): each datagram a peer
    /// sent through the relay goes to `deliver(peer, relayed, datagram)`.
    pub fn handle_input(
        &mut self,
        now: Instant,
        contents: &[u8],
        mut deliver: impl FnMut(SocketAddr, SocketAddr, &[u8]),
    ) {
        if self.failed {
            return;
        }
        let opened;
        let contents = match self.tls.as_mut() {
            None => contents,
            Some(tls) => {
                let (mut plain, mut answer) = (Vec::new(), Vec::new());
                let result = tls.open(contents, &mut plain, &mut answer);
                if !answer.is_empty() {
                    self.to_server.push_back(ToServer {
                        transport: self.transport,
                        destination: self.server.addr,
                        contents: answer,
                    });
                }
                if let Err(why) = result {
                    return self.fail(format!("{}: {why}", self.server.url));
                }
                if plain.is_empty() {
                    return self.drain(now);
                }
                opened = plain;
                &opened[..]
            }
        };
        let turn_now = self.turn_now(now);
        let transmit = TurnTransmit::new(
            contents,
            turn_transport(self.transport),
            self.server.addr,
            self.client.local_addr(),
        );
        let relayed = self.relayed;
        match self.client.recv(transmit, turn_now) {
            TurnRecvRet::PeerData(data) => {
                if let Some(relayed) = relayed {
                    deliver(data.peer, relayed, data.data());
                }
            }
            TurnRecvRet::Handled | TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => {}
        }
        // A piece of the TCP stream may hold several messages.
        while let Some(data) = self.client.poll_recv(turn_now) {
            if let Some(relayed) = relayed {
                deliver(data.peer, relayed, data.data());
            }
        }
        self.drain(now);
    }

    /// Sends `contents` to `peer` through the relay. The first datagram to a peer asks for a
    /// permission and is dropped (ICE sends its checks again); once permitted, a channel is bound.
    pub fn send(&mut self, now: Instant, peer: SocketAddr, contents: &[u8]) {
        if self.relayed.is_none() {
            return;
        }
        let turn_now = self.turn_now(now);
        if !self.client.have_permission(TransportType::Udp, peer.ip()) {
            let ask = match self.permitted.get(&peer.ip()) {
                None => true,
                // Asked, not answered yet.
                Some(None) => false,
                Some(Some(refused)) => {
                    now.saturating_duration_since(*refused) >= PERMISSION_RETRY_AFTER
                }
            };
            if ask {
                self.permitted.insert(peer.ip(), None);
                if let Err(e) =
                    self.client
                        .create_permission(TransportType::Udp, peer.ip(), turn_now)
                {
                    tracing::debug!(%peer, "TURN permission: {e:?}");
                }
            }
            return self.drain(now);
        }
        // Over TCP, ChannelData is padded to four bytes (RFC 8656 §12.5), which turn-client-proto
        // 0.7 neither writes nor reads: there, datagrams go as Send / Data indications (STUN
        // messages, always aligned; 36 bytes a datagram rather than 4).
        if self.transport == Transport::Udp
            && self.channels.insert(peer)
            && let Err(e) = self.client.bind_channel(TransportType::Udp, peer, turn_now)
        {
            tracing::debug!(%peer, "TURN channel: {e:?}");
        }
        match self
            .client
            .send_to(TransportType::Udp, peer, contents, turn_now)
        {
            Ok(Some(transmit)) => self.queue_for_server(self.server.addr, transmit.data.build()),
            Ok(None) => {}
            Err(e) => tracing::debug!(%peer, "TURN send: {e:?}"),
        }
        self.drain(now);
    }

    /// Time passed: requests retransmitted, the allocation, permissions and channels refreshed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if self.allocate_by.is_some_and(|by| now >= by) {
            self.allocate_by = None;
            return self.fail(format!(
                "no allocation from {} within {ALLOCATE_TIMEOUT:?} (unreachable?)",
                self.server.url
            ));
        }
        self.drain(now);
    }

    /// When [`Relay::handle_timeout`] is next due (`None` once it has failed or closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.next_due;
        (!self.failed).then(|| self.allocate_by.map_or(due, |by| due.min(by)))
    }

    /// The next bytes for the server.
    pub fn poll_transmit(&mut self) -> Option<ToServer> {
        self.to_server.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// The TCP stream to the server ended (refused, reset, closed): the allocation went with it
    /// (RFC 6062 ties it to the stream).
    pub fn handle_closed(&mut self) {
        self.fail(format!("{} closed the connection", self.server.url));
    }

    /// Whether it relays over UDP (its allocation is tied to the media socket's address).
    pub fn is_udp(&self) -> bool {
        self.transport == Transport::Udp
    }

    /// Ends the allocation (a refresh with lifetime 0, in [`Relay::poll_transmit`]).
    pub fn close(&mut self, now: Instant) {
        let _ = self.client.delete(self.turn_now(now));
        self.failed = true;
        self.drain(now);
    }

    /// Reports the failure (once).
    fn fail(&mut self, why: String) {
        if self.failed {
            return;
        }
        tracing::warn!("TURN relay failed: {why}");
        self.failed = true;
        self.relayed = None;
        self.events.push_back(RelayEvent::Failed(why));
    }

    /// The client's timers run; what it has to send, and what happened, taken out.
    fn drain(&mut self, now: Instant) {
        let turn_now = self.turn_now(now);
        // The client says "due now" while it holds events; asked only then, as its `poll_event`
        // logs every call at INFO (a game's log would get a line per relayed datagram).
        let mut has_events = false;
        match self.client.poll(turn_now) {
            TurnPollRet::WaitUntil(at) => {
                has_events = at <= turn_now;
                self.next_due = at.to_std(self.epoch).max(now);
            }
            TurnPollRet::Closed if !self.failed => {
                self.fail(format!("{} closed the allocation", self.server.url));
            }
            // Closed after a failure, or a TCP allocation's connection (never asked for).
            _ => self.next_due = now + Duration::from_millis(100),
        }
        while let Some(transmit) = self.client.poll_transmit(turn_now) {
            self.queue_for_server(transmit.to, transmit.data.as_ref().to_vec());
        }
        while let Some(event) = has_events.then(|| self.client.poll_event()).flatten() {
            match event {
                TurnEvent::AllocationCreated(_, relayed) if self.relayed.is_none() => {
                    tracing::info!(server = %self.server.url, %relayed, "TURN relay allocated");
                    self.relayed = Some(relayed);
                    self.allocate_by = None;
                    self.events.push_back(RelayEvent::Allocated { relayed });
                }
                TurnEvent::AllocationCreateFailed(family) => {
                    self.allocate_by = None;
                    self.fail(format!(
                        "{} refused an {family:?} allocation",
                        self.server.url
                    ));
                }
                // Refused (the server's denied peers, loopback) or unanswered: asked again later.
                TurnEvent::PermissionCreateFailed(_, ip) => {
                    tracing::warn!(%ip, "the TURN server refused to relay to this address");
                    self.permitted.insert(ip, Some(now));
                }
                TurnEvent::ChannelCreateFailed(_, peer) => {
                    tracing::debug!(%peer, "the TURN server refused a channel");
                }
                other => tracing::debug!("TURN: {other:?}"),
            }
        }
    }
}

fn turn_transport(transport: Transport) -> TransportType {
    match transport {
        Transport::Udp => TransportType::Udp,
        Transport::Tcp => TransportType::Tcp,
    }
}
