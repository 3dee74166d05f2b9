//! Which local address faces the bridge: the source address the OS routes towards its host.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use crate::transport::Endpoint;

/// The local address to use for media towards `bridge_url`'s host (the route's source address).
pub fn local_ip_towards(bridge_url: &str) -> IpAddr {
    let Ok(endpoint) = Endpoint::parse(bridge_url, true) else {
        return IpAddr::V4(Ipv4Addr::LOCALHOST);
    };
    let probe = UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect((endpoint.host.as_str(), endpoint.port))?;
        s.local_addr()
    });
    match probe {
        Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => IpAddr::V4(*a.ip()),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}
