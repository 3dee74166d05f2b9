//! The core's TURN relay (see [`crate::media::relay`]): the bridge's TURN servers are asked for at
//! start; a relay is allocated on the first usable one (the next if it fails), its relayed address
//! offered to ICE as a candidate, and the datagrams ICE sends from it carried through it. It
//! follows the core across a rejoin (the new connection gets the same candidate) and a network
//! move (a new allocation from the new address).
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use streams_rtc::socket::Transport;

use crate::api::Reply;
use crate::error::ClientError;
use crate::media::events::MediaEvent;
use crate::media::relay::{Relay, RelayEvent, ToServer};
use crate::media::rtc::Transmit;

use super::{Pending, Retry, RoomMediaCore};

/// After every TURN server failed, how long before fresh ones (and fresh credentials) are asked
/// for.
const RELAY_RETRY_AFTER: Duration = Duration::from_secs(30);

impl RoomMediaCore {
    /// The reply to the request for the bridge's TURN servers.
    pub(super) fn turn_servers_replied(
        &mut self,
        now: Instant,
        result: Result<Reply, ClientError>,
    ) {
        match result {
            Ok(Reply::TurnServers(servers)) => {
                self.has_turn |= !servers.is_empty();
                self.turn_servers = servers.into();
                self.next_relay(now);
            }
            Ok(other) => tracing::warn!("TURN servers: unexpected {other:?}"),
            // A bridge without TURN (or too old to know the request): direct paths only.
            Err(ClientError::Bridge(refusal)) => {
                tracing::info!(room = %self.room_id, "the bridge relays no media: {refusal}");
            }
            Err(e) => self.failed_request(now, Retry::TurnServers, e),
        }
    }

    /// Allocates on the next server not tried yet; when none is left (all failed), asks the bridge
    /// for its servers again a little later.
    fn next_relay(&mut self, now: Instant) {
        let family = self.peer.local_addr().is_ipv4();
        self.turn_servers.retain(|s| s.addr.is_ipv4() == family);
        let Some(server) = self.turn_servers.pop_front() else {
            let asked = self.in_flight(|p| matches!(p, Pending::TurnServers))
                || self.retries.iter().any(|(_, r)| *r == Retry::TurnServers);
            if self.has_turn && self.relay.is_none() && !asked {
                self.retries
                    .push((now + RELAY_RETRY_AFTER, Retry::TurnServers));
            }
            return;
        };
        let local = self.relay_local(server.url.transport == streams_proto::TurnTransport::Udp);
        self.relay = Some(Relay::allocate(now, local, server));
    }

    /// The address the relay's client speaks from: the media socket's for UDP; for a TCP stream
    /// (whose port the driver picks) the local IP at port 9, as for ICE-TCP.
    fn relay_local(&self, udp: bool) -> SocketAddr {
        let local = self.peer.local_addr();
        if udp {
            local
        } else {
            SocketAddr::new(local.ip(), 9)
        }
    }

    /// Bytes from the TURN server; `false` if `source` is not the relay's server.
    pub(super) fn relay_input(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        contents: &[u8],
    ) -> bool {
        let Some(relay) = self.relay.as_mut() else {
            return false;
        };
        if !relay.is_from_server(transport, source) {
            return false;
        }
        let peer = &mut self.peer;
        relay.handle_input(now, contents, |from, relayed, datagram| {
            peer.handle_relayed(now, from, relayed, datagram);
        });
        self.absorb_relay(now);
        self.absorb_peer(now);
        true
    }

    /// The TCP stream to `server` ended by itself: if it was the relay's, the relay failed.
    pub(super) fn turn_stream_closed(&mut self, now: Instant, server: SocketAddr) {
        if let Some(relay) = self
            .relay
            .as_mut()
            .filter(|r| r.is_from_server(Transport::Tcp, server))
        {
            relay.handle_closed();
            self.absorb_relay(now);
            self.absorb_peer(now);
        }
    }

    /// A transmit of the connection: sent from the relayed candidate, it goes through the relay
    /// (and `None` comes back); otherwise it is returned to be sent directly.
    pub(super) fn route_transmit(&mut self, transmit: Transmit) -> Option<Transmit> {
        if !transmit.relayed {
            return Some(transmit);
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.send(self.now, transmit.destination, &transmit.contents);
        }
        None
    }

    /// The next bytes for the TURN server.
    pub(super) fn poll_relay_transmit(&mut self) -> Option<ToServer> {
        self.relay.as_mut().and_then(Relay::poll_transmit)
    }

    /// The relay's timers.
    pub(super) fn relay_timeout(&mut self, now: Instant) {
        if let Some(relay) = self
            .relay
            .as_mut()
            .filter(|r| r.poll_timeout().is_some_and(|at| at <= now))
        {
            relay.handle_timeout(now);
        }
        self.absorb_relay(now);
    }

    /// What the relay reported: a relayed address becomes a candidate; a failure moves on to
    /// the next server.
    fn absorb_relay(&mut self, now: Instant) {
        while let Some(event) = self.relay.as_mut().and_then(Relay::poll_event) {
            let server = self
                .relay
                .as_ref()
                .map(|r| r.server().url.to_string())
                .unwrap_or_default();
            match event {
                RelayEvent::Allocated { relayed } => {
                    if let Err(e) = self.peer.set_relay(now, Some(relayed)) {
                        tracing::warn!("cannot use the TURN relay {relayed}: {e}");
                    }
                    self.emit(MediaEvent::RelayReady { server, relayed });
                }
                RelayEvent::Failed(reason) => {
                    self.emit(MediaEvent::RelayFailed { server, reason });
                    self.relay = None;
                    if let Err(e) = self.peer.set_relay(now, None) {
                        tracing::debug!("dropping the TURN candidate: {e}");
                    }
                    self.next_relay(now);
                }
            }
        }
    }

    /// A new connection (a rejoin) gets the relay's candidate too.
    pub(super) fn offer_relay_again(&mut self, now: Instant) {
        let relayed = self.relay.as_ref().and_then(Relay::relayed);
        if relayed.is_some()
            && let Err(e) = self.peer.set_relay(now, relayed)
        {
            tracing::warn!("cannot use the TURN relay: {e}");
        }
    }

    /// The local address changed (to another IP if `new_ip`): the relay is allocated again from
    /// there, the old one's path having left with the old address. A relay over TCP from the same
    /// IP (a fresh UDP socket only) keeps its stream and allocation.
    pub(super) fn move_relay(&mut self, now: Instant, new_ip: bool) {
        if self.relay.as_ref().is_none_or(|r| !new_ip && !r.is_udp()) {
            return;
        }
        let Some(old) = self.relay.take() else {
            return;
        };
        if let Err(e) = self.peer.set_relay(now, None) {
            tracing::debug!("dropping the TURN candidate: {e}");
        }
        let server = old.server().clone();
        self.turn_servers.push_front(server);
        self.next_relay(now);
    }

    /// When the relay's timers are due.
    pub(super) fn relay_due(&self) -> Option<Instant> {
        self.relay.as_ref().and_then(Relay::poll_timeout)
    }

    /// The core stops: the allocation is released.
    pub(super) fn close_relay(&mut self, now: Instant) {
        if let Some(relay) = self.relay.as_mut() {
            relay.close(now);
        }
    }
}
