//! [`Route`]: which local address faces the bridge — the source address the OS routes towards it
//! (one UDP `connect`, nothing sent). The media driver binds its socket there, and asks again
//! every [`ROUTE_CHECK`]: a different answer means the network changed under the call (a new
//! interface, Wi-Fi to cable, an address moved), and media moves to the new address.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use crate::transport::Endpoint;

/// How often the driver asks whether the route to the bridge changed (two system calls).
pub const ROUTE_CHECK: Duration = Duration::from_millis(250);

/// The route to one bridge, its host resolved once (no name lookup on the media thread after).
#[derive(Clone, Copy, Debug)]
pub struct Route {
    target: Option<SocketAddr>,
}

impl Route {
    /// The route to `bridge_url`'s host (resolved now; a URL that does not parse or resolve
    /// routes to loopback).
    pub fn towards(bridge_url: &str) -> Route {
        let target = Endpoint::parse(bridge_url, true).ok().and_then(|endpoint| {
            (endpoint.host.as_str(), endpoint.port)
                .to_socket_addrs()
                .ok()?
                .next()
        });
        Route { target }
    }

    /// The local address the OS would send from towards the bridge now; `None` if there is no
    /// route (the network is down).
    pub fn source_ip(&self) -> Option<IpAddr> {
        let Some(target) = self.target else {
            return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        };
        let any: SocketAddr = match target {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let probe = UdpSocket::bind(any).and_then(|s| {
            s.connect(target)?;
            s.local_addr()
        });
        probe.ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_to_a_loopback_bridge_leaves_from_loopback() {
        let route = Route::towards("ws://127.0.0.1:7800");
        assert_eq!(route.source_ip(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // A URL that does not parse: loopback, as the embedded bridge is.
        let nowhere = Route::towards("not a url");
        assert_eq!(nowhere.source_ip(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
